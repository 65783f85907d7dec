//! The agent's record of the volumes it mounted, kept in a file on the node so that a restarted agent knows
//! what is mounted where, for which pod and SecretProviderClass, and when it was last refreshed: rotation keeps
//! its pace and unpublish keeps working. The record holds names, paths and versions, never file contents or
//! tokens. The file is replaced by a rename, so a reader finds the old or the new record, never a mix.
//!
//! Each agent has its own record, named for its driver name and CSI socket: two agents on one host (another
//! `--endpoint` or `--drivername`, the same `--state-dir`) never read, rewrite or forget each other's volumes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::content::ObjectVersion;

const FORMAT_VERSION: u32 = 2;

/// A volume this agent published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountedVolume {
    pub volume_id: String,
    pub target_path: PathBuf,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub secret_provider_class: String,
    pub objects: Vec<ObjectVersion>,
    /// When the content was last read successfully from Key Vault (first mount or refresh).
    pub refreshed_at: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the agent's volume record {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the agent's volume record {path} is not valid ({reason}); remove it and the agent relearns the volumes \
         from kubelet's republish calls"
    )]
    Invalid { path: String, reason: String },
    #[error("cannot write the agent's volume record {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// The agent a record belongs to, written into it and checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    driver_name: String,
    endpoint: PathBuf,
}

#[derive(Deserialize)]
struct RecordVersion {
    version: u32,
}

#[derive(Deserialize)]
struct Record {
    owner: Owner,
    volumes: Vec<MountedVolume>,
}

/// What [`StateFile::save`] writes: the same shape as [`Record`], borrowing the volumes.
#[derive(Serialize)]
struct RecordRef<'a> {
    version: u32,
    owner: &'a Owner,
    volumes: &'a [&'a MountedVolume],
}

/// The record file of one agent in a state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    owner: Owner,
}

