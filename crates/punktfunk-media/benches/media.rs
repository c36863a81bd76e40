//! Per-stage costs of the host's video pipeline at 1280x720 and 1920x1080: rendering the test
//! pattern, colour conversion (beside a memcpy of the same bytes), x264 encoding (ultrafast,
//! zerolatency) and decoding.
//!
//! `cargo bench -p punktfunk-media --bench media`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punktfunk_media::{
    open_encoder, BgraFrame, Codec, Converter, Decoder, EncoderConfig, TestPattern, YuvFrame,
};
use std::hint::black_box;
use std::time::Duration;

fn stages(c: &mut Criterion) {
    for (w, h, kbps) in [(1280u32, 720u32, 10_000u32), (1920, 1080, 20_000)] {
        let mut g = c.benchmark_group(format!("media/{w}x{h}"));
        g.measurement_time(Duration::from_secs(4));
        g.sample_size(30);
        g.throughput(Throughput::Elements(1));
        let mut pat = TestPattern::new(w, h);
        let mut bgra = BgraFrame::default();
        pat.render(0, 0, &mut bgra);
        let mut i = 0u32;
        g.bench_function("render_pattern", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                pat.render(i, 0, &mut bgra)
            })
        });
        let mut copy = vec![0u8; bgra.data.len()];
        g.bench_function("baseline/memcpy_bgra", |b| {
            b.iter(|| copy.copy_from_slice(black_box(&bgra.data)))
        });
        let mut conv = Converter::new(w, h).unwrap();
        let mut yuv = YuvFrame::default();
        g.bench_function("convert_bgra_to_i420", |b| {
            b.iter(|| conv.convert(&bgra, &mut yuv).unwrap())
        });

        // Encode a moving sequence (a static frame would be almost free to encode).
        let frames: Vec<YuvFrame> = (0..60)
            .map(|k| {
                pat.render(k, 0, &mut bgra);
                let mut y = YuvFrame::default();
                conv.convert(&bgra, &mut y).unwrap();
                y
            })
            .collect();
        let cfg = EncoderConfig {
            codec: Codec::H264,
            width: w,
            height: h,
            fps: 60,
            bitrate_kbps: kbps,
            prefer_hardware: false,
            slices: 1,
            colour: Default::default(),
        };
        let mut enc = open_encoder(&cfg).unwrap();
        let mut n = 0usize;
        let mut encoded = Vec::new();
        g.bench_function("encode_x264", |b| {
            b.iter(|| {
                let f = enc
                    .encode(&frames[n % frames.len()], n as i64, n == 0)
                    .unwrap();
                n += 1;
                black_box(f)
            })
        });
        // A decodable sequence: keyframe then P-frames.
        let mut enc = open_encoder(&cfg).unwrap();
        for (k, f) in frames.iter().enumerate() {
            encoded.push(enc.encode(f, k as i64, k == 0).unwrap().unwrap().data);
        }
        let mut dec = Decoder::new(Codec::H264).unwrap();
        let mut k = 0usize;
        g.bench_function("decode_h264", |b| {
            b.iter(|| {
                if k.is_multiple_of(encoded.len()) {
                    dec = Decoder::new(Codec::H264).unwrap();
                }
                let out = dec.decode(&encoded[k % encoded.len()]).unwrap();
                k += 1;
                black_box(out)
            })
        });
        g.finish();
    }
}

criterion_group!(media, stages);
criterion_main!(media);
