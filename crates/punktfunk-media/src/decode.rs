//! Video decoding through libavcodec, configured for low delay (no frame threading, the
//! low-delay flag), and PNG output of a decoded frame.

use crate::encode::init;
use crate::MediaError;
use ffmpeg_next as ff;
use punktfunk_core::control::Codec;
use std::path::Path;

/// A decoded picture as planar 4:2:0 (the planes are copies).
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma plane.
    pub y: Vec<u8>,
    /// Bytes per luma row.
    pub y_stride: usize,
    /// Cb plane.
    pub u: Vec<u8>,
    /// Cr plane.
    pub v: Vec<u8>,
    /// Bytes per chroma row.
    pub uv_stride: usize,
}

/// A libavcodec decoder.
pub struct Decoder {
    dec: ff::decoder::Video,
    frame: ff::frame::Video,
}

// SAFETY: the decoder context and frame are owned exclusively by this value and only used
// through `&mut self`.
unsafe impl Send for Decoder {}

impl Decoder {
    /// A decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Decoder, MediaError> {
        init();
        let id = match codec {
            Codec::H264 => ff::codec::Id::H264,
            Codec::HEVC => ff::codec::Id::HEVC,
            Codec::AV1 => ff::codec::Id::AV1,
            other => return Err(MediaError::Codec(format!("no decoder for codec {other}"))),
        };
        // For AV1 prefer libdav1d, the fast decoder.
        let found = if id == ff::codec::Id::AV1 {
            ff::decoder::find_by_name("libdav1d").or_else(|| ff::decoder::find(id))
        } else {
            ff::decoder::find(id)
        };
        let lavc = ff::decoder::find(id).and(found).ok_or_else(|| {
            MediaError::Codec(format!(
                "no {} decoder in this libavcodec build",
                codec.name()
            ))
        })?;
        let mut ctx = ff::codec::context::Context::new_with_codec(lavc);
        ctx.set_flags(ff::codec::Flags::LOW_DELAY);
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        let dec = ctx
            .decoder()
            .video()
            .map_err(|e| MediaError::Codec(format!("opening the {} decoder: {e}", codec.name())))?;
        tracing::info!(decoder = lavc.name(), "decoder opened");
        Ok(Decoder {
            dec,
            frame: ff::frame::Video::empty(),
        })
    }

    /// Decodes one access unit; returns the pictures that came out (usually one).
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<DecodedFrame>, MediaError> {
        let packet = ff::Packet::copy(data);
        self.dec
            .send_packet(&packet)
            .map_err(|e| MediaError::Codec(format!("decoding: {e}")))?;
        let mut out = Vec::new();
        while self.dec.receive_frame(&mut self.frame).is_ok() {
            let f = &self.frame;
            match f.format() {
                ff::format::Pixel::YUV420P | ff::format::Pixel::YUVJ420P => {}
                other => {
                    return Err(MediaError::Codec(format!(
                        "decoder produced {other:?}, expected 4:2:0 8-bit"
                    )))
                }
            }
            let (w, h) = (f.width(), f.height());
            let copy = |i: usize, rows: usize| f.data(i)[..f.stride(i) * rows].to_vec();
            out.push(DecodedFrame {
                width: w,
                height: h,
                y: copy(0, h as usize),
                y_stride: f.stride(0),
                u: copy(1, h as usize / 2),
                v: copy(2, h as usize / 2),
                uv_stride: f.stride(1),
            });
        }
        Ok(out)
    }
}

