//! Which FEC code and how many parity shards a block gets.
//!
//! The parity count follows a percentage of the data shards, rounded up, then clamped to a floor
//! (small frames still get some protection: one lost packet of a one-packet frame is otherwise a
//! lost frame) and a ceiling (a huge keyframe must not double the bitrate). The code is
//! [`FecCode::GF8_CAUCHY`] whenever the block fits in 255 shards, because its decode is one to two
//! orders of magnitude faster than GF(2^16) at those sizes, and [`FecCode::GF16`] beyond.

use super::{gf8, FecCode, FecError};

/// FEC settings of a stream, fixed at session set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecPolicy {
    /// Parity shards as a percentage of data shards (rounded up). 0 disables FEC.
    pub percent: u16,
    /// Fewest parity shards per block when `percent > 0`.
    pub min_parity: u16,
    /// Most parity shards per block.
    pub max_parity: u16,
}

impl Default for FecPolicy {
    /// 20 % parity, at least 2 and at most 1024 shards per block.
    fn default() -> Self {
        FecPolicy {
            percent: 20,
            min_parity: 2,
            max_parity: 1024,
        }
    }
}

/// The FEC layout of one block, as decided by [`FecPolicy::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    /// The code protecting the block ([`FecCode::NONE`] when `parity == 0`).
    pub code: FecCode,
    /// Data shards.
    pub data: usize,
    /// Parity shards.
    pub parity: usize,
}

impl FecPolicy {
    /// A policy with no FEC at all.
    pub const NONE: FecPolicy = FecPolicy {
        percent: 0,
        min_parity: 0,
        max_parity: 0,
    };

    /// Plans a block of `data` data shards. Fails only when the block is too large for any
    /// code (more than [`super::gf16::MAX_TOTAL_SHARDS`] shards in all) or empty.
    pub fn plan(&self, data: usize) -> Result<BlockPlan, FecError> {
        if data == 0 {
            return Err(FecError::Geometry { data, parity: 0 });
        }
        let parity = if self.percent == 0 {
            0
        } else {
            let wanted = (data * self.percent as usize).div_ceil(100);
            wanted
                .max(self.min_parity as usize)
                .min(self.max_parity as usize)
        };
        let total = data + parity;
        let code = if parity == 0 {
            FecCode::NONE
        } else if total <= gf8::MAX_TOTAL_SHARDS {
            FecCode::GF8_CAUCHY
        } else {
            FecCode::GF16
        };
        if total > code.max_total_shards() {
            return Err(FecError::Geometry { data, parity });
        }
        Ok(BlockPlan { code, data, parity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fec::gf16;

    #[test]
    fn small_blocks_use_gf8_with_the_floor() {
        let p = FecPolicy::default();
        assert_eq!(
            p.plan(1).unwrap(),
            BlockPlan {
                code: FecCode::GF8_CAUCHY,
                data: 1,
                parity: 2
            }
        );
        assert_eq!(p.plan(30).unwrap().parity, 6);
        assert_eq!(p.plan(31).unwrap().parity, 7, "rounds up");
    }

    #[test]
    fn gf16_only_beyond_255_shards() {
        let p = FecPolicy {
            percent: 25,
            min_parity: 1,
            max_parity: 4096,
        };
        assert_eq!(p.plan(204).unwrap().code, FecCode::GF8_CAUCHY); // 204 + 51 = 255
        assert_eq!(p.plan(205).unwrap().code, FecCode::GF16); // 205 + 52 = 257
        assert_eq!(
            p.plan(1000).unwrap(),
            BlockPlan {
                code: FecCode::GF16,
                data: 1000,
                parity: 250
            }
        );
    }

    #[test]
    fn ceiling_and_zero_percent() {
        let p = FecPolicy {
            percent: 50,
            min_parity: 2,
            max_parity: 10,
        };
        assert_eq!(p.plan(100).unwrap().parity, 10);
        assert_eq!(
            FecPolicy::NONE.plan(100).unwrap(),
            BlockPlan {
                code: FecCode::NONE,
                data: 100,
                parity: 0
            }
        );
    }

    #[test]
    fn impossible_blocks_are_errors() {
        assert!(FecPolicy::default().plan(0).is_err());
        assert!(FecPolicy {
            percent: 100,
            min_parity: 0,
            max_parity: u16::MAX
        }
        .plan(gf16::MAX_TOTAL_SHARDS)
        .is_err());
    }
}
