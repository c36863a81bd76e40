//! RTSP as GameStream clients speak it (TCP, one request per connection), sans-IO.
//!
//! - [`parse_request`]: a bounded, strict parser for one request (start line, headers, body
//!   of `Content-length` bytes). Garbage is an error, never a panic.
//! - [`Reply`]: a reply in the exact shape the client's parser needs (`RTSP/1.0`, one space
//!   after each colon, at least one header, the body after the blank line).
//! - [`seal`] / [`open`]: the encrypted-RTSP envelope (`rtspenc://`): a 24-byte header
//!   (`0x80000000 | length`, sequence number, AES-GCM tag) before the AES-128-GCM ciphertext of
//!   the whole plaintext message, IV = `LE32(seq)` ‖ six zero bytes ‖ origin ‖ `'R'`.
//! - [`StreamConfig::from_announce`]: the ANNOUNCE body's attributes, typed.
//! - [`describe_body`]: the DESCRIBE reply advertising what this host can do.

use crate::crypto::session_key;
use ring::aead;
use thiserror::Error;

/// Largest request (head + body) accepted.
pub const MAX_REQUEST: usize = 16 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 32;

/// Why an RTSP message was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtspError {
    /// Not a well-formed RTSP/1.0 request.
    #[error("malformed RTSP: {0}")]
    Malformed(&'static str),
    /// Over a limit.
    #[error("RTSP message too large")]
    TooLarge,
    /// The encrypted envelope does not open.
    #[error("encrypted RTSP message does not authenticate")]
    Crypto,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `OPTIONS`, `DESCRIBE`, `SETUP`, `ANNOUNCE`, `PLAY`, …
    pub method: String,
    /// The request target, e.g. `streamid=video/0/0`.
    pub target: String,
    headers: Vec<(String, String)>,
    /// The body (`Content-length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value (names are matched case-insensitively here, although clients send
    /// them in one spelling).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `CSeq`, if it is a number.
    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq").and_then(|v| v.trim().parse().ok())
    }

    /// The stream a SETUP names: the text between `=` and the next `/` of the target
    /// (`audio`, `video`, `control`).
    pub fn stream_id(&self) -> Option<&str> {
        let rest = self.target.split_once("streamid=")?.1;
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

/// Parses one request from `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, RtspError> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST {
            Err(RtspError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| RtspError::Malformed("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let start = lines
        .next()
        .ok_or(RtspError::Malformed("no request line"))?;
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(proto), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RtspError::Malformed(
            "request line is not METHOD TARGET RTSP/1.0",
        ));
    };
    if proto != "RTSP/1.0" {
        return Err(RtspError::Malformed("protocol is not RTSP/1.0"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(RtspError::Malformed("bad method or target"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(RtspError::TooLarge);
        }
        let (k, v) = line
            .split_once(':')
            .ok_or(RtspError::Malformed("header without ':'"))?;
        if k.is_empty() || k.contains(' ') {
            return Err(RtspError::Malformed("bad header name"));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let body_len = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-length"))
    {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| RtspError::Malformed("bad Content-length"))?,
        None => 0,
    };
    let body_start = head_end + 4;
    // `Content-length` is the peer's number: any value up to `usize::MAX` parses, so the end of
    // the body is computed without overflowing before it is compared with the limit.
    let body_end = match body_start.checked_add(body_len) {
        Some(end) if end <= MAX_REQUEST => end,
        _ => return Err(RtspError::TooLarge),
    };
    let Some(body) = buf.get(body_start..body_end) else {
        return Ok(None);
    };
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: body.to_vec(),
    }))
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// A reply with `CSeq` echoed (every reply needs at least one header).
    pub fn new(status: u16, cseq: Option<u32>) -> Reply {
        Reply {
            status,
            headers: vec![("CSeq".into(), cseq.unwrap_or(0).to_string())],
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            454 => "Session Not Found",
            500 => "Internal Server Error",
            _ => "Error",
        };
        let mut out = format!("RTSP/1.0 {} {reason}\r\n", self.status);
        for (k, v) in &self.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Length of the encrypted-RTSP header.
pub const ENVELOPE_HEADER: usize = 24;
const ENCRYPTED_FLAG: u32 = 0x8000_0000;

/// Who sealed a message (part of the IV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Client → host (`'C'`).
    Client,
    /// Host → client (`'H'`).
    Host,
}

/// The 12-byte IV encrypted RTSP and the control stream share: `LE32(seq) ‖ 00×6 ‖ origin ‖
/// stream`, with stream `'R'` for RTSP and `'C'` for control.
pub(crate) fn iv(seq: u32, origin: Origin, stream: u8) -> aead::Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&seq.to_le_bytes());
    n[10] = match origin {
        Origin::Client => b'C',
        Origin::Host => b'H',
    };
    n[11] = stream;
    aead::Nonce::assume_unique_for_key(n)
}

