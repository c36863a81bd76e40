//! punktfunk/1 pairing: a client proves it knows the PIN the host's owner armed, the host
//! proves it knows the same PIN, and both learn the other's certificate fingerprint as it was
//! seen in this very TLS connection.
//!
//! ```text
//! client                                           host
//!   PairStart{PIN, name, X}  ────────────────────►   takes the armed PIN (one ceremony)
//!            ◄────────────────────────────────────   PairChallenge{Y, MAC_host}
//!   checks MAC_host
//!   PairConfirm{MAC_client}  ────────────────────►   checks MAC_client, stores the client
//!            ◄────────────────────────────────────   PairDone{id}
//! ```
//!
//! `X` and `Y` are SPAKE2 messages over Ed25519 (the `spake2` crate) with the PIN as the
//! password and both fingerprints as the SPAKE2 identities, so the shared key depends on the
//! PIN *and* on the certificates each side saw. From it both derive confirmation keys and MAC
//! the transcript (both fingerprints, both SPAKE2 messages). A relay in the middle that
//! terminates TLS with its own certificate makes the two sides see different fingerprints:
//! their keys differ, the MACs fail, even if the relay passes every byte along. An active
//! attacker who runs the ceremony itself gets one online guess at the PIN per ceremony and
//! nothing to test further guesses against offline (that is what a PAKE gives). The exact
//! transcript is in `docs/protocol/punktfunk1.md`.
//!
//! A failed check cannot tell a mistyped PIN from a relay, so [`PairError::PinCheckFailed`]
//! says both. Without a PIN, [`PairMethod::APPROVAL`] asks the owner to approve the client on
//! the host ([`ClientAwaitApproval`]); the host keeps the waiting requests.
//!
//! Each side is a typed state machine: one state per expected message, consumed by its
//! transition, so a message out of order cannot be applied to the wrong state. [`PinGate`] is
//! the host's policy around ceremonies (arming, expiry, one ceremony per PIN, lockout). Nothing
//! here reads a clock or touches I/O: randomness comes in as a fill function, time as `now`.

use crate::control::{ByeReason, Message, PairMethod, PairStart, PAIR_MAC_LEN, PROTOCOL_VERSION};
use ring::{digest, hkdf, hmac};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Digits in a pairing PIN.
pub const PIN_DIGITS: usize = 4;
/// How long an armed PIN stays valid.
pub const PIN_VALIDITY: Duration = Duration::from_secs(120);
/// Failed ceremonies allowed per [`FAILURE_WINDOW`]; the last of them locks pairing.
pub const MAX_FAILURES: usize = 3;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// How long pairing stays locked after [`MAX_FAILURES`].
pub const LOCKOUT: Duration = Duration::from_secs(300);

/// Domain separation of every value derived in a ceremony.
const CONTEXT: &[u8] = b"punktfunk/1 pairing v1";

/// The two certificate fingerprints (SHA-256 of the DER) as one side saw them in the TLS
/// handshake of the connection the ceremony runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprints {
    /// The client's certificate.
    pub client: [u8; 32],
    /// The host's certificate.
    pub host: [u8; 32],
}

/// A pairing PIN: [`PIN_DIGITS`] decimal digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin([u8; PIN_DIGITS]);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(redacted)")
    }
}

/// Why a typed PIN is not one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("a PIN is {PIN_DIGITS} digits, e.g. 0427")]
pub struct PinFormatError;

impl Pin {
    /// Parses what a person typed (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<Pin, PinFormatError> {
        let s = s.trim();
        if s.len() != PIN_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinFormatError);
        }
        Ok(Pin(s.as_bytes().try_into().expect("length checked")))
    }

    /// A uniformly random PIN from `fill`.
    pub fn generate(fill: &mut dyn FnMut(&mut [u8])) -> Pin {
        // Rejection sampling: 65536 is not a multiple of 10^4, so drop the top values.
        let limit = u16::MAX - u16::MAX % 10_000;
        loop {
            let mut b = [0; 2];
            fill(&mut b);
            let v = u16::from_le_bytes(b);
            if v < limit {
                let s = format!("{:04}", v % 10_000);
                return Pin(s.as_bytes().try_into().expect("4 digits"));
            }
        }
    }

    /// The digits, to show the owner.
    pub fn digits(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }

    fn password(&self) -> Vec<u8> {
        [b"punktfunk/1 pin ".as_slice(), &self.0].concat()
    }
}

