//! Send and receive sessions: packetizer + sealer on one side, opener + reassembler on the other.
//!
//! A [`SendSession`] turns frames into sealed datagram batches; a [`RecvSession`] takes datagrams
//! as they come off the socket, drops anything malformed, forged or replayed (counting why), and
//! yields frames in order. Both are sans-IO: the caller owns sockets and clocks.
//!
//! ```
//! use std::time::Instant;
//! use punktfunk_core::crypto::{packet_key, CipherSuite};
//! use punktfunk_core::packetizer::{FrameMeta, PacketBatch, PacketizerConfig};
//! use punktfunk_core::reassembler::{Event, ReassemblyLimits};
//! use punktfunk_core::session::{RecvSession, SendSession};
//!
//! let key = || packet_key(CipherSuite::AES_128_GCM, &[7; 16], [1; 12]).unwrap();
//! let mut tx = SendSession::new(PacketizerConfig::default(), key());
//! let mut rx = RecvSession::new(ReassemblyLimits::default(), key());
//! let mut batch = PacketBatch::new();
//! tx.send_frame(b"an access unit", FrameMeta::default(), &mut batch).unwrap();
//! let now = Instant::now();
//! for d in batch.iter() {
//!     rx.handle_datagram(now, &mut d.to_vec());
//! }
//! let Some(Event::Frame(f)) = rx.poll_event() else { panic!() };
//! assert_eq!(f.data, b"an access unit");
//! ```

use crate::crypto::{OpenError, Opener, PacketKey, Sealer};
use crate::packetizer::{
    FrameMeta, FrameSent, PacketBatch, PacketizeError, Packetizer, PacketizerConfig,
};
use crate::reassembler::{Event, Reassembler, ReassemblyLimits, ReassemblyStats};
use crate::wire::{Header, HEADER_LEN};
use std::time::Instant;

/// Sending side of one stream.
pub struct SendSession {
    packetizer: Packetizer,
    sealer: Sealer,
}

impl SendSession {
    /// A session sealing with `key` from sequence 0.
    pub fn new(cfg: PacketizerConfig, key: Box<dyn PacketKey>) -> Self {
        SendSession {
            packetizer: Packetizer::new(cfg),
            sealer: Sealer::new(key),
        }
    }

    /// Replaces the sealer (a custom sequence limit, or a rekey).
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// Packetizes, protects and seals one frame into `out`.
    pub fn send_frame(
        &mut self,
        frame: &[u8],
        meta: FrameMeta,
        out: &mut PacketBatch,
    ) -> Result<FrameSent, PacketizeError> {
        self.packetizer
            .packetize(frame, meta, &mut self.sealer, out)
    }

    /// Index the next frame will get.
    pub fn next_frame(&self) -> u32 {
        self.packetizer.next_frame()
    }

    /// Sequence number of the next datagram.
    pub fn next_seq(&self) -> u64 {
        self.sealer.next_seq()
    }
}

/// Why a datagram was dropped before reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Header unparsable (truncated, wrong version, unknown FEC code, inconsistent geometry).
    Malformed,
    /// Datagram length does not match header + shard + tag.
    WrongSize,
    /// Failed authentication.
    Forged,
    /// Sequence number already seen or too old.
    Replayed,
}

/// Counters of the receive side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Datagrams that passed authentication.
    pub authentic: u64,
    /// Dropped: unparsable header.
    pub malformed: u64,
    /// Dropped: size mismatch.
    pub wrong_size: u64,
    /// Dropped: failed authentication.
    pub forged: u64,
    /// Dropped: replayed.
    pub replayed: u64,
    /// Reassembly counters.
    pub reassembly: ReassemblyStats,
}

/// Receiving side of one stream.
pub struct RecvSession {
    opener: Opener,
    reassembler: Reassembler,
    stats: RecvStats,
}

impl RecvSession {
    /// A session opening with `key`.
    pub fn new(limits: ReassemblyLimits, key: Box<dyn PacketKey>) -> Self {
        RecvSession {
            opener: Opener::new(key),
            reassembler: Reassembler::new(limits),
            stats: RecvStats::default(),
        }
    }

