//! The seed corpora of the GameStream fuzz targets (`fuzz/corpus/<target>/`), run through the
//! same calls as the targets in `fuzz/fuzz_targets/`, so `cargo test` exercises every seed
//! without cargo-fuzz. A seed whose name starts with `valid-` must also be accepted by what its
//! target parses.

// Outside the core: tests take a real time origin.
#![allow(clippy::disallowed_methods)]

use punktfunk_core::input::Feedback;
use punktfunk_gamestream::audio::AudioReceiver;
use punktfunk_gamestream::control::{ClientMessage, ControlCipher, Message};
use punktfunk_gamestream::control_session::{ControlEvent, ControlSession, EndReason, PeerId};
use punktfunk_gamestream::http::{parse_head, Request, MAX_HEAD, MAX_PARAMS};
use punktfunk_gamestream::launch::LaunchRequest;
use punktfunk_gamestream::pairing::{AwaitingPin, Message as PairMessage};
use punktfunk_gamestream::rtsp::{self, Origin, StreamConfig, MAX_REQUEST};
use punktfunk_gamestream::video::{Reassembled, VideoReassembler};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");

/// Every seed of `target` as (file name, bytes), sorted by name; at least one must exist.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(CORPUS).join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("seed is readable"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Runs `run` on every seed of `target`; `run` says whether the seed was accepted.
fn check(target: &str, run: impl Fn(&[u8]) -> bool) {
    let mut valid = 0;
    for (name, data) in seeds(target) {
        let accepted = run(&data);
        if name.starts_with("valid-") {
            assert!(accepted, "{target}/{name} was not accepted");
            valid += 1;
        }
    }
    assert!(valid > 0, "{target} has no valid- seed");
}

/// `fuzz_targets/rtsp.rs`. Accepted: a complete request, an ANNOUNCE body, or an envelope.
fn rtsp_target(data: &[u8]) -> bool {
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

/// `fuzz_targets/nvhttp_request.rs`. Accepted: a complete request head.
fn nvhttp_request_target(data: &[u8]) -> bool {
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

/// `fuzz_targets/nvhttp_query.rs`. Accepted: a target that parses.
fn nvhttp_query_target(data: &[u8]) -> bool {
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

/// `fuzz_targets/gs_control.rs`. Accepted: a packet that opens, or an input packet that decodes.
fn gs_control_target(data: &[u8]) -> bool {
    let host = ControlCipher::new(&[9u8; 16], Origin::Host);
    let opened = host.open(data).is_ok();
    let input = punktfunk_gamestream::input::decode(data).is_ok();
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

/// `fuzz_targets/gs_control_session.rs`. Accepted: messages arrived and nothing was dropped.
fn gs_control_session_target(data: &[u8]) -> bool {
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

/// `fuzz_targets/gs_media.rs`. Accepted: a video frame or an audio packet came out.
fn gs_media_target(data: &[u8]) -> bool {
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

#[test]
fn rtsp_corpus() {
    check("rtsp", rtsp_target);
}

#[test]
fn nvhttp_request_corpus() {
    check("nvhttp_request", nvhttp_request_target);
}

#[test]
fn nvhttp_query_corpus() {
    check("nvhttp_query", nvhttp_query_target);
}

#[test]
fn gs_control_corpus() {
    check("gs_control", gs_control_target);
}

#[test]
fn gs_control_session_corpus() {
    check("gs_control_session", gs_control_session_target);
}

#[test]
fn gs_media_corpus() {
    check("gs_media", gs_media_target);
}
