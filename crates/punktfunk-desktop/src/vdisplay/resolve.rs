//! Choosing the virtual-display backend.

use super::{existing::Existing, sway::Sway, DisplayBackend, DisplayError, VirtualDisplay};
use crate::env::DesktopEnv;
use crate::probe::{choose, probe_each, Candidate, Chosen, NoBackend, Preference, Probe};

/// Whether `backend` can work in `env`.
pub fn probe(backend: DisplayBackend, env: &DesktopEnv) -> Probe {
    let not_built = |what: String| {
        Probe::Unavailable(format!(
            "{what}, but this build has no virtual-display backend for it yet"
        ))
    };
    match backend {
        DisplayBackend::Existing => Probe::Available,
        DisplayBackend::Sway => match &env.swaysock {
            Some(s) if s.exists() => Probe::Available,
            Some(s) => Probe::Unavailable(format!(
                "SWAYSOCK names {}, which does not exist (sway is not running)",
                s.display()
            )),
            None => Probe::Unavailable("no sway session (SWAYSOCK is not set)".into()),
        },
        DisplayBackend::Mutter => {
            if env.desktop_is("GNOME") && env.dbus_session.is_some() {
                not_built("a GNOME session is running".into())
            } else {
                Probe::Unavailable(format!(
                    "no GNOME session (XDG_CURRENT_DESKTOP is {}, D-Bus session bus {})",
                    env.current_desktop.as_deref().unwrap_or("not set"),
                    if env.dbus_session.is_some() {
                        "set"
                    } else {
                        "not set"
                    }
                ))
            }
        }
        DisplayBackend::Xorg => match &env.x_display {
            Some(d) => not_built(format!("an X server is named (DISPLAY={d})")),
            None => Probe::Unavailable("no X server (DISPLAY is not set)".into()),
        },
    }
}

/// Every backend with its probe outcome.
pub fn candidates(env: &DesktopEnv) -> Vec<Candidate> {
    probe_each(|b| probe(b, env))
}

/// Chooses a backend.
pub fn resolve(
    env: &DesktopEnv,
    preference: &Preference<DisplayBackend>,
) -> Result<Chosen<DisplayBackend>, NoBackend> {
    choose(preference, |b| probe(b, env))
}

/// How a display is opened beyond its backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisplayOptions {
    /// For the `existing` backend: stream this output (by its compositor name) instead of the
    /// desktop as a whole.
    pub existing_output: Option<String>,
}

/// Opens the chosen backend.
pub fn open(
    backend: DisplayBackend,
    env: &DesktopEnv,
    opts: &DisplayOptions,
) -> Result<Box<dyn VirtualDisplay>, DisplayError> {
    match backend {
        DisplayBackend::Existing => Ok(Box::new(match &opts.existing_output {
            Some(name) => Existing::output(env, name),
            None => Existing::new(env),
        })),
        DisplayBackend::Sway => Ok(Box::new(Sway::new(env)?)),
        other => Err(DisplayError::Unsupported(format!(
            "no {} backend in this build",
            crate::probe::BackendId::name(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_desktop_the_existing_display_is_chosen_with_reasons_for_the_rest() {
        let env = DesktopEnv::default();
        let c = resolve(&env, &Preference::Auto).unwrap();
        assert_eq!(c.backend, DisplayBackend::Existing);
        assert_eq!(c.candidates.len(), 4);
        assert!(
            c.reason.contains("sway: unavailable (no sway session"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("xorg: unavailable (no X server"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_stale_sway_socket_is_not_a_sway_and_a_detected_xorg_without_its_backend_says_so() {
        let env = DesktopEnv::from_vars([
            ("SWAYSOCK", "/nonexistent/sway-ipc.sock"),
            ("DISPLAY", ":1"),
        ]);
        let Probe::Unavailable(r) = probe(DisplayBackend::Sway, &env) else {
            panic!("no sway runs at that socket");
        };
        assert!(r.contains("does not exist"), "{r}");
        let Probe::Unavailable(r) = probe(DisplayBackend::Xorg, &env) else {
            panic!("xorg has no backend in this build");
        };
        assert!(r.starts_with("an X server is named"), "{r}");
        let only_sway = Preference::Only(vec![DisplayBackend::Sway]);
        assert!(resolve(&env, &only_sway).is_err());
        assert!(open(DisplayBackend::Xorg, &env, &DisplayOptions::default()).is_err());
    }
}
