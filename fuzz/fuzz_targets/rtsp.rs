#![no_main]
//! RTSP requests and envelopes (checks in `punktfunk_gamestream::fuzzing::rtsp`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::rtsp(data);
});
