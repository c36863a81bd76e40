//! One session's video pipeline on a native thread:
//!
//! ```text
//! encode thread: source → colour conversion → encoder → FrameSink (packetize + FEC + seal
//!                (core SendSession) → batched UDP send)
//! ```
//!
//! The frame is sent by the thread that encoded it, right after encoding. Sending costs about
//! 1 % of a frame interval, so overlapping it with the next encode would gain nothing, while
//! handing the frame to a second thread costs a wake-up per frame, and that thread runs its
//! SIMD-heavy FEC and encryption on a core that slept for most of the interval: in the send
//! benchmark the handed-over path's p99 is two to three times the inline one's (see
//! `docs/performance.md`). Commands (keyframe requests, mode changes, stop) reach the encode
//! thread through a channel it polls once per frame.

use crate::dataplane::Destination;
use crate::stats::Histogram;
use punktfunk_core::control::{Mode, Welcome};
use punktfunk_core::crypto::packet_key;
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_media::{
    draw_stamp_bgra, open_encoder, BgraFrame, Converter, Encoder, EncoderConfig, Stamp,
    TestPattern, YuvFrame,
};
use punktfunk_net::UdpSocket;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Something for the encode thread to do.
pub enum Command {
    /// Make the next frame a keyframe.
    Keyframe,
    /// Rebuild source and encoder at a new mode; the reply carries the first frame index of
    /// the new mode or why it failed.
    Reconfigure {
        /// The new mode.
        mode: Mode,
        /// New bitrate (0 = keep).
        bitrate_kbps: u32,
        /// Where to answer.
        reply: tokio::sync::oneshot::Sender<Result<(u32, u32), String>>,
    },
}

/// Per-stage timings of the host, µs, one sample per frame.
#[derive(Debug, Default, Clone)]
pub struct StageTimes {
    /// Drawing the test pattern (the stand-in for capture; before the capture timestamp).
    pub render_us: Histogram,
    /// Colour conversion.
    pub convert_us: Histogram,
    /// Encoding.
    pub encode_us: Histogram,
    /// Packetize + FEC + seal + send syscalls, wall time.
    pub send_us: Histogram,
    /// The same, CPU time of the send thread (what the work costs without preemption).
    pub send_cpu_us: Histogram,
    /// Frames sent.
    pub frames: u64,
    /// Bytes of encoded video sent.
    pub bytes: u64,
    /// Keyframes produced.
    pub keyframes: u64,
}

/// What the pipeline needs to start.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The session's agreed configuration.
    pub welcome: Welcome,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// The host clock's zero (capture times are µs since it).
    pub epoch: Instant,
}

/// A running pipeline; dropping it stops and joins its thread.
pub struct Pipeline {
    enc: EncodeThread,
    times: Arc<Mutex<StageTimes>>,
    failure: Arc<Mutex<Option<String>>>,
}

/// One encoded frame on its way to the network.
pub struct Encoded {
    /// The bitstream.
    pub data: Vec<u8>,
    /// An IDR / keyframe.
    pub keyframe: bool,
    /// Capture time, µs since the pipeline's epoch.
    pub capture_us: u64,
}

/// What the encode thread needs, whichever protocol sends its frames.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// Codec.
    pub codec: punktfunk_core::control::Codec,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// Slices per frame.
    pub slices: u32,
    /// Colour matrix and range.
    pub colour: punktfunk_media::Colour,
    /// The host clock's zero (capture times are µs since it).
    pub epoch: Instant,
}

/// Where the encode thread hands each encoded frame: called on the encode thread, right after
/// the frame is encoded, so the frame leaves while the core and its caches are warm.
pub trait FrameSink: Send + 'static {
    /// Sends one frame. `Ok(false)` ends the encode thread quietly (the session is over), an
    /// error ends it as a failure.
    fn deliver(&mut self, frame: Encoded) -> Result<bool, String>;
}

