//! FEC tests: known answers for the Moonlight GF(2^8) matrix, agreement between every SIMD level
//! and an independent reference, and reconstruction of any loss pattern within the parity budget
//! for both codes.

use proptest::prelude::*;
use punktfunk_core::fec::gf8::{gemm, parity_coefficient, SimdLevel};
use punktfunk_core::fec::{ErasureCode, FecError, Gf16, Gf8Cauchy, ShardsMut};

/// Reference multiply, written independently of the crate's tables: shift-and-add with
/// reduction by 0x11D.
fn ref_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1D;
        }
        b >>= 1;
    }
    p
}

/// Reference inverse by exhaustive search.
fn ref_inv(a: u8) -> u8 {
    (1..=255u8)
        .find(|&b| ref_mul(a, b) == 1)
        .expect("non-zero has an inverse")
}

/// Reference encoder straight from the matrix definition `P[j][i] = inv((ps + i) XOR j)`.
fn ref_parity(data: &[Vec<u8>], ps: usize) -> Vec<Vec<u8>> {
    let len = data[0].len();
    (0..ps)
        .map(|j| {
            (0..len)
                .map(|k| {
                    data.iter().enumerate().fold(0u8, |acc, (i, d)| {
                        acc ^ ref_mul(ref_inv(((ps + i) ^ j) as u8), d[k])
                    })
                })
                .collect()
        })
        .collect()
}

