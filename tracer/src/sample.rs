//! What the kernel's maps held at one moment, in a compact form that can be
//! kept (the agent keeps the sample a window started with) and subtracted (a
//! window's figures are the difference of two samples).

use std::collections::BTreeMap;

use tracer_common::{
    causes::Causes,
    hist::{BUCKETS, LatencyHist, bucket_index, bucket_range},
    maps::{CgroupStats, Counter},
};

/// A [`LatencyHist`] with only its non-empty buckets: a few dozen entries
/// instead of 529.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseHist {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// `(bucket index, count)`, by index.
    pub buckets: Vec<(u16, u64)>,
}

impl SparseHist {
    pub fn from_hist(h: &LatencyHist) -> Self {
        Self {
            count: h.count(),
            total_ns: h.total_ns,
            max_ns: h.max_ns,
            buckets: h
                .buckets
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(|(i, &n)| (i as u16, n))
                .collect(),
        }
    }

    pub fn to_hist(&self) -> LatencyHist {
        let mut h = LatencyHist::ZERO;
        h.total_ns = self.total_ns;
        h.max_ns = self.max_ns;
        for &(i, n) in &self.buckets {
            if let Some(b) = h.buckets.get_mut(usize::from(i)) {
                *b = n;
            }
        }
        h
    }

    /// The histogram of buckets given as `[low_ns, high_ns, count]` (as a
    /// dump's HdrHistograms decode), with its exact sum and maximum.
    pub fn from_ranges(ranges: &[[u64; 3]], total_ns: u64, max_ns: u64) -> Self {
        Self {
            count: ranges.iter().map(|r| r[2]).sum(),
            total_ns,
            max_ns,
            buckets: ranges
                .iter()
                .map(|&[low, _, n]| (bucket_index(low) as u16, n))
                .collect(),
        }
    }

    /// Its buckets as `[low_ns, high_ns, count]`.
    pub fn ranges(&self) -> Vec<[u64; 3]> {
        self.buckets
            .iter()
            .map(|&(i, n)| {
                let (low, high) = bucket_range(usize::from(i));
                [low, high, n]
            })
            .collect()
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Self) {
        let mut h = self.to_hist();
        h.merge(&other.to_hist());
        *self = Self::from_hist(&h);
    }

    /// What was added since `earlier` (a sample of the same histogram). The
    /// maximum of the window is not known exactly: it is the cumulative maximum
    /// if that grew in the window, otherwise the top of the highest bucket that
    /// did.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut old = earlier.buckets.iter().peekable();
        let mut buckets = Vec::new();
        for &(i, n) in &self.buckets {
            while old.next_if(|&&(j, _)| j < i).is_some() {}
            let before = old.next_if(|&&(j, _)| j == i).map_or(0, |&(_, m)| m);
            let added = n.saturating_sub(before);
            if added > 0 {
                buckets.push((i, added));
            }
        }
        let max_ns = if self.max_ns > earlier.max_ns {
            self.max_ns
        } else {
            buckets.last().map_or(0, |&(i, _)| {
                let (_, high) = bucket_range(usize::from(i).min(BUCKETS - 1));
                high.saturating_sub(1).min(self.max_ns)
            })
        };
        Self {
            count: self.count.saturating_sub(earlier.count),
            total_ns: self.total_ns.saturating_sub(earlier.total_ns),
            max_ns,
            buckets,
        }
    }
}

/// One cgroup's (or selection's) cumulative figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub wait: SparseHist,
    pub on_cpu: SparseHist,
    pub causes: Causes,
}

impl Totals {
    pub fn from_stats(s: &CgroupStats) -> Self {
        Self {
            wait: SparseHist::from_hist(&s.runnable_wait()),
            on_cpu: SparseHist::from_hist(&s.on_cpu()),
            causes: s.causes,
        }
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            wait: self.wait.since(&earlier.wait),
            on_cpu: self.on_cpu.since(&earlier.on_cpu),
            causes: self.causes.since(&earlier.causes),
        }
    }

    pub fn add(&mut self, other: &Self) {
        self.wait.add(&other.wait);
        self.on_cpu.add(&other.on_cpu);
        self.causes.merge(&other.causes);
    }

    /// Nothing happened: no wait and no run.
    pub fn is_idle(&self) -> bool {
        self.wait.count == 0 && self.on_cpu.count == 0
    }
}

