//! punktfunk-client: the reference client.
//!
//! Connects over punktfunk/1 (QUIC control plane, pinned or trust-on-first-use host identity),
//! receives the encrypted, FEC-protected data plane on a native thread, decodes with
//! libavcodec on another, reads the stamp the host drew into every frame and so proves which
//! frame it shows and how late it is. Frames after an unrecoverable loss are not shown until a
//! keyframe (requested at once) arrives, so a corrupted picture is never counted as shown.

pub mod input_script;
pub mod pair;

use anyhow::{bail, Context, Result};
use punktfunk_core::control::{
    datagram, ByeReason, ClientAction, ClientControl, ClientControlConfig, ClockEstimate, Codec,
    Hello, Message, Mode, ReceiverStats, ScheduledReconfigure, Side, Welcome, PROTOCOL_VERSION,
};
use punktfunk_core::crypto::{packet_key, Sealer};
use punktfunk_core::handshake::{ClientHandshake, HandshakeError};
use punktfunk_core::probe;
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::RecvSession;
use punktfunk_media::{read_stamp_luma, write_png, DecodedFrame, Decoder};
use punktfunk_net::{RecvBatch, UdpSocket};
use punktfunk_quic::{connect, ControlStream, TransportError, Trust};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client run, resolved from flags.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host QUIC address.
    pub host: SocketAddr,
    /// The host as the user named it (for messages such as "run punktfunk-client pair HOST").
    pub host_label: String,
    /// How the host is trusted.
    pub trust: Trust,
    /// Who this client is (its certificate, presented to the host on every connection).
    pub identity: punktfunk_quic::Identity,
    /// Requested mode.
    pub mode: Mode,
    /// Codecs we decode, preferred first.
    pub codecs: Vec<Codec>,
    /// Requested bitrate, kbit/s (0 = host default).
    pub bitrate_kbps: u32,
    /// Requested FEC percentage.
    pub fec_percent: Option<u8>,
    /// How long to stream.
    pub duration: Duration,
    /// Write the received elementary stream here.
    pub out: Option<PathBuf>,
    /// Write the last decoded frame as PNG here.
    pub png: Option<PathBuf>,
    /// Send the data plane through this address instead of the host's (a relay or the
    /// impairment proxy).
    pub data_via: Option<SocketAddr>,
    /// Ask for a new mode this long after the start.
    pub reconfigure: Option<(Duration, Mode)>,
    /// Name shown in host logs.
    pub name: String,
    /// The app to run on the stream's output, by title or id (none: the desktop).
    pub app: Option<String>,
    /// The pictures carry an app's stamps (the desktop probe's), not the host's: a stamp's
    /// frame number only has to grow, and its time is when the app drew it.
    pub app_stamps: bool,
    /// Input events to send while streaming, in time order ([`input_script`]).
    pub input: Vec<input_script::Scripted>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    fn of(v: &[f64]) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |p: f64| s[(((p / 100.0) * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Percentiles {
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Host fingerprint.
    pub host_fingerprint: String,
    /// Codec and mode as agreed (the mode after any reconfigure).
    pub codec: String,
    /// Mode streamed at the end.
    pub mode: String,
    /// Frames the host sent (highest frame index seen + 1).
    pub frames_sent: u64,
    /// Frames the reassembler delivered.
    pub frames_received: u64,
    /// Frames decoded and shown (stamp verified).
    pub frames_decoded: u64,
    /// Frames that needed FEC.
    pub frames_recovered: u64,
    /// Frames given up as lost.
    pub frames_lost: u64,
    /// Frames received but not shown while waiting for a keyframe after a loss.
    pub frames_skipped: u64,
    /// Decoded frames whose stamp was unreadable or not the frame they arrived as.
    pub frames_corrupt: u64,
    /// Decoded frames that still show the previous frame's stamp: the encoder coded the stamp
    /// area as unchanged (skipped blocks when its rate control runs out of bits). The frame
    /// arrived intact and in order; the picture is one frame stale in that area.
    pub frames_stale: u64,
    /// Decoded frames whose stamp went backwards or repeated.
    pub frames_out_of_order: u64,
    /// Keyframe requests sent.
    pub keyframes_requested: u64,
    /// Keyframes received.
    pub keyframes_received: u64,
    /// Datagrams received.
    pub packets_received: u64,
    /// Datagrams dropped as forged, replayed or malformed.
    pub packets_rejected: u64,
    /// Video bitrate received, Mbit/s.
    pub bitrate_mbps: f64,
    /// Seconds streamed.
    pub seconds: f64,
    /// Host clock minus client clock, ms (NTP-style estimate).
    pub clock_offset_ms: f64,
    /// Control-plane round trip, ms.
    pub rtt_ms: f64,
    /// Capture on the host → frame complete at the client.
    pub capture_to_received_ms: Percentiles,
    /// Capture on the host → frame decoded at the client.
    pub capture_to_decoded_ms: Percentiles,
    /// Decode time per frame.
    pub decode_ms: Percentiles,
    /// Receive path per frame: opening, reassembling and FEC-recovering its datagrams.
    pub receive_path_ms: Percentiles,
    /// Frames shown per decoded size (e.g. "1280x720": 600).
    pub sizes: std::collections::BTreeMap<String, u64>,
    /// Scripted input events sent.
    pub input_sent: u64,
    /// With app stamps: distinct app pictures shown (a repeated picture counts once).
    pub app_frames: u64,
    /// With app stamps: decoded pictures without the app's stamp (the desktop before the app
    /// drew, or the moment after a mode change before it drew at the new size).
    pub app_unstamped: u64,
    /// With app stamps: the app drew the picture → decoded at the client.
    pub app_render_to_decoded_ms: Percentiles,
    /// Why the session ended.
    pub end: String,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let p = |x: &Percentiles| format!("{:8.2} {:8.2} {:8.2}", x.p50, x.p95, x.p99);
        let mut s = String::new();
        s += &format!(
            "host {}  codec {}  mode {}  {:.1} s\n",
            self.host_fingerprint, self.codec, self.mode, self.seconds
        );
        s += &format!(
            "frames   sent {}  received {}  decoded {}  recovered-by-FEC {}  lost {}\n",
            self.frames_sent,
            self.frames_received,
            self.frames_decoded,
            self.frames_recovered,
            self.frames_lost
        );
        s += &format!("         skipped-awaiting-keyframe {}  corrupt {}  stale-stamp {}  out-of-order {}  keyframes requested {} received {}\n",
            self.frames_skipped, self.frames_corrupt, self.frames_stale, self.frames_out_of_order, self.keyframes_requested, self.keyframes_received);
        s += &format!("network  packets {}  rejected {}  bitrate {:.2} Mbit/s  rtt {:.2} ms  clock offset {:.3} ms\n",
            self.packets_received, self.packets_rejected, self.bitrate_mbps, self.rtt_ms, self.clock_offset_ms);
        s += "latency (ms)                   p50      p95      p99\n";
        s += &format!(
            "  capture -> received    {}\n",
            p(&self.capture_to_received_ms)
        );
        s += &format!(
            "  capture -> decoded     {}\n",
            p(&self.capture_to_decoded_ms)
        );
        if self.app_frames > 0 {
            s += &format!(
                "  app render -> decoded  {}   ({} app pictures)\n",
                p(&self.app_render_to_decoded_ms),
                self.app_frames
            );
        }
        s += &format!("  receive path           {}\n", p(&self.receive_path_ms));
        s += &format!("  decode                 {}\n", p(&self.decode_ms));
        s += &format!("ended: {}\n", self.end);
        s
    }
}

/// A frame handed from the receive thread to the decode thread.
struct Received {
    index: u32,
    keyframe: bool,
    capture_us: u64,
    data: Vec<u8>,
}

/// Shared counters of the receive and decode threads.
#[derive(Default)]
struct Shared {
    recv_ms: Mutex<Vec<f64>>,
    /// CPU time of the receive path (authenticate, reassemble, FEC) per frame.
    recv_path_ms: Mutex<Vec<f64>>,
    decoded_ms: Mutex<Vec<f64>>,
    app_stamps: AtomicBool,
    app_frames: AtomicU64,
    app_unstamped: AtomicU64,
    app_ms: Mutex<Vec<f64>>,
    decode_ms: Mutex<Vec<f64>>,
    sizes: Mutex<std::collections::BTreeMap<String, u64>>,
    last_frame: Mutex<Option<DecodedFrame>>,
    frames_received: AtomicU64,
    frames_decoded: AtomicU64,
    frames_skipped: AtomicU64,
    frames_corrupt: AtomicU64,
    frames_stale: AtomicU64,
    frames_out_of_order: AtomicU64,
    keyframes: AtomicU64,
    max_index: AtomicU64,
    bytes: AtomicU64,
    /// Host-minus-client clock offset, µs (set once before streaming).
    offset_us: Mutex<i64>,
    decode_error: Mutex<Option<String>>,
}

/// Runs a session and returns its report.
pub async fn run(cfg: ClientConfig) -> Result<Report> {
    let epoch = Instant::now();
    let connected = connect(cfg.host, &cfg.trust, &cfg.identity)
        .await
        .with_context(|| format!("connecting to {}", cfg.host))?;
    if connected.first_use {
        tracing::warn!(fingerprint = %connected.fingerprint, "trusting this host on first use; its fingerprint is now stored");
    }
    let conn = connected.connection.clone();
    let mut cs = ControlStream::open(&conn).await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        mode: cfg.mode,
        codecs: cfg.codecs.clone(),
        bitrate_kbps: cfg.bitrate_kbps,
        fec_percent: cfg.fec_percent,
        client_name: cfg.name.clone(),
        app: cfg.app.clone().unwrap_or_default(),
    };
    let mut hs = ClientHandshake::new(hello);
    let welcome: Welcome = loop {
        while let Some(m) = hs.poll_message() {
            cs.send(&m).await?;
        }
        if let Some(e) = hs.error() {
            if let HandshakeError::Refused {
                reason: ByeReason::PAIRING_REQUIRED,
                ..
            } = e
            {
                bail!(
                    "this host requires pairing: run punktfunk-client pair {}",
                    cfg.host_label
                );
            }
            bail!("handshake failed: {e}");
        }
        if let Some(w) = hs.established() {
            let w = w.clone();
            while let Some(m) = hs.poll_message() {
                cs.send(&m).await?;
            }
            break w;
        }
        match tokio::time::timeout(Duration::from_secs(10), cs.recv()).await {
            Err(_) => bail!("the host did not answer the Hello within 10 s"),
            Ok(Ok(Some(m))) => hs.handle(m),
            Ok(Ok(None)) => bail!("the host closed the control stream during the handshake"),
            Ok(Err(TransportError::Malformed(e))) => hs.malformed(&e.to_string()),
            Ok(Err(e)) => return Err(e.into()),
        }
    };
    tracing::info!(codec = %welcome.codec, mode = %welcome.mode, bitrate_kbps = welcome.bitrate_kbps,
        fec_percent = welcome.fec_percent, session = welcome.session_id, "session established");

    // Everything after the handshake is decided by the control machine; this loop only moves
    // its inputs in and executes its actions.
    let control_cfg = ClientControlConfig {
        duration: Some(cfg.duration),
        reconfigure: cfg.reconfigure.map(|(after, mode)| ScheduledReconfigure {
            after,
            mode,
            bitrate_kbps: 0,
        }),
    };
    let mut cc = ClientControl::new(&welcome, control_cfg, epoch, Instant::now());
    let shared = Arc::new(Shared::default());
    shared.app_stamps.store(cfg.app_stamps, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    // Bound and opened now so a bad path fails before anything streams; the threads start once
    // the clock offset is known, or early frames would get latencies against the wrong clock.
    let mut pending = Some(DataPlaneSetup::new(&cfg, &welcome, lost_tx)?);
    let mut data: Option<DataPlane> = None;
    // Scripted input starts with streaming (once the clock is synced).
    let mut input_start: Option<Instant> = None;
    let mut input_next = 0usize;
    let mut input_buf = Vec::new();
    let session = async {
        loop {
            while let Some(action) = cc.poll_action() {
                match action {
                    ClientAction::Send(m) => cs.send(&m).await?,
                    ClientAction::SendStats => cs.send(&receiver_report(&shared)).await?,
                    ClientAction::ClockSynced(clock) => {
                        tracing::debug!(
                            offset_us = clock.offset_us,
                            rtt_us = clock.rtt_us,
                            "clock synced"
                        );
                        *shared.offset_us.lock().unwrap_or_else(|e| e.into_inner()) =
                            clock.offset_us;
                        if let Some(setup) = pending.take() {
                            data = Some(setup.start(&welcome, &shared, &stop, epoch)?);
                            input_start = Some(Instant::now());
                        }
                    }
                    ClientAction::ModeChanged {
                        mode, first_frame, ..
                    } => {
                        tracing::info!(%mode, first_frame, "host switched mode")
                    }
                    ClientAction::End(ended) => return Ok::<_, anyhow::Error>(ended),
                }
            }
            // Every scripted event that is due goes out now, one datagram per due batch.
            let input_due =
                input_start.map(|t0| (t0, cfg.input.get(input_next).map(|s| t0 + s.at)));
            if let Some((t0, Some(due))) = input_due {
                if due <= Instant::now() {
                    input_buf.clear();
                    input_buf.push(datagram::INPUT);
                    while let Some(s) = cfg.input.get(input_next) {
                        if t0 + s.at > Instant::now() || input_buf.len() > 1000 {
                            break;
                        }
                        s.event.encode(&mut input_buf);
                        input_next += 1;
                    }
                    conn.send_datagram(bytes::Bytes::copy_from_slice(&input_buf))
                        .context("sending input")?;
                    continue;
                }
            }
            let input_timer = input_due.and_then(|(_, due)| due);
            let timer = cc.poll_timeout();
            let sleep = async move {
                match timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let input_sleep = async move {
                match input_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = input_sleep => {}
                m = cs.recv() => feed(&mut cc, Instant::now(), m)?,
                Some(first) = lost_rx.recv() => cc.handle_frames_lost(Instant::now(), first),
                _ = sleep => cc.handle_timeout(Instant::now()),
            }
        }
    };
    let ended = session.await;
    stop.store(true, Ordering::Relaxed);
    let streamed = data.map(DataPlane::join).transpose();
    conn.close(0u32.into(), b"done");
    // Let the close reach the host before the process exits; otherwise the host learns of the
    // end only when it stops waiting.
    let _ = tokio::time::timeout(Duration::from_secs(1), connected.endpoint.wait_idle()).await;
    let (ended, streamed) = (ended?, streamed?);
    let Some((rstats, seconds)) = streamed else {
        bail!("the session ended before streaming began: {ended}");
    };
    if let (Side::Client, Err(e)) = (ended.by, &ended.outcome) {
        bail!("the client ended the session: {e}");
    }
    if let Some(e) = shared
        .decode_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        tracing::warn!(error = %e, "decoder reported errors");
    }
    if let (Some(path), Some(f)) = (
        &cfg.png,
        shared
            .last_frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref(),
    ) {
        write_png(f, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let l = |m: &Mutex<Vec<f64>>| Percentiles::of(&m.lock().unwrap_or_else(|e| e.into_inner()));
    let sizes = shared
        .sizes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let clock = cc.clock().unwrap_or(ClockEstimate {
        offset_us: 0,
        rtt_us: 0,
    });
    let report = Report {
        host_fingerprint: connected.fingerprint.to_string(),
        codec: welcome.codec.to_string(),
        mode: cc.mode().to_string(),
        frames_sent: shared.max_index.load(Ordering::Relaxed),
        frames_received: shared.frames_received.load(Ordering::Relaxed),
        frames_decoded: shared.frames_decoded.load(Ordering::Relaxed),
        frames_recovered: rstats.reassembly.frames_recovered,
        frames_lost: rstats.reassembly.frames_lost,
        frames_skipped: shared.frames_skipped.load(Ordering::Relaxed),
        frames_corrupt: shared.frames_corrupt.load(Ordering::Relaxed),
        frames_stale: shared.frames_stale.load(Ordering::Relaxed),
        frames_out_of_order: shared.frames_out_of_order.load(Ordering::Relaxed),
        keyframes_requested: cc.stats().keyframe_requests,
        keyframes_received: shared.keyframes.load(Ordering::Relaxed),
        packets_received: rstats.datagrams,
        packets_rejected: rstats.forged + rstats.replayed + rstats.malformed + rstats.wrong_size,
        bitrate_mbps: shared.bytes.load(Ordering::Relaxed) as f64 * 8.0 / seconds.max(1e-3) / 1e6,
        seconds,
        clock_offset_ms: clock.offset_us as f64 / 1000.0,
        rtt_ms: clock.rtt_us as f64 / 1000.0,
        capture_to_received_ms: l(&shared.recv_ms),
        capture_to_decoded_ms: l(&shared.decoded_ms),
        decode_ms: l(&shared.decode_ms),
        receive_path_ms: l(&shared.recv_path_ms),
        sizes,
        input_sent: input_next as u64,
        app_frames: shared.app_frames.load(Ordering::Relaxed),
        app_unstamped: shared.app_unstamped.load(Ordering::Relaxed),
        app_render_to_decoded_ms: l(&shared.app_ms),
        end: ended.to_string(),
    };
    Ok(report)
}

/// Hands what the control stream gave to the machine; only a broken transport is an error here
/// (a malformed message is the machine's to judge).
fn feed(
    cc: &mut ClientControl,
    now: Instant,
    received: Result<Option<Message>, TransportError>,
) -> Result<(), TransportError> {
    match received {
        Ok(Some(m)) => cc.handle_message(now, m),
        Ok(None) => cc.handle_closed(now),
        Err(TransportError::Malformed(e)) => cc.handle_malformed(now, &e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The receiver report the control machine asks for, from the data plane's counters.
fn receiver_report(shared: &Shared) -> Message {
    Message::Stats(ReceiverStats {
        frames_received: shared.frames_received.load(Ordering::Relaxed),
        frames_decoded: shared.frames_decoded.load(Ordering::Relaxed),
        ..ReceiverStats::default()
    })
}

/// The data plane's resources, acquired before streaming so a bad address or path fails early.
struct DataPlaneSetup {
    sock: UdpSocket,
    target: SocketAddr,
    out_file: Option<std::fs::File>,
    lost: tokio::sync::mpsc::UnboundedSender<u32>,
}

/// The running data plane: the receive and decode threads.
struct DataPlane {
    recv: std::thread::JoinHandle<Result<punktfunk_core::session::RecvStats>>,
    decode: std::thread::JoinHandle<()>,
    started: Instant,
}

impl DataPlaneSetup {
    fn new(
        cfg: &ClientConfig,
        welcome: &Welcome,
        lost: tokio::sync::mpsc::UnboundedSender<u32>,
    ) -> Result<DataPlaneSetup> {
        let target = cfg
            .data_via
            .unwrap_or_else(|| SocketAddr::new(cfg.host.ip(), welcome.data_port));
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("valid");
        let sock = UdpSocket::bind(bind).context("binding the data socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let out_file = match &cfg.out {
            Some(p) => Some(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => None,
        };
        Ok(DataPlaneSetup {
            sock,
            target,
            out_file,
            lost,
        })
    }

    /// Starts the receive thread and the decode thread.
    fn start(
        self,
        welcome: &Welcome,
        shared: &Arc<Shared>,
        stop: &Arc<AtomicBool>,
        epoch: Instant,
    ) -> Result<DataPlane> {
        let (frame_tx, frame_rx) = mpsc::sync_channel::<Received>(16);
        let recv = {
            let (shared, stop, welcome) = (shared.clone(), stop.clone(), welcome.clone());
            let DataPlaneSetup {
                sock,
                target,
                out_file,
                lost,
            } = self;
            std::thread::Builder::new()
                .name("receive".into())
                .spawn(move || {
                    receive_loop(
                        sock, target, &welcome, &shared, &stop, frame_tx, lost, out_file, epoch,
                    )
                })?
        };
        let decode = {
            let (shared, codec) = (shared.clone(), welcome.codec);
            std::thread::Builder::new()
                .name("decode".into())
                .spawn(move || decode_loop(codec, frame_rx, &shared, epoch))?
        };
        Ok(DataPlane {
            recv,
            decode,
            started: Instant::now(),
        })
    }
}

impl DataPlane {
    /// Waits for both threads (the stop flag must be set); the receiver's counters and the
    /// seconds streamed.
    fn join(self) -> Result<(punktfunk_core::session::RecvStats, f64)> {
        let seconds = self.started.elapsed().as_secs_f64();
        let rstats = self
            .recv
            .join()
            .map_err(|_| anyhow::anyhow!("receive thread panicked"))??;
        self.decode
            .join()
            .map_err(|_| anyhow::anyhow!("decode thread panicked"))?;
        Ok((rstats, seconds))
    }
}

/// Capture time (host clock, µs) → milliseconds before `at` on the client's clock.
fn latency_ms(shared: &Shared, capture_us: u64, at: Instant, epoch: Instant) -> f64 {
    let offset = *shared.offset_us.lock().unwrap_or_else(|e| e.into_inner());
    let at_client_us = at.duration_since(epoch).as_micros() as i64;
    let capture_client_us = capture_us as i64 - offset;
    (at_client_us - capture_client_us) as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
fn receive_loop(
    sock: UdpSocket,
    target: SocketAddr,
    welcome: &Welcome,
    shared: &Shared,
    stop: &AtomicBool,
    frames: mpsc::SyncSender<Received>,
    losses: tokio::sync::mpsc::UnboundedSender<u32>,
    mut out: Option<std::fs::File>,
    epoch: Instant,
) -> Result<punktfunk_core::session::RecvStats> {
    let h2c = packet_key(
        welcome.suite,
        &welcome.host_to_client.key,
        welcome.host_to_client.salt,
    )?;
    let c2h = packet_key(
        welcome.suite,
        &welcome.client_to_host.key,
        welcome.client_to_host.salt,
    )?;
    let mut rx = RecvSession::new(ReassemblyLimits::default(), h2c);
    let mut sealer = Sealer::new(c2h);
    let mut batch = RecvBatch::new(64, 65_536);
    let mut next_probe = Instant::now();
    let mut got_any = false;
    let mut path_time = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_probe {
            if let Some(p) = probe::encode(&mut sealer, welcome.session_id) {
                let _ = sock.send_to(&p, target);
            }
            next_probe = Instant::now()
                + if got_any {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(100)
                };
        }
        if sock.recv_batch(&mut batch).is_ok() {
            got_any = true;
            let now = Instant::now();
            for (_, d) in batch.iter_mut() {
                let _ = rx.handle_datagram(now, d);
            }
            path_time += now.elapsed();
        }
        rx.handle_timeout(Instant::now());
        while let Some(ev) = rx.poll_event() {
            match ev {
                Event::Frame(f) => {
                    shared.frames_received.fetch_add(1, Ordering::Relaxed);
                    shared
                        .bytes
                        .fetch_add(f.data.len() as u64, Ordering::Relaxed);
                    shared
                        .max_index
                        .fetch_max(u64::from(f.index) + 1, Ordering::Relaxed);
                    shared
                        .recv_ms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(latency_ms(shared, f.timestamp_us, f.completed, epoch));
                    shared
                        .recv_path_ms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(path_time.as_secs_f64() * 1000.0);
                    path_time = Duration::ZERO;
                    if let Some(o) = out.as_mut() {
                        o.write_all(&f.data).context("writing the stream file")?;
                    }
                    let r = Received {
                        index: f.index,
                        keyframe: f.keyframe,
                        capture_us: f.timestamp_us,
                        data: f.data,
                    };
                    if frames.send(r).is_err() {
                        break;
                    }
                }
                Event::Lost { first, count } => {
                    shared
                        .max_index
                        .fetch_max(u64::from(first) + u64::from(count), Ordering::Relaxed);
                    tracing::debug!(first, count, "frames lost");
                    let _ = losses.send(first);
                }
            }
        }
    }
    Ok(rx.stats())
}

/// Checks a picture an app stamped: its frame number never goes back; a new one is timed from
/// when the app drew it. A picture without a stamp is counted apart (the desktop around the
/// app, before it draws).
fn app_stamp(
    shared: &Shared,
    stamp: Option<punktfunk_media::Stamp>,
    f: &Received,
    d: &DecodedFrame,
    last: &mut Option<u32>,
    done: Instant,
    epoch: Instant,
) {
    let Some(s) = stamp else {
        // Not a decoding fault: what the desktop shows where the app has not drawn (yet), or
        // a stamp the encoder blurred past reading.
        tracing::debug!(index = f.index, "decoded picture carries no app stamp");
        shared.app_unstamped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    shared.frames_decoded.fetch_add(1, Ordering::Relaxed);
    let push = |m: &Mutex<Vec<f64>>, v: f64| m.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    push(
        &shared.decoded_ms,
        latency_ms(shared, f.capture_us, done, epoch),
    );
    *shared
        .sizes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{}x{}", d.width, d.height))
        .or_default() += 1;
    match *last {
        Some(l) if s.frame < l => {
            tracing::warn!(
                index = f.index,
                stamp = s.frame,
                last = l,
                "app stamp went back"
            );
            shared.frames_out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        // The same picture again (an idle app, the host's repeat): not a new render.
        Some(l) if s.frame == l => {}
        _ => {
            shared.app_frames.fetch_add(1, Ordering::Relaxed);
            push(
                &shared.app_ms,
                latency_ms(shared, s.capture_us, done, epoch),
            );
        }
    }
    *last = Some(s.frame);
}

fn decode_loop(codec: Codec, frames: mpsc::Receiver<Received>, shared: &Shared, epoch: Instant) {
    let mut decoder = match Decoder::new(codec) {
        Ok(d) => d,
        Err(e) => {
            *shared
                .decode_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            return;
        }
    };
    let mut expected: Option<u32> = None;
    let mut awaiting_keyframe = false;
    let mut last_stamp: Option<u32> = None;
    for f in frames {
        shared
            .keyframes
            .fetch_add(u64::from(f.keyframe), Ordering::Relaxed);
        // A gap in frame indices means a frame was lost: its references are gone, so show
        // nothing until a keyframe.
        if expected.is_some_and(|e| e != f.index) {
            awaiting_keyframe = true;
        }
        expected = Some(f.index.wrapping_add(1));
        if awaiting_keyframe && !f.keyframe {
            shared.frames_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        awaiting_keyframe = false;
        let t = Instant::now();
        let out = match decoder.decode(&f.data) {
            Ok(o) => o,
            Err(e) => {
                *shared
                    .decode_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                shared.frames_corrupt.fetch_add(1, Ordering::Relaxed);
                awaiting_keyframe = true;
                continue;
            }
        };
        let done = Instant::now();
        for d in out {
            shared
                .decode_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(done.duration_since(t).as_secs_f64() * 1000.0);
            let stamp = read_stamp_luma(&d.y, d.y_stride, d.width, d.height);
            if shared.app_stamps.load(Ordering::Relaxed) {
                app_stamp(shared, stamp, &f, &d, &mut last_stamp, done, epoch);
                *shared.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                continue;
            }
            match stamp {
                Some(s) if s.frame == f.index && s.capture_us == f.capture_us => {
                    if last_stamp.is_some_and(|l| s.frame <= l) {
                        shared.frames_out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    last_stamp = Some(s.frame);
                    shared.frames_decoded.fetch_add(1, Ordering::Relaxed);
                    shared
                        .decoded_ms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(latency_ms(shared, f.capture_us, done, epoch));
                    *shared
                        .sizes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(format!("{}x{}", d.width, d.height))
                        .or_default() += 1;
                }
                Some(s) if Some(s.frame) == last_stamp && s.frame == f.index.wrapping_sub(1) => {
                    tracing::warn!(
                        index = f.index,
                        "decoded frame still shows the previous frame's stamp (the encoder skipped that area)"
                    );
                    shared.frames_stale.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    tracing::warn!(index = f.index, stamp = ?other.map(|s| (s.frame, s.capture_us)), "decoded frame does not carry its own stamp");
                    shared.frames_corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
            *shared.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }
}
