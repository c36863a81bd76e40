//! Choosing and opening the audio source.

use super::{tone::ToneSource, AudioBackend, AudioError, AudioSource};
use crate::env::DesktopEnv;
use crate::probe::{
    choose, probe_each, BackendId, Candidate, Chosen, NoBackend, Preference, Probe,
};
use std::time::Instant;

/// Whether `backend` can work in `env`.
pub fn probe(backend: AudioBackend, env: &DesktopEnv) -> Probe {
    match backend {
        AudioBackend::Tone => Probe::Available,
        AudioBackend::PipeWire => match &env.pipewire_socket {
            Some(s) => Probe::Unavailable(format!(
                "a PipeWire socket exists ({}), but this build has no {} capture yet",
                s.display(),
                backend.name()
            )),
            None => Probe::Unavailable("no PipeWire socket in the runtime directory".into()),
        },
    }
}

/// Every backend with its probe outcome.
pub fn candidates(env: &DesktopEnv) -> Vec<Candidate> {
    probe_each(|b| probe(b, env))
}

/// Chooses a backend.
pub fn resolve(
    env: &DesktopEnv,
    preference: &Preference<AudioBackend>,
) -> Result<Chosen<AudioBackend>, NoBackend> {
    choose(preference, |b| probe(b, env))
}

/// Opens a source; `channels` is what the stream wants, which a synthetic source can produce
/// directly (a device gives its own format).
pub fn open(
    backend: AudioBackend,
    env: &DesktopEnv,
    channels: u8,
) -> Result<Box<dyn AudioSource>, AudioError> {
    let _ = env;
    match backend {
        AudioBackend::Tone => Ok(Box::new(ToneSource::new(48_000, channels, Instant::now()))),
        other => Err(AudioError::Unsupported(format!(
            "no {} capture in this build",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_chosen_without_pipewire_and_opens_with_the_streams_channels() {
        let c = resolve(&DesktopEnv::default(), &Preference::Auto).unwrap();
        assert_eq!(c.backend, AudioBackend::Tone);
        assert!(
            c.reason
                .contains("pipewire: unavailable (no PipeWire socket"),
            "{}",
            c.reason
        );
        let src = open(AudioBackend::Tone, &DesktopEnv::default(), 6).unwrap();
        assert_eq!(src.format().channels, 6);
        assert_eq!(src.format().rate, 48_000);
        let e = resolve(
            &DesktopEnv::default(),
            &Preference::Only(vec![AudioBackend::PipeWire]),
        );
        assert!(e.is_err());
    }
}
