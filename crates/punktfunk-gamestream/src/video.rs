//! Video datagrams exactly as stock Moonlight clients expect them, and their reassembly.
//!
//! # Sending ([`VideoPacketizer`])
//!
//! A frame's bytes are an 8-byte frame header followed by the Annex-B (or AV1) bitstream. They are
//! cut into payloads of `packetSize − 16` bytes; each payload gets a 32-byte header (16 bytes of
//! RTP with the extension bit, 16 bytes of NV header) to form a shard of exactly
//! `packetSize + 16` bytes (the last one zero-padded). Shards are grouped into up to four FEC
//! blocks of at most `⌊25500 / (100 + f)⌋` data shards; each block gets `⌈D·f/100⌉` parity shards
//! (at least the client's minimum) from the Cauchy Reed-Solomon code in
//! [`punktfunk_core::fec::Gf8Cauchy`], computed over the data shards while their RTP area and FEC
//! info are still zero. The block geometry and header fields follow the protocol notes (§7.2–7.4)
//! to the byte, so the client's FEC decoder rebuilds lost shards identically.
//!
//! With video encryption each shard is sealed whole with AES-128-GCM and sent as
//! `IV[12] ‖ LE32 frame ‖ tag[16] ‖ ciphertext`; the client announces a packet size 32 bytes
//! smaller so the datagram size stays the same.
//!
//! # Receiving ([`VideoReassembler`])
//!
//! The reverse, for the project's own test client: decrypt, group shards by frame and FEC block,
//! rebuild missing data shards, strip the padding, hand back the frame header and bitstream.

use punktfunk_core::fec::{ErasureCode, Gf8Cauchy, ShardsMut};
use ring::aead;
use thiserror::Error;

/// RTP + NV header bytes at the start of every shard.
pub const SHARD_HEADER: usize = 32;
/// Bytes an encrypted datagram adds in front of the sealed shard.
pub const ENCRYPTION_HEADER: usize = 32;
/// Most FEC blocks per frame.
pub const MAX_BLOCKS: usize = 4;
/// Most data shards in one block (10-bit field).
pub const MAX_BLOCK_SHARDS: usize = 1023;
/// Smallest packet size that leaves room for a payload.
pub const MIN_PACKET_SIZE: u32 = 64;
/// Largest packet size accepted (a datagram must fit a jumbo-less MTU comfortably).
pub const MAX_PACKET_SIZE: u32 = 4096;

/// NV header flag: the packet carries picture data (always set).
pub const FLAG_PIC_DATA: u8 = 0x01;
/// NV header flag: last data packet of an FEC block.
pub const FLAG_EOF: u8 = 0x02;
/// NV header flag: first data packet of an FEC block.
pub const FLAG_SOF: u8 = 0x04;

/// Frame types of the frame header.
pub mod frame_type {
    /// Predicted frame.
    pub const P: u8 = 1;
    /// IDR frame (parameter sets in band).
    pub const IDR: u8 = 2;
}

/// Why a frame could not be packetized.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VideoError {
    /// The frame needs more shards than four FEC blocks can carry.
    #[error("frame of {0} bytes is too large for {MAX_BLOCKS} FEC blocks")]
    FrameTooLarge(usize),
    /// Packet size out of range or not usable.
    #[error("packet size {0} outside {MIN_PACKET_SIZE}..={MAX_PACKET_SIZE}")]
    PacketSize(u32),
}

/// Per-frame facts the packetizer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Frame number (1 for the first frame, +1 per frame).
    pub index: u32,
    /// [`frame_type`].
    pub kind: u8,
    /// RTP timestamp, 90 kHz.
    pub rtp_timestamp: u32,
    /// Host processing time (capture → packetization), 0.1 ms units; 0 = unknown.
    pub host_latency: u16,
}

/// Shape of the last packetized frame (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameShape {
    /// FEC blocks.
    pub blocks: usize,
    /// Data shards over all blocks.
    pub data_shards: usize,
    /// Parity shards over all blocks.
    pub parity_shards: usize,
}

/// Turns encoded frames into video datagrams.
pub struct VideoPacketizer {
    packet_size: usize,
    fec_percent: u32,
    min_parity: u32,
    seq: u32,
    fec: Gf8Cauchy,
    cipher: Option<(aead::LessSafeKey, u64)>,
}

