#![no_main]
//! GameStream control session (checks in `punktfunk_gamestream::fuzzing::gs_control_session`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::gs_control_session(data);
});
