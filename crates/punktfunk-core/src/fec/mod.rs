//! Forward error correction for the data plane.
//!
//! A frame's shards are grouped into one *block*: `data` shards carrying the frame bytes followed
//! by `parity` shards computed from them. Any `data` of the `data + parity` shards rebuild the
//! block. Two systematic erasure codes sit behind one small trait, [`ErasureCode`]:
//!
//! - [`Gf8Cauchy`]: Reed-Solomon over GF(2^8) with the Cauchy parity matrix that stock Moonlight
//!   clients decode (at most 255 shards per block). Hand-written because it has to be
//!   byte-identical to that matrix and no crate implements it; see [`gf8`].
//! - [`Gf16`]: Reed-Solomon over GF(2^16) from the `reed-solomon-simd` crate, for blocks beyond
//!   255 shards.
//!
//! [`FecPolicy`] decides per block which code and how many parity shards.
//!
//! Shards are addressed through [`ShardsMut`], a strided view over one caller-owned buffer, so
//! parity is computed straight into the datagrams that will carry it (no copies on the send path)
//! and recovered shards land in the receiver's frame buffer.

pub mod gf16;
pub mod gf8;
mod policy;

pub use gf16::Gf16;
pub use gf8::Gf8Cauchy;
pub use policy::{BlockPlan, FecPolicy};

use thiserror::Error;

/// The FEC code of a block, as carried on the wire (an open newtype: unknown codes round-trip).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FecCode(pub u8);

impl FecCode {
    /// No parity: the block is only its data shards.
    pub const NONE: FecCode = FecCode(0);
    /// Reed-Solomon over GF(2^8), Cauchy matrix, Moonlight-exact ([`Gf8Cauchy`]).
    pub const GF8_CAUCHY: FecCode = FecCode(1);
    /// Reed-Solomon over GF(2^16) ([`Gf16`]).
    pub const GF16: FecCode = FecCode(2);

    /// Most shards (data + parity) one block of this code may hold.
    pub fn max_total_shards(self) -> usize {
        match self {
            FecCode::NONE => gf16::MAX_TOTAL_SHARDS,
            FecCode::GF8_CAUCHY => gf8::MAX_TOTAL_SHARDS,
            FecCode::GF16 => gf16::MAX_TOTAL_SHARDS,
            _ => 0,
        }
    }

    /// Whether this build knows the code.
    pub fn is_known(self) -> bool {
        matches!(self, FecCode::NONE | FecCode::GF8_CAUCHY | FecCode::GF16)
    }
}

impl std::fmt::Debug for FecCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FecCode::NONE => f.write_str("None"),
            FecCode::GF8_CAUCHY => f.write_str("Gf8Cauchy"),
            FecCode::GF16 => f.write_str("Gf16"),
            FecCode(other) => write!(f, "FecCode({other:#04x})"),
        }
    }
}

/// Errors from FEC encode/decode. All of them are the caller's fault (bad geometry) or a
/// fact about the received shards (too few to rebuild); none is a panic.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FecError {
    /// `data` or `parity` out of the code's range (e.g. `data == 0`, or more than 255 shards
    /// for GF(2^8)).
    #[error("unsupported block geometry: {data} data + {parity} parity shards")]
    Geometry { data: usize, parity: usize },
    /// The shard length is not usable by the code (zero, or odd for GF(2^16)).
    #[error("unsupported shard length {0}")]
    ShardLength(usize),
    /// The view does not hold `data + parity` shards, or `present` has the wrong length.
    #[error("shard view holds {have} shards, block needs {need}")]
    ShardCount { have: usize, need: usize },
    /// Fewer than `data` shards are present: the block cannot be rebuilt.
    #[error("too few shards to rebuild: have {have}, need {need}")]
    TooFewShards { have: usize, need: usize },
}

/// A strided, mutable view of `count` equal-length shards inside one buffer: shard `k` is
/// `buf[k * stride + offset ..][..len]`.
///
/// On the send side the buffer is a batch of datagrams (`stride` = datagram size, `offset` =
/// header size) so parity is written directly into outgoing packets; on the receive side it is a
/// frame buffer with `stride == len` and `offset == 0`.
pub struct ShardsMut<'a> {
    buf: &'a mut [u8],
    stride: usize,
    offset: usize,
    len: usize,
    count: usize,
}

impl<'a> ShardsMut<'a> {
    /// Builds a view; `None` if the geometry does not fit in `buf` (or `len > stride - offset`).
    pub fn new(
        buf: &'a mut [u8],
        stride: usize,
        offset: usize,
        len: usize,
        count: usize,
    ) -> Option<Self> {
        if len == 0 || offset.checked_add(len)? > stride {
            return None;
        }
        if count > 0 {
            let end = (count - 1).checked_mul(stride)?.checked_add(offset + len)?;
            if end > buf.len() {
                return None;
            }
        }
        Some(ShardsMut {
            buf,
            stride,
            offset,
            len,
            count,
        })
    }