/// Throttle episodes of one cgroup, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpisodeTotals {
    pub durations: SparseHist,
    /// CPU -> (count, total ns).
    pub per_cpu: BTreeMap<u32, (u64, u64)>,
    /// Cgroup id whose quota ran out (0: unknown) -> count.
    pub throttled_by: BTreeMap<u64, u64>,
}

impl EpisodeTotals {
    pub fn since(&self, earlier: &Self) -> Self {
        let per_cpu = self
            .per_cpu
            .iter()
            .filter_map(|(&cpu, &(n, ns))| {
                let (m, old) = earlier.per_cpu.get(&cpu).copied().unwrap_or((0, 0));
                (n > m).then(|| (cpu, (n - m, ns.saturating_sub(old))))
            })
            .collect();
        let throttled_by = self
            .throttled_by
            .iter()
            .filter_map(|(&by, &n)| {
                let m = earlier.throttled_by.get(&by).copied().unwrap_or(0);
                (n > m).then_some((by, n - m))
            })
            .collect();
        Self {
            durations: self.durations.since(&earlier.durations),
            per_cpu,
            throttled_by,
        }
    }
}

/// Who (occupant cgroup and process) held the CPU while a victim waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlamePair {
    pub victim: u64,
    pub occupant_cgroup: u64,
    pub occupant_tgid: u32,
}

/// The groups of `now` that did something since `then`, and what.
fn window<K: Ord + Copy>(
    now: &BTreeMap<K, Totals>,
    then: &BTreeMap<K, Totals>,
) -> BTreeMap<K, Totals> {
    let zero = Totals::default();
    now.iter()
        .map(|(k, t)| (*k, t.since(then.get(k).unwrap_or(&zero))))
        .filter(|(_, t)| !t.is_idle())
        .collect()
}

/// Everything read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Since the programs were attached.
    pub elapsed_ns: u64,
    pub counters: [u64; Counter::COUNT as usize],
    pub cgroups: BTreeMap<u64, Totals>,
    pub selections: BTreeMap<u32, Totals>,
    /// Contended ns charged, with the occupant's process name.
    pub blame: BTreeMap<BlamePair, (String, u64)>,
    /// Which accumulation of `blame` this is: the session starts a new one
    /// (from zero) when it releases what it kept.
    pub blame_epoch: u64,
    pub episodes: BTreeMap<u64, EpisodeTotals>,
    /// `cpu.stat` of the cgroups under a quota, by path.
    pub cpu_stats: BTreeMap<String, crate::cpustat::CpuStat>,
    /// The host's CPU pressure totals then.
    pub psi: Option<crate::psi::Pressure>,
    /// Each cgroup's own CPU pressure totals as last read (cgroup v2), by
    /// path.
    pub cgroup_psi: BTreeMap<String, crate::psi::Pressure>,
}

impl Sample {
    /// The window from `earlier` to `self`: what happened in between. Groups
    /// idle in the window are left out.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut counters = self.counters;
        for (c, e) in counters.iter_mut().zip(earlier.counters) {
            *c = c.saturating_sub(e);
        }

