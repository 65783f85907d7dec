//! The replay of the fuzz targets' corpora (`fuzz/corpus/<target>/`) in `cargo test`: every input the fuzzer
//! kept, crash regressions included, run once through the check its target runs, so that CI covers them in
//! seconds without cargo-fuzz. The checks live beside the code they check (`wisp_agent::fuzzing`,
//! `wisp_webhook::fuzzing`); this is the loop both crates' `tests/fuzz_corpus.rs` share.

use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>/`; panics naming each input whose check panicked, and
/// when the corpus is missing or empty (a renamed target must not silently replay nothing).
pub fn replay_corpus(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot list the corpus {}: {e}", dir.display()));
    entries.sort();
    assert!(!entries.is_empty(), "the corpus {} is empty", dir.display());
    let failed: Vec<String> = entries
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} fail their check (the panics above say why): {failed:#?}",
        failed.len(),
        entries.len()
    );
}
