//! Input injection: where the client's input events go.
//!
//! Desktop backends (wlr virtual pointer/keyboard, libei, uinput) plug in behind
//! [`InputInjector`]. Until one exists, [`LogInjector`] logs and counts what arrives.

use punktfunk_core::input::InputEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Applies input events to the host's desktop.
pub trait InputInjector: Send {
    /// Backend name for logs.
    fn name(&self) -> &str;
    /// Applies one event.
    fn inject(&mut self, event: &InputEvent);
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
