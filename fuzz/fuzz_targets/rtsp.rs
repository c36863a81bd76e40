#![no_main]
//! Any bytes as an RTSP request and as an encrypted envelope: no panic; a parsed request's
//! body stays within the limit; an ANNOUNCE body parses or names what is wrong.
use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::rtsp::{open, parse_request, Origin, StreamConfig, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(r)) = parse_request(data) {
        assert!(r.body.len() <= MAX_REQUEST);
        let _ = r.stream_id();
        let _ = r.cseq();
        let _ = StreamConfig::from_announce(&r.body);
    }
    let _ = StreamConfig::from_announce(data);
    let _ = open(&[3u8; 16], Origin::Client, data);
});
