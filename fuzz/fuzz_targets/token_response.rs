//! An answer of Microsoft Entra's token endpoint or of IMDS (status and body), read as the agent reads it. The properties are `wisp_agent::fuzzing::check_token_response`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_token_response(data));