        // Across a release the blame started again from zero.
        let no_blame = BTreeMap::new();
        let earlier_blame = if earlier.blame_epoch == self.blame_epoch {
            &earlier.blame
        } else {
            &no_blame
        };
        let blame = self
            .blame
            .iter()
            .filter_map(|(k, (comm, ns))| {
                let old = earlier_blame.get(k).map_or(0, |(_, n)| *n);
                (*ns > old).then(|| (*k, (comm.clone(), ns - old)))
            })
            .collect();
        let no_episodes = EpisodeTotals::default();
        let episodes = self
            .episodes
            .iter()
            .map(|(k, e)| (*k, e.since(earlier.episodes.get(k).unwrap_or(&no_episodes))))
            .filter(|(_, e)| e.durations.count > 0)
            .collect();
        Self {
            elapsed_ns: self.elapsed_ns.saturating_sub(earlier.elapsed_ns),
            counters,
            cgroups: window(&self.cgroups, &earlier.cgroups),
            selections: window(&self.selections, &earlier.selections),
            blame,
            blame_epoch: self.blame_epoch,
            episodes,
            cpu_stats: self.cpu_stats.clone(),
            psi: self.psi,
            cgroup_psi: self.cgroup_psi.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> LatencyHist {
        let mut h = LatencyHist::ZERO;
        for &v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn sparse_round_trip() {
        let h = hist(&[0, 5, 1_000, 1_000, 3_000_000]);
        let s = SparseHist::from_hist(&h);
        assert_eq!(s.buckets.len(), 4);
        let back = s.to_hist();
        assert_eq!(back.buckets, h.buckets);
        assert_eq!(
            (back.count(), back.total_ns, back.max_ns),
            (5, h.total_ns, 3_000_000)
        );
    }

    #[test]
    fn windows_subtract() {
        let mut h = hist(&[1_000, 2_000_000]);
        let earlier = SparseHist::from_hist(&h);
        h.record(1_000);
        h.record(500_000);
        let now = SparseHist::from_hist(&h);
        let w = now.since(&earlier);
        assert_eq!(w.count, 2);
        assert_eq!(w.total_ns, 501_000);
        assert_eq!(w.to_hist().buckets, hist(&[1_000, 500_000]).buckets);
        // The cumulative max (2 ms) did not grow: the window's is the top of
        // its highest bucket, 500 µs's.
        let (lo, hi) = bucket_range(tracer_common::hist::bucket_index(500_000));
        assert!((lo..hi).contains(&w.max_ns), "{}", w.max_ns);
        assert_eq!(now.since(&now), SparseHist::default());
    }

    #[test]
    fn sample_windows_leave_idle_groups_out() {
        let mut stats = CgroupStats::ZERO;
        stats.record_wait(1_000, Default::default());
        stats.causes.throttled_ns = 10;
        let mut earlier = Sample::default();
        earlier.cgroups.insert(7, Totals::from_stats(&stats));
        earlier.cgroups.insert(8, Totals::from_stats(&stats));
        earlier.counters[0] = 100;
        earlier.elapsed_ns = 1_000;
        let mut now = earlier.clone();
        stats.record_wait(2_000, Default::default());
        stats.causes.throttled_ns = 25;
        now.cgroups.insert(7, Totals::from_stats(&stats));
        now.counters[0] = 150;
        now.elapsed_ns = 3_000;
        now.blame.insert(
            BlamePair {
                victim: 7,
                occupant_cgroup: 8,
                occupant_tgid: 1,
            },
            ("x".into(), 40),
        );
        let w = now.since(&earlier);
        assert_eq!(w.elapsed_ns, 2_000);
        assert_eq!(w.counters[0], 50);
        assert_eq!(w.cgroups.len(), 1, "cgroup 8 was idle in the window");
        assert_eq!(w.cgroups[&7].causes.throttled_ns, 15);
        assert_eq!(w.cgroups[&7].wait.count, 1);
        assert_eq!(w.blame.values().next().unwrap().1, 40);
    }

    #[test]
    fn totals_add_up() {
        let mut a = Totals::from_stats(&{
            let mut s = CgroupStats::ZERO;
            s.record_wait(1_000, Default::default());
            s.record_run(5_000);
            s.causes.contended_ns = 7;
            s
        });
        let b = Totals::from_stats(&{
            let mut s = CgroupStats::ZERO;
            s.record_wait(3_000_000, Default::default());
            s.causes.throttled_ns = 9;
            s.causes.throttled_waits = 1;
            s
        });
        a.add(&b);
        assert_eq!(a.wait.count, 2);
        assert_eq!(a.wait.total_ns, 3_001_000);
        assert_eq!(a.wait.max_ns, 3_000_000);
        assert_eq!(a.wait.to_hist().buckets, hist(&[1_000, 3_000_000]).buckets);
        assert_eq!(a.on_cpu.count, 1);
        assert_eq!(
            (
                a.causes.contended_ns,
                a.causes.throttled_ns,
                a.causes.throttled_waits
            ),
            (7, 9, 1)
        );
    }

    #[test]
    fn blame_windows_across_a_release() {
        let pair = BlamePair {
            victim: 1,
            occupant_cgroup: 2,
            occupant_tgid: 3,
        };
        let mut earlier = Sample::default();
        earlier.blame.insert(pair, ("x".into(), 100));
        let mut now = earlier.clone();
        now.blame.insert(pair, ("x".into(), 130));
        assert_eq!(now.since(&earlier).blame[&pair].1, 30);
        // Released after `earlier`: the 20 are all new.
        now.blame_epoch = 1;
        now.blame.insert(pair, ("x".into(), 20));
        assert_eq!(now.since(&earlier).blame[&pair].1, 20);
    }
}
