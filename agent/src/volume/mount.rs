//! The target directory of a volume: create it, mount a tmpfs on it (or, in `directory` mode, use it as is),
//! and tear it all down again.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// How a volume's files reach the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountMode {
    /// Mount a tmpfs at the target path (as the upstream driver does); needs CAP_SYS_ADMIN.
    Tmpfs,
    /// Write into the plain target directory. For unprivileged test runs only: the files then live on the
    /// node's disk instead of in memory.
    Directory,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("failed to check if target path {path} is mount point, err: {source}")]
    Check { path: String, source: io::Error },
    #[error("failed to create target path {path}: {source}")]
    CreateDir { path: String, source: io::Error },
    #[error(
        "failed to mount tmpfs at {path}: {source} (the agent needs CAP_SYS_ADMIN in the host mount namespace; \
         --mount-mode=directory is for unprivileged test runs only)"
    )]
    Mount { path: String, source: io::Error },
    #[error("failed to unmount {path}: {source}")]
    Unmount { path: String, source: io::Error },
    #[error("failed to remove {path}: {source}")]
    Remove { path: String, source: io::Error },
}

/// What [`Mounter::prepare`] did, so a failed first mount can undo exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub created_dir: bool,
    pub mounted: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Mounter {
    mode: MountMode,
}

/// The marker the atomic writer leaves in a populated volume.
const DATA_LINK: &str = "..data";

impl Mounter {
    pub fn new(mode: MountMode) -> Self {
        Self { mode }
    }

    /// Whether `target` already holds a published volume: a mount point (tmpfs mode) or a populated directory
    /// (directory mode).
    pub fn is_published(&self, target: &Path) -> Result<bool, MountError> {
        match self.mode {
            MountMode::Tmpfs => is_mount_point(target).map_err(|source| MountError::Check {
                path: show(target),
                source,
            }),
            MountMode::Directory => match std::fs::symlink_metadata(target.join(DATA_LINK)) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(MountError::Check {
                    path: show(target),
                    source,
                }),
            },
        }
    }

    /// Creates `target` (0750) if missing and, in tmpfs mode, mounts a tmpfs on it.
    pub fn prepare(&self, target: &Path) -> Result<Prepared, MountError> {
        let created_dir = match std::fs::symlink_metadata(target) {
            Ok(meta) if meta.is_dir() => false,
            Ok(_) => {
                return Err(MountError::CreateDir {
                    path: show(target),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(target)
                    .map_err(|source| MountError::CreateDir {
                        path: show(target),
                        source,
                    })?;
                // The process umask must not loosen or tighten what kubelet expects.
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o750)).map_err(|source| {
                    MountError::CreateDir {
                        path: show(target),
                        source,
                    }
                })?;
                true
            }
            Err(source) => {
                return Err(MountError::Check {
                    path: show(target),
                    source,
                });
            }
        };
        let mut prepared = Prepared {
            created_dir,
            mounted: false,
        };
        if self.mode == MountMode::Tmpfs {
            // `mode=0755`: upstream mounts with no options, which leaves the tmpfs root world-writable (1777);
            // readable by non-root containers is all that is needed.
            let result = rustix::mount::mount(
                "tmpfs",
                target,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(c"mode=0755"),
            );
            if let Err(errno) = result {
                let err = MountError::Mount {
                    path: show(target),
                    source: io::Error::from(errno),
                };
                if created_dir {
                    let _ = std::fs::remove_dir(target);
                }
                return Err(err);
            }
            prepared.mounted = true;
        }
        Ok(prepared)
    }

    /// Removes the contents, unmounts (if mounted) and removes the directory (if `remove_dir`). Missing paths
    /// are fine, so this is idempotent.
    pub fn teardown(&self, target: &Path, remove_dir: bool) -> Result<(), MountError> {
        match std::fs::read_dir(target) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let result = match entry.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                        _ => std::fs::remove_file(&path),
                    };
                    if let Err(e) = result
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        // As upstream: contents are best effort, the unmount below is what matters.
                        tracing::warn!(path = %path.display(), error = %e, "failed to remove a file of the volume");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => tracing::warn!(path = %target.display(), error = %e, "failed to list the volume"),
        }
        let mounted = is_mount_point(target).map_err(|source| MountError::Check {
            path: show(target),
            source,
        })?;
        if mounted && let Err(errno) = rustix::mount::unmount(target, UnmountFlags::empty()) {
            if errno == rustix::io::Errno::BUSY {
                // A container still holds it open; detach so kubelet can proceed, the kernel frees it later.
                rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| MountError::Unmount {
                    path: show(target),
                    source: io::Error::from(e),
                })?;
            } else {
                return Err(MountError::Unmount {
                    path: show(target),
                    source: io::Error::from(errno),
                });
            }
        }
        if remove_dir {
            match std::fs::remove_dir(target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(MountError::Remove {
                        path: show(target),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Whether `path` is listed as a mount point in `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let wanted: PathBuf = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&table).any(|p| Path::new(&p) == wanted))
}

/// Mount points of a mountinfo table (the fifth field, octal escapes decoded).
fn mount_points(table: &str) -> impl Iterator<Item = String> + '_ {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape_octal))
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            let value = digit(1) * 64 + digit(2) * 8 + digit(3);
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_decoded() {
        let table = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:40 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(table).collect::<Vec<_>>(),
            vec![
                "/mnt/with space".to_string(),
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".to_string()
            ]
        );
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
        assert!(!is_mount_point(&dir.path().join("missing")).unwrap());
    }

    #[test]
    fn directory_mode_prepare_and_teardown() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pods/u/volumes/mount");
        let mounter = Mounter::new(MountMode::Directory);
        assert!(!mounter.is_published(&target).unwrap());
        let prepared = mounter.prepare(&target).unwrap();
        assert_eq!(
            prepared,
            Prepared {
                created_dir: true,
                mounted: false
            }
        );
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        std::fs::create_dir(target.join("..2026_01_01")).unwrap();
        std::fs::write(target.join("..2026_01_01/a"), b"x").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", target.join("..data")).unwrap();
        assert!(mounter.is_published(&target).unwrap());
        assert_eq!(
            mounter.prepare(&target).unwrap(),
            Prepared {
                created_dir: false,
                mounted: false
            }
        );
        mounter.teardown(&target, true).unwrap();
        assert!(!target.exists());
        // Idempotent.
        mounter.teardown(&target, true).unwrap();
    }

    #[test]
    fn prepare_refuses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        std::fs::write(&target, b"x").unwrap();
        let err = Mounter::new(MountMode::Directory)
            .prepare(&target)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "failed to create target path {}: exists and is not a directory",
                target.display()
            )
        );
    }
}
