#![no_main]
//! Any bytes: header decode never panics, and what decodes re-encodes to the same 36 bytes.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::wire::{Header, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        let mut out = [0u8; HEADER_LEN];
        h.encode(&mut out);
        assert_eq!(&out[..], &data[..HEADER_LEN]);
    }
});