    /// Handles one datagram (decrypted in place). Returns why it was dropped, if it was; the
    /// reason is also counted in [`RecvSession::stats`].
    pub fn handle_datagram(&mut self, now: Instant, datagram: &mut [u8]) -> Result<(), Drop> {
        self.stats.datagrams += 1;
        let header = match Header::decode(datagram) {
            Ok(h) => h,
            Err(_) => {
                self.stats.malformed += 1;
                return Err(Drop::Malformed);
            }
        };
        let shard_len = header.shard_len as usize;
        if datagram.len() != HEADER_LEN + shard_len + self.opener.tag_len() {
            self.stats.wrong_size += 1;
            return Err(Drop::WrongSize);
        }
        let (hdr, body) = datagram.split_at_mut(HEADER_LEN);
        match self.opener.open(header.seq, hdr, body) {
            Ok(_) => {}
            Err(OpenError::Forged) => {
                self.stats.forged += 1;
                return Err(Drop::Forged);
            }
            Err(OpenError::Replayed) => {
                self.stats.replayed += 1;
                return Err(Drop::Replayed);
            }
        }
        self.stats.authentic += 1;
        self.reassembler
            .handle_shard(now, &header, &body[..shard_len]);
        Ok(())
    }

    /// Next frame or loss report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.reassembler.poll_event()
    }

    /// When to call [`RecvSession::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reassembler.poll_timeout()
    }

    /// Lets time pass.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reassembler.handle_timeout(now)
    }

    /// Returns a frame buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.reassembler.recycle(buf)
    }

    /// Bytes of frame buffers the receiver holds (see [`Reassembler::held_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.reassembler.held_bytes()
    }

    /// Counters so far.
    pub fn stats(&self) -> RecvStats {
        RecvStats {
            reassembly: self.reassembler.stats(),
            ..self.stats
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests {
    use super::*;
    use crate::crypto::{packet_key, CipherSuite};

    fn key(k: u8) -> Box<dyn PacketKey> {
        packet_key(CipherSuite::AES_256_GCM, &[k; 32], [3; 12]).unwrap()
    }

    #[test]
    fn drops_are_classified_and_counted() {
        let now = Instant::now();
        let mut tx = SendSession::new(PacketizerConfig::default(), key(1));
        let mut rx = RecvSession::new(ReassemblyLimits::default(), key(1));
        let mut wrong = RecvSession::new(ReassemblyLimits::default(), key(2));
        let mut batch = PacketBatch::new();
        tx.send_frame(&[5; 3000], FrameMeta::default(), &mut batch)
            .unwrap();
        let d0 = batch.datagram(0).to_vec();

        assert_eq!(
            wrong.handle_datagram(now, &mut d0.clone()),
            Err(Drop::Forged)
        );
        assert_eq!(
            rx.handle_datagram(now, &mut d0[..20].to_vec()),
            Err(Drop::Malformed)
        );
        assert_eq!(
            rx.handle_datagram(now, &mut d0[..d0.len() - 1].to_vec()),
            Err(Drop::WrongSize)
        );
        let mut flipped = d0.clone();
        flipped[HEADER_LEN + 5] ^= 0x40;
        assert_eq!(rx.handle_datagram(now, &mut flipped), Err(Drop::Forged));
        let mut hdr_flip = d0.clone();
        hdr_flip[2] ^= 0x01; // keyframe flag: still a valid header, but authenticated
        assert_eq!(rx.handle_datagram(now, &mut hdr_flip), Err(Drop::Forged));
        assert_eq!(rx.handle_datagram(now, &mut d0.clone()), Ok(()));
        assert_eq!(
            rx.handle_datagram(now, &mut d0.clone()),
            Err(Drop::Replayed)
        );
        let s = rx.stats();
        assert_eq!(
            (
                s.datagrams,
                s.malformed,
                s.wrong_size,
                s.forged,
                s.replayed,
                s.authentic
            ),
            (6, 1, 1, 2, 1, 1)
        );
    }
}
