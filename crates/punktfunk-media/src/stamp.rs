//! The frame stamp: frame number and capture time drawn into the picture as large black and
//! white cells, so a client can read them back from decoded pixels and prove which frame it
//! shows and how old it is.
//!
//! 112 cells in 4 rows of 28 at the top-left corner: 32 bits of frame number, 64 bits of
//! capture time (µs, host clock), 16 bits of CRC-16/CCITT over those 12 bytes, most significant
//! bit first, row by row. A cell is `max(8, width / 56)` pixels square (rounded down to even),
//! so the stamp spans half the width and survives 4:2:0 subsampling and lossy encoding: the
//! reader averages the luma of each cell's central quarter and thresholds at mid-grey.

use crate::frame::BgraFrame;

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Frame number.
    pub frame: u32,
    /// Capture time, µs on the host's clock.
    pub capture_us: u64,
}

const COLS: u32 = 28;
const ROWS: u32 = 4;
const BITS: usize = (COLS * ROWS) as usize;

/// Side of one cell in pixels for a frame `width` wide.
pub fn cell_size(width: u32) -> u32 {
    ((width / (2 * COLS)).max(8)) & !1
}

/// Whether a stamp fits a frame of this size.
pub fn fits(width: u32, height: u32) -> bool {
    let c = cell_size(width);
    c * COLS <= width && c * ROWS <= height
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn bits(stamp: Stamp) -> [bool; BITS] {
    let mut bytes = [0u8; 14];
    bytes[..4].copy_from_slice(&stamp.frame.to_be_bytes());
    bytes[4..12].copy_from_slice(&stamp.capture_us.to_be_bytes());
    let crc = crc16(&bytes[..12]);
    bytes[12..].copy_from_slice(&crc.to_be_bytes());
    std::array::from_fn(|i| bytes[i / 8] & (0x80 >> (i % 8)) != 0)
}

/// Draws `stamp` into the top-left corner of `frame` (nothing if the frame is too small).
pub fn draw_stamp_bgra(frame: &mut BgraFrame, stamp: Stamp) {
    if !fits(frame.width, frame.height) {
        return;
    }
    let c = cell_size(frame.width) as usize;
    let stride = frame.width as usize * 4;
    for (i, bit) in bits(stamp).iter().enumerate() {
        let (cx, cy) = (i % COLS as usize, i / COLS as usize);
        let v = if *bit { 255 } else { 0 };
        for y in cy * c..(cy + 1) * c {
            let row = &mut frame.data[y * stride + cx * c * 4..y * stride + (cx + 1) * c * 4];
            row.fill(v);
        }
    }
}

/// Reads a stamp from a luma plane (`stride` bytes per row). `None` if the frame is too small
/// or the check bits do not match (a damaged or missing stamp).
pub fn read_stamp_luma(y: &[u8], stride: usize, width: u32, height: u32) -> Option<Stamp> {
    if !fits(width, height) || stride < width as usize || y.len() < stride * height as usize {
        return None;
    }
    let c = cell_size(width) as usize;
    let (lo, hi) = (c / 4, c - c / 4);
    let mut bytes = [0u8; 14];
    for i in 0..BITS {
        let (cx, cy) = (i % COLS as usize, i / COLS as usize);
        let mut sum = 0u32;
        let mut n = 0u32;
        for yy in cy * c + lo..cy * c + hi {
            for xx in cx * c + lo..cx * c + hi {
                sum += u32::from(y[yy * stride + xx]);
                n += 1;
            }
        }
        if sum > 128 * n {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    let crc = u16::from_be_bytes([bytes[12], bytes[13]]);
    if crc != crc16(&bytes[..12]) {
        return None;
    }
    Some(Stamp {
        frame: u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")),
        capture_us: u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Luma of a BGRA frame (BT.601 weights, full range: the reader only thresholds).
    fn luma(f: &BgraFrame) -> Vec<u8> {
        f.data
            .chunks(4)
            .map(|p| ((29 * p[0] as u32 + 150 * p[1] as u32 + 77 * p[2] as u32) >> 8) as u8)
            .collect()
    }

    #[test]
    fn stamps_round_trip_at_every_size() {
        for (w, h) in [
            (320, 180),
            (640, 360),
            (1280, 720),
            (1920, 1080),
            (3840, 2160),
        ] {
            for s in [
                Stamp {
                    frame: 0,
                    capture_us: 0,
                },
                Stamp {
                    frame: u32::MAX,
                    capture_us: u64::MAX,
                },
                Stamp {
                    frame: 12345,
                    capture_us: 987_654_321,
                },
            ] {
                let mut f = BgraFrame::new(w, h);
                f.data
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i * 7) as u8);
                draw_stamp_bgra(&mut f, s);
                assert_eq!(
                    read_stamp_luma(&luma(&f), w as usize, w, h),
                    Some(s),
                    "{w}x{h}"
                );
            }
        }
    }

    #[test]
    fn damaged_or_missing_stamps_are_rejected() {
        let (w, h) = (640, 360);
        let mut f = BgraFrame::new(w, h);
        draw_stamp_bgra(
            &mut f,
            Stamp {
                frame: 7,
                capture_us: 99,
            },
        );
        let mut y = luma(&f);
        let c = cell_size(w) as usize;
        // Flip one cell.
        for yy in 0..c {
            for xx in 3 * c..4 * c {
                y[yy * w as usize + xx] ^= 0xFF;
            }
        }
        assert_eq!(read_stamp_luma(&y, w as usize, w, h), None);
        assert_eq!(
            read_stamp_luma(&vec![0u8; (w * h) as usize], w as usize, w, h),
            None,
            "all-black: CRC of zeros is not zero"
        );
        assert_eq!(read_stamp_luma(&[0u8; 10], 10, 10, 1), None);
    }
}
