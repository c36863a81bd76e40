#![no_main]
//! Any string as a request target (`/path?query`): parsing never panics, stays within the
//! parameter limit, and every parameter it returns can be looked up by name.
use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::http::{Request, MAX_PARAMS};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    if let Ok(req) = Request::from_target(target) {
        assert!(req.params().len() <= MAX_PARAMS);
        for (k, _) in req.params() {
            assert!(req.param(k).is_some());
        }
    }
});
