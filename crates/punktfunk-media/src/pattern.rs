//! The synthetic video source: moving, textured content (so the encoder does real work, as on a
//! desktop or game) with the frame stamp drawn into every frame.

use crate::frame::BgraFrame;
use crate::stamp::{draw_stamp_bgra, Stamp};

/// A test-pattern source of a fixed size.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    /// A textured image twice the frame in each direction, scrolled through diagonally.
    texture: Vec<u8>,
}

impl TestPattern {
    /// A source of `width × height` frames.
    pub fn new(width: u32, height: u32) -> TestPattern {
        let (tw, th) = (2 * width as usize, 2 * height as usize);
        let mut texture = vec![0u8; tw * th * 4];
        for (y, row) in texture.chunks_exact_mut(tw * 4).enumerate() {
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                // Colour gradients over a fine checkerboard, wrapping seamlessly at the edges of
                // the doubled texture (the scroll wraps around it).
                let (fx, fy) = (x as f32 / tw as f32, y as f32 / th as f32);
                let tex = if ((x >> 2) ^ (y >> 2)) & 1 == 0 {
                    0
                } else {
                    28
                };
                let wave =
                    |f: f32, k: f32| ((f * k * std::f32::consts::TAU).sin() * 0.5 + 0.5) * 200.0;
                px[0] = (wave(fx, 2.0) as u8).wrapping_add(tex);
                px[1] = (wave(fy, 3.0) as u8).wrapping_add(tex / 2);
                px[2] = (wave(fx + fy, 1.0) as u8) ^ tex;
                px[3] = 255;
            }
        }
        TestPattern {
            width,
            height,
            texture,
        }
    }

    /// Renders frame `index` with `capture_us` stamped into it.
    ///
    /// The picture: the texture scrolling diagonally (3 px right, 2 px down per frame) and four
    /// solid blocks moving across it at different speeds, then the stamp.
    pub fn render(&mut self, index: u32, capture_us: u64, out: &mut BgraFrame) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (tw, th) = (2 * w, 2 * h);
        out.width = self.width;
        out.height = self.height;
        out.data.resize(w * h * 4, 0);
        let t = index as usize;
        let (ox, oy) = ((t * 3) % w, (t * 2) % h);
        for (y, row) in out.data.chunks_exact_mut(w * 4).enumerate() {
            let src = ((y + oy) % th) * tw * 4 + ox * 4;
            row.copy_from_slice(&self.texture[src..src + w * 4]);
        }
        // Moving blocks, each a solid colour.
        let bs = (w.min(h) / 8).max(8);
        for k in 0..4usize {
            let span_x = w.saturating_sub(bs).max(1);
            let span_y = h.saturating_sub(bs).max(1);
            let x0 = (t * (3 + 2 * k) + k * w / 4) % span_x;
            let y0 = (t * (2 + k) + k * h / 5) % span_y;
            let colour = [
                [40u8, 200, 240, 255],
                [220, 60, 60, 255],
                [60, 220, 90, 255],
                [240, 240, 40, 255],
            ][k];
            for y in y0..(y0 + bs).min(h) {
                let row = &mut out.data[(y * w + x0) * 4..(y * w + (x0 + bs).min(w)) * 4];
                for px in row.chunks_exact_mut(4) {
                    px.copy_from_slice(&colour);
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
