//! GameStream send path per frame at 1080p60, 20 Mbit/s: SEI strip + packetize + FEC + AES-GCM +
//! send, on x264 frames of the test pattern, to a receiver that drains its socket without GRO
//! (like Moonlight).
//!
//! By default the frames are sent as the host sends them: the thread that encodes a frame
//! (render, colour conversion, x264 at 1080p60 20 Mbit/s, paced at 60 fps) packetizes and sends
//! it right after encoding. Prints p50/p99 of that thread's CPU time and wall time for the send
//! step, beside a baseline measured in the same run: the same frames copied into datagrams and
//! sent with neither FEC nor encryption (the floor any packetizer pays), and the punktfunk/1
//! send path on the same frames. Target: p99 < 0.2 ms.
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
//! `-- --handover` sends from a second thread that receives each frame from the encoding thread
//! through a bounded queue and sleeps in between — the host's earlier design, kept to show why
//! it was left; `-- --handover --spin` makes that thread spin instead of sleeping, which
//! separates the cost of the work from the cost of a core waking from idle).

use punktfunk_core::control::Codec;
use punktfunk_core::crypto::{packet_key, CipherSuite};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_host::session::video::thread_cpu_us;
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

/// How frames reach the thread that sends them.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// The encoding thread sends each frame itself (the host).
    Inline,
    /// A second thread receives frames through a queue, sleeping (or spinning) in between.
    Handover { spin: bool },
}

/// What is sent.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Baseline,
    Punktfunk1,
    GameStream,
}

/// One encoded frame.
struct Frame {
    data: Vec<u8>,
    keyframe: bool,
}

/// The host's source and encoder: test pattern, colour conversion, x264.
struct LiveEncoder {
    enc: Box<dyn Encoder>,
    pattern: TestPattern,
    conv: Converter,
    bgra: BgraFrame,
    yuv: YuvFrame,
    n: u32,
}

impl LiveEncoder {
    fn new(w: u32, h: u32) -> LiveEncoder {
        LiveEncoder {
            enc: encoder(w, h),
            pattern: TestPattern::new(w, h),
            conv: Converter::new(w, h).unwrap(),
            bgra: BgraFrame::new(w, h),
            yuv: YuvFrame::default(),
            n: 0,
        }
    }

    fn next(&mut self) -> Option<Frame> {
        self.pattern.render(self.n, 0, &mut self.bgra);
        self.conv.convert(&self.bgra, &mut self.yuv).unwrap();
        let f = self
            .enc
            .encode(&self.yuv, i64::from(self.n), self.n == 0)
            .unwrap();
        self.n += 1;
        f.map(|f| Frame {
            data: f.data,
            keyframe: f.keyframe,
        })
    }
}

/// Per-frame figures of one run, µs.
#[derive(Default)]
struct Samples {
    cpu: Vec<u64>,
    wall: Vec<u64>,
    prep: Vec<u64>,
    bytes: usize,
}

/// The send step for one path: packetizer state and buffers.
struct Sender<'a> {
    path: Path,
    pk: VideoPacketizer,
    p1: SendSession,
    batch: PacketBatch,
    out: Vec<u8>,
    tx: &'a UdpSocket,
    to: SocketAddr,
    n: u32,
}

impl Sender<'_> {
    fn send(&mut self, f: &Frame, s: &mut Samples) {
        let t = Instant::now();
        let c = thread_cpu_us();
        let n = self.n;
        self.n += 1;
        let dlen = match self.path {
            Path::Punktfunk1 => {
                self.p1
                    .send_frame(
                        &f.data,
                        FrameMeta {
                            timestamp_us: u64::from(n),
                            keyframe: f.keyframe,
                        },
                        &mut self.batch,
                    )
                    .unwrap();
                self.batch.segment_size()
            }
            Path::GameStream => {
                let info = FrameInfo {
                    index: n + 1,
                    kind: if f.keyframe {
                        frame_type::IDR
                    } else {
                        frame_type::P
                    },
                    rtp_timestamp: n.wrapping_mul(1500),
                    host_latency: 0,
                };
                let (kept, at) = strip_leading_sei(false, &f.data);
                self.pk
                    .packetize_parts(&[&kept, &f.data[at..]], info, &mut self.out)
                    .unwrap();
                self.pk.datagram_len()
            }
            Path::Baseline => {
                // The bytes copied into whole datagrams, nothing else.
                let d = PACKET_SIZE + 16;
                self.out.clear();
                for chunk in f.data.chunks(PACKET_SIZE - 16) {
                    let start = self.out.len();
                    self.out.resize(start + d, 0);
                    self.out[start + 32..start + 32 + chunk.len()].copy_from_slice(chunk);
                }
                d
            }
        };
        s.prep.push(thread_cpu_us() - c);
        let bytes = if self.path == Path::Punktfunk1 {
            self.batch.as_bytes()
        } else {
            &self.out[..]
        };
        for burst in bytes.chunks(64 * dlen) {
            let _ = self.tx.send_batch(self.to, burst, dlen);
        }
        s.cpu.push(thread_cpu_us() - c);
        s.wall.push(t.elapsed().as_micros() as u64);
        s.bytes += f.data.len();
    }
}

