//! GameStream send path per frame at 1080p60, 20 Mbit/s: SEI strip + packetize + FEC + AES-GCM +
//! send, on real x264 frames of the test pattern, paced at 60 fps, to a receiver that drains
//! its socket without GRO (like Moonlight).
//!
//! Prints p50/p99 of the send thread's CPU time and wall time per frame, beside a baseline
//! measured in the same run: the same frames copied into datagrams and sent with neither FEC
//! nor encryption (the floor any packetizer pays), and the punktfunk/1 send path on the same
//! frames. Target: p99 < 0.2 ms.
//!
//! Two receivers, each with all three paths:
//! - **loopback**: the sending thread also runs the receiver's network stack (the kernel
//!   delivers loopback datagrams in the sender's softirq), so its figures include work a real
//!   host never does for a client on another machine;
//! - **veth**: the receiver sits in a network namespace behind a veth pair whose far end runs
//!   threaded NAPI — like a NIC, the sender's work ends when the device takes the datagrams,
//!   and the receiving stack runs on another thread. Needs root, `ip` and `ethtool`
//!   (`scripts/install-deps.sh`); without them the rows are skipped with the reason.
//!
//! The stream is shaped like the host's: one IDR, then P-frames (the encoder runs an infinite
//! GOP; further IDRs come only when a client asks).
//!
//! `cargo bench -p punktfunk-host --bench gamestream_send` (`-- --frames N` to change the count;
//! `-- --spin` paces by spinning instead of sleeping, which keeps the CPU awake between frames
//! and so separates the cost of the work from the cost of a CPU waking from idle;
//! `-- --with-encoder` runs an x264 encoder at 1080p60 beside the sender throughout, as in a
//! live session, where the encoder keeps the cores busy).

use punktfunk_core::control::Codec;
use punktfunk_core::crypto::{packet_key, CipherSuite};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_host::pipeline::thread_cpu_us;
use punktfunk_media::{
    open_encoder, BgraFrame, Converter, Encoder, EncoderConfig, TestPattern, YuvFrame,
};
use punktfunk_net::UdpSocket;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const PACKET_SIZE: usize = 1392; // what Moonlight announces on a LAN (1024 when "remote")

/// A network namespace holding the far end of a veth pair (removed on drop).
struct VethNamespace {
    name: String,
}

/// Addresses of the veth pair's ends: the sender's (near) and the receiver's (far).
const VETH_NEAR: &str = "10.213.7.1";
const VETH_FAR: &str = "10.213.7.2";

fn run_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl VethNamespace {
    fn create() -> Result<VethNamespace, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root".into());
        }
        let pid = std::process::id();
        let ns = VethNamespace {
            name: format!("pfbench{pid}"),
        };
        let (a, b) = (format!("pfb{pid}a"), format!("pfb{pid}b"));
        let n = ns.name.as_str();
        run_cmd(&["ip", "netns", "add", n])?;
        // From here on, dropping `ns` removes the namespace and with it both veth ends.
        run_cmd(&[
            "ip", "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", n,
        ])?;
        run_cmd(&["ip", "addr", "add", &format!("{VETH_NEAR}/30"), "dev", &a])?;
        run_cmd(&["ip", "link", "set", &a, "up"])?;
        run_cmd(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{VETH_FAR}/30"),
            "dev",
            &b,
        ])?;
        run_cmd(&["ip", "-n", n, "link", "set", &b, "up"])?;
        // GRO (and accepting the sender's UDP GSO packets for it) puts the far end on NAPI;
        // threaded NAPI moves its receive processing off the sending CPU's softirq.
        run_cmd(&[
            "ip",
            "netns",
            "exec",
            n,
            "ethtool",
            "-K",
            &b,
            "gro",
            "on",
            "rx-udp-gro-forwarding",
            "on",
        ])?;
        run_cmd(&[
            "ip",
            "netns",
            "exec",
            n,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{b}/threaded"),
        ])?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace.
    fn enter(name: &str) {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/run/netns/{name}")).expect("namespace file");
        // SAFETY: a valid namespace descriptor; setns affects only the calling thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        let _ = run_cmd(&["ip", "netns", "del", &self.name]);
    }
}

/// A thread draining datagrams sent to the returned address (inside `netns` if given) with a
/// plain socket: no GRO, one datagram per receive, like a stock client.
fn spawn_receiver(
    netns: Option<String>,
    bind: SocketAddr,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        if let Some(n) = &netns {
            VethNamespace::enter(n);
        }
        let sock = std::net::UdpSocket::bind(bind).expect("receiver socket");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        tx.send(sock.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let _ = sock.recv_from(&mut buf);
        }
    });
    (rx.recv().expect("receiver bound"), handle)
}

