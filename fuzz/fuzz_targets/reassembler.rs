#![no_main]
//! Datagrams into a receive session (checks in `punktfunk_core::fuzzing::reassembler`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_core::fuzzing::reassembler(data);
});
