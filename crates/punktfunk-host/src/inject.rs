//! Input injection: where the client's input events go.
//!
//! Desktop backends (wlr virtual pointer/keyboard, libei, uinput) plug in behind
//! [`InputInjector`]. Until one exists, [`LogInjector`] logs and counts what arrives.
//!
//! Feedback flows the other way: a virtual gamepad whose game asks for force feedback reports
//! it through [`InputInjector::feedback`], and the session forwards it to the client (GameStream
//! rumble). [`RumbleEchoInjector`] is a testing aid that produces rumble from the client's own
//! triggers, so that path can be exercised end to end without a game or a virtual gamepad.

use punktfunk_core::input::{Feedback, InputEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Applies input events to the host's desktop.
pub trait InputInjector: Send {
    /// Backend name for logs.
    fn name(&self) -> &str;
    /// Applies one event.
    fn inject(&mut self, event: &InputEvent);
    /// Moves feedback produced since the last call (rumble …) into `out`. Backends without
    /// feedback keep the default, which adds nothing.
    fn feedback(&mut self, out: &mut Vec<Feedback>) {
        let _ = out;
    }
}

/// Logs every event at debug level and counts them.
#[derive(Debug, Default, Clone)]
pub struct LogInjector {
    count: Arc<AtomicU64>,
}

impl LogInjector {
    /// Events injected so far (shared between clones).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl InputInjector for LogInjector {
    fn name(&self) -> &str {
        "log"
    }
    fn inject(&mut self, event: &InputEvent) {
        self.count.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?event, "input event");
    }
}

/// Testing aid: a [`LogInjector`] that answers gamepad trigger changes with rumble — left
/// trigger to the low-frequency motor, right trigger to the high-frequency one, each scaled from
/// 0..=255 to 0..=65535 — as a game with a real virtual gamepad would send force feedback.
#[derive(Debug, Default)]
pub struct RumbleEchoInjector {
    log: LogInjector,
    /// Last triggers seen per pad slot.
    triggers: std::collections::HashMap<u8, (u8, u8)>,
    pending: Vec<Feedback>,
}

impl RumbleEchoInjector {
    /// Most rumble messages held between [`InputInjector::feedback`] calls (the oldest go).
    pub const MAX_PENDING: usize = 64;
}

impl InputInjector for RumbleEchoInjector {
    fn name(&self) -> &str {
        "log+rumble-echo"
    }
    fn inject(&mut self, event: &InputEvent) {
        self.log.inject(event);
        let InputEvent::Gamepad(g) = event else {
            return;
        };
        let now = (g.left_trigger, g.right_trigger);
        // Slots are a u8: the map holds at most 256 entries whatever the client sends.
        let before = self.triggers.insert(g.pad, now).unwrap_or((0, 0));
        if before != now {
            if self.pending.len() == Self::MAX_PENDING {
                self.pending.remove(0);
            }
            self.pending.push(Feedback::Rumble {
                pad: g.pad,
                low: u16::from(now.0) * 257,
                high: u16::from(now.1) * 257,
            });
        }
    }
    fn feedback(&mut self, out: &mut Vec<Feedback>) {
        out.append(&mut self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::input::GamepadState;

    fn pad(pad: u8, lt: u8, rt: u8) -> InputEvent {
        InputEvent::Gamepad(GamepadState {
            pad,
            buttons: 0,
            left_trigger: lt,
            right_trigger: rt,
            left_stick: (0, 0),
            right_stick: (0, 0),
        })
    }

    #[test]
    fn the_log_injector_counts_and_gives_no_feedback() {
        let mut inj = LogInjector::default();
        let counter = inj.clone();
        inj.inject(&pad(0, 255, 0));
        let mut out = Vec::new();
        inj.feedback(&mut out);
        assert_eq!(counter.count(), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn rumble_echo_answers_trigger_changes_only() {
        let mut inj = RumbleEchoInjector::default();
        inj.inject(&pad(0, 0, 0)); // unchanged from the resting state: nothing
        inj.inject(&pad(0, 255, 128));
        inj.inject(&pad(0, 255, 128)); // the same again: nothing
        inj.inject(&pad(3, 1, 0));
        inj.inject(&InputEvent::MouseMove { dx: 1, dy: 1 });
        let mut out = Vec::new();
        inj.feedback(&mut out);
        assert_eq!(
            out,
            [
                Feedback::Rumble {
                    pad: 0,
                    low: 65535,
                    high: 128 * 257
                },
                Feedback::Rumble {
                    pad: 3,
                    low: 257,
                    high: 0
                },
            ]
        );
        inj.feedback(&mut out);
        assert_eq!(out.len(), 2, "feedback is handed out once");
        assert_eq!(inj.log.count(), 5);
    }

    #[test]
    fn rumble_echo_holds_a_bounded_backlog() {
        let mut inj = RumbleEchoInjector::default();
        for i in 0..200u32 {
            inj.inject(&pad(0, (i % 256) as u8, 0));
        }
        let mut out = Vec::new();
        inj.feedback(&mut out);
        assert_eq!(out.len(), RumbleEchoInjector::MAX_PENDING);
        assert_eq!(
            out.last(),
            Some(&Feedback::Rumble {
                pad: 0,
                low: 199 * 257,
                high: 0
            })
        );
    }
}
