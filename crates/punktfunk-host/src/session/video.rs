//! A session's video on one native thread, clocked by its frame source:
//!
//! ```text
//! encode thread: FrameSource::next_frame → colour conversion → encoder → FrameSink
//!                (the protocol's packetizer, FEC, sealing and send, on this same thread)
//! ```
//!
//! The source decides when a frame exists (a compositor presents one; the test pattern ticks at
//! the mode's rate); the thread converts, encodes and hands it on at once. An idle source
//! ("nothing new before the deadline") makes the thread repeat the last picture at the
//! session's minimum rate ([`RepeatClock`]), so clients see a steady stream on a still desktop.
//!
//! The frame is sent by the thread that encoded it: handing it to a second thread costs a
//! wake-up per frame and runs the SIMD-heavy FEC and encryption on a core that slept (see
//! `docs/performance.md`). Commands (keyframe requests, mode changes) reach the thread through a
//! channel it reads once per frame.
//!
//! Keyframes: the first frame is one. A request while one is already pending, or right after
//! one was sent with nothing since, is coalesced (a client asks for a keyframe when it starts,
//! which would otherwise give two back to back). "Nothing since" is judged at the request's
//! arrival, not when the thread gets to read it: a request that came before the next frame
//! left cannot be about that frame, even if the thread was busy encoding it. After an accepted
//! request, P-frames the encoder still hands out from before it are not sent: the client
//! discards everything until the keyframe.

use crate::proto::punktfunk1::dataplane::Destination;
use crate::stats::Histogram;
use punktfunk_core::control::{Codec, Mode};
use punktfunk_desktop::{CaptureError, FrameSource};
use punktfunk_media::{
    open_encoder, Colour, Converter, Encoder, EncoderConfig, MediaError, YuvFrame,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Video failures, by where they happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// No encoder opened, or encoding failed.
    #[error("encoder: {0}")]
    Encoder(MediaError),
    /// Colour conversion failed (a frame of the wrong geometry).
    #[error("colour conversion: {0}")]
    Convert(MediaError),
    /// The frame source failed.
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    /// The protocol's sink could not send.
    #[error("send: {0}")]
    Send(String),
    /// The thread could not be started or died.
    #[error("video thread: {0}")]
    Thread(String),
}

/// Something for the encode thread to do.
pub enum Command {
    /// Make the next frame a keyframe.
    Keyframe {
        /// When the request arrived (decides whether the keyframe just sent answers it).
        at: Instant,
    },
    /// Rebuild source, converter and encoder at a new mode (the output has already changed);
    /// the reply carries the index of the first frame of the new mode and the bitrate.
    Reconfigure {
        /// The new mode.
        mode: Mode,
        /// New bitrate (0 = keep).
        bitrate_kbps: u32,
        /// Where to answer.
        reply: tokio::sync::oneshot::Sender<Result<(u32, u32), VideoError>>,
    },
}

/// Per-stage timings of the video thread, µs, one sample per frame.
#[derive(Debug, Default, Clone)]
pub struct StageTimes {
    /// The source's own work per picture (drawing, copying; not its wait).
    pub capture_us: Histogram,
    /// Colour conversion.
    pub convert_us: Histogram,
    /// Encoding.
    pub encode_us: Histogram,
    /// Packetize + FEC + seal + send syscalls, wall time.
    pub send_us: Histogram,
    /// The same, CPU time of the sending thread.
    pub send_cpu_us: Histogram,
    /// Frames handed to the sink.
    pub frames: u64,
    /// Bytes of encoded video handed to the sink.
    pub bytes: u64,
    /// Keyframes handed to the sink.
    pub keyframes: u64,
    /// Pictures encoded again because the source had nothing new.
    pub repeated: u64,
    /// Keyframe requests coalesced with one already pending or just sent.
    pub keyframe_requests_coalesced: u64,
    /// Pictures dropped because they were not at the mode encoded (a compositor still
    /// delivering the old size just after a mode change).
    pub wrong_size: u64,
    /// The mode encoded now (the latest, after a mode change; `None` before the thread runs).
    pub mode: Option<Mode>,
    /// The bitrate targeted now, kbit/s.
    pub bitrate_kbps: u32,
}

/// One encoded frame on its way to the network.
pub struct Encoded {
    /// The bitstream.
    pub data: Vec<u8>,
    /// An IDR / keyframe.
    pub keyframe: bool,
    /// Capture time, µs since the session's epoch.
    pub capture_us: u64,
    /// Encoded before a keyframe request that was accepted and whose keyframe has not gone out
    /// yet: a client that asked discards it, so a protocol may drop it (GameStream does).
    pub before_requested_keyframe: bool,
}

