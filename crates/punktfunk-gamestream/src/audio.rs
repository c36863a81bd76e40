//! Audio datagrams: RTP around Opus packets, AES-128-CBC, and the 4 + 2 audio FEC.
//!
//! Data packets are `80 61 ‖ BE16 seq ‖ BE32 timestamp(ms) ‖ SSRC 0 ‖ payload`, the timestamp
//! advancing by exactly the packet duration. When audio is encrypted the payload is the Opus
//! packet under AES-128-CBC with PKCS#7 padding, key `K_s` and IV `BE32(rikeyid + seq) ‖ 00×12`.
//! Every four data packets (sequence numbers `4k … 4k+3`) are followed by two FEC packets whose
//! payloads are parity over the four (encrypted) payloads, computed with a fixed 2 × 4 matrix in
//! GF(2^8)/0x11D — not the video code's Cauchy matrix; the client replaces its decoder's matrix
//! with the same constants. Opus at hard CBR keeps the four payloads the same length, which the
//! FEC needs; a block whose lengths differ is sent without parity.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use punktfunk_core::fec::gf8::{inv, mul};

/// RTP payload type of audio data.
pub const PT_DATA: u8 = 97;
/// RTP payload type of audio FEC.
pub const PT_FEC: u8 = 127;
/// RTP header bytes.
pub const RTP_HEADER: usize = 12;
/// FEC header bytes after the RTP header.
pub const FEC_HEADER: usize = 12;
/// Data packets per FEC block.
pub const BLOCK_DATA: usize = 4;
/// Parity packets per FEC block.
pub const BLOCK_PARITY: usize = 2;
/// Largest audio datagram a client accepts.
pub const MAX_DATAGRAM: usize = 1400;

/// The fixed audio parity matrix, row = parity index, column = data index.
pub const MATRIX: [[u8; 4]; 2] = [[0x77, 0x40, 0x38, 0x0E], [0xC7, 0xA7, 0x0D, 0x6C]];

/// An Opus multistream layout: how `channels` channels are packed into streams.
///
/// The host's encoder always uses the identity mapping (channels in the client's order FL FR C
/// LFE BL BR SL SR); what DESCRIBE advertises is arranged so the client's decoder ends up with
/// the identity mapping too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusLayout {
    /// Channels.
    pub channels: u8,
    /// Opus streams.
    pub streams: u8,
    /// Of which coupled (stereo) streams.
    pub coupled: u8,
    /// Opus bitrate, bit/s.
    pub bitrate: u32,
}

/// Stereo, 5.1 and 7.1 at normal and high quality: `(layout, high quality, DESCRIBE digits)`.
///
/// Normal-quality surround digits are in the order the client rotates (FL FR C RL RR [SL SR]
/// LFE): it moves the last entry to index 3, which turns `0 1 2 4 5 3` into the identity. For 7.1
/// that means `0 1 2 4 5 6 7 3`, not the `0 1 2 4 5 3 6 7` some hosts advertise, which leaves
/// the client with LFE and the side channels swapped. High-quality digits are used verbatim.
pub const LAYOUTS: [(OpusLayout, bool, &str); 6] = [
    (
        OpusLayout {
            channels: 2,
            streams: 1,
            coupled: 1,
            bitrate: 96_000,
        },
        false,
        "21101",
    ),
    (
        OpusLayout {
            channels: 2,
            streams: 1,
            coupled: 1,
            bitrate: 512_000,
        },
        true,
        "21101",
    ),
    (
        OpusLayout {
            channels: 6,
            streams: 4,
            coupled: 2,
            bitrate: 256_000,
        },
        false,
        "642012453",
    ),
    (
        OpusLayout {
            channels: 6,
            streams: 6,
            coupled: 0,
            bitrate: 1_536_000,
        },
        true,
        "660012345",
    ),
    (
        OpusLayout {
            channels: 8,
            streams: 5,
            coupled: 3,
            bitrate: 450_000,
        },
        false,
        "85301245673",
    ),
    (
        OpusLayout {
            channels: 8,
            streams: 8,
            coupled: 0,
            bitrate: 2_048_000,
        },
        true,
        "88001234567",
    ),
];

/// The layout for `channels` at normal or high quality.
pub fn layout(channels: u32, high_quality: bool) -> Option<OpusLayout> {
    LAYOUTS
        .iter()
        .find(|(l, hq, _)| u32::from(l.channels) == channels && *hq == high_quality)
        .map(|(l, _, _)| *l)
}

