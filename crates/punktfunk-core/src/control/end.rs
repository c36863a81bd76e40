//! How a session's control stream ends, shared by [`super::HostControl`] and
//! [`super::ClientControl`].

use super::ByeReason;
use crate::handshake::ModeRefused;
use std::time::Duration;
use thiserror::Error;

/// One end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The streaming host.
    Host,
    /// The client.
    Client,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Host => "host",
            Side::Client => "client",
        })
    }
}

/// What went wrong when a session ended badly, grouped by whose fault it was.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// The peer broke the protocol: an undecodable message, or one it must not send now.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer asked for a mode the host's policy does not allow.
    #[error("refused: {0}")]
    Refused(#[from] ModeRefused),
    /// The peer ended the session with a reason other than a normal end or a shutdown.
    #[error("the peer ended the session ({reason}): {message}")]
    PeerEnded {
        /// The reason in the peer's Bye.
        reason: ByeReason,
        /// The peer's explanation.
        message: String,
    },
    /// The peer closed the control stream without saying Bye.
    #[error("the peer closed the control stream without a Bye")]
    Closed,
    /// The peer did not answer in time.
    #[error("the peer did not answer {what} within {} ms", .after.as_millis())]
    Timeout {
        /// What was not answered.
        what: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// This side's media pipeline failed (our fault, not the peer's).
    #[error("pipeline: {0}")]
    Pipeline(String),
}

/// The last action of a control machine: the session is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The side that ended it: the one that sent the Bye, or that closed its stream.
    pub by: Side,
    /// The Bye's reason code; `None` when the stream closed without one.
    pub reason: Option<ByeReason>,
    /// The Bye's message (empty when there was none).
    pub message: String,
    /// `Ok` for an orderly end (a normal Bye or a shutdown), else what went wrong.
    pub outcome: Result<(), ControlError>,
}

impl Ended {
    /// Whether the session ended in order.
    pub fn is_clean(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The outcome a peer's Bye implies: only a normal end and a shutdown are orderly.
    pub(crate) fn outcome_of_bye(reason: ByeReason, message: &str) -> Result<(), ControlError> {
        match reason {
            ByeReason::NORMAL | ByeReason::SHUTDOWN => Ok(()),
            reason => Err(ControlError::PeerEnded {
                reason,
                message: message.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Some(reason) => write!(
                f,
                "{} ended the session ({reason}): {}",
                self.by,
                crate::text::Escaped(&self.message)
            ),
            None => write!(f, "{} closed the control stream without a Bye", self.by),
        }
    }
}
