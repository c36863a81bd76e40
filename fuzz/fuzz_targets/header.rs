#![no_main]
//! The packet header decoder (checks in `punktfunk_core::fuzzing::header`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::header(data);
});
