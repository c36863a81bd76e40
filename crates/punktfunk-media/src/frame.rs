//! Frame buffers passed between the pipeline stages.

/// A BGRx frame: 4 bytes per pixel (blue, green, red, unused), rows packed (stride = width × 4).
#[derive(Debug, Clone, Default)]
pub struct BgraFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub data: Vec<u8>,
}

impl BgraFrame {
    /// A black frame.
    pub fn new(width: u32, height: u32) -> BgraFrame {
        BgraFrame {
            width,
            height,
            data: vec![0; width as usize * height as usize * 4],
        }
    }
}

/// How the bytes of a packed 32-bit pixel are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Blue, green, red, unused (DRM/Wayland `XRGB8888` on little-endian machines).
    Bgrx,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Bgrx => 4,
        }
    }
}

/// A borrowed picture as a capture backend delivers it: packed pixels with a row stride.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next (at least `width × bytes per pixel`).
    pub stride: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// At least `stride × (height − 1) + width × bytes per pixel` bytes.
    pub data: &'a [u8],
}

impl BgraFrame {
    /// This frame as a [`FrameRef`].
    pub fn as_frame_ref(&self) -> FrameRef<'_> {
        FrameRef {
            width: self.width,
            height: self.height,
            stride: self.width as usize * 4,
            format: PixelFormat::Bgrx,
            data: &self.data,
        }
    }
}

/// Planar YUV 4:2:0 (I420): the Y plane (`width × height`), then U and V (`width/2 × height/2`
/// each), tightly packed. Sizes are even.
#[derive(Debug, Clone, Default)]
pub struct YuvFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3 / 2` bytes.
    pub data: Vec<u8>,
}

impl YuvFrame {
    /// Bytes of the luma plane.
    pub fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Bytes of one chroma plane.
    pub fn chroma_len(&self) -> usize {
        (self.width as usize / 2) * (self.height as usize / 2)
    }

    /// Makes `data` the right size for the dimensions.
    pub fn fit(&mut self) {
        self.data.resize(self.luma_len() + 2 * self.chroma_len(), 0);
    }

    /// The Y plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The U (Cb) plane.
    pub fn u(&self) -> &[u8] {
        let l = self.luma_len();
        &self.data[l..l + self.chroma_len()]
    }

    /// The V (Cr) plane.
    pub fn v(&self) -> &[u8] {
        let l = self.luma_len() + self.chroma_len();
        &self.data[l..l + self.chroma_len()]
    }
}
