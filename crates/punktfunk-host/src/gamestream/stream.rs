//! A GameStream streaming session: video, audio and the control stream, on native threads.
//!
//! ```text
//! encode thread:  source → conversion → encoder → §7 packetizer + FEC + AES-GCM → UDP
//! video thread:   waits for the client's ping, drains later pings, watches the encoder
//! audio thread:   AudioSource → Opus (hard CBR) → RTP + AES-CBC + 4+2 FEC → UDP
//! control thread: ENet host on UDP, encrypted control messages → IDR requests, input, keep-alive
//! ```
//!
//! The sockets and the ENet host live as long as the GameStream host; a session (created by
//! RTSP ANNOUNCE) attaches to them. Video and audio start when the client's ping carrying the
//! session's ping payload arrives; the control stream accepts only the ENet peer whose connect
//! data matches. A session ends when the client disconnects, after 10 s without control
//! traffic, when the app ends or is cancelled (the client is told with a termination message),
//! or when a new session replaces it. The app keeps running after the client disconnects, so
//! `/resume` starts a new session.

use super::nvhttp::GameStream;
use crate::audio::{AudioSource, OpusEncoder, ToneSource, SAMPLE_RATE};
use crate::dataplane::Destination;
use crate::inject::{InputInjector, LogInjector, RumbleEchoInjector};
use crate::pipeline::{
    thread_cpu_us, Command, EncodeSettings, EncodeThread, Encoded, FrameSink, StageTimes,
};
use crate::stats::Histogram;
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::input::Feedback;
use punktfunk_gamestream::audio::AudioPacketizer;
use punktfunk_gamestream::control::{self as ctl, ClientMessage, ControlCipher};
use punktfunk_gamestream::input::{self, Input};
use punktfunk_gamestream::plan::{SessionPlan, VideoCodec};
use punktfunk_gamestream::rtsp::Origin;
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_media::Colour;
use punktfunk_net::{ImpairConfig, Impairment, UdpSocket};
use rusty_enet as enet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a new session waits for the client's pings and control connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A session without control traffic for this long ends.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams per paced burst.
const BURST: usize = 64;
/// Pacing rate for video bursts, bytes per second (about 800 Mbit/s).
const PACE_BYTES_PER_SEC: f64 = 100e6;

pub use punktfunk_gamestream::setup::SessionIds;

/// Counters of one session, logged when it ends.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Frames sent.
    pub frames: AtomicU64,
    /// Keyframes sent.
    pub keyframes: AtomicU64,
    /// Video datagrams sent.
    pub video_datagrams: AtomicU64,
    /// Video datagrams the socket refused (full buffer).
    pub video_send_errors: AtomicU64,
    /// Audio packets (Opus frames) sent.
    pub audio_packets: AtomicU64,
    /// IDR requests received.
    pub idr_requests: AtomicU64,
    /// Encoded P-frames not sent because an IDR was on its way (the client drops them anyway).
    pub skipped_for_idr: AtomicU64,
    /// Control messages received.
    pub control_messages: AtomicU64,
    /// Control packets dropped (bad envelope or authentication).
    pub control_dropped: AtomicU64,
    /// Input events handed to the injector.
    pub input_events: AtomicU64,
    /// Input packets dropped as malformed.
    pub input_dropped: AtomicU64,
    /// Send-path time per frame (packetize + FEC + encrypt + send), µs, CPU time.
    pub send_cpu_us: Mutex<Histogram>,
    /// Rumble messages sent to the client.
    pub rumble_sent: AtomicU64,
}

/// One streaming session.
pub struct ActiveSession {
    /// The resolved plan.
    pub plan: SessionPlan,
    /// The ids SETUP gave out.
    pub ids: SessionIds,
    key: [u8; 16],
    key_id: u32,
    stop: AtomicBool,
    /// An IDR was requested and has not been sent yet.
    awaiting_idr: AtomicBool,
    /// Why it ended (first reason wins).
    end_reason: Mutex<Option<String>>,
    commands: Mutex<Option<Sender<Command>>>,
    /// Counters.
    pub stats: SessionStats,
    input_kinds: Mutex<BTreeMap<&'static str, u64>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    started: Instant,
}

