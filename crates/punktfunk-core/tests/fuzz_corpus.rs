//! The seed corpora of the core's fuzz targets (`fuzz/corpus/<target>/`), run through the same
//! calls as the targets in `fuzz/fuzz_targets/`, so `cargo test` exercises every seed without
//! cargo-fuzz. A seed whose name starts with `valid-` must also be accepted by what its target
//! parses.

// Outside the core: tests take a real time origin.
#![allow(clippy::disallowed_methods)]

use punktfunk_core::control::{
    Codec, Hello, HostAction, HostControl, Message, Mode, PROTOCOL_VERSION,
};
use punktfunk_core::crypto::{dangerous_no_protection, CipherSuite};
use punktfunk_core::fec::{ErasureCode, FecError, Gf16, Gf8Cauchy, ShardsMut};
use punktfunk_core::handshake::{HostHandshake, HostPolicy};
use punktfunk_core::input::InputEvent;
use punktfunk_core::pairing::{
    ApprovalStep, ClientPairing, Fingerprints, HostPairing, HostRequest, Pin,
};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::RecvSession;
use punktfunk_core::wire::{Header, HEADER_LEN};
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

/// `fuzz_targets/header.rs`. Accepted: the header decodes.
fn header_target(data: &[u8]) -> bool {
    let Ok(h) = Header::decode(data) else {
        return false;
    };
    let mut out = [0u8; HEADER_LEN];
    h.encode(&mut out);
    assert_eq!(&out[..], &data[..HEADER_LEN]);
    true
}

/// `fuzz_targets/input.rs`. Accepted: the batch decodes.
fn input_target(data: &[u8]) -> bool {
    let Ok(events) = InputEvent::decode_batch(data) else {
        return false;
    };
    let again = InputEvent::decode_batch(&InputEvent::encode_batch(&events)).unwrap();
    assert_eq!(events, again);
    true
}

/// `fuzz_targets/fec_decode.rs`. Accepted: the block encoded and came back whole.
fn fec_decode_target(input: &[u8]) -> bool {
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

/// `fuzz_targets/reassembler.rs`. Accepted: a frame came out.
fn reassembler_target(data: &[u8]) -> bool {
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

/// `fuzz_targets/p1_host_control.rs`. Accepted: every message decoded and the session is
/// still running at the end.
fn p1_host_control_target(data: &[u8]) -> bool {
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
    let (welcome, _) = hs.established().expect("the handshake completes");
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

/// `fuzz_targets/p1_pairing.rs`. Accepted: every length-prefixed body decoded as a message.
fn p1_pairing_target(data: &[u8]) -> bool {
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
    if let Some(first) = it.next() {
        if let Ok(HostRequest::Pin(req)) = HostPairing::new(fps).handle(first) {
            if let Ok((state, _challenge)) = req.answer(&pin, &mut fill) {
                if let Some(m) = it.next() {
                    assert!(state.handle(m).is_err());
                }
            }
        }
    }
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

#[test]
fn header_corpus() {
    check("header", header_target);
}

#[test]
fn input_corpus() {
    check("input", input_target);
}

#[test]
fn fec_decode_corpus() {
    check("fec_decode", fec_decode_target);
}

#[test]
fn reassembler_corpus() {
    check("reassembler", reassembler_target);
}

#[test]
fn p1_host_control_corpus() {
    check("p1_host_control", p1_host_control_target);
}

#[test]
fn p1_pairing_corpus() {
    check("p1_pairing", p1_pairing_target);
}