impl std::fmt::Debug for VideoPacketizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoPacketizer")
            .field("packet_size", &self.packet_size)
            .field("fec_percent", &self.fec_percent)
            .field("min_parity", &self.min_parity)
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl VideoPacketizer {
    /// `packet_size` as announced by the client, the host's FEC percentage (0 = none, at most
    /// 255), the client's minimum parity per block, and the key when video is encrypted.
    pub fn new(
        packet_size: u32,
        fec_percent: u32,
        min_parity: u32,
        key: Option<&[u8; 16]>,
    ) -> Result<VideoPacketizer, VideoError> {
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&packet_size) {
            return Err(VideoError::PacketSize(packet_size));
        }
        Ok(VideoPacketizer {
            packet_size: packet_size as usize,
            fec_percent: fec_percent.min(255),
            min_parity: min_parity.min(32),
            seq: 0,
            fec: Gf8Cauchy::new(),
            cipher: key.map(|k| (crate::crypto::session_key(k), 0)),
        })
    }

    /// Bytes of one datagram on the wire.
    pub fn datagram_len(&self) -> usize {
        self.shard_len()
            + if self.cipher.is_some() {
                ENCRYPTION_HEADER
            } else {
                0
            }
    }

    fn shard_len(&self) -> usize {
        self.packet_size + 16
    }

    /// Packetizes one frame: appends whole datagrams of [`Self::datagram_len`] bytes to `out`
    /// (cleared first) in send order.
    pub fn packetize(
        &mut self,
        bitstream: &[u8],
        info: FrameInfo,
        out: &mut Vec<u8>,
    ) -> Result<FrameShape, VideoError> {
        self.packetize_parts(&[bitstream], info, out)
    }

    /// [`Self::packetize`] for a bitstream given as consecutive parts (e.g. the parameter sets
    /// kept by [`strip_leading_sei`] and the rest of the frame), without joining them first.
    pub fn packetize_parts(
        &mut self,
        parts: &[&[u8]],
        info: FrameInfo,
        out: &mut Vec<u8>,
    ) -> Result<FrameShape, VideoError> {
        let b = self.shard_len();
        let c = self.packet_size - 16;
        let bitstream_len: usize = parts.iter().map(|p| p.len()).sum();
        let total = 8 + bitstream_len;
        let chunks = total.div_ceil(c);
        let insert_len = SHARD_HEADER * chunks + total;
        let mut f = self.fec_percent as usize;
        let d_max = 255 * 100 / (100 + f);
        let mut nb = insert_len.div_ceil(d_max * b);
        if nb > MAX_BLOCKS {
            f = 0;
            nb = MAX_BLOCKS;
        }
        let block_bytes = (insert_len / nb).div_ceil(b) * b;
        // Per block: data shards (every block starts on a shard boundary), parity shards and
        // the percentage advertised for them.
        let mut geometry: Vec<(usize, usize, usize)> = Vec::with_capacity(nb);
        let mut left = chunks;
        for i in 0..nb {
            let d = if i + 1 == nb {
                left
            } else {
                (block_bytes / b).min(left)
            };
            if d == 0 || d > MAX_BLOCK_SHARDS {
                return Err(VideoError::FrameTooLarge(bitstream_len));
            }
            left -= d;
            let mut p = (d * f).div_ceil(100);
            let mut fi = f;
            if f != 0 && p < self.min_parity as usize {
                p = self.min_parity as usize;
                fi = (100 * p / d).min(255);
                p = (d * fi).div_ceil(100);
            }
            if p > 0 && d + p > 255 {
                p = 255 - d;
            }
            geometry.push((d, p, fi));
        }

        // The frame byte stream, zero-padded to whole shards: header then bitstream.
        let last_len = match total % c {
            0 => c,
            r => r,
        };
        let mut fh = [0u8; 8];
        fh[0] = 0x01;
        fh[1..3].copy_from_slice(&info.host_latency.to_le_bytes());
        fh[3] = info.kind;
        fh[4..6].copy_from_slice(&(last_len as u16).to_le_bytes());

        let enc = self.cipher.is_some();
        let stride = self.datagram_len();
        let off = if enc { ENCRYPTION_HEADER } else { 0 };
        let blocks_field = ((nb - 1) << 6) as u8;
        // The buffer is sized once and not cleared: every byte of every datagram is written
        // below (the zero-fill of a 60 KB frame showed up in profiles).
        let frame_len: usize = geometry.iter().map(|(d, p, _)| (d + p) * stride).sum();
        out.resize(frame_len, 0);
        let mut shape = FrameShape {
            blocks: nb,
            ..Default::default()
        };
        let mut chunk = 0usize;
        let mut start = 0usize;
        for (i, &(d, p, fi)) in geometry.iter().enumerate() {
            let seq_base = self.seq;
            let blk = &mut out[start..start + (d + p) * stride];
            start += (d + p) * stride;
            let multi = blocks_field | ((i as u8) << 4);
            for x in 0..d {
                let s = &mut blk[x * stride + off..x * stride + off + b];
                // What parity covers: RTP area, extra flags and FEC info zero for now.
                s[..16].fill(0);
                s[25] = 0;
                s[28..32].fill(0);
                s[16..20].copy_from_slice(
                    &((seq_base.wrapping_add(x as u32) & 0xFF_FFFF) << 8).to_le_bytes(),
                );
                s[20..24].copy_from_slice(&info.index.to_le_bytes());
                s[24] = FLAG_PIC_DATA
                    | if x == 0 { FLAG_SOF } else { 0 }
                    | if x == d - 1 { FLAG_EOF } else { 0 };
                s[26] = 0x10;
                s[27] = multi;
                // Payload: the frame byte stream from chunk `chunk`.
                let from = chunk * c;
                let n = c.min(total - from);
                let payload = &mut s[SHARD_HEADER..SHARD_HEADER + n];
                copy_stream(&fh, parts, from, payload);
                s[SHARD_HEADER + n..].fill(0);
                chunk += 1;
            }
            if p > 0 {
                let mut view = ShardsMut::new(blk, stride, off, b, d + p)
                    .expect("block buffer holds its shards");
                self.fec
                    .encode(&mut view, d, p)
                    .expect("block geometry checked above");
            }
            for s_idx in 0..d + p {
                let s = &mut blk[s_idx * stride + off..s_idx * stride + off + b];
                s[0] = 0x90;
                s[2..4]
                    .copy_from_slice(&(seq_base.wrapping_add(s_idx as u32) as u16).to_be_bytes());
                s[4..8].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
                s[20..24].copy_from_slice(&info.index.to_le_bytes());
                s[27] = multi;
                let fec_info = (d as u32) << 22 | (s_idx as u32) << 12 | (fi as u32) << 4;
                s[28..32].copy_from_slice(&fec_info.to_le_bytes());
            }
            if let Some((key, counter)) = self.cipher.as_mut() {
                for s_idx in 0..d + p {
                    let dg = &mut blk[s_idx * stride..(s_idx + 1) * stride];
                    let mut iv = [0u8; 12];
                    iv[..8].copy_from_slice(&counter.to_le_bytes());
                    iv[11] = b'V';
                    *counter += 1;
                    let (head, shard) = dg.split_at_mut(ENCRYPTION_HEADER);
                    let tag = key
                        .seal_in_place_separate_tag(
                            aead::Nonce::assume_unique_for_key(iv),
                            aead::Aad::empty(),
                            shard,
                        )
                        .expect("AES-GCM sealing of one shard");
                    head[..12].copy_from_slice(&iv);
                    head[12..16].copy_from_slice(&info.index.to_le_bytes());
                    head[16..32].copy_from_slice(tag.as_ref());
                }
            }
            self.seq = seq_base.wrapping_add((d + p) as u32);
            shape.data_shards += d;
            shape.parity_shards += p;
        }
        Ok(shape)
    }
}