/// Wraps a whole plaintext message in the encrypted-RTSP envelope.
pub fn seal(k: &[u8; 16], seq: u32, origin: Origin, plaintext: &[u8]) -> Vec<u8> {
    let mut ct = plaintext.to_vec();
    let tag = session_key(k)
        .seal_in_place_separate_tag(iv(seq, origin, b'R'), aead::Aad::empty(), &mut ct)
        .expect("AES-GCM sealing of a bounded message");
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + ct.len());
    out.extend_from_slice(&(ENCRYPTED_FLAG | plaintext.len() as u32).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(&ct);
    out
}

/// Opens one envelope from the start of `buf`. `Ok(None)`: incomplete. On success returns the
/// plaintext, the sequence number and the bytes consumed.
pub fn open(
    k: &[u8; 16],
    origin: Origin,
    buf: &[u8],
) -> Result<Option<(Vec<u8>, u32, usize)>, RtspError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let tl = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
    if tl & ENCRYPTED_FLAG == 0 {
        return Err(RtspError::Malformed("message is not encrypted"));
    }
    let len = (tl & !ENCRYPTED_FLAG) as usize;
    if len > MAX_REQUEST {
        return Err(RtspError::TooLarge);
    }
    if buf.len() < ENVELOPE_HEADER + len {
        return Ok(None);
    }
    let seq = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
    let mut ct = buf[ENVELOPE_HEADER..ENVELOPE_HEADER + len].to_vec();
    ct.extend_from_slice(&buf[8..24]);
    let pt = session_key(k)
        .open_in_place(iv(seq, origin, b'R'), aead::Aad::empty(), &mut ct)
        .map_err(|_| RtspError::Crypto)?;
    Ok(Some((pt.to_vec(), seq, ENVELOPE_HEADER + len)))
}

/// The stream configuration a client announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Encode width.
    pub width: u32,
    /// Encode height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// `packetSize`: NV header + payload bytes per video datagram.
    pub packet_size: u32,
    /// `x-nv-vqos[0].bw.maximumBitrateKbps`.
    pub max_bitrate_kbps: u32,
    /// `x-ml-video.configuredBitrateKbps` (0 when absent).
    pub configured_bitrate_kbps: u32,
    /// Fewest parity shards per FEC block.
    pub min_fec_packets: u32,
    /// Slices per frame.
    pub slices: u32,
    /// 0 = H.264, 1 = HEVC, 2 = AV1.
    pub bitstream_format: u32,
    /// 10-bit / HDR encode.
    pub dynamic_range: u32,
    /// Reference-frame limit (0 = encoder default).
    pub max_ref_frames: u32,
    /// `(colour space << 1) | range`.
    pub csc_mode: u32,
    /// 0 = 4:2:0, 1 = 4:4:4.
    pub chroma_444: bool,
    /// Audio channels.
    pub audio_channels: u32,
    /// Audio channel mask.
    pub audio_channel_mask: u32,
    /// High-quality surround.
    pub audio_high_quality: bool,
    /// Opus frame duration, ms.
    pub audio_packet_ms: u32,
    /// `SS_ENC_*` bits the client enabled.
    pub encryption_enabled: u32,
    /// `x-nv-general.featureFlags`.
    pub nv_feature_flags: u32,
    /// `x-ml-general.featureFlags`.
    pub ml_feature_flags: u32,
    /// Control stream variant (13 = encrypted).
    pub reliable_udp: u32,
}

