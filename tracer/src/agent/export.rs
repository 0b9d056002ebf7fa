//! Which cgroups get series of their own, and the sum of the rest.
//!
//! Cardinality is bounded: the first `limit` cgroups seen (that the include /
//! exclude prefixes allow) get their own series; later ones are summed into one
//! `cgroup="other"` series. Membership never changes while a cgroup lives, so
//! every counter stays monotonic; when a summed cgroup disappears, what it had
//! added stays in the sum; when an exported one disappears, its series goes and
//! its slot is free for a new cgroup.

use std::collections::{BTreeMap, HashSet};

use tracer_common::{causes::Causes, hist::bucket_range};

use crate::{
    filter::CgroupFilter,
    sample::{BlamePair, EpisodeTotals, SparseHist, Totals},
    workload::Workload,
};

/// The label of the summed series.
pub const OTHER: &str = "other";

/// Upper bounds of the runnable-wait histogram buckets, in ns: powers of four
/// from 1.02 µs to 68.7 s. They are edges of the tracer's own buckets, so every
/// count lands exactly.
pub const LE_NS: [u64; 14] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
    1 << 32,
    1 << 34,
    1 << 36,
];

/// What one series (a cgroup, or the sum of many) exports, summable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    /// Waits of at most each `LE_NS` bound (not cumulative; `le` sums them).
    pub wait_buckets: [u64; LE_NS.len() + 1],
    pub wait_count: u64,
    pub wait_ns: u64,
    pub causes: Causes,
    pub on_cpu_ns: u64,
    pub episodes: u64,
    pub episode_ns: u64,
}

impl Series {
    pub fn from_totals(t: &Totals, e: Option<&EpisodeTotals>) -> Self {
        Self {
            wait_buckets: prometheus_buckets(&t.wait),
            wait_count: t.wait.count,
            wait_ns: t.wait.total_ns,
            causes: t.causes,
            on_cpu_ns: t.on_cpu.total_ns,
            episodes: e.map_or(0, |e| e.durations.count),
            episode_ns: e.map_or(0, |e| e.durations.total_ns),
        }
    }

    pub fn add(&mut self, o: &Self) {
        for (a, b) in self.wait_buckets.iter_mut().zip(o.wait_buckets) {
            *a += b;
        }
        self.wait_count += o.wait_count;
        self.wait_ns += o.wait_ns;
        self.causes.merge(&o.causes);
        self.on_cpu_ns += o.on_cpu_ns;
        self.episodes += o.episodes;
        self.episode_ns += o.episode_ns;
    }
}

/// The tracer's buckets regrouped at [`LE_NS`] (the last slot is `+Inf`).
fn prometheus_buckets(h: &SparseHist) -> [u64; LE_NS.len() + 1] {
    let mut out = [0; LE_NS.len() + 1];
    for &(i, n) in &h.buckets {
        let (_, high) = bucket_range(usize::from(i));
        let slot = LE_NS
            .iter()
            .position(|&le| high <= le)
            .unwrap_or(LE_NS.len());
        out[slot] += n;
    }
    out
}

/// Where a cgroup's figures go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Own,
    Other,
    /// Not exported (outside the include prefixes, or excluded).
    Skipped,
}

#[derive(Debug)]
pub struct Exporter {
    limit: usize,
    filter: CgroupFilter,
    slots: BTreeMap<u64, Slot>,
    own: usize,
    /// The last figures of each cgroup summed into "other".
    summed: BTreeMap<u64, Series>,
    /// What summed cgroups that are gone had added.
    retired: Series,
    summed_any: bool,
}

impl Exporter {
    pub fn new(limit: usize, filter: CgroupFilter) -> Self {
        Self {
            limit,
            filter,
            slots: BTreeMap::new(),
            own: 0,
            summed: BTreeMap::new(),
            retired: Series::default(),
            summed_any: false,
        }
    }

