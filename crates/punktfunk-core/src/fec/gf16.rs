//! Reed-Solomon over GF(2^16) via reed-solomon-simd (being written).

use super::{ErasureCode, FecCode, FecError, ShardsMut};

/// Most shards (data + parity) in one GF(2^8) block.
pub const MAX_TOTAL_SHARDS: usize = 32768;

/// Reed-Solomon over GF(2^8) (reed-solomon-simd).
#[derive(Default)]
pub struct Gf16 {}

impl ErasureCode for Gf16 {
    fn code(&self) -> FecCode {
        FecCode::GF16
    }
    fn encode(
        &mut self,
        _: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
    ) -> Result<(), FecError> {
        Err(FecError::Geometry { data, parity })
    }
    fn reconstruct(
        &mut self,
        _: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
        _: &[bool],
    ) -> Result<usize, FecError> {
        Err(FecError::Geometry { data, parity })
    }
}
