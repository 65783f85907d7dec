//! The agent's record of the volumes it mounted, kept in a file on the node so that a restarted agent knows
//! what is mounted where, for which pod and SecretProviderClass, and when it was last refreshed: rotation keeps
//! its pace and unpublish keeps working. The record holds names, paths and versions, never file contents or
//! tokens. The file is replaced by a rename, so a reader finds the old or the new record, never a mix.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::provider::ObjectVersion;

/// Name of the record inside `--state-dir`.
pub const STATE_FILE_NAME: &str = "volumes.json";
const FORMAT_VERSION: u32 = 1;

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

#[derive(Deserialize)]
struct Record {
    version: u32,
    volumes: Vec<MountedVolume>,
}

/// What [`StateFile::save`] writes: the same shape as [`Record`], borrowing the volumes.
#[derive(Serialize)]
struct RecordRef<'a> {
    version: u32,
    volumes: &'a [&'a MountedVolume],
}

/// The record file in a state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(STATE_FILE_NAME),
        }
    }

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
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
            path: shown(),
            reason: e.to_string(),
        })?;
        if record.version != FORMAT_VERSION {
            return Err(StateError::Invalid {
                path: shown(),
                reason: format!("format version {} is not {FORMAT_VERSION}", record.version),
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
        let state = StateFile::in_dir(&dir.path().join("sub"));
        assert_eq!(state.load().unwrap(), vec![]);
        state.save(&[&volume(1), &volume(2)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![volume(1), volume(2)]);
        state.save(&[&volume(2)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![volume(2)]);
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE_NAME.to_string()]);
    }

    #[test]
    fn a_damaged_record_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        fs::write(state.path(), b"{\"version\": 1, \"volumes\": [").unwrap();
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
                .contains("format version 7 is not 1")
        );
    }
}
