//! VESA Coordinated Video Timings (CVT 1.1): the full timing of a mode from its size and
//! refresh, as an X server needs it to add a mode with RandR.
//!
//! Two blanking styles, both from the standard's formulas:
//! - [`Blanking::Standard`]: the CRT-era timing every monitor accepts;
//! - [`Blanking::Reduced`]: reduced blanking (CVT-RB), a fixed 160-pixel horizontal blank and a
//!   460 µs minimum vertical blank. Its pixel clock is about a fifth lower, which matters where a
//!   driver caps the clock (the dummy driver does), and it is meant for refresh rates that are
//!   multiples of 60 Hz.
//!
//! No crate computes these (the X server's own `cvt` tool is C), so the formulas are written
//! here, with the standard's constants named; the unit tests hold the timings the standard gives
//! for common modes.

use punktfunk_core::control::Mode;
use thiserror::Error;

/// Character cell width: horizontal timings are multiples of it.
const CELL: u32 = 8;
/// Pixel clock granularity, MHz.
const CLOCK_STEP_MHZ: f64 = 0.25;
/// Lines of vertical front porch.
const V_FRONT_PORCH: u32 = 3;
/// Least lines of vertical back porch.
const MIN_V_BACK_PORCH: u32 = 6;

// Standard blanking.
/// Least time for vertical sync and back porch, µs.
const MIN_VSYNC_BP_US: f64 = 550.0;
/// Horizontal sync width, percent of the line.
const H_SYNC_PERCENT: f64 = 8.0;
/// The blanking formula's offset C' = (C − J)·K/256 + J with C = 40, J = 20, K = 128.
const C_PRIME: f64 = 30.0;
/// The blanking formula's gradient M' = K/256·M with M = 600, K = 128.
const M_PRIME: f64 = 300.0;

// Reduced blanking.
/// Least vertical blanking time, µs.
const RB_MIN_VBLANK_US: f64 = 460.0;
/// Horizontal blank, pixels.
const RB_H_BLANK: u32 = 160;
/// Horizontal sync width, pixels.
const RB_H_SYNC: u32 = 32;

/// Which CVT blanking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blanking {
    /// CVT standard blanking.
    Standard,
    /// CVT reduced blanking (v1).
    Reduced,
}

/// A mode's full timing, the fields of an X modeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Pixel clock, kHz.
    pub clock_khz: u32,
    /// Visible width.
    pub hdisplay: u32,
    /// First pixel of horizontal sync.
    pub hsync_start: u32,
    /// First pixel after horizontal sync.
    pub hsync_end: u32,
    /// Pixels per line.
    pub htotal: u32,
    /// Visible height.
    pub vdisplay: u32,
    /// First line of vertical sync.
    pub vsync_start: u32,
    /// First line after vertical sync.
    pub vsync_end: u32,
    /// Lines per frame.
    pub vtotal: u32,
    /// Horizontal sync polarity (CVT: negative for standard, positive for reduced blanking).
    pub hsync_positive: bool,
    /// Vertical sync polarity (CVT: positive for standard, negative for reduced blanking).
    pub vsync_positive: bool,
}

impl Timing {
    /// The refresh this timing really gives (the clock is rounded to its step), mHz.
    pub fn refresh_mhz(&self) -> u32 {
        let pixels = u64::from(self.htotal) * u64::from(self.vtotal);
        (u64::from(self.clock_khz) * 1_000_000 / pixels.max(1)) as u32
    }

    /// The same geometry with the pixel clock set (to the kHz) for exactly `refresh_mhz`:
    /// CVT rounds the clock to 0.25 MHz, a hardware step that leaves small modes a few percent
    /// off their refresh, while RandR takes any clock. Use it for a virtual output, which must
    /// run at the client's rate.
    pub fn at_exact_refresh(self, refresh_mhz: u32) -> Timing {
        let pixels = u64::from(self.htotal) * u64::from(self.vtotal);
        let khz = (u64::from(refresh_mhz) * pixels + 500_000) / 1_000_000;
        Timing {
            clock_khz: u32::try_from(khz).unwrap_or(u32::MAX),
            ..self
        }
    }

