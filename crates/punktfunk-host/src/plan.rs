//! The protocol-neutral session plan: a front-end's [`StreamRequest`] (what the client asked
//! for, already negotiated at the wire level) plus the host's capabilities and configuration
//! become a [`SessionPlan`] with the desktop choices, each with its reason, logged once.

use crate::caps::HostCaps;
use crate::session::audio::AudioPlan;
use crate::session::registry::Protocol;
use punktfunk_core::control::{Codec, Mode};
use punktfunk_desktop::probe::{BackendId, NoBackend, Preference};
use punktfunk_desktop::{
    audio, capture, inject, vdisplay, AudioBackend, CaptureBackend, Chosen, DisplayBackend,
    InjectorBackend,
};
use punktfunk_media::Colour;
use serde::Serialize;
use std::time::Duration;

/// What a client asked for, in protocol-neutral terms.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRequest {
    /// The protocol.
    pub protocol: Protocol,
    /// The client (name or address).
    pub client: String,
    /// The protocol's session id, for logs.
    pub session: String,
    /// Mode.
    #[serde(serialize_with = "as_text")]
    pub mode: Mode,
    /// Codec.
    #[serde(serialize_with = "as_text")]
    pub codec: Codec,
    /// Video bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Colour matrix and range.
    #[serde(skip)]
    pub colour: Colour,
    /// Slices per frame.
    pub slices: u32,
    /// Audio, when the protocol carries it.
    pub audio: Option<AudioPlan>,
    /// The app launched, if any.
    pub app: Option<String>,
}

fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Backend preferences per edge, from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesktopPrefs {
    /// Virtual display.
    pub display: Preference<DisplayBackend>,
    /// The output the `existing` display streams (`existing:NAME`); none: the desktop.
    pub existing_output: Option<String>,
    /// Capture.
    pub capture: Preference<CaptureBackend>,
    /// Input.
    pub input: Preference<InjectorBackend>,
    /// Audio.
    pub audio: Preference<AudioBackend>,
    /// The longest the stream goes without a frame on an idle desktop.
    pub min_frame_interval: Duration,
}

impl DesktopPrefs {
    /// The default longest gap between frames: 100 ms (10 frames a second on a still desktop).
    pub const MIN_FRAME_INTERVAL: Duration = Duration::from_millis(100);
}

/// Why a stream cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No encoder of the codec opened on this host.
    #[error("no {0} encoder opens on this host")]
    Codec(&'static str),
    /// An edge has no usable backend.
    #[error(transparent)]
    Backend(#[from] NoBackend),
}

/// The resolved plan of one stream.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPlan {
    /// What was asked for.
    pub request: StreamRequest,
    /// The encoder the codec gets.
    pub encoder: &'static str,
    /// Virtual display.
    pub display: Chosen<DisplayBackend>,
    /// What the display is opened with (the existing output to stream).
    #[serde(skip)]
    pub display_options: vdisplay::DisplayOptions,
    /// Capture.
    pub capture: Chosen<CaptureBackend>,
    /// Input.
    pub input: Chosen<InjectorBackend>,
    /// Audio (when the request has audio).
    pub audio: Option<Chosen<AudioBackend>>,
    /// Longest gap between frames.
    pub min_frame_interval: Duration,
    /// One line per choice.
    pub reasons: Vec<String>,
}

