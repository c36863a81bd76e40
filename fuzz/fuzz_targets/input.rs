#![no_main]
//! Input event batches (checks in `punktfunk_core::fuzzing::input`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::input(data);
});
