//! Testing aids, as decorators around the real parts (never branches in the send path):
//!
//! - [`RumbleEcho`] wraps any injector and answers gamepad trigger changes with rumble, so the
//!   force-feedback path can be exercised end to end without a game;
//! - [`Dropping`] wraps a datagram sender and drops a fraction of what passes, to watch a
//!   client recover through FEC.

use punktfunk_core::input::{Feedback, InputEvent};
use punktfunk_desktop::{InjectCaps, InjectError, InjectorBackend, InputInjector};
use punktfunk_net::{ImpairConfig, Impairment, UdpSocket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Answers each change of a pad's triggers with rumble on that pad — left trigger to the
/// low-frequency motor, right to the high-frequency one, 0..=255 scaled to 0..=65535 — as a game
/// with a real virtual gamepad would send force feedback.
pub struct RumbleEcho<I> {
    inner: I,
    /// Last triggers seen per pad slot (slots are a u8: at most 256 entries).
    triggers: std::collections::HashMap<u8, (u8, u8)>,
    pending: Vec<Feedback>,
}

impl<I: InputInjector> RumbleEcho<I> {
    /// Most rumble messages held between [`InputInjector::feedback`] calls (the oldest go).
    pub const MAX_PENDING: usize = 64;

    /// Wraps `inner`.
    pub fn new(inner: I) -> RumbleEcho<I> {
        RumbleEcho {
            inner,
            triggers: Default::default(),
            pending: Vec::new(),
        }
    }
}

impl<I: InputInjector> InputInjector for RumbleEcho<I> {
    fn backend(&self) -> InjectorBackend {
        self.inner.backend()
    }
    fn capabilities(&self) -> InjectCaps {
        self.inner.capabilities()
    }
    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
        let r = self.inner.inject(event);
        if let InputEvent::Gamepad(g) = event {
            let now = (g.left_trigger, g.right_trigger);
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
        r
    }
    fn release_all(&mut self) {
        self.inner.release_all();
    }
    fn feedback(&mut self, out: &mut Vec<Feedback>) {
        self.inner.feedback(out);
        out.append(&mut self.pending);
    }
}

/// Sends batches of equal-sized datagrams to one address.
pub trait DatagramOut: Send + 'static {
    /// Sends `bytes`, `segment` bytes per datagram.
    fn send_batch(&mut self, to: SocketAddr, bytes: &[u8], segment: usize) -> std::io::Result<()>;
}

impl DatagramOut for Arc<UdpSocket> {
    fn send_batch(&mut self, to: SocketAddr, bytes: &[u8], segment: usize) -> std::io::Result<()> {
        UdpSocket::send_batch(self, to, bytes, segment).map(|_| ())
    }
}

/// Drops a fraction of the datagrams it is given (the project's impairment model, random loss
/// only) and passes the rest on.
pub struct Dropping<O> {
    inner: O,
    model: Impairment,
    survivors: Vec<u8>,
}

impl<O: DatagramOut> Dropping<O> {
    /// Drops `fraction` (0..1) of what `inner` would send, seeded for reproducible runs.
    pub fn new(inner: O, fraction: f64, seed: u64) -> Dropping<O> {
        Dropping {
            inner,
            model: Impairment::new(ImpairConfig {
                loss: fraction,
                seed,
                ..Default::default()
            }),
            survivors: Vec::new(),
        }
    }

    /// Whether one datagram survives (no delay is configured: what passes comes straight back).
    pub fn passes(&mut self, datagram: &[u8]) -> bool {
        let now = Instant::now();
        self.model.push(now, datagram.to_vec());
        self.model.poll(now).is_some()
    }
}

impl<O: DatagramOut> DatagramOut for Dropping<O> {
    fn send_batch(&mut self, to: SocketAddr, bytes: &[u8], segment: usize) -> std::io::Result<()> {
        let mut survivors = std::mem::take(&mut self.survivors);
        survivors.clear();
        for dg in bytes.chunks(segment) {
            if self.passes(dg) {
                survivors.extend_from_slice(dg);
            }
        }
        let r = if survivors.is_empty() {
            Ok(())
        } else {
            self.inner.send_batch(to, &survivors, segment)
        };
        self.survivors = survivors;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::input::GamepadState;
    use punktfunk_desktop::inject::log::LogInjector;

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
    fn rumble_echo_answers_trigger_changes_only_and_passes_events_on() {
        let log = LogInjector::new();
        let counts = log.counts();
        let mut inj = RumbleEcho::new(log);
        inj.inject(&pad(0, 0, 0)).unwrap(); // unchanged from rest: nothing
        inj.inject(&pad(0, 255, 128)).unwrap();
        inj.inject(&pad(0, 255, 128)).unwrap(); // the same again: nothing
        inj.inject(&pad(3, 1, 0)).unwrap();
        inj.inject(&InputEvent::MouseMove { dx: 1, dy: 1 }).unwrap();
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
        assert_eq!(counts.events.load(std::sync::atomic::Ordering::Relaxed), 5);
    }

    #[test]
    fn rumble_echo_holds_a_bounded_backlog() {
        let mut inj = RumbleEcho::new(LogInjector::new());
        for i in 0..200u32 {
            inj.inject(&pad(0, (i % 256) as u8, 0)).unwrap();
        }
        let mut out = Vec::new();
        inj.feedback(&mut out);
        assert_eq!(out.len(), RumbleEcho::<LogInjector>::MAX_PENDING);
        assert_eq!(
            out.last(),
            Some(&Feedback::Rumble {
                pad: 0,
                low: 199 * 257,
                high: 0
            })
        );
    }

    struct Count(Arc<std::sync::Mutex<usize>>);
    impl DatagramOut for Count {
        fn send_batch(&mut self, _: SocketAddr, bytes: &[u8], seg: usize) -> std::io::Result<()> {
            *self.0.lock().unwrap() += bytes.len() / seg;
            Ok(())
        }
    }

    #[test]
    fn dropping_passes_about_the_rest() {
        let n = Arc::new(std::sync::Mutex::new(0));
        let mut d = Dropping::new(Count(n.clone()), 0.25, 7);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..100 {
            d.send_batch(to, &[0u8; 100 * 10], 10).unwrap();
        }
        let passed = *n.lock().unwrap();
        assert!((7000..8000).contains(&passed), "{passed} of 10000 passed");
    }
}
