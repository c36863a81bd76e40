//! Video encoders through libavcodec, configured for the lowest latency.
//!
//! [`open_encoder`] tries, in order: hardware encoders (NVENC, then VAAPI) when asked and the
//! device exists, then software (libx264, libx265, libaom-av1). Every candidate that is skipped
//! or fails is logged with the reason, and the chosen one is logged too. SVT-AV1 is not a
//! candidate: the 1.4 release that Debian 12 ships encodes in low-delay mode but never returns
//! from its teardown (it waits for an end-of-stream packet that does not come), which would
//! wedge a host at the end of every AV1 session.
//!
//! Settings (all encoders): no B-frames, one reference frame, an "infinite" GOP (keyframes only
//! on the first frame and on request), constant bitrate with a VBV of about one frame, the
//! encoder's zero-latency tuning, and parameter sets repeated in-band on every keyframe so a
//! client can start or resume at any keyframe. The output is an elementary stream (Annex-B for
//! H.264/HEVC, low-overhead OBUs for AV1): concatenated access units play as a file.

use crate::frame::YuvFrame;
use crate::MediaError;
use ffmpeg_next as ff;
use punktfunk_core::control::Codec;

/// The highest bitrate an encoder is opened with, kbit/s (1 Gbit/s: beyond any stream a
/// network carries, and within what every encoder's rate control represents).
pub const MAX_BITRATE_KBPS: u32 = 1_000_000;

/// What to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Codec.
    pub codec: Codec,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate, kbit/s (at most [`MAX_BITRATE_KBPS`]; more is taken as that).
    pub bitrate_kbps: u32,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// Slices per frame (1 = one slice; clients with several decoder threads ask for more).
    pub slices: u32,
    /// Colour matrix and range of the frames, signalled in the bitstream.
    pub colour: crate::Colour,
}

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// Elementary-stream bytes.
    pub data: Vec<u8>,
    /// Whether it is a keyframe (IDR).
    pub keyframe: bool,
    /// Presentation timestamp (the frame index given to `encode`).
    pub pts: i64,
}

/// A video encoder.
pub trait Encoder: Send {
    /// The libavcodec encoder name (`libx264`, `h264_nvenc`, …).
    fn name(&self) -> &str;
    /// Encodes one frame. With the zero-latency settings one frame in gives one frame out.
    fn encode(
        &mut self,
        frame: &YuvFrame,
        pts: i64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, MediaError>;
}

/// Initialises libavcodec once (idempotent) and keeps its logging quiet.
pub(crate) fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ff::init();
        // Failures come back as errors and are logged by us with context; libav's own
        // messages (e.g. NVENC failing to find libcuda on a machine without a GPU) are noise.
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

fn candidates(codec: Codec, hardware: bool) -> Vec<&'static str> {
    let (hw, sw): (&[&str], &[&str]) = match codec {
        Codec::H264 => (&["h264_nvenc", "h264_vaapi"], &["libx264"]),
        Codec::HEVC => (&["hevc_nvenc", "hevc_vaapi"], &["libx265"]),
        Codec::AV1 => (&["av1_nvenc", "av1_vaapi"], &["libaom-av1"]),
        _ => (&[], &[]),
    };
    let mut v = Vec::new();
    if hardware {
        v.extend_from_slice(hw);
    }
    v.extend_from_slice(sw);
    v
}

/// Opens the best available encoder for `cfg`.
pub fn open_encoder(cfg: &EncoderConfig) -> Result<Box<dyn Encoder>, MediaError> {
    init();
    if cfg.width == 0
        || cfg.height == 0
        || !cfg.width.is_multiple_of(2)
        || !cfg.height.is_multiple_of(2)
        || cfg.fps == 0
    {
        return Err(MediaError::Geometry(format!(
            "{}x{}@{}: sizes must be even, fps non-zero",
            cfg.width, cfg.height, cfg.fps
        )));
    }
    let mut reasons = Vec::new();
    for name in candidates(cfg.codec, cfg.prefer_hardware) {
        match try_open(name, cfg) {
            Ok(e) => {
                tracing::info!(encoder = name, codec = %cfg.codec, width = cfg.width, height = cfg.height, fps = cfg.fps,
                    bitrate_kbps = cfg.bitrate_kbps, "encoder opened");
                return Ok(e);
            }
            Err(reason) => {
                tracing::info!(encoder = name, %reason, "encoder unavailable, trying the next");
                reasons.push(format!("{name}: {reason}"));
            }
        }
    }
    Err(MediaError::NoEncoder {
        codec: cfg.codec.name().to_string(),
        tried: reasons.join("; "),
    })
}

