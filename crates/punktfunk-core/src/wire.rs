//! Wire format of punktfunk/1 data-plane datagrams.
//!
//! ```text
//! datagram = header (36 bytes, authenticated) ‖ shard (encrypted) ‖ tag (16 bytes)
//!
//! off size field
//!  0   1   version            = 1
//!  1   1   stream kind        0 video, 1 audio (open code)
//!  2   1   flags              0x01 keyframe; other bits reserved (sent as 0, ignored)
//!  3   1   fec code           0 none, 1 GF(2^8) Cauchy, 2 GF(2^16)
//!  4   8   sequence           per-direction packet counter, nonce input (LE)
//! 12   4   frame index        (LE, wraps)
//! 16   4   frame length       bytes of the access unit (LE)
//! 20   8   timestamp          sender's capture time, µs since the session epoch (LE)
//! 28   2   shard index        0..data+parity (LE)
//! 30   2   data shards        (LE)
//! 32   2   parity shards      (LE)
//! 34   2   shard length       payload bytes of every shard of this frame (LE)
//! ```
//!
//! The geometry is redundant on purpose so a receiver can check it: `data` must equal
//! `ceil(frame_length / shard_length)`, and all shards of a frame must agree. The full layout
//! with examples is in `docs/protocol/data-plane.md`.

use crate::fec::FecCode;
use thiserror::Error;

/// Data-plane wire version this build speaks.
pub const VERSION: u8 = 1;
/// Size of [`Header`] on the wire.
pub const HEADER_LEN: usize = 36;

/// Which stream a datagram belongs to (open newtype: unknown kinds round-trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKind(pub u8);

impl StreamKind {
    /// Encoded video access units.
    pub const VIDEO: StreamKind = StreamKind(0);
    /// Encoded audio packets.
    pub const AUDIO: StreamKind = StreamKind(1);
}

/// Per-frame flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// The frame is a keyframe (decodable on its own).
    pub const KEYFRAME: u8 = 0x01;

    /// Whether the keyframe bit is set.
    pub fn keyframe(self) -> bool {
        self.0 & Self::KEYFRAME != 0
    }
}

/// The header of one data-plane datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Stream the frame belongs to.
    pub stream: StreamKind,
    /// Frame flags.
    pub flags: Flags,
    /// FEC code of the frame's block.
    pub fec: FecCode,
    /// Packet sequence number (nonce input, replay protection).
    pub seq: u64,
    /// Frame index.
    pub frame: u32,
    /// Bytes of the frame.
    pub frame_len: u32,
    /// Capture time in µs since the session epoch.
    pub timestamp_us: u64,
    /// Index of this shard in the block (data shards first).
    pub shard: u16,
    /// Data shards in the block.
    pub data: u16,
    /// Parity shards in the block.
    pub parity: u16,
    /// Payload bytes of every shard of the frame.
    pub shard_len: u16,
}

