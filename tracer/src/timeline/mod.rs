//! The time dimension of a session: what each cgroup waited in each interval
//! (`record --interval D`, and `intervals[]` in every dump).
//!
//! A session's aggregate says "/svc was throttled 38 % of 10 minutes"; the
//! incidents this tool is for are about moments (a spike at the same minute
//! every night, one bad GC pause). An interval is the difference of two
//! samples of the kernel's maps, so it costs one map read per interval and
//! nothing on the programs' hot path.
//!
//! A dump's timeline is bounded whatever the session's length or the host's
//! size: at most [`MAX_INTERVALS`] intervals (adjacent ones are merged, which
//! doubles the resolution, when a session outgrows them) of at most
//! [`DUMP_CGROUPS`] cgroups each (those that waited most; the rest are summed
//! as `omitted_*`).

pub mod recorder;
pub mod render;

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};

use crate::{
    hdr,
    histogram::quantile,
    sample::{BlamePair, Sample, SparseHist},
};

/// Intervals a timeline holds at most: 10 minutes at 1 s. A longer session
/// merges neighbours (2 s, 4 s, ...), so that its dump stays bounded.
pub const MAX_INTERVALS: usize = 600;
/// Cgroups an interval of a dump holds at most: those that waited most.
pub const DUMP_CGROUPS: usize = 20;
/// The resolution of the timeline in a dump when `--interval` is not given.
pub const DEFAULT_RESOLUTION_NS: u64 = 1_000_000_000;

/// Who held the CPU most while a cgroup waited in an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    pub cgroup: String,
    pub tgid: u32,
    pub comm: String,
    /// Contended time charged to it in the interval.
    pub ns: u64,
}

/// One cgroup in one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalCgroup {
    pub path: String,
    pub waits: u64,
    pub wait_ns: u64,
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    pub on_cpu_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// The interval's waits as an HdrHistogram, as everywhere in a dump.
    pub hdr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_occupant: Option<Occupant>,
    /// Throttle episodes of its cfs_rqs seen to end in the interval (each
    /// CPU's are apart), and their summed length: when its quota ran out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttle_episodes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttle_episode_ns: u64,
    /// The waits as the tracer's buckets: what merging intervals adds up.
    /// Rebuilt from `hdr` when a dump is read.
    #[serde(skip)]
    pub hist: SparseHist,
}

impl IntervalCgroup {
    pub(crate) fn new(
        path: String,
        wait: SparseHist,
        causes: (u64, u64, u64),
        on_cpu_ns: u64,
    ) -> Self {
        let (throttled_ns, contended_ns, other_ns) = causes;
        let mut c = Self {
            path,
            throttled_ns,
            contended_ns,
            other_ns,
            on_cpu_ns,
            hist: wait,
            ..Self::default()
        };
        c.refresh();
        c
    }

    /// The figures that follow from the histogram, but its encoding (which
    /// costs more than the rest: only kept rows are encoded, by `seal`).
    fn refresh(&mut self) {
        let h = self.hist.to_hist();
        self.waits = self.hist.count;
        self.wait_ns = self.hist.total_ns;
        self.max_ns = self.hist.max_ns;
        self.p99_ns = quantile(&h, 0.99);
        self.hdr.clear();
    }

    fn seal(&mut self) {
        if self.hdr.is_empty() {
            self.hdr = encode(&self.hist);
        }
    }

    /// Adds a later interval's figures of the same cgroup.
    fn absorb(&mut self, other: &Self) {
        self.hist.add(&other.hist);
        self.throttled_ns += other.throttled_ns;
        self.contended_ns += other.contended_ns;
        self.other_ns += other.other_ns;
        self.on_cpu_ns += other.on_cpu_ns;
        self.throttle_episodes = self
            .throttle_episodes
            .saturating_add(other.throttle_episodes);
        self.throttle_episode_ns = self
            .throttle_episode_ns
            .saturating_add(other.throttle_episode_ns);
        // The larger of the two: the occupants of the two halves are not kept
        // apart, and the one that held the CPU longest in either is the one
        // to name.
        if other.top_occupant.as_ref().map(|o| o.ns) > self.top_occupant.as_ref().map(|o| o.ns) {
            self.top_occupant = other.top_occupant.clone();
        }
        self.refresh();
    }
}

