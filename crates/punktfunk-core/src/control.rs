//! punktfunk/1 control-plane messages and their wire codec.
//!
//! Messages travel on one reliable, ordered QUIC stream per direction. Each is framed as
//!
//! ```text
//! length: u32 LE (bytes after this field, 1..=MAX_MESSAGE_LEN) ‖ type: u8 ‖ body
//! ```
//!
//! All integers are little-endian; strings are `u16 length ‖ UTF-8`; lists are `u16 count ‖
//! items`. A receiver skips message types it does not know ([`Message::Unknown`]) and ignores
//! trailing bytes after a known body, so newer peers can add messages and fields. Every length is
//! checked against its bound before anything is allocated. The protocol version travels in
//! `Hello` and `Welcome`; see `docs/protocol/punktfunk1.md` for the layouts and the handshake.
//!
//! After the handshake ([`crate::handshake`]) each side's control logic is a sans-IO state
//! machine of the same shape: [`HostControl`] and [`ClientControl`] take messages, datagrams
//! and `now` in and give actions and the next deadline out.

use crate::crypto::{CipherSuite, SALT_LEN};
use crate::fec::FecCode;
use thiserror::Error;

mod client;
mod end;
mod host;

pub use client::{
    ClientAction, ClientControl, ClientControlConfig, ClientControlStats, ClockEstimate,
    ScheduledReconfigure, CLOCK_PROBES, CLOCK_PROBE_TIMEOUT, KEYFRAME_REQUEST_INTERVAL,
    STATS_INTERVAL,
};
pub use end::{ControlError, Ended, Side};
pub use host::{
    HostAction, HostControl, HostControlStats, NoReconfigurePending, KEYFRAME_MIN_INTERVAL,
    RECONFIGURE_TIMEOUT,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest framed message (type + body), bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest string field, bytes.
pub const MAX_STRING_LEN: usize = 1024;
/// Most codecs a Hello may list.
pub const MAX_CODECS: usize = 16;
/// Most bytes in a key.
pub const MAX_KEY_LEN: usize = 32;

/// First byte of a QUIC datagram: which side plane it belongs to. Receivers drop datagrams
/// with codes they do not know.
pub mod datagram {
    /// Client → host: a batch of input events ([`crate::input::InputEvent::encode_batch`]).
    pub const INPUT: u8 = 0x01;
    /// Host → client: audio (reserved).
    pub const AUDIO: u8 = 0x02;
    /// Host → client: rumble and HID feedback (reserved).
    pub const FEEDBACK: u8 = 0x03;
}

/// A video codec (open newtype: unknown values survive a round trip).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec(pub u8);

impl Codec {
    /// H.264 / AVC.
    pub const H264: Codec = Codec(1);
    /// H.265 / HEVC.
    pub const HEVC: Codec = Codec(2);
    /// AV1.
    pub const AV1: Codec = Codec(3);

    /// Lower-case name (`h264`, `hevc`, `av1`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::HEVC => "hevc",
            Codec::AV1 => "av1",
            _ => "unknown",
        }
    }

    /// Parses a name as printed by [`Codec::name`] (also `h265`, `avc`).
    pub fn from_name(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" => Some(Codec::H264),
            "hevc" | "h265" => Some(Codec::HEVC),
            "av1" => Some(Codec::AV1),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            "unknown" => write!(f, "Codec({})", self.0),
            n => f.write_str(n),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A display mode: size in pixels and refresh rate in millihertz (59.94 Hz = 59940).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Refresh rate in millihertz.
    pub refresh_mhz: u32,
}

impl Mode {
    /// A mode at a whole number of frames per second.
    pub const fn new(width: u32, height: u32, fps: u32) -> Mode {
        Mode {
            width,
            height,
            refresh_mhz: fps * 1000,
        }
    }

    /// Frames per second, rounded.
    pub fn fps(&self) -> u32 {
        // In 64 bits: a mode off the wire may carry any refresh, and `u32::MAX + 500` does not
        // fit 32; the quotient does.
        ((u64::from(self.refresh_mhz) + 500) / 1000) as u32
    }

    /// Parses `WxH`, `WxH@FPS` or `WxHxFPS` (FPS may have decimals, default 60).
    pub fn parse(s: &str) -> Result<Mode, String> {
        let bad = || format!("invalid mode {s:?}: expected WIDTHxHEIGHT[@FPS], e.g. 1920x1080@60");
        let (size, fps) = match s.split_once('@') {
            Some((size, fps)) => (size, Some(fps)),
            None => {
                let parts: Vec<&str> = s.split('x').collect();
                match parts.as_slice() {
                    [_, _] => (s, None),
                    [w, h, f] => (&s[..w.len() + 1 + h.len()], Some(*f)),
                    _ => return Err(bad()),
                }
            }
        };
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        let fps: f64 = match fps {
            Some(f) => f.trim().parse().map_err(|_| bad())?,
            None => 60.0,
        };
        let mode = Mode {
            width,
            height,
            refresh_mhz: (fps * 1000.0).round() as u32,
        };
        mode.validate()
            .map_err(|e| format!("invalid mode {s:?}: {e}"))?;
        Ok(mode)
    }

