//! punktfunk-desktop: the host's platform edges.
//!
//! Four edges, each a small trait with one backend per file and one resolver that keeps a reason
//! for every candidate:
//!
//! | edge | trait | backends today |
//! |---|---|---|
//! | [`vdisplay`] | [`VirtualDisplay`] → RAII [`Output`] | `sway` (a headless output per stream), `existing` (the desktop as it is, or one named output) |
//! | [`capture`] | [`FrameSource`] | `screencopy` (wlroots compositors: a Wayland output, damage driven), `testpattern` (BGRx, clocked like a compositor) |
//! | [`inject`] | [`InputInjector`] | `wlr` (wlroots virtual pointer and keyboard), `log` (counts and logs) |
//! | [`audio`] | [`AudioSource`] | `tone` (a sine per channel on a simulated device clock) |
//!
//! The desktops without a backend here yet (GNOME/Mutter, Xorg) are still probed from the
//! [`DesktopEnv`], so `punktfunk-host doctor` says why each is unavailable.
//!
//! What this crate does not do: anything about a streaming protocol. It depends on the core's
//! types (mode, input events, feedback) and the media crate's frame types only; no trait method
//! is async. A backend that needs an event loop (a Wayland queue, the PipeWire loop, D-Bus) owns
//! a thread and takes commands over a channel, so every trait method stays synchronous.
//!
//! Threads: the frame source runs on the session's encode thread, the injector on the
//! session's input thread, the audio source on its audio thread; a backend may add its own
//! event-loop thread behind that.
//!
//! ```
//! use punktfunk_desktop::{capture, DesktopEnv, Preference};
//! let env = DesktopEnv::from_vars(std::iter::empty::<(String, String)>());
//! let chosen = capture::resolve(&env, &Preference::Auto).unwrap();
//! assert_eq!(chosen.backend, punktfunk_desktop::CaptureBackend::TestPattern);
//! ```

#![deny(unsafe_code)]

pub mod audio;
pub mod capture;
pub mod env;
pub mod inject;
pub mod probe;
pub mod vdisplay;
pub mod wayland;

pub use audio::{AudioBackend, AudioError, AudioFormat, AudioSource};
pub use capture::{CaptureBackend, CaptureError, Captured, FrameSource};
pub use env::DesktopEnv;
pub use inject::{InjectCaps, InjectError, InjectorBackend, InputInjector};
pub use probe::{Candidate, Chosen, NoBackend, Preference, Probe};
pub use vdisplay::{CaptureTarget, DisplayBackend, DisplayError, Output, VirtualDisplay};

/// Every backend of every edge with its probe outcome on this machine, for `doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EdgeReport {
    /// Virtual displays.
    pub display: Vec<Candidate>,
    /// Frame sources.
    pub capture: Vec<Candidate>,
    /// Input injectors.
    pub inject: Vec<Candidate>,
    /// Audio sources.
    pub audio: Vec<Candidate>,
}

/// Probes every backend of every edge.
pub fn probe_all(env: &DesktopEnv) -> EdgeReport {
    EdgeReport {
        display: vdisplay::candidates(env),
        capture: capture::candidates(env),
        inject: inject::candidates(env),
        audio: audio::candidates(env),
    }
}
