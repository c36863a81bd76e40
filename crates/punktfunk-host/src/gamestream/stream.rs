//! A GameStream streaming session: video, audio and the control stream, on native threads,
//! around one protocol-neutral [`Session`].
//!
//! ```text
//! encode thread:  FrameSource → conversion → encoder → VideoSink (§7 packets + FEC + AES-GCM → UDP)
//! video thread:   waits for the client's ping, drains later pings, watches the session
//! audio thread:   AudioSource → Opus (hard CBR) → AudioSink (RTP + AES-CBC + 4+2 FEC → UDP)
//! input thread:   the session's injector
//! control thread: ENet host on UDP, encrypted control messages → IDR requests, input, keep-alive
//! ```
//!
//! The sockets and the ENet host live as long as the GameStream host; a session (created by
//! RTSP ANNOUNCE) attaches to them, streaming the output of the app session `/launch` made.
//! Video and audio start when the client's ping carrying the session's ping payload arrives; the
//! control stream accepts only the ENet peer whose connect data matches. A session ends when the
//! client disconnects, after 10 s without control traffic, when the app ends or is cancelled, or
//! when the host shuts down (the client is told with a termination message), or when a new
//! session replaces it. The app keeps running after the client disconnects, so `/resume` starts
//! a new session.

use super::nvhttp::GameStream;
use crate::aids::{DatagramOut, Dropping, RumbleEcho};
use crate::dataplane::Destination;
use crate::plan::{self, StreamRequest};
use crate::session::audio::{AudioPlan, AudioSink};
use crate::session::registry::Protocol;
use crate::session::video::{
    thread_cpu_us, EncodeSettings, Encoded, FrameSink, SinkTimes, VideoError,
};
use crate::session::{self, Counters, HostContext, Session, Sinks};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::input::Feedback;
use punktfunk_gamestream::audio::{AudioPacketizer, OpusLayout};
use punktfunk_gamestream::control::{self as ctl, ClientMessage, ControlCipher};
use punktfunk_gamestream::input::{self, Input};
use punktfunk_gamestream::plan::{SessionPlan, VideoCodec};
use punktfunk_gamestream::rtsp::Origin;
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_media::Colour;
use punktfunk_net::UdpSocket;
use rusty_enet as enet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The counters a GameStream session keeps beside the session's own (always in its log line).
const COUNTERS: &[&str] = &[
    "video_datagrams",
    "video_send_errors",
    "idr_requests",
    "control_messages",
    "control_dropped",
    "input_dropped",
    "rumble_sent",
    "skipped_for_idr",
];

pub use punktfunk_gamestream::setup::SessionIds;

/// The Opus stream of a GameStream plan.
pub fn audio_plan(layout: &OpusLayout, packet_ms: u32) -> AudioPlan {
    AudioPlan {
        channels: layout.channels,
        streams: layout.streams,
        coupled: layout.coupled,
        bitrate: layout.bitrate,
        packet_ms,
    }
}

/// The colour of a GameStream plan.
pub fn colour(plan: &SessionPlan) -> Colour {
    match (plan.bt709, plan.full_range) {
        (false, false) => Colour::Bt601Limited,
        (false, true) => Colour::Bt601Full,
        (true, false) => Colour::Bt709Limited,
        (true, true) => Colour::Bt709Full,
    }
}

/// The codec of a GameStream plan.
pub fn codec(plan: &SessionPlan) -> Codec {
    match plan.codec {
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Hevc => Codec::HEVC,
        VideoCodec::Av1 => Codec::AV1,
    }
}