    /// Checks the mode is streamable: even sizes from 64x64 to 7680x4320, 1 to 480 fps.
    pub fn validate(&self) -> Result<(), String> {
        if !(64..=7680).contains(&self.width) || !(64..=4320).contains(&self.height) {
            return Err(format!(
                "size {}x{} outside 64x64..=7680x4320",
                self.width, self.height
            ));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(format!("size {}x{} must be even", self.width, self.height));
        }
        if !(1000..=480_000).contains(&self.refresh_mhz) {
            return Err(format!(
                "refresh {} mHz outside 1..=480 fps",
                self.refresh_mhz
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.refresh_mhz.is_multiple_of(1000) {
            write!(
                f,
                "{}x{}@{}",
                self.width,
                self.height,
                self.refresh_mhz / 1000
            )
        } else {
            write!(
                f,
                "{}x{}@{:.3}",
                self.width,
                self.height,
                self.refresh_mhz as f64 / 1000.0
            )
        }
    }
}

/// Why a session ended (open newtype).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByeReason(pub u16);

impl ByeReason {
    /// Normal end (the client's `--seconds` ran out, the user quit).
    pub const NORMAL: ByeReason = ByeReason(0);
    /// The peer speaks another protocol version.
    pub const VERSION_MISMATCH: ByeReason = ByeReason(1);
    /// A message could not be decoded or broke the protocol's order.
    pub const PROTOCOL_ERROR: ByeReason = ByeReason(2);
    /// Nothing the client can decode is available, or the mode is unsupported.
    pub const UNSUPPORTED: ByeReason = ByeReason(3);
    /// The host is at its session limit.
    pub const BUSY: ByeReason = ByeReason(4);
    /// The host failed internally (encoder, source).
    pub const INTERNAL: ByeReason = ByeReason(5);
    /// The peer did not answer in time (the handshake, a clock probe).
    pub const TIMEOUT: ByeReason = ByeReason(6);
    /// The host is shutting down (an orderly end, like [`ByeReason::NORMAL`]).
    pub const SHUTDOWN: ByeReason = ByeReason(7);
    /// The host serves only paired clients and this one is not (pair first).
    pub const PAIRING_REQUIRED: ByeReason = ByeReason(8);
    /// A pairing ceremony failed (PIN check, nothing armed, lockout, refused approval).
    pub const PAIRING_FAILED: ByeReason = ByeReason(9);
    /// The host's owner removed this client's pairing.
    pub const REVOKED: ByeReason = ByeReason(10);
}

impl std::fmt::Debug for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            ByeReason::NORMAL => "normal",
            ByeReason::VERSION_MISMATCH => "version mismatch",
            ByeReason::PROTOCOL_ERROR => "protocol error",
            ByeReason::UNSUPPORTED => "unsupported",
            ByeReason::BUSY => "busy",
            ByeReason::INTERNAL => "internal error",
            ByeReason::TIMEOUT => "timeout",
            ByeReason::SHUTDOWN => "shutdown",
            ByeReason::PAIRING_REQUIRED => "pairing required",
            ByeReason::PAIRING_FAILED => "pairing failed",
            ByeReason::REVOKED => "revoked",
            ByeReason(n) => return write!(f, "reason {n}"),
        };
        f.write_str(name)
    }
}

impl std::fmt::Display for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// The mode the client wants (its own display's).
    pub mode: Mode,
    /// Codecs the client can decode, most preferred first.
    pub codecs: Vec<Codec>,
    /// Requested video bitrate, kbit/s (0 = host default).
    pub bitrate_kbps: u32,
    /// Requested FEC parity percentage (`None` = host default).
    pub fec_percent: Option<u8>,
    /// Client identity shown in host logs (a name; authentication is the TLS layer's job).
    pub client_name: String,
    /// The app to run on the stream's output, by title or id (empty: the desktop as it is).
    pub app: String,
}

/// One direction's packet key.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKey {
    /// Key bytes (16 or 32 for AES-GCM, empty for no protection).
    pub key: Vec<u8>,
    /// Per-direction nonce salt.
    pub salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectionKey({} bytes, redacted)", self.key.len())
    }
}