/// Why a datagram's header was rejected. All are the sender's (or an attacker's) fault.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Shorter than a header.
    #[error("datagram of {0} bytes is shorter than the header")]
    Truncated(usize),
    /// Unknown wire version.
    #[error("unsupported data-plane version {0}")]
    Version(u8),
    /// The geometry fields contradict each other.
    #[error("inconsistent shard geometry")]
    Geometry,
    /// Unknown FEC code.
    #[error("unknown FEC code {0}")]
    FecCode(u8),
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out` (panics if shorter: a
    /// caller bug).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.stream.0;
        out[2] = self.flags.0;
        out[3] = self.fec.0;
        out[4..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..16].copy_from_slice(&self.frame.to_le_bytes());
        out[16..20].copy_from_slice(&self.frame_len.to_le_bytes());
        out[20..28].copy_from_slice(&self.timestamp_us.to_le_bytes());
        out[28..30].copy_from_slice(&self.shard.to_le_bytes());
        out[30..32].copy_from_slice(&self.data.to_le_bytes());
        out[32..34].copy_from_slice(&self.parity.to_le_bytes());
        out[34..36].copy_from_slice(&self.shard_len.to_le_bytes());
    }

    /// Parses and validates a header. Checks everything the header alone can show: version,
    /// FEC code, and that the geometry is self-consistent. Limits that depend on the receiver's
    /// configuration are checked by the reassembler.
    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        let b: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(HeaderError::Truncated(buf.len()))?;
        if b[0] != VERSION {
            return Err(HeaderError::Version(b[0]));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let h = Header {
            stream: StreamKind(b[1]),
            flags: Flags(b[2]),
            fec: FecCode(b[3]),
            seq: u64_at(4),
            frame: u32_at(12),
            frame_len: u32_at(16),
            timestamp_us: u64_at(20),
            shard: u16_at(28),
            data: u16_at(30),
            parity: u16_at(32),
            shard_len: u16_at(34),
        };
        if !h.fec.is_known() {
            return Err(HeaderError::FecCode(h.fec.0));
        }
        if !h.geometry_is_consistent() {
            return Err(HeaderError::Geometry);
        }
        Ok(h)
    }

    /// Total shards of the block.
    pub fn total_shards(&self) -> usize {
        self.data as usize + self.parity as usize
    }

    /// Whether this datagram carries a parity shard.
    pub fn is_parity(&self) -> bool {
        self.shard >= self.data
    }

    /// Whether the geometry fields agree with each other (what [`Header::decode`] checks
    /// beyond the version and FEC code).
    pub(crate) fn geometry_is_consistent(&self) -> bool {
        self.shard_len > 0
            && self.frame_len > 0
            && self.data as u64 == (self.frame_len as u64).div_ceil(self.shard_len as u64)
            && (self.shard as usize) < self.total_shards()
            && (self.parity == 0) == (self.fec == FecCode::NONE)
            && self.total_shards() <= self.fec.max_total_shards()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            stream: StreamKind::VIDEO,
            flags: Flags(Flags::KEYFRAME),
            fec: FecCode::GF8_CAUCHY,
            seq: 0x0102_0304_0506_0708,
            frame: 77,
            frame_len: 42_000,
            timestamp_us: 123_456_789,
            shard: 31,
            data: 30,
            parity: 8,
            shard_len: 1400,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        assert_eq!(Header::decode(&buf), Ok(sample()));
    }

    #[test]
    fn byte_layout_is_as_documented() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        assert_eq!(buf[0], 1);
        assert_eq!(buf[2], 1);
        assert_eq!(buf[3], 1);
        assert_eq!(&buf[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[12..16], &77u32.to_le_bytes());
        assert_eq!(&buf[28..36], &[31, 0, 30, 0, 8, 0, 0x78, 0x05]);
    }

    #[test]
    fn example_in_the_protocol_doc() {
        let h = Header {
            flags: Flags(0),
            seq: 1_000_030,
            shard: 30,
            parity: 6,
            ..sample()
        };
        let mut buf = [0u8; HEADER_LEN];
        h.encode(&mut buf);
        let hex: Vec<String> = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "01 00 00 01 5e 42 0f 00 00 00 00 00 4d 00 00 00 10 a4 00 00 \
             15 cd 5b 07 00 00 00 00 1e 00 1e 00 06 00 78 05"
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        assert_eq!(Header::decode(&buf[..35]), Err(HeaderError::Truncated(35)));
        let mut v = buf;
        v[0] = 2;
        assert_eq!(Header::decode(&v), Err(HeaderError::Version(2)));
        let mut f = buf;
        f[3] = 9;
        assert_eq!(Header::decode(&f), Err(HeaderError::FecCode(9)));
        for (field, val) in [(30usize, 29u16), (28, 38), (34, 0), (32, 0)] {
            let mut g = buf;
            g[field..field + 2].copy_from_slice(&val.to_le_bytes());
            assert_eq!(
                Header::decode(&g),
                Err(HeaderError::Geometry),
                "field at {field}"
            );
        }
        let mut big = sample();
        big.data = 300;
        big.frame_len = 300 * 1400;
        let mut b = [0u8; HEADER_LEN];
        big.encode(&mut b);
        assert_eq!(
            Header::decode(&b),
            Err(HeaderError::Geometry),
            "GF8 block over 255 shards"
        );
    }
}
