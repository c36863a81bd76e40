//! Probing backends and choosing one, keeping a reason for every candidate.
//!
//! Each edge lists its backends in its own order of preference with a [`Probe`] each; a
//! [`Preference`] from the configuration either takes that order (`Auto`) or names backends to
//! try in turn. [`choose`] returns the first available one with every candidate's outcome, so
//! the log and `doctor` can say why the others were passed over.

use serde::Serialize;
use std::fmt;

/// Whether a backend can work here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Probe {
    /// It can be used.
    Available,
    /// It cannot, and why.
    Unavailable(String),
}

impl Probe {
    /// Whether it is available.
    pub fn is_available(&self) -> bool {
        matches!(self, Probe::Available)
    }
}

/// One backend's probe outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The backend's name (as in the configuration).
    pub backend: &'static str,
    /// What the probe found.
    pub probe: Probe,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Available => write!(f, "{}: available", self.backend),
            Probe::Unavailable(r) => write!(f, "{}: unavailable ({r})", self.backend),
        }
    }
}

/// The chosen backend and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen<B> {
    /// The backend.
    pub backend: B,
    /// One line: why this one.
    pub reason: String,
    /// Every candidate considered, in the order tried.
    pub candidates: Vec<Candidate>,
}

/// No backend of an edge can be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no {edge} backend can be used here: {}", list(.candidates))]
pub struct NoBackend {
    /// The edge (`display`, `capture`, `input`, `audio`).
    pub edge: &'static str,
    /// Every candidate with its reason.
    pub candidates: Vec<Candidate>,
}

fn list(c: &[Candidate]) -> String {
    c.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which backends the configuration allows, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(untagged)]
pub enum Preference<B> {
    /// The edge's own order.
    #[default]
    Auto,
    /// These, in this order; nothing else.
    Only(Vec<B>),
}

/// A backend enum: its names and its default order.
pub trait BackendId: Copy + Eq + fmt::Debug + 'static {
    /// The edge it belongs to, for messages.
    const EDGE: &'static str;
    /// Every backend, in the default order of preference.
    const ALL: &'static [Self];
    /// Its name in configuration and logs.
    fn name(self) -> &'static str;
    /// The backend called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }
    /// Every name, for error messages.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Chooses the first available backend in `preference` order; `probe` is called once per
/// candidate considered.
pub fn choose<B: BackendId>(
    preference: &Preference<B>,
    mut probe: impl FnMut(B) -> Probe,
) -> Result<Chosen<B>, NoBackend> {
    let order: Vec<B> = match preference {
        Preference::Auto => B::ALL.to_vec(),
        Preference::Only(list) => list.clone(),
    };
    let mut candidates = Vec::with_capacity(order.len());
    let mut chosen = None;
    for b in order {
        let p = if chosen.is_some() {
            // Later candidates are listed for the record but not probed (probing may be costly).
            Probe::Unavailable("not needed: an earlier choice is available".into())
        } else {
            probe(b)
        };
        if chosen.is_none() && p.is_available() {
            chosen = Some(b);
        }
        candidates.push(Candidate {
            backend: b.name(),
            probe: p,
        });
    }
    match chosen {
        Some(backend) => {
            let passed: Vec<String> = candidates
                .iter()
                .take_while(|c| c.backend != backend.name())
                .map(|c| c.to_string())
                .collect();
            let how = match preference {
                Preference::Auto => "first available",
                Preference::Only(_) => "first available of the configured list",
            };
            let reason = if passed.is_empty() {
                format!("{}: {how}", backend.name())
            } else {
                format!(
                    "{}: {how}; passed over {}",
                    backend.name(),
                    passed.join("; ")
                )
            };
            Ok(Chosen {
                backend,
                reason,
                candidates,
            })
        }
        None => Err(NoBackend {
            edge: B::EDGE,
            candidates,
        }),
    }
}

/// Probes every backend in the default order (for `doctor`).
pub fn probe_each<B: BackendId>(mut probe: impl FnMut(B) -> Probe) -> Vec<Candidate> {
    B::ALL
        .iter()
        .map(|&b| Candidate {
            backend: b.name(),
            probe: probe(b),
        })
        .collect()
}

/// Parses a comma-separated preference list (`auto` alone for the default order).
pub fn parse_preference<B: BackendId>(text: &str) -> Result<Preference<B>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("auto") || text.is_empty() {
        return Ok(Preference::Auto);
    }
    let mut list = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let b = B::from_name(part).ok_or_else(|| {
            format!(
                "unknown {} backend {part:?} (auto, {})",
                B::EDGE,
                B::names()
            )
        })?;
        if !list.contains(&b) {
            list.push(b);
        }
    }
    Ok(Preference::Only(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
    }
    impl BackendId for T {
        const EDGE: &'static str = "test";
        const ALL: &'static [T] = &[T::A, T::B, T::C];
        fn name(self) -> &'static str {
            match self {
                T::A => "a",
                T::B => "b",
                T::C => "c",
            }
        }
    }

    fn probe(b: T) -> Probe {
        match b {
            T::A => Probe::Unavailable("no a here".into()),
            _ => Probe::Available,
        }
    }

    #[test]
    fn auto_takes_the_first_available_and_says_what_it_passed_over() {
        let c = choose(&Preference::Auto, probe).unwrap();
        assert_eq!(c.backend, T::B);
        assert_eq!(
            c.reason,
            "b: first available; passed over a: unavailable (no a here)"
        );
        assert_eq!(c.candidates.len(), 3);
        assert!(!c.candidates[2].probe.is_available(), "c is not probed");
    }

    #[test]
    fn a_configured_list_is_tried_in_its_order_and_nothing_else() {
        let c = choose(&Preference::Only(vec![T::C, T::B]), probe).unwrap();
        assert_eq!(c.backend, T::C);
        let e = choose(&Preference::Only(vec![T::A]), probe).unwrap_err();
        assert_eq!(e.edge, "test");
        assert_eq!(
            e.to_string(),
            "no test backend can be used here: a: unavailable (no a here)"
        );
    }

    #[test]
    fn preferences_parse_with_names_and_auto() {
        assert_eq!(parse_preference::<T>("auto"), Ok(Preference::Auto));
        assert_eq!(
            parse_preference::<T>("c, a,c"),
            Ok(Preference::Only(vec![T::C, T::A]))
        );
        assert_eq!(
            parse_preference::<T>("x").unwrap_err(),
            "unknown test backend \"x\" (auto, a, b, c)"
        );
    }
}
