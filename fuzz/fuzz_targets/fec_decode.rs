#![no_main]
//! FEC encode and reconstruct, both codes (checks in `punktfunk_core::fuzzing::fec_decode`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::fec_decode(data);
});
