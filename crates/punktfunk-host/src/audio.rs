//! Audio sources and the Opus encoder.
//!
//! Desktop capture (PipeWire) plugs in behind [`AudioSource`]. Until it lands, [`ToneSource`]
//! produces a known signal — a different sine on each channel — so a client (or a test) can
//! check that what it decodes is what the host sent.
//!
//! [`OpusEncoder`] wraps libopus' multistream encoder (stereo is one coupled stream), hard CBR,
//! restricted low delay. The `opus` crate covers only mono/stereo, so the multistream calls go
//! through `audiopus_sys`, the bindings it is built on.

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

/// A libopus multistream encoder with the identity channel mapping.
pub struct OpusEncoder {
    st: std::ptr::NonNull<audiopus_sys::OpusMSEncoder>,
    channels: usize,
}

// SAFETY: the encoder state is owned exclusively by this value and only used through `&mut self`;
// libopus encoder states carry no thread affinity.
unsafe impl Send for OpusEncoder {}

impl OpusEncoder {
    /// An encoder at 48 kHz for `layout`, hard CBR at the layout's bitrate.
    pub fn new(layout: &punktfunk_gamestream::audio::OpusLayout) -> Result<OpusEncoder, String> {
        let channels = usize::from(layout.channels);
        let mapping: Vec<u8> = (0..layout.channels).collect();
        let mut err = 0;
        // SAFETY: the mapping holds `channels` entries and `err` outlives the call.
        let st = unsafe {
            audiopus_sys::opus_multistream_encoder_create(
                SAMPLE_RATE as i32,
                i32::from(layout.channels),
                i32::from(layout.streams),
                i32::from(layout.coupled),
                mapping.as_ptr(),
                audiopus_sys::OPUS_APPLICATION_RESTRICTED_LOWDELAY,
                &mut err,
            )
        };
        let st = std::ptr::NonNull::new(st)
            .filter(|_| err == audiopus_sys::OPUS_OK)
            .ok_or_else(|| format!("opening the Opus encoder ({layout:?}): error {err}"))?;
        let enc = OpusEncoder { st, channels };
        for (req, value) in [
            (
                audiopus_sys::OPUS_SET_BITRATE_REQUEST,
                layout.bitrate as i32,
            ),
            (audiopus_sys::OPUS_SET_VBR_REQUEST, 0),
        ] {
            // SAFETY: both requests take one opus_int32 argument.
            let r =
                unsafe { audiopus_sys::opus_multistream_encoder_ctl(enc.st.as_ptr(), req, value) };
            if r != audiopus_sys::OPUS_OK {
                return Err(format!(
                    "configuring the Opus encoder: request {req} error {r}"
                ));
            }
        }
        Ok(enc)
    }

    /// Encodes one frame of interleaved samples (`pcm.len() / channels` per channel) into
    /// `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, String> {
        let frames = pcm.len() / self.channels;
        // SAFETY: `pcm` holds `frames × channels` samples and `out` its stated length.
        let n = unsafe {
            audiopus_sys::opus_multistream_encode(
                self.st.as_ptr(),
                pcm.as_ptr(),
                frames as i32,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        };
        usize::try_from(n).map_err(|_| format!("Opus encoding failed: error {n}"))
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_multistream_encoder_create and destroyed once.
        unsafe { audiopus_sys::opus_multistream_encoder_destroy(self.st.as_ptr()) };
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

    /// Decodes multistream packets with libopus' own decoder (identity mapping, as the client
    /// ends up with) and checks every channel carries its own tone.
    #[test]
    fn every_layout_round_trips_with_each_channel_in_place() {
        use punktfunk_gamestream::audio::LAYOUTS;
        for (layout, _, digits) in LAYOUTS {
            let c = usize::from(layout.channels);
            let mut enc = OpusEncoder::new(&layout).unwrap();
            let mut tone = ToneSource::new(c);
            let mapping: Vec<u8> = (0..layout.channels).collect();
            let mut err = 0;
            // SAFETY: mapping has `c` entries; the decoder is destroyed below.
            let dec = unsafe {
                audiopus_sys::opus_multistream_decoder_create(
                    48_000,
                    c as i32,
                    i32::from(layout.streams),
                    i32::from(layout.coupled),
                    mapping.as_ptr(),
                    &mut err,
                )
            };
            assert_eq!(err, 0);
            let mut pcm = vec![0i16; 240 * c];
            let mut out = vec![0u8; 1400];
            let mut decoded = Vec::new();
            let mut sizes = std::collections::BTreeSet::new();
            for _ in 0..200 {
                tone.read(&mut pcm);
                let n = enc.encode(&pcm, &mut out).unwrap();
                sizes.insert(n);
                let mut frame = vec![0i16; 240 * c];
                // SAFETY: `frame` holds 240 samples per channel.
                let k = unsafe {
                    audiopus_sys::opus_multistream_decode(
                        dec,
                        out.as_ptr(),
                        n as i32,
                        frame.as_mut_ptr(),
                        240,
                        0,
                    )
                };
                assert_eq!(k, 240);
                decoded.extend_from_slice(&frame);
            }
            // SAFETY: created above, destroyed once.
            unsafe { audiopus_sys::opus_multistream_decoder_destroy(dec) };
            assert_eq!(
                sizes.len(),
                1,
                "hard CBR: one packet size ({digits}: {sizes:?})"
            );
            // Skip the first 100 ms (encoder start-up).
            let tail = &decoded[4800 * c..];
            for ch in 0..c {
                let own = tone_strength(tail, c, ch, ToneSource::frequency(ch));
                let other = tone_strength(tail, c, ch, ToneSource::frequency((ch + 1) % c));
                assert!(
                    own > 2500.0 && other < own / 5.0,
                    "{digits} channel {ch}: {own} vs {other}"
                );
            }
        }
    }
}