/// The host's answer: the complete data-plane configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the host speaks (equal to the client's).
    pub version: u16,
    /// Session identifier (logs, stats).
    pub session_id: u64,
    /// The codec the host will send.
    pub codec: Codec,
    /// The mode the host will send.
    pub mode: Mode,
    /// Target video bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// FEC: parity percentage, floor and ceiling per frame.
    pub fec_percent: u16,
    /// Fewest parity shards per frame.
    pub fec_min_parity: u16,
    /// Most parity shards per frame.
    pub fec_max_parity: u16,
    /// Code used for blocks of at most 255 shards (the policy switches to GF(2^16) above).
    pub fec_small_code: FecCode,
    /// Largest shard payload, bytes.
    pub shard_len: u16,
    /// Packet cipher.
    pub suite: CipherSuite,
    /// Host → client key and salt (video).
    pub host_to_client: DirectionKey,
    /// Client → host key and salt (probes, future upstream media).
    pub client_to_host: DirectionKey,
    /// Host UDP port of the data plane.
    pub data_port: u16,
}

/// NTP-style clock probe: the client's send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockProbe {
    /// Probe number (echoed).
    pub id: u32,
    /// Client clock at send, µs.
    pub t0_us: u64,
}

/// The host's answer to a [`ClockProbe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReply {
    /// The probe's number.
    pub id: u32,
    /// The probe's `t0_us`.
    pub t0_us: u64,
    /// Host clock when the probe arrived, µs.
    pub t1_us: u64,
    /// Host clock when the reply left, µs.
    pub t2_us: u64,
}

impl ClockReply {
    /// Host clock minus client clock, µs, and the round-trip time, given the client's receive
    /// time `t3_us` (the standard NTP estimate, exact when both legs take equally long).
    pub fn offset_and_rtt(&self, t3_us: u64) -> (i64, u64) {
        let (t0, t1, t2, t3) = (
            self.t0_us as i128,
            self.t1_us as i128,
            self.t2_us as i128,
            t3_us as i128,
        );
        let offset = ((t1 - t0) + (t2 - t3)) / 2;
        let rtt = (t3 - t0) - (t2 - t1);
        // The host's times are whatever it sent: saturate rather than wrap when they are
        // absurd, so an estimate is never the opposite sign of what the numbers say.
        let offset = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let rtt = rtt.clamp(0, i128::from(u64::MAX)) as u64;
        (offset, rtt)
    }
}

/// Periodic receiver report, client → host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverStats {
    /// Frames delivered by the reassembler so far.
    pub frames_received: u64,
    /// Frames decoded so far.
    pub frames_decoded: u64,
    /// Frames given up so far.
    pub frames_lost: u64,
    /// Frames that needed FEC so far.
    pub frames_recovered: u64,
    /// Datagrams received so far.
    pub packets_received: u64,
    /// Inter-arrival jitter of frames, µs (RFC 3550 style).
    pub jitter_us: u32,
}

/// How a client asks to pair ([`PairStart::method`]; open newtype).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairMethod(pub u8);

impl PairMethod {
    /// SPAKE2 with the PIN the host's owner armed.
    pub const PIN: PairMethod = PairMethod(1);
    /// No PIN: the client waits until the owner approves it on the host.
    pub const APPROVAL: PairMethod = PairMethod(2);
}

impl std::fmt::Debug for PairMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PairMethod::PIN => f.write_str("pin"),
            PairMethod::APPROVAL => f.write_str("approval"),
            PairMethod(n) => write!(f, "method {n}"),
        }
    }
}

/// Length of a key-confirmation MAC in the pairing messages (HMAC-SHA-256).
pub const PAIR_MAC_LEN: usize = 32;
/// Most bytes in a SPAKE2 message (Ed25519: 33).
pub const MAX_SPAKE_LEN: usize = 64;

/// Client → host, first message of a pairing connection (instead of [`Hello`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairStart {
    /// Protocol version the client speaks.
    pub version: u16,
    /// PIN (SPAKE2) or approval.
    pub method: PairMethod,
    /// The name the host stores for the client.
    pub client_name: String,
    /// The client's SPAKE2 message (empty for approval).
    pub spake: Vec<u8>,
}