fn encode_with(code: &mut dyn ErasureCode, data: &[Vec<u8>], ps: usize) -> Vec<Vec<u8>> {
    let len = data[0].len();
    let mut buf: Vec<u8> = data.concat();
    buf.resize((data.len() + ps) * len, 0xEE);
    let mut view = ShardsMut::contiguous(&mut buf, len, data.len() + ps).unwrap();
    code.encode(&mut view, data.len(), ps).unwrap();
    buf[data.len() * len..]
        .chunks(len)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Hand-computed answers. With ds = 4, ps = 2 the matrix is (gamestream-protocol.md §7.5)
/// row 0 = inv(2) inv(3) inv(4) inv(5) = 8E F4 47 A7 and row 1 = inv(3) inv(2) inv(5) inv(4) =
/// F4 8E A7 47. For one-byte data shards 01 02 03 04, multiplying by hand (x·2 is a left shift,
/// XOR 0x11D when bit 8 is set; x·3 = x·2 XOR x; x·4 = (x·2)·2):
///   F4·2 = 1E8^11D = F5;  47·3 = 8E^47 = C9;  A7·4 = (14E^11D = 53)·2 = A6
///   parity 0 = 8E ^ F5 ^ C9 ^ A6 = 14
///   8E·2 = 11C^11D = 01;  A7·3 = 53^A7 = F4;  47·4 = 8E·2 = 01
///   parity 1 = F4 ^ 01 ^ F4 ^ 01 = 00
/// With ds = 1, ps = 2 (a one-packet frame) the parity shards are the data times 8E and F4:
/// for data 01 that is 8E, F4; for data 02 it is 8E·2 = 01 and F4·2 = F5.
#[test]
fn gf8_known_answers() {
    let mut gf8 = Gf8Cauchy::new();
    let p = encode_with(&mut gf8, &[vec![1], vec![2], vec![3], vec![4]], 2);
    assert_eq!(p, [vec![0x14], vec![0x00]]);
    let p = encode_with(&mut gf8, &[vec![1, 2]], 2);
    assert_eq!(p, [vec![0x8E, 0x01], vec![0xF4, 0xF5]]);
    // The public coefficient accessor agrees with the worked example.
    let row1: Vec<u8> = (0..4)
        .map(|i| parity_coefficient(2, 1, i).unwrap())
        .collect();
    assert_eq!(row1, [0xF4, 0x8E, 0xA7, 0x47]);
}

/// Every kernel (GFNI, AVX2, SSSE3, scalar: whichever this CPU has) equals the reference encoder on
/// shard lengths that exercise the vector body and the scalar tail.
#[test]
fn gf8_every_level_matches_reference() {
    let levels: Vec<SimdLevel> = [
        SimdLevel::Scalar,
        SimdLevel::Ssse3,
        SimdLevel::Avx2,
        SimdLevel::Gfni,
    ]
    .into_iter()
    .filter(|l| l.is_supported())
    .collect();
    eprintln!("testing levels {levels:?}");
    for (ds, ps, len) in [
        (1, 2, 1),
        (4, 2, 33),
        (10, 3, 64),
        (32, 8, 1400),
        (17, 9, 95),
        (200, 55, 48),
    ] {
        let data: Vec<Vec<u8>> = (0..ds)
            .map(|i| (0..len).map(|k| (i * 31 + k * 7 + 1) as u8).collect())
            .collect();
        let want = ref_parity(&data, ps);
        for &level in &levels {
            let got = encode_with(&mut Gf8Cauchy::with_level(level), &data, ps);
            assert_eq!(got, want, "{level:?} ds={ds} ps={ps} len={len}");
        }
    }
}

#[test]
fn gemm_with_no_inputs_zeroes_outputs() {
    let mut out = vec![0xAAu8; 40];
    let mut outs: Vec<&mut [u8]> = vec![&mut out];
    gemm(SimdLevel::detect(), &[], &[], &mut outs);
    assert!(out.iter().all(|b| *b == 0));
}

#[test]
fn bad_geometry_is_an_error_not_a_panic() {
    let mut buf = vec![0u8; 256 * 4];
    let mut gf8 = Gf8Cauchy::new();
    let mut view = ShardsMut::contiguous(&mut buf, 4, 256).unwrap();
    assert_eq!(
        gf8.encode(&mut view, 200, 56),
        Err(FecError::Geometry {
            data: 200,
            parity: 56
        })
    );
    assert_eq!(
        gf8.encode(&mut view, 0, 256),
        Err(FecError::Geometry {
            data: 0,
            parity: 256
        })
    );
    let mut view = ShardsMut::contiguous(&mut buf, 4, 10).unwrap();
    assert_eq!(
        gf8.encode(&mut view, 4, 2),
        Err(FecError::ShardCount { have: 10, need: 6 })
    );
    let present = vec![true; 6];
    assert!(gf8.reconstruct(&mut view, 4, 2, &present).is_err());
    let mut view = ShardsMut::contiguous(&mut buf, 4, 6).unwrap();
    let mut too_few = vec![false; 6];
    too_few[0] = true;
    assert_eq!(
        gf8.reconstruct(&mut view, 4, 2, &too_few),
        Err(FecError::TooFewShards { have: 1, need: 4 })
    );
    let mut gf16 = Gf16::new();
    let mut odd = vec![0u8; 6 * 3];
    let mut view = ShardsMut::contiguous(&mut odd, 3, 6).unwrap();
    assert_eq!(gf16.encode(&mut view, 4, 2), Err(FecError::ShardLength(3)));
}

/// Encodes `data` shards, erases the shards in `lost`, scribbles over them, reconstructs, and
/// checks the data comes back byte-exact.
fn round_trip(
    code: &mut dyn ErasureCode,
    ds: usize,
    ps: usize,
    len: usize,
    lost: &[usize],
    seed: u8,
) {
    let total = ds + ps;
    let mut buf: Vec<u8> = (0..total * len)
        .map(|k| (k as u8).wrapping_mul(seed | 1) ^ seed)
        .collect();
    let mut view = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    code.encode(&mut view, ds, ps).unwrap();
    let original = buf[..ds * len].to_vec();
    let mut present = vec![true; total];
    for &k in lost {
        present[k] = false;
        buf[k * len..(k + 1) * len].fill(0x5A);
    }
    let mut view = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    let rebuilt = code.reconstruct(&mut view, ds, ps, &present).unwrap();
    assert_eq!(rebuilt, lost.iter().filter(|k| **k < ds).count());
    assert!(
        buf[..ds * len] == original[..],
        "data differs after reconstruct (ds={ds} ps={ps} lost={lost:?})"
    );
}

/// Picks `n` distinct indices below `total` from a proptest-chosen permutation key.
fn pick(total: usize, n: usize, keys: &[u32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..total).collect();
    for (k, key) in keys.iter().enumerate().take(n.min(total)) {
        let j = k + (*key as usize) % (total - k);
        idx.swap(k, j);
    }
    idx.truncate(n.min(total));
    idx
}

#[test]
fn gf8_decode_cache_reuses_and_stays_correct() {
    let mut gf8 = Gf8Cauchy::new();
    for round in 0..3u8 {
        round_trip(&mut gf8, 32, 8, 1400, &[0, 3, 9, 12, 20, 21, 30, 31], round);
        round_trip(&mut gf8, 32, 8, 1400, &[1, 2, 33], round);
    }
    assert_eq!(gf8.cache_stats(), (4, 2));
    // More patterns than the cache holds still decode correctly.
    for k in 0..100usize {
        round_trip(&mut gf8, 64, 16, 64, &[k % 64, (k * 7 + 1) % 64], k as u8);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn gf8_any_loss_within_parity_reconstructs(
        ds in 1usize..=120,
        ps in 0usize..=40,
        len in 1usize..=300,
        extra in 0usize..4,
        keys in proptest::collection::vec(any::<u32>(), 255),
        seed in any::<u8>(),
        level in prop_oneof![Just(SimdLevel::Scalar), Just(SimdLevel::Ssse3), Just(SimdLevel::Avx2), Just(SimdLevel::Gfni)],
    ) {
        let lost_n = ps.saturating_sub(extra);
        let lost = pick(ds + ps, lost_n, &keys);
        round_trip(&mut Gf8Cauchy::with_level(level), ds, ps, len, &lost, seed);
    }

    #[test]
    fn gf8_simd_equals_scalar(
        ds in 1usize..=60,
        ps in 1usize..=20,
        len in 1usize..=200,
        seed in any::<u8>(),
    ) {
        let data: Vec<Vec<u8>> = (0..ds)
            .map(|i| (0..len).map(|k| ((i * 131 + k * 17) as u8) ^ seed).collect())
            .collect();
        let scalar = encode_with(&mut Gf8Cauchy::with_level(SimdLevel::Scalar), &data, ps);
        let best = encode_with(&mut Gf8Cauchy::new(), &data, ps);
        prop_assert_eq!(scalar, best);
    }

    #[test]
    fn gf16_any_loss_within_parity_reconstructs(
        ds in 1usize..=400,
        ps in 1usize..=100,
        half_len in 1usize..=64,
        extra in 0usize..4,
        keys in proptest::collection::vec(any::<u32>(), 500),
        seed in any::<u8>(),
    ) {
        let lost = pick(ds + ps, ps.saturating_sub(extra), &keys);
        round_trip(&mut Gf16::new(), ds, ps, half_len * 2, &lost, seed);
    }
}

#[test]
fn gf16_large_block() {
    let lost: Vec<usize> = (0..1200).step_by(6).collect();
    round_trip(&mut Gf16::new(), 1000, 200, 1400, &lost, 7);
}
