//! Log-linear latency buckets, computed the same way in the kernel and in userspace.
//!
//! The layout is the one HdrHistogram and Rezolus' H2 histograms use: values below
//! `2^GROUPING_POWER` get a bucket each, and every power of two above that is split
//! into `2^GROUPING_POWER` equal sub-buckets. With `GROUPING_POWER = 4` a bucket is
//! at most 1/16 (6.25 %) of its lower bound wide, so any value reported for a bucket
//! is within 6.25 % of every value that fell into it, from 16 ns up to
//! `2^MAX_POWER` ns (68.7 s). Larger values land in one overflow bucket; the exact
//! maximum is tracked next to the buckets.
//!
//! Everything here is loop-free and panic-free so that the eBPF side can call it on
//! the scheduler hot path.

/// Sub-buckets per power of two, as a power of two.
pub const GROUPING_POWER: u32 = 4;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u64 = 1 << GROUPING_POWER;
/// Values at or above `2^MAX_POWER` ns go to the overflow bucket.
pub const MAX_POWER: u32 = 36;
/// Index of the overflow bucket.
pub const OVERFLOW_BUCKET: usize = ((MAX_POWER - GROUPING_POWER + 1) as u64 * SUB_BUCKETS) as usize;
/// Number of buckets, the overflow bucket included.
pub const BUCKETS: usize = OVERFLOW_BUCKET + 1;

/// Position of the highest set bit of `v` (`v > 0`); 0 for 0.
///
/// BPF has no count-leading-zeros instruction and LLVM may lower
/// `leading_zeros` to a library call, so this is a branchy binary search.
#[inline(always)]
pub fn log2_floor(v: u64) -> u32 {
    let mut v = v;
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket index of a value in nanoseconds.
///
/// One formula for every value (below `SUB_BUCKETS` the shift is 0 and the
/// index is the value itself) rather than a separate branch for small values:
/// the compiler may test `v < SUB_BUCKETS` twice on such a branch, and
/// verifiers before 6.6 then follow the impossible side with contradictory
/// bounds and refuse the program.
#[inline(always)]
pub fn bucket_index(v: u64) -> usize {
    let h = log2_floor(v | 1);
    if h >= MAX_POWER {
        return OVERFLOW_BUCKET;
    }
    // Within the octave of 2^h, the top GROUPING_POWER + 1 bits of v select the
    // sub-bucket; (h - GROUPING_POWER + 1) octaves of SUB_BUCKETS precede it.
    let shift = h.saturating_sub(GROUPING_POWER);
    ((shift as u64 * SUB_BUCKETS) + (v >> shift)) as usize
}

/// Half-open range `[low, high)` of values that map to bucket `index`.
///
/// The overflow bucket reports `[2^MAX_POWER, u64::MAX)`; indices past it do too.
pub const fn bucket_range(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < SUB_BUCKETS {
        return (i, i + 1);
    }
    if index >= OVERFLOW_BUCKET {
        return (1 << MAX_POWER, u64::MAX);
    }
    let shift = (i / SUB_BUCKETS - 1) as u32;
    let sub = i % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << shift;
    (low, low + (1 << shift))
}

/// A histogram of nanosecond durations with exact count, sum and maximum.
///
/// Userspace's form of one histogram; the kernel's statistics entries keep
/// two of them interleaved (`crate::stats::CgroupStats`), with the same
/// buckets. The count is the buckets' sum ([`LatencyHist::count`]) rather
/// than a field of its own: a field would cost the kernel one more atomic add
/// per run and per wait, on every context switch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LatencyHist {
    pub total_ns: u64,
    pub max_ns: u64,
    pub buckets: [u64; BUCKETS],
}

impl LatencyHist {
    pub const ZERO: Self = Self {
        total_ns: 0,
        max_ns: 0,
        buckets: [0; BUCKETS],
    };

