#![no_main]
//! A sequence of datagrams (length-prefixed in the input) into a receive session without crypto,
//! so every parsable header reaches the reassembler. It must never panic and never hold more
//! memory than its limits allow.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::crypto::dangerous_no_protection;
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::RecvSession;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_frame_bytes: 256 * 1024,
        max_frames_in_flight: 4,
        max_frame_age: Duration::from_millis(5),
        ..ReassemblyLimits::default()
    };
    let bound = 2 * limits.max_frames_in_flight * 2 * limits.max_frame_bytes + 64 * 1024;
    let mut rx = RecvSession::new(limits, dangerous_no_protection());
    let start = Instant::now();
    let mut rest = data;
    let mut step = 0u64;
    while let [hi, lo, tail @ ..] = rest {
        let len = (u16::from_be_bytes([*hi, *lo]) as usize).min(tail.len());
        let mut dgram = tail[..len].to_vec();
        rest = &tail[len..];
        step += 1;
        let now = start + Duration::from_millis(step);
        let _ = rx.handle_datagram(now, &mut dgram);
        rx.handle_timeout(now);
        while let Some(ev) = rx.poll_event() {
            if let Event::Frame(f) = ev {
                rx.recycle(f.data);
            }
        }
        assert!(rx.held_bytes() <= bound);
    }
});
