//! A custom cloud's environment file (cloudEnvFileName / AZURE_ENVIRONMENT_FILEPATH). The properties are `wisp_agent::fuzzing::check_cloud_env`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_cloud_env(data));
