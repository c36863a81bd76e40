//! The synthetic video source: moving, textured content (so the encoder does real work, as on a
//! desktop or game) with the frame stamp drawn into every frame.

use crate::frame::BgraFrame;
use crate::stamp::{draw_stamp_bgra, Stamp};

/// A test-pattern source of a fixed size.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
}

impl TestPattern {
    /// A source of `width × height` frames.
    pub fn new(width: u32, height: u32) -> TestPattern {
        TestPattern { width, height }
    }

    /// Renders frame `index` with `capture_us` stamped into it.
    ///
    /// The picture: diagonal colour gradients scrolling at different speeds, a fine
    /// checkerboard texture, and four blocks moving across the frame.
    pub fn render(&mut self, index: u32, capture_us: u64, out: &mut BgraFrame) {
        let (w, h) = (self.width as usize, self.height as usize);
        out.width = self.width;
        out.height = self.height;
        out.data.resize(w * h * 4, 0);
        let t = index as usize;
        for (y, row) in out.data.chunks_exact_mut(w * 4).enumerate() {
            let gy = (y * 2 + t * 3) as u8;
            let ry = (y + t * 5) as u8;
            let tex_y = ((y >> 2) & 1) as u8 * 24;
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                let tex = tex_y ^ (((x >> 2) & 1) as u8 * 24);
                px[0] = (x as u8).wrapping_add((t * 7) as u8) ^ tex;
                px[1] = gy.wrapping_add((x >> 1) as u8);
                px[2] = ry.wrapping_sub((x >> 2) as u8) ^ tex;
                px[3] = 255;
            }
        }
        // Moving blocks, each a solid colour.
        let bs = (w.min(h) / 8).max(8);
        for k in 0..4usize {
            let span_x = w.saturating_sub(bs).max(1);
            let span_y = h.saturating_sub(bs).max(1);
            let x0 = (t * (3 + 2 * k) + k * w / 4) % span_x;
            let y0 = (t * (2 + k) + k * h / 5) % span_y;
            let colour = [
                [40u8, 200, 240],
                [220, 60, 60],
                [60, 220, 90],
                [240, 240, 40],
            ][k];
            for y in y0..(y0 + bs).min(h) {
                for x in x0..(x0 + bs).min(w) {
                    let p = (y * w + x) * 4;
                    out.data[p..p + 3].copy_from_slice(&colour);
                }
            }
        }
        draw_stamp_bgra(
            out,
            Stamp {
                frame: index,
                capture_us,
            },
        );
    }
}