impl std::fmt::Debug for ActiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveSession")
            .field("ids", &self.ids)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl ActiveSession {
    /// Asks every thread of the session to stop; the first reason is the one logged.
    pub fn end(&self, reason: &str) {
        let mut r = self.end_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the session is ending.
    pub fn ended(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn keyframe(&self) {
        self.awaiting_idr.store(true, Ordering::Relaxed);
        if let Some(c) = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = c.send(Command::Keyframe);
        }
    }

    fn count_input(&self, kind: &'static str) {
        *self
            .input_kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Joins the session's threads and logs its figures.
    fn finish(&self) {
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
        let s = &self.stats;
        let cpu = s
            .send_cpu_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let inputs = self
            .input_kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            reason = self
                .end_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_deref()
                .unwrap_or("stopped"),
            seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()),
            frames = s.frames.load(Ordering::Relaxed),
            keyframes = s.keyframes.load(Ordering::Relaxed),
            video_datagrams = s.video_datagrams.load(Ordering::Relaxed),
            video_send_errors = s.video_send_errors.load(Ordering::Relaxed),
            audio_packets = s.audio_packets.load(Ordering::Relaxed),
            idr_requests = s.idr_requests.load(Ordering::Relaxed),
            skipped_for_idr = s.skipped_for_idr.load(Ordering::Relaxed),
            control_messages = s.control_messages.load(Ordering::Relaxed),
            control_dropped = s.control_dropped.load(Ordering::Relaxed),
            input_events = s.input_events.load(Ordering::Relaxed),
            input_dropped = s.input_dropped.load(Ordering::Relaxed),
            rumble_sent = s.rumble_sent.load(Ordering::Relaxed),
            send_cpu_p50_us = cpu.percentile(50.0),
            send_cpu_p99_us = cpu.percentile(99.0),
            inputs = %inputs,
            "GameStream session ended"
        );
    }
}

/// The streaming side of the GameStream host: sockets, the control thread and the session slot.
pub struct StreamHost {
    video: Arc<UdpSocket>,
    audio: Arc<UdpSocket>,
    active: Mutex<Option<Arc<ActiveSession>>>,
    prefer_hardware: bool,
    epoch: Instant,
    /// Testing aids (all off by default).
    aids: TestAids,
}

/// Testing aids, all off by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestAids {
    /// Fraction of outgoing video datagrams dropped on purpose (0 = none), to watch a client
    /// recover through FEC.
    pub drop_video: f64,
    /// The same for audio datagrams.
    pub drop_audio: f64,
    /// Answer the client's gamepad triggers with rumble ([`crate::inject::RumbleEchoInjector`]).
    pub rumble_echo: bool,
}

/// The project's impairment model with random loss only, for the drop testing aids (`None`
/// when nothing is dropped).
fn dropper(fraction: f64, seed: u64) -> Option<Impairment> {
    (fraction > 0.0).then(|| {
        Impairment::new(ImpairConfig {
            loss: fraction,
            seed,
            ..Default::default()
        })
    })
}

/// Whether `dropper` lets `datagram` through (no delay is configured: what passes comes straight
/// back out).
fn passes(dropper: &mut Option<Impairment>, datagram: &[u8]) -> bool {
    let Some(imp) = dropper else {
        return true;
    };
    let now = Instant::now();
    imp.push(now, datagram.to_vec());
    imp.poll(now).is_some()
}

/// Ports and options of the streaming side.
#[derive(Debug, Clone)]
pub struct StreamPorts {
    /// Video UDP address.
    pub video: SocketAddr,
    /// Control (ENet) UDP address.
    pub control: SocketAddr,
    /// Audio UDP address.
    pub audio: SocketAddr,
}

