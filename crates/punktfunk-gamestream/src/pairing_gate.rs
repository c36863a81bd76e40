//! The policy around pairing ceremonies: one at a time, deadlines, and the wrong-PIN lockout.
//!
//! [`crate::pairing`] is one ceremony's cryptography; this gate decides whether a ceremony may
//! start, keeps the one in progress between the client's HTTP requests, and ends it when it
//! goes stale:
//!
//! - one ceremony at a time: a second client's phase 1 is refused while one is live;
//! - a ceremony belongs to the address its phase 1 came from, not only to its `uniqueid`
//!   (every stock client sends the same one): phases 2–4 and `/unpair` from elsewhere are
//!   refused and change nothing, so nobody can inject a challenge into another's ceremony;
//! - phase 1 waits at most [`PIN_TIMEOUT`] for the user to type the PIN on the host, and the
//!   driver ends it at once ([`PairingGate::abandon`]) when the requester goes away;
//! - after the PIN, a ceremony that sees no request for [`PAIRING_IDLE`] is abandoned (clients
//!   send phases 2–4 back to back);
//! - every ceremony that got a PIN and ends unpaired counts as a failure, wherever it ends (a
//!   wrong PIN at phase 4, a client that found the PIN wrong at phase 3 and went away or sent
//!   `/unpair`, a protocol error): [`MAX_WRONG_PINS`] failures within [`LOCKOUT_WINDOW`] refuse
//!   every phase 1 for [`LOCKOUT_WINDOW`];
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
use std::net::IpAddr;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long phase 1 waits for the PIN.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A ceremony past the PIN without a request for this long is abandoned.
pub const PAIRING_IDLE: Duration = Duration::from_secs(5);
/// Failed ceremonies (wrong PINs) allowed per [`LOCKOUT_WINDOW`]; the last of them locks
/// pairing.
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
    /// Where phase 1 came from.
    peer: IpAddr,
    uniqueid: String,
    client_name: String,
    phase: Phase,
}

impl Pending {
    fn is(&self, peer: IpAddr, uniqueid: &str) -> bool {
        self.peer == peer && self.uniqueid == uniqueid
    }

    /// Whether the PIN was typed for it (its end unpaired is then a failed guess).
    fn got_pin(&self) -> bool {
        !matches!(self.phase, Phase::AwaitingPin { .. })
    }

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
    /// When the recent failed ceremonies ended (at most [`MAX_WRONG_PINS`]).
    wrong_pins: VecDeque<Instant>,
    /// Phase 2–4 requests and `/unpair`s for the pending ceremony from another address.
    foreign: u64,
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

