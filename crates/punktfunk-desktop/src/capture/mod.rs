//! Frame sources: pictures of an output, delivered when the source produces them.
//!
//! The source's clock paces the video: a compositor hands out a frame when it has drawn one
//! (a screencopy `ready`, a PipeWire buffer), so the encode thread waits in
//! [`FrameSource::next_frame`] instead of on a timer of its own. "Nothing new before the
//! deadline" (`Ok(None)`) is a normal answer on an idle desktop; the video loop then repeats the
//! last picture at the session's minimum rate.
//!
//! Backends: [`screencopy`] (wlr-screencopy of a Wayland output into shared memory, damage
//! driven, on a thread of its own) and [`pattern`] (the test pattern with its stamp, BGRx like a
//! compositor's buffers). PipeWire and XShm are probed from the environment; their backends are
//! not in this build yet.

pub mod pattern;
mod resolve;
pub mod screencopy;

pub use resolve::{candidates, open, probe, resolve, SourceOptions};

use punktfunk_media::FrameRef;
use std::time::Instant;

/// The capture backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureBackend {
    /// wlroots screencopy of a Wayland output.
    Screencopy,
    /// A PipeWire stream (Mutter ScreenCast or the portal).
    PipeWire,
    /// XShm of an X screen.
    XShm,
    /// The synthetic test pattern.
    TestPattern,
}

impl crate::probe::BackendId for CaptureBackend {
    const EDGE: &'static str = "capture";
    const ALL: &'static [CaptureBackend] = &[
        CaptureBackend::Screencopy,
        CaptureBackend::PipeWire,
        CaptureBackend::XShm,
        CaptureBackend::TestPattern,
    ];
    fn name(self) -> &'static str {
        match self {
            CaptureBackend::Screencopy => "screencopy",
            CaptureBackend::PipeWire => "pipewire",
            CaptureBackend::XShm => "xshm",
            CaptureBackend::TestPattern => "testpattern",
        }
    }
}

/// One captured picture, borrowed from the source until the next call.
#[derive(Debug)]
pub struct Captured<'a> {
    /// The pixels.
    pub frame: FrameRef<'a>,
    /// When the picture was taken (for a compositor: when it was presented).
    pub captured_at: Instant,
    /// Time the source spent producing it after its clock said so (drawing, copying), µs.
    pub cost_us: u32,
}

/// Capture failures, by fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The backend cannot capture this target or format.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The compositor refused.
    #[error("refused by the compositor: {0}")]
    Denied(String),
    /// The output or the compositor went away.
    #[error("the captured output is gone")]
    Disconnected,
    /// Anything else the backend reported.
    #[error("{0}")]
    Backend(String),
}

/// Produces pictures of one output.
pub trait FrameSource: Send {
    /// Which backend this is.
    fn backend(&self) -> CaptureBackend;
    /// Waits until the next picture or `deadline`, whichever comes first; `Ok(None)` when
    /// nothing new arrived by the deadline.
    fn next_frame(&mut self, deadline: Instant) -> Result<Option<Captured<'_>>, CaptureError>;
    /// Follows its output to a new mode, keeping its clock and frame numbering.
    /// `Unsupported` (the default) makes the caller open a new source instead.
    fn set_mode(&mut self, mode: punktfunk_core::control::Mode) -> Result<(), CaptureError> {
        Err(CaptureError::Unsupported(format!(
            "{} sources are opened again for a new mode ({mode})",
            crate::probe::BackendId::name(self.backend())
        )))
    }
}
