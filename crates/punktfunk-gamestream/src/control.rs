//! The control stream's messages and their encrypted envelope.
//!
//! Every control message of a 7.1.431 session travels inside one ENet packet as
//!
//! ```text
//! LE16 0x0001 ‖ LE16 len ‖ LE32 seq ‖ tag[16] ‖ AES-128-GCM(LE16 type ‖ LE16 payloadLen ‖ payload)
//! ```
//!
//! with `len = 4 + 16 + ciphertext length`, the launch key `K_s`, no AAD, and the IV
//! `LE32(seq) ‖ 00×6 ‖ origin ‖ 'C'` (origin `'C'` from the client, `'H'` from the host). Each side
//! counts its own sequence numbers from 0. The ENet session itself (connect, reliability,
//! channels) is the transport's business; this module only sees packet payloads.

use crate::rtsp::Origin;
use ring::aead;
use thiserror::Error;

/// Envelope type of an encrypted control packet.
pub const ENCRYPTED_TYPE: u16 = 0x0001;
/// Bytes before the ciphertext: type, length, sequence number, tag.
pub const ENVELOPE_HEADER: usize = 24;
/// Longest control message accepted (input packets are tens of bytes; text one code point).
pub const MAX_MESSAGE: usize = 4096;

/// Message types.
pub mod kind {
    /// Client → host: make the next frame an IDR (also the first message of a session).
    pub const REQUEST_IDR: u16 = 0x0302;
    /// Client → host: the second start-up message.
    pub const START_B: u16 = 0x0307;
    /// Client → host: invalidate reference frames `[first, last]`.
    pub const INVALIDATE_REFS: u16 = 0x0301;
    /// Client → host: periodic keep-alive (every 100 ms).
    pub const PING: u16 = 0x0200;
    /// Client → host: legacy loss statistics.
    pub const LOSS_STATS: u16 = 0x0201;
    /// Client → host: one input packet.
    pub const INPUT: u16 = 0x0206;
    /// Client → host: the legacy first start-up message.
    pub const START_A: u16 = 0x0305;
    /// Client → host: per-frame FEC status (host → client the same number sets an LED).
    pub const FEC_STATUS: u16 = 0x5502;
    /// Client → host: long-term-reference frame acknowledgement.
    pub const LTR_ACK: u16 = 0x0350;
    /// Host → client: the stream ends (`BE32` reason).
    pub const TERMINATION: u16 = 0x0109;
    /// Host → client: rumble.
    pub const RUMBLE: u16 = 0x010b;
    /// Host → client: HDR mode.
    pub const HDR_MODE: u16 = 0x010e;
}

/// Termination reason for a graceful end (the app or the host stopped the stream).
pub const TERMINATION_GRACEFUL: u32 = 0x8003_0023;

/// What can be wrong with a control packet. All of it is the sender's fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// Shorter than its headers say.
    #[error("control packet truncated")]
    Truncated,
    /// Not an encrypted envelope (an encrypted stream accepts nothing else).
    #[error("control packet type {0:#06x} is not an encrypted envelope")]
    NotEncrypted(u16),
    /// The envelope length disagrees with the packet.
    #[error("envelope length {claimed} does not match packet length {actual}")]
    Length {
        /// Length field + 4.
        claimed: usize,
        /// Packet length.
        actual: usize,
    },
    /// Longer than [`MAX_MESSAGE`].
    #[error("control message too long ({0} bytes)")]
    TooLong(usize),
    /// The tag did not verify.
    #[error("control packet failed authentication")]
    Crypto,
    /// The decrypted message is itself an envelope (never legitimate).
    #[error("nested encrypted envelope")]
    Nested,
}

fn nonce(seq: u32, origin: Origin) -> aead::Nonce {
    crate::rtsp::iv(seq, origin, b'C')
}

/// One side's sealing and opening state: the key and this side's next sequence number.
pub struct ControlCipher {
    key: aead::LessSafeKey,
    me: Origin,
    next_seq: u32,
}

impl std::fmt::Debug for ControlCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlCipher")
            .field("me", &self.me)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// A decrypted control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type ([`kind`]).
    pub kind: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

impl ControlCipher {
    /// State for the side `me` (the host uses [`Origin::Host`]).
    pub fn new(k: &[u8; 16], me: Origin) -> ControlCipher {
        ControlCipher {
            key: crate::crypto::session_key(k),
            me,
            next_seq: 0,
        }
    }

