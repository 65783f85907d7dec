//! An AdmissionReview body, as kube-apiserver POSTs it to /mutate-v1-pod. The properties are `wisp_webhook::fuzzing::check_admission`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wisp_webhook::fuzzing::check_admission(data));
