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

use punktfunk_core::input::{Feedback, InputEvent, Modifiers};

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

/// The modifiers a key event's flags name: (flag, the left key's evdev code, both keys' codes).
const MODIFIER_KEYS: [(u8, u16, [u16; 2]); 4] = [
    (Modifiers::SHIFT, 42, [42, 54]),
    (Modifiers::CTRL, 29, [29, 97]),
    (Modifiers::ALT, 56, [56, 100]),
    (Modifiers::META, 125, [125, 126]),
];

/// Keeps the desktop's modifiers what a client's key events say they are.
///
/// A key event carries the client's modifier flags. Most clients also send the modifier keys
/// themselves, but some send only the flags (a soft keyboard typing `A` as "a with Shift"). For
/// a key that is not a modifier, a flag set while neither of that modifier's keys is held
/// presses the left one first; a modifier pressed that way is released as soon as a key event
/// comes without its flag. A modifier key the client sends itself takes over one pressed
/// here (no second press). Synthetic presses go through [`Held`] like any other key, so
/// [`InputInjector::release_all`] releases them too.
#[derive(Debug, Clone, Default)]
pub struct ModifierSync {
    synthetic: [bool; 4],
}

impl ModifierSync {
    /// The key events to inject for `event` (itself last), given what is held now. Events
    /// that are not keys pass through alone.
    pub fn expand(&mut self, event: &InputEvent, held: &Held) -> Vec<InputEvent> {
        let InputEvent::Key {
            code,
            down,
            modifiers,
        } = *event
        else {
            return vec![*event];
        };
        let key = |code, down| InputEvent::Key {
            code,
            down,
            modifiers,
        };
        if let Some(i) = MODIFIER_KEYS.iter().position(|m| m.2.contains(&code)) {
            if self.synthetic[i] && code == MODIFIER_KEYS[i].1 {
                // The client's own press of a key pressed here: it is down already.
                self.synthetic[i] = false;
                if down {
                    return Vec::new();
                }
            }
            return vec![*event];
        }
        let mut out = Vec::new();
        for (i, &(flag, left, codes)) in MODIFIER_KEYS.iter().enumerate() {
            let want = modifiers.0 & flag != 0;
            if want && !self.synthetic[i] && !held.keys().any(|k| codes.contains(&k)) {
                out.push(key(left, true));
                self.synthetic[i] = true;
            } else if !want && self.synthetic[i] {
                out.push(key(left, false));
                self.synthetic[i] = false;
            }
        }
        out.push(key(code, down));
        out
    }

    /// Forgets the synthetic presses (after everything held was released).
    pub fn reset(&mut self) {
        self.synthetic = [false; 4];
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: u16, down: bool, mods: u8) -> InputEvent {
        InputEvent::Key {
            code,
            down,
            modifiers: Modifiers(mods),
        }
    }

    /// Runs `events` through a sync and a held set; the (code, down) pairs injected.
    fn run(events: &[InputEvent]) -> (Vec<(u16, bool)>, Held) {
        let (mut sync, mut held) = (ModifierSync::default(), Held::default());
        let mut out = Vec::new();
        for e in events {
            for x in sync.expand(e, &held) {
                held.track(&x);
                if let InputEvent::Key { code, down, .. } = x {
                    out.push((code, down));
                }
            }
        }
        (out, held)
    }

    #[test]
    fn flags_without_modifier_keys_press_and_release_the_modifier() {
        let (out, held) = run(&[
            key(30, true, Modifiers::SHIFT),
            key(30, false, Modifiers::SHIFT),
            key(30, true, 0),
            key(30, false, 0),
        ]);
        assert_eq!(
            out,
            [
                (42, true),
                (30, true),
                (30, false),
                (42, false),
                (30, true),
                (30, false)
            ]
        );
        assert!(held.is_empty());
    }

    #[test]
    fn a_client_that_sends_its_modifier_keys_gets_nothing_extra() {
        let events = [
            key(54, true, 0),
            key(30, true, Modifiers::SHIFT),
            key(30, false, Modifiers::SHIFT),
            key(54, false, Modifiers::SHIFT),
            key(29, true, 0),
            key(46, true, Modifiers::CTRL),
            key(46, false, Modifiers::CTRL),
            key(29, false, 0),
        ];
        let (out, _) = run(&events);
        let plain: Vec<(u16, bool)> = events
            .iter()
            .map(|e| match *e {
                InputEvent::Key { code, down, .. } => (code, down),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(out, plain);
    }

    #[test]
    fn the_clients_own_press_takes_over_a_synthetic_one_and_release_all_covers_it() {
        let (out, held) = run(&[
            key(30, true, Modifiers::SHIFT | Modifiers::META),
            // The client now sends Shift itself: no second press.
            key(42, true, Modifiers::SHIFT),
        ]);
        assert_eq!(out, [(42, true), (125, true), (30, true)]);
        // Still held: a, Shift and Meta, all released at the end of a session.
        let mut held = held;
        let codes: Vec<u16> = held
            .take_releases()
            .iter()
            .filter_map(|e| match *e {
                InputEvent::Key { code, .. } => Some(code),
                _ => None,
            })
            .collect();
        assert_eq!(codes, [30, 42, 125]);
    }

    #[test]
    fn other_events_pass_through() {
        let mut sync = ModifierSync::default();
        let e = InputEvent::MouseMove { dx: 1, dy: 2 };
        assert_eq!(sync.expand(&e, &Held::default()), vec![e]);
    }
}
