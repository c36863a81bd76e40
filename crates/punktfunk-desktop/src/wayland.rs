//! Reaching the Wayland compositor a [`DesktopEnv`] names. Each Wayland backend (screencopy,
//! the wlr injector) opens a connection of its own from here and runs its queue on its own
//! thread.

use crate::env::DesktopEnv;
use smithay_client_toolkit::reexports::client::Connection;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The compositor's socket: `WAYLAND_DISPLAY` as a path, or as a name in `XDG_RUNTIME_DIR`.
pub fn socket_path(env: &DesktopEnv) -> Result<PathBuf, String> {
    let display = env
        .wayland_display
        .as_deref()
        .ok_or("no Wayland display (WAYLAND_DISPLAY is not set)")?;
    if display.starts_with('/') {
        return Ok(PathBuf::from(display));
    }
    let dir = env.runtime_dir.as_ref().ok_or_else(|| {
        format!("WAYLAND_DISPLAY={display} is a name, but XDG_RUNTIME_DIR is not set")
    })?;
    Ok(dir.join(display))
}

/// Connects to the compositor.
pub fn connect(env: &DesktopEnv) -> Result<Connection, String> {
    let path = socket_path(env)?;
    let stream =
        UnixStream::connect(&path).map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    Connection::from_socket(stream).map_err(|e| format!("Wayland connection: {e}"))
}