impl StreamHost {
    /// Binds video, audio and control and starts the control thread.
    pub fn start(
        ports: &StreamPorts,
        gs: GameStream,
        prefer_hardware: bool,
        aids: TestAids,
    ) -> anyhow::Result<Arc<StreamHost>> {
        use anyhow::Context;
        let video = Arc::new(
            UdpSocket::bind(ports.video)
                .with_context(|| format!("binding GameStream video on {}", ports.video))?,
        );
        let audio = Arc::new(
            UdpSocket::bind(ports.audio)
                .with_context(|| format!("binding GameStream audio on {}", ports.audio))?,
        );
        let control = std::net::UdpSocket::bind(ports.control)
            .with_context(|| format!("binding GameStream control on {}", ports.control))?;
        video.set_read_timeout(Some(Duration::from_millis(100)))?;
        audio.set_read_timeout(Some(Duration::from_millis(100)))?;
        let host = Arc::new(StreamHost {
            video,
            audio,
            active: Mutex::new(None),
            prefer_hardware,
            epoch: Instant::now(),
            aids,
        });
        let enet_host = enet::Host::new(
            control,
            enet::HostSettings {
                peer_limit: 8,
                channel_limit: enet::consts::PROTOCOL_MAXIMUM_CHANNEL_COUNT as usize,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("creating the ENet host: {e:?}"))?;
        let h = host.clone();
        std::thread::Builder::new()
            .name("gs-control".into())
            .spawn(move || control_loop(enet_host, &h, &gs))?;
        tracing::info!(
            video = %ports.video,
            control = %ports.control,
            audio = %ports.audio,
            "GameStream streaming ports bound"
        );
        Ok(host)
    }

    /// The running session, if any.
    pub fn active(&self) -> Option<Arc<ActiveSession>> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends the running session (if any) and waits for its threads.
    pub fn stop_active(&self, reason: &str) {
        let old = self.active.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = old {
            s.end(reason);
            s.finish();
        }
    }

    /// Starts a session for `plan`: opens the encoder (its failure is the error) and starts the
    /// video and audio threads, which wait for the client's pings.
    pub fn start_session(
        self: &Arc<Self>,
        plan: SessionPlan,
        ids: SessionIds,
        key: [u8; 16],
        key_id: u32,
    ) -> Result<Arc<ActiveSession>, String> {
        self.stop_active("replaced by a new session");
        for r in &plan.reasons {
            tracing::info!(plan = %r, "GameStream session plan");
        }
        let codec = match plan.codec {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Hevc => Codec::HEVC,
            VideoCodec::Av1 => Codec::AV1,
        };
        let dest: Destination = Arc::new(Mutex::new(None));
        let packetizer = VideoPacketizer::new(
            plan.packet_size,
            plan.fec_percent,
            plan.min_parity,
            plan.video_encrypted.then_some(&key),
        )
        .map_err(|e| e.to_string())?;
        let opus = OpusEncoder::new(&plan.audio)?;
        let session = Arc::new(ActiveSession {
            plan,
            ids,
            key,
            key_id,
            stop: AtomicBool::new(false),
            awaiting_idr: AtomicBool::new(false),
            end_reason: Mutex::new(None),
            // Filled once the encode thread runs (nothing asks for a keyframe before that).
            commands: Mutex::new(None),
            stats: SessionStats::default(),
            input_kinds: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let plan = &session.plan;
        let sink = VideoSink {
            host: self.clone(),
            session: session.clone(),
            dest: dest.clone(),
            dlen: packetizer.datagram_len(),
            pk: packetizer,
            out: Vec::new(),
            index: 0,
            dropper: dropper(self.aids.drop_video, 0x9E37_79B9_7F4A_7C15),
            survivors: Vec::new(),
        };
        let enc = EncodeThread::start(
            EncodeSettings {
                codec,
                prefer_hardware: self.prefer_hardware,
                slices: plan.slices,
                colour: match (plan.bt709, plan.full_range) {
                    (false, false) => Colour::Bt601Limited,
                    (false, true) => Colour::Bt601Full,
                    (true, false) => Colour::Bt709Limited,
                    (true, true) => Colour::Bt709Full,
                },
                epoch: self.epoch,
            },
            Mode::new(plan.width, plan.height, plan.fps),
            plan.bitrate_kbps,
            dest.clone(),
            Box::new(sink),
            Arc::new(Mutex::new(StageTimes::default())),
        )?;
        *session.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(enc.commands.clone());
        let video = {
            let (s, h) = (session.clone(), self.clone());
            std::thread::Builder::new()
                .name("gs-video".into())
                .spawn(move || video_loop(&h, &s, enc, &dest))
                .map_err(|e| e.to_string())?
        };
        let audio = {
            let (s, h) = (session.clone(), self.clone());
            std::thread::Builder::new()
                .name("gs-audio".into())
                .spawn(move || {
                    let tone = ToneSource::new(usize::from(s.plan.audio.channels));
                    audio_loop(&h, &s, opus, Box::new(tone))
                })
                .map_err(|e| e.to_string())?
        };
        session
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([video, audio]);
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        Ok(session)
    }
}

/// Waits for a ping carrying `payload` on `sock`; returns its source.
fn wait_for_ping(sock: &UdpSocket, session: &ActiveSession, what: &str) -> Option<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut buf = [0u8; 2048];
    while !session.ended() {
        if Instant::now() > deadline {
            session.end(&format!(
                "no {what} ping within {} s",
                START_TIMEOUT.as_secs()
            ));
            return None;
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        if pkt
            .windows(16)
            .any(|w| w == session.ids.ping_payload.as_slice())
        {
            tracing::info!(%from, "GameStream {what} ping received; streaming {what} there");
            return Some(from);
        }
        tracing::debug!(%from, len = n, "{what} datagram without this session's ping payload dropped");
    }
    None
}

/// Reads and discards whatever is waiting on `sock` (the client pings every 500 ms).
fn drain(sock: &UdpSocket) {
    let mut buf = [0u8; 64];
    while sock.wait_readable(Duration::ZERO).unwrap_or(false) {
        if sock.recv_from(&mut buf).is_err() {
            break;
        }
    }
}

/// Watches a session's video: waits for the client's ping (the encoder starts once the
/// destination is known), then drains the client's later pings and ends the session if the
/// encoder fails; stops the encoder when the session ends.
fn video_loop(host: &StreamHost, s: &ActiveSession, mut enc: EncodeThread, dest: &Destination) {
    let Some(to) = wait_for_ping(&host.video, s, "video") else {
        enc.stop();
        return;
    };
    *dest.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
    while !s.ended() {
        if enc.finished() {
            let failure = enc
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            s.end(&match failure {
                Some(e) => format!("encoder failed: {e}"),
                None => "encoder stopped".into(),
            });
            break;
        }
        // The client pings every 500 ms for as long as it streams.
        let _ = host.video.wait_readable(Duration::from_millis(100));
        drain(&host.video);
    }
    *s.commands.lock().unwrap_or_else(|e| e.into_inner()) = None;
    enc.stop();
}

/// The video send path, run on the encode thread for each encoded frame: §7 packetization,
/// FEC, encryption, paced batched sends.
struct VideoSink {
    host: Arc<StreamHost>,
    session: Arc<ActiveSession>,
    dest: Destination,
    pk: VideoPacketizer,
    dlen: usize,
    out: Vec<u8>,
    /// Frame number of the last frame sent.
    index: u32,
    dropper: Option<Impairment>,
    survivors: Vec<u8>,
}

impl FrameSink for VideoSink {
    fn deliver(&mut self, f: Encoded) -> Result<bool, String> {
        let (host, s) = (&*self.host, &*self.session);
        if s.ended() {
            return Ok(false);
        }
        let Some(to) = *self.dest.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(true);
        };
        // After an IDR request the client discards everything until the IDR: P-frames still
        // in flight from before are not worth the bandwidth or the delay they add.
        if f.keyframe {
            s.awaiting_idr.store(false, Ordering::Relaxed);
        } else if s.awaiting_idr.load(Ordering::Relaxed) {
            s.stats.skipped_for_idr.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let cpu = thread_cpu_us();
        self.index = self.index.wrapping_add(1);
        let now_us = Instant::now().duration_since(host.epoch).as_micros() as u64;
        let info = FrameInfo {
            index: self.index,
            kind: if f.keyframe {
                frame_type::IDR
            } else {
                frame_type::P
            },
            rtp_timestamp: (f.capture_us * 9 / 100) as u32,
            host_latency: (now_us.saturating_sub(f.capture_us) / 100).min(u64::from(u16::MAX))
                as u16,
        };
        // Leading SEI/AUD units go: the client wants the IDR slice in a keyframe's first packet.
        let (params, at) = match s.plan.codec {
            VideoCodec::H264 => strip_leading_sei(false, &f.data),
            VideoCodec::Hevc => strip_leading_sei(true, &f.data),
            VideoCodec::Av1 => (Vec::new(), 0),
        };
        if let Err(e) = self
            .pk
            .packetize_parts(&[&params, &f.data[at..]], info, &mut self.out)
        {
            tracing::warn!(frame = self.index, error = %e, "frame not sent");
            s.keyframe();
            return Ok(true);
        }
        let dlen = self.dlen;
        let mut payload: &[u8] = &self.out;
        if self.dropper.is_some() {
            self.survivors.clear();
            for dg in self.out.chunks(dlen) {
                if passes(&mut self.dropper, dg) {
                    self.survivors.extend_from_slice(dg);
                }
            }
            payload = &self.survivors;
        }
        let count = self.out.len() / dlen;
        let mut sent_cpu = thread_cpu_us().saturating_sub(cpu);
        // Bursts of at most 64 datagrams, spaced so a keyframe does not flood the link.
        for (i, burst) in payload.chunks(BURST * dlen).enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_secs_f64(
                    (BURST * dlen) as f64 / PACE_BYTES_PER_SEC,
                ));
            }
            let c = thread_cpu_us();
            if host.video.send_batch(to, burst, dlen).is_err() {
                s.stats.video_send_errors.fetch_add(1, Ordering::Relaxed);
            }
            sent_cpu += thread_cpu_us().saturating_sub(c);
        }
        let st = &s.stats;
        st.frames.fetch_add(1, Ordering::Relaxed);
        st.keyframes
            .fetch_add(u64::from(f.keyframe), Ordering::Relaxed);
        st.video_datagrams
            .fetch_add(count as u64, Ordering::Relaxed);
        st.send_cpu_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(sent_cpu as u32);
        Ok(true)
    }
}