/// Where the encode thread hands each encoded frame: called on the encode thread right after
/// the frame is encoded, so it leaves while the core and its caches are warm.
pub trait FrameSink: Send + 'static {
    /// Sends one frame. `Ok(false)` ends the encode thread quietly (the session is over).
    fn deliver(&mut self, frame: Encoded, times: &mut SinkTimes) -> Result<bool, VideoError>;
}

/// What a sink measured for one frame (the thread records it).
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkTimes {
    /// Wall time of the send path, µs.
    pub send_us: u32,
    /// CPU time of the send path, µs.
    pub send_cpu_us: u32,
}

/// Opens the frame source at a mode (called again on each mode change).
pub type SourceOpener =
    Box<dyn FnMut(Mode) -> Result<Box<dyn FrameSource>, CaptureError> + Send + 'static>;

/// What the encode thread needs, whichever protocol sends its frames.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// Codec.
    pub codec: Codec,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// Slices per frame.
    pub slices: u32,
    /// Colour matrix and range.
    pub colour: Colour,
    /// The session's clock zero (capture times are µs since it).
    pub epoch: Instant,
    /// The longest the stream goes without a frame; an idle source gets its last picture
    /// repeated at this interval.
    pub min_interval: Duration,
}

/// When the last picture is due again: the repeat-last-frame rule on virtual time.
#[derive(Debug, Clone)]
pub struct RepeatClock {
    min_interval: Duration,
    last: Option<Instant>,
}

impl RepeatClock {
    /// A clock that allows at most `min_interval` between frames.
    pub fn new(min_interval: Duration) -> RepeatClock {
        RepeatClock {
            min_interval,
            last: None,
        }
    }

    /// How long the source may take for its next picture, from `now`.
    pub fn deadline(&self, now: Instant) -> Instant {
        match self.last {
            Some(t) => (t + self.min_interval).max(now),
            None => now + self.min_interval,
        }
    }

    /// A frame went out at `at`.
    pub fn sent(&mut self, at: Instant) {
        self.last = Some(at);
    }

    /// Whether the last picture must go out again now (only once there is one).
    pub fn repeat_due(&self, now: Instant) -> bool {
        self.last.is_some_and(|t| now >= t + self.min_interval)
    }
}

/// A running encode thread; dropping it stops and joins the thread.
pub struct VideoThread {
    commands: Sender<Command>,
    times: Arc<Mutex<StageTimes>>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Pipeline {
    source: Box<dyn FrameSource>,
    convert: Converter,
    encoder: Box<dyn Encoder>,
    yuv: YuvFrame,
    mode: Mode,
    bitrate_kbps: u32,
}

impl Pipeline {
    fn open(
        settings: &EncodeSettings,
        opener: &mut SourceOpener,
        mode: Mode,
        bitrate_kbps: u32,
    ) -> Result<Pipeline, VideoError> {
        let (encoder, convert) = open_codec(settings, mode, bitrate_kbps)?;
        let source = opener(mode)?;
        tracing::info!(
            encoder = encoder.name(),
            %mode,
            bitrate_kbps,
            source = punktfunk_desktop::probe::BackendId::name(source.backend()),
            "video pipeline configured"
        );
        Ok(Pipeline {
            source,
            convert,
            encoder,
            yuv: YuvFrame::default(),
            mode,
            bitrate_kbps,
        })
    }
}

/// The encoder and colour converter for `mode`.
fn open_codec(
    settings: &EncodeSettings,
    mode: Mode,
    bitrate_kbps: u32,
) -> Result<(Box<dyn Encoder>, Converter), VideoError> {
    let cfg = EncoderConfig {
        codec: settings.codec,
        width: mode.width,
        height: mode.height,
        fps: mode.fps(),
        bitrate_kbps,
        prefer_hardware: settings.prefer_hardware,
        slices: settings.slices,
        colour: settings.colour,
    };
    let encoder = open_encoder(&cfg).map_err(VideoError::Encoder)?;
    let convert = Converter::with_colour(mode.width, mode.height, settings.colour)
        .map_err(VideoError::Convert)?;
    Ok((encoder, convert))
}

impl Pipeline {
    fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1000.0 / f64::from(self.mode.refresh_mhz.max(1)))
    }

    /// A new mode: a new converter and encoder; the source follows its output's mode when it
    /// can (keeping its frame numbering and clock), otherwise it is opened again.
    fn reopen(
        &mut self,
        settings: &EncodeSettings,
        opener: &mut SourceOpener,
        mode: Mode,
        bitrate_kbps: u32,
    ) -> Result<(), VideoError> {
        let (encoder, convert) = open_codec(settings, mode, bitrate_kbps)?;
        match self.source.set_mode(mode) {
            Ok(()) => {}
            Err(CaptureError::Unsupported(_)) => self.source = opener(mode)?,
            Err(e) => return Err(e.into()),
        }
        tracing::info!(encoder = encoder.name(), %mode, bitrate_kbps, "video pipeline reconfigured");
        self.encoder = encoder;
        self.convert = convert;
        self.mode = mode;
        self.bitrate_kbps = bitrate_kbps;
        Ok(())
    }
}