    /// The slot of cgroup `id` at `path`, holding `workload`, deciding it on
    /// first sight: but a pod's cgroup that a selector by name skips is
    /// decided again until its pod is named (the kubelet may write its log
    /// directory after the cgroup is made).
    pub fn slot(&mut self, id: u64, path: &str, workload: &Workload) -> Slot {
        if let Some(&s) = self.slots.get(&id) {
            return s;
        }
        let slot = if !self.filter.allows(path, workload) {
            let unnamed = workload.pod_uid.is_some() && workload.pod.is_none();
            if unnamed && self.filter.needs_names() {
                return Slot::Skipped;
            }
            Slot::Skipped
        } else if self.own < self.limit {
            self.own += 1;
            Slot::Own
        } else {
            self.summed_any = true;
            Slot::Other
        };
        self.slots.insert(id, slot);
        slot
    }

    /// Notes the latest figures of a cgroup summed into "other".
    pub fn update_summed(&mut self, id: u64, s: Series) {
        self.summed.insert(id, s);
    }

    /// The "other" series: everything summed, the departed included; none
    /// until a cgroup has been summed (then it stays, so that it never resets).
    pub fn other(&self) -> Option<Series> {
        if !self.summed_any {
            return None;
        }
        let mut total = self.retired.clone();
        for s in self.summed.values() {
            total.add(s);
        }
        Some(total)
    }

    /// Forgets a cgroup that is gone, keeping what it added to "other".
    pub fn evict(&mut self, id: u64) {
        match self.slots.remove(&id) {
            Some(Slot::Own) => self.own -= 1,
            Some(Slot::Other) => {
                if let Some(s) = self.summed.remove(&id) {
                    self.retired.add(&s);
                }
            }
            _ => {}
        }
    }

    /// Cgroups with series of their own.
    pub fn exported(&self) -> usize {
        self.own
    }

    /// Cgroups the exporter remembers (all slots).
    #[cfg(test)]
    fn known(&self) -> usize {
        self.slots.len()
    }
}

/// Contended time charged per (victim cgroup, occupant cgroup), kept
/// monotonic although the blame rows underneath start again from zero each
/// time the session releases them (a new epoch).
#[derive(Debug, Default)]
pub struct Occupancy {
    /// Each row's value at the last update.
    last: BTreeMap<BlamePair, u64>,
    epoch: u64,
    /// (victim, occupant) -> ns.
    totals: BTreeMap<(u64, u64), u64>,
    /// Cgroups evicted in this epoch and the one before. The session keeps
    /// a gone cgroup's blame rows until it releases them (the next epoch),
    /// and rows still in the CPUs' caches may reach it a little later: an
    /// update must not bring back a pair [`Self::evict`] took out, which
    /// would then stay for good (a leak per cgroup under churn).
    evicted: [HashSet<u64>; 2],
}

