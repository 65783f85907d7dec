//! A SecretProviderClass as the API serves it, with the volume attributes of a pod. The properties are `wisp_agent::fuzzing::check_spc_params`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_spc_params(data));
