//! The kernel's statistics entry of a cgroup (or a selection): its layout, and
//! the views userspace takes of it.
//!
//! Every context switch adds a finished run and, usually, a finished wait to
//! one entry: two sums, two maxima, a cause or two, and one bucket of each of
//! the two histograms. The entry is 8 KiB, mostly buckets, so the layout
//! decides how many cache lines and pages a switch touches. Two separate
//! histograms, each with its sum at its head, put those writes on five lines
//! over three pages. Here the scalars share the entry's first 64 bytes and
//! bucket `i` of both histograms lie side by side: a switch touches the head
//! and one or two bucket lines (a run and a wait of similar length fall in
//! nearby buckets, and any two buckets are at most 8 KiB apart).

use crate::{
    causes::Causes,
    hist::{BUCKETS, LatencyHist, bucket_index},
};

/// A histogram's exact sum and maximum (its count is its buckets' sum).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistHead {
    pub total_ns: u64,
    pub max_ns: u64,
}

impl HistHead {
    /// Adds one duration (not atomic, as [`CgroupStats::record_wait`]).
    fn add(&mut self, ns: u64) {
        self.total_ns = self.total_ns.wrapping_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, other: &Self) {
        self.total_ns = self.total_ns.wrapping_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// The wait histogram's column of [`CgroupStats::buckets`].
pub const WAIT: usize = 0;
/// The run histogram's column of [`CgroupStats::buckets`].
pub const RUN: usize = 1;

/// Everything the kernel aggregates for one cgroup (or one selection): every
/// CPU adds to the same entry, with atomic adds (the maximum alone is a plain
/// compare-and-store, which two CPUs racing may leave at the smaller value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupStats {
    /// Run-queue wait: from becoming runnable (woken, or switched out while
    /// still runnable) to being switched in.
    pub wait: HistHead,
    /// How long a task ran each time it got the CPU.
    pub run: HistHead,
    /// The wait split: throttled by CFS bandwidth, runnable while other tasks
    /// ran, and the rest (runnable on an idle CPU: wake-up latency).
    pub causes: Causes,
    /// Bucket `i` of the wait histogram (`[i][WAIT]`) and of the run
    /// histogram (`[i][RUN]`), side by side (see the module).
    pub buckets: [[u64; 2]; BUCKETS],
}

impl CgroupStats {
    pub const ZERO: Self = Self {
        wait: HistHead {
            total_ns: 0,
            max_ns: 0,
        },
        run: HistHead {
            total_ns: 0,
            max_ns: 0,
        },
        causes: Causes::ZERO,
        buckets: [[0; 2]; BUCKETS],
    };

    /// The run-queue wait histogram.
    pub fn runnable_wait(&self) -> LatencyHist {
        self.hist(WAIT)
    }

    /// The on-CPU histogram.
    pub fn on_cpu(&self) -> LatencyHist {
        self.hist(RUN)
    }

    fn hist(&self, column: usize) -> LatencyHist {
        let head = if column == WAIT {
            &self.wait
        } else {
            &self.run
        };
        let mut h = LatencyHist::ZERO;
        h.total_ns = head.total_ns;
        h.max_ns = head.max_ns;
        for (b, pair) in h.buckets.iter_mut().zip(self.buckets.iter()) {
            *b = pair[column];
        }
        h
    }

    /// Adds a finished wait. Not atomic: for entries the caller owns (tests,
    /// userspace sums); the kernel adds with atomic adds
    /// (`tracer-ebpf/src/record.rs`).
    pub fn record_wait(&mut self, total: u64, parts: crate::causes::Split) {
        self.add(WAIT, total);
        self.causes.add(parts);
    }

    /// Adds a finished run (not atomic, as [`CgroupStats::record_wait`]).
    pub fn record_run(&mut self, ns: u64) {
        self.add(RUN, ns);
    }

    fn add(&mut self, column: usize, ns: u64) {
        let head = if column == WAIT {
            &mut self.wait
        } else {
            &mut self.run
        };
        head.add(ns);
        if let Some(pair) = self.buckets.get_mut(bucket_index(ns)) {
            pair[column] = pair[column].wrapping_add(1);
        }
    }

    /// Adds every count of `other` (a spill slot into its cgroup's total,
    /// say). Every field is named, so that a new one cannot be forgotten.
    pub fn merge(&mut self, other: &Self) {
        let Self {
            wait,
            run,
            causes,
            buckets,
        } = self;
        wait.merge(&other.wait);
        run.merge(&other.run);
        causes.merge(&other.causes);
        for (pair, theirs) in buckets.iter_mut().zip(other.buckets.iter()) {
            pair[WAIT] = pair[WAIT].wrapping_add(theirs[WAIT]);
            pair[RUN] = pair[RUN].wrapping_add(theirs[RUN]);
        }
    }
}

impl Default for CgroupStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Every scalar a switch adds to is in the entry's first cache line.
const _: () = assert!(core::mem::offset_of!(CgroupStats, buckets) == 64);
const _: () = assert!(core::mem::size_of::<CgroupStats>() == 64 + 16 * BUCKETS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causes::Split;

    #[test]
    fn the_two_histograms_read_back_as_recorded_apart() {
        let mut s = CgroupStats::ZERO;
        let mut wait = LatencyHist::ZERO;
        let mut run = LatencyHist::ZERO;
        for ns in [0, 15, 1_000, 1_500, 4_000_000, 1 << 40] {
            s.record_wait(
                ns,
                Split {
                    throttled: 0,
                    contended: ns / 2,
                    other: ns - ns / 2,
                },
            );
            wait.record(ns);
            s.record_run(ns * 3 + 1);
            run.record(ns * 3 + 1);
        }
        let (w, r) = (s.runnable_wait(), s.on_cpu());
        assert_eq!(
            (w.total_ns, w.max_ns, w.buckets),
            (wait.total_ns, wait.max_ns, wait.buckets)
        );
        assert_eq!(
            (r.total_ns, r.max_ns, r.buckets),
            (run.total_ns, run.max_ns, run.buckets)
        );
        assert_eq!(w.count(), 6);
        assert_eq!(s.causes.contended_ns + s.causes.other_ns, w.total_ns);
    }

    #[test]
    fn merging_adds_both_columns_and_keeps_the_larger_maximum() {
        let mut a = CgroupStats::ZERO;
        a.record_wait(100, Split::default());
        a.record_run(7);
        let mut b = CgroupStats::ZERO;
        b.record_wait(300, Split::default());
        b.record_run(5_000);
        a.merge(&b);
        assert_eq!((a.wait.total_ns, a.wait.max_ns), (400, 300));
        assert_eq!((a.run.total_ns, a.run.max_ns), (5_007, 5_000));
        assert_eq!(a.runnable_wait().count(), 2);
        assert_eq!(a.on_cpu().count(), 2);
    }
}
