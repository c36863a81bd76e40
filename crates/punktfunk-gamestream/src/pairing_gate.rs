//! The policy around pairing ceremonies: one at a time, deadlines, and the wrong-PIN lockout.
//!
//! [`crate::pairing`] is one ceremony's cryptography; this gate decides whether a ceremony may
//! start, keeps the one in progress between the client's HTTP requests, and ends it when it
//! goes stale:
//!
//! - one ceremony at a time: a second client's phase 1 is refused while one is live;
//! - phase 1 waits at most [`PIN_TIMEOUT`] for the user to type the PIN on the host;
//! - after the PIN, a ceremony that sees no request for [`PAIRING_IDLE`] is abandoned;
//! - [`MAX_WRONG_PINS`] wrong PINs within [`LOCKOUT_WINDOW`] refuse every phase 1 for
//!   [`LOCKOUT_WINDOW`];
//! - `/unpair` from the pending client ends its ceremony (clients send it after a failure).
//!
//! The gate reads no clock and holds no I/O object: every call takes `now`, and the driver
//! keeps whatever wakes its waiting phase-1 request (a channel, a condition variable) beside
//! it, keyed by the [`Ticket`] the gate hands out.

use crate::http::Request;
use crate::pairing::{AwaitingPin, HostCredentials, Outcome, PairError, Pairing, Step};
use crate::xml::Reply;
use ring::rand::SecureRandom;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long phase 1 waits for the PIN.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A ceremony past the PIN without a request for this long is abandoned.
pub const PAIRING_IDLE: Duration = Duration::from_secs(60);
/// Wrong PINs allowed per [`LOCKOUT_WINDOW`]; the last of them locks pairing.
pub const MAX_WRONG_PINS: usize = 5;
/// The window the wrong PINs are counted in, and how long the lockout lasts.
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(60);

/// Names one ceremony, so a phase-1 request that waited for the PIN finishes its own ceremony
/// and never a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// A phase 1 the gate let through: wait for the PIN until `deadline`, then call
/// [`PairingGate::finish_pin_wait`] with `ticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinWait {
    /// The ceremony.
    pub ticket: Ticket,
    /// When the wait for the PIN gives up.
    pub deadline: Instant,
}

/// Why a phase 1 was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginRefused {
    /// Too many wrong PINs recently.
    #[error("pairing is locked after too many wrong PINs")]
    Locked {
        /// When phase 1 is accepted again.
        until: Instant,
    },
    /// Another ceremony is live.
    #[error("another pairing is in progress")]
    Busy,
    /// The request itself is bad (the client's fault).
    #[error(transparent)]
    Request(#[from] PairError),
}

impl BeginRefused {
    /// The XML the client gets (`paired=0`).
    pub fn reply(&self) -> Reply {
        match self {
            BeginRefused::Locked { .. } => Reply::error(
                503,
                "Pairing is locked for a minute after too many wrong PINs",
            )
            .field("paired", 0),
            BeginRefused::Busy => {
                Reply::error(400, "Another pairing is in progress").field("paired", 0)
            }
            BeginRefused::Request(e) => e.reply(),
        }
    }
}

/// Why a PIN typed on the host was not taken.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinRefused {
    /// Not four digits.
    #[error("the PIN is the 4 digits the client shows")]
    Format,
    /// No phase 1 is waiting.
    #[error("no pairing request is waiting for a PIN")]
    NotWaiting,
}

/// How a phase-1 wait ended without an answer for the client's certificate request.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinWaitEnded {
    /// No PIN was typed before the deadline; the ceremony is over.
    #[error("no PIN was entered on the host")]
    NoPin,
    /// The ceremony ended some other way meanwhile (`/unpair`, or it was abandoned).
    #[error("the pairing was cancelled")]
    Cancelled,
}