    /// A view of contiguous shards (`stride == len`, no offset).
    pub fn contiguous(buf: &'a mut [u8], len: usize, count: usize) -> Option<Self> {
        Self::new(buf, len, 0, len, count)
    }

    /// Number of shards in the view.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of every shard in bytes.
    pub fn shard_len(&self) -> usize {
        self.len
    }

    /// Shard `k` (panics if `k >= count`, a caller bug).
    pub fn shard(&self, k: usize) -> &[u8] {
        assert!(k < self.count, "shard index out of range");
        let start = k * self.stride + self.offset;
        &self.buf[start..start + self.len]
    }

    /// Shard `k`, mutable (panics if `k >= count`, a caller bug).
    pub fn shard_mut(&mut self, k: usize) -> &mut [u8] {
        assert!(k < self.count, "shard index out of range");
        let start = k * self.stride + self.offset;
        &mut self.buf[start..start + self.len]
    }

    /// Splits the view after shard `at`: shards `[0, at)` read-only and `[at, count)` mutable.
    /// Used to read data shards while writing parity shards.
    pub fn split_at(&mut self, at: usize) -> (Vec<&[u8]>, Vec<&mut [u8]>) {
        assert!(at <= self.count, "split point out of range");
        let (stride, offset, len) = (self.stride, self.offset, self.len);
        let (head, tail) = self.buf.split_at_mut(at * stride);
        let ro = (0..at)
            .map(|k| &head[k * stride + offset..k * stride + offset + len])
            .collect();
        let rw = tail
            .chunks_mut(stride)
            .take(self.count - at)
            .map(|c| &mut c[offset..offset + len])
            .collect();
        (ro, rw)
    }

    /// All shards as separate slices (read-only view of every shard, mutable access to a chosen
    /// subset): returns `(readable, writable)` where shard `k` goes to `writable` iff
    /// `write[k]`. Lets a decoder read present shards while filling missing ones.
    pub fn partition(&mut self, write: &[bool]) -> Partition<'_> {
        assert_eq!(write.len(), self.count, "partition mask length");
        let (stride, offset, len) = (self.stride, self.offset, self.len);
        let mut ro = Vec::new();
        let mut rw = Vec::new();
        for (k, chunk) in self.buf.chunks_mut(stride).take(self.count).enumerate() {
            let s = &mut chunk[offset..offset + len];
            if write[k] {
                rw.push((k, s));
            } else {
                ro.push((k, &*s));
            }
        }
        (ro, rw)
    }
}

/// The result of [`ShardsMut::partition`]: `(index, shard)` pairs, readable then writable.
pub type Partition<'s> = (Vec<(usize, &'s [u8])>, Vec<(usize, &'s mut [u8])>);

/// A systematic erasure code over a block of `data + parity` equal-length shards.
///
/// Implementations may cache work between calls (encoder state, inverted decode matrices), hence
/// `&mut self`. They never allocate in proportion to anything but the block they are given.
pub trait ErasureCode {
    /// The wire code this implementation produces.
    fn code(&self) -> FecCode;

    /// Computes shards `[data, data + parity)` of `shards` from shards `[0, data)`.
    fn encode(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
    ) -> Result<(), FecError>;

    /// Rebuilds every missing *data* shard in place. `present[k]` says whether shard `k`
    /// (`0..data + parity`) holds received bytes. Missing parity shards are not rebuilt.
    /// Returns the number of data shards rebuilt.
    fn reconstruct(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
        present: &[bool],
    ) -> Result<usize, FecError>;
}

/// Checks the common preconditions of [`ErasureCode::reconstruct`]; returns the number of
/// missing data shards.
pub(crate) fn check_reconstruct(
    shards: &ShardsMut<'_>,
    data: usize,
    parity: usize,
    present: &[bool],
) -> Result<usize, FecError> {
    let need = data.saturating_add(parity);
    if shards.count() != need {
        return Err(FecError::ShardCount {
            have: shards.count(),
            need,
        });
    }
    if present.len() != need {
        return Err(FecError::ShardCount {
            have: present.len(),
            need,
        });
    }
    let have = present.iter().filter(|p| **p).count();
    if have < data {
        return Err(FecError::TooFewShards { have, need: data });
    }
    Ok(present[..data].iter().filter(|p| !**p).count())
}

/// An encoder/decoder for whichever code a block uses, holding one instance of each so their
/// caches survive across blocks.
#[derive(Default)]
pub struct FecEngine {
    gf8: Gf8Cauchy,
    gf16: Gf16,
}

impl FecEngine {
    /// A fresh engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The code implementation for `code`, or `None` for [`FecCode::NONE`] and unknown codes.
    pub fn get(&mut self, code: FecCode) -> Option<&mut dyn ErasureCode> {
        match code {
            FecCode::GF8_CAUCHY => Some(&mut self.gf8),
            FecCode::GF16 => Some(&mut self.gf16),
            _ => None,
        }
    }
}