    /// The X modeline form: `"1920x1080_60.00" 173.00 1920 2048 2248 2576 1080 1083 1088 1120
    /// -hsync +vsync`.
    pub fn modeline(&self) -> String {
        let sign = |p| if p { '+' } else { '-' };
        format!(
            "\"{}x{}_{:.2}\" {:.2} {} {} {} {} {} {} {} {} {}hsync {}vsync",
            self.hdisplay,
            self.vdisplay,
            f64::from(self.refresh_mhz()) / 1000.0,
            f64::from(self.clock_khz) / 1000.0,
            self.hdisplay,
            self.hsync_start,
            self.hsync_end,
            self.htotal,
            self.vdisplay,
            self.vsync_start,
            self.vsync_end,
            self.vtotal,
            sign(self.hsync_positive),
            sign(self.vsync_positive)
        )
    }
}

/// Why no timing exists for a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CvtError {
    /// A zero size, a size X cannot hold (16 bits), or a width that is not a whole number of
    /// character cells.
    #[error("{0}x{1} has no CVT timing (sizes from 8x2 to 32760x32767, width a multiple of 8)")]
    Size(u32, u32),
    /// A refresh rate outside 1–1000 Hz.
    #[error("{0} mHz is outside 1..=1000 Hz")]
    Refresh(u32),
}

/// Lines of vertical sync, by aspect ratio (the standard encodes the aspect ratio in it).
fn vsync_lines(w: u32, h: u32) -> u32 {
    let is = |num: u32, den: u32| h.is_multiple_of(den) && h / den * num == w;
    if is(4, 3) {
        4
    } else if is(16, 9) {
        5
    } else if is(16, 10) {
        6
    } else if is(5, 4) || is(15, 9) {
        7
    } else {
        10
    }
}

/// The CVT timing of `mode` with `blanking`.
pub fn timing(mode: Mode, blanking: Blanking) -> Result<Timing, CvtError> {
    let (w, h) = (mode.width, mode.height);
    if w < CELL || h < 2 || w > 32_760 || h > 32_767 || !w.is_multiple_of(CELL) {
        return Err(CvtError::Size(w, h));
    }
    if !(1_000..=1_000_000).contains(&mode.refresh_mhz) {
        return Err(CvtError::Refresh(mode.refresh_mhz));
    }
    let rate = f64::from(mode.refresh_mhz) / 1000.0;
    let frame_us = 1e6 / rate;
    let vsync = vsync_lines(w, h);
    let (htotal, hblank, hsync, vtotal, clock_mhz) = match blanking {
        Blanking::Standard => {
            let h_period_us = (frame_us - MIN_VSYNC_BP_US) / f64::from(h + V_FRONT_PORCH);
            let sync_and_back =
                ((MIN_VSYNC_BP_US / h_period_us).floor() as u32 + 1).max(vsync + MIN_V_BACK_PORCH);
            let vtotal = h + sync_and_back + V_FRONT_PORCH;
            let duty = (C_PRIME - M_PRIME * h_period_us / 1000.0).max(20.0);
            let cells = (f64::from(w) * duty / (100.0 - duty) / f64::from(2 * CELL)).floor();
            let hblank = cells as u32 * 2 * CELL;
            let htotal = w + hblank;
            let clock = (f64::from(htotal) / h_period_us / CLOCK_STEP_MHZ).floor() * CLOCK_STEP_MHZ;
            let hsync = (H_SYNC_PERCENT / 100.0 * f64::from(htotal) / f64::from(CELL)).floor()
                as u32
                * CELL;
            (htotal, hblank, hsync, vtotal, clock)
        }
        Blanking::Reduced => {
            let h_period_us = (frame_us - RB_MIN_VBLANK_US) / f64::from(h);
            let vbi = ((RB_MIN_VBLANK_US / h_period_us).floor() as u32 + 1)
                .max(V_FRONT_PORCH + vsync + MIN_V_BACK_PORCH);
            let vtotal = h + vbi;
            let htotal = w + RB_H_BLANK;
            let clock = (rate * f64::from(vtotal) * f64::from(htotal) / 1e6 / CLOCK_STEP_MHZ)
                .floor()
                * CLOCK_STEP_MHZ;
            (htotal, RB_H_BLANK, RB_H_SYNC, vtotal, clock)
        }
    };
    if h_period_invalid(clock_mhz) {
        return Err(CvtError::Refresh(mode.refresh_mhz));
    }
    let hsync_end = w + hblank / 2;
    let vsync_start = h + V_FRONT_PORCH;
    Ok(Timing {
        clock_khz: (clock_mhz * 1000.0).round() as u32,
        hdisplay: w,
        hsync_start: hsync_end - hsync,
        hsync_end,
        htotal,
        vdisplay: h,
        vsync_start,
        vsync_end: vsync_start + vsync,
        vtotal,
        hsync_positive: blanking == Blanking::Reduced,
        vsync_positive: blanking == Blanking::Standard,
    })
}