type CbcEnc = cbc::Encryptor<aes::Aes128>;
type CbcDec = cbc::Decryptor<aes::Aes128>;

fn cbc_iv(rikeyid: u32, seq: u16) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&rikeyid.wrapping_add(u32::from(seq)).to_be_bytes());
    iv
}

/// Encrypts one Opus packet as the client expects.
pub fn encrypt(key: &[u8; 16], rikeyid: u32, seq: u16, opus: &[u8]) -> Vec<u8> {
    CbcEnc::new(key.into(), &cbc_iv(rikeyid, seq).into()).encrypt_padded_vec_mut::<Pkcs7>(opus)
}

/// Decrypts one payload; `None` if the padding is wrong.
pub fn decrypt(key: &[u8; 16], rikeyid: u32, seq: u16, payload: &[u8]) -> Option<Vec<u8>> {
    CbcDec::new(key.into(), &cbc_iv(rikeyid, seq).into())
        .decrypt_padded_vec_mut::<Pkcs7>(payload)
        .ok()
}

/// Turns Opus packets into audio datagrams.
#[derive(Debug)]
pub struct AudioPacketizer {
    key: Option<[u8; 16]>,
    rikeyid: u32,
    packet_ms: u32,
    seq: u16,
    timestamp: u32,
    block: Vec<Vec<u8>>,
}

impl AudioPacketizer {
    /// `key`/`rikeyid` when audio is encrypted; `packet_ms` is the Opus frame duration.
    pub fn new(key: Option<[u8; 16]>, rikeyid: u32, packet_ms: u32) -> AudioPacketizer {
        AudioPacketizer {
            key,
            rikeyid,
            packet_ms,
            seq: 0,
            timestamp: 0,
            block: Vec::with_capacity(BLOCK_DATA),
        }
    }

    /// Packetizes one Opus packet: one data datagram, plus the block's two FEC datagrams after
    /// every fourth. Returns the datagrams in send order.
    pub fn push(&mut self, opus: &[u8]) -> Vec<Vec<u8>> {
        let seq = self.seq;
        let payload = match &self.key {
            Some(k) => encrypt(k, self.rikeyid, seq, opus),
            None => opus.to_vec(),
        };
        let mut dg = Vec::with_capacity(RTP_HEADER + payload.len());
        dg.extend_from_slice(&[0x80, PT_DATA]);
        dg.extend_from_slice(&seq.to_be_bytes());
        dg.extend_from_slice(&self.timestamp.to_be_bytes());
        dg.extend_from_slice(&[0; 4]);
        dg.extend_from_slice(&payload);
        self.block.push(payload);
        let mut out = vec![dg];
        if self.block.len() == BLOCK_DATA {
            let base_seq = seq.wrapping_sub(3);
            let base_ts = self.timestamp.wrapping_sub(self.packet_ms.wrapping_mul(3));
            let len = self.block[0].len();
            if self.block.iter().all(|p| p.len() == len) {
                for (j, row) in MATRIX.iter().enumerate() {
                    let mut fec = Vec::with_capacity(RTP_HEADER + FEC_HEADER + len);
                    fec.extend_from_slice(&[0x80, PT_FEC]);
                    fec.extend_from_slice(&seq.wrapping_add(1 + j as u16).to_be_bytes());
                    fec.extend_from_slice(&[0; 8]);
                    fec.push(j as u8);
                    fec.push(PT_DATA);
                    fec.extend_from_slice(&base_seq.to_be_bytes());
                    fec.extend_from_slice(&base_ts.to_be_bytes());
                    fec.extend_from_slice(&[0; 4]);
                    let start = fec.len();
                    fec.resize(start + len, 0);
                    for (i, p) in self.block.iter().enumerate() {
                        for (o, &b) in fec[start..].iter_mut().zip(p) {
                            *o ^= mul(row[i], b);
                        }
                    }
                    out.push(fec);
                }
            }
            self.block.clear();
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.packet_ms);
        out
    }
}

/// One audio packet as the receiver hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    /// RTP sequence number.
    pub seq: u16,
    /// Timestamp, ms.
    pub timestamp: u32,
    /// The Opus packet (decrypted).
    pub opus: Vec<u8>,
    /// Rebuilt from FEC rather than received.
    pub recovered: bool,
}

struct RxBlock {
    base: u16,
    base_ts: u32,
    data: [Option<Vec<u8>>; 4],
    parity: [Option<Vec<u8>>; 2],
    delivered: [bool; 4],
}

