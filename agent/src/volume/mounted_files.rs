//! Reads back what is mounted at a target path, as the driver's `GetMountedFiles` sees it: each visible file by
//! its path relative to the target (`alias`, or `alias/0` for version history), its bytes as they are now.
//!
//! The writer's layout puts the data in `..`-prefixed entries (`..data`, the timestamped directories) and
//! exposes each top-level name as a symlink into `..data`, so the `..` entries are skipped and the top-level
//! symlinks are followed. Symlinks are only followed while they stay inside the target: the secret sync copies
//! these bytes into a Kubernetes Secret, and must never copy a node file a stray link points at.
//! Blocking `std::fs`: callers on an async runtime use `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Nesting deeper than this is not something the writer produces; it stops symlink or directory loops.
const MAX_DEPTH: usize = 32;

/// The files visible under a target path. Debug shows only the paths: the contents are secrets.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct MountedFiles {
    files: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl MountedFiles {
    /// The bytes of the file at `relative_path` (e.g. `alias/0`), exactly as upstream matches `objectName`.
    pub fn get(&self, relative_path: &str) -> Option<&[u8]> {
        self.files.get(relative_path).map(|bytes| bytes.as_slice())
    }

    /// Relative paths, sorted.
    #[cfg(test)]
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Builds the set from known contents (tests, and the rendered files wisp-sync turns into a Secret).
    pub fn from_files<I, P, B>(files: I) -> Self
    where
        I: IntoIterator<Item = (P, B)>,
        P: Into<String>,
        B: Into<Vec<u8>>,
    {
        Self {
            files: files
                .into_iter()
                .map(|(path, bytes)| (path.into(), Zeroizing::new(bytes.into())))
                .collect(),
        }
    }
}

impl std::fmt::Debug for MountedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedFiles")
            .field("paths", &self.files.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountedFilesError {
    /// The first part is the driver's own text.
    #[error("failed to list all files in target path {}, err: {source}", path.display())]
    List { path: PathBuf, source: io::Error },
    #[error("failed to read mounted file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "mounted entry {} resolves to {}, outside the target path {}; only the agent writes there, remove the \
         entry or unmount and republish the volume",
        path.display(),
        resolved.display(),
        target.display()
    )]
    OutsideTarget {
        path: PathBuf,
        resolved: PathBuf,
        target: PathBuf,
    },
    #[error(
        "mounted entry {} is nested more than {MAX_DEPTH} levels deep (a directory or symlink loop?); remove it or \
         unmount and republish the volume",
        path.display()
    )]
    TooDeep { path: PathBuf },
}

/// Reads every file visible at `target_path`.
pub fn read_mounted_files(target_path: &Path) -> Result<MountedFiles, MountedFilesError> {
    let root = target_path.canonicalize().map_err(|source| MountedFilesError::List {
        path: target_path.to_path_buf(),
        source,
    })?;
    let mut files = BTreeMap::new();
    walk(&root, &root, target_path, "", 0, &mut files)?;
    Ok(MountedFiles { files })
}

/// Adds the files under `dir` (a resolved directory inside `root`) to `files`, each named `prefix` + its name.
/// `shown` is `dir` as the caller sees it (through the symlinks), for error messages.
fn walk(
    root: &Path,
    dir: &Path,
    shown: &Path,
    prefix: &str,
    depth: usize,
    files: &mut BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<(), MountedFilesError> {
    if depth > MAX_DEPTH {
        return Err(MountedFilesError::TooDeep {
            path: shown.to_path_buf(),
        });
    }
    let list_error = |source| MountedFilesError::List {
        path: shown.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // Object aliases are UTF-8 (they come from YAML); anything else was not written by the agent.
            continue;
        };
        // Only the top level holds the writer's `..data` and timestamped directories.
        if depth == 0 && name.starts_with("..") {
            continue;
        }
        let shown_path = shown.join(name);
        let read_error = |source| MountedFilesError::Read {
            path: shown_path.clone(),
            source,
        };
        let resolved = dir.join(name).canonicalize().map_err(read_error)?;
        if !resolved.starts_with(root) {
            return Err(MountedFilesError::OutsideTarget {
                path: shown_path,
                resolved,
                target: root.to_path_buf(),
            });
        }
        let relative = format!("{prefix}{name}");
        if fs::metadata(&resolved).map_err(read_error)?.is_dir() {
            walk(root, &resolved, &shown_path, &format!("{relative}/"), depth + 1, files)?;
        } else {
            let bytes = fs::read(&resolved).map_err(read_error)?;
            files.insert(relative, Zeroizing::new(bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