/// One encoder [`open_encoder`] would try, and whether it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderProbe {
    /// libavcodec's name for it.
    pub name: &'static str,
    /// `None` when it opens, otherwise why not.
    pub unavailable: Option<String>,
}

/// Tries every encoder [`open_encoder`] would consider for `cfg`, in its order, and says which
/// open (for `doctor`: the first that opens is the one a stream gets).
pub fn probe_encoders(cfg: &EncoderConfig) -> Vec<EncoderProbe> {
    init();
    candidates(cfg.codec, cfg.prefer_hardware)
        .into_iter()
        .map(|name| EncoderProbe {
            name,
            unavailable: try_open(name, cfg).err(),
        })
        .collect()
}

fn try_open(name: &'static str, cfg: &EncoderConfig) -> Result<Box<dyn Encoder>, String> {
    if name.ends_with("_vaapi") && !std::path::Path::new("/dev/dri/renderD128").exists() {
        return Err("no VAAPI device (no /dev/dri render node)".into());
    }
    if name.ends_with("_vaapi") {
        // VAAPI needs a hardware frames context and uploads; not wired up yet.
        return Err("VAAPI upload not implemented".into());
    }
    LavcEncoder::open(name, cfg)
        .map(|e| Box::new(e) as Box<dyn Encoder>)
        .map_err(|e| e.to_string())
}

/// A libavcodec encoder.
struct LavcEncoder {
    name: &'static str,
    enc: ff::encoder::Video,
    frame: ff::frame::Video,
    packet: ff::Packet,
}

// SAFETY: the encoder context, frame and packet are owned exclusively by this value and only
// used through `&mut self`; libavcodec contexts may move between threads when not shared.
unsafe impl Send for LavcEncoder {}

