#![no_main]
//! nvhttp request heads (checks in `punktfunk_gamestream::fuzzing::nvhttp_request`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::nvhttp_request(data);
});