fn encode(h: &SparseHist) -> String {
    // Only fails on values HdrHistogram cannot hold, which the tracer's
    // buckets never have.
    hdr::encode(&h.ranges(), h.max_ns).unwrap_or_default()
}

/// One interval of the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// From the start of the session (the programs' attach).
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The cgroups that waited, most waiting first.
    pub cgroups: Vec<IntervalCgroup>,
    /// Cgroups that waited but were left out to bound the dump (at least this
    /// many), and their summed wait.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_cgroups: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_wait_ns: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Interval {
    /// The interval a window of samples covers (`window` is `now.since(then)`,
    /// whose `elapsed_ns` is its duration), starting `start_ns` into the
    /// session. `path_of` names a cgroup id; only the cgroups `shown` allows
    /// are kept. Its histograms are encoded by [`Self::trim`], which a
    /// [`Timeline`] does as it keeps it.
    pub fn from_window(
        window: &Sample,
        start_ns: u64,
        mut path_of: impl FnMut(u64) -> String,
        shown: impl Fn(&str) -> bool,
    ) -> Self {
        let mut cgroups: Vec<IntervalCgroup> = window
            .cgroups
            .iter()
            .filter(|(_, t)| t.wait.count > 0)
            .filter_map(|(&id, t)| {
                let path = path_of(id);
                shown(&path).then(|| {
                    let c = t.causes;
                    let mut row = IntervalCgroup::new(
                        path,
                        t.wait.clone(),
                        (c.throttled_ns, c.contended_ns, c.other_ns),
                        t.on_cpu.total_ns,
                    );
                    row.top_occupant = top_occupant(&window.blame, id, &mut path_of);
                    if let Some(e) = window.episodes.get(&id) {
                        row.throttle_episodes = e.durations.count;
                        row.throttle_episode_ns = e.durations.total_ns;
                    }
                    row
                })
            })
            .collect();
        sort(&mut cgroups);
        Self {
            start_ns,
            duration_ns: window.elapsed_ns,
            cgroups,
            omitted_cgroups: 0,
            omitted_wait_ns: 0,
        }
    }

    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.duration_ns
    }

    /// Keeps the `keep` cgroups that waited most, the rest summed, and
    /// encodes the histograms of those kept.
    pub fn trim(&mut self, keep: usize) {
        if self.cgroups.len() > keep {
            let gone = self.cgroups.split_off(keep);
            self.omitted_cgroups += gone.len() as u64;
            self.omitted_wait_ns += gone.iter().map(|c| c.wait_ns).sum::<u64>();
            // Kept for minutes: not the room of the rows left out.
            self.cgroups.shrink_to_fit();
        }
        self.cgroups.iter_mut().for_each(IntervalCgroup::seal);
    }

    /// Adds the interval that follows this one.
    fn absorb(&mut self, next: Self) {
        self.duration_ns = next.end_ns().saturating_sub(self.start_ns);
        for c in next.cgroups {
            match self.cgroups.iter_mut().find(|o| o.path == c.path) {
                Some(o) => o.absorb(&c),
                None => self.cgroups.push(c),
            }
        }
        self.omitted_cgroups = self.omitted_cgroups.max(next.omitted_cgroups);
        self.omitted_wait_ns += next.omitted_wait_ns;
        sort(&mut self.cgroups);
    }
}

/// `intervals` from `offset_ns` on, their starts counted from there: the
/// timeline of a window that starts `offset_ns` into the session, as a
/// windowed recording (whose `started_unix_ns` is the window's) carries it.
pub fn rebase(intervals: impl IntoIterator<Item = Interval>, offset_ns: u64) -> Vec<Interval> {
    intervals
        .into_iter()
        .filter(|i| i.start_ns >= offset_ns)
        .map(|mut i| {
            i.start_ns -= offset_ns;
            i
        })
        .collect()
}

/// Most waiting first; by path among equals, so that the order is stable.
fn sort(cgroups: &mut [IntervalCgroup]) {
    cgroups.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then_with(|| a.path.cmp(&b.path)));
}