fn audio_loop(
    host: &StreamHost,
    s: &ActiveSession,
    mut opus: OpusEncoder,
    mut source: Box<dyn AudioSource>,
) {
    let Some(to) = wait_for_ping(&host.audio, s, "audio") else {
        return;
    };
    let ms = s.plan.audio_packet_ms;
    let samples = (SAMPLE_RATE / 1000 * ms) as usize;
    let channels = source.channels();
    let mut pcm = vec![0i16; samples * channels];
    let mut buf = vec![0u8; 1400];
    let mut pk = AudioPacketizer::new(s.plan.audio_encrypted.then_some(s.key), s.key_id, ms);
    let mut dropper = dropper(host.aids.drop_audio, 0x2545_F491_4F6C_DD1D);
    tracing::info!(
        source = source.name(),
        packet_ms = ms,
        channels = channels,
        bitrate = s.plan.audio.bitrate,
        encrypted = s.plan.audio_encrypted,
        "GameStream audio started"
    );
    let interval = Duration::from_millis(u64::from(ms));
    let mut next = Instant::now();
    while !s.ended() {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > interval * 20 {
            next = now; // stalled (machine overloaded): skip ahead instead of bursting
        }
        next += interval;
        source.read(&mut pcm);
        let n = match opus.encode(&pcm, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                s.end(&format!("Opus encoding failed: {e}"));
                break;
            }
        };
        for dg in pk.push(&buf[..n]) {
            if passes(&mut dropper, &dg) {
                let _ = host.audio.send_to(&dg, to);
            }
        }
        s.stats.audio_packets.fetch_add(1, Ordering::Relaxed);
        drain(&host.audio);
    }
}