/// Receives audio datagrams (the client side of [`AudioPacketizer`]): checks, decrypts, and
/// rebuilds up to two lost packets per block from its FEC packets.
pub struct AudioReceiver {
    key: Option<[u8; 16]>,
    rikeyid: u32,
    packet_ms: u32,
    blocks: Vec<RxBlock>,
    /// Datagrams dropped as malformed or undecryptable.
    pub dropped: u64,
}

impl std::fmt::Debug for AudioReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReceiver")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl AudioReceiver {
    /// The session key and key id when audio is encrypted.
    pub fn new(key: Option<[u8; 16]>, rikeyid: u32, packet_ms: u32) -> AudioReceiver {
        AudioReceiver {
            key,
            rikeyid,
            packet_ms,
            blocks: Vec::new(),
            dropped: 0,
        }
    }

    fn block(&mut self, base: u16, base_ts: u32) -> &mut RxBlock {
        if let Some(i) = self.blocks.iter().position(|b| b.base == base) {
            return &mut self.blocks[i];
        }
        if self.blocks.len() >= 8 {
            self.blocks.remove(0);
        }
        self.blocks.push(RxBlock {
            base,
            base_ts,
            data: Default::default(),
            parity: Default::default(),
            delivered: [false; 4],
        });
        self.blocks.last_mut().expect("just pushed")
    }

    /// Feeds one datagram; returns the packets it delivered (itself and/or rebuilt ones).
    pub fn push(&mut self, dg: &[u8]) -> Vec<AudioPacket> {
        if dg.len() < RTP_HEADER || dg.len() > MAX_DATAGRAM || dg[0] != 0x80 {
            self.dropped += 1;
            return Vec::new();
        }
        let seq = u16::from_be_bytes([dg[2], dg[3]]);
        let ts = u32::from_be_bytes(dg[4..8].try_into().expect("4 bytes"));
        let base;
        match dg[1] {
            PT_DATA => {
                base = seq & !3;
                let idx = usize::from(seq & 3);
                let base_ts = ts.wrapping_sub(self.packet_ms.wrapping_mul(idx as u32));
                let b = self.block(base, base_ts);
                b.data[idx] = Some(dg[RTP_HEADER..].to_vec());
            }
            PT_FEC => {
                if dg.len() < RTP_HEADER + FEC_HEADER || dg[12] > 1 || dg[13] != PT_DATA {
                    self.dropped += 1;
                    return Vec::new();
                }
                base = u16::from_be_bytes([dg[14], dg[15]]);
                if base & 3 != 0 {
                    self.dropped += 1;
                    return Vec::new();
                }
                let base_ts = u32::from_be_bytes(dg[16..20].try_into().expect("4 bytes"));
                let j = usize::from(dg[12]);
                let b = self.block(base, base_ts);
                b.parity[j] = Some(dg[RTP_HEADER + FEC_HEADER..].to_vec());
            }
            _ => {
                self.dropped += 1;
                return Vec::new();
            }
        }
        let (key, rikeyid, packet_ms) = (self.key, self.rikeyid, self.packet_ms);
        let i = self
            .blocks
            .iter()
            .position(|b| b.base == base)
            .expect("block exists");
        recover(&mut self.blocks[i]);
        let b = &mut self.blocks[i];
        let mut out = Vec::new();
        let mut bad = 0;
        for k in 0..4 {
            if b.delivered[k] {
                continue;
            }
            let Some(p) = &b.data[k] else { continue };
            // A rebuilt packet is one whose own datagram was not this one and never came.
            let s = b.base.wrapping_add(k as u16);
            let recovered = dg[1] == PT_FEC || s != seq;
            b.delivered[k] = true;
            let opus = match &key {
                Some(key) => match decrypt(key, rikeyid, s, p) {
                    Some(o) => o,
                    None => {
                        bad += 1;
                        continue;
                    }
                },
                None => p.clone(),
            };
            out.push(AudioPacket {
                seq: s,
                timestamp: b.base_ts.wrapping_add(packet_ms.wrapping_mul(k as u32)),
                opus,
                recovered,
            });
        }
        self.dropped += bad;
        out
    }
}

