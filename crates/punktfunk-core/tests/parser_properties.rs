//! Property tests of every core parser that reads a peer's bytes: arbitrary bytes never panic,
//! and neither do otherwise well-formed inputs whose length, count, index or offset fields take
//! any value (0, the bound, just past it, the type's maximum). Where a parser accepts, what it
//! returns stays within its documented limits.

// Outside the core: tests take a real time origin.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;
use punktfunk_core::control::{
    ClockReply, Codec, DirectionKey, Hello, Message, MessageReader, Mode, PairMethod, PairStart,
    Welcome, MAX_MESSAGE_LEN, PROTOCOL_VERSION,
};
use punktfunk_core::crypto::{packet_key, CipherSuite, Opener};
use punktfunk_core::fec::{ErasureCode, FecCode, Gf16, Gf8Cauchy, ShardsMut};
use punktfunk_core::handshake::{ClientHandshake, HostHandshake, HostPolicy};
use punktfunk_core::input::InputEvent;
use punktfunk_core::pairing::{Fingerprints, HostPairing};
use punktfunk_core::probe;
use punktfunk_core::reassembler::{Event, Reassembler, ReassemblyLimits};
use punktfunk_core::wire::{Flags, Header, StreamKind, HEADER_LEN};
use std::time::{Duration, Instant};

fn edgy_u16(bound: u16) -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(1),
        Just(bound.saturating_sub(1)),
        Just(bound),
        Just(bound.saturating_add(1)),
        Just(u16::MAX - 1),
        Just(u16::MAX),
        any::<u16>(),
    ]
}

fn edgy_u32(bound: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(bound.saturating_sub(1)),
        Just(bound),
        Just(bound.saturating_add(1)),
        Just(u32::MAX / 2),
        Just(u32::MAX - 1),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX / 2),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn edgy_usize() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..300,
        Just(usize::MAX / 2),
        Just(usize::MAX - 1),
        Just(usize::MAX),
        any::<usize>(),
    ]
}

fn fec_code() -> impl Strategy<Value = FecCode> {
    prop_oneof![
        Just(FecCode::NONE),
        Just(FecCode::GF8_CAUCHY),
        Just(FecCode::GF16),
        any::<u8>().prop_map(FecCode),
    ]
}

/// A header with every field drawn to break things (not necessarily consistent).
fn any_header() -> impl Strategy<Value = Header> {
    (
        (
            any::<u8>(),
            any::<u8>(),
            fec_code(),
            edgy_u64(),
            edgy_u32(8),
        ),
        (
            edgy_u32(1 << 20),
            any::<u64>(),
            edgy_u16(300),
            edgy_u16(300),
            edgy_u16(64),
            edgy_u16(1400),
        ),
    )
        .prop_map(
            |(
                (stream, flags, fec, seq, frame),
                (frame_len, ts, shard, data, parity, shard_len),
            )| {
                Header {
                    stream: StreamKind(stream),
                    flags: Flags(flags),
                    fec,
                    seq,
                    frame,
                    frame_len,
                    timestamp_us: ts,
                    shard,
                    data,
                    parity,
                    shard_len,
                }
            },
        )
}

/// A header whose geometry is consistent, so the reassembler stores it, with frame indices
/// that jump anywhere.
fn stored_header() -> impl Strategy<Value = Header> {
    (
        edgy_u32(8),
        1u16..40,
        1u16..64,
        prop_oneof![Just(FecCode::NONE), Just(FecCode::GF8_CAUCHY)],
        0u16..8,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(frame, data, shard_len, fec, parity, shard)| {
            let parity = if fec == FecCode::NONE { 0 } else { parity + 1 };
            let shard_len = shard_len * 2;
            Header {
                stream: StreamKind::VIDEO,
                flags: Flags(0),
                fec,
                seq: 0,
                frame,
                frame_len: u32::from(data) * u32::from(shard_len),
                timestamp_us: 0,
                shard: shard.index(usize::from(data + parity)) as u16,
                data,
                parity,
                shard_len,
            }
        })
}

fn mode() -> impl Strategy<Value = Mode> {
    (edgy_u32(7680), edgy_u32(4320), edgy_u32(480_000)).prop_map(|(width, height, refresh_mhz)| {
        Mode {
            width,
            height,
            refresh_mhz,
        }
    })
}

fn policy() -> HostPolicy {
    HostPolicy {
        codecs: vec![Codec::H264, Codec::HEVC],
        max_mode: Mode::new(3840, 2160, 240),
        default_bitrate_kbps: 10_000,
        bitrate_range_kbps: (500, 50_000),
        default_fec_percent: 20,
        fec_parity_range: (2, 1024),
        shard_len: 1400,
        suite: CipherSuite::AES_128_GCM,
        data_port: 47_801,
    }
}

