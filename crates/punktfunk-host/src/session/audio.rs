//! A session's audio on its own thread, clocked by the source's device:
//!
//! ```text
//! audio thread: AudioSource::read (returns when the device has the samples) → channel
//!               adaptation → Opus (libopus multistream, hard CBR) → AudioSink (the protocol's
//!               packets, encryption, FEC and send)
//! ```
//!
//! Nothing here sleeps to pace audio: the source's clock does. The source's format is its own;
//! the thread adapts its channel count to the stream's (extra channels are dropped, missing ones
//! silent), and refuses a rate other than 48 kHz, the only one Opus streams here use.
//!
//! [`OpusEncoder`] wraps libopus' multistream encoder (stereo is one coupled stream). The `opus`
//! crate covers only mono/stereo, so the multistream calls go through `audiopus_sys`, the
//! bindings it is built on.

use punktfunk_desktop::{AudioError, AudioSource};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sample rate of every stream, Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// The Opus stream a session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AudioPlan {
    /// Channels.
    pub channels: u8,
    /// Opus streams.
    pub streams: u8,
    /// Of which coupled (stereo) streams.
    pub coupled: u8,
    /// Bits per second.
    pub bitrate: u32,
    /// Milliseconds per packet.
    pub packet_ms: u32,
}

/// Audio failures, by where they happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioPipelineError {
    /// The source failed.
    #[error("audio source: {0}")]
    Source(#[from] AudioError),
    /// libopus refused.
    #[error("Opus: {0}")]
    Opus(String),
    /// The source's format cannot be streamed.
    #[error("the source's {0} Hz cannot be streamed (48000 only)")]
    Rate(u32),
    /// The thread could not be started.
    #[error("audio thread: {0}")]
    Thread(String),
}

/// Where encoded audio goes: the protocol's packetizer and socket.
pub trait AudioSink: Send + 'static {
    /// Waits until the receiver is known (e.g. its ping arrived); false when the session gave
    /// up (it ended, or the receiver never showed).
    fn ready(&mut self, stop: &AtomicBool) -> bool;
    /// Sends one Opus packet; false ends the thread quietly.
    fn deliver(&mut self, packet: &[u8]) -> bool;
}

/// The running audio thread; dropping it stops and joins it.
pub struct AudioThread {
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl AudioThread {
    /// Opens the encoder for `plan` and starts the thread.
    pub fn start(
        plan: AudioPlan,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
    ) -> Result<AudioThread, AudioPipelineError> {
        let fmt = source.format();
        if fmt.rate != SAMPLE_RATE {
            return Err(AudioPipelineError::Rate(fmt.rate));
        }
        let opus = OpusEncoder::new(&plan)?;
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (stop, packets, failure) = (stop.clone(), packets.clone(), failure.clone());
            std::thread::Builder::new()
                .name("audio".into())
                .spawn(move || {
                    if let Err(e) = run(plan, source, sink, opus, &stop, &packets) {
                        tracing::error!(error = %e, "audio stopped");
                        *crate::lock(&failure) = Some(e.to_string());
                    }
                })
                .map_err(|e| AudioPipelineError::Thread(e.to_string()))?
        };
        Ok(AudioThread {
            stop,
            packets,
            failure,
            thread: Some(thread),
        })
    }

    /// Opus packets sent.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Why the thread stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        crate::lock(&self.failure).clone()
    }

    /// Stops and joins the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AudioThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    plan: AudioPlan,
    mut source: Box<dyn AudioSource>,
    mut sink: Box<dyn AudioSink>,
    mut opus: OpusEncoder,
    stop: &AtomicBool,
    packets: &AtomicU64,
) -> Result<(), AudioPipelineError> {
    if !sink.ready(stop) {
        return Ok(());
    }
    let frames = (SAMPLE_RATE / 1000 * plan.packet_ms) as usize;
    let have = usize::from(source.format().channels);
    let want = usize::from(plan.channels);
    let mut captured = vec![0i16; frames * have];
    let mut pcm = vec![0i16; frames * want];
    let mut buf = vec![0u8; 1400];
    tracing::info!(
        source = punktfunk_desktop::probe::BackendId::name(source.backend()),
        packet_ms = plan.packet_ms,
        source_channels = have,
        channels = want,
        bitrate = plan.bitrate,
        "audio started"
    );
    while !stop.load(Ordering::Relaxed) {
        // The device clock paces this loop; the deadline only bounds how long a stop waits.
        if !source.read(&mut captured, Instant::now() + Duration::from_millis(100))? {
            continue;
        }
        let samples = if have == want {
            &captured[..]
        } else {
            adapt_channels(&captured, have, &mut pcm, want);
            &pcm[..]
        };
        let n = opus.encode(samples, &mut buf)?;
        if !sink.deliver(&buf[..n]) {
            break;
        }
        packets.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Copies interleaved frames of `have` channels into frames of `want`: extra channels are
/// dropped, missing ones are silent.
pub fn adapt_channels(src: &[i16], have: usize, dst: &mut [i16], want: usize) {
    for (s, d) in src.chunks_exact(have).zip(dst.chunks_exact_mut(want)) {
        for (i, v) in d.iter_mut().enumerate() {
            *v = s.get(i).copied().unwrap_or(0);
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
    pub fn new(layout: &AudioPlan) -> Result<OpusEncoder, AudioPipelineError> {
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
            .ok_or_else(|| {
                AudioPipelineError::Opus(format!("opening the encoder ({layout:?}): error {err}"))
            })?;
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
                return Err(AudioPipelineError::Opus(format!(
                    "configuring the encoder: request {req} error {r}"
                )));
            }
        }
        Ok(enc)
    }

    /// Encodes one frame of interleaved samples (`pcm.len() / channels` per channel) into
    /// `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, AudioPipelineError> {
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
        usize::try_from(n)
            .map_err(|_| AudioPipelineError::Opus(format!("encoding failed: error {n}")))
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_multistream_encoder_create and destroyed once.
        unsafe { audiopus_sys::opus_multistream_encoder_destroy(self.st.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_desktop::audio::tone::{tone_strength, ToneSource};

    #[test]
    fn channels_are_adapted_by_dropping_extras_and_silencing_missing_ones() {
        let src = [1i16, 2, 3, 4, 5, 6]; // two 3-channel frames
        let mut two = [0i16; 4];
        adapt_channels(&src, 3, &mut two, 2);
        assert_eq!(two, [1, 2, 4, 5]);
        let mut four = [9i16; 8];
        adapt_channels(&src, 3, &mut four, 4);
        assert_eq!(four, [1, 2, 3, 0, 4, 5, 6, 0]);
    }

    /// Decodes multistream packets with libopus' own decoder (identity mapping, as the client
    /// ends up with) and checks every channel carries its own tone.
    #[test]
    fn every_layout_round_trips_with_each_channel_in_place() {
        use punktfunk_gamestream::audio::LAYOUTS;
        for (layout, _, digits) in LAYOUTS {
            let c = usize::from(layout.channels);
            let mut enc =
                OpusEncoder::new(&crate::proto::gamestream::stream::audio_plan(&layout, 5))
                    .unwrap();
            let mut tone = ToneSource::new(48_000, layout.channels, Instant::now());
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
                tone.fill(&mut pcm);
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
                let own = tone_strength(tail, c, ch, ToneSource::frequency(ch), 48_000);
                let other = tone_strength(tail, c, ch, ToneSource::frequency((ch + 1) % c), 48_000);
                assert!(
                    own > 2500.0 && other < own / 5.0,
                    "{digits} channel {ch}: {own} vs {other}"
                );
            }
        }
    }
}