/// One streaming session.
pub struct ActiveSession {
    /// The resolved wire-level plan.
    pub plan: SessionPlan,
    /// The ids SETUP gave out.
    pub ids: SessionIds,
    key: [u8; 16],
    stop: Arc<AtomicBool>,
    /// Why it ended (first reason wins).
    end_reason: Mutex<Option<String>>,
    session: Mutex<Option<Session>>,
    counters: Arc<Counters>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    started: Instant,
    stats_json: Option<std::path::PathBuf>,
    /// The session's place in the host's registry, freed when it finishes.
    ticket: Mutex<Option<session::registry::Ticket>>,
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
        let mut r = crate::lock(&self.end_reason);
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the session is ending.
    pub fn ended(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `f` on the session while it runs.
    fn with<R>(&self, f: impl FnOnce(&Session) -> R) -> Option<R> {
        crate::lock(&self.session).as_ref().map(f)
    }

    fn keyframe(&self) {
        self.with(|s| s.keyframe());
    }

    /// Counts an input message the protocol could not turn into an event.
    fn count_input(&self, kind: &'static str) {
        self.with(|s| s.input().counters().count_kind(kind));
    }

    /// Stops the session's threads, tears the session down and logs its figures.
    fn finish(&self) {
        let threads: Vec<_> = crate::lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        let Some(mut session) = crate::lock(&self.session).take() else {
            return;
        };
        session.stop();
        let stats = session.stats();
        drop(session);
        let reason = crate::lock(&self.end_reason)
            .clone()
            .unwrap_or_else(|| "stopped".into());
        stats.log_end(&reason);
        if let Some(path) = &self.stats_json {
            session::write_stats_json(path, &stats);
        }
        crate::lock(&self.ticket).take();
    }
}

/// The streaming side of the GameStream host: sockets, the control thread and the session slot.
pub struct StreamHost {
    video: Arc<UdpSocket>,
    audio: Arc<UdpSocket>,
    active: Mutex<Option<Arc<ActiveSession>>>,
    ctx: Arc<HostContext>,
    /// Testing aids (all off by default).
    aids: TestAids,
    shutting_down: AtomicBool,
}

/// Testing aids, all off by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestAids {
    /// Fraction of outgoing video datagrams dropped on purpose (0 = none), to watch a client
    /// recover through FEC.
    pub drop_video: f64,
    /// The same for audio datagrams.
    pub drop_audio: f64,
    /// Answer the client's gamepad triggers with rumble ([`crate::aids::RumbleEcho`]).
    pub rumble_echo: bool,
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

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No app session to stream (nothing launched, or it ended).
    #[error("no app is running")]
    NoApp,
    /// The host-wide session limit.
    #[error(transparent)]
    Busy(#[from] session::registry::Busy),
    /// The plan cannot be served here.
    #[error(transparent)]
    Plan(#[from] plan::Refusal),
    /// The session could not be built.
    #[error(transparent)]
    Session(#[from] session::SessionError),
    /// A wire-level part (packetizer) refused the plan.
    #[error("{0}")]
    Protocol(String),
}

impl StreamHost {
    /// Binds video, audio and control and starts the control thread.
    pub fn start(
        ports: &StreamPorts,
        gs: GameStream,
        ctx: Arc<HostContext>,
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
            ctx,
            aids,
            shutting_down: AtomicBool::new(false),
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
        crate::lock(&self.active).clone()
    }

    /// Ends the running session (if any) and waits for its threads.
    pub fn stop_active(&self, reason: &str) {
        let old = crate::lock(&self.active).take();
        if let Some(s) = old {
            s.end(reason);
            s.finish();
        }
    }

    /// Tells the client the host is going away (the control thread sends the termination
    /// message) and ends the session.
    pub fn shutdown(&self, reason: &str) {
        self.shutting_down.store(true, Ordering::Relaxed);
        if let Some(s) = self.active() {
            s.end(reason);
        }
        // Give the control thread a moment to send the termination message.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.active().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop_active(reason);
    }

    /// Starts a session for `plan` on the output of the running app: resolves the session plan,
    /// opens the encoder (its failure is the error) and starts the threads, which wait for the
    /// client's pings.
    pub fn start_session(
        self: &Arc<Self>,
        gs: &GameStream,
        plan: SessionPlan,
        ids: SessionIds,
        key: [u8; 16],
        key_id: u32,
    ) -> Result<Arc<ActiveSession>, StartError> {
        self.stop_active("replaced by a new session");
        let ctx = &self.ctx;
        let (output, launch) = gs.app_output().ok_or(StartError::NoApp)?;
        let ticket = ctx
            .registry
            .admit(Protocol::GameStream, &launch.client_name)?;
        for r in &plan.reasons {
            tracing::info!(plan = %r, "GameStream session plan");
        }
        let request = StreamRequest {
            protocol: Protocol::GameStream,
            client: launch.client_name.clone(),
            session: ids.session_id.clone(),
            mode: Mode::new(plan.width, plan.height, plan.fps),
            codec: codec(&plan),
            bitrate_kbps: plan.bitrate_kbps,
            colour: colour(&plan),
            slices: plan.slices,
            audio: Some(audio_plan(&plan.audio, plan.audio_packet_ms)),
            app: Some(launch.app_title.clone()),
        };
        let splan = plan::resolve(request, &ctx.caps, &ctx.prefs)?;
        splan.log();
        // A resumed stream may ask for another mode than the launch did.
        if let Err(e) = crate::lock(&output).set_mode(splan.request.mode) {
            return Err(StartError::Session(e.into()));
        }
        let mut parts = session::open_parts(&splan, &ctx.caps.env, Some(output), ctx.epoch)?;
        if self.aids.rumble_echo {
            parts.injector = Box::new(RumbleEcho::new(parts.injector));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        counters.declare(COUNTERS);
        let dest: Destination = Arc::new(Mutex::new(None));
        let video_out: Box<dyn DatagramOut> = if self.aids.drop_video > 0.0 {
            Box::new(Dropping::new(
                self.video.clone(),
                self.aids.drop_video,
                0x9E37_79B9_7F4A_7C15,
            ))
        } else {
            Box::new(self.video.clone())
        };
        let sink = VideoSink::new(
            &plan,
            plan.video_encrypted.then_some(&key),
            video_out,
            dest.clone(),
            counters.clone(),
            stop.clone(),
            ctx.epoch,
        )
        .map_err(|e| StartError::Protocol(e.to_string()))?;
        let audio_out: Box<dyn DatagramOut> = if self.aids.drop_audio > 0.0 {
            Box::new(Dropping::new(
                self.audio.clone(),
                self.aids.drop_audio,
                0x2545_F491_4F6C_DD1D,
            ))
        } else {
            Box::new(self.audio.clone())
        };
        let audio_sink = GsAudioSink {
            sock: self.audio.clone(),
            out: audio_out,
            ping_payload: ids.ping_payload,
            to: None,
            pk: AudioPacketizer::new(
                plan.audio_encrypted.then_some(key),
                key_id,
                plan.audio_packet_ms,
            ),
        };
        let settings = EncodeSettings {
            codec: codec(&plan),
            prefer_hardware: ctx.prefer_hardware,
            slices: plan.slices,
            colour: colour(&plan),
            epoch: ctx.epoch,
            min_interval: splan.min_frame_interval,
        };
        let sess = Session::start(
            splan,
            parts,
            Sinks {
                video: Box::new(sink),
                dest: dest.clone(),
                audio: Some(Box::new(audio_sink)),
            },
            settings,
            counters.clone(),
        )?;
        let session = Arc::new(ActiveSession {
            plan,
            ids,
            key,
            stop,
            end_reason: Mutex::new(None),
            session: Mutex::new(Some(sess)),
            counters,
            threads: Mutex::new(Vec::new()),
            started: Instant::now(),
            stats_json: ctx.stats_json.clone(),
            ticket: Mutex::new(None),
        });
        let weak = Arc::downgrade(&session);
        let gone = crate::lock(&session.session)
            .as_ref()
            .map(|x| x.stats())
            .expect("the session was just stored");
        ticket.attach(Arc::new(move || {
            weak.upgrade()
                .and_then(|s| s.with(|x| x.stats()))
                .unwrap_or_else(|| gone.clone())
        }));
        *crate::lock(&session.ticket) = Some(ticket);
        let watcher = {
            let (s, h) = (session.clone(), self.clone());
            std::thread::Builder::new()
                .name("gs-video".into())
                .spawn(move || video_loop(&h, &s, &dest))
                .map_err(|e| StartError::Session(e.into()))?
        };
        crate::lock(&session.threads).push(watcher);
        *crate::lock(&self.active) = Some(session.clone());
        Ok(session)
    }
}

/// Waits for a ping carrying `payload` on `sock` until `deadline` or `stop`; returns its source.
fn wait_for_ping(
    sock: &UdpSocket,
    payload: &[u8; 16],
    stop: &AtomicBool,
    what: &str,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        if pkt.windows(16).any(|w| w == payload.as_slice()) {
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
/// destination is known), then drains the client's later pings and ends the session if its
/// video or audio fails.
fn video_loop(host: &StreamHost, s: &ActiveSession, dest: &Destination) {
    let Some(to) = wait_for_ping(&host.video, &s.ids.ping_payload, &s.stop, "video") else {
        s.end(&format!(
            "no video ping within {} s",
            START_TIMEOUT.as_secs()
        ));
        return;
    };
    *crate::lock(dest) = Some(to);
    while !s.ended() {
        if let Some(failure) = s.with(|x| x.failure()).flatten() {
            s.end(&format!("stream failed: {failure}"));
            break;
        }
        // The client pings every 500 ms for as long as it streams.
        let _ = host.video.wait_readable(Duration::from_millis(100));
        drain(&host.video);
    }
}

/// The GameStream video send path, run on the encode thread for each encoded frame: §7
/// packetization, FEC, encryption, paced batched sends. The send benchmark drives this type.
pub struct VideoSink {
    out: Box<dyn DatagramOut>,
    dest: Destination,
    pk: VideoPacketizer,
    codec: VideoCodec,
    dlen: usize,
    buf: Vec<u8>,
    /// Frame number of the last frame sent.
    index: u32,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
}

impl VideoSink {
    /// A sink for `plan`'s video (sealed with `key` when given), sending through `out` to
    /// `dest` once set; it ends when `stop` is set.
    pub fn new(
        plan: &SessionPlan,
        key: Option<&[u8; 16]>,
        out: Box<dyn DatagramOut>,
        dest: Destination,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
        epoch: Instant,
    ) -> Result<VideoSink, punktfunk_gamestream::video::VideoError> {
        let pk = VideoPacketizer::new(plan.packet_size, plan.fec_percent, plan.min_parity, key)?;
        Ok(VideoSink {
            dlen: pk.datagram_len(),
            out,
            dest,
            pk,
            codec: plan.codec,
            buf: Vec::new(),
            index: 0,
            counters,
            stop,
            epoch,
        })
    }
}

impl FrameSink for VideoSink {
    fn deliver(&mut self, f: Encoded, times: &mut SinkTimes) -> Result<bool, VideoError> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(to) = *crate::lock(&self.dest) else {
            return Ok(true);
        };
        // After an IDR request the client discards everything until the IDR: P-frames still
        // coming from before are not worth the bandwidth or the delay they add.
        if f.before_requested_keyframe {
            self.counters.add("skipped_for_idr", 1);
            return Ok(true);
        }
        let wall = Instant::now();
        let cpu = thread_cpu_us();
        self.index = self.index.wrapping_add(1);
        let now_us = Instant::now().duration_since(self.epoch).as_micros() as u64;
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
        let (params, at) = match self.codec {
            VideoCodec::H264 => strip_leading_sei(false, &f.data),
            VideoCodec::Hevc => strip_leading_sei(true, &f.data),
            VideoCodec::Av1 => (Vec::new(), 0),
        };
        if let Err(e) = self
            .pk
            .packetize_parts(&[&params, &f.data[at..]], info, &mut self.buf)
        {
            return Err(VideoError::Send(format!(
                "frame {} not packetized: {e}",
                self.index
            )));
        }
        let dlen = self.dlen;
        let count = self.buf.len() / dlen;
        let mut sent_cpu = thread_cpu_us().saturating_sub(cpu);
        let mut errors = 0;
        // Bursts of at most 64 datagrams, spaced so a keyframe does not flood the link.
        for (i, burst) in self.buf.chunks(BURST * dlen).enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_secs_f64(
                    (BURST * dlen) as f64 / PACE_BYTES_PER_SEC,
                ));
            }
            let c = thread_cpu_us();
            if self.out.send_batch(to, burst, dlen).is_err() {
                errors += 1;
            }
            sent_cpu += thread_cpu_us().saturating_sub(c);
        }
        self.counters.add("video_datagrams", count as u64);
        if errors > 0 {
            self.counters.add("video_send_errors", errors);
        }
        times.send_cpu_us = sent_cpu as u32;
        times.send_us = wall.elapsed().as_micros() as u32;
        Ok(true)
    }
}

/// GameStream audio: waits for the client's audio ping, then seals each Opus packet into RTP
/// (with the 4+2 FEC) and sends it there.
struct GsAudioSink {
    sock: Arc<UdpSocket>,
    out: Box<dyn DatagramOut>,
    ping_payload: [u8; 16],
    to: Option<SocketAddr>,
    pk: AudioPacketizer,
}

impl AudioSink for GsAudioSink {
    fn ready(&mut self, stop: &AtomicBool) -> bool {
        self.to = wait_for_ping(&self.sock, &self.ping_payload, stop, "audio");
        self.to.is_some()
    }

    fn deliver(&mut self, packet: &[u8]) -> bool {
        let Some(to) = self.to else { return false };
        for dg in self.pk.push(packet) {
            let _ = self.out.send_batch(to, &dg, dg.len());
        }
        drain(&self.sock);
        true
    }
}

struct Attached {
    session: Arc<ActiveSession>,
    peer: enet::PeerID,
    cipher: ControlCipher,
    last_heard: Instant,
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
                } else if host.shutting_down.load(Ordering::Relaxed) {
                    terminate = Some("the host is shutting down");
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
    a.session.with(|s| s.input().take_feedback(buf));
    for f in buf.drain(..) {
        let Feedback::Rumble { pad, low, high } = f;
        let msg = a
            .cipher
            .seal(ctl::kind::RUMBLE, &ctl::rumble(u16::from(pad), low, high));
        let sent = enet_host
            .peer_mut(a.peer)
            .send(0, &enet::Packet::reliable(msg.as_slice()));
        if sent.is_ok() {
            a.session.counters.add("rumble_sent", 1);
            tracing::debug!(pad, low, high, "rumble sent");
        }
    }
}

fn handle_control(a: &mut Attached, packet: &[u8]) {
    let s = &a.session;
    let msg = match a.cipher.open(packet) {
        Ok(m) => m,
        Err(e) => {
            s.counters.add("control_dropped", 1);
            tracing::warn!(error = %e, "control packet dropped");
            return;
        }
    };
    s.counters.add("control_messages", 1);
    match ClientMessage::parse(&msg) {
        Ok(ClientMessage::RequestIdr) | Ok(ClientMessage::InvalidateRefs { .. }) => {
            s.counters.add("idr_requests", 1);
            tracing::debug!("IDR requested by the client");
            s.keyframe();
        }
        Ok(ClientMessage::Input(p)) => match input::decode(&p) {
            Ok(Input::Event(ev)) => {
                s.with(|x| x.input().inject(ev));
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
                s.counters.add("input_dropped", 1);
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
            s.counters.add("control_dropped", 1);
            tracing::debug!(error = %e, kind = msg.kind, "control message dropped");
        }
    }
}
