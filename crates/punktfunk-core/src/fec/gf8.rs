//! Reed-Solomon over GF(2^8) with the Cauchy parity matrix stock Moonlight clients decode.
//!
//! # The code
//!
//! The field is GF(2^8) reduced by x^8 + x^4 + x^3 + x^2 + 1 (`0x11D`), generator 2. A block has
//! `ds` data shards and `ps` parity shards (`ds >= 1`, `ds + ps <= 255`). Parity shard `j` is, byte
//! position by byte position,
//!
//! ```text
//! parity_j = XOR over i of  P[j][i] * data_i      with   P[j][i] = inv((ps + i) XOR j)
//! ```
//!
//! `P` is a Cauchy matrix (`1 / (x_j + y_i)` with `x_j = j`, `y_i = ps + i`, disjoint sets), so
//! every square submatrix is invertible: any `ds` of the `ds + ps` shards rebuild the block. Note
//! that `P` depends on `ps`, not only on `ds`. [`parity_coefficient`] exposes single entries.
//!
//! # Why hand-written
//!
//! Interoperating with Moonlight requires byte-identical parity for exactly this matrix; the
//! Reed-Solomon crates on crates.io use other generator matrices (Vandermonde-derived or FFT
//! bases), so none of them can produce it.
//!
//! # How it is fast
//!
//! Encode and decode are both one operation, a small matrix times a list of shards
//! ([`gemm`]): every output shard is the XOR of input shards each multiplied by a constant.
//! Multiplying 32 bytes by a constant `c` takes two `pshufb` lookups (the split-nibble method:
//! `c*x = c*(x & 0x0F) XOR c*(x & 0xF0)`, each a 16-entry table). The kernel walks the shards
//! 32 bytes (AVX2) or 16 bytes (SSSE3) at a time, reads each input chunk once and accumulates up
//! to eight output rows in registers, so every byte of input is loaded once per eight outputs and
//! every output byte is stored once. On CPUs with GFNI (Intel since Ice Lake, AMD since Zen 4)
//! a multiply by a constant is one instruction instead: multiplying by `c` is linear over GF(2),
//! an 8x8 bit matrix whose column `j` is `c * 2^j`, and `vgf2p8affineqb` applies such a matrix
//! to 32 bytes at once in any field (its `vgf2p8mulb` sibling is tied to the AES polynomial,
//! not this one). That halves the instructions per byte and frees the registers to keep eight
//! output rows in one pass. The instruction set is detected at run time; a portable scalar
//! kernel produces the same bytes on every other CPU.
//!
//! Decoding with `e` data shards missing uses the first `e` parity shards that arrived. With
//! `S` the `e x e` submatrix of `P` (those parity rows, the missing columns) and `Q` the same rows
//! over the present data columns, the missing data is `S^-1 * parity + S^-1 * Q * data`: one
//! `e x ds` decode matrix applied in a single [`gemm`] pass, so decoding costs about what encoding
//! `e` parity shards costs. The matrix is cached per loss pattern (a few dozen patterns), since a
//! lossy link tends to repeat them.

use super::{check_reconstruct, ErasureCode, FecCode, FecError, ShardsMut};

/// Most shards (data + parity) in one GF(2^8) block.
pub const MAX_TOTAL_SHARDS: usize = 255;

/// Reduction polynomial of the field, x^8 + x^4 + x^3 + x^2 + 1.
pub const POLYNOMIAL: u16 = 0x11D;

/// Decode matrices kept per loss pattern.
const CACHE_ENTRIES: usize = 32;

/// `EXP[k] = 2^k`, doubled in length so `EXP[LOG[a] + LOG[b]]` needs no reduction.
static EXP: [u8; 512] = exp_table();
/// `LOG[a]` = k with 2^k = a (`LOG[0]` unused).
static LOG: [u8; 256] = log_table();
/// Split-nibble product tables, each 16 entries repeated twice so one 32-byte load fills both
/// AVX2 lanes: `NIBBLES[c].0[x] = c * x` and `NIBBLES[c].1[x] = c * (x << 4)` for `x < 16`.
static NIBBLES: [NibbleTables; 256] = nibble_tables();
/// `AFFINE[c]`: multiplication by `c` as the bit matrix `vgf2p8affineqb` takes. Byte `7 - i` of
/// the word selects the input bits whose products have bit `i` set.
static AFFINE: [u64; 256] = affine_matrices();

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct NibbleTables([u8; 32], [u8; 32]);

const fn exp_table() -> [u8; 512] {
    let mut t = [0u8; 512];
    let mut x: u16 = 1;
    let mut k = 0;
    while k < 512 {
        t[k] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLYNOMIAL;
        }
        k += 1;
    }
    t
}

