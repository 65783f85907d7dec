//! Every input of the agent's fuzz targets' corpora, run once through the checks the targets run
//! (`wisp_agent::fuzzing`): the fuzzing's regression inputs, in `cargo test`.

use wisp_agent::fuzzing;
use wisp_shared::fuzzing::replay_corpus;

#[test]
fn spc_params() {
    replay_corpus("spc_params", fuzzing::check_spc_params);
}

#[test]
fn volume_context() {
    replay_corpus("volume_context", fuzzing::check_volume_context);
}

#[test]
fn keyvault_render() {
    replay_corpus("keyvault_render", fuzzing::check_keyvault_render);
}

#[test]
fn state_file() {
    replay_corpus("state_file", fuzzing::check_state_file);
}

#[test]
fn cloud_env() {
    replay_corpus("cloud_env", fuzzing::check_cloud_env);
}

#[test]
fn token_response() {
    replay_corpus("token_response", fuzzing::check_token_response);
}

#[test]
fn keyvault_pages() {
    replay_corpus("keyvault_pages", fuzzing::check_keyvault_pages);
}