    /// Adds one duration. Not atomic: for values the caller owns (userspace's
    /// sums); the kernel's shared entries are added to with atomic adds
    /// (`tracer-ebpf/src/record.rs`).
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        self.total_ns = self.total_ns.wrapping_add(ns);
        if ns > self.max_ns {
            self.max_ns = ns;
        }
        if let Some(b) = self.buckets.get_mut(bucket_index(ns)) {
            *b = b.wrapping_add(1);
        }
    }

    /// Adds every count of `other` into `self` (a spill slot into its cgroup's
    /// total, say).
    pub fn merge(&mut self, other: &Self) {
        self.total_ns = self.total_ns.wrapping_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// How many durations were recorded: every one is in exactly one bucket.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |n, b| n.wrapping_add(*b))
    }
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::ZERO
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn log2_floor_matches_leading_zeros() {
        let mut samples: Vec<u64> = (1..5000).collect();
        for b in 0..64 {
            let p = 1u64 << b;
            samples.extend([p - 1, p, p + 1, p | (p >> 1)]);
        }
        samples.push(u64::MAX);
        for v in samples.into_iter().filter(|&v| v > 0) {
            assert_eq!(log2_floor(v), 63 - v.leading_zeros(), "v = {v}");
        }
        assert_eq!(log2_floor(0), 0);
    }

    #[test]
    fn exact_small_buckets() {
        for v in 0..16 {
            assert_eq!(bucket_index(v), v as usize);
            assert_eq!(bucket_range(v as usize), (v, v + 1));
        }
    }

    #[test]
    fn known_indices() {
        // First octave past the linear part has width 1.
        assert_eq!(bucket_index(16), 16);
        assert_eq!(bucket_index(31), 31);
        // 32..64 has width 2.
        assert_eq!(bucket_index(32), 32);
        assert_eq!(bucket_index(33), 32);
        assert_eq!(bucket_index(34), 33);
        // 1 µs = 1000 ns: 2^9 <= 1000 < 2^10, width 2^5 = 32, sub = (1000 >> 5) - 16 = 15.
        assert_eq!(bucket_index(1000), 6 * 16 + 15);
        assert_eq!(bucket_range(6 * 16 + 15), (992, 1024));
        // 1 ms = 1_000_000 ns: 2^19 <= v < 2^20, shift 15, sub = 30 - 16 = 14.
        assert_eq!(bucket_index(1_000_000), 16 * 16 + 14);
        assert_eq!(bucket_range(16 * 16 + 14), (983_040, 1_015_808));
        // Top of the range and overflow.
        assert_eq!(bucket_index((1 << MAX_POWER) - 1), OVERFLOW_BUCKET - 1);
        assert_eq!(bucket_index(1 << MAX_POWER), OVERFLOW_BUCKET);
        assert_eq!(bucket_index(u64::MAX), OVERFLOW_BUCKET);
        assert_eq!(BUCKETS, 529);
    }

    #[test]
    fn ranges_tile_the_value_space() {
        let mut expected_low = 0;
        for i in 0..OVERFLOW_BUCKET {
            let (lo, hi) = bucket_range(i);
            assert_eq!(
                lo,
                expected_low,
                "bucket {i} does not start where {} ended",
                i - 1
            );
            assert!(hi > lo);
            assert_eq!(bucket_index(lo), i);
            assert_eq!(bucket_index(hi - 1), i);
            expected_low = hi;
        }
        assert_eq!(expected_low, 1 << MAX_POWER);
        assert_eq!(bucket_range(OVERFLOW_BUCKET).0, 1 << MAX_POWER);
    }

    #[test]
    fn relative_width_is_at_most_one_sixteenth_from_1us_to_60s() {
        // Any value in a bucket is within (high - low) / low of any other one.
        let first = bucket_index(1_000);
        let last = bucket_index(60_000_000_000);
        assert!(
            last < OVERFLOW_BUCKET,
            "60 s must be inside the bucketed range"
        );
        for i in first..=last {
            let (lo, hi) = bucket_range(i);
            let rel = (hi - lo) as f64 / lo as f64;
            assert!(
                rel <= 1.0 / 16.0 + 1e-12,
                "bucket {i} [{lo}, {hi}) is {rel} wide"
            );
            assert!(rel <= 0.07);
        }
    }

    #[test]
    fn record_and_merge() {
        let mut a = LatencyHist::ZERO;
        a.record(5);
        a.record(1_000_000);
        a.record(1 << 40);
        assert_eq!(a.count(), 3);
        assert_eq!(a.total_ns, 5 + 1_000_000 + (1 << 40));
        assert_eq!(a.max_ns, 1 << 40);
        assert_eq!(a.buckets[5], 1);
        assert_eq!(a.buckets[bucket_index(1_000_000)], 1);
        assert_eq!(a.buckets[OVERFLOW_BUCKET], 1);

        let mut b = LatencyHist::ZERO;
        b.record(5);
        b.merge(&a);
        assert_eq!(b.count(), 4);
        assert_eq!(b.buckets[5], 2);
        assert_eq!(b.max_ns, 1 << 40);
    }
}
