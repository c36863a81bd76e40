//! Audio sources: what the host's desktop plays, as interleaved 16-bit PCM.
//!
//! The device's clock paces audio: [`AudioSource::read`] returns when the device has produced
//! the samples asked for, so the consumer never paces captured audio with a timer of its own.
//! The format (rate, channels, channel order) is the source's; the consumer adapts to it.
//!
//! Backends: [`tone`] (a sine per channel on a simulated device clock). PipeWire sink-monitor
//! capture is probed from the environment; its backend is not in this build yet.

mod resolve;
pub mod tone;

pub use resolve::{candidates, open, probe, resolve};

use std::time::Instant;

/// The audio backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioBackend {
    /// The monitor of PipeWire's default sink.
    PipeWire,
    /// A test tone.
    Tone,
}

impl crate::probe::BackendId for AudioBackend {
    const EDGE: &'static str = "audio";
    const ALL: &'static [AudioBackend] = &[AudioBackend::PipeWire, AudioBackend::Tone];
    fn name(self) -> &'static str {
        match self {
            AudioBackend::PipeWire => "pipewire",
            AudioBackend::Tone => "tone",
        }
    }
}

/// A source's sample format. Channels are in the usual order (front left, front right, centre,
/// LFE, back left, back right, side left, side right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub rate: u32,
    /// Channels per frame.
    pub channels: u8,
}

/// Audio capture failures, by fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The backend cannot produce this.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The sound server refused.
    #[error("refused by the sound server: {0}")]
    Denied(String),
    /// The device or the sound server went away.
    #[error("the audio device is gone")]
    Disconnected,
    /// Anything else the backend reported.
    #[error("{0}")]
    Backend(String),
}

/// Produces the desktop's audio.
pub trait AudioSource: Send {
    /// Which backend this is.
    fn backend(&self) -> AudioBackend;
    /// The format of what [`Self::read`] delivers.
    fn format(&self) -> AudioFormat;
    /// Fills `out` (a whole number of frames) once the device has produced that much, or
    /// returns `Ok(false)` with `out` untouched if it has not by `deadline`.
    fn read(&mut self, out: &mut [i16], deadline: Instant) -> Result<bool, AudioError>;
}
