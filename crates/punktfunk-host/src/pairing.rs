//! punktfunk/1 pairing on the host: the state shared by every connection and the control
//! channel.
//!
//! - The armed PIN and the lockout are the core's [`PinGate`]; `punktfunk-host pair` arms it
//!   through the control channel and waits here for the outcome of the PIN's one ceremony.
//! - Approval requests (a client pairing without a PIN) wait here until the owner approves or
//!   refuses them by id (`punktfunk-host clients approve|refuse ID`), or
//!   [`APPROVAL_TIMEOUT`] passes. At most [`MAX_PENDING`] wait at once, one per client.
//!
//! The ceremony on a connection is driven by `proto::punktfunk1::pair`.

use punktfunk_core::pairing::{Armed, GateRefused, Pin, PinGate};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long an approval request waits for the owner.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Most approval requests waiting at once.
pub const MAX_PENDING: usize = 8;

/// How the ceremony of an armed PIN ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A client paired: its id and name.
    Paired {
        /// Its id in the store.
        id: String,
        /// Its name.
        name: String,
    },
    /// The ceremony failed (the reason as the host logged it).
    Failed(String),
}

/// An approval request as the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingView {
    /// The id to approve it by (the client's fingerprint, first 12 digits).
    pub id: String,
    /// The name the client gave.
    pub name: String,
    /// Where it connects from.
    pub remote: String,
    /// The client's full fingerprint.
    pub fingerprint: String,
    /// Seconds it has waited.
    pub waiting_secs: u64,
}

struct Pending {
    view: PendingView,
    since: Instant,
    decide: Option<oneshot::Sender<bool>>,
}

/// Why an approval request or decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Too many requests wait already.
    #[error("{MAX_PENDING} pairing requests are already waiting for approval")]
    Full,
    /// This client already has a request waiting.
    #[error("this client already has a pairing request waiting")]
    Duplicate,
    /// No request has this id.
    #[error("no pairing request {0:?} is waiting (see `punktfunk-host clients list`)")]
    Unknown(String),
}

/// The host's pairing state.
#[derive(Default)]
pub struct Pairing {
    gate: Mutex<PinGate>,
    waiter: Mutex<Option<oneshot::Sender<Outcome>>>,
    pending: Mutex<Vec<Pending>>,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing")
            .field("pending", &crate::lock(&self.pending).len())
            .finish_non_exhaustive()
    }
}

impl Pairing {
    /// Nothing armed, nobody waiting.
    pub fn new() -> Pairing {
        Pairing::default()
    }

    /// Arms a fresh PIN (replacing one armed before, whose waiter then hears it was replaced);
    /// the receiver gets the outcome of its ceremony.
    pub fn arm(&self, now: Instant) -> Result<(Armed, oneshot::Receiver<Outcome>), GateRefused> {
        let armed = crate::lock(&self.gate).arm(now, &mut crate::fill_random)?;
        let (tx, rx) = oneshot::channel();
        if let Some(old) = crate::lock(&self.waiter).replace(tx) {
            let _ = old.send(Outcome::Failed("a new PIN replaced this one".into()));
        }
        Ok((armed, rx))
    }

    /// Takes the armed PIN for one ceremony.
    pub fn take(&self, now: Instant) -> Result<Pin, GateRefused> {
        crate::lock(&self.gate).take(now)
    }

    /// Reports the end of a ceremony that took the PIN (a failure counts towards the lockout).
    pub fn finished(&self, now: Instant, outcome: Outcome) {
        if matches!(outcome, Outcome::Failed(_)) {
            crate::lock(&self.gate).failed(now);
        }
        if let Some(w) = crate::lock(&self.waiter).take() {
            let _ = w.send(outcome);
        }
    }

    /// Queues an approval request; the receiver gets the owner's decision (dropped: withdrawn).
    pub fn request_approval(
        &self,
        view: PendingView,
        now: Instant,
    ) -> Result<oneshot::Receiver<bool>, ApprovalError> {
        let mut p = crate::lock(&self.pending);
        p.retain(|r| now.saturating_duration_since(r.since) < APPROVAL_TIMEOUT);
        if p.iter().any(|r| r.view.fingerprint == view.fingerprint) {
            return Err(ApprovalError::Duplicate);
        }
        if p.len() >= MAX_PENDING {
            return Err(ApprovalError::Full);
        }
        let (tx, rx) = oneshot::channel();
        p.push(Pending {
            view,
            since: now,
            decide: Some(tx),
        });
        Ok(rx)
    }

