//! Headless outputs on sway, over its IPC socket.
//!
//! Each stream gets an output of its own at exactly the client's mode:
//!
//! 1. `create_output` adds a headless output; the new one is found by comparing the output list
//!    before and after (sway names them `HEADLESS-N` and does not report which it made);
//! 2. `output NAME mode --custom WxH@R.RRRHz` gives it the client's mode, `output NAME pos X 0`
//!    places it right of every other active output, and the mode is read back to confirm sway
//!    took it;
//! 3. the output is focused, so the workspace sway puts on a new output is where apps
//!    launched for the stream appear.
//!
//! When the stream ends the output goes away: `output NAME unplug` on sway 1.8 and later. sway
//! 1.7 cannot remove a headless output, and its wlroots (0.15) cannot disable one either: the
//! commit fails, the output stays on, and from then on refuses every mode change. So there the
//! output is parked instead: left on at [`PARK_MODE`], a small mode at 1 Hz that costs next to
//! nothing to render, and the next stream on the same sway takes it back at its own mode.
//! However many sessions come and go, one output at most is left over. The parked list is kept per IPC socket for the life of the process, and a parked
//! name is used again only while sway still lists it as a disabled output (a restarted sway
//! forgets the old names).
//!
//! Every operation opens a fresh IPC connection (with a timeout, so a hung compositor cannot
//! hang a session), so a sway that was restarted between streams is reached again.

use super::{CaptureTarget, DisplayBackend, DisplayError, Output, VirtualDisplay};
use crate::env::DesktopEnv;
use punktfunk_core::control::Mode;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How long one IPC exchange may take.
const IPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The mode a parked output that sway could not disable is left at.
pub const PARK_MODE: Mode = Mode::new(640, 480, 1);

/// Outputs parked at the end of a stream on a sway without `unplug`, per IPC socket.
static PARKED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// The sway backend.
#[derive(Debug, Clone)]
pub struct Sway {
    swaysock: PathBuf,
    launch_env: Vec<(String, String)>,
}

impl Sway {
    /// The sway `env` names (its `SWAYSOCK`).
    pub fn new(env: &DesktopEnv) -> Result<Sway, DisplayError> {
        let swaysock = env.swaysock.clone().ok_or_else(|| {
            DisplayError::Unsupported("no sway session (SWAYSOCK is not set)".into())
        })?;
        let mut launch_env = env.display_vars();
        launch_env.push(("SWAYSOCK".into(), swaysock.display().to_string()));
        Ok(Sway {
            swaysock,
            launch_env,
        })
    }
}

/// One IPC connection.
struct Ipc(swayipc::Connection);

impl Ipc {
    fn connect(sock: &Path) -> Result<Ipc, DisplayError> {
        let s = UnixStream::connect(sock).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                DisplayError::Disconnected
            }
            _ => DisplayError::Backend(format!("sway IPC {}: {e}", sock.display())),
        })?;
        s.set_read_timeout(Some(IPC_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(IPC_TIMEOUT)))
            .map_err(|e| DisplayError::Backend(format!("sway IPC: {e}")))?;
        Ok(Ipc(swayipc::Connection::from(s)))
    }

    /// Runs one command, turning sway's refusal into an error that quotes it.
    fn run(&mut self, cmd: &str) -> Result<(), DisplayError> {
        let replies = self.0.run_command(cmd).map_err(ipc_error)?;
        for r in replies {
            if let Err(e) = r {
                return Err(DisplayError::Backend(format!("sway refused `{cmd}`: {e}")));
            }
        }
        Ok(())
    }

    fn outputs(&mut self) -> Result<Vec<swayipc::Output>, DisplayError> {
        self.0.get_outputs().map_err(ipc_error)
    }

    /// Whether this sway has `output NAME unplug` (1.8 and later).
    fn can_unplug(&mut self) -> Result<bool, DisplayError> {
        let v = self.0.get_version().map_err(ipc_error)?;
        Ok((v.major, v.minor) >= (1, 8))
    }
}

