//! Virtual displays: an output at the client's exact mode, created per stream and removed when
//! its [`Output`] is dropped.
//!
//! Backends: [`sway`] (a headless output per stream at the client's mode) and [`existing`] (no
//! new output: the desktop as it is, which is what the test pattern streams, or one named output
//! of it). Mutter and Xorg are probed from the environment so the resolver and `doctor` can say
//! what was found; their backends are not part of this build yet. [`cvt`] computes the full
//! timing of a mode (VESA CVT) for the RandR backend to add.

pub mod cvt;
pub mod existing;
mod resolve;
pub mod sway;

pub use resolve::{candidates, open, probe, resolve, DisplayOptions};

use punktfunk_core::control::Mode;

/// The virtual-display backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayBackend {
    /// A headless output on sway (wlroots `create_output` with a custom mode).
    Sway,
    /// A virtual monitor on GNOME (Mutter ScreenCast `RecordVirtual`).
    Mutter,
    /// A RandR output on an Xorg server.
    Xorg,
    /// No new output: the desktop as it is.
    Existing,
}

impl crate::probe::BackendId for DisplayBackend {
    const EDGE: &'static str = "display";
    const ALL: &'static [DisplayBackend] = &[
        DisplayBackend::Sway,
        DisplayBackend::Mutter,
        DisplayBackend::Xorg,
        DisplayBackend::Existing,
    ];
    fn name(self) -> &'static str {
        match self {
            DisplayBackend::Sway => "sway",
            DisplayBackend::Mutter => "mutter",
            DisplayBackend::Xorg => "xorg",
            DisplayBackend::Existing => "existing",
        }
    }
}

/// What capture needs to find an output's pictures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum CaptureTarget {
    /// Whatever the desktop shows (no particular output).
    Desktop,
    /// A Wayland output by name (wlr-screencopy).
    WaylandOutput(String),
}

/// Virtual-display failures, by fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisplayError {
    /// The backend cannot do this at all (e.g. a mode it has no way to set).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The compositor refused (permissions, policy).
    #[error("refused by the compositor: {0}")]
    Denied(String),
    /// The compositor went away.
    #[error("the compositor is gone")]
    Disconnected,
    /// The mode itself is not valid.
    #[error("invalid mode: {0}")]
    InvalidMode(String),
    /// Anything else the backend reported.
    #[error("{0}")]
    Backend(String),
}

/// Creates outputs.
pub trait VirtualDisplay: Send {
    /// Which backend this is.
    fn backend(&self) -> DisplayBackend;
    /// Creates an output at `mode`.
    fn create(&mut self, mode: Mode) -> Result<Box<dyn Output>, DisplayError>;
}

/// A created output; dropping it removes the output (or gives it back to its pool).
pub trait Output: Send {
    /// Which backend made it.
    fn backend(&self) -> DisplayBackend;
    /// A name for logs (the compositor's output name where there is one).
    fn name(&self) -> &str;
    /// The current mode.
    fn mode(&self) -> Mode;
    /// Changes the mode mid-stream.
    fn set_mode(&mut self, mode: Mode) -> Result<(), DisplayError>;
    /// What capture needs to find it.
    fn capture_target(&self) -> CaptureTarget;
    /// The environment an app needs to appear on it.
    fn launch_env(&self) -> Vec<(String, String)>;
}