/// A control-plane message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → host, first message.
    Hello(Hello),
    /// Host → client, the answer to Hello.
    Welcome(Welcome),
    /// Client → host: the data plane is ready, start streaming.
    Start,
    /// Client → host: a frame was lost; send a keyframe.
    RequestKeyframe {
        /// The first frame the client could not rebuild.
        frame: u32,
    },
    /// Client → host: switch to a new mode (and optionally bitrate) without reconnecting.
    Reconfigure {
        /// The new mode.
        mode: Mode,
        /// New bitrate, kbit/s (0 = keep).
        bitrate_kbps: u32,
    },
    /// Host → client: the stream now carries this mode, starting with `first_frame` (a keyframe).
    Reconfigured {
        /// The mode now sent.
        mode: Mode,
        /// The bitrate now targeted, kbit/s.
        bitrate_kbps: u32,
        /// Index of the first frame in the new mode.
        first_frame: u32,
    },
    /// Client → host clock probe.
    ClockProbe(ClockProbe),
    /// Host → client clock reply.
    ClockReply(ClockReply),
    /// Client → host receiver report.
    Stats(ReceiverStats),
    /// Either way: the session ends.
    Bye {
        /// Why.
        reason: ByeReason,
        /// Human-readable detail.
        message: String,
    },
    /// Client → host: begin pairing ([`crate::pairing`]).
    PairStart(PairStart),
    /// Host → client: the host's SPAKE2 message and its key confirmation.
    PairChallenge {
        /// The host's SPAKE2 message.
        spake: Vec<u8>,
        /// The host's confirmation MAC.
        confirm: [u8; PAIR_MAC_LEN],
    },
    /// Client → host: the client's key confirmation.
    PairConfirm {
        /// The client's confirmation MAC.
        confirm: [u8; PAIR_MAC_LEN],
    },
    /// Host → client: an approval request is waiting for the host's owner.
    PairPending {
        /// The id the owner approves it by (`punktfunk-host clients approve ID`).
        id: String,
    },
    /// Host → client: the host stored the client as paired.
    PairDone {
        /// The client's id in the host's store.
        id: String,
    },
    /// A message type this build does not know (skipped by receivers).
    Unknown {
        /// Its type byte.
        ty: u8,
    },
}

mod ty {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const START: u8 = 3;
    pub const REQUEST_KEYFRAME: u8 = 4;
    pub const RECONFIGURE: u8 = 5;
    pub const RECONFIGURED: u8 = 6;
    pub const CLOCK_PROBE: u8 = 7;
    pub const CLOCK_REPLY: u8 = 8;
    pub const STATS: u8 = 9;
    pub const BYE: u8 = 10;
    pub const PAIR_START: u8 = 11;
    pub const PAIR_CHALLENGE: u8 = 12;
    pub const PAIR_CONFIRM: u8 = 13;
    pub const PAIR_PENDING: u8 = 14;
    pub const PAIR_DONE: u8 = 15;
}

/// Why bytes could not be decoded as a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame's length field is 0 or above [`MAX_MESSAGE_LEN`].
    #[error("message length {0} out of range 1..={MAX_MESSAGE_LEN}")]
    Length(usize),
    /// The body ended before a field did.
    #[error("message type {ty} truncated")]
    Truncated {
        /// Message type.
        ty: u8,
    },
    /// A field holds a value the protocol forbids.
    #[error("message type {ty}: invalid {field}")]
    Invalid {
        /// Message type.
        ty: u8,
        /// Which field.
        field: &'static str,
    },
}