fn ipc_error(e: swayipc::Error) -> DisplayError {
    match e {
        swayipc::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            DisplayError::Disconnected
        }
        other => DisplayError::Backend(format!("sway IPC: {other}")),
    }
}

/// sway's custom-mode syntax, with the refresh to the millihertz.
fn mode_arg(mode: Mode) -> String {
    format!(
        "{}x{}@{}.{:03}Hz",
        mode.width,
        mode.height,
        mode.refresh_mhz / 1000,
        mode.refresh_mhz % 1000
    )
}

/// Sets `name`'s mode and checks sway took it.
fn apply_mode(ipc: &mut Ipc, name: &str, mode: Mode) -> Result<(), DisplayError> {
    ipc.run(&format!("output {name} mode --custom {}", mode_arg(mode)))?;
    let outputs = ipc.outputs()?;
    let o = outputs
        .iter()
        .find(|o| o.name == name)
        .ok_or(DisplayError::Disconnected)?;
    let Some(m) = &o.current_mode else {
        return Err(DisplayError::Backend(format!(
            "sway reports no mode for {name} after setting {mode}"
        )));
    };
    // sway keeps the refresh as given; allow a millihertz of rounding.
    let refresh_ok = (i64::from(m.refresh) - i64::from(mode.refresh_mhz)).abs() <= 1;
    if m.width != mode.width as i32 || m.height != mode.height as i32 || !refresh_ok {
        return Err(DisplayError::Unsupported(format!(
            "sway set {name} to {}x{}@{}mHz instead of {mode}",
            m.width, m.height, m.refresh
        )));
    }
    Ok(())
}

/// Puts `name` right of every other active output.
fn place(ipc: &mut Ipc, name: &str) -> Result<(), DisplayError> {
    let right = ipc
        .outputs()?
        .iter()
        .filter(|o| o.active && o.name != name)
        .map(|o| o.rect.x + o.rect.width)
        .max()
        .unwrap_or(0);
    ipc.run(&format!("output {name} pos {right} 0"))
}

impl VirtualDisplay for Sway {
    fn backend(&self) -> DisplayBackend {
        DisplayBackend::Sway
    }

    fn create(&mut self, mode: Mode) -> Result<Box<dyn Output>, DisplayError> {
        mode.validate().map_err(DisplayError::InvalidMode)?;
        let mut ipc = Ipc::connect(&self.swaysock)?;
        let unplug = ipc.can_unplug()?;
        let before = ipc.outputs()?;
        // A parked output of this sway, still listed and disabled, comes first.
        let parked = {
            let mut p = PARKED.lock().unwrap_or_else(|e| e.into_inner());
            let sock = &self.swaysock;
            p.retain(|(s, n)| s != sock || before.iter().any(|o| &o.name == n));
            p.iter().position(|(s, _)| s == sock).map(|i| p.remove(i).1)
        };
        let (name, reused) = match parked {
            Some(name) => {
                if before.iter().any(|o| o.name == name && !o.active) {
                    ipc.run(&format!("output {name} enable"))?;
                }
                (name, true)
            }
            None => {
                ipc.run("create_output")?;
                let after = ipc.outputs()?;
                let mut new: Vec<String> = after
                    .into_iter()
                    .map(|o| o.name)
                    .filter(|n| !before.iter().any(|b| &b.name == n))
                    .collect();
                if new.len() != 1 {
                    return Err(DisplayError::Backend(format!(
                        "create_output added {} outputs ({}), expected one",
                        new.len(),
                        new.join(", ")
                    )));
                }
                (new.remove(0), false)
            }
        };
        let out = SwayOutput {
            name,
            mode,
            swaysock: self.swaysock.clone(),
            unplug,
            launch_env: self.launch_env.clone(),
        };
        // From here on, dropping `out` removes (or parks) the output on every error path.
        apply_mode(&mut ipc, &out.name, mode)?;
        place(&mut ipc, &out.name)?;
        ipc.run(&format!("focus output {}", out.name))?;
        let workspace = ipc
            .outputs()?
            .into_iter()
            .find(|o| o.name == out.name)
            .and_then(|o| o.current_workspace);
        tracing::info!(
            output = %out.name,
            %mode,
            reused,
            workspace = workspace.as_deref().unwrap_or("none"),
            removal = if unplug { "unplug" } else { "park (sway < 1.8 cannot remove it)" },
            "sway output ready"
        );
        Ok(Box::new(out))
    }
}

