//! Send path per frame at 1080p60, 20 Mbit/s, through the sinks the host ships: GameStream's
//! [`VideoSink`] (SEI strip, §7 packetization, FEC, AES-GCM, paced batched sends) and
//! punktfunk/1's [`DataPlaneSink`] (the core's packetizer, FEC and sealing, one batched send),
//! fed x264 frames of the test pattern, to a receiver that drains its socket without GRO (like
//! Moonlight).
//!
//! The GameStream sink runs with the plan the host resolves for a Moonlight ANNOUNCE of
//! 1920x1080 at 60 fps, 20 Mbit/s, packet size 1392, with the host's 20 % FEC and video
//! encryption on; the punktfunk/1 sink with the `Welcome` a handshake gives for the same mode
//! (shards of 1392 bytes, 20 % FEC, AES-128-GCM). Each sink measures itself, as it does in the
//! host (the `send_path_ms` and `send_path_cpu_ms` of a session's stats): CPU time of the sending
//! thread and wall time, packetizing through the last send. Printed as p50/p99 beside a baseline
//! from the same run: the same frames copied into datagrams and sent with neither FEC nor
//! encryption (the floor any packetizer pays). Target: p99 < 0.2 ms.
//!
//! By default the frames are sent as the host sends them: the thread that encodes a frame
//! (render, colour conversion, x264, paced at 60 fps) hands it to the sink right after encoding.
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
//! Before them, the GameStream sink in a hot loop into a socket stand-in that discards: its
//! cost without the kernel, with FEC and encryption switched off and on in the plan.
//!
//! The stream is shaped like the host's: one IDR, then P-frames (the encoder runs an infinite
//! GOP; further IDRs come only when a client asks).
//!
//! `cargo bench -p punktfunk-host --bench gamestream_send` (`-- --frames N` to change the count;
//! `-- --handover` gives each frame to a second thread that owns the sink, through a bounded
//! queue, and sleeps in between — the host's earlier design, kept to show why it was left;
//! `-- --handover --spin` makes that thread spin instead of sleeping, which separates the cost
//! of the work from the cost of a core waking from idle).

use punktfunk_core::control::{Codec, DirectionKey, Mode, Welcome, PROTOCOL_VERSION};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_core::fec::FecCode;
use punktfunk_gamestream::plan::{HostAbilities, SessionPlan};
use punktfunk_gamestream::rtsp::StreamConfig;
use punktfunk_host::aids::DatagramOut;
use punktfunk_host::proto::gamestream::stream::VideoSink;
use punktfunk_host::proto::punktfunk1::dataplane::Destination;
use punktfunk_host::proto::punktfunk1::DataPlaneSink;
use punktfunk_host::session::video::{thread_cpu_us, Encoded, FrameSink, SinkTimes, VideoError};
use punktfunk_host::session::Counters;
use punktfunk_media::{
    open_encoder, BgraFrame, Converter, Encoder, EncoderConfig, TestPattern, YuvFrame,
};
use punktfunk_net::UdpSocket;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What Moonlight announces on a LAN (1024 when "remote").
const PACKET_SIZE: u32 = 1392;
/// The video key of the benchmark's sessions.
const KEY: [u8; 16] = [7; 16];

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
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tx.send(sock.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let _ = sock.recv_from(&mut buf);
        }
    });
    (rx.recv().expect("receiver bound"), handle)
}

