//! wlroots virtual pointer and virtual keyboard.

use super::{InjectError, InputInjector};
use crate::env::DesktopEnv;
use crate::vdisplay::CaptureTarget;

/// Opens the injector on the compositor `env` names, the pointer bound to `target`'s output.
pub fn open(
    env: &DesktopEnv,
    target: &CaptureTarget,
) -> Result<Box<dyn InputInjector>, InjectError> {
    let _ = (env, target);
    Err(InjectError::Backend(
        "the wlr injector is not built yet".into(),
    ))
}