/// Copies `dst.len()` bytes of `fh ‖ parts…` starting at `from`.
fn copy_stream(fh: &[u8; 8], parts: &[&[u8]], from: usize, dst: &mut [u8]) {
    let mut w = 0;
    let mut pos = from;
    for seg in std::iter::once(&fh[..]).chain(parts.iter().copied()) {
        if w == dst.len() {
            break;
        }
        if pos >= seg.len() {
            pos -= seg.len();
            continue;
        }
        let n = (seg.len() - pos).min(dst.len() - w);
        dst[w..w + n].copy_from_slice(&seg[pos..pos + n]);
        w += n;
        pos = 0;
    }
}

/// Splits the NAL units before the first picture slice of an Annex-B access unit into those
/// worth sending (parameter sets) and those that are not (SEI, access unit delimiters).
///
/// Returns the kept leading NAL units (start codes included) and the offset where the first
/// slice begins; the frame to send is `kept ‖ &data[offset..]`. Moonlight clients drop leading
/// SEI and AUD units anyway, and they look for the IDR slice in the first packet of a keyframe:
/// an encoder's long version SEI (x264, x265 write one on the first frame) between the
/// parameter sets and the slice would push the slice into the second packet, and the client
/// would never see a keyframe. Only the prefix is scanned, so the cost does not grow with the
/// frame. A bitstream without a start code is returned as it is.
pub fn strip_leading_sei(hevc: bool, data: &[u8]) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut i = 0;
    // Start of the next NAL unit's start code at or after `from`.
    let next_start = |from: usize| -> Option<usize> {
        let mut k = from;
        while k + 3 <= data.len() {
            if data[k] == 0 && data[k + 1] == 0 && data[k + 2] == 1 {
                // Include a leading zero of a 4-byte start code.
                return Some(if k > from && data[k - 1] == 0 {
                    k - 1
                } else {
                    k
                });
            }
            k += 1;
        }
        None
    };
    let Some(first) = next_start(0) else {
        return (kept, 0);
    };
    if first != 0 {
        return (kept, 0);
    }
    while i < data.len() {
        let sc = if data[i..].starts_with(&[0, 0, 0, 1]) {
            4
        } else {
            3
        };
        let Some(&header) = data.get(i + sc) else {
            break;
        };
        let (vcl, drop) = if hevc {
            let t = (header >> 1) & 0x3F;
            (t < 32, matches!(t, 35 | 39 | 40))
        } else {
            let t = header & 0x1F;
            ((1..=5).contains(&t), matches!(t, 6 | 9))
        };
        if vcl {
            return (kept, i);
        }
        let end = next_start(i + sc).unwrap_or(data.len());
        if !drop {
            kept.extend_from_slice(&data[i..end]);
        }
        i = end;
    }
    (kept, data.len())
}