/// The plan the host resolves for a Moonlight ANNOUNCE of 1080p60 at 20 Mbit/s, packet size
/// 1392, with video encryption, under the host's 20 % FEC.
fn gamestream_plan() -> SessionPlan {
    let mut body = String::from("v=0\r\ns=NVIDIA Streaming Client\r\n");
    for (k, v) in [
        ("x-ss-general.encryptionEnabled", "7"),
        ("x-nv-video[0].clientViewportWd", "1920"),
        ("x-nv-video[0].clientViewportHt", "1080"),
        ("x-nv-video[0].maxFPS", "60"),
        ("x-nv-video[0].packetSize", "1392"),
        ("x-nv-vqos[0].bw.maximumBitrateKbps", "20000"),
        ("x-nv-general.featureFlags", "167"),
        ("x-nv-general.useReliableUdp", "13"),
        ("x-nv-vqos[0].fec.minRequiredFecPackets", "2"),
        ("x-nv-video[0].videoEncoderSlicesPerFrame", "1"),
        ("x-nv-vqos[0].bitStreamFormat", "0"),
        ("x-nv-video[0].maxNumReferenceFrames", "1"),
        ("x-nv-audio.surround.numChannels", "2"),
        ("x-nv-audio.surround.channelMask", "3"),
        ("x-nv-audio.surround.AudioQuality", "0"),
        ("x-nv-aqos.packetDuration", "5"),
    ] {
        body += &format!("a={k}:{v} \r\n");
    }
    let cfg = StreamConfig::from_announce(body.as_bytes()).expect("ANNOUNCE parses");
    let host = HostAbilities {
        hevc: false,
        av1: false,
        fec_percent: 20,
    };
    let plan = SessionPlan::resolve(&cfg, &host, false).expect("the host serves this stream");
    assert_eq!(
        (plan.width, plan.height, plan.fps, plan.bitrate_kbps),
        (1920, 1080, 60, 20_000)
    );
    assert_eq!(
        (plan.packet_size, plan.fec_percent, plan.video_encrypted),
        (PACKET_SIZE, 20, true)
    );
    plan
}

/// What a punktfunk/1 handshake agrees on for the same stream.
fn welcome() -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        session_id: 1,
        codec: Codec::H264,
        mode: Mode::new(1920, 1080, 60),
        bitrate_kbps: 20_000,
        fec_percent: 20,
        fec_min_parity: 2,
        fec_max_parity: 1024,
        fec_small_code: FecCode::GF8_CAUCHY,
        shard_len: PACKET_SIZE as u16,
        suite: CipherSuite::AES_128_GCM,
        host_to_client: DirectionKey {
            key: vec![1; 16],
            salt: [2; 12],
        },
        client_to_host: DirectionKey {
            key: vec![3; 16],
            salt: [4; 12],
        },
        data_port: 0,
    }
}