const fn log_table() -> [u8; 256] {
    let exp = exp_table();
    let mut t = [0u8; 256];
    let mut k = 0;
    while k < 255 {
        t[exp[k] as usize] = k as u8;
        k += 1;
    }
    t
}

const fn const_mul(a: u8, b: u8) -> u8 {
    // Shift-and-add ("Russian peasant") multiplication: usable in const context.
    let (mut a, mut b, mut p) = (a as u16, b, 0u16);
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= POLYNOMIAL;
        }
        b >>= 1;
    }
    p as u8
}

const fn affine_matrices() -> [u64; 256] {
    let mut m = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        let mut word = 0u64;
        let mut i = 0;
        while i < 8 {
            let mut row = 0u64;
            let mut j = 0;
            while j < 8 {
                if (const_mul(c as u8, 1 << j) >> i) & 1 == 1 {
                    row |= 1 << j;
                }
                j += 1;
            }
            word |= row << (8 * (7 - i));
            i += 1;
        }
        m[c] = word;
        c += 1;
    }
    m
}

const fn nibble_tables() -> [NibbleTables; 256] {
    let mut t = [NibbleTables([0; 32], [0; 32]); 256];
    let mut c = 0;
    while c < 256 {
        let mut x = 0;
        while x < 16 {
            let lo = const_mul(c as u8, x as u8);
            let hi = const_mul(c as u8, (x << 4) as u8);
            t[c].0[x] = lo;
            t[c].0[x + 16] = lo;
            t[c].1[x] = hi;
            t[c].1[x + 16] = hi;
            x += 1;
        }
        c += 1;
    }
    t
}

/// Product of `a` and `b` in GF(2^8)/0x11D.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// Multiplicative inverse of `a` (`None` for 0).
#[inline]
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[255 - LOG[a as usize] as usize])
}

/// Entry `P[j][i]` of the parity matrix for a block with `parity` parity shards: the coefficient
/// of data shard `i` in parity shard `j`, `inv((parity + i) XOR j)`. `None` outside a valid block
/// (`j >= parity` or `parity + i > 254`).
pub fn parity_coefficient(parity: usize, j: usize, i: usize) -> Option<u8> {
    if j >= parity || parity.saturating_add(i) >= MAX_TOTAL_SHARDS {
        return None;
    }
    inv(((parity + i) ^ j) as u8)
}

/// The multiply kernel in use. Every level produces identical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// Portable code: two 16-entry table lookups per byte.
    Scalar,
    /// x86 SSSE3 `pshufb`, 16 bytes per step.
    Ssse3,
    /// x86 AVX2 `vpshufb`, 32 bytes per step.
    Avx2,
    /// x86 GFNI `vgf2p8affineqb` on 32-byte vectors (with AVX2), one instruction per multiply.
    Gfni,
}

impl SimdLevel {
    /// The fastest level this CPU supports.
    pub fn detect() -> SimdLevel {
        SimdLevel::Gfni.supported_or_lower()
    }

