//! The bodies of the core's fuzz targets, shared by cargo-fuzz (`fuzz/fuzz_targets/`) and the
//! corpus replay tests (`tests/fuzz_corpus.rs`), so both run the same checks.
//!
//! Each function takes the fuzzer's bytes and panics on a violated invariant. It returns
//! whether the input was accepted (what "accepted" means is in its docs): the fuzz targets
//! ignore that, the replay tests require it of every seed named `valid-*`. [`corpus`] and
//! [`replay`] read the seed corpora in `fuzz/corpus/<target>/` for those tests (and for the
//! GameStream crate's).
//!
//! Not an API: hidden from the docs, and free to change with the targets.

use crate::control::{Codec, Hello, HostAction, HostControl, Message, Mode, PROTOCOL_VERSION};
use crate::crypto::{dangerous_no_protection, CipherSuite};
use crate::fec::{ErasureCode, FecError, Gf16, Gf8Cauchy, ShardsMut};
use crate::handshake::{HostHandshake, HostPolicy};
use crate::input::InputEvent;
use crate::pairing::{ApprovalStep, ClientPairing, Fingerprints, HostPairing, HostRequest, Pin};
use crate::reassembler::{Event, ReassemblyLimits};
use crate::session::RecvSession;
use crate::wire::{Header, HEADER_LEN};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Any bytes: header decode never panics, and what decodes re-encodes to the same 36 bytes.
/// Accepted: the header decodes.
pub fn header(data: &[u8]) -> bool {
    let Ok(h) = Header::decode(data) else {
        return false;
    };
    let mut out = [0u8; HEADER_LEN];
    h.encode(&mut out);
    assert_eq!(&out[..], &data[..HEADER_LEN]);
    true
}

/// Input batches: decode never panics, and decoded events survive a re-encode. Accepted: the
/// batch decodes.
pub fn input(data: &[u8]) -> bool {
    let Ok(events) = InputEvent::decode_batch(data) else {
        return false;
    };
    let again = InputEvent::decode_batch(&InputEvent::encode_batch(&events)).unwrap();
    assert_eq!(events, again);
    true
}

/// FEC decode with arbitrary geometry and erasure patterns, for both codes: never panics, and
/// whenever enough shards remain the data comes back byte-exact. Accepted: the block encoded
/// and came back whole.
pub fn fec_decode(input: &[u8]) -> bool {
    let [code, d, p, l, mask @ ..] = input else {
        return false;
    };
    let (data, parity) = (*d as usize % 64 + 1, *p as usize % 32);
    let len = (*l as usize % 64 + 1) * 2;
    let total = data + parity;
    let mut buf: Vec<u8> = (0..total * len)
        .map(|i| (i as u8).wrapping_mul(*l | 1))
        .collect();
    let mut ec: Box<dyn ErasureCode> = if code & 1 == 0 {
        Box::new(Gf8Cauchy::default())
    } else {
        Box::new(Gf16::default())
    };
    let mut shards = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    if ec.encode(&mut shards, data, parity).is_err() {
        return false;
    }
    let original = buf.clone();
    let present: Vec<bool> = (0..total)
        .map(|k| mask.get(k).is_none_or(|m| m & 1 == 0))
        .collect();
    for (k, p) in present.iter().enumerate() {
        if !p {
            buf[k * len..(k + 1) * len].fill(0xEE);
        }
    }
    let mut shards = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    match ec.reconstruct(&mut shards, data, parity, &present) {
        Ok(_) => {
            assert_eq!(&buf[..data * len], &original[..data * len]);
            true
        }
        Err(FecError::TooFewShards { .. }) => {
            assert!(present.iter().filter(|p| **p).count() < data);
            false
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A sequence of datagrams (each prefixed by a big-endian `u16` length) into a receive session
/// without crypto, so every parsable header reaches the reassembler: never panics and never
/// holds more memory than its limits allow. Accepted: a frame came out.
#[allow(clippy::disallowed_methods)] // fuzzing picks an arbitrary time origin
pub fn reassembler(data: &[u8]) -> bool {
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
    let mut frames = 0;
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
                frames += 1;
            }
        }
        assert!(rx.held_bytes() <= bound);
    }
    frames > 0
}

fn host_policy() -> HostPolicy {
    HostPolicy {
        codecs: vec![Codec::H264],
        max_mode: Mode::new(1920, 1080, 60),
        default_bitrate_kbps: 10_000,
        bitrate_range_kbps: (500, 50_000),
        default_fec_percent: 20,
        fec_parity_range: (2, 1024),
        shard_len: 1400,
        suite: CipherSuite::AES_128_GCM,
        data_port: 47_801,
    }
}

