//! Colour conversion BGRx → I420 with `dcv-color-primitives` (SIMD, AVX2 where available), in
//! the matrix and range of a [`Colour`] (BT.601 limited range by default), which the encoders
//! are configured to signal in the bitstream.

use crate::frame::{BgraFrame, FrameRef, PixelFormat, YuvFrame};
use crate::MediaError;
use dcv_color_primitives as dcp;

/// Colour matrix and range of the YUV frames (SDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colour {
    /// BT.601, limited range (16–235).
    #[default]
    Bt601Limited,
    /// BT.601, full range (0–255).
    Bt601Full,
    /// BT.709, limited range.
    Bt709Limited,
    /// BT.709, full range.
    Bt709Full,
}

impl Colour {
    /// BT.709 rather than BT.601.
    pub fn is_bt709(self) -> bool {
        matches!(self, Colour::Bt709Limited | Colour::Bt709Full)
    }

    /// Full range rather than limited.
    pub fn is_full_range(self) -> bool {
        matches!(self, Colour::Bt601Full | Colour::Bt709Full)
    }

    fn dcp(self) -> dcp::ColorSpace {
        match self {
            Colour::Bt601Limited => dcp::ColorSpace::Bt601,
            Colour::Bt601Full => dcp::ColorSpace::Bt601FR,
            Colour::Bt709Limited => dcp::ColorSpace::Bt709,
            Colour::Bt709Full => dcp::ColorSpace::Bt709FR,
        }
    }
}

impl std::fmt::Display for Colour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Colour::Bt601Limited => "BT.601 limited",
            Colour::Bt601Full => "BT.601 full",
            Colour::Bt709Limited => "BT.709 limited",
            Colour::Bt709Full => "BT.709 full",
        })
    }
}

/// A converter for one frame size.
#[derive(Debug)]
pub struct Converter {
    width: u32,
    height: u32,
    colour: Colour,
}

impl Converter {
    /// A BT.601 limited-range converter for `width × height` (both even, non-zero).
    pub fn new(width: u32, height: u32) -> Result<Converter, MediaError> {
        Converter::with_colour(width, height, Colour::default())
    }