/// Encodes `frames` frames at 60 fps and sends each as `delivery` says; returns the figures.
fn run(
    path: Path,
    delivery: Delivery,
    frames: usize,
    (w, h): (u32, u32),
    tx: &UdpSocket,
    to: SocketAddr,
) -> Samples {
    let mut sender = Sender {
        path,
        pk: VideoPacketizer::new(PACKET_SIZE as u32, 20, 2, Some(&[7u8; 16])).unwrap(),
        p1: SendSession::new(
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
        ),
        batch: PacketBatch::new(),
        out: Vec::new(),
        tx,
        to,
        n: 0,
    };
    let mut s = Samples::default();
    // The encoding side, paced at 60 fps like the host's encode loop; `each` gets every frame.
    let encode_paced = |each: &mut dyn FnMut(Frame) -> bool| {
        let mut live = LiveEncoder::new(w, h);
        let interval = std::time::Duration::from_micros(16_667);
        let mut next = Instant::now();
        let mut sent = 0;
        while sent < frames {
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            } else if Instant::now() - next > interval * 2 {
                next = Instant::now(); // behind: no catch-up burst, as in the host
            }
            next += interval;
            if let Some(f) = live.next() {
                sent += 1;
                if !each(f) {
                    return;
                }
            }
        }
    };
    match delivery {
        Delivery::Inline => encode_paced(&mut |f| {
            sender.send(&f, &mut s);
            true
        }),
        Delivery::Handover { spin } => {
            let (ftx, frx) = std::sync::mpsc::sync_channel::<Frame>(2);
            std::thread::scope(|scope| {
                scope.spawn(move || encode_paced(&mut |f| ftx.send(f).is_ok()));
                loop {
                    let f = if spin {
                        match frx.try_recv() {
                            Ok(f) => f,
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                std::hint::spin_loop();
                                continue;
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                        }
                    } else {
                        match frx.recv() {
                            Ok(f) => f,
                            Err(_) => break,
                        }
                    };
                    sender.send(&f, &mut s);
                }
            });
        }
    }
    s
}

fn main() {
    let frames_arg = std::env::args()
        .skip_while(|a| a != "--frames")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800usize);
    let delivery = if std::env::args().any(|a| a == "--handover") {
        Delivery::Handover {
            spin: std::env::args().any(|a| a == "--spin"),
        }
    } else {
        Delivery::Inline
    };
    let (w, h) = (1920u32, 1080u32);
    eprintln!("encoding 120 test-pattern frames at {w}x{h}, 20 Mbit/s for the hot loop ...");
    let mut live = LiveEncoder::new(w, h);
    let encoded: Vec<Frame> = (0..120).filter_map(|_| live.next()).collect();
    let mean = encoded.iter().map(|f| f.data.len()).sum::<usize>() / encoded.len();
    println!(
        "GameStream send path, 1080p60 20 Mbit/s x264 frames of the test pattern, packet size {PACKET_SIZE}, {frames_arg} frames per row, {}",
        match delivery {
            Delivery::Inline => "sent by the encoding thread right after encoding (as the host does)",
            Delivery::Handover { spin: false } =>
                "handed to a send thread that sleeps between frames",
            Delivery::Handover { spin: true } =>
                "handed to a send thread that spins between frames",
        }
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
            "{label:<44} mean {:>6.3} ms per P-frame (mean {mean} B)",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
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
            let mut s = run(path, delivery, frames_arg, (w, h), &tx, to);
            let ms = |v: &mut Vec<u64>, p| pct(v, p) as f64 / 1000.0;
            println!(
                "{:<52} cpu p50 {:>6.3} ms  p99 {:>6.3} ms   wall p50 {:>6.3} ms  p99 {:>6.3} ms   (before send: cpu p50 {:>6.3} ms  p99 {:>6.3} ms; mean frame {} B)",
                format!("{label}: {name}"),
                ms(&mut s.cpu, 0.5),
                ms(&mut s.cpu, 0.99),
                ms(&mut s.wall, 0.5),
                ms(&mut s.wall, 0.99),
                ms(&mut s.prep, 0.5),
                ms(&mut s.prep, 0.99),
                s.bytes / s.cpu.len().max(1),
            );
        }
        stop.store(true, Ordering::Relaxed);
        let _ = drain.join();
    }
    drop(veth);
}
