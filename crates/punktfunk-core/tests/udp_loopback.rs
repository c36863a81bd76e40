//! Real UDP on loopback through the impairment proxy: a sender thread packetizes, protects and
//! seals frames and sends them with the batched UDP driver; the proxy loses 10% of datagrams
//! (seeded); a receiver thread authenticates, reassembles and recovers them. Every frame must
//! come out exactly once as delivered (byte-exact) or reported lost, and none corrupted.

// Outside the core: tests take real time and run threads.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use punktfunk_core::crypto::{packet_key, CipherSuite};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{FrameMeta, PacketBatch, PacketizerConfig};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::{RecvSession, SendSession};
use punktfunk_net::{ImpairConfig, ImpairProxy, RecvBatch, UdpSocket};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const FRAMES: u32 = 300;

fn frame(i: u32) -> Vec<u8> {
    // Sizes from one datagram to ~60 KB, content unique per frame.
    let len = if i == 0 {
        40_000
    } else {
        1 + (i as usize * 7919) % 60_000
    };
    (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i * 17) as u8)
        .collect()
}

fn key() -> Box<dyn punktfunk_core::crypto::PacketKey> {
    packet_key(CipherSuite::AES_128_GCM, &[0x42; 16], [0x24; 12]).unwrap()
}

#[test]
fn ten_percent_loss_with_twenty_percent_fec_over_real_udp() {
    let rx_sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    rx_sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let forward: ImpairConfig = "loss=10%,seed=2024".parse().unwrap();
    let proxy = ImpairProxy::spawn(
        "127.0.0.1:0".parse().unwrap(),
        rx_sock.local_addr().unwrap(),
        forward,
        ImpairConfig::default(),
    )
    .unwrap();
    let dest = proxy.local_addr();

    let receiver = std::thread::spawn(move || {
        let mut rx = RecvSession::new(ReassemblyLimits::default(), key());
        let mut batch = RecvBatch::new(64, 65_536);
        let mut delivered = BTreeMap::new();
        let mut lost = Vec::new();
        let mut recovered = 0;
        let mut idle_since = Instant::now();
        loop {
            match rx_sock.recv_batch(&mut batch) {
                Ok(_) => {
                    idle_since = Instant::now();
                    let now = Instant::now();
                    for (_, d) in batch.iter_mut() {
                        let _ = rx.handle_datagram(now, d);
                    }
                }
                Err(_) if idle_since.elapsed() > Duration::from_millis(500) => break,
                Err(_) => {}
            }
            rx.handle_timeout(Instant::now());
            while let Some(ev) = rx.poll_event() {
                match ev {
                    Event::Frame(f) => {
                        recovered += usize::from(f.recovered > 0);
                        assert!(
                            delivered.insert(f.index, f.data).is_none(),
                            "frame {} twice",
                            f.index
                        );
                    }
                    Event::Lost { first, count } => lost.extend(first..first + count),
                }
            }
        }
        // Give up whatever is still incomplete.
        rx.handle_timeout(Instant::now() + Duration::from_secs(1));
        while let Some(ev) = rx.poll_event() {
            match ev {
                Event::Frame(f) => {
                    delivered.insert(f.index, f.data);
                }
                Event::Lost { first, count } => lost.extend(first..first + count),
            }
        }
        (delivered, lost, recovered, rx.stats())
    });

    let tx_sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = PacketizerConfig {
        fec: FecPolicy {
            percent: 20,
            min_parity: 2,
            max_parity: 1024,
        },
        ..Default::default()
    };
    let mut tx = SendSession::new(cfg, key());
    let mut out = PacketBatch::new();
    let start = Instant::now();
    for i in 0..FRAMES {
        let meta = FrameMeta {
            timestamp_us: start.elapsed().as_micros() as u64,
            keyframe: i == 0,
        };
        tx.send_frame(&frame(i), meta, &mut out).unwrap();
        let sent = tx_sock
            .send_batch(dest, out.as_bytes(), out.segment_size())
            .unwrap();
        assert_eq!(sent, out.len());
        // ~250 frames/s keeps the proxy's and sockets' queues short.
        std::thread::sleep(Duration::from_millis(4));
    }

    let (delivered, lost, recovered, stats) = receiver.join().unwrap();
    let proxy_stats = proxy.stats();
    eprintln!(
        "delivered {} (FEC-recovered {recovered}), lost {}, proxy dropped {} of {}, {stats:?}",
        delivered.len(),
        lost.len(),
        proxy_stats.forward.dropped_random,
        proxy_stats.forward.pushed
    );

    // The network really lost about 10%.
    let rate = proxy_stats.forward.dropped_random as f64 / proxy_stats.forward.pushed as f64;
    assert!((0.07..0.13).contains(&rate), "loss rate {rate}");
    // Every frame accounted for exactly once: delivered or lost, never both, none missing.
    for i in 0..FRAMES {
        let d = delivered.contains_key(&i);
        let l = lost.contains(&i);
        assert!(d ^ l, "frame {i}: delivered {d}, lost {l}");
    }
    // Nothing delivered is corrupted, and nothing forged or malformed arrived.
    for (i, data) in &delivered {
        assert!(*data == frame(*i), "frame {i} corrupted");
    }
    assert_eq!((stats.forged, stats.malformed, stats.wrong_size), (0, 0, 0));
    // FEC did real work and most frames survived.
    assert!(recovered > 50, "only {recovered} frames needed FEC");
    assert!(
        delivered.len() as u32 >= FRAMES * 8 / 10,
        "only {} delivered",
        delivered.len()
    );
}