impl PinWaitEnded {
    /// The XML the client gets (`paired=0`).
    pub fn reply(&self) -> Reply {
        match self {
            PinWaitEnded::NoPin => Reply::error(408, "No PIN was entered on the host"),
            PinWaitEnded::Cancelled => Reply::error(400, "The pairing was cancelled"),
        }
        .field("paired", 0)
    }
}

/// Why a ceremony ended without pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepFailure {
    /// The client's proof does not match the PIN typed on the host.
    WrongPin {
        /// Set when this wrong PIN locked pairing: when it unlocks.
        locked_until: Option<Instant>,
    },
    /// The client's secret is not signed by its certificate's key.
    BadSignature,
    /// A malformed or out-of-order message.
    Protocol(PairError),
}

/// The result of a phase 2–4 request ([`PairingGate::step`]). Exhaustive on purpose: each
/// variant asks the driver for something different.
#[derive(Debug)]
pub enum GateStep {
    /// Answer; the ceremony waits for the next message.
    Continue(Reply),
    /// The ceremony succeeded: store `client_cert` (DER) as authorised, then answer.
    Paired {
        /// The name the client gave in phase 1.
        client_name: String,
        /// The client's certificate.
        client_cert: Vec<u8>,
        /// The answer.
        reply: Reply,
    },
    /// The ceremony ended without pairing; answer.
    Failed {
        /// The name the client gave in phase 1.
        client_name: String,
        /// Why.
        failure: StepFailure,
        /// The answer.
        reply: Reply,
    },
    /// This client has no ceremony past the PIN (none at all, another client's, or one still
    /// waiting for the PIN); answer. Nothing changed.
    NotPairing(Reply),
}

/// The PIN typed on the host, kept out of `Debug` output.
struct Pin(String);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

#[derive(Debug)]
enum Phase {
    /// Phase 1 waits for the PIN.
    AwaitingPin {
        since: Instant,
        waiting: AwaitingPin,
    },
    /// The PIN was typed; the waiting phase-1 request has not answered yet.
    PinEntered {
        at: Instant,
        waiting: AwaitingPin,
        pin: Pin,
    },
    /// Phase 1 answered: phases 2–4.
    Ceremony { last: Instant, state: Pairing },
}

#[derive(Debug)]
struct Pending {
    ticket: Ticket,
    uniqueid: String,
    client_name: String,
    phase: Phase,
}

impl Pending {
    fn deadline(&self) -> Instant {
        match &self.phase {
            Phase::AwaitingPin { since, .. } => *since + PIN_TIMEOUT,
            Phase::PinEntered { at, .. } => *at + PAIRING_IDLE,
            Phase::Ceremony { last, .. } => *last + PAIRING_IDLE,
        }
    }
}

/// The pairing policy of one host.
///
/// Calling order: a phase-1 request calls [`PairingGate::begin`], waits (outside any lock it
/// shares with the gate) until the user's PIN arrives through [`PairingGate::submit_pin`] or
/// the [`PinWait::deadline`] passes, and then calls [`PairingGate::finish_pin_wait`] for its
/// answer. Phases 2–4 call [`PairingGate::step`]; `/unpair` calls [`PairingGate::unpair`].
/// Every call first applies the deadlines that passed by `now`, so a driver needs no timer;
/// [`PairingGate::handle_timeout`] at [`PairingGate::poll_timeout`] only frees a stale
/// ceremony sooner.
#[derive(Debug, Default)]
pub struct PairingGate {
    pending: Option<Pending>,
    /// When the recent wrong PINs were seen (at most [`MAX_WRONG_PINS`]).
    wrong_pins: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// The last ceremony whose PIN wait timed out, so its request learns why it ended.
    timed_out: Option<Ticket>,
    next_ticket: u64,
}

impl PairingGate {
    /// No ceremony, no lockout.
    pub fn new() -> PairingGate {
        PairingGate::default()
    }

