//! punktfunk-host: the streaming host.
//!
//! - [`config`]: defaults, `host.toml` and flags merged and validated once into the serve
//!   configuration.
//! - [`doctor`]: what this machine offers and whether a stream could start here.
//! - [`caps`]: what this machine offers (encoders, desktop backends), probed once at start.
//! - [`plan`]: a protocol-neutral stream request → the session plan with its reasons.
//! - [`session`]: the session that owns the plan and everything built from it (video, input,
//!   audio threads; the app and its output), the registry of all sessions, their figures.
//! - [`serve`]: the host's front door (`serve`): probes, starts both protocols, shuts down.
//! - [`proto`]: the protocol front-ends, punktfunk/1 and GameStream (Moonlight).
//! - [`aids`]: testing aids as decorators (rumble echo, datagram drops).
//! - [`clients`]: the one store of paired clients, for both protocols.
//! - [`pairing`]: punktfunk/1 pairing on the host: the armed PIN, approvals, the ceremony.
//! - [`control`]: the local control channel (`punktfunk-host pin`, `pair`, `clients`).
//! - [`admission`]: bounds on what peers that are not (yet) sessions may hold: connections
//!   and handshakes, in all and per address.
//! - [`net`]: accepting connections with back-off when `accept` fails (out of descriptors).
//! - [`mdns`]: service discovery.
//! - [`logs`]: logging helpers for what peers control (rate-limited warnings).

pub mod admission;
pub mod aids;
pub mod apps;
pub mod caps;
pub mod clients;
pub mod config;
pub mod control;
pub mod doctor;
pub mod logs;
pub mod mdns;
pub mod net;
pub mod pairing;
pub mod plan;
pub mod proto;
pub mod serve;
pub mod session;
pub mod stats;

/// Fills `buf` from the system's secure random source (the randomness the sans-IO machines
/// take from outside: handshake keys, pairing PINs and SPAKE2 secrets).
pub(crate) fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random source works");
}

/// Locks `m`, taking over the data if a thread panicked while holding it: every value behind
/// these locks is valid after any partial update (counters, queues, handles).
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
