use std::os::unix::fs::MetadataExt;

use pretty_assertions::assert_eq;
use rstest::rstest;

use super::*;

fn file(path: &str, contents: &str, mode: u32) -> RenderedFile {
    RenderedFile {
        path: path.into(),
        contents: Zeroizing::new(contents.as_bytes().to_vec()),
        mode,
    }
}

/// Every entry of `dir` as (name, link target or "dir"/"file").
fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let kind = match fs::read_link(e.path()) {
                Ok(target) => format!("-> {}", target.display()),
                Err(_) if e.file_type().unwrap().is_dir() => "dir".into(),
                Err(_) => "file".into(),
            };
            (e.file_name().to_string_lossy().into_owned(), kind)
        })
        .collect();
    entries.sort();
    entries
}

/// What a reader of the mount sees: every regular file reached through the visible names, with mode.
fn visible(target: &Path) -> Vec<(String, String, u32)> {
    fn walk(base: &Path, prefix: &str, out: &mut Vec<(String, String, u32)>) {
        for entry in fs::read_dir(base).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name.starts_with("..") {
                continue;
            }
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let metadata = fs::metadata(entry.path()).unwrap();
            if metadata.is_dir() {
                walk(&entry.path(), &relative, out);
            } else {
                out.push((
                    relative,
                    fs::read_to_string(entry.path()).unwrap(),
                    metadata.mode() & 0o7777,
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(target, "", &mut out);
    out.sort();
    out
}

fn data_dir(target: &Path) -> String {
    fs::read_link(target.join("..data"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn timestamped_dirs(target: &Path) -> Vec<String> {
    listing(target)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| is_timestamped_dir_name(name))
        .collect()
}

fn expect(entries: &[(&str, &str, u32)]) -> Vec<(String, String, u32)> {
    entries
        .iter()
        .map(|(p, c, m)| (p.to_string(), c.to_string(), *m))
        .collect()
}

#[test]
fn first_write_creates_the_kubelet_layout() {
    let target = tempfile::tempdir().unwrap();
    let outcome = write_atomically(
        target.path(),
        &[
            file("a", "A", 0o644),
            file("dir/sub/b", "B", 0o600),
            file("dir/c", "C", 0o440),
        ],
    )
    .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    assert!(outcome.changed());

    let data = data_dir(target.path());
    assert!(is_timestamped_dir_name(&data), "{data}");
    assert_eq!(
        listing(target.path()),
        vec![
            (data.clone(), "dir".to_string()),
            ("..data".to_string(), format!("-> {data}")),
            ("a".to_string(), "-> ..data/a".to_string()),
            ("dir".to_string(), "-> ..data/dir".to_string()),
        ]
    );
    assert_eq!(fs::metadata(target.path().join(&data)).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        visible(target.path()),
        expect(&[("a", "A", 0o644), ("dir/c", "C", 0o440), ("dir/sub/b", "B", 0o600)])
    );
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let target = tempfile::tempdir().unwrap();
    write_atomically(target.path(), &[file("open", "x", 0o777), file("closed", "y", 0o000)]).unwrap();
    assert_eq!(
        visible(target.path()),
        expect(&[("closed", "y", 0o000), ("open", "x", 0o777)])
    );
}

#[test]
fn identical_payload_is_a_no_op() {
    let target = tempfile::tempdir().unwrap();
    let files = [file("a", "A", 0o644), file("d/b", "B", 0o644)];
    write_atomically(target.path(), &files).unwrap();
    let data = data_dir(target.path());
    let before = listing(target.path());
    // Order of the payload does not matter.
    let reordered = [file("d/b", "B", 0o644), file("a", "A", 0o644)];
    assert_eq!(
        write_atomically(target.path(), &reordered).unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(data_dir(target.path()), data);
    assert_eq!(listing(target.path()), before);
}

#[rstest]
#[case::bytes(file("a", "A2", 0o644))]
#[case::mode(file("a", "A", 0o600))]
fn a_change_swaps_in_a_new_data_directory(#[case] changed: RenderedFile) {
    let target = tempfile::tempdir().unwrap();
    write_atomically(target.path(), &[file("a", "A", 0o644), file("b", "B", 0o644)]).unwrap();
    let old = data_dir(target.path());
    let expected_contents = String::from_utf8(changed.contents.to_vec()).unwrap();
    let expected_mode = changed.mode;
    assert_eq!(
        write_atomically(target.path(), &[changed, file("b", "B", 0o644)]).unwrap(),
        WriteOutcome::Updated
    );
    let new = data_dir(target.path());
    assert_ne!(new, old);
    assert_eq!(timestamped_dirs(target.path()), vec![new]);
    assert_eq!(
        visible(target.path()),
        vec![
            ("a".to_string(), expected_contents, expected_mode),
            ("b".to_string(), "B".to_string(), 0o644)
        ]
    );
}

#[test]
fn files_no_longer_in_the_payload_are_removed() {
    let target = tempfile::tempdir().unwrap();
    write_atomically(
        target.path(),
        &[
            file("a", "A", 0o644),
            file("dir/b", "B", 0o644),
            file("dir/c", "C", 0o644),
        ],
    )
    .unwrap();
    assert_eq!(
        write_atomically(target.path(), &[file("dir/c", "C", 0o644)]).unwrap(),
        WriteOutcome::Updated
    );
    let data = data_dir(target.path());
    assert_eq!(
        listing(target.path()),
        vec![
            (data.clone(), "dir".to_string()),
            ("..data".to_string(), format!("-> {data}")),
            ("dir".to_string(), "-> ..data/dir".to_string()),
        ]
    );
    assert_eq!(visible(target.path()), expect(&[("dir/c", "C", 0o644)]));

    assert_eq!(write_atomically(target.path(), &[]).unwrap(), WriteOutcome::Updated);
    let data = data_dir(target.path());
    assert_eq!(
        listing(target.path()),
        vec![
            (data.clone(), "dir".to_string()),
            ("..data".to_string(), format!("-> {data}"))
        ]
    );
}

#[test]
fn a_missing_visible_link_is_restored() {
    let target = tempfile::tempdir().unwrap();
    let files = [file("a", "A", 0o644), file("b", "B", 0o644)];
    write_atomically(target.path(), &files).unwrap();
    fs::remove_file(target.path().join("b")).unwrap();
    assert_eq!(write_atomically(target.path(), &files).unwrap(), WriteOutcome::Updated);
    assert_eq!(visible(target.path()), expect(&[("a", "A", 0o644), ("b", "B", 0o644)]));
}

#[test]
fn files_a_provider_wrote_directly_are_replaced() {
    let target = tempfile::tempdir().unwrap();
    fs::write(target.path().join("a"), "old").unwrap();
    fs::create_dir(target.path().join("d")).unwrap();
    fs::write(target.path().join("d/x"), "old").unwrap();
    write_atomically(target.path(), &[file("a", "A", 0o644), file("d/y", "Y", 0o644)]).unwrap();
    assert_eq!(
        visible(target.path()),
        expect(&[("a", "A", 0o644), ("d/y", "Y", 0o644)])
    );
}

#[test]
fn a_failed_write_leaves_the_previous_content() {
    let target = tempfile::tempdir().unwrap();
    write_atomically(target.path(), &[file("a", "A", 0o644)]).unwrap();
    let before = listing(target.path());
    // Something that is not our link sits where the new `..data` link is prepared.
    fs::create_dir(target.path().join("..data_tmp")).unwrap();
    let error = write_atomically(target.path(), &[file("a", "A2", 0o644), file("new", "N", 0o644)]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "failed to create the link {}: File exists (os error 17)",
            target.path().join("..data_tmp").display()
        )
    );
    let mut expected = before;
    expected.push(("..data_tmp".to_string(), "dir".to_string()));
    expected.sort();
    assert_eq!(listing(target.path()), expected);
    assert_eq!(visible(target.path()), expect(&[("a", "A", 0o644)]));
}

#[test]
fn leftovers_of_interrupted_writes_are_cleaned_up() {
    let target = tempfile::tempdir().unwrap();
    fs::create_dir(target.path().join("..2020_01_02_03_04_05.123")).unwrap();
    symlink("..2020_01_02_03_04_05.123", target.path().join("..data_tmp")).unwrap();
    fs::create_dir(target.path().join("..other")).unwrap();
    write_atomically(target.path(), &[file("a", "A", 0o644)]).unwrap();
    let data = data_dir(target.path());
    assert_eq!(
        listing(target.path()),
        vec![
            (data.clone(), "dir".to_string()),
            ("..data".to_string(), format!("-> {data}")),
            ("..other".to_string(), "dir".to_string()),
            ("a".to_string(), "-> ..data/a".to_string()),
        ]
    );
}

#[test]
fn a_data_link_to_elsewhere_is_not_followed() {
    let target = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("a"), "A").unwrap();
    symlink(elsewhere.path(), target.path().join("..data")).unwrap();
    symlink("..data/a", target.path().join("a")).unwrap();
    // The same bytes exist behind the link, yet the write is not skipped and nothing there is touched.
    assert_eq!(
        write_atomically(target.path(), &[file("a", "A", 0o644)]).unwrap(),
        WriteOutcome::Updated
    );
    assert!(is_timestamped_dir_name(&data_dir(target.path())));
    assert_eq!(fs::read_to_string(elsewhere.path().join("a")).unwrap(), "A");
}

#[test]
fn missing_target_is_an_error() {
    let parent = tempfile::tempdir().unwrap();
    let target = parent.path().join("absent");
    let error = write_atomically(&target, &[file("a", "A", 0o644)]).unwrap_err();
    // The directory name is random; the rest is exact.
    assert!(
        error
            .to_string()
            .starts_with(&format!("failed to create the data directory {}/..", target.display())),
        "{error}"
    );
    assert!(
        error.to_string().ends_with("No such file or directory (os error 2)"),
        "{error}"
    );
    assert!(!target.exists());
}

#[rstest]
#[case::empty("", "invalid path: must not be empty")]
#[case::absolute("/a", "invalid path: must be relative path: /a")]
#[case::dotdot_element("a/../b", "invalid path: must not contain '..': a/../b")]
#[case::dotdot_alone("..", "invalid path: must not contain '..': ..")]
#[case::leading_dotdot("..sneaky.txt", "invalid path: must not start with '..': ..sneaky.txt")]
#[case::data_dir("..data/x", "invalid path: must not start with '..': ..data/x")]
#[case::double_slash("foo////bar", "invalid filepath: \"foo////bar\"")]
#[case::trailing_slash("foo/", "invalid filepath: \"foo/\"")]
#[case::dot("./foo", "invalid filepath: \"./foo\"")]
#[case::lone_dot(".", "invalid filepath: \".\"")]
fn invalid_paths(#[case] path: &str, #[case] expected: &str) {
    assert_eq!(validate_file_path(path).unwrap_err().to_string(), expected);
}

#[test]
fn path_length_limits() {
    let long_element = "x".repeat(256);
    assert_eq!(
        validate_file_path(&long_element).unwrap_err().to_string(),
        "invalid path: filenames must be less than or equal to 255 characters"
    );
    let long_path = vec!["x".repeat(200); 21].join("/");
    assert_eq!(
        validate_file_path(&long_path).unwrap_err().to_string(),
        "invalid path: must be less than or equal to 4096 characters"
    );
}

#[rstest]
#[case::plain("a")]
#[case::nested("a/b/c")]
#[case::inner_dots("a..b/c.d")]
#[case::hidden(".hidden")]
#[case::max_element(&"x".repeat(255))]
fn valid_paths(#[case] path: &str) {
    validate_file_path(path).unwrap();
}

#[test]
fn payload_errors_touch_nothing() {
    let target = tempfile::tempdir().unwrap();
    let cases = [
        (
            vec![file("a", "1", 0o644), file("a", "2", 0o644)],
            "file \"a\" is listed twice in one mount",
        ),
        (
            vec![file("a", "1", 0o644), file("a-b", "2", 0o644), file("a/b", "3", 0o644)],
            "file \"a\" would have to be a directory too, for \"a/b\"",
        ),
        (
            vec![file("a", "1", 0o10000)],
            "file \"a\": mode 0o10000 has bits outside 0o7777",
        ),
        (vec![file("/a", "1", 0o644)], "invalid path: must be relative path: /a"),
    ];
    for (files, expected) in cases {
        assert_eq!(
            write_atomically(target.path(), &files).unwrap_err().to_string(),
            expected
        );
    }
    assert_eq!(listing(target.path()), Vec::<(String, String)>::new());
}

#[rstest]
#[case(0, "1970_01_01_00_00_00")]
#[case(951_782_400, "2000_02_29_00_00_00")]
#[case(1_700_000_000, "2023_11_14_22_13_20")]
#[case(4_102_444_799, "2099_12_31_23_59_59")]
fn timestamps_are_utc_calendar_times(#[case] unix: i64, #[case] expected: &str) {
    assert_eq!(format_timestamp(unix), expected);
}

#[rstest]
#[case("..2026_11_23_19_16_41.123", true)]
#[case("..2026_11_23_19_16_41.", false)]
#[case("..data", false)]
#[case("..2026_11_23_19_16.1", false)]
#[case("2026_11_23_19_16_41.1", false)]
fn timestamped_dir_names(#[case] name: &str, #[case] expected: bool) {
    assert_eq!(is_timestamped_dir_name(name), expected);
}