/// A frame rebuilt by the [`VideoReassembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// Frame number.
    pub index: u32,
    /// Frame type from the frame header.
    pub kind: u8,
    /// Host latency field from the frame header.
    pub host_latency: u16,
    /// The bitstream (frame header removed, padding trimmed to `lastPayloadLen`).
    pub data: Vec<u8>,
    /// Data shards rebuilt by FEC.
    pub recovered: usize,
}

/// What one datagram did to the reassembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// Nothing complete yet.
    Pending,
    /// A frame completed.
    Frame(ReceivedFrame),
    /// The datagram was malformed, failed to decrypt, or belonged to a finished frame.
    Dropped(&'static str),
}

struct Block {
    data: usize,
    parity: usize,
    shards: Vec<u8>,
    present: Vec<bool>,
    have: usize,
    done: bool,
    recovered: usize,
}

struct Pending {
    index: u32,
    blocks: Vec<Option<Block>>,
}

/// Rebuilds frames from video datagrams (the client side of [`VideoPacketizer`]).
pub struct VideoReassembler {
    packet_size: usize,
    key: Option<aead::LessSafeKey>,
    fec: Gf8Cauchy,
    pending: Vec<Pending>,
    /// Highest frame number completed or given up.
    last_done: Option<u32>,
    /// Frames given up because a newer frame completed first.
    pub lost: u64,
}

impl std::fmt::Debug for VideoReassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReassembler")
            .field("packet_size", &self.packet_size)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

/// Frames kept in progress at once.
const MAX_PENDING: usize = 4;

impl VideoReassembler {
    /// `packet_size` as announced; the key when video is encrypted.
    pub fn new(packet_size: u32, key: Option<&[u8; 16]>) -> VideoReassembler {
        VideoReassembler {
            packet_size: packet_size as usize,
            key: key.map(crate::crypto::session_key),
            fec: Gf8Cauchy::new(),
            pending: Vec::new(),
            last_done: None,
            lost: 0,
        }
    }

