//! Every input of the `admission` fuzz target's corpus, run once through the check the target runs
//! (`wisp_webhook::fuzzing::check_admission`): the fuzzing's regression inputs, in `cargo test`.

#[test]
fn admission() {
    wisp_shared::fuzzing::replay_corpus("admission", wisp_webhook::fuzzing::check_admission);
}
