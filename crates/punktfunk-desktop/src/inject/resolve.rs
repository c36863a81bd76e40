//! Choosing and opening the input injector.

use super::{log::LogInjector, InjectCaps, InjectError, InjectorBackend, InputInjector};
use crate::env::DesktopEnv;
use crate::probe::{
    choose, probe_each, BackendId, Candidate, Chosen, NoBackend, Preference, Probe,
};
use crate::vdisplay::CaptureTarget;

/// Whether `backend` can work in `env`.
pub fn probe(backend: InjectorBackend, env: &DesktopEnv) -> Probe {
    let not_built = |what: &str| {
        Probe::Unavailable(format!(
            "{what}, but this build has no {} injector yet",
            backend.name()
        ))
    };
    match backend {
        InjectorBackend::Log => Probe::Available,
        InjectorBackend::Wlr => match (crate::wayland::socket_path(env), &env.swaysock) {
            (Err(why), _) => Probe::Unavailable(why),
            (Ok(path), _) if !path.exists() => Probe::Unavailable(format!(
                "the Wayland socket {} does not exist",
                path.display()
            )),
            (Ok(_), Some(_)) => Probe::Available,
            (Ok(_), None) => Probe::Unavailable(
                "a Wayland display is named, but no sway session (SWAYSOCK is not set)".into(),
            ),
        },
        InjectorBackend::Mutter => {
            if env.desktop_is("GNOME") && env.dbus_session.is_some() {
                not_built("a GNOME session is running")
            } else {
                Probe::Unavailable("no GNOME session with a D-Bus session bus".into())
            }
        }
        InjectorBackend::Xtest => match &env.x_display {
            Some(_) => not_built("an X server is named"),
            None => Probe::Unavailable("no X server (DISPLAY is not set)".into()),
        },
        InjectorBackend::Uinput => {
            if env.uinput {
                not_built("/dev/uinput exists")
            } else {
                Probe::Unavailable("/dev/uinput does not exist".into())
            }
        }
    }
}

/// What a backend can deliver (known before one is opened, so a protocol can advertise it).
pub fn capabilities(backend: InjectorBackend) -> InjectCaps {
    match backend {
        // Everything the core's event model has a variant for.
        InjectorBackend::Log => InjectCaps {
            keyboard: true,
            mouse: true,
            touch: true,
            pen: false,
            gamepad: true,
            gamepad_touchpad: false,
            gamepad_motion: false,
        },
        InjectorBackend::Wlr | InjectorBackend::Mutter | InjectorBackend::Xtest => InjectCaps {
            keyboard: true,
            mouse: true,
            ..Default::default()
        },
        InjectorBackend::Uinput => InjectCaps {
            gamepad: true,
            ..Default::default()
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
    preference: &Preference<InjectorBackend>,
) -> Result<Chosen<InjectorBackend>, NoBackend> {
    choose(preference, |b| probe(b, env))
}

/// Opens an injector of the chosen backend for the output `target` names (a pointer's
/// absolute positions map to that output).
pub fn open(
    backend: InjectorBackend,
    env: &DesktopEnv,
    target: &CaptureTarget,
) -> Result<Box<dyn InputInjector>, InjectError> {
    match backend {
        InjectorBackend::Log => Ok(Box::new(LogInjector::new())),
        InjectorBackend::Wlr => super::wlr::open(env, target),
        other => Err(InjectError::Backend(format!(
            "no {} injector in this build",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_injector_is_chosen_without_a_desktop_and_uinput_needs_its_device() {
        let c = resolve(&DesktopEnv::default(), &Preference::Auto).unwrap();
        assert_eq!(c.backend, InjectorBackend::Log);
        assert_eq!(c.candidates.len(), 5);
        assert!(
            c.reason
                .contains("uinput: unavailable (/dev/uinput does not exist)"),
            "{}",
            c.reason
        );
        let sway =
            DesktopEnv::from_vars([("WAYLAND_DISPLAY", "wayland-1"), ("SWAYSOCK", "/tmp/s")]);
        let Probe::Unavailable(r) = probe(InjectorBackend::Wlr, &sway) else {
            panic!("a display name without a runtime dir is no socket");
        };
        assert!(r.contains("XDG_RUNTIME_DIR is not set"), "{r}");
        // A socket that exists, with and without sway's IPC socket named.
        let dir = std::env::temp_dir().join(format!("pf-inject-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wayland-9"), b"").unwrap();
        let runtime = dir.display().to_string();
        let live = DesktopEnv::from_vars([
            ("XDG_RUNTIME_DIR", runtime.as_str()),
            ("WAYLAND_DISPLAY", "wayland-9"),
            ("SWAYSOCK", "/tmp/s"),
        ]);
        assert_eq!(probe(InjectorBackend::Wlr, &live), Probe::Available);
        let not_sway = DesktopEnv::from_vars([
            ("XDG_RUNTIME_DIR", runtime.as_str()),
            ("WAYLAND_DISPLAY", "wayland-9"),
        ]);
        let Probe::Unavailable(r) = probe(InjectorBackend::Wlr, &not_sway) else {
            panic!("no sway session");
        };
        assert!(r.contains("SWAYSOCK is not set"), "{r}");
        let gone = DesktopEnv::from_vars([
            ("XDG_RUNTIME_DIR", runtime.as_str()),
            ("WAYLAND_DISPLAY", "wayland-8"),
            ("SWAYSOCK", "/tmp/s"),
        ]);
        let Probe::Unavailable(r) = probe(InjectorBackend::Wlr, &gone) else {
            panic!("no socket");
        };
        assert!(r.contains("does not exist"), "{r}");
        std::fs::remove_dir_all(&dir).unwrap();
        let inj = open(InjectorBackend::Log, &sway, &CaptureTarget::Desktop).unwrap();
        assert_eq!(inj.capabilities(), capabilities(InjectorBackend::Log));
        assert!(open(InjectorBackend::Uinput, &sway, &CaptureTarget::Desktop).is_err());
    }
}