/// Resolves `request` against the host.
pub fn resolve(
    request: StreamRequest,
    caps: &HostCaps,
    prefs: &DesktopPrefs,
) -> Result<SessionPlan, Refusal> {
    let encoder = caps
        .encoder(request.codec)
        .ok_or(Refusal::Codec(request.codec.name()))?;
    let env = &caps.env;
    let display = vdisplay::resolve(env, &prefs.display)?;
    let capture = capture::resolve(env, &prefs.capture)?;
    let input = inject::resolve(env, &prefs.input)?;
    let audio = match request.audio {
        Some(_) => Some(audio::resolve(env, &prefs.audio)?),
        None => None,
    };
    let min_frame_interval = if prefs.min_frame_interval.is_zero() {
        DesktopPrefs::MIN_FRAME_INTERVAL
    } else {
        prefs.min_frame_interval
    };
    let mut reasons = vec![
        format!(
            "video: {} {} at {} kbit/s with {encoder} (opened at start), colour {}",
            request.codec.name(),
            request.mode,
            request.bitrate_kbps,
            request.colour
        ),
        match (&prefs.existing_output, display.backend) {
            (Some(name), DisplayBackend::Existing) => {
                format!(
                    "display: {}; streaming the existing output {name}",
                    display.reason
                )
            }
            _ => format!("display: {}", display.reason),
        },
        format!("capture: {}", capture.reason),
        format!("input: {}", input.reason),
    ];
    if let (Some(a), Some(p)) = (&audio, &request.audio) {
        reasons.push(format!(
            "audio: {}; {} channels, {} ms packets, {} bit/s",
            a.reason, p.channels, p.packet_ms, p.bitrate
        ));
    }
    reasons.push(format!(
        "idle desktop: the last picture goes out again after {} ms without a new one",
        min_frame_interval.as_millis()
    ));
    let display_options = vdisplay::DisplayOptions {
        existing_output: prefs.existing_output.clone(),
    };
    Ok(SessionPlan {
        request,
        encoder,
        display,
        display_options,
        capture,
        input,
        audio,
        min_frame_interval,
        reasons,
    })
}

impl SessionPlan {
    /// Logs the plan, one line per choice.
    pub fn log(&self) {
        for r in &self.reasons {
            tracing::info!(
                protocol = self.request.protocol.name(),
                session = %self.request.session,
                client = %self.request.client,
                plan = %r,
                "session plan"
            );
        }
    }

    /// The chosen backends' names, for figures.
    pub fn backends(&self) -> [&'static str; 4] {
        [
            self.display.backend.name(),
            self.capture.backend.name(),
            self.input.backend.name(),
            self.audio.as_ref().map_or("none", |a| a.backend.name()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_desktop::DesktopEnv;

    fn request(codec: Codec) -> StreamRequest {
        StreamRequest {
            protocol: Protocol::Punktfunk1,
            client: "test".into(),
            session: "1".into(),
            mode: Mode::new(1280, 720, 60),
            codec,
            bitrate_kbps: 10_000,
            colour: Colour::default(),
            slices: 1,
            audio: None,
            app: None,
        }
    }

    #[test]
    fn a_plain_machine_gets_the_synthetic_backends_with_a_reason_for_each_choice() {
        let caps = HostCaps::assumed(DesktopEnv::default(), &[(Codec::H264, "libx264")]);
        let plan = resolve(request(Codec::H264), &caps, &DesktopPrefs::default()).unwrap();
        assert_eq!(plan.backends(), ["existing", "testpattern", "log", "none"]);
        assert_eq!(plan.encoder, "libx264");
        assert!(plan.reasons[1].starts_with("display: existing: first available; passed over sway"));
        assert_eq!(plan.min_frame_interval, Duration::from_millis(100));
        assert_eq!(plan.reasons.len(), 5);
    }

    #[test]
    fn a_codec_without_encoder_and_an_impossible_preference_are_refused() {
        let caps = HostCaps::assumed(DesktopEnv::default(), &[(Codec::H264, "libx264")]);
        assert!(matches!(
            resolve(request(Codec::AV1), &caps, &DesktopPrefs::default()),
            Err(Refusal::Codec("av1"))
        ));
        let prefs = DesktopPrefs {
            capture: Preference::Only(vec![CaptureBackend::PipeWire]),
            ..Default::default()
        };
        let e = resolve(request(Codec::H264), &caps, &prefs).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no capture backend can be used here: pipewire: unavailable"),
            "{e}"
        );
    }

    #[test]
    fn audio_is_planned_only_when_asked_for() {
        let caps = HostCaps::assumed(DesktopEnv::default(), &[(Codec::H264, "libx264")]);
        let mut r = request(Codec::H264);
        r.audio = Some(AudioPlan {
            channels: 2,
            streams: 1,
            coupled: 1,
            bitrate: 96_000,
            packet_ms: 5,
        });
        let plan = resolve(r, &caps, &DesktopPrefs::default()).unwrap();
        assert_eq!(plan.backends()[3], "tone");
        assert!(plan.reasons.iter().any(|l| l.starts_with("audio: tone")));
    }
}
