//! FEC throughput. Each group measures our codes beside two baselines run in the same process:
//! a memcpy of the block's data bytes and the raw `reed-solomon-simd` call on the same block.
//! Throughput is reported over the data bytes (`data shards x 1400`).
//!
//! `cargo bench -p punktfunk-core --bench fec`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use punktfunk_core::fec::gf8::SimdLevel;
use punktfunk_core::fec::{ErasureCode, Gf16, Gf8Cauchy, ShardsMut};
use std::hint::black_box;
use std::time::Duration;

const SHARD: usize = 1400;

fn block(ds: usize, ps: usize) -> Vec<u8> {
    (0..(ds + ps) * SHARD)
        .map(|k| ((k * 2_654_435_761) >> 7) as u8)
        .collect()
}

/// Loses the first `lost` data shards (the worst case: every loss needs rebuilding).
fn present(ds: usize, ps: usize, lost: usize) -> Vec<bool> {
    (0..ds + ps).map(|k| k >= lost).collect()
}

fn bench_config(c: &mut Criterion, ds: usize, ps: usize, gf8: bool) {
    let mut g = c.benchmark_group(format!("fec/{ds}+{ps}"));
    g.throughput(Throughput::Bytes((ds * SHARD) as u64));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    let mut buf = block(ds, ps);

    let src = buf[..ds * SHARD].to_vec();
    let mut dst = vec![0u8; ds * SHARD];
    g.bench_function("baseline/memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });

    // Raw reed-solomon-simd: the convenience calls, shards as separate slices.
    let originals: Vec<&[u8]> = src.chunks(SHARD).collect();
    g.bench_function("baseline/reed-solomon-simd/encode", |b| {
        b.iter(|| black_box(reed_solomon_simd::encode(ds, ps, &originals).unwrap()))
    });
    let recovery = reed_solomon_simd::encode(ds, ps, &originals).unwrap();
    let kept_orig: Vec<(usize, &[u8])> = originals.iter().copied().enumerate().skip(ps).collect();
    let kept_rec: Vec<(usize, &[u8])> = recovery.iter().map(Vec::as_slice).enumerate().collect();
    g.bench_function(
        BenchmarkId::new("baseline/reed-solomon-simd/decode", format!("{ps} lost")),
        |b| {
            b.iter(|| {
                black_box(
                    reed_solomon_simd::decode(
                        ds,
                        ps,
                        kept_orig.iter().copied(),
                        kept_rec.iter().copied(),
                    )
                    .unwrap(),
                )
            })
        },
    );

    let mut codes: Vec<(&str, Box<dyn ErasureCode>)> = vec![("gf16", Box::new(Gf16::new()))];
    if gf8 {
        codes.insert(0, ("gf8", Box::new(Gf8Cauchy::new())));
        if SimdLevel::detect() == SimdLevel::Gfni {
            codes.push(("gf8-avx2", Box::new(Gf8Cauchy::with_level(SimdLevel::Avx2))));
        }
        if SimdLevel::detect() != SimdLevel::Scalar {
            codes.push((
                "gf8-scalar",
                Box::new(Gf8Cauchy::with_level(SimdLevel::Scalar)),
            ));
        }
    }
    for (name, mut code) in codes {
        g.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| {
                let mut v = ShardsMut::contiguous(&mut buf, SHARD, ds + ps).unwrap();
                code.encode(&mut v, ds, ps).unwrap();
            })
        });
        let mask = present(ds, ps, ps);
        g.bench_function(
            BenchmarkId::new(format!("{name}/decode"), format!("{ps} lost")),
            |b| {
                b.iter(|| {
                    let mut v = ShardsMut::contiguous(&mut buf, SHARD, ds + ps).unwrap();
                    black_box(code.reconstruct(&mut v, ds, ps, &mask).unwrap());
                })
            },
        );
    }
    g.finish();
}

/// Decode with a loss pattern never seen before (no cached decode matrix): the first-time cost.
fn bench_uncached(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec/gf8-uncached-decode");
    g.measurement_time(Duration::from_secs(3));
    for (ds, ps) in [(32usize, 8usize), (128, 32)] {
        g.throughput(Throughput::Bytes((ds * SHARD) as u64));
        let mut buf = block(ds, ps);
        let mut gf8 = Gf8Cauchy::new();
        let mask = present(ds, ps, ps);
        g.bench_function(format!("{ds}+{ps}/{ps} lost"), |b| {
            b.iter(|| {
                gf8.clear_cache();
                let mut v = ShardsMut::contiguous(&mut buf, SHARD, ds + ps).unwrap();
                black_box(gf8.reconstruct(&mut v, ds, ps, &mask).unwrap());
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    eprintln!("gf8 kernel: {:?}", SimdLevel::detect());
    bench_config(c, 32, 8, true);
    bench_config(c, 128, 32, true);
    bench_config(c, 200, 50, true);
    bench_config(c, 1000, 200, false);
    bench_uncached(c);
}

criterion_group!(fec, benches);
criterion_main!(fec);
