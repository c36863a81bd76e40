//! The session plan: one place that turns what a client announced into what the host will do,
//! with the reason for every choice, or a refusal the client is told about.

use crate::rtsp::{enc, StreamConfig};
use crate::video::{MAX_PACKET_SIZE, MIN_PACKET_SIZE};

/// Video codec of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264.
    H264,
    /// HEVC.
    Hevc,
    /// AV1.
    Av1,
}

/// What the host can do (decided once at start-up from the encoders that open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAbilities {
    /// An HEVC encoder opens.
    pub hevc: bool,
    /// An AV1 encoder opens.
    pub av1: bool,
    /// Host FEC percentage for video (Sunshine's default is 20).
    pub fec_percent: u32,
}

/// Everything a GameStream session runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    /// Codec.
    pub codec: VideoCodec,
    /// Encode width.
    pub width: u32,
    /// Encode height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Encoder bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Slices per frame.
    pub slices: u32,
    /// BT.709 rather than BT.601 (SDR).
    pub bt709: bool,
    /// Full range rather than limited.
    pub full_range: bool,
    /// Video packet size (NV header + payload per datagram) as announced.
    pub packet_size: u32,
    /// FEC percentage for video blocks.
    pub fec_percent: u32,
    /// Fewest parity shards per block.
    pub min_parity: u32,
    /// Video datagrams are AES-GCM sealed.
    pub video_encrypted: bool,
    /// Audio payloads are AES-CBC encrypted.
    pub audio_encrypted: bool,
    /// Audio layout (channels, streams, bitrate).
    pub audio: crate::audio::OpusLayout,
    /// Opus frame duration, ms.
    pub audio_packet_ms: u32,
    /// Why each value is what it is, one line per choice.
    pub reasons: Vec<String>,
}

/// A request the host will not stream, with the RTSP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 (bad or unsupported request) or 403 (encryption policy).
    pub status: u16,
    /// What was wrong, for the log and the client.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

impl SessionPlan {
    /// Resolves the plan. `high_quality_audio` comes from the RTSP `Host:` header (not
    /// `0.0.0.0`), which is how clients ask for high-quality stereo.
    pub fn resolve(
        cfg: &StreamConfig,
        host: &HostAbilities,
        high_quality_audio: bool,
    ) -> Result<SessionPlan, Refusal> {
        let mut why = Vec::new();
        let codec = match cfg.bitstream_format {
            0 => VideoCodec::H264,
            1 if host.hevc => VideoCodec::Hevc,
            2 if host.av1 => VideoCodec::Av1,
            1 | 2 => {
                return Err(refuse(
                    400,
                    format!(
                        "client asked for {} but no encoder for it opens on this host",
                        if cfg.bitstream_format == 1 {
                            "HEVC"
                        } else {
                            "AV1"
                        }
                    ),
                ))
            }
            n => return Err(refuse(400, format!("unknown bitStreamFormat {n}"))),
        };
        why.push(format!(
            "codec {codec:?}: bitStreamFormat {}",
            cfg.bitstream_format
        ));
        if cfg.dynamic_range != 0 {
            return Err(refuse(
                400,
                "10-bit/HDR encode requested; this host encodes 8-bit only",
            ));
        }
        if cfg.chroma_444 {
            return Err(refuse(
                400,
                "YUV 4:4:4 requested; this host encodes 4:2:0 only",
            ));
        }
        if cfg.width < 64 || cfg.height < 64 || cfg.width > 7680 || cfg.height > 4320 {
            return Err(refuse(
                400,
                format!(
                    "resolution {}x{} outside 64x64..7680x4320",
                    cfg.width, cfg.height
                ),
            ));
        }
        if !cfg.width.is_multiple_of(2) || !cfg.height.is_multiple_of(2) {
            return Err(refuse(
                400,
                format!(
                    "resolution {}x{} is not even in both directions",
                    cfg.width, cfg.height
                ),
            ));
        }
        if !(1..=240).contains(&cfg.fps) {
            return Err(refuse(
                400,
                format!("frame rate {} outside 1..240", cfg.fps),
            ));
        }
        why.push(format!(
            "mode {}x{}@{}: the client's viewport and maxFPS (virtual display at exactly that size)",
            cfg.width, cfg.height, cfg.fps
        ));
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&cfg.packet_size) {
            return Err(refuse(
                400,
                format!(
                    "packet size {} outside {MIN_PACKET_SIZE}..{MAX_PACKET_SIZE}",
                    cfg.packet_size
                ),
            ));
        }
        why.push(format!(
            "packet size {}: exactly the client's (its FEC decoder sizes shards from it)",
            cfg.packet_size
        ));
        if cfg.reliable_udp != 13 {
            return Err(refuse(
                400,
                format!(
                    "control stream variant {} requested; this host speaks only the encrypted one (13)",
                    cfg.reliable_udp
                ),
            ));
        }
        if cfg.encryption_enabled & enc::CONTROL_V2 == 0 {
            return Err(refuse(
                403,
                "client did not enable the v2 control-stream encryption this host requires",
            ));
        }
        let video_encrypted = cfg.encryption_enabled & enc::VIDEO != 0;
        let audio_encrypted =
            cfg.encryption_enabled & enc::AUDIO != 0 || cfg.nv_feature_flags & 0x20 != 0;
        why.push(format!(
            "encryption: control v2 yes, video {}, audio {} (client's encryptionEnabled {:#x}, featureFlags {:#x})",
            if video_encrypted { "yes" } else { "no" },
            if audio_encrypted { "yes" } else { "no" },
            cfg.encryption_enabled,
            cfg.nv_feature_flags
        ));

