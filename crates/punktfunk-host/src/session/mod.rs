//! One protocol-neutral streaming session: it owns the resolved plan and everything built from
//! it, and tears all of it down, in reverse order of creation, on every exit path.
//!
//! ```text
//! front-end (punktfunk/1, GameStream)
//!   └─ plan::resolve(request, caps, prefs) → SessionPlan
//!        └─ Session::start(plan, parts, video sink, audio sink)
//!             output (own, or an AppSession's) → encode thread (source → encoder → sink)
//!             → input thread (injector) → audio thread (source → Opus → sink)
//! ```
//!
//! Creation happens in that order; if a step fails, what was already built is dropped before
//! the error returns. Dropping a [`Session`] stops audio, then input (releasing whatever the
//! client held down), then video, then lets go of the output (removing it unless an
//! [`app::AppSession`] still owns it). A panic on one of the threads ends that thread; the
//! session reports it as a failure and still tears everything down.
//!
//! - [`video`]: the capture-clocked encode thread and the [`video::FrameSink`] protocols send
//!   through;
//! - [`input`]: the injector thread behind a bounded queue;
//! - [`audio`]: the device-clocked audio thread and Opus;
//! - [`app`]: the app process and its output, which outlive a stream;
//! - [`registry`]: all sessions of both protocols, the host-wide limit;
//! - [`stats`]: the one figures snapshot.

pub mod app;
pub mod audio;
pub mod input;
pub mod registry;
pub mod stats;
pub mod video;

use crate::plan::SessionPlan;
use crate::proto::punktfunk1::dataplane::Destination;
use app::OutputHandle;
use audio::{AudioPipelineError, AudioSink, AudioThread};
use input::InputThread;
use punktfunk_core::control::Mode;
use punktfunk_desktop::{
    audio as daudio, capture, inject, vdisplay, AudioError, AudioSource, CaptureError, DesktopEnv,
    DisplayError, InjectError, InputInjector,
};
use registry::Ticket;
use stats::SessionStats;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use video::{Command, EncodeSettings, FrameSink, SourceOpener, VideoError, VideoThread};