impl StateFile {
    /// The record of the agent serving CSI driver `driver_name` on the socket `endpoint`:
    /// `<dir>/volumes-<driver name>-<first 8 bytes of SHA-256 of the socket path, hex>.json`.
    pub fn for_agent(dir: &Path, driver_name: &str, endpoint: &Path) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, endpoint.as_os_str().as_encoded_bytes());
        let driver: String = driver_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: dir.join(format!("volumes-{driver}-{}.json", hex::encode(&digest.as_ref()[..8]))),
            owner: Owner {
                driver_name: driver_name.to_string(),
                endpoint: endpoint.to_path_buf(),
            },
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded volumes; none when there is no record yet.
    pub fn load(&self) -> Result<Vec<MountedVolume>, StateError> {
        let shown = || self.path.display().to_string();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StateError::Read { path: shown(), source }),
        };
        self.parse(&bytes)
    }

    /// The volumes of a record's bytes, checked as [`StateFile::load`] does (the fuzz target's entry point: the
    /// file is node-local but outlives agent versions and may be truncated or hand-edited).
    pub(crate) fn parse(&self, bytes: &[u8]) -> Result<Vec<MountedVolume>, StateError> {
        let shown = || self.path.display().to_string();
        let invalid = |e: serde_json::Error| StateError::Invalid {
            path: shown(),
            reason: e.to_string(),
        };
        // The version first, so that a record of another format is named as such, not as a missing field.
        let RecordVersion { version } = serde_json::from_slice(bytes).map_err(invalid)?;
        if version != FORMAT_VERSION {
            return Err(StateError::Invalid {
                path: shown(),
                reason: format!("format version {version} is not {FORMAT_VERSION}"),
            });
        }
        let record: Record = serde_json::from_slice(bytes).map_err(invalid)?;
        if record.owner != self.owner {
            return Err(StateError::Invalid {
                path: shown(),
                reason: format!(
                    "written by the agent of driver {} on {}, not this one",
                    record.owner.driver_name,
                    record.owner.endpoint.display()
                ),
            });
        }
        Ok(record.volumes)
    }

    /// Replaces the record with `volumes`. Written as it is serialized, compact: with hundreds of volumes a
    /// buffered copy of the whole record would be the largest allocation the agent makes.
    pub fn save(&self, volumes: &[&MountedVolume]) -> Result<(), StateError> {
        let fail = |source| StateError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let record = RecordRef {
            version: FORMAT_VERSION,
            owner: &self.owner,
            volumes,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(fail)?;
        }
        // No fsync: the record matters across agent restarts, not power loss, which takes the tmpfs mounts it
        // describes with it (and on a busy node an fsync per publish would serialize every mount on the disk).
        let temporary = self.path.with_extension("json.tmp");
        let file = fs::File::create(&temporary).map_err(fail)?;
        let mut writer = io::BufWriter::new(file);
        serde_json::to_writer(&mut writer, &record).map_err(|e| fail(io::Error::other(e)))?;
        writer.flush().map_err(fail)?;
        fs::rename(&temporary, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DRIVER: &str = "secrets-store.csi.k8s.io";
    const ENDPOINT: &str = "/csi/csi.sock";

    fn volume(n: u32) -> MountedVolume {
        MountedVolume {
            volume_id: format!("csi-{n}"),
            target_path: PathBuf::from(format!(
                "/var/lib/kubelet/pods/uid-{n}/volumes/kubernetes.io~csi/v/mount"
            )),
            pod_namespace: "default".into(),
            pod_name: format!("pod-{n}"),
            pod_uid: format!("uid-{n}"),
            secret_provider_class: "spc".into(),
            objects: vec![ObjectVersion {
                id: "secret/s1".into(),
                version: "v1".into(),
            }],
            refreshed_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    #[test]
    fn saves_and_loads_the_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::for_agent(&dir.path().join("sub"), DRIVER, Path::new(ENDPOINT));
        assert_eq!(state.load().unwrap(), vec![]);
        state.save(&[&volume(1), &volume(2)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![volume(1), volume(2)]);
        state.save(&[&volume(2)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![volume(2)]);
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["volumes-secrets-store.csi.k8s.io-304d01758995dd42.json".to_string()]
        );
    }

    #[test]
    fn a_damaged_record_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::for_agent(dir.path(), DRIVER, Path::new(ENDPOINT));
        fs::write(state.path(), b"{\"version\": 2, \"volumes\": [").unwrap();
        let message = state.load().unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "the agent's volume record {} is not valid (EOF while parsing a list at line 1 column 27); remove \
                 it and the agent relearns the volumes from kubelet's republish calls",
                state.path().display()
            )
        );
        fs::write(state.path(), b"{\"version\": 7, \"volumes\": []}").unwrap();
        assert!(
            state
                .load()
                .unwrap_err()
                .to_string()
                .contains("format version 7 is not 2")
        );
    }

    #[test]
    fn agents_on_one_host_keep_separate_records() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateFile::for_agent(dir.path(), DRIVER, Path::new(ENDPOINT));
        let other_socket = StateFile::for_agent(dir.path(), DRIVER, Path::new("/csi-2/csi.sock"));
        let other_driver = StateFile::for_agent(dir.path(), "other.csi.k8s.io", Path::new(ENDPOINT));
        first.save(&[&volume(1)]).unwrap();
        other_socket.save(&[&volume(2)]).unwrap();
        assert_eq!(other_driver.load().unwrap(), vec![]);
        assert_eq!(first.load().unwrap(), vec![volume(1)]);
        assert_eq!(other_socket.load().unwrap(), vec![volume(2)]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_record_of_another_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mine = StateFile::for_agent(dir.path(), DRIVER, Path::new(ENDPOINT));
        let theirs = StateFile::for_agent(dir.path(), DRIVER, Path::new("/csi-2/csi.sock"));
        theirs.save(&[&volume(2)]).unwrap();
        fs::copy(theirs.path(), mine.path()).unwrap();
        assert_eq!(
            mine.load().unwrap_err().to_string(),
            format!(
                "the agent's volume record {} is not valid (written by the agent of driver secrets-store.csi.k8s.io \
                 on /csi-2/csi.sock, not this one); remove it and the agent relearns the volumes from kubelet's \
                 republish calls",
                mine.path().display()
            )
        );
    }
}