impl LavcEncoder {
    fn open(name: &'static str, cfg: &EncoderConfig) -> Result<LavcEncoder, MediaError> {
        let lavc = |e: ff::Error| MediaError::Codec(format!("{name}: {e}"));
        let codec = ff::encoder::find_by_name(name)
            .ok_or_else(|| MediaError::Codec(format!("{name}: not in this libavcodec build")))?;
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(lavc)?;
        let fps = cfg.fps as i32;
        enc.set_width(cfg.width);
        enc.set_height(cfg.height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(ff::Rational(1, fps));
        enc.set_frame_rate(Some(ff::Rational(fps, 1)));
        let bps = cfg.bitrate_kbps.min(MAX_BITRATE_KBPS) as usize * 1000;
        enc.set_bit_rate(bps);
        enc.set_max_bit_rate(bps);
        enc.set_max_b_frames(0);
        enc.set_gop(i32::MAX as u32);
        let bt709 = cfg.colour.is_bt709();
        enc.set_colorspace(if bt709 {
            ff::color::Space::BT709
        } else {
            ff::color::Space::BT470BG
        });
        enc.set_color_range(if cfg.colour.is_full_range() {
            ff::color::Range::JPEG
        } else {
            ff::color::Range::MPEG
        });
        // SAFETY: the context pointer is valid and not yet opened; these plain fields have no
        // setter in ffmpeg-next.
        unsafe {
            let ctx = enc.as_mut_ptr();
            (*ctx).rc_buffer_size =
                (bps / cfg.fps.max(1) as usize).clamp(1, i32::MAX as usize) as i32;
            (*ctx).refs = 1;
            // Primaries and transfer to match the matrix, so decoders need no guessing.
            if bt709 {
                (*ctx).color_primaries = ff::ffi::AVColorPrimaries::AVCOL_PRI_BT709;
                (*ctx).color_trc = ff::ffi::AVColorTransferCharacteristic::AVCOL_TRC_BT709;
            } else {
                (*ctx).color_primaries = ff::ffi::AVColorPrimaries::AVCOL_PRI_SMPTE170M;
                (*ctx).color_trc = ff::ffi::AVColorTransferCharacteristic::AVCOL_TRC_SMPTE170M;
            }
            (*ctx).thread_count = 2;
        }
        let mut opts = ff::Dictionary::new();
        match name {
            "libx264" => {
                opts.set("preset", "ultrafast");
                opts.set("tune", "zerolatency");
                opts.set("forced-idr", "1");
                opts.set(
                    "x264-params",
                    &format!(
                        "repeat-headers=1:annexb=1:nal-hrd=cbr:ref=1:sliced-threads=1:slices={}",
                        cfg.slices.clamp(1, 16)
                    ),
                );
            }
            "libx265" => {
                opts.set("preset", "ultrafast");
                opts.set("tune", "zerolatency");
                opts.set("forced-idr", "1");
                opts.set(
                    "x265-params",
                    &format!(
                        "repeat-headers=1:annexb=1:ref=1:bframes=0:frame-threads=1:rc-lookahead=0:log-level=error:slices={}",
                        cfg.slices.clamp(1, 16)
                    ),
                );
            }
            "libaom-av1" => {
                opts.set("cpu-used", "8");
                opts.set("usage", "realtime");
                opts.set("lag-in-frames", "0");
            }
            n if n.ends_with("_nvenc") => {
                opts.set("preset", "p1");
                opts.set("tune", "ull");
                opts.set("zerolatency", "1");
                opts.set("forced-idr", "1");
                opts.set("rc", "cbr");
            }
            _ => {}
        }
        let enc = enc.open_as_with(codec, opts).map_err(lavc)?;
        let frame = ff::frame::Video::new(ff::format::Pixel::YUV420P, cfg.width, cfg.height);
        Ok(LavcEncoder {
            name,
            enc,
            frame,
            packet: ff::Packet::empty(),
        })
    }
}

impl Encoder for LavcEncoder {
    fn name(&self) -> &str {
        self.name
    }

    fn encode(
        &mut self,
        src: &YuvFrame,
        pts: i64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, MediaError> {
        let (w, h) = (self.frame.width(), self.frame.height());
        if src.width != w
            || src.height != h
            || src.data.len() < src.luma_len() + 2 * src.chroma_len()
        {
            return Err(MediaError::Geometry(format!(
                "frame {}x{} given to a {w}x{h} encoder",
                src.width, src.height
            )));
        }
        let planes = [
            (src.y(), w as usize, h as usize),
            (src.u(), w as usize / 2, h as usize / 2),
            (src.v(), w as usize / 2, h as usize / 2),
        ];
        for (i, (plane, pw, ph)) in planes.into_iter().enumerate() {
            let stride = self.frame.stride(i);
            let dst = self.frame.data_mut(i);
            for row in 0..ph {
                dst[row * stride..row * stride + pw]
                    .copy_from_slice(&plane[row * pw..(row + 1) * pw]);
            }
        }
        self.frame.set_pts(Some(pts));
        self.frame.set_kind(if force_keyframe {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        let lavc = |e: ff::Error| MediaError::Codec(format!("{}: {e}", self.name));
        self.enc.send_frame(&self.frame).map_err(lavc)?;
        let mut out: Option<EncodedFrame> = None;
        loop {
            match self.enc.receive_packet(&mut self.packet) {
                Ok(()) => {
                    let data = self.packet.data().unwrap_or(&[]).to_vec();
                    let keyframe = self.packet.is_key();
                    match out.as_mut() {
                        // Several packets for one frame (rare): concatenate.
                        Some(o) => {
                            o.data.extend_from_slice(&data);
                            o.keyframe |= keyframe;
                        }
                        None => {
                            out = Some(EncodedFrame {
                                data,
                                keyframe,
                                pts: self.packet.pts().unwrap_or(pts),
                            })
                        }
                    }
                }
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => break,
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(lavc(e)),
            }
        }
        Ok(out)
    }
}