/// A clock the formulas cannot give for a real mode (a refresh so high the frame is shorter
/// than its own blanking).
fn h_period_invalid(clock_mhz: f64) -> bool {
    !clock_mhz.is_finite() || clock_mhz <= 0.0 || clock_mhz > 4_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(w: u32, h: u32, hz: u32, b: Blanking) -> String {
        timing(Mode::new(w, h, hz), b).unwrap().modeline()
    }

    #[test]
    fn standard_blanking_gives_the_timings_of_the_standard() {
        assert_eq!(
            line(1920, 1080, 60, Blanking::Standard),
            "\"1920x1080_59.96\" 173.00 1920 2048 2248 2576 1080 1083 1088 1120 -hsync +vsync"
        );
        assert_eq!(
            line(1280, 720, 60, Blanking::Standard),
            "\"1280x720_59.85\" 74.50 1280 1344 1472 1664 720 723 728 748 -hsync +vsync"
        );
    }

    #[test]
    fn reduced_blanking_gives_the_timings_of_the_standard() {
        assert_eq!(
            line(1920, 1080, 60, Blanking::Reduced),
            "\"1920x1080_59.93\" 138.50 1920 1968 2000 2080 1080 1083 1088 1111 +hsync -vsync"
        );
    }

    #[test]
    fn the_vertical_sync_width_encodes_the_aspect_ratio() {
        let vsync = |w, h| {
            let t = timing(Mode::new(w, h, 60), Blanking::Standard).unwrap();
            t.vsync_end - t.vsync_start
        };
        assert_eq!(vsync(1024, 768), 4);
        assert_eq!(vsync(2560, 1440), 5);
        assert_eq!(vsync(1920, 1200), 6);
        assert_eq!(vsync(1280, 1024), 7);
        assert_eq!(vsync(2560, 1080), 10);
    }

    #[test]
    fn every_timing_is_ordered_and_near_the_asked_refresh() {
        for (w, h) in [
            (640, 360),
            (1280, 720),
            (1920, 1080),
            (2560, 1440),
            (3840, 2160),
            (1366, 768),
        ] {
            let w = w / CELL * CELL;
            for hz in [30, 60, 90, 120, 144, 240] {
                for b in [Blanking::Standard, Blanking::Reduced] {
                    let mode = Mode::new(w, h, hz);
                    let cvt = timing(mode, b).unwrap();
                    let t = cvt.at_exact_refresh(mode.refresh_mhz);
                    assert_eq!((t.htotal, t.vtotal), (cvt.htotal, cvt.vtotal));
                    assert!(
                        t.hdisplay < t.hsync_start
                            && t.hsync_start < t.hsync_end
                            && t.hsync_end <= t.htotal
                            && t.vdisplay < t.vsync_start
                            && t.vsync_start < t.vsync_end
                            && t.vsync_end < t.vtotal,
                        "{w}x{h}@{hz} {b:?}: {t:?}"
                    );
                    let off = f64::from(t.refresh_mhz()) / 1000.0 / f64::from(hz) - 1.0;
                    assert!(off.abs() < 0.001, "{w}x{h}@{hz} {b:?}: {}", t.modeline());
                }
            }
        }
        // Reduced blanking needs the lower clock.
        let s = timing(Mode::new(3840, 2160, 120), Blanking::Standard).unwrap();
        let r = timing(Mode::new(3840, 2160, 120), Blanking::Reduced).unwrap();
        assert!(r.clock_khz < s.clock_khz * 9 / 10, "{s:?} {r:?}");
    }

    #[test]
    fn impossible_modes_are_errors_not_panics() {
        for (w, h, mhz) in [
            (0, 1080, 60_000),
            (1920, 0, 60_000),
            (1921, 1080, 60_000),
            (40_000, 1080, 60_000),
            (1920, 1080, 0),
            (1920, 1080, 2_000_000),
        ] {
            let mode = Mode {
                width: w,
                height: h,
                refresh_mhz: mhz,
            };
            for b in [Blanking::Standard, Blanking::Reduced] {
                assert!(timing(mode, b).is_err(), "{w}x{h}@{mhz}");
            }
        }
    }
}
