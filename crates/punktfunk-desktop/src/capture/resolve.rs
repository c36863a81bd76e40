//! Choosing and opening the frame source.

use super::{pattern::PatternSource, CaptureBackend, CaptureError, FrameSource};
use crate::env::DesktopEnv;
use crate::probe::{
    choose, probe_each, BackendId, Candidate, Chosen, NoBackend, Preference, Probe,
};
use crate::vdisplay::CaptureTarget;
use punktfunk_core::control::Mode;
use std::time::Instant;

/// What a source is opened for.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The output to capture.
    pub target: CaptureTarget,
    /// Its mode.
    pub mode: Mode,
    /// The session's clock zero (stamps and capture times count from it).
    pub epoch: Instant,
    /// The desktop to capture from.
    pub env: DesktopEnv,
}

/// Whether `backend` can work in `env`.
pub fn probe(backend: CaptureBackend, env: &DesktopEnv) -> Probe {
    let not_built = |what: &str| {
        Probe::Unavailable(format!(
            "{what}, but this build has no {} capture yet",
            backend.name()
        ))
    };
    match backend {
        CaptureBackend::TestPattern => Probe::Available,
        // Whether the compositor offers screencopy shows only on connecting, which a probe
        // does not do: the socket existing is enough, and `open` says the rest.
        CaptureBackend::Screencopy => match crate::wayland::socket_path(env) {
            Ok(path) if path.exists() => Probe::Available,
            Ok(path) => Probe::Unavailable(format!(
                "the Wayland socket {} does not exist",
                path.display()
            )),
            Err(why) => Probe::Unavailable(why),
        },
        CaptureBackend::PipeWire => match &env.pipewire_socket {
            Some(_) => not_built("a PipeWire socket exists"),
            None => Probe::Unavailable("no PipeWire socket in the runtime directory".into()),
        },
        CaptureBackend::XShm => match &env.x_display {
            Some(_) => not_built("an X server is named"),
            None => Probe::Unavailable("no X server (DISPLAY is not set)".into()),
        },
    }
}

/// Every backend with its probe outcome.
pub fn candidates(env: &DesktopEnv) -> Vec<Candidate> {
    probe_each(|b| probe(b, env))
}

/// Chooses a backend.
///
/// In the default order the test pattern stands in only where the environment names no
/// desktop: a host whose desktop cannot be captured (a compositor that went away, a missing
/// socket) refuses streams with the reason instead of quietly streaming a test pattern. Named
/// in the configuration (`--capture testpattern`) it is always available.
pub fn resolve(
    env: &DesktopEnv,
    preference: &Preference<CaptureBackend>,
) -> Result<Chosen<CaptureBackend>, NoBackend> {
    let desktop = env
        .wayland_display
        .as_ref()
        .map(|w| format!("WAYLAND_DISPLAY={w}"))
        .or_else(|| env.x_display.as_ref().map(|x| format!("DISPLAY={x}")));
    choose(preference, |b| match (b, preference, &desktop) {
        (CaptureBackend::TestPattern, Preference::Auto, Some(d)) => Probe::Unavailable(format!(
            "a desktop is named ({d}) but cannot be captured; the test pattern stands in only \
             without a desktop or when configured (--capture testpattern)"
        )),
        _ => probe(b, env),
    })
}

/// Opens a source of the chosen backend.
pub fn open(
    backend: CaptureBackend,
    opts: &SourceOptions,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    match backend {
        CaptureBackend::TestPattern => Ok(Box::new(PatternSource::new(
            opts.mode,
            opts.epoch,
            Instant::now(),
        )?)),
        CaptureBackend::Screencopy => super::screencopy::open(opts),
        other => Err(CaptureError::Unsupported(format!(
            "no {} capture in this build",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_pattern_is_chosen_where_no_capture_applies_and_detected_ones_say_why_not() {
        let plain = resolve(&DesktopEnv::default(), &Preference::Auto).unwrap();
        assert_eq!(plain.backend, CaptureBackend::TestPattern);
        assert!(plain
            .reason
            .contains("screencopy: unavailable (no Wayland display"));
        let wayland = DesktopEnv::from_vars([
            ("WAYLAND_DISPLAY", "wayland-1"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        // A desktop that cannot be captured is an error with every reason, not a test pattern.
        let e = resolve(&wayland, &Preference::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the Wayland socket /run/user/1/wayland-1 does not exist"),
            "{e}"
        );
        assert!(
            e.contains("testpattern: unavailable (a desktop is named (WAYLAND_DISPLAY=wayland-1)"),
            "{e}"
        );
        let asked = Preference::Only(vec![CaptureBackend::TestPattern]);
        assert_eq!(
            resolve(&wayland, &asked).unwrap().backend,
            CaptureBackend::TestPattern
        );
        // A socket that exists makes screencopy the choice (connecting is for `open`).
        let dir = std::env::temp_dir().join(format!("punktfunk-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("wayland-9")).unwrap();
        let live = DesktopEnv::from_vars([
            ("WAYLAND_DISPLAY", "wayland-9".to_string()),
            ("XDG_RUNTIME_DIR", dir.display().to_string()),
        ]);
        assert_eq!(
            resolve(&live, &Preference::Auto).unwrap().backend,
            CaptureBackend::Screencopy
        );
        let _ = std::fs::remove_dir_all(&dir);
        let only = Preference::Only(vec![CaptureBackend::XShm]);
        assert!(resolve(&wayland, &only).is_err());
        let opts = SourceOptions {
            target: CaptureTarget::Desktop,
            mode: Mode::new(320, 180, 30),
            epoch: Instant::now(),
            env: DesktopEnv::default(),
        };
        assert!(open(CaptureBackend::TestPattern, &opts).is_ok());
        assert!(matches!(
            open(CaptureBackend::PipeWire, &opts),
            Err(CaptureError::Unsupported(_))
        ));
    }
}