/// `SS_ENC_*` bits.
pub mod enc {
    /// Control stream v2 envelope.
    pub const CONTROL_V2: u32 = 0x01;
    /// Video encryption.
    pub const VIDEO: u32 = 0x02;
    /// Audio encryption.
    pub const AUDIO: u32 = 0x04;
}

impl StreamConfig {
    /// Reads the `a=name:value` attributes of an ANNOUNCE body; required ones missing or any
    /// value not a number is an error naming the attribute.
    pub fn from_announce(body: &[u8]) -> Result<StreamConfig, String> {
        let text =
            std::str::from_utf8(body).map_err(|_| "ANNOUNCE body is not UTF-8".to_string())?;
        let mut attrs: Vec<(&str, &str)> = Vec::new();
        for line in text.split(['\r', '\n']) {
            let Some(a) = line.strip_prefix("a=") else {
                continue;
            };
            let Some((k, v)) = a.split_once(':') else {
                continue;
            };
            if attrs.len() >= 256 {
                return Err("too many attributes".into());
            }
            attrs.push((k, v.strip_suffix(' ').unwrap_or(v)));
        }
        let get = |name: &str| {
            attrs
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim())
        };
        let num = |name: &str, default: Option<u32>| -> Result<u32, String> {
            match get(name) {
                Some(v) => parse_uint(v).ok_or_else(|| format!("{name} is not a number: {v:?}")),
                None => default.ok_or_else(|| format!("missing {name}")),
            }
        };
        let cfg = StreamConfig {
            width: num("x-nv-video[0].clientViewportWd", None)?,
            height: num("x-nv-video[0].clientViewportHt", None)?,
            fps: num("x-nv-video[0].maxFPS", None)?,
            packet_size: num("x-nv-video[0].packetSize", None)?,
            max_bitrate_kbps: num("x-nv-vqos[0].bw.maximumBitrateKbps", None)?,
            configured_bitrate_kbps: num("x-ml-video.configuredBitrateKbps", Some(0))?,
            min_fec_packets: num("x-nv-vqos[0].fec.minRequiredFecPackets", Some(0))?,
            slices: num("x-nv-video[0].videoEncoderSlicesPerFrame", None)?,
            bitstream_format: num("x-nv-vqos[0].bitStreamFormat", Some(0))?,
            dynamic_range: num("x-nv-video[0].dynamicRangeMode", Some(0))?,
            max_ref_frames: num("x-nv-video[0].maxNumReferenceFrames", None)?,
            csc_mode: num("x-nv-video[0].encoderCscMode", Some(0))?,
            chroma_444: num("x-ss-video[0].chromaSamplingType", Some(0))? == 1,
            audio_channels: num("x-nv-audio.surround.numChannels", None)?,
            audio_channel_mask: num("x-nv-audio.surround.channelMask", None)?,
            audio_high_quality: num("x-nv-audio.surround.AudioQuality", None)? != 0,
            audio_packet_ms: num("x-nv-aqos.packetDuration", Some(5))?,
            encryption_enabled: num("x-ss-general.encryptionEnabled", Some(0))?,
            nv_feature_flags: num("x-nv-general.featureFlags", Some(135))?,
            ml_feature_flags: num("x-ml-general.featureFlags", Some(0))?,
            reliable_udp: num("x-nv-general.useReliableUdp", Some(1))?,
        };
        Ok(cfg)
    }
}

/// `strtoul(…, 0)`-style: decimal, `0x` hex, or a leading `-` for values clients print signed.
fn parse_uint(v: &str) -> Option<u32> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    v.parse::<u32>()
        .ok()
        .or_else(|| v.parse::<i32>().ok().map(|x| x as u32))
}

/// What the DESCRIBE reply advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// An HEVC encoder opens.
    pub hevc: bool,
    /// An AV1 encoder opens.
    pub av1: bool,
    /// Reference-frame invalidation is supported.
    pub rfi: bool,
    /// `SS_ENC_*` bits supported.
    pub encryption_supported: u32,
    /// `SS_ENC_*` bits required.
    pub encryption_requested: u32,
    /// `x-ss-general.featureFlags` (pen/touch 0x01, controller touch/motion 0x02).
    pub feature_flags: u32,
}

