//! punktfunk-media: everything between pixels and an elementary stream.
//!
//! - [`pattern`]: the synthetic source (moving, textured) with a [`stamp`] in every frame.
//! - [`stamp`]: frame number and capture time as pixels, readable after lossy coding.
//! - [`convert`]: BGRx → I420 colour conversion (`dcv-color-primitives`).
//! - [`encode`]: low-latency encoders through libavcodec (hardware first when present).
//! - [`decode`]: libavcodec decoding and PNG output.
//!
//! This is the only crate that binds FFmpeg.

pub mod convert;
pub mod decode;
pub mod encode;
pub mod frame;
pub mod pattern;
pub mod stamp;

pub use convert::{Colour, Converter};
pub use decode::{probe_stream_file, write_png, DecodedFrame, Decoder, StreamInfo};
pub use encode::{
    open_encoder, probe_encoders, EncodedFrame, Encoder, EncoderConfig, EncoderProbe,
};
pub use frame::{BgraFrame, FrameRef, PixelFormat, YuvFrame};
pub use pattern::TestPattern;
pub use punktfunk_core::control::Codec;
pub use stamp::{draw_stamp_bgra, read_stamp_luma, Stamp};

/// Media failures, each naming what failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// A frame or configuration of the wrong size.
    #[error("bad geometry: {0}")]
    Geometry(String),
    /// Colour conversion failed.
    #[error("colour conversion: {0}")]
    Convert(String),
    /// libavcodec refused something.
    #[error("{0}")]
    Codec(String),
    /// No encoder for the codec could be opened.
    #[error("no {codec} encoder could be opened (tried: {tried})")]
    NoEncoder {
        /// Codec name.
        codec: String,
        /// Each candidate and why it failed.
        tried: String,
    },
    /// File output failed.
    #[error("{0}")]
    Io(String),
}
