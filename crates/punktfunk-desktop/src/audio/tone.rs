//! A test tone on a simulated device clock: a different sine on each channel (440 Hz on the
//! first, 660 Hz on the second, …), produced at the sample rate from the moment the source
//! opened, the way a sound card fills its buffer.

use super::{AudioBackend, AudioError, AudioFormat, AudioSource};
use std::time::{Duration, Instant};

/// The tone source.
#[derive(Debug, Clone)]
pub struct ToneSource {
    format: AudioFormat,
    /// The device clock's zero.
    start: Instant,
    /// Frames handed out so far (the read position on the device clock).
    frame: u64,
    /// Frames skipped because the reader fell too far behind.
    overrun_frames: u64,
}

impl ToneSource {
    /// Amplitude of every tone (a quarter of full scale).
    pub const AMPLITUDE: f64 = 8192.0;
    /// How far behind the device clock a reader may fall before the backlog is dropped (a
    /// device's buffer overruns rather than growing).
    pub const MAX_BACKLOG: Duration = Duration::from_millis(200);

    /// A tone with `channels` channels at `rate` Hz whose clock starts at `start`.
    pub fn new(rate: u32, channels: u8, start: Instant) -> ToneSource {
        ToneSource {
            format: AudioFormat {
                rate: rate.max(1),
                channels: channels.max(1),
            },
            start,
            frame: 0,
            overrun_frames: 0,
        }
    }

    /// Frequency of channel `ch`, Hz.
    pub fn frequency(ch: usize) -> f64 {
        440.0 + 220.0 * ch as f64
    }

    /// Frames dropped by overruns so far.
    pub fn overrun_frames(&self) -> u64 {
        self.overrun_frames
    }

    /// When the device has produced `frames` frames.
    fn time_of(&self, frames: u64) -> Instant {
        self.start + Duration::from_nanos(frames * 1_000_000_000 / u64::from(self.format.rate))
    }

    /// Fills `out` with the samples from the current position on, without waiting.
    pub fn fill(&mut self, out: &mut [i16]) {
        let c = usize::from(self.format.channels);
        let rate = f64::from(self.format.rate);
        for frame in out.chunks_exact_mut(c) {
            let t = self.frame as f64 / rate;
            for (ch, s) in frame.iter_mut().enumerate() {
                let v = (2.0 * std::f64::consts::PI * Self::frequency(ch) * t).sin();
                *s = (v * Self::AMPLITUDE) as i16;
            }
            self.frame += 1;
        }
    }
}

impl AudioSource for ToneSource {
    fn backend(&self) -> AudioBackend {
        AudioBackend::Tone
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read(&mut self, out: &mut [i16], deadline: Instant) -> Result<bool, AudioError> {
        let c = usize::from(self.format.channels);
        if !out.len().is_multiple_of(c) {
            return Err(AudioError::Unsupported(format!(
                "a read of {} samples is not a whole number of {c}-channel frames",
                out.len()
            )));
        }
        let now = Instant::now();
        let produced = now.duration_since(self.start).as_nanos() as u64
            * u64::from(self.format.rate)
            / 1_000_000_000;
        let max_backlog = Self::MAX_BACKLOG.as_millis() as u64 * u64::from(self.format.rate) / 1000;
        let want = (out.len() / c) as u64;
        if produced > self.frame + max_backlog + want {
            // Keep only the newest `want` frames, as a device whose ring buffer wrapped.
            let skip_to = produced - want;
            self.overrun_frames += skip_to - self.frame;
            self.frame = skip_to;
        }
        let ready_at = self.time_of(self.frame + want);
        if ready_at > deadline {
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            return Ok(false);
        }
        // The simulated device: the samples exist once the clock has passed them.
        if ready_at > now {
            std::thread::sleep(ready_at - now);
        }
        self.fill(out);
        Ok(true)
    }
}

/// Strength of `freq` in one channel of interleaved samples (Goertzel), normalised so a full
/// sine of amplitude A gives about A / 2.
pub fn tone_strength(samples: &[i16], channels: usize, ch: usize, freq: f64, rate: u32) -> f64 {
    let n = samples.len() / channels.max(1);
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for i in 0..n {
        let x = f64::from(samples[i * channels + ch]);
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power.max(0.0).sqrt() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_its_frequency_per_channel_and_continues_across_reads() {
        let mut t = ToneSource::new(48_000, 2, Instant::now());
        let mut a = vec![0i16; 480 * 2];
        let mut b = vec![0i16; 480 * 2];
        t.fill(&mut a);
        t.fill(&mut b);
        let all: Vec<i16> = a.iter().chain(&b).copied().collect();
        let left440 = tone_strength(&all, 2, 0, 440.0, 48_000);
        let left660 = tone_strength(&all, 2, 0, 660.0, 48_000);
        let right660 = tone_strength(&all, 2, 1, 660.0, 48_000);
        assert!(left440 > 3000.0, "{left440}");
        assert!(left660 < left440 / 10.0, "{left660}");
        assert!(right660 > 3000.0, "{right660}");
    }

    #[test]
    fn reads_follow_the_device_clock() {
        let start = Instant::now();
        let mut t = ToneSource::new(48_000, 2, start);
        let mut buf = vec![0i16; 240 * 2]; // 5 ms
        for _ in 0..10 {
            assert!(t.read(&mut buf, start + Duration::from_secs(5)).unwrap());
        }
        // 50 ms of audio cannot be read in less than 50 ms of device time.
        assert!(start.elapsed() >= Duration::from_millis(50));
        // The next 5 ms are not there 1 ms from now.
        let now = Instant::now();
        let early = t.time_of(t.frame + 240).saturating_duration_since(now);
        if early > Duration::from_millis(2) {
            assert!(!t.read(&mut buf, now + Duration::from_millis(1)).unwrap());
        }
        assert!(t.read(&mut buf, now + Duration::from_secs(1)).is_ok());
        assert!(t.read(&mut [0i16; 3], now).is_err(), "not a whole frame");
    }

    #[test]
    fn a_reader_that_falls_far_behind_loses_the_backlog() {
        let start = Instant::now() - Duration::from_secs(1);
        let mut t = ToneSource::new(48_000, 1, start);
        let mut buf = vec![0i16; 240];
        assert!(t.read(&mut buf, Instant::now()).unwrap());
        assert!(t.overrun_frames() >= 48_000 - 240, "{}", t.overrun_frames());
    }
}