    /// Seals one message into an ENet packet payload.
    pub fn seal(&mut self, kind: u16, payload: &[u8]) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut pt = Vec::with_capacity(4 + payload.len());
        pt.extend_from_slice(&kind.to_le_bytes());
        pt.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        pt.extend_from_slice(payload);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(seq, self.me), aead::Aad::empty(), &mut pt)
            .expect("AES-GCM sealing of a bounded message");
        let mut out = Vec::with_capacity(ENVELOPE_HEADER + pt.len());
        out.extend_from_slice(&ENCRYPTED_TYPE.to_le_bytes());
        out.extend_from_slice(&((4 + 16 + pt.len()) as u16).to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&pt);
        out
    }

    /// Opens a packet sealed by the other side.
    pub fn open(&self, packet: &[u8]) -> Result<Message, ControlError> {
        if packet.len() < 4 {
            return Err(ControlError::Truncated);
        }
        let t = u16::from_le_bytes([packet[0], packet[1]]);
        if t != ENCRYPTED_TYPE {
            return Err(ControlError::NotEncrypted(t));
        }
        let claimed = usize::from(u16::from_le_bytes([packet[2], packet[3]])) + 4;
        if claimed != packet.len() {
            return Err(ControlError::Length {
                claimed,
                actual: packet.len(),
            });
        }
        if packet.len() < ENVELOPE_HEADER + 4 {
            return Err(ControlError::Truncated);
        }
        if packet.len() > ENVELOPE_HEADER + MAX_MESSAGE {
            return Err(ControlError::TooLong(packet.len()));
        }
        let seq = u32::from_le_bytes(packet[4..8].try_into().expect("4 bytes"));
        let theirs = match self.me {
            Origin::Host => Origin::Client,
            Origin::Client => Origin::Host,
        };
        let mut ct = Vec::with_capacity(packet.len() - 8);
        ct.extend_from_slice(&packet[ENVELOPE_HEADER..]);
        ct.extend_from_slice(&packet[8..24]);
        let pt = self
            .key
            .open_in_place(nonce(seq, theirs), aead::Aad::empty(), &mut ct)
            .map_err(|_| ControlError::Crypto)?;
        let kind = u16::from_le_bytes([pt[0], pt[1]]);
        if kind == ENCRYPTED_TYPE {
            return Err(ControlError::Nested);
        }
        let len = usize::from(u16::from_le_bytes([pt[2], pt[3]]));
        // The client's ping fills only part of its buffer but declares it whole; take what the
        // header says when it fits, else what is there.
        let body = &pt[4..];
        let payload = body[..len.min(body.len())].to_vec();
        Ok(Message { kind, payload })
    }
}

/// A client → host message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Make the next frame an IDR.
    RequestIdr,
    /// Start-up message B.
    StartB,
    /// Stop referencing frames `first..=last`.
    InvalidateRefs {
        /// First frame to drop.
        first: u64,
        /// Last frame to drop.
        last: u64,
    },
    /// Keep-alive.
    Ping,
    /// Per-frame FEC statistics.
    FecStatus {
        /// Frame number.
        frame: u32,
        /// Data shards received.
        received_data: u16,
        /// Parity shards received.
        received_parity: u16,
        /// Data shards in the frame.
        total_data: u16,
    },
    /// One input packet (§9 layout, still undecoded).
    Input(Vec<u8>),
    /// Something known but of no use to this host (LTR ACK, loss statistics, start A).
    Ignored(u16),
    /// A type this host does not know.
    Unknown(u16),
}

impl ClientMessage {
    /// Classifies a decrypted message; a known type with a short payload is an error.
    pub fn parse(m: &Message) -> Result<ClientMessage, ControlError> {
        let p = &m.payload;
        Ok(match m.kind {
            kind::REQUEST_IDR => ClientMessage::RequestIdr,
            kind::START_B => ClientMessage::StartB,
            kind::INVALIDATE_REFS => {
                if p.len() < 16 {
                    return Err(ControlError::Truncated);
                }
                ClientMessage::InvalidateRefs {
                    first: u64::from_le_bytes(p[0..8].try_into().expect("8 bytes")),
                    last: u64::from_le_bytes(p[8..16].try_into().expect("8 bytes")),
                }
            }
            kind::PING => ClientMessage::Ping,
            kind::FEC_STATUS => {
                if p.len() < 21 {
                    return Err(ControlError::Truncated);
                }
                let be16 = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
                ClientMessage::FecStatus {
                    frame: u32::from_be_bytes(p[0..4].try_into().expect("4 bytes")),
                    total_data: be16(10),
                    received_data: be16(14),
                    received_parity: be16(16),
                }
            }
            kind::INPUT => ClientMessage::Input(p.clone()),
            kind::LTR_ACK | kind::LOSS_STATS | kind::START_A => ClientMessage::Ignored(m.kind),
            other => ClientMessage::Unknown(other),
        })
    }
}

