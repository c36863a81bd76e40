//! Logging helpers for what peers control: warnings they can trigger at will are rate-limited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A warning that repeats per event (a failed handshake, a refused peer) logged at most once
/// per interval, with the count of those not logged in between.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` when this event may be logged now.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut s = crate::lock(&self.state);
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                s.0 = Some(now);
                Some(std::mem::take(&mut s.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_warning_counts_what_it_skipped() {
        let r = RateLimited::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(r.check(t), Some(0));
        assert_eq!(r.check(t + Duration::from_secs(1)), None);
        assert_eq!(r.check(t + Duration::from_secs(2)), None);
        assert_eq!(r.check(t + Duration::from_secs(11)), Some(2));
    }
}