impl Message {
    /// The message's name, for logs and error texts.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Start => "Start",
            Message::RequestKeyframe { .. } => "RequestKeyframe",
            Message::Reconfigure { .. } => "Reconfigure",
            Message::Reconfigured { .. } => "Reconfigured",
            Message::ClockProbe(_) => "ClockProbe",
            Message::ClockReply(_) => "ClockReply",
            Message::Stats(_) => "Stats",
            Message::Bye { .. } => "Bye",
            Message::PairStart(_) => "PairStart",
            Message::PairChallenge { .. } => "PairChallenge",
            Message::PairConfirm { .. } => "PairConfirm",
            Message::PairPending { .. } => "PairPending",
            Message::PairDone { .. } => "PairDone",
            Message::Unknown { .. } => "unknown message",
        }
    }

    /// Appends the framed message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut w = Writer(out);
        match self {
            Message::Hello(h) => {
                w.u8(ty::HELLO);
                w.u16(h.version);
                w.mode(&h.mode);
                w.u16(h.codecs.len().min(MAX_CODECS) as u16);
                for c in h.codecs.iter().take(MAX_CODECS) {
                    w.u8(c.0);
                }
                w.u32(h.bitrate_kbps);
                w.u8(h.fec_percent.map_or(0xFF, |p| p.min(200)));
                w.str(&h.client_name);
                w.str(&h.app);
            }
            Message::Welcome(m) => {
                w.u8(ty::WELCOME);
                w.u16(m.version);
                w.u64(m.session_id);
                w.u8(m.codec.0);
                w.mode(&m.mode);
                w.u32(m.bitrate_kbps);
                w.u16(m.fec_percent);
                w.u16(m.fec_min_parity);
                w.u16(m.fec_max_parity);
                w.u8(m.fec_small_code.0);
                w.u16(m.shard_len);
                w.u8(m.suite.0);
                for k in [&m.host_to_client, &m.client_to_host] {
                    w.u8(k.key.len().min(MAX_KEY_LEN) as u8);
                    w.bytes(&k.key[..k.key.len().min(MAX_KEY_LEN)]);
                    w.bytes(&k.salt);
                }
                w.u16(m.data_port);
            }
            Message::Start => w.u8(ty::START),
            Message::RequestKeyframe { frame } => {
                w.u8(ty::REQUEST_KEYFRAME);
                w.u32(*frame);
            }
            Message::Reconfigure { mode, bitrate_kbps } => {
                w.u8(ty::RECONFIGURE);
                w.mode(mode);
                w.u32(*bitrate_kbps);
            }
            Message::Reconfigured {
                mode,
                bitrate_kbps,
                first_frame,
            } => {
                w.u8(ty::RECONFIGURED);
                w.mode(mode);
                w.u32(*bitrate_kbps);
                w.u32(*first_frame);
            }
            Message::ClockProbe(p) => {
                w.u8(ty::CLOCK_PROBE);
                w.u32(p.id);
                w.u64(p.t0_us);
            }
            Message::ClockReply(r) => {
                w.u8(ty::CLOCK_REPLY);
                w.u32(r.id);
                w.u64(r.t0_us);
                w.u64(r.t1_us);
                w.u64(r.t2_us);
            }
            Message::Stats(s) => {
                w.u8(ty::STATS);
                w.u64(s.frames_received);
                w.u64(s.frames_decoded);
                w.u64(s.frames_lost);
                w.u64(s.frames_recovered);
                w.u64(s.packets_received);
                w.u32(s.jitter_us);
            }
            Message::Bye { reason, message } => {
                w.u8(ty::BYE);
                w.u16(reason.0);
                w.str(message);
            }
            Message::PairStart(p) => {
                w.u8(ty::PAIR_START);
                w.u16(p.version);
                w.u8(p.method.0);
                w.str(&p.client_name);
                let n = p.spake.len().min(MAX_SPAKE_LEN);
                w.u8(n as u8);
                w.bytes(&p.spake[..n]);
            }
            Message::PairChallenge { spake, confirm } => {
                w.u8(ty::PAIR_CHALLENGE);
                let n = spake.len().min(MAX_SPAKE_LEN);
                w.u8(n as u8);
                w.bytes(&spake[..n]);
                w.bytes(confirm);
            }
            Message::PairConfirm { confirm } => {
                w.u8(ty::PAIR_CONFIRM);
                w.bytes(confirm);
            }
            Message::PairPending { id } => {
                w.u8(ty::PAIR_PENDING);
                w.str(id);
            }
            Message::PairDone { id } => {
                w.u8(ty::PAIR_DONE);
                w.str(id);
            }
            Message::Unknown { ty } => w.u8(*ty),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// The framed message as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes one message body (type byte + body, without the length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Message, DecodeError> {
        if body.is_empty() || body.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::Length(body.len()));
        }
        let t = body[0];
        let mut r = Reader {
            buf: &body[1..],
            ty: t,
        };
        let msg = match t {
            ty::HELLO => {
                let version = r.u16()?;
                let mode = r.mode()?;
                let n = r.u16()? as usize;
                if n > MAX_CODECS {
                    return Err(r.invalid("codec count"));
                }
                let codecs = r.take(n)?.iter().map(|c| Codec(*c)).collect();
                let bitrate_kbps = r.u32()?;
                let fec = r.u8()?;
                let fec_percent = match fec {
                    0xFF => None,
                    p if p <= 200 => Some(p),
                    _ => return Err(r.invalid("fec percent")),
                };
                let client_name = r.str()?;
                // Added after the first version: a Hello that ends here names no app.
                let app = if r.remaining() > 0 {
                    r.str()?
                } else {
                    String::new()
                };
                Message::Hello(Hello {
                    version,
                    mode,
                    codecs,
                    bitrate_kbps,
                    fec_percent,
                    client_name,
                    app,
                })
            }
            ty::WELCOME => {
                let version = r.u16()?;
                let session_id = r.u64()?;
                let codec = Codec(r.u8()?);
                let mode = r.mode()?;
                let bitrate_kbps = r.u32()?;
                let fec_percent = r.u16()?;
                let fec_min_parity = r.u16()?;
                let fec_max_parity = r.u16()?;
                let fec_small_code = FecCode(r.u8()?);
                let shard_len = r.u16()?;
                let suite = CipherSuite(r.u8()?);
                let mut keys = [None, None];
                for k in &mut keys {
                    let n = r.u8()? as usize;
                    if n > MAX_KEY_LEN {
                        return Err(r.invalid("key length"));
                    }
                    let key = r.take(n)?.to_vec();
                    let salt: [u8; SALT_LEN] = r.take(SALT_LEN)?.try_into().expect("length taken");
                    *k = Some(DirectionKey { key, salt });
                }
                let [Some(host_to_client), Some(client_to_host)] = keys else {
                    unreachable!("both keys were read")
                };
                let data_port = r.u16()?;
                Message::Welcome(Welcome {
                    version,
                    session_id,
                    codec,
                    mode,
                    bitrate_kbps,
                    fec_percent,
                    fec_min_parity,
                    fec_max_parity,
                    fec_small_code,
                    shard_len,
                    suite,
                    host_to_client,
                    client_to_host,
                    data_port,
                })
            }
            ty::START => Message::Start,
            ty::REQUEST_KEYFRAME => Message::RequestKeyframe { frame: r.u32()? },
            ty::RECONFIGURE => Message::Reconfigure {
                mode: r.mode()?,
                bitrate_kbps: r.u32()?,
            },
            ty::RECONFIGURED => Message::Reconfigured {
                mode: r.mode()?,
                bitrate_kbps: r.u32()?,
                first_frame: r.u32()?,
            },
            ty::CLOCK_PROBE => Message::ClockProbe(ClockProbe {
                id: r.u32()?,
                t0_us: r.u64()?,
            }),
            ty::CLOCK_REPLY => Message::ClockReply(ClockReply {
                id: r.u32()?,
                t0_us: r.u64()?,
                t1_us: r.u64()?,
                t2_us: r.u64()?,
            }),
            ty::STATS => Message::Stats(ReceiverStats {
                frames_received: r.u64()?,
                frames_decoded: r.u64()?,
                frames_lost: r.u64()?,
                frames_recovered: r.u64()?,
                packets_received: r.u64()?,
                jitter_us: r.u32()?,
            }),
            ty::BYE => Message::Bye {
                reason: ByeReason(r.u16()?),
                message: r.str()?,
            },
            ty::PAIR_START => Message::PairStart(PairStart {
                version: r.u16()?,
                method: PairMethod(r.u8()?),
                client_name: r.str()?,
                spake: r.spake()?,
            }),
            ty::PAIR_CHALLENGE => Message::PairChallenge {
                spake: r.spake()?,
                confirm: r.mac()?,
            },
            ty::PAIR_CONFIRM => Message::PairConfirm { confirm: r.mac()? },
            ty::PAIR_PENDING => Message::PairPending { id: r.str()? },
            ty::PAIR_DONE => Message::PairDone { id: r.str()? },
            other => Message::Unknown { ty: other },
        };
        Ok(msg)
    }
}

