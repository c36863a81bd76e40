//! The desktop environment the host runs in, read once at start.
//!
//! Nothing else in the host reads these variables: backends probe and connect from a
//! [`DesktopEnv`], so a test can hand one in and the log says once what was found.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// What the environment says about the desktop session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesktopEnv {
    /// `XDG_CURRENT_DESKTOP` (e.g. `sway`, `GNOME`), as given.
    pub current_desktop: Option<String>,
    /// `XDG_SESSION_TYPE` (`wayland`, `x11`, `tty`).
    pub session_type: Option<String>,
    /// `XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    /// `WAYLAND_DISPLAY` (a socket name in the runtime dir, or a path).
    pub wayland_display: Option<String>,
    /// `SWAYSOCK`: sway's IPC socket.
    pub swaysock: Option<PathBuf>,
    /// `DISPLAY`: an X server.
    pub x_display: Option<String>,
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub dbus_session: Option<String>,
    /// The PipeWire socket, when it exists (`PIPEWIRE_REMOTE` or `pipewire-0` in the runtime dir).
    pub pipewire_socket: Option<PathBuf>,
    /// Whether `/dev/uinput` exists.
    pub uinput: bool,
}

impl DesktopEnv {
    /// Reads the process environment and the two files it points at.
    pub fn from_env() -> DesktopEnv {
        let mut env = DesktopEnv::from_vars(std::env::vars());
        env.uinput = Path::new("/dev/uinput").exists();
        env.pipewire_socket = env.pipewire_socket.filter(|p| p.exists());
        env
    }

    /// Builds the environment from variables alone (files are not checked: the PipeWire socket
    /// is taken as named and `/dev/uinput` as absent). For tests and for [`Self::from_env`].
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> DesktopEnv {
        let mut e = DesktopEnv::default();
        let mut pipewire_remote = None;
        for (k, v) in vars {
            let v: String = v.into();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "XDG_CURRENT_DESKTOP" => e.current_desktop = Some(v),
                "XDG_SESSION_TYPE" => e.session_type = Some(v),
                "XDG_RUNTIME_DIR" => e.runtime_dir = Some(v.into()),
                "WAYLAND_DISPLAY" => e.wayland_display = Some(v),
                "SWAYSOCK" => e.swaysock = Some(v.into()),
                "DISPLAY" => e.x_display = Some(v),
                "DBUS_SESSION_BUS_ADDRESS" => e.dbus_session = Some(v),
                "PIPEWIRE_REMOTE" => pipewire_remote = Some(v),
                _ => {}
            }
        }
        e.pipewire_socket = match pipewire_remote {
            Some(r) if r.starts_with('/') => Some(r.into()),
            Some(r) => e.runtime_dir.as_ref().map(|d| d.join(r)),
            None => e.runtime_dir.as_ref().map(|d| d.join("pipewire-0")),
        };
        e
    }

    /// Whether `XDG_CURRENT_DESKTOP` names `desktop` (it is a colon-separated list).
    pub fn desktop_is(&self, desktop: &str) -> bool {
        self.current_desktop
            .as_deref()
            .is_some_and(|d| d.split(':').any(|part| part.eq_ignore_ascii_case(desktop)))
    }

    /// The variables an app needs to appear on this desktop, as found.
    pub fn display_vars(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut push = |k: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push((k.to_string(), val));
            }
        };
        push("WAYLAND_DISPLAY", self.wayland_display.clone());
        push("DISPLAY", self.x_display.clone());
        push(
            "XDG_RUNTIME_DIR",
            self.runtime_dir.as_ref().map(|p| p.display().to_string()),
        );
        push("DBUS_SESSION_BUS_ADDRESS", self.dbus_session.clone());
        v
    }

    /// One line for the log: what desktop was found.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.current_desktop {
            parts.push(format!("desktop {d}"));
        }
        if let Some(w) = &self.wayland_display {
            parts.push(format!("Wayland {w}"));
        }
        if self.swaysock.is_some() {
            parts.push("sway IPC".into());
        }
        if let Some(x) = &self.x_display {
            parts.push(format!("X {x}"));
        }
        if self.dbus_session.is_some() {
            parts.push("D-Bus session".into());
        }
        if self.pipewire_socket.is_some() {
            parts.push("PipeWire".into());
        }
        if self.uinput {
            parts.push("uinput".into());
        }
        if parts.is_empty() {
            "no desktop session (no Wayland, X, D-Bus or PipeWire in the environment)".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_variables_it_knows_and_ignores_empty_ones() {
        let e = DesktopEnv::from_vars([
            ("XDG_CURRENT_DESKTOP", "ubuntu:GNOME"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("WAYLAND_DISPLAY", "wayland-0"),
            ("DISPLAY", ""),
            ("HOME", "/home/x"),
        ]);
        assert!(e.desktop_is("gnome"));
        assert!(!e.desktop_is("sway"));
        assert_eq!(e.x_display, None);
        assert_eq!(
            e.pipewire_socket.as_deref(),
            Some(Path::new("/run/user/1000/pipewire-0"))
        );
        assert_eq!(
            e.display_vars(),
            [
                ("WAYLAND_DISPLAY".to_string(), "wayland-0".to_string()),
                ("XDG_RUNTIME_DIR".to_string(), "/run/user/1000".to_string()),
            ]
        );
        let remote = DesktopEnv::from_vars([("PIPEWIRE_REMOTE", "/tmp/pw")]);
        assert_eq!(
            remote.pipewire_socket.as_deref(),
            Some(Path::new("/tmp/pw"))
        );
        assert!(DesktopEnv::default()
            .summary()
            .starts_with("no desktop session"));
    }
}