struct Attached {
    session: Arc<ActiveSession>,
    peer: enet::PeerID,
    cipher: ControlCipher,
    last_heard: Instant,
    injector: Box<dyn InputInjector>,
}

fn control_loop(
    mut enet_host: enet::Host<std::net::UdpSocket>,
    host: &StreamHost,
    gs: &GameStream,
) {
    let mut attached: Option<Attached> = None;
    let mut last_check = Instant::now();
    let mut feedback = Vec::new();
    loop {
        let mut busy = false;
        loop {
            let ev = match enet_host.service() {
                Ok(Some(ev)) => ev.no_ref(),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = ?e, "ENet service error");
                    break;
                }
            };
            busy = true;
            match ev {
                enet::EventNoRef::Connect { peer, data } => {
                    let session = host.active().filter(|s| !s.ended());
                    match session {
                        Some(s) if s.ids.connect_data == data && attached.is_none() => {
                            tracing::info!(peer = peer.0, "GameStream control stream connected");
                            let p = enet_host.peer_mut(peer);
                            p.set_timeout(2, 10_000, 10_000);
                            attached = Some(Attached {
                                cipher: ControlCipher::new(&s.key, Origin::Host),
                                session: s,
                                peer,
                                last_heard: Instant::now(),
                                injector: if host.aids.rumble_echo {
                                    Box::new(RumbleEchoInjector::default())
                                } else {
                                    Box::new(LogInjector::default())
                                },
                            });
                        }
                        _ => {
                            tracing::info!(
                                peer = peer.0,
                                data,
                                "ENet connection without a matching session refused"
                            );
                            enet_host.peer_mut(peer).disconnect_now(0);
                        }
                    }
                }
                enet::EventNoRef::Disconnect { peer, .. } => {
                    if let Some(a) = attached.as_ref().filter(|a| a.peer == peer) {
                        tracing::info!("GameStream client disconnected the control stream");
                        a.session.end("client disconnected");
                        attached = None;
                        host.stop_active("client disconnected");
                    }
                }
                enet::EventNoRef::Receive { peer, packet, .. } => {
                    let Some(a) = attached.as_mut().filter(|a| a.peer == peer) else {
                        continue;
                    };
                    a.last_heard = Instant::now();
                    handle_control(a, packet.data());
                }
            }
        }
        if let Some(a) = attached.as_mut() {
            send_feedback(&mut enet_host, a, &mut feedback);
        }
        // Once per 100 ms: session end, app end, silence.
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            let mut terminate: Option<&str> = None;
            if let Some(a) = attached.as_ref() {
                let launch = gs.session();
                if launch
                    .as_ref()
                    .is_none_or(|l| l.request.rikey != a.session.key)
                {
                    terminate = Some("the app ended or the session was cancelled");
                } else if a.last_heard.elapsed() > SILENCE_TIMEOUT {
                    terminate = Some("no control traffic for 10 s");
                } else if a.session.ended() {
                    terminate = Some("session ended");
                }
            } else if let Some(s) = host.active() {
                if gs.session().is_none_or(|l| l.request.rikey != s.key) {
                    s.end("the app ended or the session was cancelled");
                    host.stop_active("the app ended or the session was cancelled");
                } else if s.ended() || s.started.elapsed() > START_TIMEOUT {
                    host.stop_active("no control connection within 10 s");
                }
            }
            if let Some((reason, mut a)) = terminate.zip(attached.take_if(|_| terminate.is_some()))
            {
                let msg = a.cipher.seal(
                    ctl::kind::TERMINATION,
                    &ctl::termination(ctl::TERMINATION_GRACEFUL),
                );
                let p = enet_host.peer_mut(a.peer);
                let _ = p.send(0, &enet::Packet::reliable(msg.as_slice()));
                p.disconnect_later(0);
                enet_host.flush();
                tracing::info!(reason, "GameStream session terminated by the host");
                a.session.end(reason);
                host.stop_active(reason);
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Forwards the injector's feedback to the client: rumble as sealed 0x010b messages.
fn send_feedback(
    enet_host: &mut enet::Host<std::net::UdpSocket>,
    a: &mut Attached,
    buf: &mut Vec<Feedback>,
) {
    a.injector.feedback(buf);
    for f in buf.drain(..) {
        let Feedback::Rumble { pad, low, high } = f;
        let msg = a
            .cipher
            .seal(ctl::kind::RUMBLE, &ctl::rumble(u16::from(pad), low, high));
        let sent = enet_host
            .peer_mut(a.peer)
            .send(0, &enet::Packet::reliable(msg.as_slice()));
        if sent.is_ok() {
            a.session.stats.rumble_sent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pad, low, high, "rumble sent");
        }
    }
}