/// Why a session could not start or change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The virtual display.
    #[error("display: {0}")]
    Display(#[from] DisplayError),
    /// Video (encoder, capture).
    #[error(transparent)]
    Video(#[from] VideoError),
    /// The injector.
    #[error("input: {0}")]
    Input(#[from] InjectError),
    /// Audio.
    #[error(transparent)]
    Audio(#[from] AudioPipelineError),
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<CaptureError> for SessionError {
    fn from(e: CaptureError) -> Self {
        SessionError::Video(VideoError::Capture(e))
    }
}

impl From<AudioError> for SessionError {
    fn from(e: AudioError) -> Self {
        SessionError::Audio(AudioPipelineError::Source(e))
    }
}

/// The platform parts a session is built from (opened from the plan by [`open_parts`], or
/// given by a test).
pub struct Parts {
    /// The output to stream.
    pub output: OutputHandle,
    /// Opens the frame source at a mode.
    pub source: SourceOpener,
    /// The injector.
    pub injector: Box<dyn InputInjector>,
    /// The audio source, when the plan has audio.
    pub audio: Option<Box<dyn AudioSource>>,
}

/// Opens the plan's backends. `output` is the app session's output when there is one;
/// otherwise one is created on the plan's display at the plan's mode.
pub fn open_parts(
    plan: &SessionPlan,
    env: &DesktopEnv,
    output: Option<OutputHandle>,
    epoch: Instant,
) -> Result<Parts, SessionError> {
    let output = match output {
        Some(o) => o,
        None => {
            let mut display = vdisplay::open(plan.display.backend, env, &plan.display_options)?;
            Arc::new(Mutex::new(display.create(plan.request.mode)?))
        }
    };
    let target = crate::lock(&output).capture_target();
    let backend = plan.capture.backend;
    let (source_target, env_for_source) = (target.clone(), env.clone());
    let source: SourceOpener = Box::new(move |mode: Mode| {
        capture::open(
            backend,
            &capture::SourceOptions {
                target: source_target.clone(),
                mode,
                epoch,
                env: env_for_source.clone(),
            },
        )
    });
    let injector = inject::open(plan.input.backend, env, &target)?;
    let audio = match (&plan.audio, &plan.request.audio) {
        (Some(a), Some(p)) => Some(daudio::open(a.backend, env, p.channels)?),
        _ => None,
    };
    Ok(Parts {
        output,
        source,
        injector,
        audio,
    })
}

/// What every front-end shares: the capabilities probed at start, the desktop preferences,
/// the registry of sessions and the host clock.
pub struct HostContext {
    /// Probed once at start.
    pub caps: crate::caps::HostCaps,
    /// Backend preferences per edge.
    pub prefs: crate::plan::DesktopPrefs,
    /// All sessions of both protocols.
    pub registry: Arc<registry::Registry>,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// Write each ended session's figures here as JSON.
    pub stats_json: Option<std::path::PathBuf>,
    /// The host clock's zero (capture times count from it).
    pub epoch: Instant,
    /// The apps clients may launch (read once at start).
    pub apps: Arc<crate::apps::Catalog>,
    /// The host certificate's fingerprint (bound into pairing ceremonies).
    pub fingerprint: punktfunk_quic::Fingerprint,
    /// Paired clients of both protocols.
    pub clients: crate::clients::ClientStore,
    /// punktfunk/1 pairing: the armed PIN, approval requests.
    pub pairing: Arc<crate::pairing::Pairing>,
}

impl std::fmt::Debug for HostContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostContext")
            .field("prefs", &self.prefs)
            .field("sessions", &self.registry.len())
            .finish_non_exhaustive()
    }
}

/// Named counters a protocol keeps for a session (datagrams, control messages, …).
#[derive(Debug, Default)]
pub struct Counters(Mutex<BTreeMap<&'static str, u64>>);

impl Counters {
    /// Adds `n` to `name`.
    pub fn add(&self, name: &'static str, n: u64) {
        *crate::lock(&self.0).entry(name).or_default() += n;
    }

    /// Makes sure `name` is listed (at 0) so a log line always carries it.
    pub fn declare(&self, names: &[&'static str]) {
        let mut m = crate::lock(&self.0);
        for n in names {
            m.entry(n).or_default();
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        crate::lock(&self.0).clone()
    }
}

/// What the protocol sends through.
pub struct Sinks {
    /// Video: where the encode thread delivers frames, and the address it waits for.
    pub video: Box<dyn FrameSink>,
    /// Set once the client's address is known; the encode thread waits for it.
    pub dest: Destination,
    /// Audio, when the plan has audio.
    pub audio: Option<Box<dyn AudioSink>>,
}

/// A running session.
pub struct Session {
    // Fields drop in this order after `Drop::drop` has stopped the threads: the reverse of
    // creation.
    audio: Option<AudioThread>,
    input: InputThread,
    video: VideoThread,
    output: OutputHandle,
    plan: Arc<SessionPlan>,
    counters: Arc<Counters>,
    started: Instant,
    cpu_start: u64,
    ticket: Mutex<Option<Ticket>>,
}

impl Session {
    /// Builds the session from its plan and parts: video, then input, then audio.
    pub fn start(
        plan: SessionPlan,
        parts: Parts,
        sinks: Sinks,
        settings: EncodeSettings,
        counters: Arc<Counters>,
    ) -> Result<Session, SessionError> {
        let plan = Arc::new(plan);
        let Parts {
            output,
            source,
            injector,
            audio,
        } = parts;
        let mode = plan.request.mode;
        let rate = plan.request.bitrate_kbps;
        let video = VideoThread::start(settings, mode, rate, source, sinks.dest, sinks.video)?;
        let input = InputThread::start(injector)?;
        let audio = match (plan.request.audio, audio, sinks.audio) {
            (Some(p), Some(src), Some(sink)) => Some(AudioThread::start(p, src, sink)?),
            _ => None,
        };
        tracing::info!(
            protocol = plan.request.protocol.name(),
            session = %plan.request.session,
            output = crate::lock(&output).name(),
            backends = ?plan.backends(),
            "session started"
        );
        Ok(Session {
            audio,
            input,
            video,
            output,
            counters,
            started: Instant::now(),
            cpu_start: process_cpu_us(),
            plan,
            ticket: Mutex::new(None),
        })
    }

    /// Holds the registry place for as long as the session lives, and lets the registry read
    /// its figures (through a weak reference: the registry never keeps a session alive).
    pub fn register(self: &Arc<Self>, ticket: Ticket) {
        let weak = Arc::downgrade(self);
        ticket.attach(Arc::new(move || weak.upgrade().map(|s| s.stats())));
        *crate::lock(&self.ticket) = Some(ticket);
    }

    /// The protocol's counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The input thread.
    pub fn input(&self) -> &InputThread {
        &self.input
    }

    /// Asks for a keyframe (coalesced with one pending or just sent).
    pub fn keyframe(&self) {
        self.video.command(Command::Keyframe { at: Instant::now() });
    }

    /// Changes the mode: the output first, then the encode thread rebuilds its source and
    /// encoder. The answer carries the first frame index of the new mode and the bitrate.
    pub fn reconfigure(
        &self,
        mode: Mode,
        bitrate_kbps: u32,
    ) -> tokio::sync::oneshot::Receiver<Result<(u32, u32), VideoError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(e) = crate::lock(&self.output).set_mode(mode) {
            let _ = tx.send(Err(VideoError::Thread(format!(
                "the output refused {mode}: {e}"
            ))));
            return rx;
        }
        self.video.command(Command::Reconfigure {
            mode,
            bitrate_kbps,
            reply: tx,
        });
        rx
    }

    /// Why the session's video or audio stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        if let Some(f) = self.video.failure() {
            return Some(f);
        }
        if self.video.finished() {
            return Some("the encode thread ended".into());
        }
        self.audio.as_ref().and_then(|a| a.failure())
    }

    /// The session's figures now.
    pub fn stats(&self) -> SessionStats {
        let mut s = empty_stats(&self.plan);
        s.seconds = self.started.elapsed().as_secs_f64();
        let t = self.video.times();
        // The encode thread knows what it encodes now (a refused mode change leaves it as was).
        if let Some(m) = t.mode {
            s.mode = m.to_string();
            s.bitrate_kbps = t.bitrate_kbps;
        }
        s.set_video(&t);
        s.host_cpu_ms_per_frame = process_cpu_us().saturating_sub(self.cpu_start) as f64
            / 1000.0
            / t.frames.max(1) as f64;
        s.audio_packets = self.audio.as_ref().map_or(0, |a| a.packets());
        s.input = self.input.counters().stats();
        s.counters = self.counters.snapshot();
        s
    }

    /// Stops every thread (audio, input, video) in that order; idempotent.
    pub fn stop(&mut self) {
        if let Some(a) = self.audio.as_mut() {
            a.stop();
        }
        self.input.stop();
        self.video.stop();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

fn empty_stats(plan: &SessionPlan) -> SessionStats {
    let r = &plan.request;
    SessionStats {
        protocol: r.protocol,
        session: r.session.clone(),
        client: r.client.clone(),
        mode: r.mode.to_string(),
        codec: r.codec.name().to_string(),
        bitrate_kbps: r.bitrate_kbps,
        seconds: 0.0,
        frames: 0,
        keyframes: 0,
        bytes: 0,
        repeated_frames: 0,
        keyframe_requests_coalesced: 0,
        capture_ms: Default::default(),
        convert_ms: Default::default(),
        encode_ms: Default::default(),
        send_path_ms: Default::default(),
        send_path_cpu_ms: Default::default(),
        host_cpu_ms_per_frame: 0.0,
        audio_packets: 0,
        input: Default::default(),
        counters: Default::default(),
    }
}

/// CPU time (user + system) this process has used so far, µs.
pub fn process_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Writes `stats` as JSON to `path` (logging a failure: figures are never worth a crash).
pub fn write_stats_json(path: &std::path::Path, stats: &SessionStats) {
    let bytes = serde_json::to_vec_pretty(stats).unwrap_or_default();
    if let Err(e) = std::fs::write(path, bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
    }
}

#[cfg(test)]
mod tests {
    //! Lifecycle tests with recording stand-ins for the platform parts (no desktop exists in a
    //! unit test); the encoder is the real x264.
    use super::*;
    use crate::plan::{DesktopPrefs, StreamRequest};
    use crate::session::registry::Protocol;
    use crate::session::video::{Encoded, SinkTimes};
    use punktfunk_core::control::Codec;
    use punktfunk_desktop::{
        AudioBackend, AudioFormat, CaptureBackend, CaptureTarget, Captured, DisplayBackend,
        FrameSource, InjectCaps, InjectorBackend, Output,
    };
    use punktfunk_media::{FrameRef, PixelFormat};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn note(log: &Log, what: &'static str) {
        crate::lock(log).push(what);
    }

    struct FakeOutput(Log, Mode);
    impl Output for FakeOutput {
        fn backend(&self) -> DisplayBackend {
            DisplayBackend::Existing
        }
        fn name(&self) -> &str {
            "fake"
        }
        fn mode(&self) -> Mode {
            self.1
        }
        fn set_mode(&mut self, mode: Mode) -> Result<(), DisplayError> {
            self.1 = mode;
            Ok(())
        }
        fn capture_target(&self) -> CaptureTarget {
            CaptureTarget::Desktop
        }
        fn launch_env(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }
    impl Drop for FakeOutput {
        fn drop(&mut self) {
            note(&self.0, "output removed");
        }
    }

    struct FakeSource {
        log: Log,
        pixels: Vec<u8>,
        frames: u32,
        panic_after: Option<u32>,
    }
    impl FrameSource for FakeSource {
        fn backend(&self) -> CaptureBackend {
            CaptureBackend::TestPattern
        }
        fn next_frame(&mut self, _: Instant) -> Result<Option<Captured<'_>>, CaptureError> {
            std::thread::sleep(Duration::from_millis(5));
            self.frames += 1;
            if self.panic_after.is_some_and(|n| self.frames > n) {
                panic!("capture backend crashed");
            }
            Ok(Some(Captured {
                frame: FrameRef {
                    width: 320,
                    height: 180,
                    stride: 320 * 4,
                    format: PixelFormat::Bgrx,
                    data: &self.pixels,
                },
                captured_at: Instant::now(),
                cost_us: 0,
            }))
        }
    }
    impl Drop for FakeSource {
        fn drop(&mut self) {
            note(&self.log, "capture closed");
        }
    }

    struct FakeInjector(Log);
    impl InputInjector for FakeInjector {
        fn backend(&self) -> InjectorBackend {
            InjectorBackend::Log
        }
        fn capabilities(&self) -> InjectCaps {
            InjectCaps::default()
        }
        fn inject(&mut self, _: &punktfunk_core::input::InputEvent) -> Result<(), InjectError> {
            Ok(())
        }
        fn release_all(&mut self) {
            note(&self.0, "input released");
        }
    }
    impl Drop for FakeInjector {
        fn drop(&mut self) {
            note(&self.0, "injector closed");
        }
    }

    struct FakeAudio(Log, u32);
    impl AudioSource for FakeAudio {
        fn backend(&self) -> AudioBackend {
            AudioBackend::Tone
        }
        fn format(&self) -> AudioFormat {
            AudioFormat {
                rate: self.1,
                channels: 2,
            }
        }
        fn read(&mut self, out: &mut [i16], _: Instant) -> Result<bool, AudioError> {
            std::thread::sleep(Duration::from_millis(5));
            out.fill(0);
            Ok(true)
        }
    }
    impl Drop for FakeAudio {
        fn drop(&mut self) {
            note(&self.0, "audio closed");
        }
    }

    struct CountingSink(Log, Arc<Mutex<u32>>);
    impl FrameSink for CountingSink {
        fn deliver(&mut self, _: Encoded, _: &mut SinkTimes) -> Result<bool, VideoError> {
            *crate::lock(&self.1) += 1;
            Ok(true)
        }
    }
    impl Drop for CountingSink {
        fn drop(&mut self) {
            note(&self.0, "video sink closed");
        }
    }

    struct NullAudioSink;
    impl AudioSink for NullAudioSink {
        fn ready(&mut self, _: &AtomicBool) -> bool {
            true
        }
        fn deliver(&mut self, _: &[u8]) -> bool {
            true
        }
    }

    fn plan() -> SessionPlan {
        let caps =
            crate::caps::HostCaps::assumed(DesktopEnv::default(), &[(Codec::H264, "libx264")]);
        let req = StreamRequest {
            protocol: Protocol::Punktfunk1,
            client: "test".into(),
            session: "1".into(),
            mode: Mode::new(320, 180, 60),
            codec: Codec::H264,
            bitrate_kbps: 1000,
            colour: Default::default(),
            slices: 1,
            audio: Some(audio::AudioPlan {
                channels: 2,
                streams: 1,
                coupled: 1,
                bitrate: 96_000,
                packet_ms: 5,
            }),
            app: None,
        };
        crate::plan::resolve(req, &caps, &DesktopPrefs::default()).unwrap()
    }

    fn start(
        log: &Log,
        panic_after: Option<u32>,
        audio_rate: u32,
    ) -> (Result<Session, SessionError>, Arc<Mutex<u32>>) {
        let mode = Mode::new(320, 180, 60);
        note(log, "output created");
        let output: OutputHandle = Arc::new(Mutex::new(Box::new(FakeOutput(log.clone(), mode))));
        let l = log.clone();
        let parts = Parts {
            output,
            source: Box::new(move |_| {
                note(&l, "capture opened");
                Ok(Box::new(FakeSource {
                    log: l.clone(),
                    pixels: vec![128; 320 * 180 * 4],
                    frames: 0,
                    panic_after,
                }) as Box<dyn FrameSource>)
            }),
            injector: Box::new(FakeInjector(log.clone())),
            audio: Some(Box::new(FakeAudio(log.clone(), audio_rate))),
        };
        let frames = Arc::new(Mutex::new(0));
        let sinks = Sinks {
            video: Box::new(CountingSink(log.clone(), frames.clone())),
            dest: Arc::new(Mutex::new(Some("127.0.0.1:9".parse().unwrap()))),
            audio: Some(Box::new(NullAudioSink)),
        };
        let settings = EncodeSettings {
            codec: Codec::H264,
            prefer_hardware: false,
            slices: 1,
            colour: Default::default(),
            epoch: Instant::now(),
            min_interval: Duration::from_millis(100),
        };
        (
            Session::start(plan(), parts, sinks, settings, Arc::default()),
            frames,
        )
    }

    fn wait_for(frames: &Mutex<u32>, n: u32) {
        let until = Instant::now() + Duration::from_secs(20);
        while *crate::lock(frames) < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_session_tears_down_in_reverse_order_of_creation() {
        let log: Log = Arc::default();
        let (s, frames) = start(&log, None, 48_000);
        let s = s.unwrap();
        wait_for(&frames, 3);
        assert!(*crate::lock(&frames) >= 3, "frames flow through the sink");
        assert!(s.failure().is_none());
        let stats = s.stats();
        assert!(stats.frames >= 3 && stats.keyframes >= 1, "{stats:?}");
        drop(s);
        let log = crate::lock(&log).clone();
        let created = ["output created", "capture opened"];
        assert_eq!(&log[..2], created);
        let torn: Vec<_> = log[2..].to_vec();
        assert_eq!(
            torn,
            [
                "audio closed",
                "input released",
                "injector closed",
                "capture closed",
                "video sink closed",
                "output removed"
            ]
        );
    }

    #[test]
    fn a_stage_that_fails_to_start_takes_down_what_was_built() {
        let log: Log = Arc::default();
        // 44.1 kHz is refused by the audio stage, the last one built.
        let (s, _) = start(&log, None, 44_100);
        assert!(matches!(
            s,
            Err(SessionError::Audio(AudioPipelineError::Rate(44_100)))
        ));
        let log = crate::lock(&log).clone();
        for part in [
            "audio closed",
            "input released",
            "injector closed",
            "capture closed",
            "video sink closed",
            "output removed",
        ] {
            assert!(log.contains(&part), "{part} missing from {log:?}");
        }
        let pos = |p: &str| log.iter().position(|l| *l == p).unwrap();
        assert!(pos("injector closed") < pos("capture closed"));
        assert!(pos("capture closed") < pos("output removed"));
    }

    #[test]
    fn a_panicking_capture_backend_is_reported_and_the_session_still_tears_down() {
        let log: Log = Arc::default();
        let (s, frames) = start(&log, Some(3), 48_000);
        let s = s.unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while s.failure().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(s.failure().is_some(), "the dead encode thread is noticed");
        assert!(*crate::lock(&frames) <= 3);
        drop(s);
        let log = crate::lock(&log).clone();
        for part in [
            "audio closed",
            "input released",
            "capture closed",
            "video sink closed",
            "output removed",
        ] {
            assert!(log.contains(&part), "{part} missing from {log:?}");
        }
        assert_eq!(log.last(), Some(&"output removed"));
    }
}
