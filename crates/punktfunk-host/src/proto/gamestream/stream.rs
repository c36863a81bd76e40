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
//! Video and audio start when the client's ping carrying the session's ping payload arrives from
//! the launching client's address; the control port's datagrams are screened
//! ([`super::screened`]) so only that address's connection request with the session's connect
//! data reaches the ENet host, and a peer that does not finish connecting within
//! [`HALF_OPEN_LIMIT`] is reset. Floods of the media ports are read and dropped in bounded
//! batches, never on the send path's time. A session ends when the
//! client disconnects, after 10 s without control traffic, when the app ends or is cancelled, or
//! when the host shuts down (the client is told with a termination message), or when a new
//! session replaces it. The app keeps running after the client disconnects, so `/resume` starts
//! a new session.

use super::nvhttp::GameStream;
use super::screened::{ScreenHandle, ScreenedSocket};
use crate::aids::{DatagramOut, Dropping, RumbleEcho};
use crate::plan::{self, StreamRequest};
use crate::proto::punktfunk1::dataplane::Destination;
use crate::session::audio::{AudioPlan, AudioSink};
use crate::session::registry::Protocol;
use crate::session::video::{
    thread_cpu_us, EncodeSettings, Encoded, FrameSink, SinkTimes, VideoError,
};
use crate::session::{self, Counters, HostContext, Session, Sinks};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::input::InputEvent;
use punktfunk_gamestream::audio::{AudioPacketizer, OpusLayout};
use punktfunk_gamestream::control_session::{
    ControlEvent, ControlSession, EndReason, PeerId, Verdict,
};
use punktfunk_gamestream::enet_gate::Expected;
use punktfunk_gamestream::plan::{SessionPlan, VideoCodec};
use punktfunk_gamestream::video::{frame_type, strip_leading_sei, FrameInfo, VideoPacketizer};
use punktfunk_media::Colour;
use punktfunk_net::UdpSocket;
use rusty_enet as enet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a new session waits for the client's pings (its control connection has the same
/// deadline, kept by the control machine).
pub const START_TIMEOUT: Duration = punktfunk_gamestream::control_session::START_TIMEOUT;
/// A peer that has not finished the ENet handshake within this long is reset (a real client
/// needs one round trip).
pub const HALF_OPEN_LIMIT: Duration = Duration::from_secs(2);
/// Most datagrams read and dropped from a media port per drain (the rest wait, or the kernel
/// drops them once the socket's buffer is full).
const DRAIN_BUDGET: usize = 64;
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
    "control_screened",
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
    /// The launching client's address: pings and the control connection come from it.
    pub client: std::net::IpAddr,
    key: [u8; 16],
    stop: Arc<AtomicBool>,
    /// Why it ended (first reason wins).
    end_reason: Mutex<Option<String>>,
    session: Mutex<Option<Session>>,
    counters: Arc<Counters>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held for the whole teardown, so a second caller of [`Self::finish`] returns only once
    /// the first is done (the figures are logged and written).
    teardown: Mutex<()>,
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

    /// Stops the session's threads, tears the session down and logs its figures; a caller
    /// that finds the teardown under way waits for it.
    fn finish(&self) {
        let _teardown = crate::lock(&self.teardown);
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
        let (control, screen) = super::screened::ScreenedSocket::new(control);
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
            .spawn(move || control_loop(enet_host, screen, &h, &gs))?;
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
        let Some(s) = self.active() else { return };
        s.end(reason);
        // Give the control thread a moment to send the termination message.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.active().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop_active(reason);
        // The control thread may have taken the session from the slot and still be tearing it
        // down: the host must not exit before its figures are logged and written.
        s.finish();
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
        let video_out = sender(&self.video, self.aids.drop_video, 0x9E37_79B9_7F4A_7C15);
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
        let audio_out = sender(&self.audio, self.aids.drop_audio, 0x2545_F491_4F6C_DD1D);
        let audio_sink = GsAudioSink {
            sock: self.audio.clone(),
            out: audio_out,
            ping_payload: ids.ping_payload,
            client: launch.client_addr,
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
            client: launch.client_addr,
            key,
            stop,
            end_reason: Mutex::new(None),
            session: Mutex::new(Some(sess)),
            counters,
            threads: Mutex::new(Vec::new()),
            teardown: Mutex::new(()),
            started: Instant::now(),
            stats_json: ctx.stats_json.clone(),
            ticket: Mutex::new(None),
        });
        let weak = Arc::downgrade(&session);
        ticket.attach(Arc::new(move || {
            weak.upgrade().and_then(|s| s.with(|x| x.stats()))
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

/// Sends through `sock`, through the drop aid first when `drop` (a fraction) is set.
fn sender(sock: &Arc<UdpSocket>, drop: f64, seed: u64) -> Box<dyn DatagramOut> {
    if drop > 0.0 {
        Box::new(Dropping::new(sock.clone(), drop, seed))
    } else {
        Box::new(sock.clone())
    }
}

/// Waits for a ping carrying `payload` from `client` on `sock` until `deadline` or `stop`;
/// returns its source.
fn wait_for_ping(
    sock: &UdpSocket,
    payload: &[u8; 16],
    client: std::net::IpAddr,
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
        if from.ip().to_canonical() != client.to_canonical() {
            continue;
        }
        if pkt.windows(16).any(|w| w == payload.as_slice()) {
            tracing::info!(%from, "GameStream {what} ping received; streaming {what} there");
            return Some(from);
        }
        tracing::debug!(%from, len = n, "{what} datagram without this session's ping payload dropped");
    }
    None
}

/// Reads and discards what is waiting on `sock` (the client pings every 500 ms), at most
/// [`DRAIN_BUDGET`] datagrams: under a flood the caller gets back to its own work at once and
/// the kernel drops the rest. Returns whether the budget ran out.
fn drain(sock: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    for _ in 0..DRAIN_BUDGET {
        if !sock.wait_readable(Duration::ZERO).unwrap_or(false) || sock.recv_from(&mut buf).is_err()
        {
            return false;
        }
    }
    true
}

/// Watches a session's video: waits for the client's ping (the encoder starts once the
/// destination is known), then drains the client's later pings and ends the session if its
/// video or audio fails.
fn video_loop(host: &StreamHost, s: &ActiveSession, dest: &Destination) {
    let Some(to) = wait_for_ping(&host.video, &s.ids.ping_payload, s.client, &s.stop, "video")
    else {
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
        // The client pings every 500 ms for as long as it streams; a flood of the port is
        // drained at a bounded rate, not as fast as it arrives.
        let _ = host.video.wait_readable(Duration::from_millis(100));
        if drain(&host.video) {
            std::thread::sleep(Duration::from_millis(10));
        }
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
    client: std::net::IpAddr,
    to: Option<SocketAddr>,
    pk: AudioPacketizer,
}

impl AudioSink for GsAudioSink {
    fn ready(&mut self, stop: &AtomicBool) -> bool {
        self.to = wait_for_ping(&self.sock, &self.ping_payload, self.client, stop, "audio");
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

/// ENet peers that started connecting and have not finished: reset after [`HALF_OPEN_LIMIT`].
#[derive(Default)]
struct HalfOpen {
    since: std::collections::HashMap<usize, Instant>,
}

impl HalfOpen {
    /// Resets the peers half-open for too long; returns how many.
    fn expire(&mut self, host: &mut enet::Host<ScreenedSocket>, now: Instant) -> u64 {
        use enet::PeerState as S;
        let mut reset = 0;
        let mut seen = Vec::new();
        for p in host.peers_mut() {
            let half = matches!(
                p.state(),
                S::Connecting
                    | S::AcknowledgingConnect
                    | S::ConnectionPending
                    | S::ConnectionSucceeded
            );
            if !half {
                continue;
            }
            let id = p.id().0;
            let since = *self.since.entry(id).or_insert(now);
            if now.duration_since(since) >= HALF_OPEN_LIMIT {
                p.reset();
                reset += 1;
            } else {
                seen.push(id);
            }
        }
        self.since.retain(|id, _| seen.contains(id));
        reset
    }
}

/// The control stream of the current session: its machine, and the session it belongs to.
struct Control {
    session: Arc<ActiveSession>,
    machine: ControlSession,
}

fn peer_id(p: enet::PeerID) -> PeerId {
    PeerId(p.0 as u64)
}

/// The ENet driver: transport events go into the session's [`ControlSession`], its transmits
/// go out, its events reach the session. Everything it decides (who may attach, silence,
/// termination) is the machine's.
fn control_loop(
    mut enet_host: enet::Host<ScreenedSocket>,
    screen: ScreenHandle,
    host: &StreamHost,
    gs: &GameStream,
) {
    let mut current: Option<Control> = None;
    let mut last_check = Instant::now();
    let mut feedback = Vec::new();
    let mut half_open = HalfOpen::default();
    let mut screened = 0u64;
    loop {
        let now = Instant::now();
        // Follow the session slot: a new session gets a new machine, a replaced one ends.
        let active = host.active().filter(|s| !s.ended());
        let same = match (&current, &active) {
            (Some(c), Some(a)) => Arc::ptr_eq(&c.session, a),
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some(mut c) = current.take() {
                let why = if host.shutting_down.load(Ordering::Relaxed) {
                    EndReason::HostShutdown
                } else {
                    EndReason::Replaced
                };
                c.machine.end(now, why);
                drive(&mut enet_host, host, &mut c);
            }
            // Only this session's client, from its address, may connect (until it has).
            screen.expect(active.as_ref().map(|s| Expected {
                connect_data: s.ids.connect_data,
                client: s.client,
            }));
            current = active.map(|s| Control {
                machine: ControlSession::new(s.started, s.ids.connect_data, &s.key),
                session: s,
            });
        }
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
            let now = Instant::now();
            match (ev, current.as_mut()) {
                (enet::EventNoRef::Connect { peer, data }, Some(c)) => {
                    match c.machine.handle_connect(now, peer_id(peer), data) {
                        Verdict::Accept => {
                            tracing::info!(peer = peer.0, "GameStream control stream connected");
                            enet_host.peer_mut(peer).set_timeout(2, 10_000, 10_000);
                            screen.expect(None);
                        }
                        Verdict::Refuse(why) => {
                            tracing::info!(
                                peer = peer.0,
                                data,
                                ?why,
                                "ENet connection without a matching session refused"
                            );
                            enet_host.peer_mut(peer).disconnect_now(0);
                        }
                    }
                }
                (enet::EventNoRef::Connect { peer, data }, None) => {
                    tracing::info!(
                        peer = peer.0,
                        data,
                        "ENet connection without a matching session refused"
                    );
                    enet_host.peer_mut(peer).disconnect_now(0);
                }
                (enet::EventNoRef::Disconnect { peer, .. }, Some(c)) => {
                    c.machine.handle_disconnect(now, peer_id(peer))
                }
                (enet::EventNoRef::Receive { peer, packet, .. }, Some(c)) => {
                    c.machine.handle_packet(now, peer_id(peer), packet.data())
                }
                _ => {}
            }
        }
        if let Some(c) = current.as_mut() {
            // Rumble and other feedback from the injector go to the client.
            c.session.with(|s| s.input().take_feedback(&mut feedback));
            for f in feedback.drain(..) {
                c.machine.handle_feedback(Instant::now(), f);
            }
            // Once per 100 ms: what the host knows that the machine cannot see.
            if last_check.elapsed() >= Duration::from_millis(100) {
                last_check = Instant::now();
                let now = Instant::now();
                let reset = half_open.expire(&mut enet_host, now);
                if reset > 0 {
                    c.session.counters.add("control_half_open_reset", reset);
                }
                let dropped = screen.dropped().total();
                c.session
                    .counters
                    .add("control_screened", dropped.saturating_sub(screened));
                screened = dropped;
                let launch = gs.session();
                if launch.is_none_or(|l| l.request.rikey != c.session.key) {
                    c.machine.end(now, EndReason::AppEnded);
                } else if host.shutting_down.load(Ordering::Relaxed) {
                    c.machine.end(now, EndReason::HostShutdown);
                } else if c.session.ended() {
                    c.machine.end(now, EndReason::StreamFailed);
                }
                c.machine.handle_timeout(now);
            }
            if drive(&mut enet_host, host, c) {
                current = None;
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Carries out what the machine asks for: transmits, then events. True once it has ended.
fn drive(enet_host: &mut enet::Host<ScreenedSocket>, host: &StreamHost, c: &mut Control) -> bool {
    let mut sent = false;
    while let Some(t) = c.machine.poll_transmit() {
        let peer = enet::PeerID(t.peer.0 as usize);
        let p = enet_host.peer_mut(peer);
        let _ = p.send(t.channel, &enet::Packet::reliable(t.payload.as_slice()));
        if t.disconnect_after {
            p.disconnect_later(0);
        }
        sent = true;
    }
    if sent {
        enet_host.flush();
    }
    let s = &c.session;
    while let Some(ev) = c.machine.poll_event() {
        match ev {
            ControlEvent::Connected(_) => {}
            ControlEvent::KeyframeRequested => {
                tracing::debug!("IDR requested by the client");
                s.keyframe();
            }
            ControlEvent::Input(ev) => {
                s.with(|x| x.input().inject(ev));
            }
            ControlEvent::Text(t) => {
                s.with(|x| {
                    for ch in t.chars() {
                        x.input().inject(InputEvent::Text { ch });
                    }
                });
            }
            ControlEvent::FecStatus {
                frame,
                received_data,
                received_parity,
                total_data,
            } => tracing::debug!(
                frame,
                received_data,
                received_parity,
                total_data,
                "client FEC status"
            ),
            ControlEvent::Dropped(why) => tracing::debug!(?why, "control packet dropped"),
            ControlEvent::Ended(reason) => {
                let st = c.machine.stats();
                let counters = &s.counters;
                counters.add("control_messages", st.messages);
                counters.add("control_dropped", st.dropped.total());
                counters.add("input_dropped", st.dropped.bad_input);
                counters.add("idr_requests", st.idr_requests);
                counters.add("rumble_sent", st.rumble_sent);
                s.with(|x| {
                    for (kind, n) in &st.input_kinds {
                        // Events reach the injector and are counted there; what the machine
                        // could not turn into events is counted here.
                        if !x.input().counters().stats().by_kind.contains_key(kind) {
                            x.input().counters().add_kind(kind, *n);
                        }
                    }
                });
                match reason {
                    EndReason::ClientDisconnected => {
                        tracing::info!("GameStream client disconnected the control stream")
                    }
                    other => {
                        tracing::info!(reason = %other, "GameStream session terminated by the host")
                    }
                }
                s.end(reason.as_str());
                host.stop_active(reason.as_str());
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_gamestream::enet_gate::Expected;

    /// An ENet CONNECT as a client's first datagram (sent-time header, one command).
    fn connect_datagram(data: u32) -> Vec<u8> {
        let mut d = (0x0FFFu16 | 0x8000).to_be_bytes().to_vec();
        d.extend_from_slice(&[0, 0]);
        let mut cmd = [0u8; 48];
        cmd[0] = 0x82;
        cmd[3] = 1;
        cmd[8..12].copy_from_slice(&1392u32.to_be_bytes());
        cmd[12..16].copy_from_slice(&32768u32.to_be_bytes());
        cmd[16..20].copy_from_slice(&2u32.to_be_bytes());
        cmd[44..48].copy_from_slice(&data.to_be_bytes());
        d.extend_from_slice(&cmd);
        d
    }

    #[test]
    fn peers_that_never_finish_connecting_are_reset_after_the_limit() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (sock, screen) = ScreenedSocket::new(sock);
        screen.expect(Some(Expected {
            connect_data: 0xC0DE,
            client: addr.ip(),
        }));
        let mut host = enet::Host::new(
            sock,
            enet::HostSettings {
                peer_limit: 8,
                ..Default::default()
            },
        )
        .unwrap();
        // Eight half-open peers that know the connect data and never answer the host.
        let strangers: Vec<_> = (0..8)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &strangers {
            s.send_to(&connect_datagram(0xC0DE), addr).unwrap();
        }
        // One with the wrong data never gets that far.
        let wrong = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        wrong.send_to(&connect_datagram(0xBAD), addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(Some(_)) = host.service() {}
        let half = |h: &mut enet::Host<ScreenedSocket>| {
            h.peers()
                .filter(|p| p.state() != enet::PeerState::Disconnected)
                .count()
        };
        assert_eq!(
            half(&mut host),
            8,
            "every slot is taken by a half-open peer"
        );
        assert_eq!(screen.dropped().wrong_data, 1);
        let t0 = Instant::now();
        let mut ho = HalfOpen::default();
        assert_eq!(ho.expire(&mut host, t0), 0);
        assert_eq!(ho.expire(&mut host, t0 + HALF_OPEN_LIMIT / 2), 0);
        assert_eq!(ho.expire(&mut host, t0 + HALF_OPEN_LIMIT), 8);
        assert_eq!(half(&mut host), 0, "the slots are free again");
        assert!(ho.since.is_empty());
    }
}
