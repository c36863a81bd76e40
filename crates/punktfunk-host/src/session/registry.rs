//! Every running session of both protocols: the host-wide session limit, and snapshots for logs
//! and the management API (which reads these, never thread internals).

use super::stats::SessionStats;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// punktfunk/1.
    Punktfunk1,
    /// GameStream (Moonlight).
    GameStream,
}

impl Protocol {
    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Punktfunk1 => "punktfunk/1",
            Protocol::GameStream => "GameStream",
        }
    }
}

/// The host is at its session limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host is at its limit of {limit} sessions")]
pub struct Busy {
    /// The limit.
    pub limit: usize,
}

/// Reads a session's figures; `None` once the session is gone (its place is about to go too).
type Snapshot = Arc<dyn Fn() -> Option<SessionStats> + Send + Sync>;

struct Entry {
    protocol: Protocol,
    client: String,
    snapshot: Option<Snapshot>,
}

/// All sessions.
pub struct Registry {
    limit: usize,
    state: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// A session's place in the registry; dropping it frees the place.
pub struct Ticket {
    registry: Arc<Registry>,
    id: u64,
}

/// What the registry knows of a session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// Registry id.
    pub id: u64,
    /// Protocol.
    pub protocol: Protocol,
    /// The client (name or address).
    pub client: String,
    /// Its figures, once the session runs.
    pub stats: Option<SessionStats>,
}

impl Registry {
    /// A registry admitting at most `limit` sessions at once.
    pub fn new(limit: usize) -> Arc<Registry> {
        Arc::new(Registry {
            limit,
            state: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// Takes a place for a new session, or says the host is busy.
    pub fn admit(self: &Arc<Self>, protocol: Protocol, client: &str) -> Result<Ticket, Busy> {
        let mut st = crate::lock(&self.state);
        if st.1.len() >= self.limit {
            return Err(Busy { limit: self.limit });
        }
        st.0 += 1;
        let id = st.0;
        st.1.insert(
            id,
            Entry {
                protocol,
                client: client.to_string(),
                snapshot: None,
            },
        );
        Ok(Ticket {
            registry: self.clone(),
            id,
        })
    }

    /// Sessions running now.
    pub fn len(&self) -> usize {
        crate::lock(&self.state).1.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session with its current figures.
    pub fn list(&self) -> Vec<Listed> {
        let entries: Vec<(u64, Protocol, String, Option<Snapshot>)> = crate::lock(&self.state)
            .1
            .iter()
            .map(|(id, e)| (*id, e.protocol, e.client.clone(), e.snapshot.clone()))
            .collect();
        // Snapshots are taken outside the registry's lock: they lock the sessions' own state.
        entries
            .into_iter()
            .map(|(id, protocol, client, snap)| Listed {
                id,
                protocol,
                client,
                stats: snap.and_then(|f| f()),
            })
            .collect()
    }
}

impl Ticket {
    /// The registry id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Gives the registry a way to read the session's figures.
    pub fn attach(&self, snapshot: Snapshot) {
        if let Some(e) = crate::lock(&self.registry.state).1.get_mut(&self.id) {
            e.snapshot = Some(snapshot);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        crate::lock(&self.registry.state).1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_spans_both_protocols_and_a_dropped_ticket_frees_its_place() {
        let r = Registry::new(2);
        let a = r.admit(Protocol::Punktfunk1, "a").unwrap();
        let _b = r.admit(Protocol::GameStream, "b").unwrap();
        assert_eq!(
            r.admit(Protocol::Punktfunk1, "c").unwrap_err(),
            Busy { limit: 2 }
        );
        assert_eq!(r.list().len(), 2);
        drop(a);
        let c = r.admit(Protocol::Punktfunk1, "c").unwrap();
        assert_ne!(c.id(), 1, "ids are not reused");
        let listed = r.list();
        assert_eq!(
            listed.iter().map(|l| l.client.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(listed.iter().all(|l| l.stats.is_none()));
    }
}