    /// A converter producing `colour`.
    pub fn with_colour(width: u32, height: u32, colour: Colour) -> Result<Converter, MediaError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(MediaError::Geometry(format!(
                "{width}x{height}: sizes must be even and non-zero"
            )));
        }
        Ok(Converter {
            width,
            height,
            colour,
        })
    }

    /// Converts `src` into `dst` (resized as needed).
    pub fn convert(&mut self, src: &BgraFrame, dst: &mut YuvFrame) -> Result<(), MediaError> {
        if src.data.len() != src.width as usize * src.height as usize * 4 {
            return Err(MediaError::Geometry(format!(
                "frame {}x{} with {} bytes",
                src.width,
                src.height,
                src.data.len(),
            )));
        }
        self.convert_ref(&src.as_frame_ref(), dst)
    }

    /// Converts a strided picture (as capture delivers it) into `dst` (resized as needed).
    pub fn convert_ref(
        &mut self,
        src: &FrameRef<'_>,
        dst: &mut YuvFrame,
    ) -> Result<(), MediaError> {
        let row = self.width as usize * src.format.bytes_per_pixel();
        let needed = src.stride * (self.height as usize).saturating_sub(1) + row;
        if src.width != self.width
            || src.height != self.height
            || src.stride < row
            || src.data.len() < needed
        {
            return Err(MediaError::Geometry(format!(
                "frame {}x{} (stride {}, {} bytes) given to a {}x{} converter",
                src.width,
                src.height,
                src.stride,
                src.data.len(),
                self.width,
                self.height
            )));
        }
        let pixel_format = match src.format {
            PixelFormat::Bgrx => dcp::PixelFormat::Bgra,
        };
        dst.width = self.width;
        dst.height = self.height;
        dst.fit();
        let src_format = dcp::ImageFormat {
            pixel_format,
            color_space: dcp::ColorSpace::Rgb,
            num_planes: 1,
        };
        let dst_format = dcp::ImageFormat {
            pixel_format: dcp::PixelFormat::I420,
            color_space: self.colour.dcp(),
            num_planes: 3,
        };
        let (l, c) = (dst.luma_len(), dst.chroma_len());
        let (y, rest) = dst.data.split_at_mut(l);
        let (u, v) = rest.split_at_mut(c);
        dcp::convert_image(
            self.width,
            self.height,
            &src_format,
            Some(&[src.stride]),
            &[src.data],
            &dst_format,
            None,
            &mut [y, u, v],
        )
        .map_err(|e| MediaError::Convert(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strided_frame_converts_like_the_packed_one() {
        let (w, h) = (32u32, 8u32);
        let packed = BgraFrame {
            width: w,
            height: h,
            data: (0..w * h * 4).map(|i| (i * 7 % 251) as u8).collect(),
        };
        let stride = w as usize * 4 + 64;
        let mut padded = vec![0xEEu8; stride * h as usize];
        for (row, src) in padded
            .chunks_mut(stride)
            .zip(packed.data.chunks(w as usize * 4))
        {
            row[..src.len()].copy_from_slice(src);
        }
        let mut conv = Converter::new(w, h).unwrap();
        let (mut a, mut b) = (YuvFrame::default(), YuvFrame::default());
        conv.convert(&packed, &mut a).unwrap();
        let strided = FrameRef {
            width: w,
            height: h,
            stride,
            format: PixelFormat::Bgrx,
            data: &padded,
        };
        conv.convert_ref(&strided, &mut b).unwrap();
        assert_eq!(a.data, b.data);
        let short = FrameRef {
            data: &padded[..stride * 7],
            ..strided
        };
        assert!(conv.convert_ref(&short, &mut b).is_err());
        let narrow = FrameRef {
            stride: 16,
            ..strided
        };
        assert!(conv.convert_ref(&narrow, &mut b).is_err());
    }

    #[test]
    fn known_colours_have_limited_range_luma() {
        let mut conv = Converter::new(16, 16).unwrap();
        for (bgr, want_y) in [(0u8, 16u8), (255, 235), (128, 126)] {
            let src = BgraFrame {
                width: 16,
                height: 16,
                data: [bgr, bgr, bgr, 255].repeat(256),
            };
            let mut dst = YuvFrame::default();
            conv.convert(&src, &mut dst).unwrap();
            for &y in dst.y() {
                assert!(
                    (y as i32 - want_y as i32).abs() <= 1,
                    "grey {bgr}: Y {y}, want {want_y}"
                );
            }
            for &c in dst.u().iter().chain(dst.v()) {
                assert!(
                    (c as i32 - 128).abs() <= 1,
                    "grey has neutral chroma, got {c}"
                );
            }
        }
        assert!(Converter::new(15, 16).is_err());
        // Full range: black is 0 and white 255; BT.709 weights green more than BT.601.
        let mut full = Converter::with_colour(16, 16, Colour::Bt709Full).unwrap();
        for (bgr, want_y) in [
            ([0u8, 0, 0], 0u8),
            ([255, 255, 255], 255),
            ([0, 255, 0], 182),
        ] {
            let src = BgraFrame {
                width: 16,
                height: 16,
                data: [bgr[0], bgr[1], bgr[2], 255].repeat(256),
            };
            let mut dst = YuvFrame::default();
            full.convert(&src, &mut dst).unwrap();
            let y = dst.y()[0];
            assert!(
                (y as i32 - want_y as i32).abs() <= 2,
                "{bgr:?}: Y {y}, want {want_y}"
            );
        }
        let bad = BgraFrame {
            width: 8,
            height: 8,
            data: vec![0; 256],
        };
        assert!(conv.convert(&bad, &mut YuvFrame::default()).is_err());
    }
}
