//! The log injector: counts every event and logs it at debug level. It accepts every kind of
//! event the input model carries, so it reports all of them as deliverable.

use super::{Held, InjectCaps, InjectError, InjectorBackend, InputInjector};
use punktfunk_core::input::InputEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts shared between an injector and whoever watches it.
#[derive(Debug, Default)]
pub struct LogCounts {
    /// Events injected.
    pub events: AtomicU64,
    /// Keys and buttons released by `release_all`.
    pub released: AtomicU64,
}

/// Logs and counts events.
#[derive(Debug, Default, Clone)]
pub struct LogInjector {
    counts: Arc<LogCounts>,
    held: Held,
}

impl LogInjector {
    /// A log injector.
    pub fn new() -> LogInjector {
        LogInjector::default()
    }

    /// The counters (shared with clones made before injection started).
    pub fn counts(&self) -> Arc<LogCounts> {
        self.counts.clone()
    }

    /// Events injected so far.
    pub fn count(&self) -> u64 {
        self.counts.events.load(Ordering::Relaxed)
    }
}

impl InputInjector for LogInjector {
    fn backend(&self) -> InjectorBackend {
        InjectorBackend::Log
    }

    fn capabilities(&self) -> InjectCaps {
        super::capabilities(InjectorBackend::Log)
    }

    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
        self.counts.events.fetch_add(1, Ordering::Relaxed);
        self.held.track(event);
        tracing::debug!(?event, "input event");
        Ok(())
    }

    fn release_all(&mut self) {
        for event in self.held.take_releases() {
            self.counts.released.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "released at session end");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::input::{Modifiers, MouseButton};

    #[test]
    fn counts_events_and_releases_what_is_held() {
        let mut inj = LogInjector::new();
        let counts = inj.counts();
        let key = |code, down| InputEvent::Key {
            code,
            down,
            modifiers: Modifiers::default(),
        };
        inj.inject(&key(30, true)).unwrap();
        inj.inject(&key(31, true)).unwrap();
        inj.inject(&key(30, false)).unwrap();
        inj.inject(&InputEvent::MouseButton {
            button: MouseButton::LEFT,
            down: true,
        })
        .unwrap();
        inj.inject(&InputEvent::MouseMove { dx: 1, dy: 2 }).unwrap();
        assert_eq!(inj.count(), 5);
        inj.release_all();
        assert_eq!(
            counts.released.load(Ordering::Relaxed),
            2,
            "key 31 and the left button"
        );
        inj.release_all();
        assert_eq!(
            counts.released.load(Ordering::Relaxed),
            2,
            "nothing is held any more"
        );
        let mut fb = Vec::new();
        inj.feedback(&mut fb);
        assert!(fb.is_empty());
    }
}