    /// Phase 1 (`getservercert`) from the client `uniqueid` calling itself `client_name`.
    pub fn begin(
        &mut self,
        now: Instant,
        uniqueid: &str,
        client_name: &str,
        req: &Request,
    ) -> Result<PinWait, BeginRefused> {
        self.handle_timeout(now);
        if let Some(until) = self.locked_until {
            return Err(BeginRefused::Locked { until });
        }
        if self.pending.is_some() {
            return Err(BeginRefused::Busy);
        }
        let waiting = AwaitingPin::begin(req)?;
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.pending = Some(Pending {
            ticket,
            uniqueid: uniqueid.to_string(),
            client_name: client_name.to_string(),
            phase: Phase::AwaitingPin {
                since: now,
                waiting,
            },
        });
        Ok(PinWait {
            ticket,
            deadline: now + PIN_TIMEOUT,
        })
    }

    /// The user typed `pin` on the host: it goes to the phase 1 that waits, whose ticket is
    /// returned so the driver wakes that request.
    pub fn submit_pin(&mut self, now: Instant, pin: &str) -> Result<Ticket, PinRefused> {
        if pin.len() != 4 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinRefused::Format);
        }
        self.handle_timeout(now);
        let Some(p) = self.pending.take() else {
            return Err(PinRefused::NotWaiting);
        };
        let Pending {
            ticket,
            uniqueid,
            client_name,
            phase,
        } = p;
        let (phase, result) = match phase {
            Phase::AwaitingPin { waiting, .. } => (
                Phase::PinEntered {
                    at: now,
                    waiting,
                    pin: Pin(pin.to_string()),
                },
                Ok(ticket),
            ),
            other => (other, Err(PinRefused::NotWaiting)),
        };
        self.pending = Some(Pending {
            ticket,
            uniqueid,
            client_name,
            phase,
        });
        result
    }

    /// The phase-1 request of `ticket` stopped waiting (the PIN arrived or its deadline
    /// passed): its answer, the host certificate when the PIN was typed.
    pub fn finish_pin_wait(
        &mut self,
        now: Instant,
        ticket: Ticket,
        host: &HostCredentials,
    ) -> Result<Reply, PinWaitEnded> {
        // A wait that ends while the gate still waits for the PIN has timed out on the
        // driver's clock; the gate's own deadline may be a hair later.
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.ticket == ticket && matches!(p.phase, Phase::AwaitingPin { .. }))
        {
            self.pending = None;
            return Err(PinWaitEnded::NoPin);
        }
        self.handle_timeout(now);
        if self.timed_out == Some(ticket) {
            return Err(PinWaitEnded::NoPin);
        }
        match self.pending.take() {
            Some(Pending {
                ticket: t,
                uniqueid,
                client_name,
                phase: Phase::PinEntered { waiting, pin, .. },
            }) if t == ticket => {
                let (next, reply) = waiting.enter_pin(&pin.0, host);
                self.pending = Some(Pending {
                    ticket,
                    uniqueid,
                    client_name,
                    phase: Phase::Ceremony {
                        last: now,
                        state: Pairing::AwaitingClientChallenge(next),
                    },
                });
                Ok(reply)
            }
            other => {
                self.pending = other;
                Err(PinWaitEnded::Cancelled)
            }
        }
    }

    /// Phase 2, 3 or 4 from the client `uniqueid`.
    pub fn step(
        &mut self,
        now: Instant,
        uniqueid: &str,
        req: &Request,
        host: &HostCredentials,
        rng: &dyn SecureRandom,
    ) -> GateStep {
        self.handle_timeout(now);
        let (ticket, client_name, state) = match self.pending.take() {
            Some(Pending {
                ticket,
                uniqueid: u,
                client_name,
                phase: Phase::Ceremony { state, .. },
            }) if u == uniqueid => (ticket, client_name, state),
            other => {
                self.pending = other;
                return GateStep::NotPairing(
                    Reply::error(400, "No pairing in progress for this client; start again")
                        .field("paired", 0),
                );
            }
        };
        match state.step(req, host, rng) {
            Step::Continue(next, reply) => {
                self.pending = Some(Pending {
                    ticket,
                    uniqueid: uniqueid.to_string(),
                    client_name,
                    phase: Phase::Ceremony {
                        last: now,
                        state: next,
                    },
                });
                GateStep::Continue(reply)
            }
            Step::Done(Outcome::Paired { client_cert }, reply) => GateStep::Paired {
                client_name,
                client_cert,
                reply,
            },
            Step::Done(Outcome::WrongPin, reply) => GateStep::Failed {
                client_name,
                failure: StepFailure::WrongPin {
                    locked_until: self.wrong_pin(now),
                },
                reply,
            },
            Step::Done(Outcome::BadSignature, reply) => GateStep::Failed {
                client_name,
                failure: StepFailure::BadSignature,
                reply,
            },
            Step::Failed(e, reply) => GateStep::Failed {
                client_name,
                failure: StepFailure::Protocol(e),
                reply,
            },
        }
    }

    /// `/unpair` from the client `uniqueid`: ends its ceremony if it is the pending one.
    /// Returns whether it was, so the driver lets go of a waiting phase-1 request.
    pub fn unpair(&mut self, now: Instant, uniqueid: &str) -> bool {
        self.handle_timeout(now);
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.uniqueid == uniqueid)
        {
            self.pending = None;
            true
        } else {
            false
        }
    }

    /// Ends what went stale by `now`: a PIN wait past [`PIN_TIMEOUT`], a ceremony idle for
    /// [`PAIRING_IDLE`], a lockout that ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.as_ref().filter(|p| now >= p.deadline()) {
            if matches!(p.phase, Phase::AwaitingPin { .. }) {
                self.timed_out = Some(p.ticket);
            }
            self.pending = None;
        }
        if self.locked_until.is_some_and(|u| now >= u) {
            self.locked_until = None;
        }
    }

    /// The next instant [`PairingGate::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ceremony = self.pending.as_ref().map(Pending::deadline);
        match (ceremony, self.locked_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a ceremony is live (waiting for the PIN or between phases).
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Until when phase 1 is refused, if pairing is locked at `now`.
    pub fn locked_until(&self, now: Instant) -> Option<Instant> {
        self.locked_until.filter(|u| now < *u)
    }

    /// Records a wrong PIN at `now`; returns the end of the lockout it caused, if any.
    fn wrong_pin(&mut self, now: Instant) -> Option<Instant> {
        while self
            .wrong_pins
            .front()
            .is_some_and(|t| now.duration_since(*t) > LOCKOUT_WINDOW)
        {
            self.wrong_pins.pop_front();
        }
        self.wrong_pins.push_back(now);
        if self.wrong_pins.len() < MAX_WRONG_PINS {
            return None;
        }
        self.wrong_pins.clear();
        let until = now + LOCKOUT_WINDOW;
        self.locked_until = Some(until);
        Some(until)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests {
    use super::*;
    use crate::pairing::ClientPairing;
    use crate::xml::{status_of, text_of};
    use punktfunk_quic::Identity;
    use ring::rand::SystemRandom;
    use std::sync::OnceLock;

    const ID: &str = "0123456789ABCDEF";

    /// RSA key generation is slow: one host and one client identity for the module.
    fn ids() -> &'static (Identity, Identity) {
        static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
        IDS.get_or_init(|| {
            (
                Identity::generate("punktfunk-host").unwrap(),
                Identity::generate("NVIDIA GameStream Client").unwrap(),
            )
        })
    }

    fn host() -> HostCredentials {
        let (h, _) = ids();
        HostCredentials::new(&h.cert_der, &h.key_der).unwrap()
    }

    fn client(pin: &str) -> ClientPairing {
        let (_, c) = ids();
        ClientPairing::new(&c.cert_der, &c.key_der, pin, &SystemRandom::new()).unwrap()
    }

    fn req(uniqueid: &str, q: &str) -> Request {
        Request::from_target(&format!("/pair?uniqueid={uniqueid}&uuid=1&{q}")).unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn continued(s: GateStep) -> String {
        match s {
            GateStep::Continue(r) => r.render(),
            other => panic!("expected the ceremony to continue, got {other:?}"),
        }
    }

    /// Phase 1 begun at `t`, the PIN typed at once, phase 1 answered: the gate is at phase 2.
    fn through_phase1(
        gate: &mut PairingGate,
        t: Instant,
        c: &ClientPairing,
        uniqueid: &str,
        host_pin: &str,
    ) -> String {
        let wait = gate
            .begin(t, uniqueid, "tablet", &req(uniqueid, &c.phase1_query()))
            .unwrap();
        assert_eq!(gate.submit_pin(t, host_pin), Ok(wait.ticket));
        gate.finish_pin_wait(t, wait.ticket, &host())
            .unwrap()
            .render()
    }

    /// A whole ceremony at `t` with a client that sends phase 4 whatever the PIN was.
    fn ceremony(gate: &mut PairingGate, t: Instant, client_pin: &str, host_pin: &str) -> GateStep {
        let (h, rng) = (host(), SystemRandom::new());
        let mut c = client(client_pin);
        let r1 = through_phase1(gate, t, &c, ID, host_pin);
        let q2 = c.phase2_query(&r1).unwrap();
        let r2 = continued(gate.step(t, ID, &req(ID, &q2), &h, &rng));
        let q3 = c.phase3_query(&r2).unwrap();
        let _ = continued(gate.step(t, ID, &req(ID, &q3), &h, &rng));
        let q4 = c.phase4_query_without_pin_check();
        gate.step(t, ID, &req(ID, &q4), &h, &rng)
    }

    #[test]
    fn a_complete_ceremony_pairs_and_frees_the_gate() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        match ceremony(&mut gate, t0, "4721", "4721") {
            GateStep::Paired {
                client_name,
                client_cert,
                reply,
            } => {
                assert_eq!(client_name, "tablet");
                assert_eq!(client_cert, ids().1.cert_der);
                assert_eq!(text_of(&reply.render(), "paired"), Some("1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!gate.in_progress());
        assert_eq!(gate.poll_timeout(), None);
    }

    #[test]
    fn one_ceremony_at_a_time() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let (a, b) = (client("1111"), client("2222"));
        let wait = gate
            .begin(t0, "AAAA", "a", &req("AAAA", &a.phase1_query()))
            .unwrap();
        // While the first waits for its PIN, nobody else may start, even after a minute.
        for at in [secs(1.0), secs(90.0), secs(119.9)] {
            assert_eq!(
                gate.begin(t0 + at, "BBBB", "b", &req("BBBB", &b.phase1_query())),
                Err(BeginRefused::Busy)
            );
        }
        let refused = BeginRefused::Busy.reply().render();
        assert_eq!(status_of(&refused), Some(400));
        assert_eq!(text_of(&refused, "paired"), Some("0"));
        // The PIN goes to the one that waits, which then answers with the host certificate.
        assert_eq!(gate.submit_pin(t0 + secs(100.0), "1111"), Ok(wait.ticket));
        assert!(
            !format!("{gate:?}").contains("1111"),
            "the PIN stays out of logs"
        );
        assert_eq!(
            gate.submit_pin(t0 + secs(100.0), "1111"),
            Err(PinRefused::NotWaiting)
        );
        let r1 = gate
            .finish_pin_wait(t0 + secs(100.0), wait.ticket, &host())
            .unwrap()
            .render();
        assert!(text_of(&r1, "plaincert").is_some(), "{r1}");
        // Between phases, the second client is still refused, and cannot step the first's
        // ceremony either.
        assert_eq!(
            gate.begin(
                t0 + secs(101.0),
                "BBBB",
                "b",
                &req("BBBB", &b.phase1_query())
            ),
            Err(BeginRefused::Busy)
        );
        let q2 = client("1111").phase2_query(&r1).unwrap();
        assert!(matches!(
            gate.step(
                t0 + secs(101.0),
                "BBBB",
                &req("BBBB", &q2),
                &host(),
                &SystemRandom::new()
            ),
            GateStep::NotPairing(_)
        ));
        assert!(gate.in_progress());
    }

    #[test]
    fn the_pin_wait_times_out_after_two_minutes() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let wait = gate
            .begin(t0, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert_eq!(wait.deadline, t0 + PIN_TIMEOUT);
        assert_eq!(gate.poll_timeout(), Some(t0 + PIN_TIMEOUT));
        gate.handle_timeout(t0 + secs(119.9));
        assert!(gate.in_progress());
        gate.handle_timeout(t0 + PIN_TIMEOUT);
        assert!(!gate.in_progress());
        // Too late for the PIN; the waiting request learns it timed out.
        assert_eq!(
            gate.submit_pin(t0 + secs(121.0), "1111"),
            Err(PinRefused::NotWaiting)
        );
        assert_eq!(
            gate.finish_pin_wait(t0 + secs(121.0), wait.ticket, &host())
                .err(),
            Some(PinWaitEnded::NoPin)
        );
        assert_eq!(status_of(&PinWaitEnded::NoPin.reply().render()), Some(408));
        // The next client may start.
        assert!(gate
            .begin(t0 + secs(121.0), ID, "tablet", &req(ID, &c.phase1_query()))
            .is_ok());
    }

    #[test]
    fn a_wait_that_ends_without_a_pin_ends_the_ceremony() {
        // The driver's timer may fire a hair before the gate's deadline.
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let wait = gate
            .begin(t0, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert_eq!(
            gate.finish_pin_wait(t0 + secs(119.999), wait.ticket, &host())
                .err(),
            Some(PinWaitEnded::NoPin)
        );
        assert!(!gate.in_progress());
    }

    #[test]
    fn an_idle_ceremony_is_abandoned_after_a_minute() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let mut c = client("1111");
        let r1 = through_phase1(&mut gate, t0, &c, ID, "1111");
        assert_eq!(gate.poll_timeout(), Some(t0 + PAIRING_IDLE));
        let other = client("2222");
        assert_eq!(
            gate.begin(
                t0 + secs(59.9),
                "BBBB",
                "b",
                &req("BBBB", &other.phase1_query())
            ),
            Err(BeginRefused::Busy)
        );
        // A step keeps it alive: the minute counts from the last request.
        let q2 = c.phase2_query(&r1).unwrap();
        let r2 = continued(gate.step(
            t0 + secs(59.9),
            ID,
            &req(ID, &q2),
            &host(),
            &SystemRandom::new(),
        ));
        assert_eq!(gate.poll_timeout(), Some(t0 + secs(59.9) + PAIRING_IDLE));
        let late = t0 + secs(59.9) + PAIRING_IDLE;
        let q3 = c.phase3_query(&r2).unwrap();
        assert!(matches!(
            gate.step(late, ID, &req(ID, &q3), &host(), &SystemRandom::new()),
            GateStep::NotPairing(_)
        ));
        assert!(gate
            .begin(late, "BBBB", "b", &req("BBBB", &other.phase1_query()))
            .is_ok());
    }

    #[test]
    fn five_wrong_pins_within_a_minute_lock_pairing_for_a_minute() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        for i in 0..4 {
            match ceremony(&mut gate, t0 + secs(f64::from(i)), "1111", "2222") {
                GateStep::Failed {
                    failure: StepFailure::WrongPin { locked_until: None },
                    reply,
                    ..
                } => assert_eq!(text_of(&reply.render(), "paired"), Some("0")),
                other => panic!("attempt {i}: {other:?}"),
            }
        }
        let fifth = t0 + secs(10.0);
        match ceremony(&mut gate, fifth, "1111", "2222") {
            GateStep::Failed {
                failure: StepFailure::WrongPin { locked_until },
                ..
            } => assert_eq!(locked_until, Some(fifth + LOCKOUT_WINDOW)),
            other => panic!("{other:?}"),
        }
        let c = client("1111");
        let locked = gate.begin(fifth + secs(59.9), ID, "t", &req(ID, &c.phase1_query()));
        assert_eq!(
            locked,
            Err(BeginRefused::Locked {
                until: fifth + LOCKOUT_WINDOW
            })
        );
        assert_eq!(status_of(&locked.unwrap_err().reply().render()), Some(503));
        assert_eq!(gate.locked_until(fifth), Some(fifth + LOCKOUT_WINDOW));
        // A minute later pairing works again, and the count started over.
        assert!(matches!(
            ceremony(&mut gate, fifth + LOCKOUT_WINDOW, "3333", "3333"),
            GateStep::Paired { .. }
        ));
        assert_eq!(gate.locked_until(fifth + LOCKOUT_WINDOW), None);
    }

    #[test]
    fn wrong_pins_spread_over_more_than_a_minute_do_not_lock() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        for i in 0..8 {
            // One every 20 s: never five within a minute.
            match ceremony(&mut gate, t0 + secs(20.0 * f64::from(i)), "1111", "2222") {
                GateStep::Failed {
                    failure: StepFailure::WrongPin { locked_until: None },
                    ..
                } => {}
                other => panic!("attempt {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn unpair_of_the_pending_client_ends_its_ceremony() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let wait = gate
            .begin(t0, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert!(!gate.unpair(t0, "SOMEONEELSE"));
        assert!(gate.in_progress());
        assert!(gate.unpair(t0, ID));
        assert!(!gate.in_progress());
        assert_eq!(gate.submit_pin(t0, "1111"), Err(PinRefused::NotWaiting));
        assert_eq!(
            gate.finish_pin_wait(t0, wait.ticket, &host()).err(),
            Some(PinWaitEnded::Cancelled)
        );
        // And between phases.
        through_phase1(&mut gate, t0, &c, ID, "1111");
        assert!(gate.unpair(t0, ID));
        assert!(!gate.in_progress());
    }

    #[test]
    fn a_stale_ticket_never_finishes_a_later_ceremony() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let first = gate
            .begin(t0, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert!(gate.unpair(t0, ID));
        let second = gate
            .begin(t0, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert_ne!(first.ticket, second.ticket);
        assert_eq!(gate.submit_pin(t0, "1111"), Ok(second.ticket));
        assert_eq!(
            gate.finish_pin_wait(t0, first.ticket, &host()).err(),
            Some(PinWaitEnded::Cancelled)
        );
        assert!(gate.finish_pin_wait(t0, second.ticket, &host()).is_ok());
    }

    #[test]
    fn pins_are_four_digits_and_need_a_waiting_request() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        for bad in ["", "123", "12345", "12a4", "١٢٣٤"] {
            assert_eq!(gate.submit_pin(t0, bad), Err(PinRefused::Format), "{bad:?}");
        }
        assert_eq!(gate.submit_pin(t0, "1234"), Err(PinRefused::NotWaiting));
        // Steps without a ceremony, and a bad phase 1, change nothing.
        assert!(matches!(
            gate.step(
                t0,
                ID,
                &req(ID, "clientchallenge=00"),
                &host(),
                &SystemRandom::new()
            ),
            GateStep::NotPairing(_)
        ));
        assert!(matches!(
            gate.begin(t0, ID, "t", &req(ID, "phrase=getservercert&salt=zz")),
            Err(BeginRefused::Request(_))
        ));
        assert!(!gate.in_progress());
    }
}
