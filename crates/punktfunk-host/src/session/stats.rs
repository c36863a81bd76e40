//! One figures snapshot per session, for the end-of-session log line, `--stats-json` and the
//! management API alike.

use super::input::InputStats;
use super::registry::Protocol;
use super::video::StageTimes;
use crate::stats::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of one stage, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stage {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Stage {
    /// From a histogram of µs.
    pub fn of(h: &Histogram) -> Stage {
        let ms = |p| f64::from(h.percentile(p)) / 1000.0;
        Stage {
            p50: ms(50.0),
            p95: ms(95.0),
            p99: ms(99.0),
        }
    }
}

/// A session's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStats {
    /// Protocol.
    pub protocol: Protocol,
    /// The protocol's session id (punktfunk/1 session id, GameStream RTSP session).
    pub session: String,
    /// The client.
    pub client: String,
    /// Mode streamed (the latest, after a mode change).
    pub mode: String,
    /// Codec.
    pub codec: String,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Seconds since the stream started.
    pub seconds: f64,
    /// Frames sent.
    pub frames: u64,
    /// Keyframes sent.
    pub keyframes: u64,
    /// Bytes of encoded video sent.
    pub bytes: u64,
    /// Pictures sent again because the desktop had nothing new.
    pub repeated_frames: u64,
    /// Keyframe requests coalesced with one pending or just sent.
    pub keyframe_requests_coalesced: u64,
    /// The source's work per picture.
    pub capture_ms: Stage,
    /// Colour conversion.
    pub convert_ms: Stage,
    /// Encoding.
    pub encode_ms: Stage,
    /// Packetize + FEC + seal + send, wall time.
    pub send_path_ms: Stage,
    /// The same, CPU time.
    pub send_path_cpu_ms: Stage,
    /// Host CPU (the whole process) per frame sent, ms.
    pub host_cpu_ms_per_frame: f64,
    /// Audio packets sent.
    pub audio_packets: u64,
    /// Input.
    pub input: InputStats,
    /// The protocol's own counters (datagrams, control messages, …).
    pub counters: BTreeMap<&'static str, u64>,
}

impl SessionStats {
    /// Fills the video fields from the encode thread's figures.
    pub fn set_video(&mut self, t: &StageTimes) {
        self.frames = t.frames;
        self.keyframes = t.keyframes;
        self.bytes = t.bytes;
        self.repeated_frames = t.repeated;
        self.keyframe_requests_coalesced = t.keyframe_requests_coalesced;
        self.capture_ms = Stage::of(&t.capture_us);
        self.convert_ms = Stage::of(&t.convert_us);
        self.encode_ms = Stage::of(&t.encode_us);
        self.send_path_ms = Stage::of(&t.send_us);
        self.send_path_cpu_ms = Stage::of(&t.send_cpu_us);
    }

    /// Input by kind as `kind=count` pairs.
    pub fn inputs_line(&self) -> String {
        self.input
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The protocol counters as `name=count` pairs.
    pub fn counters_line(&self) -> String {
        self.counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The end-of-session log line.
    pub fn log_end(&self, reason: &str) {
        let (inputs, counters) = (self.inputs_line(), self.counters_line());
        let f = |s: Stage| format!("{:.3}/{:.3}", s.p50, s.p99);
        macro_rules! line {
            ($msg:literal) => {
                tracing::info!(
                    reason,
                    session = %self.session,
                    client = %self.client,
                    mode = %self.mode,
                    codec = %self.codec,
                    seconds = format!("{:.1}", self.seconds),
                    frames = self.frames,
                    keyframes = self.keyframes,
                    bytes = self.bytes,
                    repeated = self.repeated_frames,
                    audio_packets = self.audio_packets,
                    input_events = self.input.injected,
                    input_queue_full = self.input.dropped_queue_full,
                    encode_ms_p50_p99 = %f(self.encode_ms),
                    send_cpu_ms_p50_p99 = %f(self.send_path_cpu_ms),
                    send_cpu_p50_us = (self.send_path_cpu_ms.p50 * 1000.0).round() as u64,
                    send_cpu_p99_us = (self.send_path_cpu_ms.p99 * 1000.0).round() as u64,
                    host_cpu_ms_per_frame = format!("{:.3}", self.host_cpu_ms_per_frame),
                    %counters,
                    %inputs,
                    $msg
                )
            };
        }
        match self.protocol {
            Protocol::GameStream => line!("GameStream session ended"),
            Protocol::Punktfunk1 => line!("session ended"),
        }
    }
}
