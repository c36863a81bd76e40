//! Property tests of every GameStream parser that reads a peer's bytes: arbitrary bytes never
//! panic, and neither do otherwise well-formed inputs whose length, count or offset fields take
//! any value (0, the bound, just past it, the type's maximum). Where a parser accepts, what it
//! returns stays within its documented limits.

use proptest::prelude::*;
use punktfunk_gamestream::audio::{self, AudioReceiver};
use punktfunk_gamestream::control::{ClientMessage, ControlCipher, Message, ENVELOPE_HEADER};
use punktfunk_gamestream::crypto::{cert_from_pem, ecb_decrypt, CertInfo};
use punktfunk_gamestream::http::{parse_head, Request, MAX_HEAD, MAX_PARAMS, MAX_TARGET};
use punktfunk_gamestream::input;
use punktfunk_gamestream::launch::{parse_mode, LaunchRequest};
use punktfunk_gamestream::plan::{HostAbilities, SessionPlan};
use punktfunk_gamestream::rtsp::{self, Origin, StreamConfig, MAX_REQUEST};
use punktfunk_gamestream::video::{strip_leading_sei, Reassembled, VideoReassembler};
use punktfunk_gamestream::xml;
use ring::aead;

/// 32-bit values a length field is most likely to break on, and any other.
fn edgy_u32(bound: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(bound.saturating_sub(1)),
        Just(bound),
        Just(bound.saturating_add(1)),
        Just(u32::MAX - 1),
        Just(u32::MAX),
        Just(0x8000_0000),
        any::<u32>(),
    ]
}

/// 16-bit values a length field is most likely to break on, and any other.
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

/// Text a client might put where a decimal number belongs.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just((u64::MAX - 1).to_string()),
        Just(u128::MAX.to_string()),
        "[0-9]{1,45}",
        "[+-][0-9]{1,25}",
        "0[xX][0-9a-fA-F]{1,20}",
        "[ \t]{0,3}[0-9]{1,6}[ \t]{0,3}",
        "[0-9 +x-]{0,8}",
        any::<String>(),
    ]
}

fn rtsp_request(content_length: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "ANNOUNCE streamid=control/13/0 RTSP/1.0\r\nCSeq: 6\r\nContent-length: {content_length}\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// An ANNOUNCE body with every attribute the host requires, `value` for `name`.
fn announce_with(name: &str, value: &str) -> String {
    let attrs = [
        ("x-nv-video[0].clientViewportWd", "1920"),
        ("x-nv-video[0].clientViewportHt", "1080"),
        ("x-nv-video[0].maxFPS", "60"),
        ("x-nv-video[0].packetSize", "1024"),
        ("x-nv-vqos[0].bw.maximumBitrateKbps", "16000"),
        ("x-ml-video.configuredBitrateKbps", "20000"),
        ("x-nv-video[0].videoEncoderSlicesPerFrame", "1"),
        ("x-nv-video[0].maxNumReferenceFrames", "1"),
        ("x-nv-audio.surround.numChannels", "2"),
        ("x-nv-audio.surround.channelMask", "3"),
        ("x-nv-audio.surround.AudioQuality", "0"),
        ("x-nv-aqos.packetDuration", "5"),
        ("x-ss-general.encryptionEnabled", "5"),
        ("x-nv-general.useReliableUdp", "13"),
    ];
    let mut s = String::from("v=0\r\n");
    for (k, v) in attrs {
        let v = if k == name { value } else { v };
        s.push_str(&format!("a={k}:{v} \r\n"));
    }
    s
}

const ANNOUNCE_NAMES: [&str; 14] = [
    "x-nv-video[0].clientViewportWd",
    "x-nv-video[0].clientViewportHt",
    "x-nv-video[0].maxFPS",
    "x-nv-video[0].packetSize",
    "x-nv-vqos[0].bw.maximumBitrateKbps",
    "x-ml-video.configuredBitrateKbps",
    "x-nv-video[0].videoEncoderSlicesPerFrame",
    "x-nv-video[0].maxNumReferenceFrames",
    "x-nv-audio.surround.numChannels",
    "x-nv-audio.surround.channelMask",
    "x-nv-audio.surround.AudioQuality",
    "x-nv-aqos.packetDuration",
    "x-ss-general.encryptionEnabled",
    "x-nv-general.useReliableUdp",
];

/// A control envelope sealed by the client under `key` with any inner type and length field.
fn sealed_control(key: &[u8; 16], seq: u32, kind: u16, inner_len: u16, payload: &[u8]) -> Vec<u8> {
    let k = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, key).unwrap());
    let mut pt = kind.to_le_bytes().to_vec();
    pt.extend_from_slice(&inner_len.to_le_bytes());
    pt.extend_from_slice(payload);
    let mut iv = [0u8; 12];
    iv[..4].copy_from_slice(&seq.to_le_bytes());
    iv[10] = b'C';
    iv[11] = b'C';
    let tag = k
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::empty(),
            &mut pt,
        )
        .unwrap();
    let mut out = 1u16.to_le_bytes().to_vec();
    out.extend_from_slice(&((4 + 16 + pt.len()) as u16).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(&pt);
    out
}

