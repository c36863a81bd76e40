//! wlr-screencopy capture of one Wayland output.

use super::{CaptureError, FrameSource, SourceOptions};

/// Opens a screencopy source for `opts.target` on the compositor `opts.env` names.
pub fn open(opts: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    let _ = opts;
    Err(CaptureError::Unsupported(
        "screencopy is not built yet".into(),
    ))
}
