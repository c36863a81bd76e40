#![no_main]
//! Any sequence of ENet events (connects with any data, disconnects, raw or client-sealed
//! packets), feedback and clock steps into the GameStream control session: no panic, one end at
//! most, and only the attached peer ever gets a transmit.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::input::Feedback;
use punktfunk_gamestream::control::ControlCipher;
use punktfunk_gamestream::control_session::{ControlEvent, ControlSession, EndReason, PeerId};
use punktfunk_gamestream::rtsp::Origin;
use std::time::{Duration, Instant};

const KEY: [u8; 16] = [3u8; 16];
const CONNECT: u32 = 0x1234_5678;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = ControlSession::new(now, CONNECT, &KEY);
    let mut client = ControlCipher::new(&KEY, Origin::Client);
    let mut ends = 0;
    let mut rest = data;
    while let [op, a, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (arg, next) = tail.split_at(n);
        rest = next;
        let peer = PeerId(u64::from(*a % 4));
        match op % 8 {
            0 => {
                let data = if a & 0x80 != 0 { CONNECT } else { u32::from(*a) };
                let _ = s.handle_connect(now, peer, data);
            }
            1 => s.handle_disconnect(now, peer),
            2 => s.handle_packet(now, peer, arg),
            3 if arg.len() >= 2 => {
                let kind = u16::from_le_bytes([arg[0], arg[1]]);
                let sealed = client.seal(kind, &arg[2..]);
                s.handle_packet(now, peer, &sealed);
            }
            4 => now += Duration::from_millis(u64::from(*a) * 50),
            5 => s.handle_timeout(now),
            6 => s.handle_feedback(
                now,
                Feedback::Rumble {
                    pad: *a,
                    low: u16::from(*len),
                    high: 0,
                },
            ),
            _ => s.end(now, EndReason::AppEnded),
        }
        let attached = s.attached();
        while let Some(t) = s.poll_transmit() {
            assert!(attached.is_none() || attached == Some(t.peer), "transmit to a stranger");
        }
        while let Some(e) = s.poll_event() {
            if matches!(e, ControlEvent::Ended(_)) {
                ends += 1;
            }
        }
        assert!(ends <= 1, "ended twice");
    }
});
