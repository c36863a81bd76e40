#![no_main]
//! FEC decode with arbitrary geometry and erasure patterns, for both codes: never panics, and
//! whenever enough shards remain the data comes back byte-exact.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::fec::{ErasureCode, FecError, Gf16, Gf8Cauchy, ShardsMut};

fuzz_target!(|input: &[u8]| {
    let [code, d, p, l, mask @ ..] = input else { return };
    let (data, parity) = (*d as usize % 64 + 1, *p as usize % 32);
    let len = (*l as usize % 64 + 1) * 2;
    let total = data + parity;
    let mut buf: Vec<u8> = (0..total * len).map(|i| (i as u8).wrapping_mul(*l | 1)).collect();
    let mut ec: Box<dyn ErasureCode> = if code & 1 == 0 { Box::new(Gf8Cauchy::default()) } else { Box::new(Gf16::default()) };
    let mut shards = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    if ec.encode(&mut shards, data, parity).is_err() {
        return;
    }
    let original = buf.clone();
    let present: Vec<bool> = (0..total).map(|k| mask.get(k).is_none_or(|m| m & 1 == 0)).collect();
    for (k, p) in present.iter().enumerate() {
        if !p {
            buf[k * len..(k + 1) * len].fill(0xEE);
        }
    }
    let mut shards = ShardsMut::contiguous(&mut buf, len, total).unwrap();
    match ec.reconstruct(&mut shards, data, parity, &present) {
        Ok(_) => assert_eq!(&buf[..data * len], &original[..data * len]),
        Err(FecError::TooFewShards { .. }) => assert!(present.iter().filter(|p| **p).count() < data),
        Err(e) => panic!("unexpected error {e}"),
    }
});