/// The host's H.264 encoder at 60 fps and 20 Mbit/s, one slice.
fn encoder(w: u32, h: u32) -> Box<dyn Encoder> {
    open_encoder(&EncoderConfig {
        codec: Codec::H264,
        width: w,
        height: h,
        fps: 60,
        bitrate_kbps: 20_000,
        prefer_hardware: false,
        slices: 1,
        colour: Default::default(),
    })
    .expect("x264")
}

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
    let spin = std::env::args().any(|a| a == "--spin");
    let with_encoder = std::env::args().any(|a| a == "--with-encoder");
    let (w, h) = (1920u32, 1080u32);
    eprintln!("encoding 120 test-pattern frames at {w}x{h}, 20 Mbit/s ...");
    let mut enc = encoder(w, h);
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

    #[derive(PartialEq)]
    enum Path {
        Baseline,
        Punktfunk1,
        GameStream,
    }
    let run = |name: &str, path: Path, tx: &UdpSocket, to: SocketAddr| {
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
            if spin {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
            } else if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let (c50, c99) = (pct(&mut cpu, 0.5), pct(&mut cpu, 0.99));
        let (p50, p99) = (pct(&mut prep, 0.5), pct(&mut prep, 0.99));
        let (w50, w99) = (pct(&mut wall, 0.5), pct(&mut wall, 0.99));
        println!(
            "{name:<52} cpu p50 {:>6.3} ms  p99 {:>6.3} ms   wall p50 {:>6.3} ms  p99 {:>6.3} ms   (before send: cpu p50 {:>6.3} ms  p99 {:>6.3} ms)",
            c50 as f64 / 1000.0,
            c99 as f64 / 1000.0,
            w50 as f64 / 1000.0,
            w99 as f64 / 1000.0,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    };
    println!(
        "GameStream send path, 1080p60 20 Mbit/s x264 frames (mean {mean} B), packet size {PACKET_SIZE}, {frames_arg} frames, paced by {}{}",
        if spin { "spinning" } else { "sleeping" },
        if with_encoder { ", an x264 encoder running alongside" } else { "" }
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
    // Optionally the host's other half: the encoder producing the next frames meanwhile.
    let encoder_stop = Arc::new(AtomicBool::new(false));
    let background = with_encoder.then(|| {
        let stop = encoder_stop.clone();
        std::thread::spawn(move || encode_alongside(w, h, &stop))
    });
    let veth = VethNamespace::create();
    let mut receivers = vec![("loopback", None, "127.0.0.1", "127.0.0.1")];
    match &veth {
        Ok(ns) => receivers.push(("veth", Some(ns.name.clone()), VETH_FAR, VETH_NEAR)),
        Err(e) => println!("veth rows skipped: {e}"),
    }
    for (label, netns, far, near) in receivers {
        let stop = Arc::new(AtomicBool::new(false));
        let (to, drain) = spawn_receiver(
            netns,
            SocketAddr::new(far.parse().unwrap(), 0),
            stop.clone(),
        );
        let tx = UdpSocket::bind(SocketAddr::new(near.parse().unwrap(), 0)).unwrap();
        println!(
            "receiver: {label} ({to}), sender send path {}",
            tx.send_path()
        );
        for (name, path) in [
            ("baseline: copy into datagrams + send", Path::Baseline),
            (
                "punktfunk/1: packetize + FEC + seal + send",
                Path::Punktfunk1,
            ),
            ("GameStream: packetize + FEC + AES + send", Path::GameStream),
        ] {
            run(&format!("{label}: {name}"), path, &tx, to);
        }
        stop.store(true, Ordering::Relaxed);
        let _ = drain.join();
    }
    drop(veth);
    encoder_stop.store(true, Ordering::Relaxed);
    if let Some(b) = background {
        let frames = b.join().expect("background encoder");
        println!("background encoder: {frames} frames encoded during the runs");
    }
}

/// Renders, converts and encodes test-pattern frames at 60 fps until `stop`, like the host's
/// encode thread during a session; returns the number of frames encoded.
fn encode_alongside(w: u32, h: u32, stop: &AtomicBool) -> u64 {
    let mut enc = encoder(w, h);
    let mut pattern = TestPattern::new(w, h);
    let mut conv = Converter::new(w, h).unwrap();
    let (mut bgra, mut yuv) = (BgraFrame::new(w, h), YuvFrame::default());
    let interval = std::time::Duration::from_micros(16_667);
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        pattern.render(n as u32, 0, &mut bgra);
        conv.convert(&bgra, &mut yuv).unwrap();
        let _ = enc.encode(&yuv, n as i64, n == 0).unwrap();
        n += 1;
        next += interval;
        match next.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            // Behind: drop the missed ticks, as the host delivers fewer frames then.
            None => next = Instant::now(),
        }
    }
    n
}
