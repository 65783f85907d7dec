//! Writes a mount's files the way kubelet's AtomicWriter (vendored by the Secrets Store CSI driver) does, so
//! that readers see all files of one version or all of the next, never a mix:
//!
//! ```text
//! <target>/..2026_11_23_19_16_41.123456789/<files>   (the data, one directory per version)
//! <target>/..data -> ..2026_11_23_19_16_41.123456789 (swapped by rename(2), which is atomic)
//! <target>/<first path element> -> ..data/<first path element>
//! ```
//!
//! Path rules are kubelet's element rules (no absolute path, no `..` element, no first element starting with
//! `..`, clean paths); provider-azure's stricter "no `..` anywhere in the name" rule is applied to aliases when
//! the parameters are read (see `params`). Unlike kubelet, a change of mode alone also counts as a change, so
//! an edited `filePermission` takes effect.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::content::{FilePathError, RenderedFile, validate_file_path};

const DATA_DIR_NAME: &str = "..data";
const DATA_DIR_TMP_NAME: &str = "..data_tmp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Bytes, modes and the set of files were already as requested; nothing was touched.
    Unchanged,
    /// A new data directory was swapped in.
    Updated,
}

impl WriteOutcome {
    pub fn changed(self) -> bool {
        self == WriteOutcome::Updated
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Path(#[from] FilePathError),
    #[error("file {0:?} is listed twice in one mount")]
    DuplicatePath(String),
    #[error("file {file:?} would have to be a directory too, for {nested:?}")]
    FileIsDirectory { file: String, nested: String },
    #[error("file {path:?}: mode {mode:#o} has bits outside 0o7777")]
    InvalidMode { path: String, mode: u32 },
    #[error("failed to {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io {
        operation,
        path,
        source,
    }
}

fn validate_payload(files: &[RenderedFile]) -> Result<BTreeMap<&str, &RenderedFile>, WriteError> {
    let mut payload = BTreeMap::new();
    for file in files {
        validate_file_path(&file.path)?;
        if file.mode > 0o7777 {
            return Err(WriteError::InvalidMode {
                path: file.path.clone(),
                mode: file.mode,
            });
        }
        if payload.insert(file.path.as_str(), file).is_some() {
            return Err(WriteError::DuplicatePath(file.path.clone()));
        }
    }
    // Paths below `file/` sort directly after `file/`, so the first key from there decides.
    for file in payload.keys() {
        let prefix = format!("{file}/");
        if let Some((nested, _)) = payload.range::<&str, _>(prefix.as_str()..).next()
            && nested.starts_with(&prefix)
        {
            return Err(WriteError::FileIsDirectory {
                file: file.to_string(),
                nested: nested.to_string(),
            });
        }
    }
    Ok(payload)
}

fn first_element(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Writes `files` below `target_dir` (which must exist) so that they all appear at once. When every file
/// already has the same bytes and mode and no other file exists, nothing is touched. On an error before the
/// swap the previous content stays as it was.
pub fn write_atomically(target_dir: &Path, files: &[RenderedFile]) -> Result<WriteOutcome, WriteError> {
    let payload = validate_payload(files)?;
    let top_level: BTreeSet<&str> = payload.keys().map(|path| first_element(path)).collect();

    let data_link = target_dir.join(DATA_DIR_NAME);
    let old_data_dir = match fs::read_link(&data_link) {
        // Only a name this writer gives is followed: the old tree is read, and must not be anything else.
        Ok(name) if name.to_str().is_some_and(is_timestamped_dir_name) => Some(name),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read the data link", &data_link)(e)),
    };

    if let Some(old) = &old_data_dir
        && is_current(target_dir, &target_dir.join(old), &payload, &top_level)?
    {
        return Ok(WriteOutcome::Unchanged);
    }

    let new_data_dir = create_timestamped_dir(target_dir)?;
    let mut created_links = Vec::new();
    let swapped = write_payload(&new_data_dir, &payload)
        .and_then(|()| create_visible_links(target_dir, &top_level, &mut created_links))
        .and_then(|()| swap_data_link(target_dir, &new_data_dir));
    if let Err(e) = swapped {
        // Best effort: the error that matters is the one that stopped the write.
        let _ = fs::remove_dir_all(&new_data_dir);
        for link in created_links {
            let _ = fs::remove_file(link);
        }
        return Err(e);
    }

    // The new content is visible; failures from here on leave only litter, so they are logged, not returned.
    remove_stale_links(target_dir, &top_level);
    remove_old_data_dirs(target_dir, &new_data_dir);
    Ok(WriteOutcome::Updated)
}

/// Whether the data directory `old` and the visible links already show exactly `payload`.
fn is_current(
    target_dir: &Path,
    old: &Path,
    payload: &BTreeMap<&str, &RenderedFile>,
    top_level: &BTreeSet<&str>,
) -> Result<bool, WriteError> {
    let mut existing = BTreeMap::new();
    match read_tree(old, "", &mut existing) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("read the current data directory", old)(e)),
    }
    if existing.len() != payload.len() {
        return Ok(false);
    }
    for (path, file) in payload {
        match existing.get(*path) {
            Some(Some((contents, mode))) if contents.as_slice() == file.contents.as_slice() && *mode == file.mode => {}
            _ => return Ok(false),
        }
    }
    for name in top_level {
        let expected = Path::new(DATA_DIR_NAME).join(name);
        match fs::read_link(target_dir.join(name)) {
            Ok(link) if link == expected => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

type Tree = BTreeMap<String, Option<(Zeroizing<Vec<u8>>, u32)>>;

/// Every entry below `dir`; regular files with their bytes and mode, anything else (a symlink, a fifo) as
/// `None` so it never matches a payload file.
fn read_tree(dir: &Path, prefix: &str, tree: &mut Tree) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let metadata = fs::symlink_metadata(entry.path())?;
        if metadata.is_dir() {
            read_tree(&entry.path(), &relative, tree)?;
        } else if metadata.is_file() {
            let contents = Zeroizing::new(fs::read(entry.path())?);
            tree.insert(relative, Some((contents, metadata.permissions().mode() & 0o7777)));
        } else {
            tree.insert(relative, None);
        }
    }
    Ok(())
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// `..YYYY_MM_DD_HH_MM_SS.<suffix>` in UTC, as kubelet names them (it uses `MkdirTemp`; the suffix here mixes
/// the clock's nanoseconds, the process id and a counter, and a clash is retried).
fn create_timestamped_dir(target_dir: &Path) -> Result<PathBuf, WriteError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = format_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    let mut last_error = None;
    for _ in 0..16 {
        let count = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = now
            .subsec_nanos()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(std::process::id().rotate_left(16))
            .wrapping_add(count.wrapping_mul(40_503));
        let dir = target_dir.join(format!("..{stamp}.{suffix}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_error("set the mode of", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(io_error("create the data directory", &dir)(e)),
        }
    }
    let error = last_error.unwrap_or_else(|| io::Error::other("no free name"));
    Err(io_error("create a data directory in", target_dir)(error))
}

/// `YYYY_MM_DD_HH_MM_SS` (UTC) of a Unix time.
fn format_timestamp(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60,
        seconds_of_day % 60
    )
}

fn write_payload(data_dir: &Path, payload: &BTreeMap<&str, &RenderedFile>) -> Result<(), WriteError> {
    for (path, file) in payload {
        let full = data_dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(io_error("create the directory", parent))?;
        }
        let mut handle = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&full)
            .map_err(io_error("create the file", &full))?;
        handle
            .write_all(&file.contents)
            .map_err(io_error("write the file", &full))?;
        // The open mode went through the umask; set it exactly.
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode))
            .map_err(io_error("set the mode of", &full))?;
    }
    Ok(())
}