/// A running encode thread: source → conversion → encoder → [`FrameSink`].
pub struct EncodeThread {
    /// Commands (keyframe, reconfigure).
    pub commands: Sender<Command>,
    /// Per-stage timings (render/convert/encode filled here).
    pub times: Arc<Mutex<StageTimes>>,
    /// Why the thread stopped, if it failed.
    pub failure: Arc<Mutex<Option<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EncodeThread {
    /// Opens the encoder (failing here if none works) and starts the thread; it produces
    /// frames once `dest` is set and hands each to `sink`. The first frame is a keyframe. The
    /// thread ends when stopped, when the sink says so, or when encoding fails (see
    /// [`Self::finished`]).
    pub fn start(
        settings: EncodeSettings,
        mode: Mode,
        bitrate_kbps: u32,
        dest: Destination,
        mut sink: Box<dyn FrameSink>,
        times: Arc<Mutex<StageTimes>>,
    ) -> Result<EncodeThread, String> {
        let source = Source::open(&settings, mode, bitrate_kbps)?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (stop, times, failure) = (stop.clone(), times.clone(), failure.clone());
            std::thread::Builder::new()
                .name("encode".into())
                .spawn(move || {
                    if let Err(e) =
                        encode_loop(source, &settings, &cmd_rx, &mut *sink, &stop, &times, &dest)
                    {
                        tracing::error!(error = %e, "encode thread failed");
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                })
                .map_err(|e| e.to_string())?
        };
        Ok(EncodeThread {
            commands: cmd_tx,
            times,
            failure,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended on its own (its sink refused a frame, or it failed).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops and joins the thread (at most one frame's work away).
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EncodeThread {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Source {
    pattern: TestPattern,
    convert: Converter,
    encoder: Box<dyn Encoder>,
    bgra: BgraFrame,
    yuv: YuvFrame,
    mode: Mode,
    bitrate_kbps: u32,
}

impl Source {
    fn open(settings: &EncodeSettings, mode: Mode, bitrate_kbps: u32) -> Result<Source, String> {
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
        let encoder = open_encoder(&cfg).map_err(|e| e.to_string())?;
        tracing::info!(encoder = encoder.name(), %mode, bitrate_kbps, source = "testpattern", "video pipeline configured");
        Ok(Source {
            pattern: TestPattern::new(mode.width, mode.height),
            convert: Converter::with_colour(mode.width, mode.height, settings.colour)
                .map_err(|e| e.to_string())?,
            encoder,
            bgra: BgraFrame {
                width: mode.width,
                height: mode.height,
                data: Vec::new(),
            },
            yuv: YuvFrame {
                width: mode.width,
                height: mode.height,
                data: Vec::new(),
            },
            mode,
            bitrate_kbps,
        })
    }
}

impl Pipeline {
    /// Opens the encoder (failing here if none works) and starts the encode thread, which also
    /// sends. Frames are produced once `dest` is known (the client's first probe).
    pub fn start(
        cfg: PipelineConfig,
        dest: Destination,
        sock: Arc<UdpSocket>,
    ) -> Result<Pipeline, String> {
        let settings = EncodeSettings {
            codec: cfg.welcome.codec,
            prefer_hardware: cfg.prefer_hardware,
            slices: 1,
            colour: punktfunk_media::Colour::default(),
            epoch: cfg.epoch,
        };
        let w = &cfg.welcome;
        let key = packet_key(w.suite, &w.host_to_client.key, w.host_to_client.salt)
            .map_err(|e| e.to_string())?;
        let pcfg = PacketizerConfig {
            max_shard_len: w.shard_len,
            fec: FecPolicy {
                percent: w.fec_percent,
                min_parity: w.fec_min_parity,
                max_parity: w.fec_max_parity,
            },
            min_data_shards: if w.fec_percent > 0 {
                STREAM_MIN_DATA_SHARDS
            } else {
                1
            },
            min_shard_len: STREAM_MIN_SHARD_LEN,
            ..PacketizerConfig::default()
        };
        let times = Arc::new(Mutex::new(StageTimes::default()));
        let sink = DataPlaneSink {
            session: SendSession::new(pcfg, key),
            batch: PacketBatch::new(),
            sock,
            dest: dest.clone(),
            times: times.clone(),
        };
        let enc = EncodeThread::start(
            settings,
            w.mode,
            w.bitrate_kbps,
            dest,
            Box::new(sink),
            times.clone(),
        )?;
        let failure = enc.failure.clone();
        Ok(Pipeline {
            enc,
            times,
            failure,
        })
    }

    /// Sends a command to the encode thread.
    pub fn command(&self, c: Command) {
        let _ = self.enc.commands.send(c);
    }

    /// Timings and counters so far.
    pub fn times(&self) -> StageTimes {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the pipeline stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops and joins the encode thread.
    pub fn stop(&mut self) {
        self.enc.stop();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode_loop(
    mut src: Source,
    cfg: &EncodeSettings,
    commands: &Receiver<Command>,
    sink: &mut dyn FrameSink,
    stop: &std::sync::atomic::AtomicBool,
    times: &Mutex<StageTimes>,
    dest: &Destination,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    // Wait for the client's first probe: the first frame (a keyframe) must not go nowhere.
    while dest.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
        if stop.load(Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut interval = Duration::from_secs_f64(1000.0 / src.mode.refresh_mhz as f64);
    let mut next = Instant::now();
    let mut index: u32 = 0;
    let mut force_keyframe = true;
    while !stop.load(Relaxed) {
        loop {
            match commands.try_recv() {
                Ok(Command::Keyframe) => force_keyframe = true,
                Ok(Command::Reconfigure {
                    mode,
                    bitrate_kbps,
                    reply,
                }) => {
                    let rate = if bitrate_kbps == 0 {
                        src.bitrate_kbps
                    } else {
                        bitrate_kbps
                    };
                    match Source::open(cfg, mode, rate) {
                        Ok(s) => {
                            src = s;
                            interval = Duration::from_secs_f64(1000.0 / mode.refresh_mhz as f64);
                            force_keyframe = true;
                            let _ = reply.send(Ok((index, rate)));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > interval * 2 {
            next = now; // fell behind (slow encoder): do not try to catch up in a burst
        }
        next += interval;

        // The source draws its picture, then the frame counts as captured: the stamp carries
        // that moment (drawing the stamp itself takes microseconds).
        let t = Instant::now();
        src.pattern.render(index, 0, &mut src.bgra);
        let render_us = t.elapsed().as_micros() as u32;
        let capture_us = Instant::now().duration_since(cfg.epoch).as_micros() as u64;
        draw_stamp_bgra(
            &mut src.bgra,
            Stamp {
                frame: index,
                capture_us,
            },
        );
        let t = Instant::now();
        src.convert
            .convert(&src.bgra, &mut src.yuv)
            .map_err(|e| e.to_string())?;
        let convert_us = t.elapsed().as_micros() as u32;
        let t = Instant::now();
        let out = src
            .encoder
            .encode(&src.yuv, index as i64, force_keyframe)
            .map_err(|e| e.to_string())?;
        let encode_us = t.elapsed().as_micros() as u32;
        {
            let mut tm = times.lock().unwrap_or_else(|e| e.into_inner());
            tm.render_us.record(render_us);
            tm.convert_us.record(convert_us);
            tm.encode_us.record(encode_us);
        }
        index = index.wrapping_add(1);
        if let Some(f) = out {
            force_keyframe = false;
            if !sink.deliver(Encoded {
                data: f.data,
                keyframe: f.keyframe,
                capture_us,
            })? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// punktfunk/1's data plane: the core's packetizer, FEC and sealing, then one batched send.
struct DataPlaneSink {
    session: SendSession,
    batch: PacketBatch,
    sock: Arc<UdpSocket>,
    dest: Destination,
    times: Arc<Mutex<StageTimes>>,
}

impl FrameSink for DataPlaneSink {
    fn deliver(&mut self, f: Encoded) -> Result<bool, String> {
        let Some(to) = *self.dest.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(true);
        };
        let t = Instant::now();
        let cpu = thread_cpu_us();
        self.session
            .send_frame(
                &f.data,
                FrameMeta {
                    timestamp_us: f.capture_us,
                    keyframe: f.keyframe,
                },
                &mut self.batch,
            )
            .map_err(|e| e.to_string())?;
        // A full socket buffer drops datagrams like a congested link would; FEC and keyframe
        // requests deal with it, so the error is counted rather than fatal.
        let _ = self
            .sock
            .send_batch(to, self.batch.as_bytes(), self.batch.segment_size());
        let send_us = t.elapsed().as_micros() as u32;
        let send_cpu_us = thread_cpu_us().saturating_sub(cpu) as u32;
        let mut tm = self.times.lock().unwrap_or_else(|e| e.into_inner());
        tm.send_us.record(send_us);
        tm.send_cpu_us.record(send_cpu_us);
        tm.frames += 1;
        tm.bytes += f.data.len() as u64;
        tm.keyframes += u64::from(f.keyframe);
        Ok(true)
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
