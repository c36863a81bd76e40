//! The desktop as it is: no output is created, the mode is what the stream is encoded at, and
//! apps get the session's own display variables.
//!
//! This is the display of the test pattern (which draws at any mode) and the fallback where no
//! compositor backend applies. [`Existing::output`] streams one output of the desktop by name
//! (`--display existing:NAME`); on sway its mode is read back and a client at another mode is
//! told so, since pictures are not scaled.

use super::{CaptureTarget, DisplayBackend, DisplayError, Output, VirtualDisplay};
use crate::env::DesktopEnv;
use punktfunk_core::control::Mode;

/// The backend.
#[derive(Debug, Clone)]
pub struct Existing {
    env: Vec<(String, String)>,
    output: Option<String>,
    swaysock: Option<std::path::PathBuf>,
}

impl Existing {
    /// The desktop `env` describes.
    pub fn new(env: &DesktopEnv) -> Existing {
        Existing {
            env: env.display_vars(),
            output: None,
            swaysock: None,
        }
    }

    /// The output called `name` of the desktop `env` describes.
    pub fn output(env: &DesktopEnv, name: &str) -> Existing {
        Existing {
            env: env.display_vars(),
            output: Some(name.to_string()),
            swaysock: env.swaysock.clone(),
        }
    }
}

impl VirtualDisplay for Existing {
    fn backend(&self) -> DisplayBackend {
        DisplayBackend::Existing
    }

    fn create(&mut self, mode: Mode) -> Result<Box<dyn Output>, DisplayError> {
        mode.validate().map_err(DisplayError::InvalidMode)?;
        if let (Some(name), Some(sock)) = (&self.output, &self.swaysock) {
            if let Some(actual) = super::sway::current_mode(sock, name)? {
                if (actual.width, actual.height) != (mode.width, mode.height) {
                    return Err(DisplayError::Unsupported(format!(
                        "the existing output {name} is {actual}, the client asked for {mode}: \
                         an existing output streams at its own size (set the client to \
                         {}x{}, or let punktfunk create an output)",
                        actual.width, actual.height
                    )));
                }
            }
        }
        Ok(Box::new(ExistingOutput {
            mode,
            env: self.env.clone(),
            output: self.output.clone(),
        }))
    }
}

/// The "output" of the desktop as it is.
#[derive(Debug)]
pub struct ExistingOutput {
    mode: Mode,
    env: Vec<(String, String)>,
    output: Option<String>,
}

impl Output for ExistingOutput {
    fn backend(&self) -> DisplayBackend {
        DisplayBackend::Existing
    }
    fn name(&self) -> &str {
        self.output.as_deref().unwrap_or("desktop")
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn set_mode(&mut self, mode: Mode) -> Result<(), DisplayError> {
        mode.validate().map_err(DisplayError::InvalidMode)?;
        self.mode = mode;
        Ok(())
    }
    fn capture_target(&self) -> CaptureTarget {
        match &self.output {
            Some(name) => CaptureTarget::WaylandOutput(name.clone()),
            None => CaptureTarget::Desktop,
        }
    }
    fn launch_env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_at_the_mode_and_hands_apps_the_session_display() {
        let env = DesktopEnv::from_vars([("WAYLAND_DISPLAY", "wayland-1")]);
        let mut d = Existing::new(&env);
        let mut o = d.create(Mode::new(1280, 720, 60)).unwrap();
        assert_eq!(o.mode(), Mode::new(1280, 720, 60));
        assert_eq!(o.capture_target(), CaptureTarget::Desktop);
        assert_eq!(
            o.launch_env(),
            [("WAYLAND_DISPLAY".to_string(), "wayland-1".to_string())]
        );
        o.set_mode(Mode::new(640, 360, 30)).unwrap();
        assert_eq!(o.mode().fps(), 30);
        assert!(matches!(
            d.create(Mode::new(0, 720, 60)),
            Err(DisplayError::InvalidMode(_))
        ));
        let named = Existing::output(&env, "DP-1").create(Mode::new(1920, 1080, 60));
        let named = named.unwrap();
        assert_eq!(named.name(), "DP-1");
        assert_eq!(
            named.capture_target(),
            CaptureTarget::WaylandOutput("DP-1".into())
        );
    }
}
