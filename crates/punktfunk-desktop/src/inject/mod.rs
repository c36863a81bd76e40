//! Input injectors: where the client's input events go on the host.
//!
//! Backends: [`log`] (counts and logs every event; what the test pattern uses) and [`wlr`]
//! (wlroots virtual pointer and keyboard: sway and other wlroots compositors; keys, pointer,
//! buttons 1 to 5, wheel and text, no touch or gamepads). Mutter RemoteDesktop, XTEST and
//! uinput are probed from the environment; their backends are not in this build yet.
//!
//! An injector runs on the session's input thread behind a bounded queue, so a slow backend
//! never stalls the network thread. [`InputInjector::release_all`] is called at every session
//! end so no key or button stays pressed after a client goes away.

pub mod log;
mod resolve;
pub mod wlr;

pub use resolve::{candidates, capabilities, open, probe, resolve};

use punktfunk_core::input::{Feedback, InputEvent};

/// The injector backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectorBackend {
    /// wlroots virtual pointer and virtual keyboard.
    Wlr,
    /// Mutter's RemoteDesktop D-Bus interface.
    Mutter,
    /// The X server's XTEST extension.
    Xtest,
    /// Kernel uinput devices.
    Uinput,
    /// Logs and counts events.
    Log,
}

impl crate::probe::BackendId for InjectorBackend {
    const EDGE: &'static str = "input";
    const ALL: &'static [InjectorBackend] = &[
        InjectorBackend::Wlr,
        InjectorBackend::Mutter,
        InjectorBackend::Xtest,
        InjectorBackend::Uinput,
        InjectorBackend::Log,
    ];
    fn name(self) -> &'static str {
        match self {
            InjectorBackend::Wlr => "wlr",
            InjectorBackend::Mutter => "mutter",
            InjectorBackend::Xtest => "xtest",
            InjectorBackend::Uinput => "uinput",
            InjectorBackend::Log => "log",
        }
    }
}

/// What an injector can deliver; a protocol advertises only these to its client (a client told
/// "touch supported" stops emulating the mouse with touch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct InjectCaps {
    /// Keys.
    pub keyboard: bool,
    /// Pointer motion, buttons and scroll.
    pub mouse: bool,
    /// Touch contacts.
    pub touch: bool,
    /// Pen / stylus.
    pub pen: bool,
    /// Gamepad buttons, sticks and triggers.
    pub gamepad: bool,
    /// Gamepad touchpads.
    pub gamepad_touchpad: bool,
    /// Gamepad motion sensors.
    pub gamepad_motion: bool,
}

/// Injection failures, by fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// The backend has no way to deliver this kind of event.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The desktop refused (permissions, a portal said no).
    #[error("refused by the desktop")]
    Denied,
    /// The desktop or device went away.
    #[error("the input target is gone")]
    Disconnected,
    /// Anything else the backend reported.
    #[error("{0}")]
    Backend(String),
}

/// Applies input events to the host's desktop.
pub trait InputInjector: Send {
    /// Which backend this is.
    fn backend(&self) -> InjectorBackend;
    /// What it can deliver.
    fn capabilities(&self) -> InjectCaps;
    /// Applies one event.
    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError>;
    /// Releases every key and button this injector holds pressed (a client that went away
    /// must not leave a key down).
    fn release_all(&mut self);
    /// Moves feedback produced since the last call (rumble …) into `out`. Backends without
    /// feedback keep the default, which adds nothing.
    fn feedback(&mut self, out: &mut Vec<Feedback>) {
        let _ = out;
    }
}

/// Keys and buttons held down, so [`InputInjector::release_all`] knows what to release.
#[derive(Debug, Clone, Default)]
pub struct Held {
    keys: std::collections::BTreeSet<u16>,
    buttons: std::collections::BTreeSet<u8>,
}

impl Held {
    /// Notes what `event` presses or releases.
    pub fn track(&mut self, event: &InputEvent) {
        match *event {
            InputEvent::Key { code, down, .. } => {
                if down {
                    self.keys.insert(code);
                } else {
                    self.keys.remove(&code);
                }
            }
            InputEvent::MouseButton { button, down } => {
                if down {
                    self.buttons.insert(button.0);
                } else {
                    self.buttons.remove(&button.0);
                }
            }
            _ => {}
        }
    }

    /// The release events for everything held, emptying the set.
    pub fn take_releases(&mut self) -> Vec<InputEvent> {
        let keys = std::mem::take(&mut self.keys)
            .into_iter()
            .map(|code| InputEvent::Key {
                code,
                down: false,
                modifiers: Default::default(),
            });
        let buttons =
            std::mem::take(&mut self.buttons)
                .into_iter()
                .map(|b| InputEvent::MouseButton {
                    button: punktfunk_core::input::MouseButton(b),
                    down: false,
                });
        keys.chain(buttons).collect()
    }

    /// The keys held, in code order.
    pub fn keys(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.iter().copied()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.buttons.is_empty()
    }
}

impl InputInjector for Box<dyn InputInjector> {
    fn backend(&self) -> InjectorBackend {
        (**self).backend()
    }
    fn capabilities(&self) -> InjectCaps {
        (**self).capabilities()
    }
    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
        (**self).inject(event)
    }
    fn release_all(&mut self) {
        (**self).release_all()
    }
    fn feedback(&mut self, out: &mut Vec<Feedback>) {
        (**self).feedback(out)
    }
}