/// Creates `<target>/<name> -> ..data/<name>` for every top-level name that lacks it. An entry that is not
/// such a link (files a provider wrote directly, as the driver's `cleanupProviderFiles` expects) is replaced.
fn create_visible_links(
    target_dir: &Path,
    top_level: &BTreeSet<&str>,
    created: &mut Vec<PathBuf>,
) -> Result<(), WriteError> {
    for name in top_level {
        let visible = target_dir.join(name);
        let expected = Path::new(DATA_DIR_NAME).join(name);
        match fs::symlink_metadata(&visible) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                if fs::read_link(&visible).is_ok_and(|link| link == expected) {
                    continue;
                }
                fs::remove_file(&visible).map_err(io_error("remove the link", &visible))?;
            }
            Ok(metadata) if metadata.is_dir() => {
                fs::remove_dir_all(&visible).map_err(io_error("remove the directory", &visible))?
            }
            Ok(_) => fs::remove_file(&visible).map_err(io_error("remove the file", &visible))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", &visible)(e)),
        }
        symlink(&expected, &visible).map_err(io_error("create the link", &visible))?;
        created.push(visible);
    }
    Ok(())
}

fn swap_data_link(target_dir: &Path, new_data_dir: &Path) -> Result<(), WriteError> {
    let tmp = target_dir.join(DATA_DIR_TMP_NAME);
    // A link left by an interrupted write is replaced; anything else there is not ours to delete.
    if fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&tmp).map_err(io_error("remove the stale link", &tmp))?;
    }
    let name = new_data_dir.file_name().map(PathBuf::from).unwrap_or_default();
    symlink(&name, &tmp).map_err(io_error("create the link", &tmp))?;
    let data_link = target_dir.join(DATA_DIR_NAME);
    if let Err(e) = fs::rename(&tmp, &data_link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("rename the data link to", &data_link)(e));
    }
    Ok(())
}

/// Removes visible links into `..data` whose name the new payload no longer has.
fn remove_stale_links(target_dir: &Path, top_level: &BTreeSet<&str>) {
    let Ok(entries) = fs::read_dir(target_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("..") || top_level.contains(name) {
            continue;
        }
        let path = entry.path();
        let into_data = fs::read_link(&path).is_ok_and(|link| link.starts_with(DATA_DIR_NAME));
        if into_data && let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "failed to remove a stale link");
        }
    }
}

fn is_timestamped_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, suffix)) = rest.split_once('.') else {
        return false;
    };
    let pattern = "dddd_dd_dd_dd_dd_dd";
    stamp.len() == pattern.len()
        && stamp
            .bytes()
            .zip(pattern.bytes())
            .all(|(b, p)| if p == b'd' { b.is_ascii_digit() } else { b == p })
        && !suffix.is_empty()
}

/// Removes every data directory except the current one (the previous one, and any an interrupted write left).
fn remove_old_data_dirs(target_dir: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(target_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_old = entry.file_name().to_str().is_some_and(is_timestamped_dir_name)
            && path != current
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_old && let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "failed to remove an old data directory");
        }
    }
}

#[cfg(test)]
mod tests;
