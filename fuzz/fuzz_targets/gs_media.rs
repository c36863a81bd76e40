#![no_main]
//! GameStream video and audio datagrams (checks in `punktfunk_gamestream::fuzzing::gs_media`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    punktfunk_gamestream::fuzzing::gs_media(data);
});
