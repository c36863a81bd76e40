//! The whole send path (packetize + FEC + seal) and receive path (open + reassemble + FEC
//! recovery) for a 42 KB frame (1080p60 at 20 Mbit/s) and a 500 KB keyframe, beside memcpy of
//! the same frame bytes and the same paths with the no-protection key (protocol cost alone).
//!
//! Run: `cargo bench -p punktfunk-core --bench session`

// Outside the core: tests and benchmarks take a real time origin.
#![allow(clippy::disallowed_methods)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use punktfunk_core::crypto::{dangerous_no_protection, packet_key, CipherSuite, PacketKey};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{FrameMeta, PacketBatch, PacketizerConfig};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::{RecvSession, SendSession};
use std::hint::black_box;
use std::time::Instant;

fn cfg() -> PacketizerConfig {
    PacketizerConfig {
        fec: FecPolicy {
            percent: 25,
            min_parity: 2,
            max_parity: 1024,
        },
        ..Default::default()
    }
}

fn key(aes: bool) -> Box<dyn PacketKey> {
    if aes {
        packet_key(CipherSuite::AES_128_GCM, &[1; 16], [2; 12]).unwrap()
    } else {
        dangerous_no_protection()
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect()
}

fn send_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_path");
    for (name, len) in [("42KB", 42_000usize), ("500KB", 500_000)] {
        let f = frame(len);
        g.throughput(criterion::Throughput::Bytes(len as u64));
        let mut dst = vec![0u8; len];
        g.bench_function(format!("{name}/baseline_memcpy"), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&f)))
        });
        for aes in [true, false] {
            let mut tx = SendSession::new(cfg(), key(aes));
            let mut batch = PacketBatch::new();
            let label = if aes { "aes128gcm" } else { "no_protection" };
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    tx.send_frame(black_box(&f), FrameMeta::default(), &mut batch)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn recv_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("recv_path");
    for (name, len) in [("42KB", 42_000usize), ("500KB", 500_000)] {
        let f = frame(len);
        g.throughput(Throughput::Bytes(len as u64));
        let mut dst = vec![0u8; len];
        g.bench_function(format!("{name}/baseline_memcpy"), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&f)))
        });
        for aes in [true, false] {
            let mut tx = SendSession::new(cfg(), key(aes));
            let mut batch = PacketBatch::new();
            tx.send_frame(&f, FrameMeta::default(), &mut batch).unwrap();
            let all: Vec<Vec<u8>> = batch.iter().map(<[u8]>::to_vec).collect();
            for loss in [0usize, 10] {
                // Every 10th datagram lost for "10 %": includes data shards, so FEC must work.
                let kept: Vec<Vec<u8>> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| loss == 0 || i % 10 != 0)
                    .map(|(_, d)| d.clone())
                    .collect();
                let label = if aes { "aes128gcm" } else { "no_protection" };
                g.bench_function(format!("{name}/{label}/loss{loss}%"), |b| {
                    b.iter_batched(
                        || {
                            (
                                RecvSession::new(ReassemblyLimits::default(), key(aes)),
                                kept.clone(),
                            )
                        },
                        |(mut rx, mut dgrams)| {
                            let now = Instant::now();
                            for d in &mut dgrams {
                                let _ = rx.handle_datagram(now, d);
                            }
                            match rx.poll_event() {
                                Some(Event::Frame(fr)) => assert_eq!(fr.data.len(), len),
                                other => panic!("no frame: {other:?}"),
                            }
                            (rx, dgrams)
                        },
                        BatchSize::SmallInput,
                    )
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, send_path, recv_path);
criterion_main!(benches);
