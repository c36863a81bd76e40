#![no_main]
//! Any bytes as an nvhttp request head: parsing never panics, never accepts a head over the
//! limit, and a parsed request feeds every handler-side parser (pairing phase, launch
//! parameters, pairing start) without panicking.
use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::http::{parse_head, MAX_HEAD, MAX_PARAMS};
use punktfunk_gamestream::launch::LaunchRequest;
use punktfunk_gamestream::pairing::{AwaitingPin, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, n))) = parse_head(data) {
        assert!(n <= MAX_HEAD && n <= data.len());
        assert!(req.params().len() <= MAX_PARAMS);
        assert!(req.path.starts_with('/'));
        let _ = Message::of(&req);
        let _ = LaunchRequest::parse(&req, false);
        let _ = LaunchRequest::parse(&req, true);
        let _ = AwaitingPin::begin(&req);
    }
});
