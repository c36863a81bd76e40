//! The test pattern as a frame source: moving content with the frame stamp (frame number and
//! capture time), produced on a clock at the mode's refresh rate the way a compositor presents
//! frames, in BGRx like a compositor's buffers.

use super::{CaptureBackend, CaptureError, Captured, FrameSource};
use punktfunk_core::control::Mode;
use punktfunk_media::{draw_stamp_bgra, BgraFrame, Stamp, TestPattern};
use std::time::{Duration, Instant};

/// The test-pattern source.
pub struct PatternSource {
    pattern: TestPattern,
    frame: BgraFrame,
    epoch: Instant,
    interval: Duration,
    /// When the next frame is due.
    next: Instant,
    index: u32,
}

impl PatternSource {
    /// A source at `mode` whose stamps count capture time from `epoch`; the first frame is due
    /// at once.
    pub fn new(mode: Mode, epoch: Instant, now: Instant) -> Result<PatternSource, CaptureError> {
        mode.validate()
            .map_err(|e| CaptureError::Unsupported(format!("mode {mode}: {e}")))?;
        Ok(PatternSource {
            pattern: TestPattern::new(mode.width, mode.height),
            frame: BgraFrame::new(mode.width, mode.height),
            epoch,
            interval: Duration::from_secs_f64(1000.0 / f64::from(mode.refresh_mhz)),
            next: now,
            index: 0,
        })
    }

    /// The frame number the next picture carries.
    pub fn next_index(&self) -> u32 {
        self.index
    }
}

impl FrameSource for PatternSource {
    fn backend(&self) -> CaptureBackend {
        CaptureBackend::TestPattern
    }

    fn next_frame(&mut self, deadline: Instant) -> Result<Option<Captured<'_>>, CaptureError> {
        // The source's own clock: this sleep stands in for a compositor's vblank.
        let due = self.next;
        if due > deadline {
            sleep_until(deadline);
            return Ok(None);
        }
        sleep_until(due);
        let now = Instant::now();
        // A consumer that fell behind does not get a burst of old frames: like a compositor,
        // the clock moves on and the frames in between are never drawn.
        self.next = if now.duration_since(due) > self.interval * 2 {
            now + self.interval
        } else {
            due + self.interval
        };
        let t = Instant::now();
        self.pattern.render(self.index, 0, &mut self.frame);
        let captured_at = Instant::now();
        let cost_us = captured_at.duration_since(t).as_micros() as u32;
        draw_stamp_bgra(
            &mut self.frame,
            Stamp {
                frame: self.index,
                capture_us: captured_at.duration_since(self.epoch).as_micros() as u64,
            },
        );
        self.index = self.index.wrapping_add(1);
        Ok(Some(Captured {
            frame: self.frame.as_frame_ref(),
            captured_at,
            cost_us,
        }))
    }

    fn set_mode(&mut self, mode: Mode) -> Result<(), CaptureError> {
        mode.validate()
            .map_err(|e| CaptureError::Unsupported(format!("mode {mode}: {e}")))?;
        self.pattern = TestPattern::new(mode.width, mode.height);
        self.frame = BgraFrame::new(mode.width, mode.height);
        self.interval = Duration::from_secs_f64(1000.0 / f64::from(mode.refresh_mhz));
        Ok(())
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_on_the_sources_clock_with_consecutive_stamps() {
        let epoch = Instant::now();
        let mode = Mode::new(320, 180, 100);
        let mut src = PatternSource::new(mode, epoch, epoch).unwrap();
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..5 {
            let c = src
                .next_frame(start + Duration::from_secs(1))
                .unwrap()
                .expect("a frame is due within a second");
            assert_eq!(
                (c.frame.width, c.frame.height, c.frame.stride),
                (320, 180, 1280)
            );
            let mut yuv = punktfunk_media::YuvFrame::default();
            punktfunk_media::Converter::new(320, 180)
                .unwrap()
                .convert_ref(&c.frame, &mut yuv)
                .unwrap();
            stamps.push(punktfunk_media::read_stamp_luma(yuv.y(), 320, 320, 180).map(|s| s.frame));
        }
        // Five frames at 100 Hz take at least four intervals.
        assert!(epoch.elapsed() >= Duration::from_millis(40));
        assert_eq!(stamps, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
    }

    #[test]
    fn a_mode_change_keeps_the_frame_numbering() {
        let epoch = Instant::now();
        let mut src = PatternSource::new(Mode::new(320, 180, 60), epoch, epoch).unwrap();
        let far = epoch + Duration::from_secs(5);
        src.next_frame(far).unwrap().unwrap();
        src.set_mode(Mode::new(640, 360, 30)).unwrap();
        let c = src.next_frame(far).unwrap().unwrap();
        assert_eq!((c.frame.width, c.frame.height), (640, 360));
        assert_eq!(src.next_index(), 2);
        assert!(src.set_mode(Mode::new(1, 1, 30)).is_err());
    }

    #[test]
    fn nothing_before_the_deadline_is_none_and_the_frame_still_comes_later() {
        let epoch = Instant::now();
        let mut src = PatternSource::new(Mode::new(128, 64, 10), epoch, epoch).unwrap();
        assert!(src
            .next_frame(Instant::now() + Duration::from_secs(1))
            .unwrap()
            .is_some());
        // The next frame is 100 ms away: a 10 ms deadline passes first.
        let t = Instant::now();
        assert!(src
            .next_frame(t + Duration::from_millis(10))
            .unwrap()
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(10));
        assert_eq!(src.next_index(), 1);
        assert!(src
            .next_frame(t + Duration::from_secs(1))
            .unwrap()
            .is_some());
    }
}