    /// Removes a request (its client left or it timed out).
    pub fn withdraw(&self, fingerprint: &str) {
        crate::lock(&self.pending).retain(|r| r.view.fingerprint != fingerprint);
    }

    /// The requests waiting now.
    pub fn pending(&self, now: Instant) -> Vec<PendingView> {
        crate::lock(&self.pending)
            .iter()
            .filter(|r| now.saturating_duration_since(r.since) < APPROVAL_TIMEOUT)
            .map(|r| PendingView {
                waiting_secs: now.saturating_duration_since(r.since).as_secs(),
                ..r.view.clone()
            })
            .collect()
    }

    /// The owner's decision on request `id` (or a fingerprint prefix of at least 6 digits).
    pub fn decide(&self, id: &str, approve: bool) -> Result<PendingView, ApprovalError> {
        let id = id.to_ascii_lowercase();
        let mut p = crate::lock(&self.pending);
        let i = p
            .iter()
            .position(|r| r.view.id == id || (id.len() >= 6 && r.view.fingerprint.starts_with(&id)))
            .ok_or_else(|| ApprovalError::Unknown(id.clone()))?;
        let mut r = p.remove(i);
        if let Some(tx) = r.decide.take() {
            let _ = tx.send(approve);
        }
        Ok(r.view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(fp: &str) -> PendingView {
        PendingView {
            id: fp[..12].into(),
            name: "tv".into(),
            remote: "127.0.0.1:5".into(),
            fingerprint: fp.into(),
            waiting_secs: 0,
        }
    }

    #[test]
    fn approval_requests_are_bounded_unique_and_decided_by_id() {
        let p = Pairing::new();
        let t = Instant::now();
        let mut rx = p.request_approval(view(&"a1".repeat(32)), t).unwrap();
        assert_eq!(
            p.request_approval(view(&"a1".repeat(32)), t).unwrap_err(),
            ApprovalError::Duplicate
        );
        let mut keep = Vec::new();
        for i in 1..MAX_PENDING {
            keep.push(
                p.request_approval(view(&format!("{i:02x}").repeat(32)), t)
                    .unwrap(),
            );
        }
        assert_eq!(
            p.request_approval(view(&"ff".repeat(32)), t).unwrap_err(),
            ApprovalError::Full
        );
        assert_eq!(p.pending(t).len(), MAX_PENDING);
        assert!(matches!(
            p.decide("nothing", true),
            Err(ApprovalError::Unknown(_))
        ));
        assert_eq!(p.decide("a1a1a1a1a1a1", true).unwrap().name, "tv");
        assert_eq!(rx.try_recv(), Ok(true));
        p.decide(&"01".repeat(6), false).unwrap();
        assert_eq!(keep[0].try_recv(), Ok(false));
        // Requests past the timeout no longer count or show.
        let later = t + APPROVAL_TIMEOUT;
        assert!(p.pending(later).is_empty());
        assert!(p.request_approval(view(&"ff".repeat(32)), later).is_ok());
    }

    #[test]
    fn the_arming_command_hears_how_its_ceremony_ended() {
        let p = Pairing::new();
        let t = Instant::now();
        let (armed, mut rx) = p.arm(t).unwrap();
        assert_eq!(p.take(t).unwrap(), armed.pin);
        p.finished(
            t,
            Outcome::Paired {
                id: "x".into(),
                name: "laptop".into(),
            },
        );
        assert!(matches!(rx.try_recv(), Ok(Outcome::Paired { .. })));
        // A second arm replaces the first; the first waiter is told.
        let (_, mut first) = p.arm(t).unwrap();
        let (_, _second) = p.arm(t).unwrap();
        assert!(matches!(first.try_recv(), Ok(Outcome::Failed(_))));
    }
}