fn hello(mode: Mode, bitrate_kbps: u32, name: String) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        mode,
        codecs: vec![Codec::H264],
        bitrate_kbps,
        fec_percent: Some(20),
        client_name: name,
        app: "desktop".into(),
    }
}

/// Encoded messages of every kind that carries a length or count field, and where that field
/// sits in the body (offset, width in bytes).
fn messages_with_length_fields() -> Vec<(Vec<u8>, usize, usize)> {
    let body = |m: &Message| m.to_bytes()[4..].to_vec();
    let h = hello(Mode::new(1280, 720, 60), 0, "client".into());
    let hello_body = body(&Message::Hello(h));
    // type, version, mode (12), then the codec count.
    let codec_count = 1 + 2 + 12;
    // ... one codec, bitrate, fec, then the name's length.
    let name_len = codec_count + 2 + 1 + 4 + 1;
    let app_len = name_len + 2 + "client".len();
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        session_id: 1,
        codec: Codec::H264,
        mode: Mode::new(1280, 720, 60),
        bitrate_kbps: 10_000,
        fec_percent: 20,
        fec_min_parity: 2,
        fec_max_parity: 1024,
        fec_small_code: FecCode::GF8_CAUCHY,
        shard_len: 1400,
        suite: CipherSuite::AES_128_GCM,
        host_to_client: DirectionKey {
            key: vec![1; 16],
            salt: [2; 12],
        },
        client_to_host: DirectionKey {
            key: vec![3; 16],
            salt: [4; 12],
        },
        data_port: 47_801,
    };
    // type, version, session id, codec, mode, bitrate, fec (2 + 2 + 2), code, shard, suite.
    let key_len = 1 + 2 + 8 + 1 + 12 + 4 + 6 + 1 + 2 + 1;
    let start = Message::PairStart(PairStart {
        version: PROTOCOL_VERSION,
        method: PairMethod::PIN,
        client_name: "c".into(),
        spake: vec![0x41; 33],
    });
    let bye = Message::Bye {
        reason: punktfunk_core::control::ByeReason(1),
        message: "bye".into(),
    };
    vec![
        (hello_body.clone(), codec_count, 2),
        (hello_body.clone(), name_len, 2),
        (hello_body, app_len, 2),
        (body(&Message::Welcome(welcome)), key_len, 1),
        (body(&start), 1 + 2 + 1, 2),
        (body(&start), 1 + 2 + 1 + 2 + 1, 1),
        (body(&bye), 1 + 2, 2),
        (body(&Message::PairDone { id: "x".into() }), 1, 2),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn header_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(h) = Header::decode(&data) {
            let mut out = [0u8; HEADER_LEN];
            h.encode(&mut out);
            prop_assert_eq!(&out[..], &data[..HEADER_LEN]);
        }
    }

    /// Any geometry: a decoded header is consistent and within its code's block size.
    #[test]
    fn header_any_geometry(h in any_header()) {
        let mut buf = [0u8; HEADER_LEN];
        h.encode(&mut buf);
        if let Ok(d) = Header::decode(&buf) {
            prop_assert_eq!(d, h);
            prop_assert!(d.shard_len > 0 && d.frame_len > 0);
            prop_assert!((d.shard as usize) < d.total_shards());
            prop_assert!(d.total_shards() <= d.fec.max_total_shards());
            prop_assert_eq!(u64::from(d.data), u64::from(d.frame_len).div_ceil(u64::from(d.shard_len)));
        }
    }

    /// Headers built by hand, consistent or not, with bodies of any length: the reassembler
    /// never panics and holds no more than its limits allow, whether or not events are drained.
    #[test]
    fn reassembler_any_header_and_body(
        shards in prop::collection::vec((prop_oneof![any_header(), stored_header()], prop_oneof![Just(None), Just(Some(0usize)), (0usize..200).prop_map(Some)], any::<bool>()), 1..48),
    ) {
        let limits = ReassemblyLimits {
            max_frame_bytes: 64 * 1024,
            max_shard_len: 1500,
            max_frames_in_flight: 4,
            ..ReassemblyLimits::default()
        };
        let bound = 2 * limits.max_frames_in_flight * 2 * limits.max_frame_bytes;
        let mut r = Reassembler::new(limits);
        let t0 = Instant::now();
        let mut lost = 0u64;
        for (i, (h, len, drain)) in shards.into_iter().enumerate() {
            let body = vec![0x5A; len.unwrap_or(h.shard_len as usize)];
            let now = t0 + Duration::from_millis(i as u64);
            r.handle_shard(now, &h, &body);
            if drain {
                r.handle_timeout(now);
                while let Some(e) = r.poll_event() {
                    match e {
                        Event::Frame(f) => {
                            prop_assert!(f.data.len() <= limits.max_frame_bytes);
                            r.recycle(f.data);
                        }
                        Event::Lost { count, .. } => lost += u64::from(count),
                    }
                }
            }
            prop_assert!(r.held_bytes() <= bound, "{} > {}", r.held_bytes(), bound);
            prop_assert!(r.frames_in_flight() <= limits.max_frames_in_flight);
        }
        while let Some(e) = r.poll_event() {
            if let Event::Lost { count, .. } = e {
                lost += u64::from(count);
            }
        }
        prop_assert_eq!(lost, r.stats().frames_lost);
    }

    #[test]
    fn input_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(events) = InputEvent::decode_batch(&data) {
            prop_assert!(events.len() <= data.len() / 2);
            prop_assert_eq!(InputEvent::decode_batch(&InputEvent::encode_batch(&events)).unwrap(), events);
        }
    }

    /// Events of any type with any length byte over bodies of any length.
    #[test]
    fn input_any_length_byte(events in prop::collection::vec((0u8..12, prop_oneof![Just(0u8), Just(255), any::<u8>()], prop::collection::vec(any::<u8>(), 0..40)), 1..8)) {
        let mut batch = Vec::new();
        for (kind, len, body) in &events {
            batch.push(*kind);
            batch.push(*len);
            batch.extend_from_slice(body);
        }
        let _ = InputEvent::decode_batch(&batch);
    }

    #[test]
    fn control_message_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = Message::decode_body(&data) {
            let again = m.to_bytes();
            prop_assert!(again.len() <= 4 + MAX_MESSAGE_LEN);
        }
    }

    /// A message's length or count field set to anything: decoded or refused, never a panic
    /// or an allocation past the body.
    #[test]
    fn control_message_any_length_field(which in any::<prop::sample::Index>(), value in edgy_u16(1024), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let cases = messages_with_length_fields();
        let (mut body, at, width) = cases[which.index(cases.len())].clone();
        if width == 1 {
            body[at] = value as u8;
        } else {
            body[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
        let _ = Message::decode_body(&body);
        body.extend_from_slice(&tail);
        let _ = Message::decode_body(&body);
    }

    /// Any length prefix on the stream: an error, a wait, or a message of that length.
    #[test]
    fn message_reader_any_length_prefix(len in edgy_u32(MAX_MESSAGE_LEN as u32), rest in prop::collection::vec(any::<u8>(), 0..64), split in any::<prop::sample::Index>()) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        let cut = split.index(bytes.len() + 1);
        let mut r = MessageReader::new();
        r.push(&bytes[..cut]);
        prop_assert!(r.bytes_wanted() >= 1);
        let first = r.next_message();
        r.push(&bytes[cut..]);
        prop_assert!(r.bytes_wanted() >= 1);
        let second = if first.is_ok() { r.next_message() } else { first.clone() };
        if len == 0 || len as usize > MAX_MESSAGE_LEN {
            prop_assert!(first.is_err() || second.is_err() || cut < 4);
        }
        if let Ok(Some(_)) = second {
            prop_assert!(len as usize <= rest.len());
        }
    }

    #[test]
    fn probes_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = probe::session_id(&data);
        let k = packet_key(CipherSuite::AES_128_GCM, &[3; 16], [4; 12]).unwrap();
        let mut o = Opener::new(k);
        let mut d = data.clone();
        prop_assert!(probe::verify(&mut o, &mut d).is_err());
    }

    /// Modes and clock replies off the wire, any values.
    #[test]
    fn modes_and_clock_replies_any_values(m in mode(), t in (edgy_u64(), edgy_u64(), edgy_u64(), edgy_u64())) {
        let fps = m.fps();
        prop_assert_eq!(u64::from(fps), (u64::from(m.refresh_mhz) + 500) / 1000);
        let _ = m.to_string();
        let _ = m.validate();
        let (t0, t1, t2, t3) = t;
        let r = ClockReply { id: 0, t0_us: t0, t1_us: t1, t2_us: t2 };
        let (offset, rtt) = r.offset_and_rtt(t3);
        let exact = ((i128::from(t1) - i128::from(t0)) + (i128::from(t2) - i128::from(t3))) / 2;
        prop_assert_eq!(i128::from(offset), exact.clamp(i128::from(i64::MIN), i128::from(i64::MAX)));
        let exact_rtt = (i128::from(t3) - i128::from(t0)) - (i128::from(t2) - i128::from(t1));
        prop_assert_eq!(i128::from(rtt), exact_rtt.clamp(0, i128::from(u64::MAX)));
    }

    /// A Hello with any mode and bitrate: admitted within the policy or refused with a Bye.
    #[test]
    fn handshake_any_hello(m in mode(), bitrate in edgy_u32(50_000), name in ".{0,40}") {
        let mut hs = HostHandshake::new(policy());
        hs.handle(Message::Hello(hello(m, bitrate, name)), &mut |b| b.fill(1));
        let reply = hs.poll_message();
        match reply {
            Some(Message::Welcome(w)) => {
                prop_assert!(w.mode.validate().is_ok());
                prop_assert!((500..=50_000).contains(&w.bitrate_kbps));
                let mut c = ClientHandshake::new(hello(m, bitrate, String::new()));
                c.poll_message();
                c.handle(Message::Welcome(w));
                prop_assert!(c.established().is_some());
            }
            Some(Message::Bye { .. }) => prop_assert!(hs.error().is_some()),
            other => return Err(TestCaseError::fail(format!("no Welcome or Bye: {other:?}"))),
        }
    }

    /// A Welcome with any mode, geometry and key lengths: the client accepts it or says Bye.
    #[test]
    fn client_handshake_any_welcome(m in mode(), shard_len in edgy_u16(64), fec in (any::<u16>(), any::<u16>(), any::<u16>()), key_lens in (0usize..40, 0usize..40), suite in any::<u8>()) {
        let w = Welcome {
            version: PROTOCOL_VERSION,
            session_id: 1,
            codec: Codec::H264,
            mode: m,
            bitrate_kbps: 1,
            fec_percent: fec.0,
            fec_min_parity: fec.1,
            fec_max_parity: fec.2,
            fec_small_code: FecCode::GF8_CAUCHY,
            shard_len,
            suite: CipherSuite(suite),
            host_to_client: DirectionKey { key: vec![1; key_lens.0], salt: [2; 12] },
            client_to_host: DirectionKey { key: vec![3; key_lens.1], salt: [4; 12] },
            data_port: 1,
        };
        let mut c = ClientHandshake::new(hello(Mode::new(1280, 720, 60), 0, String::new()));
        c.poll_message();
        c.handle(Message::Welcome(w));
        prop_assert!(c.established().is_some() || c.error().is_some());
    }

    /// Any bytes as the message that starts a pairing.
    #[test]
    fn pairing_start_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..128), spake_len in 0usize..80) {
        let fps = Fingerprints { client: [1; 32], host: [2; 32] };
        if let Ok(m) = Message::decode_body(&data) {
            let _ = HostPairing::new(fps).handle(m);
        }
        let start = Message::PairStart(PairStart {
            version: PROTOCOL_VERSION,
            method: PairMethod::PIN,
            client_name: "c".into(),
            spake: data.iter().copied().cycle().take(spake_len).collect(),
        });
        let _ = HostPairing::new(fps).handle(start);
    }

    /// A strided view with any stride, offset, length and count: refused or in bounds.
    #[test]
    fn shard_views_any_geometry(buf_len in 0usize..512, stride in edgy_usize(), offset in edgy_usize(), len in edgy_usize(), count in edgy_usize()) {
        let mut buf = vec![0u8; buf_len];
        if let Some(mut v) = ShardsMut::new(&mut buf, stride, offset, len, count) {
            for k in 0..v.count().min(8) {
                prop_assert_eq!(v.shard(k).len(), len);
                v.shard_mut(k).fill(1);
            }
        }
    }

    /// Encode and reconstruct with any shard counts, including ones past the codes' limits.
    #[test]
    fn fec_any_counts(data in edgy_usize(), parity in edgy_usize(), count in 0usize..40, len in prop_oneof![Just(2usize), Just(3), Just(64)], present in prop::collection::vec(any::<bool>(), 0..40), gf16 in any::<bool>()) {
        let mut buf = vec![0u8; count * len];
        let mut code: Box<dyn ErasureCode> = if gf16 { Box::new(Gf16::new()) } else { Box::new(Gf8Cauchy::new()) };
        if let Some(mut shards) = ShardsMut::contiguous(&mut buf, len, count) {
            let _ = code.encode(&mut shards, data, parity);
            let _ = code.reconstruct(&mut shards, data, parity, &present);
        }
    }
}
