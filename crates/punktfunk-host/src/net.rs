//! Accepting connections without spinning when `accept` fails.
//!
//! `accept` fails while the process is out of file descriptors (EMFILE), the system is
//! (ENFILE) or the kernel is short of memory; the connection stays queued, the listener stays
//! readable, and a loop that retries at once burns a core and starves everything else on its
//! runtime thread. [`Acceptor`] waits between failed attempts with an exponential back-off
//! ([`Backoff`]), warns once per burst of failures and starts over after the next success.
//! Every server of the host (nvhttp, RTSP, the control socket) accepts through it.

use std::future::Future;
use std::io;
use std::time::Duration;

/// The wait after the first failure of a burst.
pub const FIRST_DELAY: Duration = Duration::from_millis(5);
/// The longest wait between attempts: a server is never more than this late to notice that
/// it can accept again.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// The waits between failed accepts: [`FIRST_DELAY`], doubling up to [`MAX_DELAY`]; a
/// success starts over.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// No failures yet.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// An attempt failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        // 5 ms · 2^8 already exceeds the cap; the clamp keeps the multiplication small.
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt succeeded: returns how many failures the burst it ends had.
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }
}

/// Something that accepts connections: a tokio TCP or Unix listener.
pub trait Listener {
    /// What one accept yields (the stream and the peer's address).
    type Conn;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Conn = (tokio::net::TcpStream, std::net::SocketAddr);
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

impl Listener for tokio::net::UnixListener {
    type Conn = (tokio::net::UnixStream, tokio::net::unix::SocketAddr);
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        tokio::net::UnixListener::accept(self)
    }
}

/// A listener whose [`Acceptor::accept`] only returns connections, backing off while
/// accepting fails.
#[derive(Debug)]
pub struct Acceptor<L> {
    listener: L,
    backoff: Backoff,
    server: &'static str,
}

impl<L: Listener> Acceptor<L> {
    /// Accepts from `listener`; `server` names it in the logs.
    pub fn new(listener: L, server: &'static str) -> Acceptor<L> {
        Acceptor {
            listener,
            backoff: Backoff::new(),
            server,
        }
    }

    /// The next connection. Failed accepts are retried after the back-off's wait; the first
    /// failure of a burst is logged, and the recovery.
    pub async fn accept(&mut self) -> L::Conn {
        loop {
            match self.listener.accept().await {
                Ok(conn) => {
                    let failures = self.backoff.succeeded();
                    if failures > 0 {
                        tracing::info!(
                            server = self.server,
                            failures,
                            "accepting connections again"
                        );
                    }
                    return conn;
                }
                Err(e) => {
                    let delay = self.backoff.failed();
                    if self.backoff.failures() == 1 {
                        tracing::warn!(
                            server = self.server,
                            error = %e,
                            "accept failed; retrying with back-off (out of file descriptors?)"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The listener.
    pub fn get_ref(&self) -> &L {
        &self.listener
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_wait_doubles_from_five_milliseconds_to_a_second_and_resets_on_success() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..12).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]
        );
        assert_eq!(b.failures(), 12);
        assert_eq!(b.succeeded(), 12);
        assert_eq!(b.succeeded(), 0);
        assert_eq!(b.failed(), FIRST_DELAY);
    }

    #[test]
    fn a_very_long_burst_stays_at_the_cap() {
        let mut b = Backoff::new();
        for _ in 0..100_000 {
            assert!(b.failed() <= MAX_DELAY);
        }
        assert_eq!(b.failed(), MAX_DELAY);
    }

    /// Fails `fails` times with EMFILE, then yields its attempt number.
    struct Flaky {
        fails: u32,
        attempts: AtomicU32,
    }

    impl Listener for Flaky {
        type Conn = u32;
        fn accept(&self) -> impl Future<Output = io::Result<u32>> + Send {
            let n = self.attempts.fetch_add(1, Ordering::Relaxed);
            let r = if n < self.fails {
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(n)
            };
            std::future::ready(r)
        }
    }

    #[tokio::test]
    async fn failed_accepts_are_retried_after_waiting() {
        let mut a = Acceptor::new(
            Flaky {
                fails: 4,
                attempts: AtomicU32::new(0),
            },
            "test",
        );
        let start = tokio::time::Instant::now();
        assert_eq!(a.accept().await, 4);
        // 5 + 10 + 20 + 40 ms of waiting, not a spin.
        assert!(start.elapsed() >= Duration::from_millis(75));
        assert_eq!(a.backoff.failures(), 0, "the success reset the back-off");
        assert_eq!(a.accept().await, 5);
        assert_eq!(a.get_ref().attempts.load(Ordering::Relaxed), 6);
    }
}