    /// Phase 1 (`getservercert`) from the client `uniqueid` at `peer` calling itself
    /// `client_name`.
    pub fn begin(
        &mut self,
        now: Instant,
        peer: IpAddr,
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
            peer,
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
            peer,
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
            peer,
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
                peer,
                uniqueid,
                client_name,
                phase: Phase::PinEntered { waiting, pin, .. },
            }) if t == ticket => {
                let (next, reply) = waiting.enter_pin(&pin.0, host);
                self.pending = Some(Pending {
                    ticket,
                    peer,
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

    /// Phase 2, 3 or 4 from the client `uniqueid` at `peer`.
    pub fn step(
        &mut self,
        now: Instant,
        peer: IpAddr,
        uniqueid: &str,
        req: &Request,
        host: &HostCredentials,
        rng: &dyn SecureRandom,
    ) -> GateStep {
        self.handle_timeout(now);
        let (ticket, client_name, state) = match self.pending.take() {
            Some(Pending {
                ticket,
                peer: p,
                uniqueid: u,
                client_name,
                phase: Phase::Ceremony { state, .. },
            }) if p == peer && u == uniqueid => (ticket, client_name, state),
            other => {
                if other
                    .as_ref()
                    .is_some_and(|p| p.uniqueid == uniqueid && p.peer != peer)
                {
                    self.foreign += 1;
                }
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
                    peer,
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
                    locked_until: self.failed_ceremony(now),
                },
                reply,
            },
            Step::Done(Outcome::BadSignature, reply) => {
                self.failed_ceremony(now);
                GateStep::Failed {
                    client_name,
                    failure: StepFailure::BadSignature,
                    reply,
                }
            }
            Step::Failed(e, reply) => {
                self.failed_ceremony(now);
                GateStep::Failed {
                    client_name,
                    failure: StepFailure::Protocol(e),
                    reply,
                }
            }
        }
    }

    /// `/unpair` from the client `uniqueid` at `peer`: ends its ceremony if it is the pending
    /// one. Returns whether it was, so the driver lets go of a waiting phase-1 request.
    pub fn unpair(&mut self, now: Instant, peer: IpAddr, uniqueid: &str) -> bool {
        self.handle_timeout(now);
        match &self.pending {
            Some(p) if p.is(peer, uniqueid) => {
                self.end_pending(now);
                true
            }
            Some(p) if p.uniqueid == uniqueid => {
                self.foreign += 1;
                false
            }
            _ => false,
        }
    }

    /// The requester of `ticket`'s ceremony went away (its phase-1 connection closed): the
    /// ceremony ends now rather than at its deadline. Returns whether it was still pending.
    pub fn abandon(&mut self, now: Instant, ticket: Ticket) -> bool {
        self.handle_timeout(now);
        if self.pending.as_ref().is_some_and(|p| p.ticket == ticket) {
            self.end_pending(now);
            true
        } else {
            false
        }
    }

    /// Ends what went stale by `now`: a PIN wait past [`PIN_TIMEOUT`], a ceremony idle for
    /// [`PAIRING_IDLE`] (a failure: it had the PIN), a lockout that ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.as_ref().filter(|p| now >= p.deadline()) {
            if matches!(p.phase, Phase::AwaitingPin { .. }) {
                self.timed_out = Some(p.ticket);
            }
            self.end_pending(now);
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

    /// Phase 2–4 requests and `/unpair`s naming the pending ceremony's client from another
    /// address, refused so far.
    pub fn foreign_requests(&self) -> u64 {
        self.foreign
    }

    /// Drops the pending ceremony; one that had its PIN counts as a failure.
    fn end_pending(&mut self, now: Instant) {
        if self.pending.take().is_some_and(|p| p.got_pin()) {
            self.failed_ceremony(now);
        }
    }

    /// Records a failed ceremony at `now`; returns the end of the lockout it caused, if any.
    fn failed_ceremony(&mut self, now: Instant) -> Option<Instant> {
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
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 66));

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

    /// Whether a phase 1 from another client at another address is let in at `t`.
    fn another_client_may_begin(gate: &mut PairingGate, t: Instant) -> bool {
        let other = client("2222");
        gate.begin(t, OTHER, "BBBB", "b", &req("BBBB", &other.phase1_query()))
            .is_ok()
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
            .begin(t, IP, uniqueid, "tablet", &req(uniqueid, &c.phase1_query()))
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
        let r2 = continued(gate.step(t, IP, ID, &req(ID, &q2), &h, &rng));
        let q3 = c.phase3_query(&r2).unwrap();
        let _ = continued(gate.step(t, IP, ID, &req(ID, &q3), &h, &rng));
        let q4 = c.phase4_query_without_pin_check();
        gate.step(t, IP, ID, &req(ID, &q4), &h, &rng)
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
            .begin(t0, IP, "AAAA", "a", &req("AAAA", &a.phase1_query()))
            .unwrap();
        // While the first waits for its PIN, nobody else may start, even after a minute.
        for at in [secs(1.0), secs(90.0), secs(119.9)] {
            assert_eq!(
                gate.begin(t0 + at, IP, "BBBB", "b", &req("BBBB", &b.phase1_query())),
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
                IP,
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
                IP,
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
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
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
            .begin(
                t0 + secs(121.0),
                IP,
                ID,
                "tablet",
                &req(ID, &c.phase1_query())
            )
            .is_ok());
    }

    #[test]
    fn a_wait_that_ends_without_a_pin_ends_the_ceremony() {
        // The driver's timer may fire a hair before the gate's deadline.
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let wait = gate
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert_eq!(
            gate.finish_pin_wait(t0 + secs(119.999), wait.ticket, &host())
                .err(),
            Some(PinWaitEnded::NoPin)
        );
        assert!(!gate.in_progress());
    }

    #[test]
    fn an_idle_ceremony_is_abandoned_after_five_seconds_and_counts_as_a_failure() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let mut c = client("1111");
        let r1 = through_phase1(&mut gate, t0, &c, ID, "1111");
        assert_eq!(gate.poll_timeout(), Some(t0 + PAIRING_IDLE));
        let other = client("2222");
        let almost = t0 + PAIRING_IDLE - secs(0.1);
        assert_eq!(
            gate.begin(
                almost,
                OTHER,
                "BBBB",
                "b",
                &req("BBBB", &other.phase1_query())
            ),
            Err(BeginRefused::Busy)
        );
        // A step keeps it alive: the idle time counts from the last request.
        let q2 = c.phase2_query(&r1).unwrap();
        let r2 = continued(gate.step(almost, IP, ID, &req(ID, &q2), &host(), &SystemRandom::new()));
        assert_eq!(gate.poll_timeout(), Some(almost + PAIRING_IDLE));
        let late = almost + PAIRING_IDLE;
        let q3 = c.phase3_query(&r2).unwrap();
        assert!(matches!(
            gate.step(late, IP, ID, &req(ID, &q3), &host(), &SystemRandom::new()),
            GateStep::NotPairing(_)
        ));
        assert_eq!(
            gate.wrong_pins.len(),
            1,
            "the abandoned ceremony had its PIN"
        );
        assert!(another_client_may_begin(&mut gate, late));
    }

    #[test]
    fn another_address_cannot_step_or_unpair_a_ceremony_with_the_same_uniqueid() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let mut c = client("1111");
        let r1 = through_phase1(&mut gate, t0, &c, ID, "1111");
        // An intruder sends its own challenge (and an unpair) under the victim's uniqueid.
        let mut intruder = client("9999");
        let ir1 = {
            let mut g = PairingGate::new();
            through_phase1(&mut g, t0, &intruder, ID, "9999")
        };
        let iq2 = intruder.phase2_query(&ir1).unwrap();
        let h = host();
        let rng = SystemRandom::new();
        assert!(matches!(
            gate.step(t0, OTHER, ID, &req(ID, &iq2), &h, &rng),
            GateStep::NotPairing(_)
        ));
        assert!(!gate.unpair(t0, OTHER, ID));
        assert_eq!(gate.foreign_requests(), 2);
        // The victim's ceremony is untouched and pairs.
        let q2 = c.phase2_query(&r1).unwrap();
        let r2 = continued(gate.step(t0, IP, ID, &req(ID, &q2), &h, &rng));
        let q3 = c.phase3_query(&r2).unwrap();
        let r3 = continued(gate.step(t0, IP, ID, &req(ID, &q3), &h, &rng));
        let q4 = c.phase4_query(&r3).unwrap();
        assert!(matches!(
            gate.step(t0, IP, ID, &req(ID, &q4), &h, &rng),
            GateStep::Paired { .. }
        ));
    }

    #[test]
    fn a_requester_that_went_away_frees_the_gate_at_once() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let wait = gate
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert!(gate.abandon(t0 + secs(1.0), wait.ticket));
        assert!(!gate.in_progress());
        assert_eq!(
            gate.submit_pin(t0 + secs(2.0), "1111"),
            Err(PinRefused::NotWaiting)
        );
        assert!(gate.wrong_pins.is_empty(), "no PIN was typed: no failure");
        assert!(!gate.abandon(t0 + secs(2.0), wait.ticket), "only once");
        assert!(another_client_may_begin(&mut gate, t0 + secs(2.0)));
    }

    #[test]
    fn clients_that_find_the_pin_wrong_at_phase_three_and_leave_are_locked_out() {
        // Stock clients compare the host's answer at phase 3 and stop there (with `/unpair`,
        // or silently): five such ceremonies lock pairing just like five wrong PINs at phase 4.
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let h = host();
        let rng = SystemRandom::new();
        for i in 0..MAX_WRONG_PINS {
            let t = t0 + secs(i as f64);
            let mut c = client("1111");
            let r1 = through_phase1(&mut gate, t, &c, ID, "2222");
            let q2 = c.phase2_query(&r1).unwrap();
            let _ = continued(gate.step(t, IP, ID, &req(ID, &q2), &h, &rng));
            if i % 2 == 0 {
                assert!(gate.unpair(t, IP, ID));
            } else {
                gate.handle_timeout(t + PAIRING_IDLE);
            }
        }
        let t = t0 + secs(MAX_WRONG_PINS as f64) + PAIRING_IDLE;
        let c = client("1111");
        assert!(matches!(
            gate.begin(t, IP, ID, "t", &req(ID, &c.phase1_query())),
            Err(BeginRefused::Locked { .. })
        ));
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
        let locked = gate.begin(fifth + secs(59.9), IP, ID, "t", &req(ID, &c.phase1_query()));
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
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert!(!gate.unpair(t0, IP, "SOMEONEELSE"));
        assert!(gate.in_progress());
        assert!(gate.unpair(t0, IP, ID));
        assert!(!gate.in_progress());
        assert_eq!(gate.submit_pin(t0, "1111"), Err(PinRefused::NotWaiting));
        assert_eq!(
            gate.finish_pin_wait(t0, wait.ticket, &host()).err(),
            Some(PinWaitEnded::Cancelled)
        );
        // And between phases.
        through_phase1(&mut gate, t0, &c, ID, "1111");
        assert!(gate.unpair(t0, IP, ID));
        assert!(!gate.in_progress());
    }

    #[test]
    fn a_stale_ticket_never_finishes_a_later_ceremony() {
        let t0 = Instant::now();
        let mut gate = PairingGate::new();
        let c = client("1111");
        let first = gate
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
            .unwrap();
        assert!(gate.unpair(t0, IP, ID));
        let second = gate
            .begin(t0, IP, ID, "tablet", &req(ID, &c.phase1_query()))
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
                IP,
                ID,
                &req(ID, "clientchallenge=00"),
                &host(),
                &SystemRandom::new()
            ),
            GateStep::NotPairing(_)
        ));
        assert!(matches!(
            gate.begin(t0, IP, ID, "t", &req(ID, "phrase=getservercert&salt=zz")),
            Err(BeginRefused::Request(_))
        ));
        assert!(!gate.in_progress());
    }
}