        let fec_percent = host.fec_percent.min(255);
        let min_parity = cfg.min_fec_packets.min(32);
        why.push(format!(
            "FEC {fec_percent} % per block, at least {min_parity} parity shards (client minimum)"
        ));

        if !matches!(cfg.audio_packet_ms, 5 | 10) {
            return Err(refuse(
                400,
                format!(
                    "audio packet duration {} ms not 5 or 10",
                    cfg.audio_packet_ms
                ),
            ));
        }
        // High quality: for stereo the RTSP Host header decides, for surround AudioQuality.
        let high_quality = if cfg.audio_channels == 2 {
            high_quality_audio
        } else {
            cfg.audio_high_quality
        };
        let Some(layout) = crate::audio::layout(cfg.audio_channels, high_quality) else {
            return Err(refuse(
                400,
                format!(
                    "{} audio channels requested; this host offers 2, 6 and 8",
                    cfg.audio_channels
                ),
            ));
        };
        let audio_bitrate = layout.bitrate;
        why.push(format!(
            "audio: Opus {} channels in {} streams ({} coupled), {} ms, CBR {} kbit/s ({} quality: {})",
            layout.channels,
            layout.streams,
            layout.coupled,
            cfg.audio_packet_ms,
            audio_bitrate / 1000,
            if high_quality { "high" } else { "normal" },
            if cfg.audio_channels == 2 { "RTSP Host header" } else { "AudioQuality" }
        ));

