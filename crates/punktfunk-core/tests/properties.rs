//! Property tests of the data plane as a whole: sealed packets resist tampering, hostile input
//! never panics or over-allocates, reordering/duplication never yields a wrong frame, and any loss
//! within the parity budget is recovered exactly (GF(2^8) and GF(2^16) blocks).

// Outside the core: tests and benchmarks take a real time origin.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;
use punktfunk_core::crypto::{dangerous_no_protection, packet_key, CipherSuite, PacketKey};
use punktfunk_core::fec::{FecCode, FecPolicy};
use punktfunk_core::packetizer::{FrameMeta, PacketBatch, PacketizerConfig};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::{RecvSession, SendSession};
use punktfunk_core::wire::HEADER_LEN;
use std::time::Instant;

fn key() -> Box<dyn PacketKey> {
    packet_key(CipherSuite::AES_128_GCM, &[0x42; 16], [9; 12]).unwrap()
}

fn frame_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `frames` and returns every datagram (per frame, in send order).
fn send_all(cfg: PacketizerConfig, frames: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut tx = SendSession::new(cfg, key());
    let mut batch = PacketBatch::new();
    frames
        .iter()
        .map(|f| {
            tx.send_frame(f, FrameMeta::default(), &mut batch).unwrap();
            batch.iter().map(<[u8]>::to_vec).collect()
        })
        .collect()
}

