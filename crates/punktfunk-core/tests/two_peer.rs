//! Deterministic two-peer tests: a real `SendSession` and `RecvSession` in one process, a seeded
//! impairment model between them, virtual time. Each test computes from what the network
//! actually delivered which frames must come out, and asserts exactly those do.

// Outside the core: tests and benchmarks take a real time origin.
#![allow(clippy::disallowed_methods)]

use punktfunk_core::crypto::{packet_key, CipherSuite, PacketKey};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{FrameMeta, PacketBatch, PacketizerConfig};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::{RecvSession, SendSession};
use punktfunk_core::wire::Header;
use punktfunk_net::impair::{GilbertElliott, ImpairConfig, Impairment};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const FPS: u32 = 60;

fn key() -> Box<dyn PacketKey> {
    packet_key(CipherSuite::AES_256_GCM, &[0x5C; 32], [0x3A; 12]).unwrap()
}

fn frame_bytes(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|b| (b as u32 ^ i.wrapping_mul(2_654_435_761)) as u8)
        .collect()
}

/// What came out of one run.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Frames delivered, with how many data shards FEC rebuilt.
    delivered: Vec<(u32, usize)>,
    /// Frames reported lost.
    lost: Vec<u32>,
    /// Per frame: (data shards, distinct shards that reached the receiver, distinct data shards).
    arrived: BTreeMap<u32, (usize, BTreeSet<u16>)>,
}

/// Receiver side of a run: feeds datagrams due up to `until` in arrival order, running the
/// receiver's timers in between, and records everything.
struct Sink {
    rx: RecvSession,
    delivered: Vec<(u32, usize, Vec<u8>)>,
    lost: Vec<u32>,
    arrived: BTreeMap<u32, (usize, BTreeSet<u16>)>,
}

impl Sink {
    fn run_until(&mut self, net: &mut Impairment, until: Instant) {
        loop {
            let next_pkt = net.next_deadline().filter(|t| *t <= until);
            let next_timer = self.rx.poll_timeout().filter(|t| *t <= until);
            match (next_pkt, next_timer) {
                (Some(p), Some(t)) if t < p => self.rx.handle_timeout(t),
                (Some(p), _) => {
                    let mut d = net.poll(p).expect("a packet is due");
                    let h = Header::decode(&d).expect("the network does not alter packets");
                    let e = self
                        .arrived
                        .entry(h.frame)
                        .or_insert((h.data as usize, BTreeSet::new()));
                    e.1.insert(h.shard);
                    let _ = self.rx.handle_datagram(p, &mut d);
                }
                (None, Some(t)) => self.rx.handle_timeout(t),
                (None, None) => break,
            }
            while let Some(ev) = self.rx.poll_event() {
                match ev {
                    Event::Frame(f) => self.delivered.push((f.index, f.recovered, f.data)),
                    Event::Lost { first, count } => self.lost.extend((0..count).map(|k| first + k)),
                }
            }
        }
    }
}

fn run(frames: u32, len: impl Fn(u32) -> usize, fec: FecPolicy, net: ImpairConfig) -> Outcome {
    let cfg = PacketizerConfig {
        fec,
        ..Default::default()
    };
    let mut tx = SendSession::new(cfg, key());
    let mut net = Impairment::new(net);
    let mut sink = Sink {
        rx: RecvSession::new(ReassemblyLimits::default(), key()),
        delivered: vec![],
        lost: vec![],
        arrived: BTreeMap::new(),
    };
    let mut batch = PacketBatch::new();
    let t0 = Instant::now();
    let interval = Duration::from_secs(1) / FPS;
    let mut originals = BTreeMap::new();
    for i in 0..frames {
        let now = t0 + interval * i;
        let f = frame_bytes(i, len(i));
        let meta = FrameMeta {
            timestamp_us: (interval * i).as_micros() as u64,
            keyframe: i % 60 == 0,
        };
        tx.send_frame(&f, meta, &mut batch).unwrap();
        originals.insert(i, f);
        // Datagrams leave 10 µs apart (what a paced sender does).
        for (k, d) in batch.iter().enumerate() {
            net.push(now + Duration::from_micros(10 * k as u64), d.to_vec());
        }
        sink.run_until(&mut net, now + interval);
    }
    sink.run_until(&mut net, t0 + interval * frames + Duration::from_secs(1));

    let mut delivered = Vec::new();
    for (index, recovered, data) in sink.delivered {
        assert_eq!(data, originals[&index], "frame {index} came out altered");
        delivered.push((index, recovered));
    }
    Outcome {
        delivered,
        lost: sink.lost,
        arrived: sink.arrived,
    }
}

