#![no_main]
//! Input batches: decode never panics, and decoded events survive a re-encode.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::input::InputEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = InputEvent::decode_batch(data) {
        let again = InputEvent::decode_batch(&InputEvent::encode_batch(&events)).unwrap();
        assert_eq!(events, again);
    }
});