fn frames_out(rx: &mut RecvSession) -> Vec<Event> {
    std::iter::from_fn(|| rx.poll_event()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any single changed byte anywhere in a sealed datagram gets it rejected.
    #[test]
    fn any_tampered_byte_is_rejected(len in 1usize..5000, pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let dgrams = send_all(PacketizerConfig::default(), &[frame_bytes(len, 1)]);
        let mut d = dgrams[0][0].clone();
        let at = pos.index(d.len());
        d[at] ^= mask;
        let mut rx = RecvSession::new(ReassemblyLimits::default(), key());
        prop_assert!(rx.handle_datagram(Instant::now(), &mut d).is_err());
        prop_assert_eq!(rx.stats().authentic, 0);
        prop_assert!(rx.poll_event().is_none());
    }

    /// Arbitrary bytes never panic and never make the receiver hold more than its limits allow,
    /// even with no crypto in the way (the reassembler sees every parsable header).
    #[test]
    fn hostile_datagrams_never_over_allocate(
        dgrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..64),
        headers in prop::collection::vec((any::<u32>(), 1u32..100_000, 0u16..400, 1u16..300, 0u16..100, 1u16..=4096, 0u8..3), 0..64),
    ) {
        let limits = ReassemblyLimits {
            max_frame_bytes: 64 * 1024,
            max_shard_len: 1500,
            max_frames_in_flight: 4,
            ..ReassemblyLimits::default()
        };
        let bound = 2 * limits.max_frames_in_flight * 2 * limits.max_frame_bytes + 4096 * 8;
        let mut rx = RecvSession::new(limits, dangerous_no_protection());
        let now = Instant::now();
        for mut d in dgrams {
            let _ = rx.handle_datagram(now, &mut d);
        }
        // Headers that parse, with random geometry, and a body of the right size.
        for (frame, frame_len, shard, data, parity, shard_len, fec) in headers {
            let mut d = vec![0u8; HEADER_LEN + shard_len as usize];
            d[0] = 1;
            d[3] = fec;
            d[12..16].copy_from_slice(&frame.to_le_bytes());
            d[16..20].copy_from_slice(&frame_len.to_le_bytes());
            d[28..30].copy_from_slice(&shard.to_le_bytes());
            d[30..32].copy_from_slice(&data.to_le_bytes());
            d[32..34].copy_from_slice(&parity.to_le_bytes());
            d[34..36].copy_from_slice(&shard_len.to_le_bytes());
            let _ = rx.handle_datagram(now, &mut d);
            while let Some(e) = rx.poll_event() {
                if let Event::Frame(f) = e {
                    rx.recycle(f.data);
                }
            }
            prop_assert!(rx.held_bytes() <= bound, "{} > {}", rx.held_bytes(), bound);
        }
        rx.handle_timeout(now + std::time::Duration::from_secs(1));
        while rx.poll_event().is_some() {}
        let s = rx.stats();
        prop_assert_eq!(s.datagrams, s.malformed + s.wrong_size + s.forged + s.replayed + s.authentic);
        prop_assert!(s.reassembly.shards_accepted + s.reassembly.shards_rejected + s.reassembly.shards_late
            + s.reassembly.shards_duplicate + s.reassembly.shards_redundant == s.authentic);
    }

    /// Shuffled and duplicated datagrams never produce a wrong or repeated frame; frames come
    /// out in increasing order and, with nothing lost, all of them come out.
    #[test]
    fn reorder_and_duplication_never_yield_a_wrong_frame(
        lens in prop::collection::vec(1usize..20_000, 1..6),
        swaps in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..40),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let frames: Vec<_> = lens.iter().enumerate().map(|(i, &l)| frame_bytes(l, i as u8)).collect();
        let mut all: Vec<Vec<u8>> = send_all(PacketizerConfig::default(), &frames).into_iter().flatten().collect();
        for d in &dups {
            let x = all[d.index(all.len())].clone();
            all.push(x);
        }
        let n = all.len();
        for (a, b) in &swaps {
            all.swap(a.index(n), b.index(n));
        }
        let limits = ReassemblyLimits { max_frames_in_flight: 16, reorder_frames: 16, ..Default::default() };
        let mut rx = RecvSession::new(limits, key());
        let now = Instant::now();
        let mut delivered = Vec::new();
        for mut d in all {
            let _ = rx.handle_datagram(now, &mut d);
            delivered.extend(frames_out(&mut rx));
        }
        rx.handle_timeout(now + std::time::Duration::from_secs(1));
        delivered.extend(frames_out(&mut rx));
        let mut last = None;
        for e in &delivered {
            if let Event::Frame(f) = e {
                prop_assert_eq!(&f.data, &frames[f.index as usize]);
                prop_assert!(last.is_none_or(|l| f.index > l));
                last = Some(f.index);
            }
        }
        // The first datagram to arrive fixes the starting frame; frames before it are late.
        let first = delivered.first().map(|e| match e {
            Event::Frame(f) => f.index,
            Event::Lost { first, .. } => *first,
        });
        if let Some(first) = first {
            let got = delivered.iter().filter(|e| matches!(e, Event::Frame(_))).count();
            prop_assert_eq!(got, frames.len() - first as usize, "{:?}", delivered);
        }
    }

    /// Any loss of at most `parity` shards per frame is recovered byte-exact, for GF(2^8) blocks
    /// and for GF(2^16) blocks (more than 255 shards).
    #[test]
    fn loss_within_parity_is_recovered(
        len in 1usize..60_000,
        small_shards in any::<bool>(),
        percent in 10u16..60,
        drops in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
    ) {
        let cfg = PacketizerConfig {
            max_shard_len: if small_shards { 64 } else { 1400 },
            fec: FecPolicy { percent, min_parity: 1, max_parity: 4096 },
            ..Default::default()
        };
        let frame = frame_bytes(len, 7);
        let mut dgrams = send_all(cfg, std::slice::from_ref(&frame)).remove(0);
        let header = punktfunk_core::wire::Header::decode(&dgrams[0]).unwrap();
        prop_assert_eq!(header.fec, if header.total_shards() > 255 { FecCode::GF16 } else { FecCode::GF8_CAUCHY });
        let parity = header.parity as usize;
        for d in drops.into_iter().take(parity) {
            let i = d.index(dgrams.len());
            dgrams.remove(i);
        }
        let mut rx = RecvSession::new(ReassemblyLimits::default(), key());
        let now = Instant::now();
        for mut d in dgrams {
            rx.handle_datagram(now, &mut d).unwrap();
        }
        let ev = frames_out(&mut rx);
        prop_assert_eq!(ev.len(), 1);
        let Event::Frame(f) = &ev[0] else { panic!("{:?}", ev) };
        prop_assert_eq!(&f.data, &frame);
    }
}
