#![no_main]
//! nvhttp request targets (checks in `punktfunk_gamestream::fuzzing::nvhttp_query`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::nvhttp_query(data);
});
