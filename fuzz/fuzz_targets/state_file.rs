//! The agent's volume record, read at start-up. The properties are `wisp_agent::fuzzing::check_state_file`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_state_file(data));