/// The DESCRIBE body: the substrings the client looks for, and the Opus layouts (stereo, 5.1
/// and 7.1, each at normal then high quality; see [`crate::audio::LAYOUTS`]).
pub fn describe_body(c: &Capabilities) -> String {
    let mut s = format!(
        "a=x-ss-general.featureFlags:{}\na=x-ss-general.encryptionSupported:{}\na=x-ss-general.encryptionRequested:{}\n",
        c.feature_flags, c.encryption_supported, c.encryption_requested
    );
    if c.rfi {
        s.push_str("a=x-nv-video[0].refPicInvalidation:1\n");
    }
    if c.hevc {
        s.push_str("sprop-parameter-sets=AAAAAU\n");
    }
    if c.av1 {
        s.push_str("a=rtpmap:98 AV1/90000\n");
    }
    // Channels, streams, coupled streams, then the mapping.
    for (_, _, layout) in crate::audio::LAYOUTS {
        s.push_str("a=fmtp:97 surround-params=");
        s.push_str(layout);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANNOUNCE: &str = "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\na=x-ml-general.featureFlags:3 \r\na=x-ss-general.encryptionEnabled:5 \r\na=x-ss-video[0].chromaSamplingType:0 \r\na=x-nv-video[0].clientViewportWd:1920 \r\na=x-nv-video[0].clientViewportHt:1080 \r\na=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\na=x-nv-video[0].rateControlMode:4 \r\na=x-nv-vqos[0].bw.maximumBitrateKbps:16000 \r\na=x-ml-video.configuredBitrateKbps:20000 \r\na=x-nv-general.featureFlags:167 \r\na=x-nv-general.useReliableUdp:13 \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\na=x-nv-video[0].videoEncoderSlicesPerFrame:1 \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\na=x-nv-video[0].dynamicRangeMode:0 \r\na=x-nv-video[0].maxNumReferenceFrames:1 \r\na=x-nv-audio.surround.numChannels:2 \r\na=x-nv-audio.surround.channelMask:3 \r\na=x-nv-audio.surround.enable:0 \r\na=x-nv-audio.surround.AudioQuality:0 \r\na=x-nv-aqos.packetDuration:5 \r\na=x-nv-video[0].encoderCscMode:0 \r\nt=0 0\r\nm=video 47998  \r\n";

    #[test]
    fn parses_requests_in_pieces_and_with_bodies() {
        let req = format!(
            "ANNOUNCE streamid=control/13/0 RTSP/1.0\r\nCSeq: 6\r\nX-GS-ClientVersion: 14\r\nSession: DEADBEEF\r\nContent-type: application/sdp\r\nContent-length: {}\r\n\r\n{ANNOUNCE}",
            ANNOUNCE.len()
        );
        let b = req.as_bytes();
        for cut in [10, 60, b.len() - 1] {
            assert_eq!(parse_request(&b[..cut]), Ok(None), "cut at {cut}");
        }
        let r = parse_request(b).unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.cseq()), ("ANNOUNCE", Some(6)));
        assert_eq!(r.stream_id(), Some("control"));
        assert_eq!(r.header("session"), Some("DEADBEEF"));
        let cfg = StreamConfig::from_announce(&r.body).unwrap();
        assert_eq!(
            (cfg.width, cfg.height, cfg.fps, cfg.packet_size),
            (1920, 1080, 60, 1024)
        );
        assert_eq!(
            (cfg.max_bitrate_kbps, cfg.configured_bitrate_kbps),
            (16000, 20000)
        );
        assert_eq!(
            (
                cfg.encryption_enabled,
                cfg.nv_feature_flags,
                cfg.reliable_udp
            ),
            (5, 167, 13)
        );
        assert_eq!(
            (cfg.audio_channels, cfg.audio_packet_ms, cfg.min_fec_packets),
            (2, 5, 2)
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"OPTIONS  RTSP/1.0\r\n\r\n",
            b"OPTIONS x RTSP/1.0 extra\r\n\r\n",
            b"options x RTSP/1.0\r\n\r\n",
            b"OPTIONS x RTSP/1.0\r\nno colon\r\n\r\n",
            b"OPTIONS x RTSP/1.0\r\nContent-length: -1\r\n\r\n",
            b"OPTIONS x RTSP/1.0\r\nContent-length: 99999999\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_request(&vec![b'A'; MAX_REQUEST]),
            Err(RtspError::TooLarge)
        );
        let missing = ANNOUNCE.replace("a=x-nv-video[0].maxFPS:60 \r\n", "");
        assert_eq!(
            StreamConfig::from_announce(missing.as_bytes()).unwrap_err(),
            "missing x-nv-video[0].maxFPS"
        );
        let bad = ANNOUNCE.replace("maxFPS:60", "maxFPS:sixty");
        assert!(StreamConfig::from_announce(bad.as_bytes())
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn content_length_of_usize_max_is_too_large_not_an_overflow() {
        for len in [
            u64::MAX.to_string(),
            (u64::MAX - 1).to_string(),
            (usize::MAX - 3).to_string(),
            (MAX_REQUEST + 1).to_string(),
        ] {
            let req = format!("OPTIONS x RTSP/1.0\r\nCSeq: 1\r\nContent-length: {len}\r\n\r\n");
            assert_eq!(
                parse_request(req.as_bytes()),
                Err(RtspError::TooLarge),
                "Content-length {len}"
            );
        }
        // A number past `usize` does not parse at all.
        let req = b"OPTIONS x RTSP/1.0\r\nContent-length: 18446744073709551616\r\n\r\n";
        assert_eq!(
            parse_request(req),
            Err(RtspError::Malformed("bad Content-length"))
        );
    }

    #[test]
    fn a_body_reaching_exactly_the_limit_is_accepted() {
        let head = "OPTIONS x RTSP/1.0\r\nContent-length: ";
        // The head's length depends on the digits of the body length; all have five here.
        let body_len = MAX_REQUEST - (head.len() + 5 + 4);
        let mut req = format!("{head}{body_len}\r\n\r\n").into_bytes();
        assert_eq!(req.len() + body_len, MAX_REQUEST);
        assert_eq!(parse_request(&req), Ok(None));
        req.resize(MAX_REQUEST, b'b');
        assert_eq!(parse_request(&req).unwrap().unwrap().body.len(), body_len);
        let over = format!("{head}{}\r\n\r\n", body_len + 1);
        assert_eq!(parse_request(over.as_bytes()), Err(RtspError::TooLarge));
    }

    #[test]
    fn replies_have_the_shape_the_client_parser_needs() {
        let r = Reply::new(200, Some(4))
            .header("Session", "DEADBEEFCAFE;timeout = 90")
            .header("Transport", "server_port=47998")
            .to_bytes();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: DEADBEEFCAFE;timeout = 90\r\nTransport: server_port=47998\r\n\r\n"
        );
        let d = describe_body(&Capabilities {
            hevc: true,
            encryption_supported: 5,
            encryption_requested: 1,
            ..Default::default()
        });
        assert!(d.contains("sprop-parameter-sets=AAAAAU") && !d.contains("AV1/90000"));
        assert!(d.contains("a=x-ss-general.encryptionSupported:5\n"));
    }

    #[test]
    fn envelope_round_trips_and_rejects_tampering() {
        let k = [7u8; 16];
        let msg = b"OPTIONS rtsp://0.0.0.0:48010 RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        let sealed = seal(&k, 1, Origin::Client, msg);
        assert_eq!(sealed.len(), ENVELOPE_HEADER + msg.len());
        assert_eq!(
            &sealed[..4],
            &(0x8000_0000u32 | msg.len() as u32).to_be_bytes()
        );
        assert_eq!(open(&k, Origin::Client, &sealed[..30]), Ok(None));
        let (pt, seq, used) = open(&k, Origin::Client, &sealed).unwrap().unwrap();
        assert_eq!((pt.as_slice(), seq, used), (&msg[..], 1, sealed.len()));
        // The origin is part of the IV: a host reply does not open as a client message.
        assert_eq!(open(&k, Origin::Host, &sealed), Err(RtspError::Crypto));
        let mut t = sealed.clone();
        t[30] ^= 1;
        assert_eq!(open(&k, Origin::Client, &t), Err(RtspError::Crypto));
        assert!(open(&k, Origin::Client, msg).is_err(), "plaintext refused");
    }
}