    /// Feeds one datagram.
    pub fn push(&mut self, datagram: &[u8]) -> Reassembled {
        // A packet size below the 16 bytes of the NV header leaves no shard header to read
        // (and no payload): nothing can be reassembled with it.
        if self.packet_size < SHARD_HEADER - 16 {
            return Reassembled::Dropped("packet size unusable");
        }
        let b = self.packet_size.saturating_add(16);
        let mut buf;
        let shard: &[u8] = if let Some(key) = &self.key {
            if datagram.len() != b + ENCRYPTION_HEADER {
                return Reassembled::Dropped("encrypted datagram of the wrong size");
            }
            let iv: [u8; 12] = datagram[..12].try_into().expect("12 bytes");
            buf = datagram[ENCRYPTION_HEADER..].to_vec();
            buf.extend_from_slice(&datagram[16..32]);
            match key.open_in_place(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::empty(),
                &mut buf,
            ) {
                Ok(pt) => pt,
                Err(_) => return Reassembled::Dropped("video datagram failed authentication"),
            }
        } else {
            if datagram.len() != b {
                return Reassembled::Dropped("datagram of the wrong size");
            }
            datagram
        };
        if shard[0] != 0x90 {
            return Reassembled::Dropped("not an RTP video packet");
        }
        let index = u32::from_le_bytes(shard[20..24].try_into().expect("4 bytes"));
        let multi = shard[27];
        let block = usize::from((multi >> 4) & 3);
        let nb = usize::from(multi >> 6) + 1;
        let fec_info = u32::from_le_bytes(shard[28..32].try_into().expect("4 bytes"));
        let d = (fec_info >> 22) as usize;
        let s_idx = ((fec_info >> 12) & 0x3FF) as usize;
        let pct = ((fec_info >> 4) & 0xFF) as usize;
        let p = (d * pct).div_ceil(100);
        if d == 0 || block >= nb || s_idx >= d + p || d + p > 255 {
            return Reassembled::Dropped("inconsistent FEC info");
        }
        if let Some(done) = self.last_done {
            if (index.wrapping_sub(done) as i32) <= 0 {
                return Reassembled::Dropped("frame already finished");
            }
        }
        let pos = match self.pending.iter().position(|f| f.index == index) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    // Give up the oldest frame.
                    self.pending.remove(0);
                    self.lost += 1;
                }
                self.pending.push(Pending {
                    index,
                    blocks: (0..nb).map(|_| None).collect(),
                });
                self.pending.len() - 1
            }
        };
        let frame = &mut self.pending[pos];
        if frame.blocks.len() != nb {
            return Reassembled::Dropped("block count changed within a frame");
        }
        let blk = frame.blocks[block].get_or_insert_with(|| Block {
            data: d,
            parity: p,
            shards: vec![0; (d + p) * b],
            present: vec![false; d + p],
            have: 0,
            done: false,
            recovered: 0,
        });
        if blk.data != d || blk.parity != p {
            return Reassembled::Dropped("block geometry changed within a frame");
        }
        if blk.done || blk.present[s_idx] {
            return Reassembled::Pending;
        }
        blk.shards[s_idx * b..(s_idx + 1) * b].copy_from_slice(shard);
        blk.present[s_idx] = true;
        blk.have += 1;
        if blk.have < blk.data {
            return Reassembled::Pending;
        }
        if blk.present[..blk.data].iter().any(|x| !x) {
            let mut view = ShardsMut::contiguous(&mut blk.shards, b, blk.data + blk.parity)
                .expect("block buffer holds its shards");
            match self
                .fec
                .reconstruct(&mut view, blk.data, blk.parity, &blk.present)
            {
                Ok(n) => blk.recovered = n,
                Err(_) => return Reassembled::Dropped("FEC reconstruction failed"),
            }
        }
        blk.done = true;
        if frame
            .blocks
            .iter()
            .any(|b| !b.as_ref().is_some_and(|b| b.done))
        {
            // Remember what this block rebuilt until the frame completes.
            return Reassembled::Pending;
        }
        let frame = self.pending.remove(pos);
        // Older frames still pending are lost now.
        let before = self.pending.len();
        self.pending
            .retain(|f| (f.index.wrapping_sub(index) as i32) > 0);
        self.lost += (before - self.pending.len()) as u64;
        self.last_done = Some(index);
        let c = self.packet_size - 16;
        let mut bytes = Vec::new();
        let mut total_data = 0;
        let mut recovered = 0;
        for blk in frame.blocks.into_iter().flatten() {
            recovered += blk.recovered;
            for x in 0..blk.data {
                bytes.extend_from_slice(&blk.shards[x * b + SHARD_HEADER..(x + 1) * b]);
            }
            total_data += blk.data;
        }
        if bytes.len() < 8 || bytes[0] != 0x01 {
            return Reassembled::Dropped("frame header missing");
        }
        let last_len = usize::from(u16::from_le_bytes([bytes[4], bytes[5]]));
        if last_len == 0 || last_len > c {
            return Reassembled::Dropped("bad lastPayloadLen");
        }
        let len = (total_data - 1) * c + last_len;
        if len < 8 {
            return Reassembled::Dropped("frame shorter than its header");
        }
        Reassembled::Frame(ReceivedFrame {
            index,
            kind: bytes[3],
            host_latency: u16::from_le_bytes([bytes[1], bytes[2]]),
            data: bytes[8..len].to_vec(),
            recovered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::fec::gf8;

    fn info(index: u32) -> FrameInfo {
        FrameInfo {
            index,
            kind: frame_type::IDR,
            rtp_timestamp: 0x0102_0304,
            host_latency: 25,
        }
    }

    /// A two-shard frame with the two-parity minimum, every byte checked against the layout
    /// written out by hand, parity computed with scalar field arithmetic.
    #[test]
    fn known_answer_small_frame() {
        let ps = 64u32; // B = 80, C = 48
        let mut pk = VideoPacketizer::new(ps, 20, 2, None).unwrap();
        let bitstream: Vec<u8> = (0..60u8).collect(); // S = 68 bytes: chunks 48 + 20
        let mut out = Vec::new();
        let shape = pk.packetize(&bitstream, info(1), &mut out).unwrap();
        assert_eq!(
            shape,
            FrameShape {
                blocks: 1,
                data_shards: 2,
                parity_shards: 2
            }
        );
        let b = 80;
        assert_eq!(out.len(), 4 * b);
        let mut s = [0u8; 68];
        s[..8].copy_from_slice(&[0x01, 25, 0, 2, 20, 0, 0, 0]);
        s[8..].copy_from_slice(&bitstream);
        // Step-4 shards (what parity covers).
        let mut d0 = vec![0u8; b];
        let mut d1 = vec![0u8; b];
        for (x, d) in [&mut d0, &mut d1].into_iter().enumerate() {
            d[16..20].copy_from_slice(&((x as u32) << 8).to_le_bytes());
            d[20..24].copy_from_slice(&1u32.to_le_bytes());
            d[24] = 0x01 | if x == 0 { 0x04 } else { 0x02 };
            d[26] = 0x10;
            d[27] = 0;
        }
        d0[32..].copy_from_slice(&s[..48]);
        d1[32..52].copy_from_slice(&s[48..]);
        // ps = 2: row 0 = [inv(2), inv(3)] = [8E, F4], row 1 = [inv(3), inv(2)] = [F4, 8E].
        let par = |c0: u8, c1: u8| -> Vec<u8> {
            (0..b)
                .map(|k| gf8::mul(c0, d0[k]) ^ gf8::mul(c1, d1[k]))
                .collect()
        };
        let p0 = par(0x8E, 0xF4);
        let p1 = par(0xF4, 0x8E);
        // fecInfo: D = 2, percentage floor(100 * 2 / 2) = 100.
        for (idx, (want, got)) in [&d0, &d1, &p0, &p1]
            .into_iter()
            .zip(out.chunks(b))
            .enumerate()
        {
            let mut w = want.clone();
            w[0] = 0x90;
            w[2..4].copy_from_slice(&(idx as u16).to_be_bytes());
            w[4..8].copy_from_slice(&[1, 2, 3, 4]);
            w[20..24].copy_from_slice(&1u32.to_le_bytes());
            w[27] = 0;
            let fec_info = 2u32 << 22 | (idx as u32) << 12 | 100 << 4;
            w[28..32].copy_from_slice(&fec_info.to_le_bytes());
            assert_eq!(got, w.as_slice(), "shard {idx}");
        }
        // A reused buffer full of old bytes gives the same datagrams (every byte is written).
        let mut again = VideoPacketizer::new(ps, 20, 2, None).unwrap();
        let mut dirty = vec![0xAA; 10 * b];
        again.packetize(&bitstream, info(1), &mut dirty).unwrap();
        assert_eq!(dirty, out);
        let mut sealed = VideoPacketizer::new(ps, 20, 2, Some(&[3; 16])).unwrap();
        let (mut clean, mut dirty) = (Vec::new(), vec![0x55; 20 * b]);
        sealed.packetize(&bitstream, info(1), &mut clean).unwrap();
        let mut sealed = VideoPacketizer::new(ps, 20, 2, Some(&[3; 16])).unwrap();
        sealed.packetize(&bitstream, info(1), &mut dirty).unwrap();
        assert_eq!(clean, dirty);
        // The next frame continues the sequence numbers after the parity shards.
        pk.packetize(&[9; 10], info(2), &mut out).unwrap();
        assert_eq!(&out[2..4], &4u16.to_be_bytes());
        assert_eq!(&out[16..20], &(4u32 << 8).to_le_bytes());
    }

    #[test]
    fn leading_sei_and_aud_are_dropped_parameter_sets_kept() {
        // H.264: AUD, SPS, PPS, SEI, SEI, IDR slice, second slice.
        let h264 = [
            &[0, 0, 0, 1, 0x09, 0xF0][..],
            &[0, 0, 0, 1, 0x67, 1, 2, 3],
            &[0, 0, 1, 0x68, 4, 5],
            &[0, 0, 1, 0x06, 0xAA, 0xBB, 0xCC],
            &[0, 0, 0, 1, 0x06, 0xDD],
            &[0, 0, 0, 1, 0x65, 9, 9, 0, 0, 1, 0x65, 8],
        ]
        .concat();
        let (kept, at) = strip_leading_sei(false, &h264);
        assert_eq!(
            kept,
            [&[0, 0, 0, 1, 0x67, 1, 2, 3][..], &[0, 0, 1, 0x68, 4, 5]].concat()
        );
        assert_eq!(&h264[at..], &[0, 0, 0, 1, 0x65, 9, 9, 0, 0, 1, 0x65, 8]);
        // HEVC: VPS (32), SPS (33), PPS (34), prefix SEI (39), IDR_N_LP (20).
        let hevc = [
            &[0, 0, 0, 1, 0x40, 0x01, 7][..],
            &[0, 0, 0, 1, 0x42, 0x01, 7],
            &[0, 0, 0, 1, 0x44, 0x01, 7],
            &[0, 0, 0, 1, 0x4E, 0x01, 0xFF, 0xFF],
            &[0, 0, 0, 1, 0x28, 0x01, 5, 5],
        ]
        .concat();
        let (kept, at) = strip_leading_sei(true, &hevc);
        assert_eq!(kept, hevc[..21]);
        assert_eq!(&hevc[at..], &[0, 0, 0, 1, 0x28, 0x01, 5, 5]);
        // A P-frame without a prefix passes untouched; so does a stream without start codes.
        let p = [0, 0, 0, 1, 0x41, 1, 2];
        assert_eq!(strip_leading_sei(false, &p), (vec![], 0));
        assert_eq!(strip_leading_sei(false, &[1, 2, 3]), (vec![], 0));
        assert_eq!(strip_leading_sei(true, &[]), (vec![], 0));
        // Sent as parts, the frame arrives as kept ‖ rest.
        let mut pk = VideoPacketizer::new(64, 20, 2, None).unwrap();
        let mut rx = VideoReassembler::new(64, None);
        let (kept, at) = strip_leading_sei(true, &hevc);
        let mut out = Vec::new();
        pk.packetize_parts(&[&kept, &hevc[at..]], info(1), &mut out)
            .unwrap();
        let mut got = None;
        for dg in out.chunks(pk.datagram_len()) {
            if let Reassembled::Frame(f) = rx.push(dg) {
                got = Some(f.data);
            }
        }
        assert_eq!(got.unwrap(), [&kept[..], &hevc[at..]].concat());
    }

    #[test]
    fn large_frames_use_several_blocks_and_fall_back_to_no_parity() {
        let ps = 1024u32; // C = 1008, B = 1040; 212 data shards per block at 20 %
        let mut pk = VideoPacketizer::new(ps, 20, 2, None).unwrap();
        let mut out = Vec::new();
        let frame = vec![0xAB; 300_000]; // 298 shards → 2 blocks
        let shape = pk.packetize(&frame, info(5), &mut out).unwrap();
        assert_eq!(shape.blocks, 2);
        assert_eq!(shape.data_shards, 298);
        assert_eq!(shape.parity_shards, 30 + 30);
        // Second block: multiFecBlocks = (1 << 4) | (1 << 6), SOF on its first data shard.
        let first_of_second = (149 + 30) * 1040;
        assert_eq!(out[first_of_second + 27], 0x50);
        assert_eq!(out[first_of_second + 24], 0x05);
        // A frame needing more than four blocks goes without parity.
        let huge = vec![1; 212 * 1008 * 5];
        let shape = pk.packetize(&huge, info(6), &mut out).unwrap();
        assert_eq!((shape.blocks, shape.parity_shards), (4, 0));
        assert!(pk
            .packetize(&vec![0; 4 * 1024 * 1008], info(7), &mut out)
            .is_err());
        assert!(VideoPacketizer::new(16, 20, 2, None).is_err());
    }

    fn round_trip(key: Option<&[u8; 16]>, drop: impl Fn(usize) -> bool) {
        let ps = 1024u32;
        let mut pk = VideoPacketizer::new(ps, 20, 2, key).unwrap();
        let mut rx = VideoReassembler::new(ps, key);
        let mut out = Vec::new();
        let mut got = Vec::new();
        let mut n = 0usize;
        for idx in 1..=30u32 {
            let len = [10usize, 1007, 1008, 5000, 250_000][idx as usize % 5];
            let frame: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + idx) as u8).collect();
            pk.packetize(&frame, info(idx), &mut out).unwrap();
            for dg in out.chunks(pk.datagram_len()) {
                n += 1;
                if drop(n) {
                    continue;
                }
                if let Reassembled::Frame(f) = rx.push(dg) {
                    assert_eq!(f.data, frame, "frame {idx}");
                    got.push(f.index);
                }
            }
        }
        assert_eq!(got, (1..=30).collect::<Vec<_>>());
    }

    #[test]
    fn reassembles_plain_and_encrypted_with_loss_recovered() {
        round_trip(None, |_| false);
        round_trip(Some(&[5; 16]), |_| false);
        // Every 9th datagram lost: within 20 % parity (and the 2-shard minimum) everywhere.
        round_trip(None, |n| n % 9 == 0);
        round_trip(Some(&[5; 16]), |n| n % 9 == 0);
    }

    #[test]
    fn encrypted_layout() {
        let key = [9u8; 16];
        let mut pk = VideoPacketizer::new(96, 0, 2, Some(&key)).unwrap();
        let mut out = Vec::new();
        pk.packetize(&[1, 2, 3], info(3), &mut out).unwrap();
        assert_eq!(out.len(), 96 + 16 + 32);
        assert_eq!(&out[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'V']);
        assert_eq!(&out[12..16], &3u32.to_le_bytes());
        let mut rx = VideoReassembler::new(96, Some(&key));
        let Reassembled::Frame(f) = rx.push(&out) else {
            panic!("one-shard frame completes")
        };
        assert_eq!(
            (f.index, f.kind, f.data.as_slice()),
            (3, 2, &[1u8, 2, 3][..])
        );
        let mut bad = out.clone();
        bad[40] ^= 1;
        let mut rx = VideoReassembler::new(96, Some(&key));
        assert!(matches!(rx.push(&bad), Reassembled::Dropped(_)));
    }

    #[test]
    fn a_packet_size_below_the_nv_header_drops_datagrams_instead_of_reading_past_them() {
        for ps in [0u32, 1, 15] {
            for key in [None, Some(&[1u8; 16])] {
                let mut small = VideoReassembler::new(ps, key);
                for len in [0usize, 16, ps as usize + 16, ps as usize + 48] {
                    let mut dg = vec![0u8; len];
                    if let Some(first) = dg.first_mut() {
                        *first = 0x90;
                    }
                    assert!(
                        matches!(small.push(&dg), Reassembled::Dropped(_)),
                        "{ps} {len}"
                    );
                }
            }
        }
        let mut edge = VideoReassembler::new(16, None);
        let mut dg = [0u8; 32];
        dg[0] = 0x90;
        dg[28..32].copy_from_slice(&(1u32 << 22).to_le_bytes());
        assert!(matches!(edge.push(&dg), Reassembled::Dropped(_)));
    }

    #[test]
    fn garbage_datagrams_are_dropped_without_panicking() {
        let mut rx = VideoReassembler::new(1024, None);
        let mut x = 1u32;
        for len in [0usize, 1, 31, 1040, 1040, 1040, 2000] {
            let dg: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = rx.push(&dg);
        }
        let mut dg = vec![0u8; 1040];
        dg[0] = 0x90;
        dg[28..32].copy_from_slice(&(1u32 << 12).to_le_bytes()); // D = 0
        assert!(matches!(rx.push(&dg), Reassembled::Dropped(_)));
        // One shard whose lastPayloadLen says the frame ends inside its own 8-byte header
        // (found by fuzzing).
        dg[28..32].copy_from_slice(&(1u32 << 22).to_le_bytes()); // D = 1, no parity
        dg[20] = 9;
        dg[32..40].copy_from_slice(&[1, 0, 0, 2, 4, 0, 0, 0]);
        assert_eq!(
            rx.push(&dg),
            Reassembled::Dropped("frame shorter than its header")
        );
    }
}
