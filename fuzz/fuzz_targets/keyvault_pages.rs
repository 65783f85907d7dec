//! The pages of a Key Vault version list (status and body each, `nextLink` followed), read as the agent reads them. The properties are `wisp_agent::fuzzing::check_keyvault_pages`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_keyvault_pages(data));