impl VideoThread {
    /// Opens the encoder and the source (failing here if either does not open) and starts the
    /// thread. It produces frames once `dest` is set and hands each to `sink`. The thread ends
    /// when stopped, when the sink says so, or when capture or encoding fails (see
    /// [`Self::failure`]).
    pub fn start(
        settings: EncodeSettings,
        mode: Mode,
        bitrate_kbps: u32,
        mut opener: SourceOpener,
        dest: Destination,
        mut sink: Box<dyn FrameSink>,
    ) -> Result<VideoThread, VideoError> {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        // The pipeline is opened on the thread that runs it, so the encoder's own worker
        // threads are started from (and named after) it; its result comes back here.
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let times = Arc::new(Mutex::new(StageTimes::default()));
        let thread = {
            let (stop, times, failure) = (stop.clone(), times.clone(), failure.clone());
            std::thread::Builder::new()
                .name("encode".into())
                .spawn(move || {
                    let pipeline = match Pipeline::open(&settings, &mut opener, mode, bitrate_kbps)
                    {
                        Ok(p) => {
                            let _ = opened_tx.send(Ok(()));
                            p
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let mut w = Worker {
                        settings,
                        opener,
                        commands: cmd_rx,
                        stop: &stop,
                        times: &times,
                    };
                    if let Err(e) = w.run(pipeline, &mut *sink, &dest) {
                        tracing::error!(error = %e, "encode thread failed");
                        *crate::lock(&failure) = Some(e.to_string());
                    }
                })
                .map_err(|e| VideoError::Thread(e.to_string()))?
        };
        match opened_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(VideoError::Thread(
                    "the encode thread ended while opening".into(),
                ));
            }
        }
        Ok(VideoThread {
            commands: cmd_tx,
            times,
            failure,
            stop,
            thread: Some(thread),
        })
    }

    /// Sends a command to the thread (ignored once it has ended).
    pub fn command(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Timings and counters so far.
    pub fn times(&self) -> StageTimes {
        crate::lock(&self.times).clone()
    }

    /// Why the thread stopped on its own, if it failed.
    pub fn failure(&self) -> Option<String> {
        crate::lock(&self.failure).clone()
    }

    /// Whether the thread has ended (its sink refused a frame, it failed, or it panicked).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops and joins the thread (at most one frame's work away).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                *crate::lock(&self.failure) = Some("the encode thread panicked".into());
            }
        }
    }
}

impl Drop for VideoThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a source may deliver pictures at another size than the stream's before the
/// stream fails.
const WRONG_SIZE_LIMIT: Duration = Duration::from_secs(2);

struct Worker<'a> {
    settings: EncodeSettings,
    opener: SourceOpener,
    commands: Receiver<Command>,
    stop: &'a AtomicBool,
    times: &'a Mutex<StageTimes>,
}

/// One frame's figures, recorded into [`StageTimes`] under one lock.
#[derive(Default)]
struct FrameTimes {
    /// The source's cost and the conversion, when a new picture came.
    capture_convert: Option<(u32, u32)>,
    encode_us: u32,
    repeat: bool,
    /// What the sink measured, the frame's size and whether it was a keyframe, when it was sent.
    sent: Option<(SinkTimes, u64, bool)>,
}

impl FrameTimes {
    fn record(self, tm: &mut StageTimes) {
        if let Some((capture, convert)) = self.capture_convert {
            tm.capture_us.record(capture);
            tm.convert_us.record(convert);
        }
        tm.encode_us.record(self.encode_us);
        tm.repeated += u64::from(self.repeat);
        if let Some((st, len, key)) = self.sent {
            tm.send_us.record(st.send_us);
            tm.send_cpu_us.record(st.send_cpu_us);
            tm.frames += 1;
            tm.bytes += len;
            tm.keyframes += u64::from(key);
        }
    }
}