/// Frames that must come out given what arrived: any with at least `data` distinct shards.
/// Returns (delivered with the data shards FEC must rebuild, lost).
fn expected(
    frames: u32,
    arrived: &BTreeMap<u32, (usize, BTreeSet<u16>)>,
) -> (Vec<(u32, usize)>, Vec<u32>) {
    let mut delivered = vec![];
    let mut lost = vec![];
    let first = arrived.keys().next().copied().unwrap_or(0);
    let last = arrived.keys().last().copied().unwrap_or(0);
    for i in first..frames {
        match arrived.get(&i) {
            Some((data, shards)) if shards.len() >= *data => {
                let data_arrived = shards.iter().filter(|s| (**s as usize) < *data).count();
                delivered.push((i, data - data_arrived));
            }
            _ if i <= last => lost.push(i),
            // Frames after the last one anything arrived for are never heard of.
            _ => {}
        }
    }
    (delivered, lost)
}

#[test]
fn random_loss_with_fec_delivers_exactly_the_recoverable_frames() {
    let net = ImpairConfig {
        loss: 0.10,
        duplicate: 0.01,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(2),
        seed: 42,
        ..ImpairConfig::default()
    };
    let fec = FecPolicy {
        percent: 20,
        min_parity: 2,
        max_parity: 1024,
    };
    let out = run(
        300,
        |i| if i % 60 == 0 { 150_000 } else { 42_000 },
        fec,
        net.clone(),
    );
    let (delivered, lost) = expected(300, &out.arrived);
    assert_eq!(out.delivered, delivered);
    assert_eq!(out.lost, lost);
    let recovered = out.delivered.iter().filter(|(_, r)| *r > 0).count();
    assert!(
        recovered > 200,
        "10 % loss needs FEC on most frames: {recovered}"
    );
    assert!(
        out.lost.len() < 30,
        "20 % FEC covers most of 10 % random loss: {} lost",
        out.lost.len()
    );
    // Same seed, same outcome.
    let again = run(
        300,
        |i| if i % 60 == 0 { 150_000 } else { 42_000 },
        fec,
        net,
    );
    assert_eq!(again, out);
}

#[test]
fn burst_loss_that_defeats_fec_is_reported_frame_by_frame() {
    let net = ImpairConfig {
        burst: Some(GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.1,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }),
        delay: Duration::from_millis(20),
        seed: 7,
        ..ImpairConfig::default()
    };
    let fec = FecPolicy {
        percent: 20,
        min_parity: 2,
        max_parity: 1024,
    };
    let out = run(240, |_| 42_000, fec, net);
    let (delivered, lost) = expected(240, &out.arrived);
    assert_eq!(out.delivered, delivered);
    assert_eq!(out.lost, lost);
    assert!(
        !out.lost.is_empty(),
        "10-packet bursts must defeat 6 parity shards sometimes"
    );
}

#[test]
fn no_impairment_delivers_every_frame_whole() {
    let fec = FecPolicy::default();
    let out = run(
        120,
        |i| 1 + (i as usize * 7919) % 300_000,
        fec,
        ImpairConfig::default(),
    );
    assert_eq!(out.delivered, (0..120).map(|i| (i, 0)).collect::<Vec<_>>());
    assert!(out.lost.is_empty());
}

#[test]
fn heavy_reordering_never_yields_a_wrong_frame_and_is_deterministic() {
    let net = ImpairConfig {
        loss: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(30),
        duplicate: 0.02,
        jitter: Duration::from_millis(8),
        seed: 1234,
        ..ImpairConfig::default()
    };
    let fec = FecPolicy {
        percent: 25,
        min_parity: 2,
        max_parity: 1024,
    };
    let out = run(200, |_| 30_000, fec, net.clone());
    // Frames are checked byte for byte inside `run`; here: order, no repeats, and nothing
    // delivered that could not have been rebuilt.
    let (recoverable, _) = expected(200, &out.arrived);
    let recoverable: BTreeSet<u32> = recoverable.into_iter().map(|(i, _)| i).collect();
    let mut last = None;
    for (i, _) in &out.delivered {
        assert!(last.is_none_or(|l| *i > l));
        assert!(recoverable.contains(i));
        last = Some(*i);
    }
    assert!(
        out.delivered.len() > 150,
        "most frames survive: {}",
        out.delivered.len()
    );
    assert_eq!(run(200, |_| 30_000, fec, net), out);
}
