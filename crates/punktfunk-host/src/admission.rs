//! What peers that are not (yet) sessions may hold: connections in all and per address.
//!
//! Anyone who can reach a port can open connections and leave them half-done. Each server
//! gives every connection that has not yet become something bounded by its own rules (a
//! session, a pairing ceremony) a [`Permit`] from its [`Admission`] gate:
//!
//! - at most [`Limits::total`] at once, and [`Limits::per_ip`] from one address, so one
//!   stranger cannot take every slot and the owner's client is still let in;
//! - for QUIC, beyond [`Limits::retry_above`] open ones a handshake whose source address is
//!   not yet validated is answered with a stateless Retry: a flood from forged addresses then
//!   costs the host no state, while a real client answers the Retry and is admitted one round
//!   trip later (a TCP connection's address is validated by its handshake);
//! - past the limits the connection is refused.
//!
//! Each server also bounds a connection in time (punktfunk/1: the handshake deadline from the
//! first packet; RTSP and nvhttp: a deadline per request). When a burst that turned peers away
//! ends (its last permit is released) the allocator is asked to return freed memory to the
//! system, so a flood does not leave the host at its peak.
//!
//! Used by: the punktfunk/1 QUIC endpoint (handshakes until the first control message), RTSP
//! and nvhttp (connections until answered).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Bounds on the connections a gate admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open at once.
    pub total: usize,
    /// Most open from one IP address.
    pub per_ip: usize,
    /// From this many open on, unvalidated handshakes get a Retry.
    pub retry_above: usize,
}

impl Limits {
    /// punktfunk/1 handshakes (QUIC, before the first control message).
    pub const QUIC: Limits = Limits {
        total: 64,
        per_ip: 8,
        retry_above: 16,
    };
    /// A TCP server's connections (RTSP, nvhttp HTTP and HTTPS) until answered.
    pub const TCP: Limits = Limits {
        total: 64,
        per_ip: 16,
        retry_above: usize::MAX,
    };
}

/// What to do with a new handshake.
#[derive(Debug)]
pub enum Decision {
    /// Go ahead; hold the permit until the connection is a session or over.
    Admit(Permit),
    /// Answer with a stateless Retry (the client must prove its address).
    Retry,
    /// Refuse it.
    Refuse(Refused),
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`Limits::total`] connections are open.
    Full,
    /// [`Limits::per_ip`] connections are open from this address.
    PerAddress,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full => f.write_str("too many connections are still pending"),
            Refused::PerAddress => {
                f.write_str("too many connections from this address are still pending")
            }
        }
    }
}

/// Figures of the admission gate (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Connections open now.
    pub open: usize,
    /// Most open at once so far.
    pub peak: usize,
    /// Handshakes admitted.
    pub admitted: u64,
    /// Handshakes answered with a Retry.
    pub retried: u64,
    /// Handshakes refused.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct State {
    per_ip: HashMap<IpAddr, usize>,
    stats: AdmissionStats,
    /// Whether the current busy period turned handshakes away (a flood): memory is trimmed
    /// when it ends.
    turned_away: bool,
}

/// One server's gate.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

impl Admission {
    /// A gate with these limits.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Decides on a connection from `ip`; `validated` says whether its address is proven
    /// (a TCP connection, or a QUIC client that answered a Retry).
    pub fn decide(self: &Arc<Self>, ip: IpAddr, validated: bool) -> Decision {
        let mut s = crate::lock(&self.state);
        let open = s.stats.open;
        let from_ip = s.per_ip.get(&ip).copied().unwrap_or(0);
        let refuse = if open >= self.limits.total {
            Some(Refused::Full)
        } else if from_ip >= self.limits.per_ip {
            Some(Refused::PerAddress)
        } else {
            None
        };
        if let Some(why) = refuse {
            s.stats.refused += 1;
            s.turned_away = true;
            return Decision::Refuse(why);
        }
        if !validated && open >= self.limits.retry_above {
            s.stats.retried += 1;
            s.turned_away = true;
            return Decision::Retry;
        }
        *s.per_ip.entry(ip).or_insert(0) += 1;
        s.stats.open += 1;
        s.stats.peak = s.stats.peak.max(s.stats.open);
        s.stats.admitted += 1;
        Decision::Admit(Permit {
            gate: self.clone(),
            ip,
        })
    }

    /// Admits a connection whose address is proven (TCP), or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        match self.decide(ip, true) {
            Decision::Admit(p) => Ok(p),
            Decision::Refuse(why) => Err(why),
            Decision::Retry => unreachable!("a validated address never gets a Retry"),
        }
    }

    /// The gate's figures.
    pub fn stats(&self) -> AdmissionStats {
        crate::lock(&self.state).stats
    }

    fn release(&self, ip: IpAddr) {
        let mut s = crate::lock(&self.state);
        if let Some(n) = s.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&ip);
            }
        }
        s.stats.open = s.stats.open.saturating_sub(1);
        if s.stats.open == 0 && std::mem::take(&mut s.turned_away) {
            drop(s);
            let freed = release_freed_memory();
            tracing::info!(
                freed_to_system = freed,
                "a burst of connections is over; freed memory returned to the system"
            );
        }
    }
}

/// An admitted connection's place in the gate; released when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

/// Asks the allocator to return freed memory to the system (glibc keeps it otherwise, so the
/// host would stay at a flood's peak). Whether anything was returned.
fn release_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn gate() -> Arc<Admission> {
        Admission::new(Limits {
            total: 4,
            per_ip: 2,
            retry_above: 2,
        })
    }

    fn admit(g: &Arc<Admission>, ip: IpAddr, validated: bool) -> Permit {
        match g.decide(ip, validated) {
            Decision::Admit(p) => p,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[test]
    fn unvalidated_handshakes_get_a_retry_once_the_gate_is_busy() {
        let g = gate();
        let _a = admit(&g, A, false);
        let _b = admit(&g, B, false);
        assert!(matches!(g.decide(A, false), Decision::Retry));
        // The same peer, having answered the Retry, is admitted.
        let _c = admit(&g, A, true);
        assert_eq!(g.stats().retried, 1);
        assert_eq!(g.stats().open, 3);
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let g = gate();
        let _a1 = admit(&g, A, true);
        let _a2 = admit(&g, A, true);
        assert!(matches!(
            g.decide(A, true),
            Decision::Refuse(Refused::PerAddress)
        ));
        let _b = admit(&g, B, true);
        assert_eq!(g.stats().open, 3);
    }

    #[test]
    fn the_total_is_bounded_and_released_permits_free_their_slot() {
        let g = gate();
        let ips: Vec<IpAddr> = (1..=5)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, i)))
            .collect();
        let mut held: Vec<Permit> = ips[..4].iter().map(|ip| admit(&g, *ip, true)).collect();
        assert!(matches!(
            g.decide(ips[4], true),
            Decision::Refuse(Refused::Full)
        ));
        held.pop();
        let _again = admit(&g, ips[4], true);
        drop(held);
        let s = g.stats();
        assert_eq!((s.open, s.peak, s.refused, s.admitted), (1, 4, 1, 5));
        assert!(
            crate::lock(&g.state).per_ip.len() == 1,
            "per-address counts are pruned"
        );
    }
}
