//! What a mount is made of, below everyone who makes, writes or reports it: a rendered file, the object version
//! it came from, and the rule every file path obeys. Pure.

use zeroize::Zeroizing;

const MAX_PATH_LENGTH: usize = 4096;
const MAX_FILE_NAME_LENGTH: usize = 255;

/// One file of a mount.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Relative, `/`-separated.
    pub path: String,
    pub contents: Zeroizing<Vec<u8>>,
    pub mode: u32,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedFile")
            .field("path", &self.path)
            .field("contents", &format_args!("<{} bytes redacted>", self.contents.len()))
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// One mounted object version, as the SecretProviderClassPodStatus lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectVersion {
    /// `<type>/<name>` or `<type>/<name>/<index>` for version history.
    pub id: String,
    pub version: String,
}

/// A file path kubelet would refuse, with kubelet's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilePathError {
    #[error("invalid path: must not be empty")]
    PathEmpty,
    #[error("invalid path: must be relative path: {0}")]
    PathAbsolute(String),
    #[error("invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")]
    PathTooLong,
    #[error("invalid path: must not contain '..': {0}")]
    PathDotDot(String),
    #[error("invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters")]
    FileNameTooLong,
    #[error("invalid path: must not start with '..': {0}")]
    PathLeadingDotDot(String),
    #[error("invalid filepath: {0:?}")]
    NotClean(String),
}

/// kubelet's `validatePath` followed by the driver's `filepath.Clean(path) == path` check.
pub fn validate_file_path(path: &str) -> Result<(), FilePathError> {
    if path.is_empty() {
        return Err(FilePathError::PathEmpty);
    }
    if path.starts_with('/') {
        return Err(FilePathError::PathAbsolute(path.to_string()));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(FilePathError::PathTooLong);
    }
    let elements: Vec<&str> = path.split('/').collect();
    for element in &elements {
        if *element == ".." {
            return Err(FilePathError::PathDotDot(path.to_string()));
        }
        if element.len() > MAX_FILE_NAME_LENGTH {
            return Err(FilePathError::FileNameTooLong);
        }
    }
    if elements[0].starts_with("..") && elements[0].len() > 2 {
        return Err(FilePathError::PathLeadingDotDot(path.to_string()));
    }
    // A relative path without `..` elements is clean exactly when it has no empty and no `.` elements.
    if elements.iter().any(|element| element.is_empty() || *element == ".") {
        return Err(FilePathError::NotClean(path.to_string()));
    }
    Ok(())
}
