//! Headless outputs on sway.