/// Splits a byte stream into messages: feed bytes as they arrive, take whole messages out.
///
/// The buffer never holds more than one message's bytes plus what arrived with it, and a length
/// above [`MAX_MESSAGE_LEN`] is an error before anything is buffered for it.
#[derive(Debug, Default)]
pub struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable (the framing is lost).
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_MESSAGE_LEN {
            return Err(DecodeError::Length(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = Message::decode_body(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }

    /// How many bytes are needed before the next message can be complete (at least 1 while one
    /// is partial). Lets a driver read exactly what it needs.
    pub fn bytes_wanted(&self) -> usize {
        if self.buf.len() < 4 {
            return 4 - self.buf.len();
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        (4 + len.min(MAX_MESSAGE_LEN))
            .saturating_sub(self.buf.len())
            .max(1)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// Strings longer than [`MAX_STRING_LEN`] are cut at a character boundary.
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.bytes(&s.as_bytes()[..end]);
    }
    fn mode(&mut self, m: &Mode) {
        self.u32(m.width);
        self.u32(m.height);
        self.u32(m.refresh_mhz);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    ty: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { ty: self.ty });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn invalid(&self, field: &'static str) -> DecodeError {
        DecodeError::Invalid { ty: self.ty, field }
    }
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        if n > MAX_STRING_LEN {
            return Err(self.invalid("string length"));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.invalid("utf-8 string"))
    }
    fn spake(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u8()? as usize;
        if n > MAX_SPAKE_LEN {
            return Err(self.invalid("SPAKE2 message length"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn mac(&mut self) -> Result<[u8; PAIR_MAC_LEN], DecodeError> {
        Ok(self.take(PAIR_MAC_LEN)?.try_into().expect("length taken"))
    }
    fn mode(&mut self) -> Result<Mode, DecodeError> {
        Ok(Mode {
            width: self.u32()?,
            height: self.u32()?,
            refresh_mhz: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                mode: Mode::new(1920, 1080, 60),
                codecs: vec![Codec::HEVC, Codec::H264, Codec(99)],
                bitrate_kbps: 20_000,
                fec_percent: Some(20),
                client_name: "wohnzimmer ✓".into(),
                app: "Steam".into(),
            }),
            Message::Welcome(Welcome {
                version: 1,
                session_id: 0xDEAD_BEEF_0102,
                codec: Codec::H264,
                mode: Mode {
                    width: 1280,
                    height: 720,
                    refresh_mhz: 59_940,
                },
                bitrate_kbps: 10_000,
                fec_percent: 20,
                fec_min_parity: 2,
                fec_max_parity: 1024,
                fec_small_code: FecCode::GF8_CAUCHY,
                shard_len: 1400,
                suite: CipherSuite::AES_128_GCM,
                host_to_client: DirectionKey {
                    key: vec![7; 16],
                    salt: [1; 12],
                },
                client_to_host: DirectionKey {
                    key: vec![9; 16],
                    salt: [2; 12],
                },
                data_port: 47_123,
            }),
            Message::Start,
            Message::RequestKeyframe { frame: 77 },
            Message::Reconfigure {
                mode: Mode::new(640, 480, 30),
                bitrate_kbps: 0,
            },
            Message::Reconfigured {
                mode: Mode::new(640, 480, 30),
                bitrate_kbps: 3000,
                first_frame: 901,
            },
            Message::ClockProbe(ClockProbe {
                id: 3,
                t0_us: 1_000,
            }),
            Message::ClockReply(ClockReply {
                id: 3,
                t0_us: 1_000,
                t1_us: 5_500,
                t2_us: 5_600,
            }),
            Message::Stats(ReceiverStats {
                frames_received: 10,
                frames_decoded: 9,
                frames_lost: 1,
                frames_recovered: 2,
                packets_received: 400,
                jitter_us: 120,
            }),
            Message::Bye {
                reason: ByeReason::VERSION_MISMATCH,
                message: "host speaks 1, client 2".into(),
            },
            Message::PairStart(PairStart {
                version: PROTOCOL_VERSION,
                method: PairMethod::PIN,
                client_name: "laptop".into(),
                spake: vec![0x41; 33],
            }),
            Message::PairChallenge {
                spake: vec![0x42; 33],
                confirm: [7; PAIR_MAC_LEN],
            },
            Message::PairConfirm {
                confirm: [9; PAIR_MAC_LEN],
            },
            Message::PairPending {
                id: "0123456789ab".into(),
            },
            Message::PairDone {
                id: "0123456789ab".into(),
            },
            Message::Unknown { ty: 200 },
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_byte_stream() {
        let msgs = samples();
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode(&mut stream);
        }
        // Feed in awkward pieces.
        let mut r = MessageReader::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(7) {
            r.push(chunk);
            while let Some(m) = r.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
    }

    #[test]
    fn unknown_types_and_trailing_fields_are_tolerated() {
        let mut bytes = Message::RequestKeyframe { frame: 5 }.to_bytes();
        bytes.extend_from_slice(&[0xAA, 0xBB]); // a newer peer's extra field
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        let mut stream = bytes;
        stream.extend_from_slice(&[3, 0, 0, 0, 250, 1, 2]); // unknown type 250 with a body
        Message::Start.encode(&mut stream);
        let mut r = MessageReader::new();
        r.push(&stream);
        assert_eq!(
            r.next_message().unwrap(),
            Some(Message::RequestKeyframe { frame: 5 })
        );
        assert_eq!(
            r.next_message().unwrap(),
            Some(Message::Unknown { ty: 250 })
        );
        assert_eq!(r.next_message().unwrap(), Some(Message::Start));
        assert_eq!(r.next_message().unwrap(), None);
    }

    #[test]
    fn a_hello_from_before_apps_names_none() {
        let hello = Hello {
            version: 1,
            mode: Mode::new(1280, 720, 60),
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: "old".into(),
            app: String::new(),
        };
        let mut bytes = Message::Hello(hello.clone()).to_bytes();
        // Without the app field (its u16 length of 0): what a first-version client sends.
        bytes.truncate(bytes.len() - 2);
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(Message::decode_body(&bytes[4..]), Ok(Message::Hello(hello)));
    }

    #[test]
    fn an_oversized_spake_message_is_refused_before_it_is_read() {
        let mut body = vec![ty::PAIR_CHALLENGE, (MAX_SPAKE_LEN + 1) as u8];
        body.extend_from_slice(&[0; MAX_SPAKE_LEN + 1 + PAIR_MAC_LEN]);
        assert_eq!(
            Message::decode_body(&body),
            Err(DecodeError::Invalid {
                ty: ty::PAIR_CHALLENGE,
                field: "SPAKE2 message length"
            })
        );
        // A MAC cut short is truncation, not a shorter MAC.
        assert_eq!(
            Message::decode_body(&[ty::PAIR_CONFIRM, 1, 2, 3]),
            Err(DecodeError::Truncated {
                ty: ty::PAIR_CONFIRM
            })
        );
    }

    #[test]
    fn bad_lengths_and_truncation_are_errors() {
        let mut r = MessageReader::new();
        r.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            r.next_message(),
            Err(DecodeError::Length(u32::MAX as usize))
        );
        let mut r = MessageReader::new();
        r.push(&[0, 0, 0, 0]);
        assert_eq!(r.next_message(), Err(DecodeError::Length(0)));
        // Every strict prefix of every message body fails cleanly (never panics).
        for m in samples() {
            let b = m.to_bytes();
            for cut in 1..b.len() - 4 {
                let res = Message::decode_body(&b[4..4 + cut]);
                if let Ok(got) = res {
                    // A Hello cut just before its optional app field is a Hello naming none.
                    let without_app = match &m {
                        Message::Hello(h) => Message::Hello(Hello {
                            app: String::new(),
                            ..h.clone()
                        }),
                        other => other.clone(),
                    };
                    assert!(
                        matches!(m, Message::Unknown { .. }) || got == m || got == without_app,
                        "{m:?} cut {cut} gave {got:?}"
                    );
                }
            }
        }
        // Oversized inner counts are refused before allocation.
        let mut hello = Message::Hello(Hello {
            version: 1,
            mode: Mode::new(64, 64, 1),
            codecs: vec![],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: String::new(),
            app: String::new(),
        })
        .to_bytes();
        hello[4 + 1 + 2 + 12..4 + 1 + 2 + 12 + 2].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(
            Message::decode_body(&hello[4..]),
            Err(DecodeError::Invalid {
                ty: 1,
                field: "codec count"
            })
        );
    }

    #[test]
    fn modes_parse_and_validate() {
        assert_eq!(
            Mode::parse("1920x1080x60").unwrap(),
            Mode::new(1920, 1080, 60)
        );
        assert_eq!(Mode::parse("1280x720@59.94").unwrap().refresh_mhz, 59_940);
        assert_eq!(Mode::parse("800x600").unwrap(), Mode::new(800, 600, 60));
        for bad in [
            "",
            "1920",
            "1920x",
            "axb",
            "1921x1080",
            "10x10",
            "1920x1080@0",
            "1920x1080x1000",
        ] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Mode::new(1280, 720, 60).to_string(), "1280x720@60");
    }

    #[test]
    fn clock_estimate() {
        // Client clock 1000 µs behind the host, 200 µs each way, 100 µs in the host.
        let r = ClockReply {
            id: 0,
            t0_us: 10_000,
            t1_us: 11_200,
            t2_us: 11_300,
        };
        assert_eq!(r.offset_and_rtt(10_500), (1000, 400));
    }

    #[test]
    fn fps_of_a_refresh_near_u32_max_does_not_overflow() {
        let m = |refresh_mhz| Mode {
            refresh_mhz,
            ..Mode::new(1920, 1080, 60)
        };
        assert_eq!(m(u32::MAX).fps(), 4_294_967);
        assert_eq!(m(u32::MAX - 499).fps(), 4_294_967);
        assert_eq!(m(0).fps(), 0);
        assert_eq!(m(59_940).fps(), 60);
        assert_eq!(m(59_499).fps(), 59);
    }

    #[test]
    fn clock_estimate_saturates_on_absurd_host_times() {
        let r = |t1_us, t2_us| ClockReply {
            id: 0,
            t0_us: 0,
            t1_us,
            t2_us,
        };
        // A host claiming the end of time: the offset is as large as it can be, not negative.
        assert_eq!(r(u64::MAX, u64::MAX).offset_and_rtt(0), (i64::MAX, 0));
        // A reply that left the whole clock range before its probe arrived: the round trip
        // saturates.
        assert_eq!(r(u64::MAX, 0).offset_and_rtt(u64::MAX), (0, u64::MAX));
        let behind = ClockReply {
            t0_us: u64::MAX,
            ..r(0, 0)
        };
        assert_eq!(behind.offset_and_rtt(u64::MAX).0, i64::MIN);
    }
}
