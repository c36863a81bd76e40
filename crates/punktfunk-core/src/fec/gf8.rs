//! Reed-Solomon over GF(2^8), Moonlight-exact Cauchy matrix (being written).

use super::{ErasureCode, FecCode, FecError, ShardsMut};

/// Most shards (data + parity) in one GF(2^8) block.
pub const MAX_TOTAL_SHARDS: usize = 255;

/// Reed-Solomon over GF(2^8) with the Cauchy parity matrix Moonlight decodes.
#[derive(Default)]
pub struct Gf8Cauchy {}

impl ErasureCode for Gf8Cauchy {
    fn code(&self) -> FecCode {
        FecCode::GF8_CAUCHY
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
