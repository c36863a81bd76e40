#![no_main]
//! punktfunk/1 pairing, both sides (checks in `punktfunk_core::fuzzing::p1_pairing`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::p1_pairing(data);
});
