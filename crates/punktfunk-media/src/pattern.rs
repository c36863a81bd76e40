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
        // The offsets wrap at the texture's size, where it repeats seamlessly: the picture
        // never jumps (a jump would be a scene cut every few seconds).
        let (ox, oy) = ((t * 3) % tw, (t * 2) % th);
        let first = (tw - ox).min(w);
        for (y, row) in out.data.chunks_exact_mut(w * 4).enumerate() {
            let line = &self.texture[((y + oy) % th) * tw * 4..][..tw * 4];
            row[..first * 4].copy_from_slice(&line[ox * 4..(ox + first) * 4]);
            row[first * 4..].copy_from_slice(&line[..(w - first) * 4]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each frame is the previous one moved 3 px left and 2 px up (outside the four blocks and
    /// the stamp), at every frame, across the points where the scroll offsets wrap.
    #[test]
    fn the_scroll_never_jumps() {
        let (w, h) = (64usize, 48usize);
        let mut p = TestPattern::new(w as u32, h as u32);
        let (mut a, mut b) = (BgraFrame::new(64, 48), BgraFrame::new(64, 48));
        p.render(0, 0, &mut a);
        // 3 px a frame wraps 128 px of texture at frame 43, 2 px wraps 96 at frame 48.
        for t in 1..200u32 {
            p.render(t, 0, &mut b);
            fn px(f: &BgraFrame, x: usize, y: usize) -> &[u8] {
                &f.data[(y * f.width as usize + x) * 4..][..4]
            }
            let mut same = 0;
            for y in 0..h - 2 {
                for x in 0..w - 3 {
                    same += usize::from(px(&b, x, y) == px(&a, x + 3, y + 2));
                }
            }
            let share = same as f64 / ((w - 3) * (h - 2)) as f64;
            assert!(
                share > 0.75,
                "frame {t}: only {share:.2} of the picture moved along"
            );
            std::mem::swap(&mut a, &mut b);
        }
    }
}