/// Rebuilds missing data payloads of a block when enough shards are present.
fn recover(b: &mut RxBlock) {
    let missing: Vec<usize> = (0..4).filter(|&i| b.data[i].is_none()).collect();
    let rows: Vec<usize> = (0..2).filter(|&j| b.parity[j].is_some()).collect();
    if missing.is_empty() || missing.len() > rows.len() {
        return;
    }
    let Some(len) = b.parity[rows[0]].as_ref().map(Vec::len) else {
        return;
    };
    if b.data.iter().flatten().any(|d| d.len() != len)
        || rows
            .iter()
            .any(|&j| b.parity[j].as_ref().map(Vec::len) != Some(len))
    {
        return;
    }
    let rows = &rows[..missing.len()];
    // Right-hand sides: parity minus the known data's contribution.
    let mut rhs: Vec<Vec<u8>> = rows
        .iter()
        .map(|&j| {
            let mut r = b.parity[j].clone().expect("present");
            for (i, d) in b.data.iter().enumerate() {
                if let Some(d) = d {
                    for (o, &x) in r.iter_mut().zip(d) {
                        *o ^= mul(MATRIX[j][i], x);
                    }
                }
            }
            r
        })
        .collect();
    // Solve the e × e system (e ≤ 2) by elimination.
    let mut m: Vec<Vec<u8>> = rows
        .iter()
        .map(|&j| missing.iter().map(|&i| MATRIX[j][i]).collect())
        .collect();
    let e = missing.len();
    for col in 0..e {
        let Some(piv) = (col..e).find(|&r| m[r][col] != 0) else {
            return;
        };
        m.swap(col, piv);
        rhs.swap(col, piv);
        let f = inv(m[col][col]).expect("non-zero pivot");
        for x in m[col].iter_mut() {
            *x = mul(*x, f);
        }
        for x in rhs[col].iter_mut() {
            *x = mul(*x, f);
        }
        for r in 0..e {
            if r != col && m[r][col] != 0 {
                let g = m[r][col];
                let (pr, rr) = (m[col].clone(), rhs[col].clone());
                for (x, y) in m[r].iter_mut().zip(&pr) {
                    *x ^= mul(g, *y);
                }
                for (x, y) in rhs[r].iter_mut().zip(&rr) {
                    *x ^= mul(g, *y);
                }
            }
        }
    }
    for (k, &i) in missing.iter().enumerate() {
        b.data[i] = Some(std::mem::take(&mut rhs[k]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_packet_layout_and_encryption_known_answer() {
        let key = [0x42u8; 16];
        let mut p = AudioPacketizer::new(Some(key), 0x0102_0304, 5);
        let out = p.push(&[1, 2, 3, 4, 5]);
        assert_eq!(out.len(), 1);
        let dg = &out[0];
        assert_eq!(&dg[..12], &[0x80, 97, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Five bytes pad to one block; IV = BE32(rikeyid + 0) ‖ zeros. Built with the aes block
        // cipher directly: C = AES(K, P ⊕ IV).
        use aes::cipher::{BlockEncrypt, KeyInit};
        let mut block = [0u8; 16];
        block[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        for b in &mut block[5..] {
            *b = 11;
        }
        for (b, iv) in block.iter_mut().zip([1u8, 2, 3, 4]) {
            *b ^= iv;
        }
        let mut ga = aes::cipher::generic_array::GenericArray::from(block);
        aes::Aes128::new(&key.into()).encrypt_block(&mut ga);
        assert_eq!(&dg[12..], ga.as_slice());
        let second = p.push(&[9; 5]);
        assert_eq!(&second[0][2..8], &[0, 1, 0, 0, 0, 5]);
        assert_eq!(
            decrypt(&key, 0x0102_0304, 1, &second[0][12..]).unwrap(),
            vec![9; 5]
        );
    }

    #[test]
    fn fec_packets_follow_every_fourth_with_the_fixed_matrix() {
        let mut p = AudioPacketizer::new(None, 0, 5);
        let payloads: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 3]).collect();
        let mut all = Vec::new();
        for pl in &payloads {
            all.extend(p.push(pl));
        }
        assert_eq!(all.len(), 6);
        let fec0 = &all[4];
        assert_eq!(&fec0[..2], &[0x80, 127]);
        assert_eq!(&fec0[12..20], &[0, 97, 0, 0, 0, 0, 0, 0]);
        // parity_0 = 77·1 ⊕ 40·2 ⊕ 38·3 ⊕ 0E·4 at every byte.
        let want0 = mul(0x77, 1) ^ mul(0x40, 2) ^ mul(0x38, 3) ^ mul(0x0E, 4);
        let want1 = mul(0xC7, 1) ^ mul(0xA7, 2) ^ mul(0x0D, 3) ^ mul(0x6C, 4);
        assert_eq!(&fec0[24..], &[want0; 3]);
        assert_eq!(all[5][12], 1);
        assert_eq!(&all[5][24..], &[want1; 3]);
        // The second block's FEC header names base 4 and timestamp 20 ms.
        let mut second = Vec::new();
        for pl in &payloads {
            second.extend(p.push(pl));
        }
        assert_eq!(&second[4][14..20], &[0, 4, 0, 0, 0, 20]);
    }

    #[test]
    fn receiver_rebuilds_any_two_lost_packets_per_block() {
        let key = [1u8; 16];
        for lost in [
            vec![],
            vec![0],
            vec![3],
            vec![1, 2],
            vec![0, 3],
            vec![2, 4],
            vec![4, 5],
        ] {
            let mut p = AudioPacketizer::new(Some(key), 77, 5);
            let mut rx = AudioReceiver::new(Some(key), 77, 5);
            let mut got = Vec::new();
            for blk in 0..3u16 {
                let mut dgs = Vec::new();
                for i in 0..4u16 {
                    let opus: Vec<u8> = (0..40)
                        .map(|k| (k as u16 * 3 + blk * 4 + i) as u8)
                        .collect();
                    dgs.extend(p.push(&opus));
                }
                for (n, dg) in dgs.iter().enumerate() {
                    if !lost.contains(&n) {
                        got.extend(rx.push(dg));
                    }
                }
            }
            let seqs: Vec<u16> = {
                let mut s: Vec<u16> = got.iter().map(|p| p.seq).collect();
                s.sort();
                s
            };
            assert_eq!(seqs, (0..12).collect::<Vec<_>>(), "lost {lost:?}");
            for pk in &got {
                let want: Vec<u8> = (0..40).map(|k| (k as u16 * 3 + pk.seq) as u8).collect();
                assert_eq!(pk.opus, want, "seq {} lost {lost:?}", pk.seq);
                assert_eq!(pk.timestamp, u32::from(pk.seq) * 5);
            }
            assert_eq!(rx.dropped, 0);
        }
    }

    #[test]
    fn surround_digits_leave_the_client_with_the_identity_mapping() {
        for (l, hq, digits) in LAYOUTS {
            let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
            assert_eq!((d[0], d[1], d[2]), (l.channels, l.streams, l.coupled));
            let m = &d[3..];
            assert_eq!(m.len(), usize::from(l.channels));
            // What the client does with the mapping digits.
            let client: Vec<u8> = if l.channels == 2 || hq {
                m.to_vec()
            } else {
                let c = m.len();
                let mut v = m[..3].to_vec();
                v.push(m[c - 1]);
                v.extend_from_slice(&m[3..c - 1]);
                v
            };
            assert_eq!(client, (0..l.channels).collect::<Vec<_>>(), "{digits}");
            // The packet has to fit one datagram at 5 ms: bitrate/8 × 5 ms + padding + header.
            assert!(l.bitrate / 8 / 200 + 16 + RTP_HEADER as u32 <= MAX_DATAGRAM as u32);
        }
        assert_eq!(layout(6, true).unwrap().streams, 6);
        assert!(layout(4, false).is_none());
    }

    #[test]
    fn garbage_is_counted() {
        let mut rx = AudioReceiver::new(Some([0; 16]), 0, 5);
        assert!(rx.push(&[]).is_empty());
        assert!(rx.push(&[0x80, 127, 0, 0]).is_empty());
        let mut fec = vec![0x80, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 97, 0, 0];
        fec.resize(40, 0);
        assert!(rx.push(&fec).is_empty());
        // A data packet whose padding does not decrypt.
        assert!(rx
            .push(&[0x80, 97, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])
            .is_empty());
        assert_eq!(rx.dropped, 4);
    }

    #[test]
    fn a_packet_duration_near_u32_max_wraps_timestamps_instead_of_panicking() {
        let ms = u32::MAX / 2;
        let mut p = AudioPacketizer::new(None, 0, ms);
        let mut rx = AudioReceiver::new(None, 0, ms);
        let mut got = Vec::new();
        for i in 0..8u8 {
            for dg in p.push(&[i; 4]) {
                got.extend(rx.push(&dg));
            }
        }
        let stamps: Vec<u32> = got.iter().map(|p| p.timestamp).collect();
        let want: Vec<u32> = (0..8u32).map(|i| ms.wrapping_mul(i)).collect();
        assert_eq!(stamps, want);
    }
}
