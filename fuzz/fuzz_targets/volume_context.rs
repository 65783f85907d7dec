//! kubelet's NodePublishVolumeRequest or the upstream driver's MountRequest (protobuf). The properties are `wisp_agent::fuzzing::check_volume_context`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_agent::fuzzing::check_volume_context(data));
