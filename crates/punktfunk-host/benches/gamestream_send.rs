//! GameStream send path per frame at 1080p60, 20 Mbit/s: SEI strip + packetize + FEC + AES-GCM +
//! send, on
//! real x264 frames of the test pattern, to a loopback receiver that drains the socket.
//!
//! Prints p50/p99 of the send thread's CPU time and wall time per frame, beside a baseline
//! measured in the same run: the same frames copied into datagrams and sent with neither FEC
//! nor encryption (the floor any packetizer pays), and the punktfunk/1 send path on the same
//! frames. Target: p99 < 0.2 ms.
//!
//! The stream is shaped like the host's: one IDR, then P-frames (the encoder runs an infinite
//! GOP; further IDRs come only when a client asks).
//!
//! `cargo bench -p punktfunk-host --bench gamestream_send` (`-- --frames N` to change the count).

use punktfunk_core::control::Codec;
use punktfunk_core::crypto::{packet_key, CipherSuite};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_host::pipeline::thread_cpu_us;
use punktfunk_media::{open_encoder, BgraFrame, Converter, EncoderConfig, TestPattern, YuvFrame};
use punktfunk_net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const PACKET_SIZE: usize = 1392; // what Moonlight announces on a LAN (1024 when "remote")

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let frames_arg = std::env::args()
        .skip_while(|a| a != "--frames")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800usize);
    let (w, h) = (1920u32, 1080u32);
    eprintln!("encoding 120 test-pattern frames at {w}x{h}, 20 Mbit/s ...");
    let mut enc = open_encoder(&EncoderConfig {
        codec: Codec::H264,
        width: w,
        height: h,
        fps: 60,
        bitrate_kbps: 20_000,
        prefer_hardware: false,
        slices: 1,
        colour: Default::default(),
    })
    .expect("x264");
    let mut pattern = TestPattern::new(w, h);
    let mut conv = Converter::new(w, h).unwrap();
    let mut bgra = BgraFrame {
        width: w,
        height: h,
        data: Vec::new(),
    };
    let mut yuv = YuvFrame {
        width: w,
        height: h,
        data: Vec::new(),
    };
    let mut encoded = Vec::new();
    for i in 0..120u32 {
        pattern.render(i, 0, &mut bgra);
        conv.convert(&bgra, &mut yuv).unwrap();
        if let Some(f) = enc.encode(&yuv, i64::from(i), i == 0).unwrap() {
            encoded.push(f);
        }
    }
    let mean = encoded.iter().map(|f| f.data.len()).sum::<usize>() / encoded.len();
    eprintln!("{} frames, mean {mean} bytes", encoded.len());

    let rx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let to = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = rx.recv_from(&mut buf);
            }
        })
    };
    let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();

    #[derive(PartialEq)]
    enum Path {
        Baseline,
        Punktfunk1,
        GameStream,
    }
    let run = |name: &str, path: Path| {
        let mut pk = VideoPacketizer::new(PACKET_SIZE as u32, 20, 2, Some(&[7u8; 16])).unwrap();
        let mut p1 = SendSession::new(
            PacketizerConfig {
                max_shard_len: PACKET_SIZE as u16,
                fec: FecPolicy {
                    percent: 20,
                    min_parity: 2,
                    max_parity: 64,
                },
                min_data_shards: STREAM_MIN_DATA_SHARDS,
                min_shard_len: STREAM_MIN_SHARD_LEN,
                ..PacketizerConfig::default()
            },
            packet_key(CipherSuite::AES_128_GCM, &[1; 16], [2; 12]).unwrap(),
        );
        let mut batch = PacketBatch::new();
        let mut out = Vec::new();
        let (mut cpu, mut wall, mut prep) = (Vec::new(), Vec::new(), Vec::new());
        let interval = std::time::Duration::from_micros(16_667);
        let mut next = Instant::now();
        for n in 0..frames_arg {
            // Like the host's encoder (infinite GOP): one IDR first, P-frames after.
            let f = if n == 0 {
                &encoded[0]
            } else {
                &encoded[1 + (n - 1) % (encoded.len() - 1)]
            };
            let t = Instant::now();
            let c = thread_cpu_us();
            let dlen = if path == Path::Punktfunk1 {
                p1.send_frame(
                    &f.data,
                    FrameMeta {
                        timestamp_us: n as u64,
                        keyframe: f.keyframe,
                    },
                    &mut batch,
                )
                .unwrap();
                batch.segment_size()
            } else if path == Path::GameStream {
                let info = FrameInfo {
                    index: n as u32 + 1,
                    kind: if f.keyframe {
                        frame_type::IDR
                    } else {
                        frame_type::P
                    },
                    rtp_timestamp: n as u32 * 1500,
                    host_latency: 0,
                };
                let (kept, at) = strip_leading_sei(false, &f.data);
                pk.packetize_parts(&[&kept, &f.data[at..]], info, &mut out)
                    .unwrap();
                pk.datagram_len()
            } else {
                // Baseline: the bytes copied into whole datagrams, nothing else.
                let d = PACKET_SIZE + 16;
                out.clear();
                for chunk in f.data.chunks(PACKET_SIZE - 16) {
                    let start = out.len();
                    out.resize(start + d, 0);
                    out[start + 32..start + 32 + chunk.len()].copy_from_slice(chunk);
                }
                d
            };
            prep.push(thread_cpu_us() - c);
            let bytes = if path == Path::Punktfunk1 {
                batch.as_bytes()
            } else {
                &out[..]
            };
            for burst in bytes.chunks(64 * dlen) {
                let _ = tx.send_batch(to, burst, dlen);
            }
            cpu.push(thread_cpu_us() - c);
            wall.push(t.elapsed().as_micros() as u64);
            next += interval;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let (c50, c99) = (pct(&mut cpu, 0.5), pct(&mut cpu, 0.99));
        let (p50, p99) = (pct(&mut prep, 0.5), pct(&mut prep, 0.99));
        let (w50, w99) = (pct(&mut wall, 0.5), pct(&mut wall, 0.99));
        println!(
            "{name:<44} cpu p50 {:>6.3} ms  p99 {:>6.3} ms   wall p50 {:>6.3} ms  p99 {:>6.3} ms   (before send: cpu p50 {:>6.3} ms  p99 {:>6.3} ms)",
            c50 as f64 / 1000.0,
            c99 as f64 / 1000.0,
            w50 as f64 / 1000.0,
            w99 as f64 / 1000.0,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    };
    println!(
        "GameStream send path, 1080p60 20 Mbit/s x264 frames (mean {mean} B), packet size {PACKET_SIZE}, {frames_arg} frames"
    );
    // The packetizer alone in a hot loop (no sends, caches warm): its cost without the socket.
    for (label, fec_pct, key) in [
        ("hot loop: packetize only (no FEC, plain)", 0u32, None),
        ("hot loop: packetize + FEC 20 %", 20, None),
        (
            "hot loop: packetize + FEC 20 % + AES-GCM",
            20,
            Some(&[7u8; 16]),
        ),
    ] {
        let mut pk = VideoPacketizer::new(PACKET_SIZE as u32, fec_pct, 2, key).unwrap();
        let mut out = Vec::new();
        let t = Instant::now();
        let n = 2000;
        for i in 0..n {
            let f = &encoded[1 + i % (encoded.len() - 1)];
            let info = FrameInfo {
                index: i as u32 + 1,
                kind: frame_type::P,
                rtp_timestamp: 0,
                host_latency: 0,
            };
            pk.packetize(&f.data, info, &mut out).unwrap();
        }
        println!(
            "{label:<44} mean {:>6.3} ms per P-frame",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    run("baseline: copy into datagrams + send", Path::Baseline);
    run(
        "punktfunk/1: packetize + FEC 20 % + seal + send",
        Path::Punktfunk1,
    );
    run(
        "GameStream: packetize + FEC 20 % + AES-GCM + send",
        Path::GameStream,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
}
