//! A Key Vault answer (or the PFX, PEM, key or certificates inside one), rendered to files. The properties are `wisp_agent::fuzzing::check_keyvault_render`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_keyvault_render(data));