/// Keyframe bookkeeping of the encode thread.
#[derive(Debug, Default)]
struct Keyframes {
    /// The next picture must be encoded as a keyframe.
    force: bool,
    /// A request was accepted and its keyframe has not left yet.
    awaiting: bool,
    /// When the first frame after the last keyframe went to the sink; `None` while the last
    /// frame sent is a keyframe.
    since_key: Option<Instant>,
}

impl Keyframes {
    /// A client asked for a keyframe, the request arriving `at`; false when it was coalesced:
    /// one is pending, or nothing but a keyframe had been sent since the last one when it came.
    fn request(&mut self, at: Instant) -> bool {
        if self.force || self.awaiting || self.since_key.is_none_or(|t| at < t) {
            return false;
        }
        self.force = true;
        self.awaiting = true;
        true
    }

    /// A frame goes to the sink `at`.
    fn sent(&mut self, keyframe: bool, at: Instant) {
        if keyframe {
            self.force = false;
            self.awaiting = false;
            self.since_key = None;
        } else if self.since_key.is_none() {
            self.since_key = Some(at);
        }
    }
}

impl Worker<'_> {
    fn run(
        &mut self,
        mut p: Pipeline,
        sink: &mut dyn FrameSink,
        dest: &Destination,
    ) -> Result<(), VideoError> {
        // Wait for the client's address: the first frame (a keyframe) must not go nowhere.
        while crate::lock(dest).is_none() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        {
            let mut tm = crate::lock(self.times);
            tm.mode = Some(p.mode);
            tm.bitrate_kbps = p.bitrate_kbps;
        }
        let mut clock = RepeatClock::new(self.settings.min_interval);
        let mut kf = Keyframes {
            force: true,
            ..Default::default()
        };
        let mut have_picture = false;
        // Since when every picture has come at another size than the mode encoded.
        let mut wrong_since: Option<Instant> = None;
        let mut index: u32 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            if !self.commands(&mut p, &mut kf, index)? {
                return Ok(());
            }
            // An idle desktop must not hold a requested keyframe back until it changes: if no
            // new picture comes within two frame intervals, the last one goes out as the keyframe.
            let now = Instant::now();
            let deadline = if kf.force && have_picture {
                clock.deadline(now).min(now + 2 * p.frame_interval())
            } else {
                clock.deadline(now)
            };
            let mut ft = FrameTimes::default();
            let (capture_us, repeat) = match p.source.next_frame(deadline)? {
                Some(c) if (c.frame.width, c.frame.height) != (p.mode.width, p.mode.height) => {
                    // Right after a mode change the compositor may still hand out a picture
                    // or two at the old size; only a source stuck at another size is a fault.
                    let since = *wrong_since.get_or_insert_with(Instant::now);
                    crate::lock(self.times).wrong_size += 1;
                    if since.elapsed() > WRONG_SIZE_LIMIT {
                        return Err(VideoError::Capture(CaptureError::Unsupported(format!(
                            "the source delivers {}x{} pictures for a {} stream",
                            c.frame.width, c.frame.height, p.mode
                        ))));
                    }
                    tracing::debug!(
                        width = c.frame.width,
                        height = c.frame.height,
                        mode = %p.mode,
                        "picture at another size dropped"
                    );
                    continue;
                }
                Some(c) => {
                    wrong_since = None;
                    let t = Instant::now();
                    p.convert
                        .convert_ref(&c.frame, &mut p.yuv)
                        .map_err(VideoError::Convert)?;
                    ft.capture_convert = Some((c.cost_us, t.elapsed().as_micros() as u32));
                    have_picture = true;
                    (
                        c.captured_at
                            .duration_since(self.settings.epoch)
                            .as_micros() as u64,
                        false,
                    )
                }
                // The last picture goes out again only at the mode encoded now: right after a
                // mode change it is still at the old size until the source's first new one.
                None if have_picture
                    && (p.yuv.width, p.yuv.height) == (p.mode.width, p.mode.height)
                    && (kf.force || clock.repeat_due(Instant::now())) =>
                {
                    (
                        Instant::now()
                            .duration_since(self.settings.epoch)
                            .as_micros() as u64,
                        true,
                    )
                }
                None => continue,
            };
            let t = Instant::now();
            let out = p
                .encoder
                .encode(&p.yuv, index as i64, kf.force)
                .map_err(VideoError::Encoder)?;
            ft.encode_us = t.elapsed().as_micros() as u32;
            ft.repeat = repeat;
            index = index.wrapping_add(1);
            clock.sent(Instant::now());
            let Some(f) = out else {
                ft.record(&mut crate::lock(self.times));
                continue;
            };
            let stale = !f.keyframe && kf.awaiting;
            kf.sent(f.keyframe, Instant::now());
            let (len, key) = (f.data.len() as u64, f.keyframe);
            let mut st = SinkTimes::default();
            let more = sink.deliver(
                Encoded {
                    data: f.data,
                    keyframe: key,
                    capture_us,
                    before_requested_keyframe: stale,
                },
                &mut st,
            )?;
            ft.sent = Some((st, len, key));
            // One lock per frame for every figure of it.
            ft.record(&mut crate::lock(self.times));
            if !more {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies waiting commands; false when the session dropped its end of the channel.
    fn commands(
        &mut self,
        p: &mut Pipeline,
        kf: &mut Keyframes,
        index: u32,
    ) -> Result<bool, VideoError> {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Keyframe { at }) => {
                    if !kf.request(at) {
                        crate::lock(self.times).keyframe_requests_coalesced += 1;
                        tracing::debug!(
                            "keyframe request coalesced with the one just sent or pending"
                        );
                    }
                }
                Ok(Command::Reconfigure {
                    mode,
                    bitrate_kbps,
                    reply,
                }) => {
                    let rate = if bitrate_kbps == 0 {
                        p.bitrate_kbps
                    } else {
                        bitrate_kbps
                    };
                    match p.reopen(&self.settings, &mut self.opener, mode, rate) {
                        Ok(()) => {
                            let mut tm = crate::lock(self.times);
                            tm.mode = Some(mode);
                            tm.bitrate_kbps = rate;
                            drop(tm);
                            kf.force = true;
                            kf.awaiting = true;
                            let _ = reply.send(Ok((index, rate)));
                        }
                        Err(e) => {
                            tracing::warn!(%mode, error = %e, "mode change failed; keeping {}", p.mode);
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(true),
                Err(mpsc::TryRecvError::Disconnected) => return Ok(false),
            }
        }
    }
}

/// CPU time of the calling thread, µs.
pub fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_source_gets_its_last_picture_repeated_at_the_minimum_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = RepeatClock::new(ms(100));
        // Nothing sent yet: nothing to repeat, and the source may take one interval.
        assert!(!c.repeat_due(t0 + ms(500)));
        assert_eq!(c.deadline(t0), t0 + ms(100));
        c.sent(t0);
        assert_eq!(c.deadline(t0 + ms(16)), t0 + ms(100));
        assert!(!c.repeat_due(t0 + ms(99)));
        assert!(c.repeat_due(t0 + ms(100)));
        // A late caller gets a deadline of now, not one in the past.
        assert_eq!(c.deadline(t0 + ms(250)), t0 + ms(250));
        c.sent(t0 + ms(100));
        assert!(!c.repeat_due(t0 + ms(150)));
        assert!(c.repeat_due(t0 + ms(200)));
    }

    #[test]
    fn keyframe_requests_are_coalesced_with_a_pending_or_just_sent_keyframe() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // The stream's first frame is a keyframe: a request before it goes is coalesced.
        let mut k = Keyframes {
            force: true,
            ..Default::default()
        };
        assert!(!k.request(t0));
        // It went out: a request right after (the client's start-of-stream one) too.
        k.sent(true, t0 + ms(1));
        assert!(!k.force && !k.awaiting);
        assert!(!k.request(t0 + ms(10)));
        // P-frames went at 33 and 66 ms. A request that arrived before the first of them, read
        // only now, is still about the keyframe; one that arrived after it is honoured.
        k.sent(false, t0 + ms(33));
        k.sent(false, t0 + ms(66));
        assert!(!k.request(t0 + ms(20)));
        assert!(k.request(t0 + ms(40)));
        assert!(k.force && k.awaiting);
        // A second one while it is pending is not.
        assert!(!k.request(t0 + ms(41)));
        // Its keyframe went: the same again.
        k.sent(true, t0 + ms(99));
        assert!(!k.request(t0 + ms(100)));
        k.sent(false, t0 + ms(133));
        assert!(k.request(t0 + ms(140)));
    }
}
