//! A session's input on its own thread: the network thread hands events over a bounded queue
//! and never waits for the desktop; the injector applies them, and its feedback (rumble) comes
//! back through a bounded buffer the protocol drains.
//!
//! When the queue is full the event is dropped and counted (a desktop that cannot keep up must
//! not stall the stream's control loop). Every exit path ends with
//! [`InputInjector::release_all`], so no key or button stays pressed after a client goes away.

use punktfunk_core::input::{Feedback, InputEvent};
use punktfunk_desktop::{InjectError, InputInjector};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Events waiting for the injector at most.
pub const QUEUE: usize = 1024;
/// Feedback messages held for the protocol at most (the oldest go first).
pub const MAX_FEEDBACK: usize = 64;

/// Input counters of a session.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Events handed to the injector.
    pub injected: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Events the injector could not deliver.
    pub failed: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

/// What the input thread did, for the session's figures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InputStats {
    /// Events applied by the injector.
    pub injected: u64,
    /// Events dropped at the full queue.
    pub dropped_queue_full: u64,
    /// Events the injector refused or failed.
    pub failed: u64,
    /// Events received by kind (including what the protocol could not model).
    pub by_kind: BTreeMap<&'static str, u64>,
}

impl InputCounters {
    /// Counts one received event or input message of `kind`.
    pub fn count_kind(&self, kind: &'static str) {
        *crate::lock(&self.by_kind).entry(kind).or_default() += 1;
    }

    /// Adds `n` to `kind`.
    pub fn add_kind(&self, kind: &'static str, n: u64) {
        *crate::lock(&self.by_kind).entry(kind).or_default() += n;
    }

    /// A snapshot.
    pub fn stats(&self) -> InputStats {
        InputStats {
            injected: self.injected.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            by_kind: crate::lock(&self.by_kind).clone(),
        }
    }
}

/// The running input thread; dropping it releases everything held and joins the thread.
pub struct InputThread {
    tx: Option<SyncSender<InputEvent>>,
    feedback: Arc<Mutex<VecDeque<Feedback>>>,
    counters: Arc<InputCounters>,
    thread: Option<JoinHandle<()>>,
}

impl InputThread {
    /// Starts the thread around `injector`.
    pub fn start(injector: Box<dyn InputInjector>) -> std::io::Result<InputThread> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let feedback: Arc<Mutex<VecDeque<Feedback>>> = Arc::default();
        let counters: Arc<InputCounters> = Arc::default();
        let thread = {
            let (fb, c) = (feedback.clone(), counters.clone());
            std::thread::Builder::new()
                .name("input".into())
                .spawn(move || run(injector, &rx, &fb, &c))?
        };
        Ok(InputThread {
            tx: Some(tx),
            feedback,
            counters,
            thread: Some(thread),
        })
    }

    /// Queues an event for the injector without waiting; counts it as dropped when the queue is
    /// full.
    pub fn inject(&self, event: InputEvent) {
        self.counters.count_kind(event.kind());
        let Some(tx) = &self.tx else { return };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves the injector's feedback collected so far into `out`.
    pub fn take_feedback(&self, out: &mut Vec<Feedback>) {
        out.extend(crate::lock(&self.feedback).drain(..));
    }

    /// The counters (the protocol counts what it could not turn into events here too).
    pub fn counters(&self) -> &Arc<InputCounters> {
        &self.counters
    }

    /// Releases everything held, then stops and joins the thread.
    pub fn stop(&mut self) {
        // Dropping the sender ends the thread after the queued events and the final release.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    mut injector: Box<dyn InputInjector>,
    rx: &Receiver<InputEvent>,
    feedback: &Mutex<VecDeque<Feedback>>,
    counters: &InputCounters,
) {
    let mut fb = Vec::new();
    let mut warned_denied = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(ev) => match injector.inject(&ev) {
                Ok(()) => {
                    counters.injected.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    match e {
                        InjectError::Unsupported(what) => {
                            tracing::debug!(what, "input event the injector cannot deliver")
                        }
                        InjectError::Denied if !warned_denied => {
                            warned_denied = true;
                            tracing::warn!("the desktop refuses injected input");
                        }
                        InjectError::Disconnected => {
                            tracing::warn!("the input target went away; input stops");
                            break;
                        }
                        other => tracing::debug!(error = %other, "input event failed"),
                    }
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        injector.feedback(&mut fb);
        if !fb.is_empty() {
            let mut q = crate::lock(feedback);
            for f in fb.drain(..) {
                if q.len() == MAX_FEEDBACK {
                    q.pop_front();
                }
                q.push_back(f);
            }
        }
    }
    injector.release_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::input::{Modifiers, MouseButton};
    use punktfunk_desktop::{InjectCaps, InjectorBackend};

    /// Records what reaches it; a test double for a desktop (none exists in unit tests).
    #[derive(Clone, Default)]
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        held: punktfunk_desktop::inject::Held,
        gate: Option<Arc<Mutex<()>>>,
    }

    impl InputInjector for Recorder {
        fn backend(&self) -> InjectorBackend {
            InjectorBackend::Log
        }
        fn capabilities(&self) -> InjectCaps {
            InjectCaps::default()
        }
        fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
            if let Some(g) = &self.gate {
                drop(crate::lock(g));
            }
            self.held.track(event);
            crate::lock(&self.log).push(format!("{event:?}"));
            Ok(())
        }
        fn release_all(&mut self) {
            for e in self.held.take_releases() {
                crate::lock(&self.log).push(format!("release {e:?}"));
            }
        }
        fn feedback(&mut self, out: &mut Vec<Feedback>) {
            out.push(Feedback::Rumble {
                pad: 0,
                low: 1,
                high: 2,
            });
        }
    }

    #[test]
    fn keys_held_at_disconnect_are_released_when_the_session_ends() {
        let rec = Recorder::default();
        let log = rec.log.clone();
        let mut t = InputThread::start(Box::new(rec)).unwrap();
        t.inject(InputEvent::Key {
            code: 30,
            down: true,
            modifiers: Modifiers::default(),
        });
        t.inject(InputEvent::MouseButton {
            button: MouseButton::RIGHT,
            down: true,
        });
        t.stop();
        let log = crate::lock(&log).clone();
        assert_eq!(log.len(), 4, "{log:?}");
        assert!(
            log[2].starts_with("release Key { code: 30, down: false"),
            "{log:?}"
        );
        assert!(log[3].starts_with("release MouseButton"), "{log:?}");
        assert_eq!(t.counters().stats().injected, 2);
        assert_eq!(t.counters().stats().by_kind.get("key"), Some(&1));
    }

    #[test]
    fn a_stuck_injector_never_blocks_the_caller_and_overflow_is_counted() {
        let gate = Arc::new(Mutex::new(()));
        let held = crate::lock(&gate);
        let rec = Recorder {
            gate: Some(gate.clone()),
            ..Default::default()
        };
        let t = InputThread::start(Box::new(rec)).unwrap();
        for _ in 0..QUEUE + 500 {
            t.inject(InputEvent::MouseMove { dx: 1, dy: 1 });
        }
        // Thousands of try_sends against a stuck desktop return at once (no timing
        // assertion: a loaded machine may be slow, but it must not have waited for the gate).
        let dropped = t.counters().stats().dropped_queue_full;
        assert!(dropped >= 499, "dropped {dropped}");
        drop(held);
        let mut fb = Vec::new();
        std::thread::sleep(Duration::from_millis(50));
        t.take_feedback(&mut fb);
        assert!(!fb.is_empty() && fb.len() <= MAX_FEEDBACK, "{}", fb.len());
    }
}