/// Payload of a termination message.
pub fn termination(reason: u32) -> Vec<u8> {
    reason.to_be_bytes().to_vec()
}

/// Payload of a rumble message.
pub fn rumble(controller: u16, low: u16, high: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(10);
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&controller.to_le_bytes());
    p.extend_from_slice(&low.to_le_bytes());
    p.extend_from_slice(&high.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_layout_and_round_trip() {
        let k = [3u8; 16];
        let mut client = ControlCipher::new(&k, Origin::Client);
        let host = ControlCipher::new(&k, Origin::Host);
        let p0 = client.seal(kind::REQUEST_IDR, &[0, 0]);
        let p1 = client.seal(kind::START_B, &[0]);
        // type 0x0001, len = 4 + 16 + (4 + 2), seq 0 then 1.
        assert_eq!(&p0[..8], &[1, 0, 26, 0, 0, 0, 0, 0]);
        assert_eq!(p0.len(), 30);
        assert_eq!(&p1[4..8], &[1, 0, 0, 0]);
        let m = host.open(&p0).unwrap();
        assert_eq!(
            (m.kind, m.payload.as_slice()),
            (kind::REQUEST_IDR, &[0u8, 0][..])
        );
        assert_eq!(ClientMessage::parse(&m).unwrap(), ClientMessage::RequestIdr);
        assert_eq!(
            ClientMessage::parse(&host.open(&p1).unwrap()).unwrap(),
            ClientMessage::StartB
        );
        // The IV names the sender: a client cannot open its own packet as if from the host.
        assert_eq!(client.open(&p0), Err(ControlError::Crypto));
    }

    #[test]
    fn known_answer_iv_layout() {
        // Built independently with ring: seq 5 from the host, IV 05 00 00 00 | 00 x6 | 'H' 'C'.
        let k = [0x11u8; 16];
        let mut host = ControlCipher::new(&k, Origin::Host);
        for _ in 0..5 {
            host.seal(kind::PING, &[]);
        }
        let pkt = host.seal(kind::TERMINATION, &termination(TERMINATION_GRACEFUL));
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &k).unwrap());
        let mut iv = [0u8; 12];
        iv[0] = 5;
        iv[10] = b'H';
        iv[11] = b'C';
        let mut ct = pkt[24..].to_vec();
        ct.extend_from_slice(&pkt[8..24]);
        let pt = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::empty(),
                &mut ct,
            )
            .unwrap();
        assert_eq!(pt, &[0x09, 0x01, 4, 0, 0x80, 0x03, 0x00, 0x23]);
    }

    #[test]
    fn bad_packets_are_errors_not_panics() {
        let k = [3u8; 16];
        let host = ControlCipher::new(&k, Origin::Host);
        let mut client = ControlCipher::new(&k, Origin::Client);
        let good = client.seal(kind::INPUT, &[1, 2, 3]);
        assert_eq!(host.open(&[]), Err(ControlError::Truncated));
        assert_eq!(
            host.open(&[6, 2, 0, 0]),
            Err(ControlError::NotEncrypted(0x0206))
        );
        assert!(matches!(
            host.open(&good[..good.len() - 1]),
            Err(ControlError::Length { .. })
        ));
        let mut t = good.clone();
        t[26] ^= 0x40;
        assert_eq!(host.open(&t), Err(ControlError::Crypto));
        let nested = client.seal(ENCRYPTED_TYPE, &[0; 4]);
        assert_eq!(host.open(&nested), Err(ControlError::Nested));
        let short_rfi = Message {
            kind: kind::INVALIDATE_REFS,
            payload: vec![0; 8],
        };
        assert_eq!(
            ClientMessage::parse(&short_rfi),
            Err(ControlError::Truncated)
        );
        let rfi = Message {
            kind: kind::INVALIDATE_REFS,
            payload: [7u64.to_le_bytes(), 9u64.to_le_bytes(), 0u64.to_le_bytes()].concat(),
        };
        assert_eq!(
            ClientMessage::parse(&rfi).unwrap(),
            ClientMessage::InvalidateRefs { first: 7, last: 9 }
        );
        for seed in 0..2000u32 {
            let junk: Vec<u8> = (0..(seed % 64))
                .map(|i| (seed.wrapping_mul(31) ^ i) as u8)
                .collect();
            let _ = host.open(&junk);
        }
    }
}
