//! Sending one frame's datagrams on loopback: one `send_to` per datagram (the baseline) against
//! `sendmmsg` and UDP GSO; and receiving them with `recvmmsg`, with and without GRO coalescing.
//! Throughput is in datagrams per second (criterion's elements).
//!
//! `cargo bench -p punktfunk-net --bench udp`

// Benchmarks run a receiver thread.
#![allow(clippy::disallowed_methods)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punktfunk_net::udp::{RecvBatch, SendPath, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A 42 KB frame (1080p60 at 20 Mbps) as 1400-byte datagrams.
const SEG: usize = 1400;
const DATAGRAMS: usize = 30;

/// A socket that drains everything sent to it on a background thread.
fn sink() -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let s = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        let mut b = RecvBatch::new(64, 65_536);
        while !st.load(Ordering::Relaxed) {
            let _ = s.recv_batch(&mut b);
        }
    });
    (addr, stop, h)
}

fn send(c: &mut Criterion) {
    let frame = vec![0xA5u8; SEG * DATAGRAMS];
    let mut g = c.benchmark_group("udp_send/42KB_frame");
    g.throughput(Throughput::Elements(DATAGRAMS as u64));
    g.measurement_time(Duration::from_secs(3));
    let (dest, stop, h) = sink();
    for (name, path) in [
        ("baseline/send_to", SendPath::SendTo),
        ("sendmmsg", SendPath::Sendmmsg),
        ("gso", SendPath::Gso),
    ] {
        let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.set_send_path(path);
        eprintln!("{name}: path in use {}", tx.send_path());
        g.bench_function(name, |b| {
            b.iter(|| tx.send_batch(dest, &frame, SEG).unwrap())
        });
    }
    g.finish();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

/// Receive path: the sender fills the socket with `DATAGRAMS` datagrams (GSO), the measured
/// loop receives them all.
fn recv(c: &mut Criterion) {
    let frame = vec![0x5Au8; SEG * DATAGRAMS];
    let mut g = c.benchmark_group("udp_recv/42KB_frame");
    g.throughput(Throughput::Elements(DATAGRAMS as u64));
    g.measurement_time(Duration::from_secs(3));
    for gro in [true, false] {
        let rx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        if !gro {
            // Turn GRO back off so every datagram is its own buffer.
            use std::os::fd::AsRawFd;
            let off: i32 = 0;
            // SAFETY: valid descriptor, option value and length.
            unsafe {
                libc::setsockopt(
                    rx.as_std().as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_GRO,
                    (&off as *const i32).cast(),
                    4,
                )
            };
        }
        rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dest = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new(64, 65_536);
        let name = if gro { "recvmmsg+gro" } else { "recvmmsg" };
        g.bench_function(name, |b| {
            b.iter(|| {
                tx.send_batch(dest, &frame, SEG).unwrap();
                let mut got = 0;
                while got < DATAGRAMS {
                    got += rx.recv_batch(&mut batch).unwrap();
                }
            })
        });
    }
    // Baseline for the receive side: the same send, then one recv_from per datagram.
    let rx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    tx.set_send_path(SendPath::SendTo);
    let dest = rx.local_addr().unwrap();
    let mut buf = vec![0u8; 65_536];
    g.bench_function("baseline/send_to+recv_from", |b| {
        b.iter(|| {
            tx.send_batch(dest, &frame, SEG).unwrap();
            let mut got = 0;
            while got < DATAGRAMS {
                let (n, _) = rx.recv_from(&mut buf).unwrap();
                got += n.div_ceil(SEG);
            }
        })
    });
    g.finish();
}

criterion_group!(udp, send, recv);
criterion_main!(udp);
