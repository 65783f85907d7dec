use std::os::unix::fs::symlink;

use pretty_assertions::assert_eq;

use super::*;
use crate::content::RenderedFile;
use crate::volume::writer::write_atomically;

fn file(path: &str, contents: &str) -> RenderedFile {
    RenderedFile {
        path: path.into(),
        contents: Zeroizing::new(contents.as_bytes().to_vec()),
        mode: 0o644,
    }
}

fn contents(files: &MountedFiles) -> Vec<(String, String)> {
    files
        .paths()
        .map(|p| {
            (
                p.to_string(),
                String::from_utf8_lossy(files.get(p).unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

#[test]
fn reads_what_the_writer_mounted_through_its_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        file("secret1", "s1"),
        file("history/0", "newest"),
        file("history/1", "older"),
        file("nested/dir/cert.pem", "pem"),
    ];
    write_atomically(dir.path(), &files).unwrap();
    let mounted = read_mounted_files(dir.path()).unwrap();
    assert_eq!(
        contents(&mounted),
        vec![
            ("history/0".to_string(), "newest".to_string()),
            ("history/1".to_string(), "older".to_string()),
            ("nested/dir/cert.pem".to_string(), "pem".to_string()),
            ("secret1".to_string(), "s1".to_string()),
        ]
    );
    assert_eq!(mounted.len(), 4);
    assert_eq!(mounted.get("history"), None);
    assert_eq!(mounted.get("..data/secret1"), None);
}

#[test]
fn sees_the_new_content_after_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    write_atomically(dir.path(), &[file("a", "1"), file("b", "2")]).unwrap();
    write_atomically(dir.path(), &[file("a", "3")]).unwrap();
    let mounted = read_mounted_files(dir.path()).unwrap();
    assert_eq!(contents(&mounted), vec![("a".to_string(), "3".to_string())]);
}

#[test]
fn plain_files_and_dot_dot_entries() {
    // A provider that wrote files directly (no `..data`) is read too; `..`-prefixed names are skipped,
    // single-dot names are not.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("plain"), b"p").unwrap();
    fs::write(dir.path().join(".hidden"), b"h").unwrap();
    fs::write(dir.path().join("..skipped"), b"x").unwrap();
    fs::create_dir(dir.path().join("..dir")).unwrap();
    fs::write(dir.path().join("..dir").join("f"), b"x").unwrap();
    let mounted = read_mounted_files(dir.path()).unwrap();
    assert_eq!(
        contents(&mounted),
        vec![
            (".hidden".to_string(), "h".to_string()),
            ("plain".to_string(), "p".to_string()),
        ]
    );
}

#[test]
fn empty_target_gives_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = read_mounted_files(dir.path()).unwrap();
    assert_eq!(mounted.len(), 0);
    assert_eq!(format!("{mounted:?}"), "MountedFiles { paths: [], .. }");
}

#[test]
fn missing_target_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let error = read_mounted_files(&missing).unwrap_err();
    assert!(
        matches!(&error, MountedFilesError::List { path, .. } if *path == missing),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "failed to list all files in target path {}, err: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn symlink_out_of_the_target_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("node-secret"), b"do not copy").unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path().join("node-secret"), dir.path().join("link")).unwrap();
    let error = read_mounted_files(dir.path()).unwrap_err();
    let root = dir.path().canonicalize().unwrap();
    let resolved = outside.path().join("node-secret").canonicalize().unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "mounted entry {} resolves to {}, outside the target path {}; only the agent writes there, remove \
             the entry or unmount and republish the volume",
            dir.path().join("link").display(),
            resolved.display(),
            root.display()
        )
    );
}

#[test]
fn dangling_symlink_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    symlink("..data/missing", dir.path().join("missing")).unwrap();
    let error = read_mounted_files(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "failed to read mounted file {}: No such file or directory (os error 2)",
            dir.path().join("missing").display()
        )
    );
}

#[test]
fn debug_shows_paths_not_contents() {
    let files = MountedFiles::from_files([("a", "topsecret"), ("b/0", "x")]);
    assert_eq!(format!("{files:?}"), "MountedFiles { paths: [\"a\", \"b/0\"], .. }");
    assert_eq!(files.get("a"), Some(&b"topsecret"[..]));
}