/// Mostly `valid`, sometimes a value a length field is likely to break on: so that many
/// configurations get past the plan's early refusals to the arithmetic behind them.
fn mostly(valid: u32, bound: u32) -> impl Strategy<Value = u32> {
    prop_oneof![7 => Just(valid), 1 => edgy_u32(bound)]
}

fn stream_config() -> impl Strategy<Value = StreamConfig> {
    let a = (
        mostly(1920, 7680),
        mostly(1080, 4320),
        mostly(60, 240),
        mostly(1024, 4096),
        any::<u32>(),
        prop_oneof![any::<u32>(), edgy_u32(100)],
        edgy_u32(32),
    );
    let b = (
        edgy_u32(16),
        mostly(0, 3),
        any::<u32>(),
        any::<u32>(),
        prop_oneof![Just(2u32), Just(6), Just(8), edgy_u32(8)],
        prop_oneof![Just(5u32), Just(10), edgy_u32(10)],
        prop_oneof![3 => Just(7u32), 1 => any::<u32>()],
        any::<u32>(),
        mostly(13, 13),
        any::<(bool, bool)>(),
    );
    (a, b).prop_map(
        |(
            (width, height, fps, packet_size, max_bitrate_kbps, configured_bitrate_kbps, fec),
            (slices, format, refs, csc, channels, packet_ms, enc, flags, udp, (c444, hq)),
        )| StreamConfig {
            width,
            height,
            fps,
            packet_size,
            max_bitrate_kbps,
            configured_bitrate_kbps,
            min_fec_packets: fec,
            slices,
            bitstream_format: format,
            dynamic_range: 0,
            max_ref_frames: refs,
            csc_mode: csc,
            chroma_444: c444 && hq,
            audio_channels: channels,
            audio_channel_mask: 3,
            audio_high_quality: hq,
            audio_packet_ms: packet_ms,
            encryption_enabled: enc,
            nv_feature_flags: flags,
            ml_feature_flags: 0,
            reliable_udp: udp,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rtsp_arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some(r)) = rtsp::parse_request(&data) {
            prop_assert!(r.body.len() <= MAX_REQUEST);
            let _ = (r.cseq(), r.stream_id());
        }
        let _ = StreamConfig::from_announce(&data);
        if let Ok(Some((_, _, used))) = rtsp::open(&[3; 16], Origin::Client, &data) {
            prop_assert!(used <= data.len());
        }
    }

    /// Any Content-length text: a refusal, a request for more bytes, or a body of exactly the
    /// declared length within the limit.
    #[test]
    fn rtsp_any_content_length_never_panics(len in number_text(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        // A line break would end the header early; that case is the arbitrary-bytes test's.
        let len = len.replace(['\r', '\n'], "");
        let req = rtsp_request(&len, &body);
        match rtsp::parse_request(&req) {
            Ok(Some(r)) => {
                prop_assert!(r.body.len() <= MAX_REQUEST);
                prop_assert_eq!(Ok(r.body.len()), len.trim().parse::<usize>());
            }
            Ok(None) => {
                let n: usize = len.trim().parse().unwrap();
                prop_assert!(n > body.len());
            }
            Err(_) => {}
        }
    }

    /// Content-length around the limit, with the body there or not.
    #[test]
    fn rtsp_content_length_around_the_limit(delta in -70i64..70, have in 0usize..3) {
        let head_len = rtsp_request("00000", b"").len();
        let n = (MAX_REQUEST as i64 - head_len as i64 + delta) as usize;
        let len = format!("{n:05}");
        let body = vec![b'a'; [0, n / 2, n][have]];
        let res = rtsp::parse_request(&rtsp_request(&len, &body));
        if head_len + n > MAX_REQUEST {
            prop_assert_eq!(res, Err(rtsp::RtspError::TooLarge));
        } else if have == 2 {
            prop_assert_eq!(res.unwrap().unwrap().body.len(), n);
        } else {
            prop_assert_eq!(res, Ok(None));
        }
    }

    /// An envelope with any 32-bit length word, complete or not.
    #[test]
    fn rtsp_envelope_any_length_word(word in edgy_u32(MAX_REQUEST as u32), tail in prop::collection::vec(any::<u8>(), 0..96)) {
        let mut env = word.to_be_bytes().to_vec();
        env.extend_from_slice(&tail);
        let _ = rtsp::open(&[3; 16], Origin::Client, &env);
        let mut flagged = (word | 0x8000_0000).to_be_bytes().to_vec();
        flagged.extend_from_slice(&tail);
        let _ = rtsp::open(&[3; 16], Origin::Client, &flagged);
    }

    /// Every announced number as any text: a value or an error naming the attribute.
    #[test]
    fn announce_any_number_text(which in 0..ANNOUNCE_NAMES.len(), value in number_text()) {
        let name = ANNOUNCE_NAMES[which];
        let value = value.replace(['\r', '\n'], "");
        match StreamConfig::from_announce(announce_with(name, &value).as_bytes()) {
            Ok(cfg) => {
                let host = HostAbilities { hevc: true, av1: true, fec_percent: 20 };
                let _ = SessionPlan::resolve(&cfg, &host, false);
            }
            Err(e) => prop_assert!(e.contains(name) || e.contains("UTF-8"), "{}", e),
        }
    }

    /// Whatever numbers an ANNOUNCE carried, the plan resolves or refuses; what it accepts
    /// is within its bounds.
    #[test]
    fn session_plan_any_announced_numbers(cfg in stream_config(), fec_percent in edgy_u32(255), hq in any::<bool>()) {
        let host = HostAbilities { hevc: true, av1: false, fec_percent };
        if let Ok(p) = SessionPlan::resolve(&cfg, &host, hq) {
            prop_assert!(p.bitrate_kbps <= cfg.configured_bitrate_kbps.max(cfg.max_bitrate_kbps));
            prop_assert!(p.fec_percent <= 255 && p.min_parity <= 32);
            prop_assert!((1..=16).contains(&p.slices));
        }
    }

    #[test]
    fn nvhttp_head_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((req, n))) = parse_head(&data) {
            prop_assert!(n <= MAX_HEAD && n <= data.len());
            prop_assert!(req.params().len() <= MAX_PARAMS);
            let _ = LaunchRequest::parse(&req, false);
            let _ = LaunchRequest::parse(&req, true);
            let _ = punktfunk_gamestream::pairing::Message::of(&req);
        }
    }

    /// Query strings of escapes, separators and signs: parsing ends in a request or an error.
    #[test]
    fn nvhttp_query_escapes_and_counts(query in "[a-z0-9%+&=éx -]{0,200}", extra in 0usize..60) {
        let many: String = (0..extra).map(|i| format!("&k{i}=v")).collect();
        let target = format!("/x?{query}{many}");
        if let Ok(req) = Request::from_target(&target) {
            prop_assert!(target.len() <= MAX_TARGET);
            prop_assert!(req.params().len() <= MAX_PARAMS);
        }
    }

    /// Launch parameters as any number text.
    #[test]
    fn launch_any_number_text(appid in number_text(), rikeyid in number_text(), surround in number_text(), mode in ("[0-9x]{0,30}", number_text())) {
        let q = format!(
            "/launch?appid={}&mode={}&rikey=00112233445566778899AABBCCDDEEFF&rikeyid={}&localAudioPlayMode=0&surroundAudioInfo={}",
            urlish(&appid), urlish(&mode.0), urlish(&rikeyid), urlish(&surround)
        );
        if let Ok(req) = Request::from_target(&q) {
            if let Ok(l) = LaunchRequest::parse(&req, false) {
                prop_assert!(l.app_id > 0);
                let _ = l.channels();
            }
        }
        let _ = parse_mode(&mode.1);
        let _ = parse_mode(&format!("{}x{}x{}", mode.1, appid, rikeyid));
    }

    #[test]
    fn control_open_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let host = ControlCipher::new(&[9; 16], Origin::Host);
        let _ = host.open(&data);
        let _ = input::decode(&data);
        if data.len() >= 2 {
            let m = Message { kind: u16::from_le_bytes([data[0], data[1]]), payload: data[2..].to_vec() };
            let _ = ClientMessage::parse(&m);
        }
    }

    /// An envelope whose outer length word is anything.
    #[test]
    fn control_any_envelope_length(len in edgy_u16(4096), body in prop::collection::vec(any::<u8>(), 0..128)) {
        let host = ControlCipher::new(&[9; 16], Origin::Host);
        let mut p = 1u16.to_le_bytes().to_vec();
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&body);
        prop_assert!(host.open(&p).is_err());
    }

    /// An authentic envelope whose inner length field is anything: the payload is what the
    /// field says when it fits, else what is there.
    #[test]
    fn control_any_inner_length(kind in any::<u16>(), inner_len in edgy_u16(64), payload in prop::collection::vec(any::<u8>(), 0..64), seq in any::<u32>()) {
        let host = ControlCipher::new(&[9; 16], Origin::Host);
        let p = sealed_control(&[9; 16], seq, kind, inner_len, &payload);
        prop_assert!(p.len() >= ENVELOPE_HEADER + 4);
        match host.open(&p) {
            Ok(m) => {
                prop_assert_eq!(m.payload.len(), usize::from(inner_len).min(payload.len()));
                let _ = ClientMessage::parse(&m);
            }
            Err(e) => prop_assert_eq!(kind, 1, "{}", e),
        }
    }

    /// Input packets with any size word and any known type over a body of any length.
    #[test]
    fn input_any_size_word_and_body(size in edgy_u32(64), magic in prop_oneof![
        (0usize..17).prop_map(|i| [3u32, 4, 5, 7, 8, 9, 0xA, 0xC, 0xD, 0x17, 0x5500_0001, 0x5500_0002, 0x5500_0003, 0x5500_0004, 0x5500_0005, 0x5500_0006, 0x5500_0007][i]),
        any::<u32>(),
    ], body in prop::collection::vec(any::<u8>(), 0..48), honest in any::<bool>()) {
        let size = if honest { (body.len() + 4) as u32 } else { size };
        let mut p = size.to_be_bytes().to_vec();
        p.extend_from_slice(&magic.to_le_bytes());
        p.extend_from_slice(&body);
        let r = input::decode(&p);
        if size as usize != p.len() - 4 {
            prop_assert_eq!(r, Err(input::InputError::Size(size)));
        }
    }

    /// Video shards of the right size with any FEC info, block byte and frame header, for
    /// packet sizes from nothing to the maximum.
    #[test]
    fn video_any_fec_geometry(
        packet_size in prop_oneof![0u32..20, Just(64), Just(1024), Just(4096)],
        shards in prop::collection::vec((edgy_u32(1 << 22), any::<u8>(), any::<u32>(), edgy_u16(48), any::<u8>()), 1..24),
    ) {
        let mut plain = VideoReassembler::new(packet_size, None);
        let mut sealed = VideoReassembler::new(packet_size, Some(&[1; 16]));
        let b = packet_size as usize + 16;
        for (fec_info, multi, index, last_len, kind) in shards {
            let mut s = vec![0u8; b.max(40)];
            s[0] = 0x90;
            s[20..24].copy_from_slice(&(index % 4).to_le_bytes());
            s[27] = multi;
            s[28..32].copy_from_slice(&fec_info.to_le_bytes());
            s[32] = 1;
            s[35] = kind;
            s[36..38].copy_from_slice(&last_len.to_le_bytes());
            s.truncate(b);
            if let Reassembled::Frame(f) = plain.push(&s) {
                prop_assert!(f.data.len() <= 4 * 255 * b);
            }
            let _ = sealed.push(&s);
            s.resize(b + 32, 0);
            let _ = sealed.push(&s);
        }
    }

    #[test]
    fn video_and_audio_arbitrary_datagrams(dgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..16)) {
        let mut plain = VideoReassembler::new(64, None);
        let mut rx = AudioReceiver::new(None, 0, 5);
        let mut rx_enc = AudioReceiver::new(Some([1; 16]), u32::MAX, 10);
        for dg in &dgs {
            let _ = plain.push(dg);
            let mut v = dg.clone();
            v.resize(80, 0);
            v[0] = 0x90;
            let _ = plain.push(&v);
            for p in rx.push(dg) {
                prop_assert!(p.opus.len() <= audio::MAX_DATAGRAM);
            }
            let _ = rx_enc.push(dg);
        }
        let _ = audio::decrypt(&[1; 16], u32::MAX, u16::MAX, &dgs[0]);
    }

    /// Audio datagrams with any sequence number, FEC row, base and length.
    #[test]
    fn audio_any_header_fields(
        pkts in prop::collection::vec((any::<bool>(), any::<u16>(), any::<u32>(), any::<u8>(), any::<u16>(), 0usize..64), 1..24),
        packet_ms in edgy_u32(10),
    ) {
        let mut rx = AudioReceiver::new(None, 0, packet_ms);
        for (fec, seq, ts, row, base, len) in pkts {
            let mut dg = vec![0x80, if fec { 127 } else { 97 }];
            dg.extend_from_slice(&seq.to_be_bytes());
            dg.extend_from_slice(&ts.to_be_bytes());
            dg.extend_from_slice(&[0; 4]);
            if fec {
                dg.extend_from_slice(&[row % 3, 97]);
                dg.extend_from_slice(&(base & !3).to_be_bytes());
                dg.extend_from_slice(&ts.to_be_bytes());
                dg.extend_from_slice(&[0; 4]);
            }
            dg.resize(dg.len() + len, 0xA5);
            let _ = rx.push(&dg);
        }
    }

    #[test]
    fn certificates_pem_and_ecb_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = CertInfo::parse(&data);
        let _ = cert_from_pem(&data);
        let mut d = data.clone();
        prop_assert_eq!(ecb_decrypt(&[0; 16], &mut d).is_ok(), data.len() % 16 == 0);
    }

    #[test]
    fn xml_readers_arbitrary_text(s in any::<String>(), name in "[a-z_]{0,8}") {
        let _ = xml::status_of(&s);
        let _ = xml::text_of(&s, &name);
        let doc = format!("<root status_code=\"{s}\"><{name}>{s}</{name}></root>");
        let _ = xml::status_of(&doc);
        let _ = xml::text_of(&doc, &name);
    }

    #[test]
    fn sei_stripping_arbitrary_bytes(data in prop::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..128), hevc in any::<bool>()) {
        let (kept, at) = strip_leading_sei(hevc, &data);
        prop_assert!(at <= data.len());
        prop_assert!(kept.len() <= at);
    }
}

/// Keeps a generated string inside one query parameter (no `&`, `?` or `#`).
fn urlish(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '&' | '?' | '#' | '%'))
        .collect()
}