/// How a ceremony failed. Every failure ends it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairError {
    /// The peer's key confirmation did not verify.
    #[error(
        "the PIN check failed: the PIN was wrong, or something between this client and the host \
         is relaying the connection"
    )]
    PinCheckFailed,
    /// A message that is not the one this state expects.
    #[error("pairing message out of order: expected {expected}, got {got}")]
    OutOfOrder {
        /// What this state waits for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A field that cannot be right (a SPAKE2 message of the wrong size or not on the curve).
    #[error("malformed pairing message: {0}")]
    Malformed(&'static str),
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The client asked for a method this host does not know.
    #[error("unknown pairing method {0:?}")]
    UnknownMethod(PairMethod),
    /// The peer ended the ceremony with a Bye.
    #[error("{} ({reason})", crate::text::Escaped(message))]
    Refused {
        /// The Bye's reason.
        reason: ByeReason,
        /// The peer's explanation.
        message: String,
    },
}

impl PairError {
    /// The Bye that tells the peer about this failure (for the side that detected it).
    pub fn bye(&self) -> Message {
        let reason = match self {
            PairError::PinCheckFailed => ByeReason::PAIRING_FAILED,
            PairError::Version { .. } => ByeReason::VERSION_MISMATCH,
            PairError::UnknownMethod(_) => ByeReason::UNSUPPORTED,
            PairError::Refused { reason, .. } => *reason,
            PairError::OutOfOrder { .. } | PairError::Malformed(_) => ByeReason::PROTOCOL_ERROR,
        };
        Message::Bye {
            reason,
            message: self.to_string(),
        }
    }
}

fn refused_or_out_of_order(expected: &'static str, got: Message) -> PairError {
    match got {
        Message::Bye { reason, message } => PairError::Refused { reason, message },
        other => PairError::OutOfOrder {
            expected,
            got: other.name(),
        },
    }
}

/// Adapts the caller's secure fill function to the RNG interface `spake2` wants.
struct FillRng<'a>(&'a mut dyn FnMut(&mut [u8]));

