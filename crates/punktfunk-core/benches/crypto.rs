//! AES-GCM seal/open of one 1400-byte packet, beside memcpy of the same bytes and the
//! no-protection key (the protocol's cost without crypto).
//!
//! Run: `cargo bench -p punktfunk-core --bench crypto`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punktfunk_core::crypto::{
    dangerous_no_protection, packet_key, CipherSuite, PacketKey, TAG_LEN,
};
use std::hint::black_box;

const LEN: usize = 1400;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet_1400B");
    g.throughput(Throughput::Bytes(LEN as u64));
    let src = vec![0x5Au8; LEN + TAG_LEN];
    let mut dst = vec![0u8; LEN + TAG_LEN];
    g.bench_function("baseline_memcpy", |b| {
        b.iter(|| dst[..LEN].copy_from_slice(black_box(&src[..LEN])))
    });
    let aad = [1u8; 36];
    let keys: [(&str, Box<dyn PacketKey>); 3] = [
        (
            "aes128gcm",
            packet_key(CipherSuite::AES_128_GCM, &[1; 16], [2; 12]).unwrap(),
        ),
        (
            "aes256gcm",
            packet_key(CipherSuite::AES_256_GCM, &[1; 32], [2; 12]).unwrap(),
        ),
        ("no_protection", dangerous_no_protection()),
    ];
    for (name, key) in &keys {
        let n = LEN + key.tag_len();
        let mut buf = vec![0x5Au8; n];
        let mut seq = 0u64;
        g.bench_function(format!("{name}_seal"), |b| {
            b.iter(|| {
                seq += 1;
                key.seal(seq, &aad, black_box(&mut buf)).unwrap();
            })
        });
        let mut sealed = vec![0x5Au8; n];
        key.seal(7, &aad, &mut sealed).unwrap();
        let mut work = sealed.clone();
        g.bench_function(format!("{name}_open"), |b| {
            b.iter(|| {
                // Restore the ciphertext (open decrypts in place); the copy is the baseline above.
                work.copy_from_slice(&sealed);
                key.open(7, &aad, black_box(&mut work)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
