//! Percentiles and text rendering of the kernel's log-linear histograms.

use crate::format::fmt_ns;
use serde::{Deserialize, Serialize};
use tracer_common::hist::{LatencyHist, OVERFLOW_BUCKET, SUB_BUCKETS, bucket_range};

/// The figures reported for one histogram. JSON key names are stable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// The value reported for quantile `q` (0..=1): the middle of the bucket holding
/// the rank-`ceil(q * count)` value, clamped to the exact maximum; the top rank is
/// the exact maximum. Buckets below 16 ns are exact; above, the reported value is
/// within 1/32 of the true one.
pub fn quantile(h: &LatencyHist, q: f64) -> u64 {
    let total = h.count();
    if total == 0 {
        return 0;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    if rank >= total {
        // The largest value is known exactly.
        return h.max_ns;
    }
    let mut seen = 0;
    for (i, &n) in h.buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            if i >= OVERFLOW_BUCKET {
                return h.max_ns;
            }
            let (lo, hi) = bucket_range(i);
            let mid = if (i as u64) < SUB_BUCKETS {
                lo
            } else {
                lo + (hi - lo) / 2
            };
            return mid.min(h.max_ns);
        }
    }
    h.max_ns
}

pub fn summarize(h: &LatencyHist) -> Summary {
    Summary {
        count: h.count(),
        total_ns: h.total_ns,
        p50_ns: quantile(h, 0.50),
        p90_ns: quantile(h, 0.90),
        p99_ns: quantile(h, 0.99),
        p999_ns: quantile(h, 0.999),
        max_ns: h.max_ns,
    }
}

/// Non-empty buckets as `[low_ns, high_ns, count]` (high exclusive), for JSON.
pub fn sparse_buckets(h: &LatencyHist) -> Vec<[u64; 3]> {
    h.buckets
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .map(|(i, &n)| {
            let (lo, hi) = bucket_range(i);
            [lo, hi, n]
        })
        .collect()
}

/// The buckets grouped into power-of-two rows `(low_ns, high_ns, count)`, from
/// the first non-empty row to the last (the rows runqlat users know).
pub fn log2_rows(buckets: &[[u64; 3]]) -> Vec<(u64, u64, u64)> {
    // Row r holds [2^r, 2^(r+1)) ns; row 0 also holds 0.
    let mut rows = [0u64; 64];
    for &[lo, _, n] in buckets {
        let row = if lo == 0 {
            0
        } else {
            63 - lo.leading_zeros() as usize
        };
        rows[row] = rows[row].saturating_add(n);
    }
    let Some(first) = rows.iter().position(|&n| n > 0) else {
        return Vec::new();
    };
    let last = rows.iter().rposition(|&n| n > 0).unwrap_or(first);
    (first..=last)
        .map(|row| {
            let lo = if row == 0 { 0 } else { 1u64 << row };
            let hi = 1u64.checked_shl(row as u32 + 1).unwrap_or(u64::MAX);
            (lo, hi, rows[row])
        })
        .collect()
}

/// A power-of-two text histogram of buckets as [`sparse_buckets`] lists them.
pub fn render_text(buckets: &[[u64; 3]], indent: &str) -> String {
    const WIDTH: u64 = 40;
    let rows = log2_rows(buckets);
    if rows.is_empty() {
        return format!("{indent}(no samples)\n");
    }
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let mut out = String::new();
    for (lo, hi, n) in rows {
        // Round up so that a non-zero row always shows.
        let bar = (n.saturating_mul(WIDTH)).div_ceil(peak) as usize;
        out.push_str(&format!(
            "{indent}{:>8} .. {:<8} |{:<width$}| {n}\n",
            fmt_ns(lo),
            fmt_ns(hi),
            "#".repeat(bar),
            width = WIDTH as usize
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: impl IntoIterator<Item = u64>) -> LatencyHist {
        let mut h = LatencyHist::ZERO;
        for v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn empty() {
        let h = LatencyHist::ZERO;
        assert_eq!(summarize(&h), Summary::default());
        assert_eq!(render_text(&sparse_buckets(&h), ""), "(no samples)\n");
    }

    #[test]
    fn exact_small_values() {
        let h = hist([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(quantile(&h, 0.5), 5);
        assert_eq!(quantile(&h, 0.9), 9);
        assert_eq!(quantile(&h, 1.0), 10);
        assert_eq!(quantile(&h, 0.0), 1);
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        // 1..=100_000 µs uniformly: pXX is XX% of 100 ms.
        let h = hist((1..=100_000u64).map(|us| us * 1_000));
        let s = summarize(&h);
        for (got, want) in [
            (s.p50_ns, 50_000_000.0),
            (s.p90_ns, 90_000_000.0),
            (s.p99_ns, 99_000_000.0),
            (s.p999_ns, 99_900_000.0),
        ] {
            let err = (got as f64 - want).abs() / want;
            assert!(err <= 1.0 / 32.0 + 1e-9, "got {got}, want {want}: {err}");
        }
        assert_eq!(s.max_ns, 100_000_000);
        assert_eq!(s.count, 100_000);
        assert_eq!(
            s.total_ns,
            (1..=100_000u64).map(|us| us * 1_000).sum::<u64>()
        );
    }

    #[test]
    fn top_quantile_never_exceeds_max() {
        let h = hist([1_000_000, 1_000_001]);
        assert_eq!(quantile(&h, 1.0), 1_000_001);
        let h = hist([u64::MAX / 2]);
        assert_eq!(
            quantile(&h, 0.5),
            u64::MAX / 2,
            "overflow bucket reports the max"
        );
    }

    #[test]
    fn sparse_buckets_list_only_non_empty_ones() {
        let h = hist([0, 17, 1_000, 1_000, 3_000_000, 1 << 40]);
        let sparse = sparse_buckets(&h);
        assert_eq!(sparse.len(), 5);
        assert_eq!(sparse[2], [992, 1024, 2]);
        assert_eq!(sparse.iter().map(|b| b[2]).sum::<u64>(), h.count());
        assert_eq!(sparse[4], [1 << 36, u64::MAX, 1]);
    }

    #[test]
    fn text_rows() {
        let h = hist([1_500, 1_600, 3_000, 100_000]);
        let text = render_text(&sparse_buckets(&h), "  ");
        let lines: Vec<&str> = text.lines().collect();
        // 1024..2048, 2048..4096, then empty rows up to 65536..131072.
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[0].contains("1.02 µs") && lines[0].ends_with("| 2"),
            "{text}"
        );
        assert!(lines[0].contains(&"#".repeat(40)));
        assert!(lines[1].ends_with("| 1") && lines[1].contains(&"#".repeat(20)));
        assert!(lines[2].ends_with("| 0") && !lines[2].contains('#'));
        assert!(
            lines[6].contains("65.5 µs") && lines[6].ends_with("| 1"),
            "{text}"
        );
    }
}
