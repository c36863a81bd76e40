//! Encodes the test pattern with the host's encoder settings, decodes every access unit and
//! checks each picture's stamp: a long run finds what the encoder alone does to the stamps
//! (no network involved).
//!
//! `cargo run --release -p punktfunk-media --example encode_soak -- [WxH] [FPS] [KBPS] [FRAMES]
//! [h264|hevc] [SLICES]` (defaults: 1280x720 60 10000 36000 h264 1).
use punktfunk_media::{
    open_encoder, read_stamp_luma, BgraFrame, Codec, Converter, Decoder, EncoderConfig,
    TestPattern, YuvFrame,
};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let mode = arg(0, "1280x720");
    let Some((w, h)) = mode
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
    else {
        eprintln!("encode_soak: mode must be WxH, got {mode:?}");
        std::process::exit(2);
    };
    let num = |i: usize, d: &str| -> u32 {
        arg(i, d).parse().unwrap_or_else(|_| {
            eprintln!("encode_soak: argument {} must be a number", i + 1);
            std::process::exit(2)
        })
    };
    let (fps, kbps, frames) = (num(1, "60"), num(2, "10000"), num(3, "36000"));
    let codec = match arg(4, "h264").as_str() {
        "h264" => Codec::H264,
        "hevc" => Codec::HEVC,
        other => {
            eprintln!("encode_soak: codec must be h264 or hevc, got {other:?}");
            std::process::exit(2);
        }
    };
    let slices = num(5, "1");
    let cfg = EncoderConfig {
        codec,
        width: w,
        height: h,
        fps,
        bitrate_kbps: kbps,
        prefer_hardware: false,
        slices,
        colour: Default::default(),
    };
    let run = || -> Result<(), punktfunk_media::MediaError> {
        let mut enc = open_encoder(&cfg)?;
        let mut dec = Decoder::new(codec)?;
        let mut pattern = TestPattern::new(w, h);
        let mut conv = Converter::new(w, h)?;
        let (mut bgra, mut yuv) = (BgraFrame::new(w, h), YuvFrame::default());
        let (mut illegible, mut wrong, mut pictures, mut bytes) = (Vec::new(), 0u32, 0u32, 0u64);
        let mut max_frame = 0usize;
        let t0 = Instant::now();
        for i in 0..frames {
            pattern.render(i, u64::from(i) * 1_000_000 / u64::from(fps), &mut bgra);
            conv.convert(&bgra, &mut yuv)?;
            let Some(f) = enc.encode(&yuv, i64::from(i), i == 0)? else {
                continue;
            };
            bytes += f.data.len() as u64;
            max_frame = max_frame.max(f.data.len());
            for pic in dec.decode(&f.data)? {
                match read_stamp_luma(&pic.y, pic.y_stride, pic.width, pic.height) {
                    Some(s) if s.frame == f.pts as u32 => {}
                    Some(_) => wrong += 1,
                    None => illegible.push(f.pts),
                }
                pictures += 1;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{} {w}x{h}@{fps} {kbps} kbit/s, {slices} slice(s): {pictures} pictures in {secs:.0} s \
             ({:.0} fps encode+decode), mean {:.0} kbit/s, largest frame {max_frame} B, \
             {} illegible stamps, {wrong} wrong stamps",
            enc.name(),
            f64::from(pictures) / secs,
            bytes as f64 * 8.0 / 1000.0 / (f64::from(frames) / f64::from(fps)),
            illegible.len()
        );
        if !illegible.is_empty() {
            println!("  illegible at frames {illegible:?}");
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("encode_soak: {e}");
        std::process::exit(1);
    }
}
