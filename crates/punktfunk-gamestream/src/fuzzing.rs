//! The bodies of the GameStream fuzz targets, shared by cargo-fuzz (`fuzz/fuzz_targets/`) and
//! the corpus replay tests (`tests/fuzz_corpus.rs`), so both run the same checks.
//!
//! Each function takes the fuzzer's bytes and panics on a violated invariant. It returns
//! whether the input was accepted (what "accepted" means is in its docs): the fuzz targets
//! ignore that, the replay tests require it of every seed named `valid-*` (through
//! `punktfunk_core::fuzzing::replay`).
//!
//! Not an API: hidden from the docs, and free to change with the targets.

use crate::audio::AudioReceiver;
use crate::control::{ClientMessage, ControlCipher, Message};
use crate::control_session::{ControlEvent, ControlSession, EndReason, PeerId};
use crate::http::{parse_head, Request, MAX_HEAD, MAX_PARAMS};
use crate::launch::LaunchRequest;
use crate::pairing::{AwaitingPin, Message as PairMessage};
use crate::rtsp::{self, Origin, StreamConfig, MAX_REQUEST};
use crate::video::{Reassembled, VideoReassembler};
use punktfunk_core::input::Feedback;
use std::time::{Duration, Instant};

/// Any bytes as an RTSP request and as an encrypted envelope: no panic; a parsed request's
/// body stays within the limit; an ANNOUNCE body parses or names what is wrong. Accepted: a
/// complete request, an ANNOUNCE body, or an envelope.
pub fn rtsp(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(Some(r)) = rtsp::parse_request(data) {
        assert!(r.body.len() <= MAX_REQUEST);
        let _ = r.stream_id();
        let _ = r.cseq();
        let _ = StreamConfig::from_announce(&r.body);
        accepted = true;
    }
    accepted |= StreamConfig::from_announce(data).is_ok();
    accepted |= matches!(rtsp::open(&[3u8; 16], Origin::Client, data), Ok(Some(_)));
    accepted
}

/// Any bytes as an nvhttp request head: parsing never panics, never accepts a head over the
/// limit, and a parsed request feeds every handler-side parser (pairing phase, launch
/// parameters, pairing start) without panicking. Accepted: a complete request head.
pub fn nvhttp_request(data: &[u8]) -> bool {
    let Ok(Some((req, n))) = parse_head(data) else {
        return false;
    };
    assert!(n <= MAX_HEAD && n <= data.len());
    assert!(req.params().len() <= MAX_PARAMS);
    assert!(req.path.starts_with('/'));
    let _ = PairMessage::of(&req);
    let _ = LaunchRequest::parse(&req, false);
    let _ = LaunchRequest::parse(&req, true);
    let _ = AwaitingPin::begin(&req);
    true
}

/// Any string as a request target (`/path?query`): parsing never panics, stays within the
/// parameter limit, and every parameter it returns can be looked up by name. Accepted: UTF-8
/// that parses.
pub fn nvhttp_query(data: &[u8]) -> bool {
    let Ok(target) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(req) = Request::from_target(target) else {
        return false;
    };
    assert!(req.params().len() <= MAX_PARAMS);
    for (k, _) in req.params() {
        assert!(req.param(k).is_some());
    }
    true
}

/// Any bytes as an encrypted control packet and as an input packet: no panic. A control packet
/// sealed by the fuzzer's own cipher around arbitrary bytes always opens and classifies.
/// Accepted: the bytes open as a control packet or decode as an input packet.
pub fn gs_control(data: &[u8]) -> bool {
    let host = ControlCipher::new(&[9u8; 16], Origin::Host);
    let opened = host.open(data).is_ok();
    let input = crate::input::decode(data).is_ok();
    if data.len() >= 2 && data.len() <= 1024 {
        let kind = u16::from_le_bytes([data[0], data[1]]);
        let mut client = ControlCipher::new(&[9u8; 16], Origin::Client);
        let packet = client.seal(kind, &data[2..]);
        match host.open(&packet) {
            Ok(m) => {
                assert_eq!(m.payload, &data[2..]);
                let _ = ClientMessage::parse(&m);
            }
            Err(_) => assert_eq!(kind, 1, "only a nested envelope is refused"),
        }
        let _ = ClientMessage::parse(&Message {
            kind,
            payload: data[2..].to_vec(),
        });
    }
    opened || input
}

/// Any sequence of ENet events (connects with any data, disconnects, raw or client-sealed
/// packets), feedback and clock steps into the GameStream control session: no panic, one end at
/// most, and only the attached peer ever gets a transmit. Accepted: messages arrived and
/// nothing was dropped.
#[allow(clippy::disallowed_methods)] // fuzzing picks an arbitrary time origin
pub fn gs_control_session(data: &[u8]) -> bool {
    const KEY: [u8; 16] = [3u8; 16];
    const CONNECT: u32 = 0x1234_5678;
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
                let data = if a & 0x80 != 0 {
                    CONNECT
                } else {
                    u32::from(*a)
                };
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
            assert!(
                attached.is_none() || attached == Some(t.peer),
                "transmit to a stranger"
            );
        }
        while let Some(e) = s.poll_event() {
            if matches!(e, ControlEvent::Ended(_)) {
                ends += 1;
            }
        }
        assert!(ends <= 1, "ended twice");
    }
    s.stats().messages > 0 && s.stats().dropped.total() == 0
}

/// Any bytes as video and audio datagrams (each prefixed by one length byte; plain and
/// encrypted receivers, several packet sizes): no panic, and a completed frame never exceeds
/// what its shards can carry. Accepted: a video frame or an audio packet came out.
pub fn gs_media(data: &[u8]) -> bool {
    let mut plain = VideoReassembler::new(64, None);
    let mut sealed = VideoReassembler::new(64, Some(&[1u8; 16]));
    let mut audio = AudioReceiver::new(None, 0, 5);
    let mut audio_enc = AudioReceiver::new(Some([1u8; 16]), 7, 5);
    let mut delivered = false;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (dg, next) = tail.split_at(n);
        rest = next;
        // Pad to the exact video datagram size so the header is parsed.
        let mut v = dg.to_vec();
        v.resize(80, 0);
        if let Reassembled::Frame(f) = plain.push(&v) {
            assert!(f.data.len() <= 4 * 1023 * 48);
            delivered = true;
        }
        delivered |= matches!(sealed.push(dg), Reassembled::Frame(_));
        delivered |= !audio.push(dg).is_empty();
        delivered |= !audio_enc.push(dg).is_empty();
    }
    delivered
}