    /// `self` if this CPU supports it, otherwise the next lower level it does (GFNI, then
    /// AVX2, SSSE3, scalar). Every caller that picks a kernel goes through this one chain.
    pub fn supported_or_lower(self) -> SimdLevel {
        let mut level = self;
        while !level.is_supported() {
            level = match level {
                SimdLevel::Gfni => SimdLevel::Avx2,
                SimdLevel::Avx2 => SimdLevel::Ssse3,
                SimdLevel::Ssse3 | SimdLevel::Scalar => SimdLevel::Scalar,
            };
        }
        level
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Gfni => {
                std::arch::is_x86_feature_detected!("gfni")
                    && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Computes `outputs[r] = XOR over k of coeffs[r * inputs.len() + k] * inputs[k]`, overwriting
/// the outputs. All slices must have the same length (checked: a mismatch panics, which would be
/// a bug in this module, never a consequence of received bytes).
pub fn gemm(level: SimdLevel, coeffs: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let n = inputs.len();
    assert_eq!(coeffs.len(), n * outputs.len(), "coefficient matrix shape");
    let Some(len) = inputs
        .first()
        .map(|s| s.len())
        .or(outputs.first().map(|s| s.len()))
    else {
        return;
    };
    assert!(
        inputs.iter().all(|s| s.len() == len) && outputs.iter().all(|s| s.len() == len),
        "shard lengths differ"
    );
    if n == 0 {
        outputs.iter_mut().for_each(|o| o.fill(0));
        return;
    }
    // Each arm's level is one this CPU supports (`supported_or_lower` returns no other), and the
    // slice shapes were checked on entry.
    let done = match level.supported_or_lower() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: GFNI and AVX2 are supported (above); shapes checked on entry.
        SimdLevel::Gfni => unsafe { x86::gemm_gfni(coeffs, inputs, outputs, len) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is supported (above); shapes checked on entry.
        SimdLevel::Avx2 => unsafe { x86::gemm_avx2(coeffs, inputs, outputs, len) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSSE3 is supported (above); shapes checked on entry.
        SimdLevel::Ssse3 => unsafe { x86::gemm_ssse3(coeffs, inputs, outputs, len) },
        _ => 0,
    };
    if done == 0 || done == len {
        gemm_scalar(coeffs, inputs, outputs, done);
        return;
    }
    // A tail shorter than one vector: copy it into zero-padded 32-byte rows and run the vector
    // kernel once more; far cheaper than the scalar kernel for the same bytes.
    let tail = len - done;
    let padded_in: Vec<[u8; 32]> = inputs
        .iter()
        .map(|s| {
            let mut b = [0u8; 32];
            b[..tail].copy_from_slice(&s[done..]);
            b
        })
        .collect();
    let mut padded_out = vec![[0u8; 32]; outputs.len()];
    let ins: Vec<&[u8]> = padded_in.iter().map(|b| &b[..]).collect();
    let mut outs: Vec<&mut [u8]> = padded_out.iter_mut().map(|b| &mut b[..]).collect();
    gemm(level, coeffs, &ins, &mut outs);
    for (o, p) in outputs.iter_mut().zip(&padded_out) {
        o[done..].copy_from_slice(&p[..tail]);
    }
}

/// Scalar kernel over bytes `[from, len)`.
fn gemm_scalar(coeffs: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]], from: usize) {
    let n = inputs.len();
    for (r, out) in outputs.iter_mut().enumerate() {
        let row = &coeffs[r * n..(r + 1) * n];
        let out = &mut out[from..];
        out.fill(0);
        for (input, &c) in inputs.iter().zip(row) {
            if c == 0 {
                continue;
            }
            let NibbleTables(lo, hi) = &NIBBLES[c as usize];
            if out.len() >= 256 {
                // Long shards: one 256-entry product table, one lookup per byte.
                let full: [u8; 256] = std::array::from_fn(|x| lo[x & 0x0F] ^ hi[x >> 4]);
                for (o, &x) in out.iter_mut().zip(&input[from..]) {
                    *o ^= full[x as usize];
                }
            } else {
                for (o, &x) in out.iter_mut().zip(&input[from..]) {
                    *o ^= lo[(x & 0x0F) as usize] ^ hi[(x >> 4) as usize];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Each processes output rows in groups (up to four rows for AVX2, eight
    //! for SSSE3 and GFNI), accumulating in registers, and returns how many leading bytes it
    //! covered (a multiple of the vector width); the scalar kernel does the rest.

    use super::{NibbleTables, AFFINE, NIBBLES};
    use std::arch::x86_64::*;

    /// The body every `gemm_*` kernel shares: walk the output rows in groups of at most `$max`,
    /// call the const-generic group kernel `$group` for each (the arms list the group sizes it
    /// is instantiated for) and return the bytes covered, `len` rounded down to `$width`.
    /// Expanded inside each kernel so the calls inherit its `target_feature`.
    macro_rules! gemm_in_groups {
        ($group:ident, $max:expr, $width:expr, [$($g:literal),+],
         $coeffs:ident, $inputs:ident, $outputs:ident, $len:ident) => {{
            let n = $inputs.len();
            let end = $len - $len % $width;
            let mut r0 = 0;
            while r0 < $outputs.len() {
                let g = ($outputs.len() - r0).min($max);
                // SAFETY: the caller's preconditions are forwarded; rows r0..r0+g exist and
                // `end` is a multiple of the vector width within `len`.
                unsafe {
                    match g {
                        $($g => $group::<$g>($coeffs, n, r0, $inputs, $outputs, end),)+
                        _ => $group::<1>($coeffs, n, r0, $inputs, $outputs, end),
                    }
                }
                r0 += g;
            }
            end
        }};
    }

    /// Rows per SSSE3 group (eight accumulators plus five temporaries fit in 16 registers).
    const GROUP: usize = 8;

    /// # Safety
    /// The CPU must support AVX2; every input and output slice must be `len` bytes long and
    /// `coeffs.len() == inputs.len() * outputs.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gemm_avx2(
        coeffs: &[u8],
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        len: usize,
    ) -> usize {
        gemm_in_groups!(
            group_avx2,
            GROUP_AVX2,
            32,
            [4, 3, 2],
            coeffs,
            inputs,
            outputs,
            len
        )
    }

    /// Rows per GFNI group: eight accumulators, the input and a matrix fit in 16 registers.
    const GROUP_GFNI: usize = 8;

    /// # Safety
    /// The CPU must support GFNI and AVX2; shapes as for [`gemm_avx2`].
    #[target_feature(enable = "gfni,avx2")]
    pub(super) unsafe fn gemm_gfni(
        coeffs: &[u8],
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        len: usize,
    ) -> usize {
        gemm_in_groups!(
            group_gfni,
            GROUP_GFNI,
            32,
            [8, 7, 6, 5, 4, 3, 2],
            coeffs,
            inputs,
            outputs,
            len
        )
    }

    /// # Safety
    /// As [`gemm_gfni`], and rows `r0..r0 + G` exist; `end` is a multiple of 32 within `len`.
    #[target_feature(enable = "gfni,avx2")]
    unsafe fn group_gfni<const G: usize>(
        coeffs: &[u8],
        n: usize,
        r0: usize,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        end: usize,
    ) {
        // Matrices per (input, row), resolved once per group.
        let matrices: Vec<[i64; G]> = (0..n)
            .map(|k| std::array::from_fn(|r| AFFINE[coeffs[(r0 + r) * n + k] as usize] as i64))
            .collect();
        let mut pos = 0;
        while pos < end {
            let mut acc = [_mm256_setzero_si256(); G];
            for (input, row) in inputs.iter().zip(&matrices) {
                // SAFETY: pos + 32 <= end <= input.len(); unaligned load.
                let x = unsafe { _mm256_loadu_si256(input.as_ptr().add(pos).cast()) };
                for (a, &m) in acc.iter_mut().zip(row) {
                    let p = _mm256_gf2p8affine_epi64_epi8::<0>(x, _mm256_set1_epi64x(m));
                    *a = _mm256_xor_si256(*a, p);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let out = &mut outputs[r0 + r];
                // SAFETY: pos + 32 <= end <= out.len(); unaligned store.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(pos).cast(), *a) };
            }
            pos += 32;
        }
    }

    /// Rows per AVX2 group: each row keeps two 32-byte accumulators (64 bytes per step, so every
    /// table load serves two multiplies).
    const GROUP_AVX2: usize = 4;

    /// # Safety
    /// As [`gemm_avx2`], and rows `r0..r0 + G` exist; `end` is a multiple of 32 within `len`.
    #[target_feature(enable = "avx2")]
    unsafe fn group_avx2<const G: usize>(
        coeffs: &[u8],
        n: usize,
        r0: usize,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        end: usize,
    ) {
        let mask = _mm256_set1_epi8(0x0F);
        // Tables per (input, row), resolved once per group.
        let tables: Vec<[&NibbleTables; G]> = (0..n)
            .map(|k| std::array::from_fn(|r| &NIBBLES[coeffs[(r0 + r) * n + k] as usize]))
            .collect();
        let mut pos = 0;
        while pos + 64 <= end {
            let mut acc = [[_mm256_setzero_si256(); 2]; G];
            for (input, row) in inputs.iter().zip(&tables) {
                // SAFETY: pos + 64 <= end <= input.len(); unaligned loads.
                let (x0, x1) = unsafe {
                    let p = input.as_ptr().add(pos);
                    (
                        _mm256_loadu_si256(p.cast()),
                        _mm256_loadu_si256(p.add(32).cast()),
                    )
                };
                let lo0 = _mm256_and_si256(x0, mask);
                let hi0 = _mm256_and_si256(_mm256_srli_epi64::<4>(x0), mask);
                let lo1 = _mm256_and_si256(x1, mask);
                let hi1 = _mm256_and_si256(_mm256_srli_epi64::<4>(x1), mask);
                for (a, t) in acc.iter_mut().zip(row) {
                    // SAFETY: each table half is 32 bytes and 32-byte aligned.
                    let (tl, th) = unsafe {
                        (
                            _mm256_load_si256(t.0.as_ptr().cast()),
                            _mm256_load_si256(t.1.as_ptr().cast()),
                        )
                    };
                    let p0 = _mm256_xor_si256(
                        _mm256_shuffle_epi8(tl, lo0),
                        _mm256_shuffle_epi8(th, hi0),
                    );
                    let p1 = _mm256_xor_si256(
                        _mm256_shuffle_epi8(tl, lo1),
                        _mm256_shuffle_epi8(th, hi1),
                    );
                    a[0] = _mm256_xor_si256(a[0], p0);
                    a[1] = _mm256_xor_si256(a[1], p1);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let out = &mut outputs[r0 + r];
                // SAFETY: pos + 64 <= end <= out.len(); unaligned stores.
                unsafe {
                    let p = out.as_mut_ptr().add(pos);
                    _mm256_storeu_si256(p.cast(), a[0]);
                    _mm256_storeu_si256(p.add(32).cast(), a[1]);
                }
            }
            pos += 64;
        }
        if pos < end {
            // One 32-byte step left.
            let mut acc = [_mm256_setzero_si256(); G];
            for (input, row) in inputs.iter().zip(&tables) {
                // SAFETY: pos + 32 <= end <= input.len(); unaligned load.
                let x = unsafe { _mm256_loadu_si256(input.as_ptr().add(pos).cast()) };
                let lo = _mm256_and_si256(x, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi64::<4>(x), mask);
                for (a, t) in acc.iter_mut().zip(row) {
                    // SAFETY: each table half is 32 bytes and 32-byte aligned.
                    let (tl, th) = unsafe {
                        (
                            _mm256_load_si256(t.0.as_ptr().cast()),
                            _mm256_load_si256(t.1.as_ptr().cast()),
                        )
                    };
                    let p =
                        _mm256_xor_si256(_mm256_shuffle_epi8(tl, lo), _mm256_shuffle_epi8(th, hi));
                    *a = _mm256_xor_si256(*a, p);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let out = &mut outputs[r0 + r];
                // SAFETY: pos + 32 <= end <= out.len(); unaligned store.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(pos).cast(), *a) };
            }
        }
    }

    /// # Safety
    /// The CPU must support SSSE3; shapes as for [`gemm_avx2`].
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn gemm_ssse3(
        coeffs: &[u8],
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        len: usize,
    ) -> usize {
        gemm_in_groups!(
            group_ssse3,
            GROUP,
            16,
            [8, 7, 6, 5, 4, 3, 2],
            coeffs,
            inputs,
            outputs,
            len
        )
    }

    /// # Safety
    /// As [`gemm_ssse3`], and rows `r0..r0 + G` exist; `end` is a multiple of 16 within `len`.
    #[target_feature(enable = "ssse3")]
    unsafe fn group_ssse3<const G: usize>(
        coeffs: &[u8],
        n: usize,
        r0: usize,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        end: usize,
    ) {
        let mask = _mm_set1_epi8(0x0F);
        let rows: [&[u8]; G] = std::array::from_fn(|r| &coeffs[(r0 + r) * n..(r0 + r + 1) * n]);
        let mut pos = 0;
        while pos < end {
            let mut acc = [_mm_setzero_si128(); G];
            for (k, input) in inputs.iter().enumerate() {
                // SAFETY: pos + 16 <= end <= input.len(); unaligned load.
                let x = unsafe { _mm_loadu_si128(input.as_ptr().add(pos).cast()) };
                let lo = _mm_and_si128(x, mask);
                let hi = _mm_and_si128(_mm_srli_epi64::<4>(x), mask);
                for r in 0..G {
                    let t = &NIBBLES[rows[r][k] as usize];
                    // SAFETY: each table half holds at least 16 bytes, 32-byte aligned.
                    let (tl, th) = unsafe {
                        (
                            _mm_load_si128(t.0.as_ptr().cast()),
                            _mm_load_si128(t.1.as_ptr().cast()),
                        )
                    };
                    let p = _mm_xor_si128(_mm_shuffle_epi8(tl, lo), _mm_shuffle_epi8(th, hi));
                    acc[r] = _mm_xor_si128(acc[r], p);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let out = &mut outputs[r0 + r];
                // SAFETY: pos + 16 <= end <= out.len(); unaligned store.
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add(pos).cast(), *a) };
            }
            pos += 16;
        }
    }
}

/// Inverse of the Cauchy matrix `C[r][c] = 1 / (xs[r] + ys[c])`, row-major with rows indexed by
/// `c` and columns by `r`, in O(e^2) from the closed form (signs vanish in characteristic 2):
///
/// ```text
/// C^-1[c][r] = A(y_c) B(x_r) / ((x_r + y_c) A'(x_r) B'(y_c))
/// A(z) = prod_k (z + x_k)   A'(x_r) = prod_{k != r} (x_r + x_k)
/// B(z) = prod_k (z + y_k)   B'(y_c) = prod_{k != c} (y_c + y_k)
/// ```
///
/// The sets must be disjoint with distinct members (always so for the parity matrix).
fn cauchy_inverse(xs: &[u8], ys: &[u8]) -> Vec<u8> {
    let prod = |z: u8, set: &[u8], skip: Option<usize>| {
        set.iter()
            .enumerate()
            .filter(|(k, _)| Some(*k) != skip)
            .fold(1u8, |acc, (_, &v)| mul(acc, z ^ v))
    };
    let e = xs.len();
    let a_y: Vec<u8> = ys.iter().map(|&y| prod(y, xs, None)).collect();
    let b_x: Vec<u8> = xs.iter().map(|&x| prod(x, ys, None)).collect();
    let da_x: Vec<u8> = (0..e).map(|r| prod(xs[r], xs, Some(r))).collect();
    let db_y: Vec<u8> = (0..e).map(|c| prod(ys[c], ys, Some(c))).collect();
    let mut out = Vec::with_capacity(e * e);
    for c in 0..e {
        for r in 0..e {
            let num = mul(a_y[c], b_x[r]);
            let den = mul(mul(xs[r] ^ ys[c], da_x[r]), db_y[c]);
            out.push(mul(num, inv(den).expect("disjoint distinct sets")));
        }
    }
    out
}

/// Inverts the `e x e` matrix `m` (row-major) in place by Gauss-Jordan elimination. Returns
/// `false` if it is singular. The test oracle for [`cauchy_inverse`].
#[cfg(test)]
fn invert(m: &mut [u8], e: usize) -> bool {
    debug_assert_eq!(m.len(), e * e);
    // Augment with the identity: rows of width 2e.
    let w = 2 * e;
    let mut a = vec![0u8; e * w];
    for r in 0..e {
        a[r * w..r * w + e].copy_from_slice(&m[r * e..(r + 1) * e]);
        a[r * w + e + r] = 1;
    }
    for col in 0..e {
        let Some(pivot) = (col..e).find(|&r| a[r * w + col] != 0) else {
            return false;
        };
        if pivot != col {
            for k in 0..w {
                a.swap(pivot * w + k, col * w + k);
            }
        }
        let scale = inv(a[col * w + col]).expect("pivot is non-zero");
        for k in 0..w {
            a[col * w + k] = mul(a[col * w + k], scale);
        }
        for r in 0..e {
            let f = a[r * w + col];
            if r == col || f == 0 {
                continue;
            }
            for k in 0..w {
                let v = mul(f, a[col * w + k]);
                a[r * w + k] ^= v;
            }
        }
    }
    for r in 0..e {
        m[r * e..(r + 1) * e].copy_from_slice(&a[r * w + e..(r + 1) * w]);
    }
    true
}

/// One cached decode matrix.
struct DecodePlan {
    /// `[data, parity, missing data indices..., parity indices used...]`.
    key: Vec<u8>,
    /// `e x data` coefficients; columns are the present data shards (ascending) followed by the
    /// parity shards used (ascending).
    matrix: Vec<u8>,
}

/// Reed-Solomon over GF(2^8) with the Cauchy parity matrix Moonlight decodes.
pub struct Gf8Cauchy {
    level: SimdLevel,
    /// Parity matrix of the last encoded geometry: `(data, parity, P)`.
    encode_matrix: (usize, usize, Vec<u8>),
    cache: Vec<DecodePlan>,
    /// Next cache slot to replace once the cache is full.
    victim: usize,
    hits: u64,
    misses: u64,
}

impl Default for Gf8Cauchy {
    fn default() -> Self {
        Self::with_level(SimdLevel::detect())
    }
}

impl std::fmt::Debug for Gf8Cauchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gf8Cauchy")
            .field("level", &self.level)
            .field("cached_plans", &self.cache.len())
            .finish()
    }
}

impl Gf8Cauchy {
    /// A codec using the fastest kernel this CPU supports.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec using `level` (falls back to the best supported level at or below it).
    pub fn with_level(level: SimdLevel) -> Self {
        Gf8Cauchy {
            level: level.supported_or_lower(),
            encode_matrix: (0, 0, Vec::new()),
            cache: Vec::new(),
            victim: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The kernel in use.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Decode-matrix cache `(hits, misses)` so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Drops every cached decode matrix.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.victim = 0;
    }

    fn check_geometry(data: usize, parity: usize) -> Result<(), FecError> {
        if data == 0 || data.saturating_add(parity) > MAX_TOTAL_SHARDS {
            return Err(FecError::Geometry { data, parity });
        }
        Ok(())
    }

    fn parity_matrix(&mut self, data: usize, parity: usize) -> &[u8] {
        if self.encode_matrix.0 != data || self.encode_matrix.1 != parity {
            let m = &mut self.encode_matrix.2;
            m.clear();
            for j in 0..parity {
                for i in 0..data {
                    m.push(inv(((parity + i) ^ j) as u8).expect("Cauchy entries are non-zero"));
                }
            }
            self.encode_matrix.0 = data;
            self.encode_matrix.1 = parity;
        }
        &self.encode_matrix.2
    }

    /// The decode matrix for `key` (see [`DecodePlan`]), from the cache or computed.
    fn plan(
        &mut self,
        key: &[u8],
        data: usize,
        parity: usize,
        e: usize,
    ) -> Result<usize, FecError> {
        if let Some(i) = self.cache.iter().position(|p| p.key == key) {
            self.hits += 1;
            return Ok(i);
        }
        self.misses += 1;
        let missing = &key[2..2 + e];
        let used = &key[2 + e..2 + 2 * e];
        let coeff = |j: u8, i: usize| -> u8 {
            inv(((parity + i) ^ (j as usize - data)) as u8).expect("Cauchy entries are non-zero")
        };
        // S: the used parity rows (x = parity index) over the missing data columns
        // (y = parity + data index); a Cauchy matrix, inverted in closed form.
        let xs: Vec<u8> = used.iter().map(|&j| j - data as u8).collect();
        let ys: Vec<u8> = missing
            .iter()
            .map(|&i| (parity + i as usize) as u8)
            .collect();
        let s = cauchy_inverse(&xs, &ys);
        // Q: the used parity rows over the present data columns, as e input vectors.
        let present: Vec<usize> = (0..data)
            .filter(|i| !missing.contains(&(*i as u8)))
            .collect();
        let q: Vec<Vec<u8>> = used
            .iter()
            .map(|&j| present.iter().map(|&i| coeff(j, i)).collect())
            .collect();
        // D = [S^-1 * Q | S^-1]: row m of S^-1 * Q is a combination of the rows of Q, which is
        // exactly what gemm computes.
        let mut sq = vec![vec![0u8; present.len()]; e];
        if !present.is_empty() {
            let inputs: Vec<&[u8]> = q.iter().map(|v| v.as_slice()).collect();
            let mut outputs: Vec<&mut [u8]> = sq.iter_mut().map(|v| v.as_mut_slice()).collect();
            gemm(self.level, &s, &inputs, &mut outputs);
        }
        let mut matrix = Vec::with_capacity(e * data);
        for m in 0..e {
            matrix.extend_from_slice(&sq[m]);
            matrix.extend_from_slice(&s[m * e..(m + 1) * e]);
        }
        let plan = DecodePlan {
            key: key.to_vec(),
            matrix,
        };
        if self.cache.len() < CACHE_ENTRIES {
            self.cache.push(plan);
            Ok(self.cache.len() - 1)
        } else {
            let i = self.victim;
            self.cache[i] = plan;
            self.victim = (i + 1) % CACHE_ENTRIES;
            Ok(i)
        }
    }
}

impl ErasureCode for Gf8Cauchy {
    fn code(&self) -> FecCode {
        FecCode::GF8_CAUCHY
    }

    fn encode(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
    ) -> Result<(), FecError> {
        Self::check_geometry(data, parity)?;
        if shards.count() != data + parity {
            return Err(FecError::ShardCount {
                have: shards.count(),
                need: data + parity,
            });
        }
        if parity == 0 {
            return Ok(());
        }
        let level = self.level;
        let p = self.parity_matrix(data, parity).to_vec();
        let (inputs, mut outputs) = shards.split_at(data);
        gemm(level, &p, &inputs, &mut outputs);
        Ok(())
    }

    fn reconstruct(
        &mut self,
        shards: &mut ShardsMut<'_>,
        data: usize,
        parity: usize,
        present: &[bool],
    ) -> Result<usize, FecError> {
        Self::check_geometry(data, parity)?;
        let e = check_reconstruct(shards, data, parity, present)?;
        if e == 0 {
            return Ok(0);
        }
        // Key: geometry, the missing data shards, the first e parity shards present.
        let mut key = Vec::with_capacity(2 + 2 * e);
        key.push(data as u8);
        key.push(parity as u8);
        key.extend((0..data).filter(|&i| !present[i]).map(|i| i as u8));
        key.extend(
            (data..data + parity)
                .filter(|&j| present[j])
                .take(e)
                .map(|j| j as u8),
        );
        let slot = self.plan(&key, data, parity, e)?;
        let level = self.level;
        let write: Vec<bool> = (0..data + parity)
            .map(|k| k < data && !present[k])
            .collect();
        let used = &key[2 + e..];
        let (readable, mut outputs) = shards.partition(&write);
        let inputs: Vec<&[u8]> = readable
            .iter()
            .filter(|(k, _)| *k < data || used.contains(&(*k as u8)))
            .map(|(_, s)| *s)
            .collect();
        let mut outputs: Vec<&mut [u8]> = outputs.iter_mut().map(|(_, s)| &mut **s).collect();
        gemm(level, &self.cache[slot].matrix, &inputs, &mut outputs);
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `vgf2p8affineqb` computes for one byte (Intel SDM): bit `i` of the result is the
    /// parity of `x` masked with byte `7 - i` of the matrix.
    fn affine_byte(matrix: u64, x: u8) -> u8 {
        (0..8).fold(0u8, |r, i| {
            let row = (matrix >> (8 * (7 - i))) as u8;
            r | (((row & x).count_ones() & 1) as u8) << i
        })
    }

    #[test]
    fn affine_matrices_multiply_in_this_field() {
        for c in 0..=255u8 {
            for x in 0..=255u8 {
                assert_eq!(affine_byte(AFFINE[c as usize], x), mul(c, x), "{c} * {x}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if SimdLevel::Gfni.is_supported() {
            // The instruction itself, on every byte value for a few constants.
            let xs: Vec<u8> = (0..=255).collect();
            for c in [0u8, 1, 2, 0x1D, 0x8E, 0xFF] {
                let mut out = vec![0u8; 256];
                gemm(SimdLevel::Gfni, &[c], &[&xs], &mut [&mut out]);
                let want: Vec<u8> = xs.iter().map(|&x| mul(c, x)).collect();
                assert_eq!(out, want, "c = {c}");
            }
        }
    }

    #[test]
    fn fallback_keeps_supported_levels_and_lowers_the_rest() {
        let chain = [
            SimdLevel::Scalar,
            SimdLevel::Ssse3,
            SimdLevel::Avx2,
            SimdLevel::Gfni,
        ];
        for (i, &level) in chain.iter().enumerate() {
            let got = level.supported_or_lower();
            assert!(got.is_supported(), "{level:?} -> {got:?}");
            if level.is_supported() {
                assert_eq!(got, level);
            } else {
                // The highest supported level below the requested one.
                let want = chain[..i].iter().rev().find(|l| l.is_supported());
                assert_eq!(Some(&got), want, "{level:?}");
            }
        }
    }

    #[test]
    fn field_tables_match_the_definition() {
        assert_eq!(EXP[0], 1);
        assert_eq!(EXP[8], 0x1D); // 2^8 = x^8 = x^4 + x^3 + x^2 + 1
        assert_eq!(EXP[255], 1); // the multiplicative group has order 255
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a).unwrap()), 1, "a = {a:#04x}");
            for b in [1u8, 2, 3, 0x1D, 0x80, 0xFF] {
                assert_eq!(mul(a, b), const_mul(a, b));
            }
        }
        assert_eq!(inv(0), None);
        assert_eq!(
            [inv(2), inv(3), inv(4), inv(5)],
            [Some(0x8E), Some(0xF4), Some(0x47), Some(0xA7)]
        );
    }

    #[test]
    fn parity_matrix_matches_the_worked_example() {
        // ds = 4, ps = 2: row 0 = inv(2), inv(3), inv(4), inv(5); row 1 = inv(3), inv(2), inv(5), inv(4).
        let row = |j| {
            (0..4)
                .map(|i| parity_coefficient(2, j, i).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), [0x8E, 0xF4, 0x47, 0xA7]);
        assert_eq!(row(1), [0xF4, 0x8E, 0xA7, 0x47]);
        assert_eq!(parity_coefficient(2, 2, 0), None);
        assert_eq!(parity_coefficient(2, 0, 253), None);
    }

    #[test]
    fn closed_form_cauchy_inverse_matches_elimination() {
        for (xs, ys) in [
            (vec![0u8], vec![5u8]),
            (vec![0, 1, 2], vec![3, 7, 9]),
            (vec![4, 1, 7, 2, 0], vec![8, 30, 9, 200, 11]),
        ] {
            let e = xs.len();
            let mut m: Vec<u8> = xs
                .iter()
                .flat_map(|&x| ys.iter().map(move |&y| inv(x ^ y).unwrap()))
                .collect();
            assert!(invert(&mut m, e));
            assert_eq!(cauchy_inverse(&xs, &ys), m, "xs={xs:?} ys={ys:?}");
        }
    }

    #[test]
    fn inversion_round_trips() {
        let e = 5;
        let orig: Vec<u8> = (0..e)
            .flat_map(|j| (0..e).map(move |i| inv(((e + i) ^ j) as u8).unwrap()))
            .collect();
        let mut m = orig.clone();
        assert!(invert(&mut m, e));
        for r in 0..e {
            for c in 0..e {
                let v = (0..e).fold(0, |acc, k| acc ^ mul(orig[r * e + k], m[k * e + c]));
                assert_eq!(v, u8::from(r == c));
            }
        }
        let mut singular = vec![1u8, 2, 1, 2];
        assert!(!invert(&mut singular, 2));
    }

    #[test]
    fn block_counts_near_usize_max_are_geometry_errors_not_overflows() {
        let mut buf = vec![0u8; 4 * 8];
        let codes: [&mut dyn ErasureCode; 2] =
            [&mut Gf8Cauchy::new(), &mut crate::fec::Gf16::new()];
        for code in codes {
            for (data, parity) in [(usize::MAX, 1), (1, usize::MAX), (usize::MAX, usize::MAX)] {
                let mut shards = ShardsMut::contiguous(&mut buf, 8, 4).unwrap();
                assert!(code.encode(&mut shards, data, parity).is_err());
                let present = [true, false, true, true];
                assert!(code
                    .reconstruct(&mut shards, data, parity, &present)
                    .is_err());
            }
        }
        assert_eq!(parity_coefficient(2, 0, usize::MAX), None);
        assert_eq!(parity_coefficient(usize::MAX, 0, 1), None);
    }
}
