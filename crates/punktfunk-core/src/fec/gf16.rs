//! Reed-Solomon over GF(2^16) for blocks beyond 255 shards, from the `reed-solomon-simd` crate.
//!
//! The crate's FFT-based (Leopard) code encodes at several GB/s for any block size and takes up
//! to 32768 data and 32768 parity shards. Its decode has a fixed cost of a few hundred
//! microseconds however small the block, which is why [`super::FecPolicy`] only picks it when a
//! block does not fit in GF(2^8). Shards must have an even length (the packetizer guarantees it).
//!
//! The encoder and decoder objects are kept between blocks so their work buffers are reused.

use super::{check_reconstruct, ErasureCode, FecCode, FecError, ShardsMut};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most shards (data + parity) in one GF(2^16) block.
pub const MAX_TOTAL_SHARDS: usize = 32768;

/// Reed-Solomon over GF(2^16) (`reed-solomon-simd`).
#[derive(Default)]
pub struct Gf16 {
    encoder: Option<ReedSolomonEncoder>,
    decoder: Option<ReedSolomonDecoder>,
}

impl std::fmt::Debug for Gf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gf16")
    }
}

impl Gf16 {
    /// A fresh codec.
    pub fn new() -> Self {
        Self::default()
    }

    fn check(data: usize, parity: usize, shard_len: usize) -> Result<(), FecError> {
        if data == 0
            || data.saturating_add(parity) > MAX_TOTAL_SHARDS
            || (parity > 0 && !ReedSolomonEncoder::supports(data, parity))
        {
            return Err(FecError::Geometry { data, parity });
        }
        if shard_len == 0 || !shard_len.is_multiple_of(2) {
            return Err(FecError::ShardLength(shard_len));
        }
        Ok(())
    }
}

/// Maps the crate's errors; after our own checks only geometry problems remain possible.
fn map_err(data: usize, parity: usize) -> impl Fn(reed_solomon_simd::Error) -> FecError {
    move |_| FecError::Geometry { data, parity }
}

impl ErasureCode for Gf16 {
    fn code(&self) -> FecCode {
        FecCode::GF16
    }

    fn encode(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
    ) -> Result<(), FecError> {
        let len = shards.shard_len();
        Self::check(data, parity, len)?;
        if shards.count() != data + parity {
            return Err(FecError::ShardCount {
                have: shards.count(),
                need: data + parity,
            });
        }
        if parity == 0 {
            return Ok(());
        }
        let err = map_err(data, parity);
        let encoder = match &mut self.encoder {
            Some(enc) => {
                enc.reset(data, parity, len).map_err(&err)?;
                enc
            }
            slot => slot.insert(ReedSolomonEncoder::new(data, parity, len).map_err(&err)?),
        };
        for k in 0..data {
            encoder.add_original_shard(shards.shard(k)).map_err(&err)?;
        }
        let result = encoder.encode().map_err(&err)?;
        for (j, recovery) in result.recovery_iter().enumerate() {
            shards.shard_mut(data + j).copy_from_slice(recovery);
        }
        Ok(())
    }

    fn reconstruct(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
        present: &[bool],
    ) -> Result<usize, FecError> {
        let len = shards.shard_len();
        Self::check(data, parity, len)?;
        let missing = check_reconstruct(shards, data, parity, present)?;
        if missing == 0 {
            return Ok(0);
        }
        let err = map_err(data, parity);
        let decoder = match &mut self.decoder {
            Some(dec) => {
                dec.reset(data, parity, len).map_err(&err)?;
                dec
            }
            slot => slot.insert(ReedSolomonDecoder::new(data, parity, len).map_err(&err)?),
        };
        // The decoder needs exactly `data` shards; more only cost time.
        for k in (0..data + parity).filter(|&k| present[k]).take(data) {
            if k < data {
                decoder
                    .add_original_shard(k, shards.shard(k))
                    .map_err(&err)?;
            } else {
                decoder
                    .add_recovery_shard(k - data, shards.shard(k))
                    .map_err(&err)?;
            }
        }
        let result = decoder.decode().map_err(&err)?;
        let mut rebuilt = 0;
        for (k, restored) in result.restored_original_iter() {
            shards.shard_mut(k).copy_from_slice(restored);
            rebuilt += 1;
        }
        if rebuilt != missing {
            return Err(FecError::TooFewShards {
                have: data - missing + rebuilt,
                need: data,
            });
        }
        Ok(rebuilt)
    }
}