/// The occupant (cgroup and process) charged the most contended time of
/// `victim` in a window's blame.
fn top_occupant(
    blame: &BTreeMap<BlamePair, (String, u64)>,
    victim: u64,
    path_of: &mut impl FnMut(u64) -> String,
) -> Option<Occupant> {
    let from = BlamePair {
        victim,
        occupant_cgroup: 0,
        occupant_tgid: 0,
    };
    let (pair, (comm, ns)) = blame
        .range(from..)
        .take_while(|(p, _)| p.victim == victim)
        .max_by_key(|(p, (_, ns))| (*ns, std::cmp::Reverse(**p)))?;
    Some(Occupant {
        cgroup: path_of(pair.occupant_cgroup),
        tgid: pair.occupant_tgid,
        comm: comm.clone(),
        ns: *ns,
    })
}

/// A session's intervals as they come, bounded: past [`MAX_INTERVALS`],
/// neighbours are merged and later intervals are added to the last until it
/// spans as many as the others.
#[derive(Clone, Debug)]
pub struct Timeline {
    intervals: Vec<Interval>,
    /// How many intervals as pushed each kept interval spans.
    span: usize,
    /// How many the last kept interval spans so far.
    last_span: usize,
    max_intervals: usize,
    keep: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(MAX_INTERVALS, DUMP_CGROUPS)
    }
}

impl Timeline {
    pub fn new(max_intervals: usize, keep: usize) -> Self {
        Self {
            intervals: Vec::new(),
            span: 1,
            last_span: 0,
            max_intervals: max_intervals.max(2),
            keep: keep.max(1),
        }
    }

    pub fn push(&mut self, mut interval: Interval) {
        interval.trim(self.keep);
        match self.intervals.last_mut() {
            Some(last) if self.last_span < self.span => {
                last.absorb(interval);
                last.trim(self.keep);
                self.last_span += 1;
            }
            _ => {
                self.intervals.push(interval);
                self.last_span = 1;
            }
        }
        if self.intervals.len() > self.max_intervals {
            self.coarsen();
        }
    }

    /// Merges neighbours in pairs: half as many intervals, twice as long.
    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.intervals);
        // The last kept interval may still be filling: paired with the one
        // before it, or alone, it carries its pushes over.
        let tail = if old.len().is_multiple_of(2) {
            self.span + self.last_span
        } else {
            self.last_span
        };
        let mut pairs = old.into_iter();
        while let Some(mut first) = pairs.next() {
            if let Some(second) = pairs.next() {
                first.absorb(second);
                first.trim(self.keep);
            }
            self.intervals.push(first);
        }
        self.span *= 2;
        self.last_span = tail;
    }

    pub fn intervals(&self) -> &[Interval] {
        &self.intervals
    }

    pub fn into_intervals(self) -> Vec<Interval> {
        self.intervals
    }
}

/// Checks a dump's intervals and rebuilds their histograms from `hdr`.
pub fn validate(intervals: &mut [Interval]) -> anyhow::Result<()> {
    let mut last_end = 0;
    for (i, interval) in intervals.iter_mut().enumerate() {
        ensure!(
            interval.start_ns >= last_end,
            "corrupted: intervals[{i}] starts before the one before it ends"
        );
        last_end = interval
            .start_ns
            .checked_add(interval.duration_ns)
            .with_context(|| format!("corrupted: intervals[{i}] ends past the clock"))?;
        for (j, c) in interval.cgroups.iter_mut().enumerate() {
            let at = format!("intervals[{i}].cgroups[{j}]");
            ensure!(
                c.path.starts_with('/') || c.path.starts_with("?/"),
                "corrupted: {at} path {:?}",
                c.path
            );
            let buckets = hdr::buckets(&c.hdr).with_context(|| format!("corrupted: {at}.hdr"))?;
            let total = hdr::check_buckets(&buckets).with_context(|| format!("corrupted: {at}"))?;
            ensure!(
                total == c.waits,
                "corrupted: {at} holds {total} waits but says {}",
                c.waits
            );
            c.hist = SparseHist::from_ranges(&buckets, c.wait_ns, c.max_ns);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
