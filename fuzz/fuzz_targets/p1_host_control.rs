#![no_main]
//! punktfunk/1 host control machine (checks in `punktfunk_core::fuzzing::p1_host_control`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::p1_host_control(data);
});
