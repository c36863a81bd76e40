//! Audio sources: where the host's sound comes from.
//!
//! Desktop capture (PipeWire) plugs in behind [`AudioSource`]. Until it lands, [`ToneSource`]
//! produces a known signal — a different sine on each channel — so a client (or a test) can
//! check that what it decodes is what the host sent.

/// Sample rate of every source, Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Produces interleaved 16-bit PCM at [`SAMPLE_RATE`].
pub trait AudioSource: Send {
    /// Backend name for logs.
    fn name(&self) -> &str;
    /// Channels per frame.
    fn channels(&self) -> usize;
    /// Fills `out` with the next `out.len() / channels` frames.
    fn read(&mut self, out: &mut [i16]);
}

/// A sine per channel: 440 Hz on the first, 660 Hz on the second, 880 Hz on the third, …
#[derive(Debug, Clone)]
pub struct ToneSource {
    channels: usize,
    frame: u64,
}

impl ToneSource {
    /// Amplitude of every tone (a quarter of full scale).
    pub const AMPLITUDE: f64 = 8192.0;

    /// A tone source with `channels` channels.
    pub fn new(channels: usize) -> ToneSource {
        ToneSource {
            channels: channels.max(1),
            frame: 0,
        }
    }

    /// Frequency of channel `ch`, Hz.
    pub fn frequency(ch: usize) -> f64 {
        440.0 + 220.0 * ch as f64
    }
}

impl AudioSource for ToneSource {
    fn name(&self) -> &str {
        "tone"
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn read(&mut self, out: &mut [i16]) {
        for frame in out.chunks_exact_mut(self.channels) {
            let t = self.frame as f64 / f64::from(SAMPLE_RATE);
            for (ch, s) in frame.iter_mut().enumerate() {
                let v = (2.0 * std::f64::consts::PI * Self::frequency(ch) * t).sin();
                *s = (v * Self::AMPLITUDE) as i16;
            }
            self.frame += 1;
        }
    }
}

/// Strength of `freq` in one channel of interleaved samples (Goertzel), normalised so a full
/// sine of amplitude A gives about A / 2.
pub fn tone_strength(samples: &[i16], channels: usize, ch: usize, freq: f64) -> f64 {
    let n = samples.len() / channels.max(1);
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
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
        let mut t = ToneSource::new(2);
        let mut a = vec![0i16; 480 * 2];
        let mut b = vec![0i16; 480 * 2];
        t.read(&mut a);
        t.read(&mut b);
        let all: Vec<i16> = a.iter().chain(&b).copied().collect();
        let left440 = tone_strength(&all, 2, 0, 440.0);
        let left660 = tone_strength(&all, 2, 0, 660.0);
        let right660 = tone_strength(&all, 2, 1, 660.0);
        assert!(left440 > 3000.0, "{left440}");
        assert!(left660 < left440 / 10.0, "{left660}");
        assert!(right660 > 3000.0, "{right660}");
    }
}