/// The host's H.264 encoder for `plan`'s mode and bitrate, one slice.
fn encoder(plan: &SessionPlan) -> Box<dyn Encoder> {
    open_encoder(&EncoderConfig {
        codec: Codec::H264,
        width: plan.width,
        height: plan.height,
        fps: plan.fps,
        bitrate_kbps: plan.bitrate_kbps,
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
    /// A second thread owns the sink and receives frames through a queue, sleeping (or
    /// spinning) in between.
    Handover { spin: bool },
}

/// What is sent.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Baseline,
    Punktfunk1,
    GameStream,
}

/// The host's source and encoder: test pattern, colour conversion, x264.
struct LiveEncoder {
    enc: Box<dyn Encoder>,
    pattern: TestPattern,
    conv: Converter,
    bgra: BgraFrame,
    yuv: YuvFrame,
    n: u32,
    epoch: Instant,
}

impl LiveEncoder {
    fn new(plan: &SessionPlan, epoch: Instant) -> LiveEncoder {
        let (w, h) = (plan.width, plan.height);
        LiveEncoder {
            enc: encoder(plan),
            pattern: TestPattern::new(w, h),
            conv: Converter::new(w, h).unwrap(),
            bgra: BgraFrame::new(w, h),
            yuv: YuvFrame::default(),
            n: 0,
            epoch,
        }
    }

    fn next(&mut self) -> Option<Encoded> {
        let captured = Instant::now();
        self.pattern.render(self.n, 0, &mut self.bgra);
        self.conv.convert(&self.bgra, &mut self.yuv).unwrap();
        let f = self
            .enc
            .encode(&self.yuv, i64::from(self.n), self.n == 0)
            .unwrap();
        self.n += 1;
        f.map(|f| Encoded {
            data: f.data,
            keyframe: f.keyframe,
            capture_us: captured.duration_since(self.epoch).as_micros() as u64,
            before_requested_keyframe: false,
        })
    }
}

/// The floor: the frame's bytes copied into whole datagrams and sent in bursts of 64, no FEC,
/// no encryption, timed like the shipped sinks time themselves.
struct CopySink {
    tx: Arc<UdpSocket>,
    to: SocketAddr,
    out: Vec<u8>,
}

impl FrameSink for CopySink {
    fn deliver(&mut self, f: Encoded, times: &mut SinkTimes) -> Result<bool, VideoError> {
        let wall = Instant::now();
        let cpu = thread_cpu_us();
        let size = PACKET_SIZE as usize;
        let d = size + 16;
        self.out.clear();
        for chunk in f.data.chunks(size - 16) {
            let start = self.out.len();
            self.out.resize(start + d, 0);
            self.out[start + 32..start + 32 + chunk.len()].copy_from_slice(chunk);
        }
        for burst in self.out.chunks(64 * d) {
            let _ = self.tx.send_batch(self.to, burst, d);
        }
        times.send_cpu_us = thread_cpu_us().saturating_sub(cpu) as u32;
        times.send_us = wall.elapsed().as_micros() as u32;
        Ok(true)
    }
}

/// A socket stand-in that counts the datagrams it is given and sends nothing.
struct Discard(Arc<AtomicU64>);

impl DatagramOut for Discard {
    fn send_batch(&mut self, _: SocketAddr, bytes: &[u8], segment: usize) -> std::io::Result<()> {
        self.0
            .fetch_add((bytes.len() / segment) as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The shipped GameStream sink for `plan`, sending through `out` to `to`.
fn video_sink(plan: &SessionPlan, out: Box<dyn DatagramOut>, to: SocketAddr) -> VideoSink {
    let dest: Destination = Arc::new(Mutex::new(Some(to)));
    VideoSink::new(
        plan,
        plan.video_encrypted.then_some(&KEY),
        out,
        dest,
        Arc::new(Counters::default()),
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
    )
    .expect("the plan's packet size is valid")
}

/// The sink of `path`, sending from `tx` to `to`.
fn sink(path: Path, plan: &SessionPlan, tx: &Arc<UdpSocket>, to: SocketAddr) -> Box<dyn FrameSink> {
    match path {
        Path::Baseline => Box::new(CopySink {
            tx: tx.clone(),
            to,
            out: Vec::new(),
        }),
        Path::Punktfunk1 => Box::new(
            DataPlaneSink::new(&welcome(), tx.clone(), Arc::new(Mutex::new(Some(to))))
                .expect("the welcome's cipher opens"),
        ),
        Path::GameStream => Box::new(video_sink(plan, Box::new(tx.clone()), to)),
    }
}

/// Per-frame figures of one run, µs, as the sink measured them.
#[derive(Default)]
struct Samples {
    cpu: Vec<u64>,
    wall: Vec<u64>,
    bytes: usize,
}

impl Samples {
    fn deliver(&mut self, sink: &mut dyn FrameSink, f: Encoded) {
        let len = f.data.len();
        let mut t = SinkTimes::default();
        assert!(
            sink.deliver(f, &mut t).expect("the sink sends"),
            "the sink ended"
        );
        self.cpu.push(u64::from(t.send_cpu_us));
        self.wall.push(u64::from(t.send_us));
        self.bytes += len;
    }
}

/// Encodes `frames` frames at 60 fps and hands each to `sink` as `delivery` says.
fn run(
    mut sink: Box<dyn FrameSink>,
    delivery: Delivery,
    frames: usize,
    plan: &SessionPlan,
) -> Samples {
    // The encoding side, paced at the plan's rate like the host's encode loop; `each` gets
    // every frame.
    let encode_paced = |each: &mut dyn FnMut(Encoded) -> bool| {
        let mut live = LiveEncoder::new(plan, Instant::now());
        let interval = Duration::from_secs_f64(1.0 / f64::from(plan.fps));
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
        Delivery::Inline => {
            let mut s = Samples::default();
            encode_paced(&mut |f| {
                s.deliver(&mut *sink, f);
                true
            });
            s
        }
        Delivery::Handover { spin } => {
            let (ftx, frx) = std::sync::mpsc::sync_channel::<Encoded>(2);
            std::thread::scope(|scope| {
                let sender = scope.spawn(move || {
                    let mut s = Samples::default();
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
                        s.deliver(&mut *sink, f);
                    }
                    s
                });
                encode_paced(&mut |f| ftx.send(f).is_ok());
                drop(ftx);
                sender.join().expect("the send thread")
            })
        }
    }
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
    let plan = gamestream_plan();
    let (w, h) = (plan.width, plan.height);
    eprintln!(
        "encoding 120 test-pattern frames at {w}x{h}, {} kbit/s for the hot loop ...",
        plan.bitrate_kbps
    );
    let mut live = LiveEncoder::new(&plan, Instant::now());
    let encoded: Vec<Encoded> = (0..120).filter_map(|_| live.next()).collect();
    let mean = encoded.iter().map(|f| f.data.len()).sum::<usize>() / encoded.len();
    println!(
        "send path through the host's sinks, {w}x{h}@{} {} kbit/s x264 frames of the test pattern, packet size {PACKET_SIZE}, {frames_arg} frames per row, {}",
        plan.fps,
        plan.bitrate_kbps,
        match delivery {
            Delivery::Inline => "sent by the encoding thread right after encoding (as the host does)",
            Delivery::Handover { spin: false } =>
                "handed to a send thread that sleeps between frames",
            Delivery::Handover { spin: true } =>
                "handed to a send thread that spins between frames",
        }
    );
    // The GameStream sink in a hot loop into a stand-in that discards (caches warm, no kernel).
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (label, fec_percent, encrypted) in [
        ("hot loop: GameStream sink, no FEC, plain", 0u32, false),
        ("hot loop: GameStream sink, FEC 20 %", 20, false),
        ("hot loop: GameStream sink, FEC 20 % + AES-GCM", 20, true),
    ] {
        let p = SessionPlan {
            fec_percent,
            video_encrypted: encrypted,
            ..plan.clone()
        };
        let datagrams = Arc::new(AtomicU64::new(0));
        let mut sink = video_sink(&p, Box::new(Discard(datagrams.clone())), to);
        let n = 2000;
        let (mut cpu, mut wall) = (Vec::with_capacity(n), 0u64);
        for i in 0..n {
            // P-frames only: the IDR would be paced (bursts of 64 with sleeps in between).
            let f = &encoded[1 + i % (encoded.len() - 1)];
            let mut st = SinkTimes::default();
            sink.deliver(
                Encoded {
                    data: f.data.clone(),
                    keyframe: false,
                    capture_us: 0,
                    before_requested_keyframe: false,
                },
                &mut st,
            )
            .unwrap();
            cpu.push(u64::from(st.send_cpu_us));
            wall += u64::from(st.send_us);
        }
        let per_frame = datagrams.load(Ordering::Relaxed) as f64 / n as f64;
        println!(
            "{label:<48} mean {:>6.3} ms per P-frame, cpu p99 {:>6.3} ms (mean {mean} B, {per_frame:.1} datagrams)",
            wall as f64 / 1000.0 / n as f64,
            pct(&mut cpu, 0.99) as f64 / 1000.0,
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
        let tx = Arc::new(UdpSocket::bind(SocketAddr::new(near.parse().unwrap(), 0)).unwrap());
        println!(
            "receiver: {label} ({to}), sender send path {}",
            tx.send_path()
        );
        for (name, path) in [
            ("baseline: copy into datagrams + send", Path::Baseline),
            ("punktfunk/1: DataPlaneSink", Path::Punktfunk1),
            ("GameStream: VideoSink", Path::GameStream),
        ] {
            let mut s = run(sink(path, &plan, &tx, to), delivery, frames_arg, &plan);
            let ms = |v: &mut Vec<u64>, p| pct(v, p) as f64 / 1000.0;
            println!(
                "{:<48} cpu p50 {:>6.3} ms  p99 {:>6.3} ms   wall p50 {:>6.3} ms  p99 {:>6.3} ms   (mean frame {} B)",
                format!("{label}: {name}"),
                ms(&mut s.cpu, 0.5),
                ms(&mut s.cpu, 0.99),
                ms(&mut s.wall, 0.5),
                ms(&mut s.wall, 0.99),
                s.bytes / s.cpu.len().max(1),
            );
        }
        stop.store(true, Ordering::Relaxed);
        let _ = drain.join();
    }
    drop(veth);
}
