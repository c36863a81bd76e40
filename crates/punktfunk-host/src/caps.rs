//! What this machine offers, probed once at start: an encoder per codec and every backend of
//! every desktop edge, each with its reason. Both protocols offer from it (punktfunk/1's codecs,
//! GameStream's `ServerCodecModeSupport`), session plans choose from it, and `doctor` prints it.

use punktfunk_core::control::Codec;
use punktfunk_desktop::{DesktopEnv, EdgeReport};
use serde::Serialize;

/// One codec: the encoders tried and the one a stream gets.
#[derive(Debug, Clone, Serialize)]
pub struct CodecCaps {
    /// The codec's name.
    pub codec: &'static str,
    /// The encoder a stream of this codec gets (the first that opened), if any.
    pub encoder: Option<&'static str>,
    /// Every encoder tried, in order: `None` when it opened, otherwise why not.
    pub tried: Vec<(&'static str, Option<String>)>,
    #[serde(skip)]
    id: Codec,
}

/// The host's capabilities.
#[derive(Debug, Clone, Serialize)]
pub struct HostCaps {
    /// The desktop environment found.
    pub env: DesktopEnv,
    /// Codecs, in the order H.264, HEVC, AV1.
    pub codecs: Vec<CodecCaps>,
    /// Every desktop backend with its probe outcome.
    pub edges: EdgeReport,
}

/// The codecs the host knows, in its default order of preference.
pub const CODECS: [Codec; 3] = [Codec::H264, Codec::HEVC, Codec::AV1];

impl HostCaps {
    /// Probes encoders (opening each candidate once at a small size) and desktop backends.
    pub fn probe(env: DesktopEnv, prefer_hardware: bool) -> HostCaps {
        let codecs = CODECS
            .iter()
            .map(|&codec| {
                let cfg = punktfunk_media::EncoderConfig {
                    codec,
                    width: 320,
                    height: 240,
                    fps: 30,
                    bitrate_kbps: 1000,
                    prefer_hardware,
                    slices: 1,
                    colour: Default::default(),
                };
                let tried: Vec<_> = punktfunk_media::probe_encoders(&cfg)
                    .into_iter()
                    .map(|p| (p.name, p.unavailable))
                    .collect();
                let encoder = tried.iter().find(|(_, r)| r.is_none()).map(|(n, _)| *n);
                match encoder {
                    Some(e) => tracing::info!(codec = codec.name(), encoder = e, "codec available"),
                    None => tracing::info!(
                        codec = codec.name(),
                        tried = %tried.iter().map(|(n, r)| format!("{n}: {}", r.as_deref().unwrap_or("?"))).collect::<Vec<_>>().join("; "),
                        "codec unavailable: no encoder opens"
                    ),
                }
                CodecCaps {
                    codec: codec.name(),
                    encoder,
                    tried,
                    id: codec,
                }
            })
            .collect();
        let edges = punktfunk_desktop::probe_all(&env);
        tracing::info!(desktop = %env.summary(), "desktop environment");
        HostCaps { env, codecs, edges }
    }

    /// The encoder a stream of `codec` gets, if any opens.
    pub fn encoder(&self, codec: Codec) -> Option<&'static str> {
        self.codecs
            .iter()
            .find(|c| c.id == codec)
            .and_then(|c| c.encoder)
    }

    /// Of `wanted`, the codecs whose encoder opens, in `wanted`'s order.
    pub fn available(&self, wanted: &[Codec]) -> Vec<Codec> {
        wanted
            .iter()
            .copied()
            .filter(|&c| self.encoder(c).is_some())
            .collect()
    }

    /// Capabilities for tests: the given encoders available and nothing probed.
    #[cfg(test)]
    pub fn assumed(env: DesktopEnv, encoders: &[(Codec, &'static str)]) -> HostCaps {
        HostCaps {
            codecs: CODECS
                .iter()
                .map(|&codec| {
                    let encoder = encoders.iter().find(|(c, _)| *c == codec).map(|(_, e)| *e);
                    CodecCaps {
                        codec: codec.name(),
                        encoder,
                        tried: Vec::new(),
                        id: codec,
                    }
                })
                .collect(),
            edges: punktfunk_desktop::probe_all(&env),
            env,
        }
    }
}