/// Writes `frame` as an 8-bit RGB PNG (BT.601 limited range to RGB).
pub fn write_png(frame: &DecodedFrame, path: &Path) -> Result<(), MediaError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let yy = (frame.y[y * frame.y_stride + x] as f32 - 16.0) * 1.164;
            let u = frame.u[(y / 2) * frame.uv_stride + x / 2] as f32 - 128.0;
            let v = frame.v[(y / 2) * frame.uv_stride + x / 2] as f32 - 128.0;
            let p = (y * w + x) * 3;
            rgb[p] = (yy + 1.596 * v).clamp(0.0, 255.0) as u8;
            rgb[p + 1] = (yy - 0.392 * u - 0.813 * v).clamp(0.0, 255.0) as u8;
            rgb[p + 2] = (yy + 2.017 * u).clamp(0.0, 255.0) as u8;
        }
    }
    let io = |e: std::io::Error| MediaError::Io(format!("{}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), frame.width, frame.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc
        .write_header()
        .map_err(|e| MediaError::Io(format!("{}: {e}", path.display())))?;
    writer
        .write_image_data(&rgb)
        .map_err(|e| MediaError::Io(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// What [`probe_stream_file`] found in a stream file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Codec name as libavformat identified it (`h264`, `hevc`, `av1`).
    pub codec: String,
    /// Size of the last decoded picture.
    pub width: u32,
    /// Height of the last decoded picture.
    pub height: u32,
    /// Pictures decoded from the whole file.
    pub frames: u64,
    /// Pictures whose stamp reads back and continues the previous one (frame number + 1).
    pub stamps_in_sequence: u64,
    /// Pictures whose stamp reads back but skips ahead (frames the stream left out, e.g. after
    /// a loss until the next keyframe).
    pub stamp_jumps: u64,
    /// Pictures whose stamp reads back but goes backwards or repeats.
    pub stamps_backwards: u64,
    /// Pictures whose stamp does not read back at all.
    pub stamps_illegible: u64,
    /// The first pictures (up to 16) whose stamp is unreadable or out of sequence: picture
    /// position in the file and the stamp read, if any.
    pub stamp_breaks: Vec<(u64, Option<u32>)>,
}

/// Opens a stream file the way a player does (libavformat probing the raw elementary stream),
/// decodes every picture and reports what it found: proof that the file plays.
pub fn probe_stream_file(path: &Path) -> Result<StreamInfo, MediaError> {
    init();
    let err = |e: ff::Error| MediaError::Codec(format!("{}: {e}", path.display()));
    let mut input = ff::format::input(&path).map_err(err)?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| MediaError::Codec(format!("{}: no video stream", path.display())))?;
    let index = stream.index();
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters()).map_err(err)?;
    let mut dec = ctx.decoder().video().map_err(err)?;
    let codec = dec
        .codec()
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let mut frame = ff::frame::Video::empty();
    let mut info = StreamInfo {
        codec,
        width: 0,
        height: 0,
        frames: 0,
        stamps_in_sequence: 0,
        stamp_jumps: 0,
        stamps_backwards: 0,
        stamps_illegible: 0,
        stamp_breaks: Vec::new(),
    };
    // The last readable stamp and the picture it was on: a later picture p must carry
    // last + (p − its picture).
    let mut last: Option<(u32, u64)> = None;
    let mut take = |dec: &mut ff::decoder::Video, info: &mut StreamInfo| {
        while dec.receive_frame(&mut frame).is_ok() {
            info.width = frame.width();
            info.height = frame.height();
            let stamp =
                crate::read_stamp_luma(frame.data(0), frame.stride(0), info.width, info.height)
                    .map(|s| s.frame);
            let pos = info.frames;
            let expected = last.map(|(l, lp)| u64::from(l) + (pos - lp));
            let in_sequence = match (stamp, expected) {
                (Some(n), e) if e.is_none_or(|e| u64::from(n) == e) => {
                    info.stamps_in_sequence += 1;
                    true
                }
                (Some(n), Some(e)) if u64::from(n) > e => {
                    info.stamp_jumps += 1;
                    false
                }
                (Some(_), _) => {
                    info.stamps_backwards += 1;
                    false
                }
                (None, _) => {
                    info.stamps_illegible += 1;
                    false
                }
            };
            if !in_sequence && info.stamp_breaks.len() < 16 {
                info.stamp_breaks.push((pos, stamp));
            }
            if let Some(n) = stamp {
                last = Some((n, pos));
            }
            info.frames += 1;
        }
    };
    for (s, packet) in input.packets() {
        if s.index() == index && dec.send_packet(&packet).is_ok() {
            take(&mut dec, &mut info);
        }
    }
    let _ = dec.send_eof();
    take(&mut dec, &mut info);
    Ok(info)
}