        let bitrate_kbps = if cfg.configured_bitrate_kbps > 0 {
            let mut b = cfg.configured_bitrate_kbps;
            if fec_percent <= 80 {
                // In 64 bits: the client's number times 100 does not fit 32. The result is at
                // most `b`, so it fits again.
                b = (u64::from(b) * u64::from(100 - fec_percent) / 100) as u32;
            }
            b -= (audio_bitrate / 1000).min(b / 5);
            b -= 500.min(b / 10);
            why.push(format!(
                "bitrate {b} kbit/s: the client's {} minus FEC {fec_percent} %, audio and 10 % headroom",
                cfg.configured_bitrate_kbps
            ));
            b
        } else {
            why.push(format!(
                "bitrate {} kbit/s: the client's maximumBitrateKbps",
                cfg.max_bitrate_kbps
            ));
            cfg.max_bitrate_kbps
        };
        if bitrate_kbps < 100 {
            return Err(refuse(
                400,
                format!("bitrate {bitrate_kbps} kbit/s is too low to stream"),
            ));
        }
        let slices = cfg.slices.clamp(1, 16);
        why.push(format!(
            "{slices} slice(s) per frame, {} reference frame limit",
            if cfg.max_ref_frames == 0 {
                "no".to_string()
            } else {
                cfg.max_ref_frames.to_string()
            }
        ));
        // encoderCscMode = (colour space << 1) | full range; 0 = Rec.601, 1 = Rec.709, 2 = Rec.2020
        // (an HDR space: an SDR stream gets Rec.709 instead).
        let full_range = cfg.csc_mode & 1 != 0;
        let bt709 = match cfg.csc_mode >> 1 {
            0 => false,
            1 => true,
            n => {
                why.push(format!(
                    "colour space {n} asked for an SDR stream; Rec.709 used instead"
                ));
                true
            }
        };
        why.push(format!(
            "colour: Rec.{} {} range (encoderCscMode {})",
            if bt709 { "709" } else { "601" },
            if full_range { "full" } else { "limited" },
            cfg.csc_mode
        ));
        Ok(SessionPlan {
            codec,
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            bitrate_kbps,
            slices,
            bt709,
            full_range,
            packet_size: cfg.packet_size,
            fec_percent,
            min_parity,
            video_encrypted,
            audio_encrypted,
            audio: layout,
            audio_packet_ms: cfg.audio_packet_ms,
            reasons: why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StreamConfig {
        StreamConfig {
            width: 1280,
            height: 720,
            fps: 60,
            packet_size: 1024,
            max_bitrate_kbps: 8000,
            configured_bitrate_kbps: 10000,
            min_fec_packets: 2,
            slices: 1,
            bitstream_format: 0,
            dynamic_range: 0,
            max_ref_frames: 1,
            csc_mode: 0,
            chroma_444: false,
            audio_channels: 2,
            audio_channel_mask: 3,
            audio_high_quality: false,
            audio_packet_ms: 5,
            encryption_enabled: 1,
            nv_feature_flags: 0xA7,
            ml_feature_flags: 3,
            reliable_udp: 13,
        }
    }
    const HOST: HostAbilities = HostAbilities {
        hevc: true,
        av1: false,
        fec_percent: 20,
    };

    #[test]
    fn a_typical_request_resolves_with_reasons() {
        let p = SessionPlan::resolve(&cfg(), &HOST, false).unwrap();
        assert_eq!(p.codec, VideoCodec::H264);
        // 10000 × 0.8 = 8000, − 96 audio, − 500 headroom.
        assert_eq!(p.bitrate_kbps, 7404);
        assert!(!p.video_encrypted && p.audio_encrypted);
        assert_eq!(
            (p.fec_percent, p.min_parity, p.audio.bitrate),
            (20, 2, 96_000)
        );
        assert!(p.reasons.len() >= 6);
        let mut c = cfg();
        c.configured_bitrate_kbps = 0;
        c.bitstream_format = 1;
        c.encryption_enabled = 7;
        let p = SessionPlan::resolve(&c, &HOST, true).unwrap();
        assert_eq!(
            (p.codec, p.bitrate_kbps, p.video_encrypted),
            (VideoCodec::Hevc, 8000, true)
        );
        assert_eq!(p.audio.bitrate, 512_000);
        assert!(!p.bt709 && !p.full_range);
        c.csc_mode = 3;
        let p = SessionPlan::resolve(&c, &HOST, true).unwrap();
        assert!(p.bt709 && p.full_range);
        assert!(p.reasons.iter().any(|r| r.contains("Rec.709 full")));
        c.audio_channels = 8;
        c.audio_high_quality = true;
        let p = SessionPlan::resolve(&c, &HOST, false).unwrap();
        assert_eq!(
            (p.audio.channels, p.audio.streams, p.audio.bitrate),
            (8, 8, 2_048_000)
        );
    }

    #[test]
    fn impossible_requests_are_refused_with_a_reason() {
        type Case = (fn(&mut StreamConfig), u16, &'static str);
        let cases: [Case; 8] = [
            (|c| c.bitstream_format = 2, 400, "AV1"),
            (|c| c.dynamic_range = 1, 400, "10-bit"),
            (|c| c.width = 1281, 400, "not even"),
            (|c| c.fps = 0, 400, "frame rate"),
            (|c| c.packet_size = 8, 400, "packet size"),
            (|c| c.reliable_udp = 1, 400, "control stream"),
            (|c| c.encryption_enabled = 0, 403, "v2 control"),
            (|c| c.audio_channels = 4, 400, "offers 2, 6 and 8"),
        ];
        for (f, status, text) in cases {
            let mut c = cfg();
            f(&mut c);
            let r = SessionPlan::resolve(&c, &HOST, false).unwrap_err();
            assert_eq!(r.status, status, "{}", r.reason);
            assert!(r.reason.contains(text), "{}", r.reason);
        }
    }

    #[test]
    fn a_configured_bitrate_near_u32_max_does_not_overflow() {
        for kbps in [u32::MAX, u32::MAX - 1, u32::MAX / 100 + 1] {
            let mut c = cfg();
            c.configured_bitrate_kbps = kbps;
            let p = SessionPlan::resolve(&c, &HOST, false).unwrap();
            // 80 % of it, less the audio and headroom shares.
            let expect = u64::from(kbps) * 80 / 100 - 96 - 500;
            assert_eq!(u64::from(p.bitrate_kbps), expect, "{kbps}");
        }
    }
}