/// An output made for one stream.
#[derive(Debug)]
pub struct SwayOutput {
    name: String,
    mode: Mode,
    swaysock: PathBuf,
    unplug: bool,
    launch_env: Vec<(String, String)>,
}

impl SwayOutput {
    fn remove(&mut self) -> Result<(), DisplayError> {
        let mut ipc = Ipc::connect(&self.swaysock)?;
        if self.unplug {
            return ipc.run(&format!("output {} unplug", self.name));
        }
        // Parked whatever happens below: the next stream takes it either way.
        PARKED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.swaysock.clone(), self.name.clone()));
        apply_mode(&mut ipc, &self.name, PARK_MODE)
    }
}

impl Drop for SwayOutput {
    fn drop(&mut self) {
        match self.remove() {
            Ok(()) => tracing::info!(
                output = %self.name,
                how = if self.unplug { "unplugged" } else { "parked for the next stream (sway < 1.8 cannot remove it)" },
                "sway output removed"
            ),
            Err(DisplayError::Disconnected) => {
                tracing::info!(output = %self.name, "sway is gone; its output went with it")
            }
            Err(e) => {
                tracing::warn!(output = %self.name, error = %e, "removing the sway output failed")
            }
        }
    }
}

impl Output for SwayOutput {
    fn backend(&self) -> DisplayBackend {
        DisplayBackend::Sway
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn set_mode(&mut self, mode: Mode) -> Result<(), DisplayError> {
        mode.validate().map_err(DisplayError::InvalidMode)?;
        let mut ipc = Ipc::connect(&self.swaysock)?;
        apply_mode(&mut ipc, &self.name, mode)?;
        // A wider or narrower output moves the ones right of it; keep ours on the right.
        place(&mut ipc, &self.name)?;
        tracing::info!(output = %self.name, from = %self.mode, to = %mode, "sway output mode changed");
        self.mode = mode;
        Ok(())
    }
    fn capture_target(&self) -> CaptureTarget {
        CaptureTarget::WaylandOutput(self.name.clone())
    }
    fn launch_env(&self) -> Vec<(String, String)> {
        self.launch_env.clone()
    }
}

/// The mode of the output `name` as sway reports it, for streaming an existing output.
pub fn current_mode(swaysock: &Path, name: &str) -> Result<Option<Mode>, DisplayError> {
    let mut ipc = Ipc::connect(swaysock)?;
    let outputs = ipc.outputs()?;
    let Some(o) = outputs.iter().find(|o| o.name == name) else {
        return Err(DisplayError::Unsupported(format!(
            "sway has no output {name} (it has {})",
            outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    Ok(o.current_mode.as_ref().map(|m| Mode {
        width: m.width.max(0) as u32,
        height: m.height.max(0) as u32,
        refresh_mhz: m.refresh.max(0) as u32,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_written_to_the_millihertz() {
        assert_eq!(mode_arg(Mode::new(1920, 1080, 120)), "1920x1080@120.000Hz");
        let ntsc = Mode {
            width: 1280,
            height: 720,
            refresh_mhz: 59_940,
        };
        assert_eq!(mode_arg(ntsc), "1280x720@59.940Hz");
    }

    #[test]
    fn without_sway_the_backend_does_not_open_and_a_dead_socket_is_disconnected() {
        assert!(matches!(
            Sway::new(&DesktopEnv::default()),
            Err(DisplayError::Unsupported(_))
        ));
        let env = DesktopEnv::from_vars([("SWAYSOCK", "/nonexistent/sway-ipc.sock")]);
        let mut s = Sway::new(&env).unwrap();
        assert_eq!(
            s.create(Mode::new(1280, 720, 60)).err(),
            Some(DisplayError::Disconnected)
        );
    }
}