impl rand_core::RngCore for FillRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        (self.0)(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        (self.0)(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (self.0)(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        (self.0)(dest);
        Ok(())
    }
}

// The fill function is the driver's secure random source (the system's), by contract.
impl rand_core::CryptoRng for FillRng<'_> {}

type Spake = spake2::Spake2<spake2::Ed25519Group>;

fn spake_ids(f: &Fingerprints) -> (spake2::Identity, spake2::Identity) {
    (
        spake2::Identity::new(&[b"punktfunk/1 client ".as_slice(), &f.client].concat()),
        spake2::Identity::new(&[b"punktfunk/1 host ".as_slice(), &f.host].concat()),
    )
}

/// The confirmation keys and transcript hash both sides derive from the SPAKE2 key.
struct Confirmation {
    host_key: hmac::Key,
    client_key: hmac::Key,
    transcript: digest::Digest,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Confirmation {
    fn derive(shared: &[u8], f: &Fingerprints, msg_client: &[u8], msg_host: &[u8]) -> Self {
        let mut tt = digest::Context::new(&digest::SHA256);
        tt.update(CONTEXT);
        tt.update(&f.client);
        tt.update(&f.host);
        for m in [msg_client, msg_host] {
            tt.update(&[m.len() as u8]);
            tt.update(m);
        }
        let transcript = tt.finish();
        let mut okm = [0u8; 64];
        hkdf::Salt::new(hkdf::HKDF_SHA256, transcript.as_ref())
            .extract(shared)
            .expand(&[CONTEXT, b" confirm"], Len(64))
            .and_then(|o| o.fill(&mut okm))
            .expect("64 bytes is a valid HKDF-SHA-256 output length");
        Confirmation {
            host_key: hmac::Key::new(hmac::HMAC_SHA256, &okm[..32]),
            client_key: hmac::Key::new(hmac::HMAC_SHA256, &okm[32..]),
            transcript,
        }
    }

    fn mac(key: &hmac::Key, role: &[u8], transcript: &digest::Digest) -> [u8; PAIR_MAC_LEN] {
        let tag = hmac::sign(key, &[role, transcript.as_ref()].concat());
        tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
    }

    fn host_mac(&self) -> [u8; PAIR_MAC_LEN] {
        Self::mac(&self.host_key, b"host", &self.transcript)
    }

    fn client_mac(&self) -> [u8; PAIR_MAC_LEN] {
        Self::mac(&self.client_key, b"client", &self.transcript)
    }

    fn check(key: &hmac::Key, role: &[u8], transcript: &digest::Digest, mac: &[u8]) -> bool {
        // Constant-time comparison.
        hmac::verify(key, &[role, transcript.as_ref()].concat(), mac).is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

/// The host's ceremony before the client's first message.
#[derive(Debug)]
pub struct HostPairing {
    fingerprints: Fingerprints,
}

/// What the client asked for in its [`PairStart`].
#[derive(Debug)]
pub enum HostRequest {
    /// SPAKE2 with the armed PIN: take the PIN from the [`PinGate`] and answer.
    Pin(PinRequest),
    /// Approval without a PIN: the owner decides.
    Approval {
        /// The name the client gave.
        client_name: String,
    },
}

/// A PIN ceremony waiting for the host's PIN.
#[derive(Debug)]
pub struct PinRequest {
    fingerprints: Fingerprints,
    client_name: String,
    spake: Vec<u8>,
}

/// The host's ceremony after its challenge, waiting for the client's confirmation.
pub struct HostAwaitConfirm {
    client_name: String,
    client_fingerprint: [u8; 32],
    confirmation: Confirmation,
}

impl std::fmt::Debug for HostAwaitConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAwaitConfirm")
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

/// A client that proved it knows the PIN, seen with the fingerprint it paired with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedClient {
    /// The name it gave.
    pub client_name: String,
    /// Its certificate's fingerprint.
    pub fingerprint: [u8; 32],
}

impl HostPairing {
    /// A ceremony on a connection whose TLS handshake showed these fingerprints.
    pub fn new(fingerprints: Fingerprints) -> HostPairing {
        HostPairing { fingerprints }
    }

    /// Takes the client's first message.
    pub fn handle(self, msg: Message) -> Result<HostRequest, PairError> {
        let start = match msg {
            Message::PairStart(s) => s,
            other => return Err(refused_or_out_of_order("PairStart", other)),
        };
        if start.version != PROTOCOL_VERSION {
            return Err(PairError::Version {
                ours: PROTOCOL_VERSION,
                theirs: start.version,
            });
        }
        match start.method {
            PairMethod::PIN => Ok(HostRequest::Pin(PinRequest {
                fingerprints: self.fingerprints,
                client_name: start.client_name,
                spake: start.spake,
            })),
            PairMethod::APPROVAL => Ok(HostRequest::Approval {
                client_name: start.client_name,
            }),
            other => Err(PairError::UnknownMethod(other)),
        }
    }
}

impl PinRequest {
    /// The name the client gave.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Runs the host's half of SPAKE2 with `pin`: the challenge to send, and the state that
    /// checks the client's confirmation.
    pub fn answer(
        self,
        pin: &Pin,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(HostAwaitConfirm, Message), PairError> {
        let (id_client, id_host) = spake_ids(&self.fingerprints);
        let (state, msg_host) = Spake::start_b_with_rng(
            &spake2::Password::new(pin.password()),
            &id_client,
            &id_host,
            FillRng(fill),
        );
        let shared = state
            .finish(&self.spake)
            .map_err(|_| PairError::Malformed("the client's SPAKE2 message"))?;
        let confirmation =
            Confirmation::derive(&shared, &self.fingerprints, &self.spake, &msg_host);
        let challenge = Message::PairChallenge {
            spake: msg_host,
            confirm: confirmation.host_mac(),
        };
        Ok((
            HostAwaitConfirm {
                client_name: self.client_name,
                client_fingerprint: self.fingerprints.client,
                confirmation,
            },
            challenge,
        ))
    }
}

impl HostAwaitConfirm {
    /// Takes the client's confirmation: the client knew the PIN and saw the same fingerprints.
    /// The caller stores it and sends [`Message::PairDone`].
    pub fn handle(self, msg: Message) -> Result<PairedClient, PairError> {
        let mac = match msg {
            Message::PairConfirm { confirm } => confirm,
            other => return Err(refused_or_out_of_order("PairConfirm", other)),
        };
        let c = &self.confirmation;
        if !Confirmation::check(&c.client_key, b"client", &c.transcript, &mac) {
            return Err(PairError::PinCheckFailed);
        }
        Ok(PairedClient {
            client_name: self.client_name,
            fingerprint: self.client_fingerprint,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Starts a client's ceremony.
#[derive(Debug)]
pub struct ClientPairing;

/// The client's PIN ceremony after [`PairStart`], waiting for the host's challenge.
pub struct ClientAwaitChallenge {
    fingerprints: Fingerprints,
    state: Spake,
    msg_client: Vec<u8>,
}

impl std::fmt::Debug for ClientAwaitChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAwaitChallenge")
            .finish_non_exhaustive()
    }
}

/// The client's ceremony after its confirmation, waiting for the host to store it.
#[derive(Debug)]
pub struct ClientAwaitDone {
    host: [u8; 32],
}

/// An approval request waiting for the host's owner.
#[derive(Debug)]
pub struct ClientAwaitApproval {
    id: Option<String>,
}

/// The end of a successful ceremony, on the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedHost {
    /// The host's certificate fingerprint, to pin from now on.
    pub fingerprint: [u8; 32],
    /// The id the host stored this client under.
    pub id: String,
}

/// What an approval request did with a message.
#[derive(Debug)]
pub enum ApprovalStep {
    /// Still waiting; the id is what the owner approves (known after [`Message::PairPending`]).
    Waiting(ClientAwaitApproval),
    /// Approved and stored.
    Paired(PairedHost),
}

impl ClientPairing {
    /// A PIN ceremony as `client_name` on a connection with these fingerprints: the state and
    /// the first message.
    pub fn with_pin(
        pin: &Pin,
        client_name: &str,
        fingerprints: Fingerprints,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> (ClientAwaitChallenge, Message) {
        let (id_client, id_host) = spake_ids(&fingerprints);
        let (state, msg_client) = Spake::start_a_with_rng(
            &spake2::Password::new(pin.password()),
            &id_client,
            &id_host,
            FillRng(fill),
        );
        let start = Message::PairStart(PairStart {
            version: PROTOCOL_VERSION,
            method: PairMethod::PIN,
            client_name: client_name.to_string(),
            spake: msg_client.clone(),
        });
        (
            ClientAwaitChallenge {
                fingerprints,
                state,
                msg_client,
            },
            start,
        )
    }

    /// An approval request as `client_name`.
    pub fn with_approval(client_name: &str) -> (ClientAwaitApproval, Message) {
        let start = Message::PairStart(PairStart {
            version: PROTOCOL_VERSION,
            method: PairMethod::APPROVAL,
            client_name: client_name.to_string(),
            spake: Vec::new(),
        });
        (ClientAwaitApproval { id: None }, start)
    }
}

impl ClientAwaitChallenge {
    /// Takes the host's challenge: checks that the host knew the PIN and saw the same
    /// fingerprints, and gives the confirmation to send.
    pub fn handle(self, msg: Message) -> Result<(ClientAwaitDone, Message), PairError> {
        let (msg_host, mac) = match msg {
            Message::PairChallenge { spake, confirm } => (spake, confirm),
            other => return Err(refused_or_out_of_order("PairChallenge", other)),
        };
        let shared = self
            .state
            .finish(&msg_host)
            .map_err(|_| PairError::Malformed("the host's SPAKE2 message"))?;
        let c = Confirmation::derive(&shared, &self.fingerprints, &self.msg_client, &msg_host);
        if !Confirmation::check(&c.host_key, b"host", &c.transcript, &mac) {
            return Err(PairError::PinCheckFailed);
        }
        Ok((
            ClientAwaitDone {
                host: self.fingerprints.host,
            },
            Message::PairConfirm {
                confirm: c.client_mac(),
            },
        ))
    }
}

impl ClientAwaitDone {
    /// Takes the host's answer to the confirmation.
    pub fn handle(self, msg: Message) -> Result<PairedHost, PairError> {
        match msg {
            Message::PairDone { id } => Ok(PairedHost {
                fingerprint: self.host,
                id,
            }),
            other => Err(refused_or_out_of_order("PairDone", other)),
        }
    }
}

impl ClientAwaitApproval {
    /// The id the host gave the request, once it said so.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Takes a host message; `host` is the fingerprint of the host's certificate as seen on
    /// this connection (approval pins what the client saw, so the owner's check is what makes
    /// it safe: the id the host lists must be this client's).
    pub fn handle(mut self, msg: Message, host: [u8; 32]) -> Result<ApprovalStep, PairError> {
        match msg {
            Message::PairPending { id } if self.id.is_none() => {
                self.id = Some(id);
                Ok(ApprovalStep::Waiting(self))
            }
            Message::PairDone { id } => Ok(ApprovalStep::Paired(PairedHost {
                fingerprint: host,
                id,
            })),
            other => Err(refused_or_out_of_order("PairPending or PairDone", other)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The host's gate
// ---------------------------------------------------------------------------------------------

/// A PIN the owner armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    /// The PIN to show.
    pub pin: Pin,
    /// When it stops being accepted.
    pub expires: Instant,
}

/// Why a ceremony (or arming) was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateRefused {
    /// No PIN is armed (none was, or its one ceremony already ran).
    #[error("no pairing PIN is armed on the host (run punktfunk-host pair there)")]
    NotArmed,
    /// The armed PIN expired.
    #[error("the pairing PIN expired (run punktfunk-host pair again)")]
    Expired,
    /// Too many failed ceremonies recently.
    #[error("pairing is locked for {}s after {MAX_FAILURES} failed PIN checks", .remaining.as_secs().max(1))]
    Locked {
        /// How long the lock still holds.
        remaining: Duration,
    },
}

impl From<GateRefused> for PairError {
    /// The host refuses the ceremony: the client reads the gate's reason.
    fn from(e: GateRefused) -> PairError {
        PairError::Refused {
            reason: ByeReason::PAIRING_FAILED,
            message: e.to_string(),
        }
    }
}

/// The host's pairing policy: one armed PIN at a time, valid [`PIN_VALIDITY`] and for one
/// ceremony; [`MAX_FAILURES`] failed ceremonies within [`FAILURE_WINDOW`] lock arming and
/// ceremonies for [`LOCKOUT`].
#[derive(Debug, Default)]
pub struct PinGate {
    armed: Option<Armed>,
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl PinGate {
    /// A gate with nothing armed.
    pub fn new() -> PinGate {
        PinGate::default()
    }

    fn locked(&mut self, now: Instant) -> Result<(), GateRefused> {
        match self.locked_until {
            Some(until) if now < until => Err(GateRefused::Locked {
                remaining: until - now,
            }),
            Some(_) => {
                self.locked_until = None;
                self.failures.clear();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Arms a fresh PIN (replacing one armed before).
    pub fn arm(
        &mut self,
        now: Instant,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Armed, GateRefused> {
        self.locked(now)?;
        let armed = Armed {
            pin: Pin::generate(fill),
            expires: now + PIN_VALIDITY,
        };
        self.armed = Some(armed.clone());
        Ok(armed)
    }

    /// Whether a PIN is armed and unexpired.
    pub fn is_armed(&self, now: Instant) -> bool {
        self.armed.as_ref().is_some_and(|a| now < a.expires)
    }

    /// Takes the armed PIN for one ceremony: nobody else can use it afterwards. The caller
    /// reports the ceremony's end with [`PinGate::failed`] unless it succeeded.
    pub fn take(&mut self, now: Instant) -> Result<Pin, GateRefused> {
        self.locked(now)?;
        let armed = self.armed.take().ok_or(GateRefused::NotArmed)?;
        if now >= armed.expires {
            return Err(GateRefused::Expired);
        }
        Ok(armed.pin)
    }

    /// Records a ceremony that took the PIN and did not succeed.
    pub fn failed(&mut self, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() >= MAX_FAILURES {
            self.locked_until = Some(now + LOCKOUT);
            self.armed = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests;