fn handle_control(a: &mut Attached, packet: &[u8]) {
    let s = &a.session;
    let msg = match a.cipher.open(packet) {
        Ok(m) => m,
        Err(e) => {
            s.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "control packet dropped");
            return;
        }
    };
    s.stats.control_messages.fetch_add(1, Ordering::Relaxed);
    match ClientMessage::parse(&msg) {
        Ok(ClientMessage::RequestIdr) | Ok(ClientMessage::InvalidateRefs { .. }) => {
            s.stats.idr_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("IDR requested by the client");
            s.keyframe();
        }
        Ok(ClientMessage::Input(p)) => match input::decode(&p) {
            Ok(Input::Event(ev)) => {
                s.stats.input_events.fetch_add(1, Ordering::Relaxed);
                s.count_input(event_kind(&ev));
                a.injector.inject(&ev);
            }
            Ok(Input::Text(t)) => {
                s.count_input("text");
                tracing::debug!(text = %t, "text input (no text injector yet)");
            }
            Ok(Input::UnmappedKey(vk)) => {
                s.count_input("unmapped-key");
                tracing::debug!(vk, "key without an evdev mapping ignored");
            }
            Ok(Input::Unmodelled(what)) => s.count_input(what),
            Ok(Input::Unknown(m)) => {
                s.count_input("unknown");
                tracing::debug!(magic = format!("{m:#x}"), "unknown input type ignored");
            }
            Err(e) => {
                s.stats.input_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "input packet dropped");
            }
        },
        Ok(ClientMessage::FecStatus {
            frame,
            received_data,
            received_parity,
            total_data,
        }) => {
            tracing::debug!(
                frame,
                received_data,
                received_parity,
                total_data,
                "client FEC status"
            );
        }
        Ok(_) => {}
        Err(e) => {
            s.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, kind = msg.kind, "control message dropped");
        }
    }
}

fn event_kind(ev: &punktfunk_core::input::InputEvent) -> &'static str {
    use punktfunk_core::input::InputEvent as E;
    match ev {
        E::Key { .. } => "key",
        E::MouseMove { .. } => "mouse-move",
        E::MouseAbsolute { .. } => "mouse-abs",
        E::MouseButton { .. } => "mouse-button",
        E::Scroll { .. } => "scroll",
        E::Gamepad(_) => "gamepad",
        E::GamepadPresence { .. } => "gamepad-presence",
        E::Touch { .. } => "touch",
    }
}