/// Any sequence of control messages, datagrams, pipeline answers and clock steps into
/// punktfunk/1's host control machine: no panic, at most one end and nothing after it, and no
/// mode past the policy's limit ever reaches the pipeline. Accepted: every message decoded and
/// the session is still running at the end.
#[allow(clippy::disallowed_methods)] // fuzzing picks an arbitrary time origin
pub fn p1_host_control(data: &[u8]) -> bool {
    let mut hs = HostHandshake::new(host_policy());
    hs.handle(
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            mode: Mode::new(640, 360, 30),
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: "fuzz".into(),
            app: String::new(),
        }),
        &mut |b| b.fill(7),
    );
    hs.handle(Message::Start, &mut |b| b.fill(7));
    let Some((welcome, _)) = hs.established() else {
        return false;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut hc = HostControl::new(welcome, host_policy(), t0, now);
    let max = host_policy().max_mode;
    let mut ended = false;
    let mut all_decoded = true;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (arg, next) = tail.split_at(n);
        rest = next;
        match op % 7 {
            0 => {
                if let Ok(m) = Message::decode_body(arg) {
                    hc.handle_message(now, m);
                } else {
                    all_decoded = false;
                    hc.handle_malformed(now, "undecodable");
                }
            }
            1 => hc.handle_datagram(now, arg),
            2 => now += Duration::from_millis(u64::from(*len) * 40),
            3 => hc.handle_timeout(now),
            4 => {
                let _ = hc.handle_reconfigured(now, u32::from(*len), 5_000);
            }
            5 => {
                let _ = hc.handle_reconfigure_failed(now, "fuzz");
            }
            _ => hc.handle_pipeline_failed(now, "fuzz"),
        }
        while let Some(a) = hc.poll_action() {
            assert!(!ended, "nothing comes after the end");
            match a {
                HostAction::Reconfigure { mode, .. } => assert!(
                    mode.width <= max.width
                        && mode.height <= max.height
                        && mode.refresh_mhz <= max.refresh_mhz,
                    "{mode} past {max} reached the pipeline"
                ),
                HostAction::End(_) => ended = true,
                _ => {}
            }
        }
        if let Some(t) = hc.poll_timeout() {
            assert!(t >= t0);
        }
    }
    all_decoded && !ended
}

fn fill(buf: &mut [u8]) {
    buf.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8 ^ 0x5a);
}

/// Any bytes as the pairing messages of punktfunk/1 (each prefixed by one length byte), into
/// both sides of the ceremony at every state: no panic, and no ceremony succeeds without the
/// right key confirmation. Accepted: there was a body and every body decoded as a message.
pub fn p1_pairing(data: &[u8]) -> bool {
    let fps = Fingerprints {
        client: [1; 32],
        host: [2; 32],
    };
    let pin = Pin::parse("0427").unwrap();
    let mut msgs = Vec::new();
    let mut all_decoded = true;
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        match Message::decode_body(body) {
            Ok(m) => msgs.push(m),
            Err(_) => all_decoded = false,
        }
    }
    let any = !msgs.is_empty();
    let mut it = msgs.into_iter();
    // Host: start, then a confirmation.
    if let Some(first) = it.next() {
        if let Ok(HostRequest::Pin(req)) = HostPairing::new(fps).handle(first) {
            if let Ok((state, _challenge)) = req.answer(&pin, &mut fill) {
                if let Some(m) = it.next() {
                    // A fuzzed confirmation cannot be the MAC of a fresh SPAKE2 run.
                    assert!(state.handle(m).is_err());
                }
            }
        }
    }
    // Client: a fuzzed challenge and answer.
    let (state, _) = ClientPairing::with_pin(&pin, "fuzz", fps, &mut fill);
    if let Some(m) = it.next() {
        if let Ok((done, _)) = state.handle(m) {
            if let Some(m) = it.next() {
                let _ = done.handle(m);
            }
        }
    }
    let (mut waiting, _) = ClientPairing::with_approval("fuzz");
    for m in it {
        match waiting.handle(m, fps.host) {
            Ok(ApprovalStep::Waiting(w)) => waiting = w,
            _ => break,
        }
    }
    any && all_decoded
}

/// Every seed of fuzz target `target` (`fuzz/corpus/<target>/`) as (file name, bytes), sorted
/// by name. Panics if the directory is missing or empty.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus")).join(target);
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

/// Runs the body `run` of fuzz target `target` on every seed of its corpus: each must pass its
/// checks, each seed named `valid-*` must be accepted, and there must be at least one.
pub fn replay(target: &str, run: impl Fn(&[u8]) -> bool) {
    let mut valid = 0;
    for (name, data) in corpus(target) {
        let accepted = run(&data);
        if name.starts_with("valid-") {
            assert!(accepted, "{target}/{name} was not accepted");
            valid += 1;
        }
    }
    assert!(valid > 0, "{target} has no valid- seed");
}
