//! Real encoders and decoders (libavcodec): stamps survive lossy coding, keyframes come when
//! asked, hardware encoders fall back to software on this machine (no GPU), garbage never
//! panics the decoder.

use punktfunk_media::{
    open_encoder, read_stamp_luma, write_png, BgraFrame, Codec, Converter, Decoder, EncoderConfig,
    MediaError, Stamp, TestPattern, YuvFrame,
};

fn cfg(codec: Codec, w: u32, h: u32, kbps: u32) -> EncoderConfig {
    EncoderConfig {
        codec,
        width: w,
        height: h,
        fps: 30,
        bitrate_kbps: kbps,
        prefer_hardware: false,
        slices: 1,
        colour: Default::default(),
    }
}

/// Keyframe flags, decoded stamps, decoded sizes, total bytes.
type RoundTrip = (Vec<bool>, Vec<Option<Stamp>>, Vec<(u32, u32)>, usize);

/// Encodes `n` pattern frames (keyframe forced at `force`), decodes them, and returns
/// (keyframe flags, decoded stamps, decoded sizes, total bytes).
fn round_trip(c: &EncoderConfig, n: u32, force: Option<u32>) -> RoundTrip {
    let mut enc = open_encoder(c).unwrap();
    let mut dec = Decoder::new(c.codec).unwrap();
    let mut pat = TestPattern::new(c.width, c.height);
    let mut conv = Converter::new(c.width, c.height).unwrap();
    let (mut bgra, mut yuv) = (BgraFrame::default(), YuvFrame::default());
    let (mut keys, mut stamps, mut sizes, mut bytes) = (vec![], vec![], vec![], 0);
    for i in 0..n {
        pat.render(i, 1_000_000 + u64::from(i) * 33_333, &mut bgra);
        conv.convert(&bgra, &mut yuv).unwrap();
        let f = enc
            .encode(&yuv, i64::from(i), force == Some(i))
            .unwrap()
            .expect("zero-latency: one frame out per frame in");
        keys.push(f.keyframe);
        bytes += f.data.len();
        for d in dec.decode(&f.data).unwrap() {
            stamps.push(read_stamp_luma(&d.y, d.y_stride, d.width, d.height));
            sizes.push((d.width, d.height));
        }
    }
    (keys, stamps, sizes, bytes)
}

#[test]
fn h264_stamps_survive_and_keyframes_come_on_request() {
    let c = cfg(Codec::H264, 640, 360, 1000);
    let (keys, stamps, sizes, bytes) = round_trip(&c, 30, Some(20));
    assert!(keys[0], "first frame is a keyframe");
    assert!(
        keys[1..20].iter().all(|k| !k),
        "no keyframes unless asked: {keys:?}"
    );
    assert!(keys[20], "forced keyframe");
    assert_eq!(
        stamps.len(),
        30,
        "every frame decoded at once (no decoder delay)"
    );
    for (i, s) in stamps.iter().enumerate() {
        assert_eq!(
            *s,
            Some(Stamp {
                frame: i as u32,
                capture_us: 1_000_000 + i as u64 * 33_333
            }),
            "frame {i}"
        );
    }
    assert!(sizes.iter().all(|s| *s == (640, 360)));
    // ~1 Mbit/s at 30 fps is ~4 KB per frame; allow the keyframes' excess.
    assert!(
        bytes < 30 * 4200 * 3,
        "bitrate far above target: {bytes} bytes"
    );
}

#[test]
fn hevc_round_trip() {
    let (keys, stamps, sizes, _) = round_trip(&cfg(Codec::HEVC, 320, 180, 500), 8, Some(5));
    assert!(keys[0] && keys[5] && !keys[1]);
    assert!(stamps.iter().all(Option::is_some), "{stamps:?}");
    assert!(sizes.iter().all(|s| *s == (320, 180)));
}

#[test]
fn av1_round_trip_or_a_clean_error() {
    let c = cfg(Codec::AV1, 320, 180, 500);
    match open_encoder(&c) {
        Ok(e) => {
            eprintln!("AV1 encoder: {}", e.name());
            let (keys, stamps, _, _) = round_trip(&c, 6, None);
            assert!(keys[0]);
            assert_eq!(stamps.iter().filter(|s| s.is_some()).count(), stamps.len());
            assert!(!stamps.is_empty());
        }
        Err(e) => assert!(matches!(e, MediaError::NoEncoder { .. }), "{e}"),
    }
}

#[test]
fn hardware_preference_falls_back_to_software_here() {
    let enc = open_encoder(&EncoderConfig {
        prefer_hardware: true,
        slices: 1,
        colour: Default::default(),
        ..cfg(Codec::H264, 320, 180, 500)
    })
    .unwrap();
    assert_eq!(enc.name(), "libx264", "this machine has no GPU");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(open_encoder(&cfg(Codec::H264, 321, 180, 500)).is_err());
    assert!(matches!(
        open_encoder(&cfg(Codec(77), 320, 180, 500)),
        Err(MediaError::NoEncoder { .. })
    ));
    let mut dec = Decoder::new(Codec::H264).unwrap();
    for garbage in [
        &[][..],
        &[0u8; 3],
        &[0, 0, 0, 1, 0x65, 0xFF, 0x00, 0x12],
        &[0xAB; 5000],
    ] {
        let _ = dec.decode(garbage); // Err or no frames, never a panic
    }
    let mut enc = open_encoder(&cfg(Codec::H264, 320, 180, 500)).unwrap();
    let wrong = YuvFrame {
        width: 640,
        height: 360,
        data: vec![0; 640 * 360 * 3 / 2],
    };
    assert!(enc.encode(&wrong, 0, false).is_err());
}

#[test]
fn png_output() {
    let c = cfg(Codec::H264, 320, 180, 500);
    let mut enc = open_encoder(&c).unwrap();
    let mut dec = Decoder::new(Codec::H264).unwrap();
    let (mut bgra, mut yuv) = (BgraFrame::default(), YuvFrame::default());
    TestPattern::new(320, 180).render(0, 0, &mut bgra);
    Converter::new(320, 180)
        .unwrap()
        .convert(&bgra, &mut yuv)
        .unwrap();
    let f = enc.encode(&yuv, 0, true).unwrap().unwrap();
    let d = dec.decode(&f.data).unwrap().remove(0);
    let dir = std::env::temp_dir().join(format!("pf-png-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("frame.png");
    write_png(&d, &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}