impl Occupancy {
    /// Adds what each row of blame epoch `epoch` gained since the last
    /// update. A row seen for the first time in an epoch counts whole.
    pub fn update<'a>(&mut self, epoch: u64, rows: impl IntoIterator<Item = (&'a BlamePair, u64)>) {
        if epoch != self.epoch {
            self.last.clear();
            self.epoch = epoch;
            let [now, before] = &mut self.evicted;
            *before = std::mem::take(now);
        }
        let mut last = BTreeMap::new();
        for (pair, ns) in rows {
            if self.is_evicted(pair.victim) || self.is_evicted(pair.occupant_cgroup) {
                continue;
            }
            let before = self.last.get(pair).copied().unwrap_or(0);
            *self
                .totals
                .entry((pair.victim, pair.occupant_cgroup))
                .or_default() += ns.saturating_sub(before);
            last.insert(*pair, ns);
        }
        self.last = last;
    }

    /// The `n` occupants that held the CPU longest while `victim` waited.
    pub fn top(&self, victim: u64, n: usize) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .totals
            .range((victim, 0)..=(victim, u64::MAX))
            .map(|(&(_, occupant), &ns)| (occupant, ns))
            .collect();
        v.sort_by_key(|&(occupant, ns)| (std::cmp::Reverse(ns), occupant));
        v.truncate(n);
        v
    }

    /// Forgets the cgroups gone, as victims and as occupants.
    pub fn evict(&mut self, gone: &HashSet<u64>) {
        if gone.is_empty() {
            return;
        }
        self.totals
            .retain(|(v, o), _| !gone.contains(v) && !gone.contains(o));
        self.evicted[0].extend(gone);
    }

    fn is_evicted(&self, id: u64) -> bool {
        self.evicted.iter().any(|set| set.contains(&id))
    }

    /// (victim, occupant) pairs kept.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::filter::Selector;

    fn series(wait: u64) -> Series {
        let mut h = LatencyHist::ZERO;
        h.record(wait);
        Series::from_totals(
            &Totals {
                wait: SparseHist::from_hist(&h),
                causes: Causes {
                    contended_ns: wait,
                    ..Causes::ZERO
                },
                ..Totals::default()
            },
            None,
        )
    }

    #[test]
    fn buckets_land_exactly() {
        let mut h = LatencyHist::ZERO;
        for v in [0, 1_023, 1_024, 4_095, 1_000_000, 1 << 40] {
            h.record(v);
        }
        let b = prometheus_buckets(&SparseHist::from_hist(&h));
        // Values below 2^10 are at most 1.024 µs, up to 2^12 at most 4.096 µs...
        assert_eq!(b[0], 2);
        assert_eq!(b[1], 2, "1024 and 4095");
        assert_eq!(b[5], 1, "1 ms is below 2^20 ns");
        assert_eq!(b[LE_NS.len()], 1, "over 68.7 s");
        assert_eq!(b.iter().sum::<u64>(), 6);
    }

    #[test]
    fn limit_include_and_exclude() {
        let mut e = Exporter::new(
            2,
            CgroupFilter {
                include: vec![Selector::Path("/k".into())],
                exclude: vec![Selector::Path("/k/skip".into())],
                also: Vec::new(),
            },
        );
        assert_eq!(e.slot(1, "/k/a", &Workload::from_path("/k/a")), Slot::Own);
        assert_eq!(
            e.slot(2, "/system.slice", &Workload::from_path("/system.slice")),
            Slot::Skipped
        );
        assert_eq!(
            e.slot(3, "/k/skip/x", &Workload::from_path("/k/skip/x")),
            Slot::Skipped
        );
        assert_eq!(e.slot(4, "/k/b", &Workload::from_path("/k/b")), Slot::Own);
        assert_eq!(e.slot(5, "/k/c", &Workload::from_path("/k/c")), Slot::Other);
        assert_eq!(
            e.slot(1, "/k/a", &Workload::from_path("/k/a")),
            Slot::Own,
            "decided once"
        );
        assert_eq!(e.exported(), 2);
        // An exported cgroup leaves: a new one gets the slot; a summed one stays summed.
        e.evict(1);
        assert_eq!(e.slot(5, "/k/c", &Workload::from_path("/k/c")), Slot::Other);
        assert_eq!(e.slot(6, "/k/d", &Workload::from_path("/k/d")), Slot::Own);
    }

    #[test]
    fn a_pod_skipped_before_it_is_named_is_decided_again() {
        let mut e = Exporter::new(
            5,
            CgroupFilter {
                include: vec![Selector::Namespace("shop".into())],
                ..CgroupFilter::default()
            },
        );
        let path = "/kubepods/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d/\
                    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut w = Workload::from_path(path);
        assert_eq!(e.slot(1, path, &w), Slot::Skipped, "not named yet");
        w.namespace = Some("shop".into());
        w.pod = Some("api".into());
        assert_eq!(e.slot(1, path, &w), Slot::Own, "named now");
        let mut other = w.clone();
        other.namespace = Some("batch".into());
        assert_eq!(e.slot(2, path, &other), Slot::Skipped);
        assert_eq!(
            e.slot(2, path, &w),
            Slot::Skipped,
            "a named pod is decided once"
        );
    }

    #[test]
    fn other_never_goes_down() {
        let mut e = Exporter::new(0, CgroupFilter::default());
        assert_eq!(e.other(), None, "no series before anything is summed");
        assert_eq!(e.slot(1, "/a", &Workload::from_path("/a")), Slot::Other);
        assert_eq!(e.slot(2, "/b", &Workload::from_path("/b")), Slot::Other);
        e.update_summed(1, series(1_000));
        e.update_summed(2, series(2_000));
        let before = e.other().unwrap();
        assert_eq!(before.causes.contended_ns, 3_000);
        e.evict(1);
        let after = e.other().unwrap();
        assert_eq!(after, before, "a departed cgroup's share stays in the sum");
        e.update_summed(2, series(5_000));
        assert_eq!(e.other().unwrap().causes.contended_ns, 6_000);
        assert_eq!(e.known(), 1);
        e.evict(2);
        assert!(e.other().is_some(), "the series stays once it exists");
    }

    #[test]
    fn occupancy_stays_monotonic_as_rows_come_and_go() {
        let pair = |victim, occupant_cgroup, occupant_tgid| BlamePair {
            victim,
            occupant_cgroup,
            occupant_tgid,
        };
        let (a, b, c) = (pair(1, 2, 100), pair(1, 2, 101), pair(1, 3, 102));
        let mut o = Occupancy::default();
        o.update(0, [(&a, 10), (&c, 50)]);
        assert_eq!(o.top(1, 5), [(3, 50), (2, 10)]);
        o.update(0, [(&a, 30), (&b, 5), (&c, 50)]);
        assert_eq!(o.top(1, 5), [(3, 50), (2, 35)]);
        o.update(0, [(&a, 30), (&b, 6), (&c, 50)]);
        assert_eq!(o.top(1, 1), [(3, 50)]);
        assert_eq!(o.top(1, 5)[1], (2, 36));
        // Released: the rows start again from zero, a new epoch.
        o.update(1, [(&a, 4)]);
        assert_eq!(o.top(1, 5), [(3, 50), (2, 40)]);
        o.update(1, [(&a, 6), (&c, 1)]);
        assert_eq!(o.top(1, 5), [(3, 51), (2, 42)]);
        assert!(o.top(7, 5).is_empty());
        o.evict(&HashSet::from([3]));
        assert_eq!(o.top(1, 5), [(2, 42)]);
        o.evict(&HashSet::from([1]));
        assert!(o.is_empty());
    }

    /// A cgroup gone keeps its blame rows in the session until they are
    /// released, and late rows may follow: neither brings its pairs back,
    /// so that cgroups coming and going leave nothing behind.
    #[test]
    fn evicted_cgroups_stay_evicted_while_their_rows_linger() {
        let pair = |victim, occupant_cgroup| BlamePair {
            victim,
            occupant_cgroup,
            occupant_tgid: 1,
        };
        let (gone_victim, gone_occupant, live) = (pair(5, 2), pair(1, 6), pair(1, 2));
        let mut o = Occupancy::default();
        o.update(0, [(&gone_victim, 10), (&gone_occupant, 20), (&live, 30)]);
        assert_eq!(o.len(), 3);
        o.evict(&HashSet::from([5, 6]));
        assert_eq!(o.len(), 1);
        // Same epoch, the rows still there and growing.
        o.update(0, [(&gone_victim, 15), (&gone_occupant, 25), (&live, 31)]);
        assert_eq!(o.len(), 1);
        assert_eq!(o.top(1, 5), [(2, 31)]);
        // Released: a late row of a gone cgroup in the next epoch.
        o.update(1, [(&gone_occupant, 3), (&live, 2)]);
        assert_eq!(o.len(), 1);
        assert_eq!(o.top(1, 5), [(2, 33)]);
        // Two epochs on, the ids are forgotten: nothing is kept per gone
        // cgroup for good.
        o.update(2, []);
        o.update(3, []);
        assert!(o.evicted.iter().all(HashSet::is_empty));
    }
}
