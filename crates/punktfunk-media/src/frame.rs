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
