#![no_main]
//! GameStream control and input packets (checks in `punktfunk_gamestream::fuzzing::gs_control`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::gs_control(data);
});
