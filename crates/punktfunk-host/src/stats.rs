//! Per-session timing figures in constant memory.
//!
//! A session records a few timings per frame for as long as the client stays (hours, if it
//! likes), so they go into a [`Histogram`] of fixed size instead of a growing list: values below
//! 128 are counted exactly, larger ones in 64 buckets per power of two, so a percentile is off
//! by at most 1/64 (1.6 %) of its value, on the high side.

/// Values below this are counted exactly.
const EXACT: u32 = 128;
/// Buckets per power of two above [`EXACT`].
const SUB: u32 = 64;
/// Buckets in all: the exact ones, then 64 for each power of two from 2^7 to 2^31.
const BUCKETS: usize = (EXACT + (32 - 7) * SUB) as usize;

/// A histogram of `u32` samples (microseconds, in the host's use).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    n: u64,
    max: u32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            n: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("n", &self.n)
            .field("p50", &self.percentile(50.0))
            .field("p99", &self.percentile(99.0))
            .field("max", &self.max)
            .finish()
    }
}

fn bucket(v: u32) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 31 - v.leading_zeros(); // 7..=31
    let sub = (v >> (e - 6)) & (SUB - 1);
    (EXACT + (e - 7) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_top(i: usize) -> u32 {
    let i = i as u32;
    if i < EXACT {
        return i;
    }
    let e = 7 + (i - EXACT) / SUB;
    let sub = (i - EXACT) % SUB;
    let low = (u64::from(SUB + sub)) << (e - 6);
    (low + (1u64 << (e - 6)) - 1).min(u64::from(u32::MAX)) as u32
}

impl Histogram {
    /// Counts one sample.
    pub fn record(&mut self, v: u32) {
        self.counts[bucket(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    /// Samples counted.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `p`-th percentile (nearest rank, 0 < p ≤ 100): exact below 128, otherwise at most
    /// 1.6 % above the true value; never above the largest sample. 0 when empty.
    pub fn percentile(&self, p: f64) -> u32 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.n as f64)
            .ceil()
            .clamp(1.0, self.n as f64) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_top(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentile of a sorted list, the reference.
    fn exact(sorted: &[u32], p: f64) -> u32 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..4096).chain([u32::MAX / 3, u32::MAX - 1, u32::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            assert!(bucket_top(b) >= v, "{v} above its bucket's top");
            assert!(
                u64::from(bucket_top(b) - v) * 64 <= u64::from(v),
                "{v}: bucket wider than 1/64"
            );
        }
        assert_eq!(bucket(u32::MAX), BUCKETS - 1);
        assert_eq!(bucket_top(BUCKETS - 1), u32::MAX);
    }

    #[test]
    fn percentiles_match_a_sorted_list_within_the_bucket_width() {
        // A spread like frame timings: mostly ~100-300 µs, a tail into milliseconds.
        let mut x: u64 = 0x1234_5678;
        let mut samples = Vec::new();
        let mut h = Histogram::default();
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 100 == 0 {
                1_000 + (x % 50_000) as u32
            } else {
                60 + (x % 300) as u32
            };
            samples.push(v);
            h.record(v);
        }
        samples.sort_unstable();
        assert_eq!(h.len(), 20_000);
        for p in [1.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            let want = exact(&samples, p);
            let got = h.percentile(p);
            assert!(got >= want, "p{p}: {got} below {want}");
            assert!(
                u64::from(got - want) * 64 <= u64::from(want),
                "p{p}: {got} vs {want}"
            );
        }
        assert_eq!(h.percentile(100.0), *samples.last().unwrap());
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut h = Histogram::default();
        assert!(h.is_empty());
        assert_eq!(h.percentile(99.0), 0);
        for v in [5, 1, 9, 3, 127] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 5);
        assert_eq!(h.percentile(20.0), 1);
        assert_eq!(h.percentile(100.0), 127);
        let mut one = Histogram::default();
        one.record(1_000_003);
        assert_eq!(
            one.percentile(50.0),
            1_000_003,
            "capped at the largest sample"
        );
    }
}
