//! What a session measured, as plain data: rendered for the terminal by
//! [`crate::report`] and written as JSON by `--json`. JSON key names are stable
//! once released; new keys may be added.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::{hist::LatencyHist, maps::Counter};

use crate::{
    cgroup::Mode,
    cpustat::{CpuStat, Quota},
    histogram::{Summary, sparse_buckets, summarize},
    process::PidKind,
    programs::ProbeStatus,
    selection::MatchedThread,
    verdict::Verdict,
};

/// A duration distribution: the summary figures and the non-empty buckets as
/// `[low_ns, high_ns, count]` (high exclusive).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaitHistogram {
    #[serde(flatten)]
    pub summary: Summary,
    pub buckets: Vec<[u64; 3]>,
}

impl WaitHistogram {
    pub fn from_hist(h: &LatencyHist) -> Self {
        Self {
            summary: summarize(h),
            buckets: sparse_buckets(h),
        }
    }
}

/// A process that held the CPU while the victim waited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlamedProcess {
    pub tgid: u32,
    pub comm: String,
    pub ns: u64,
}

/// A cgroup that held the CPU while the victim waited, and its processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blame {
    pub path: String,
    pub id: u64,
    /// Contended time charged to it, weighted by how long it ran.
    pub ns: u64,
    pub processes: Vec<BlamedProcess>,
}

/// The wait of a group of tasks, split by cause.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitSplit {
    pub runnable_wait: WaitHistogram,
    /// The cfs_rq hierarchy was throttled (CFS bandwidth).
    pub throttled_ns: u64,
    /// Runnable while other tasks ran on the CPU.
    pub contended_ns: u64,
    /// Runnable on an idle CPU (wake-up latency).
    pub other_ns: u64,
    /// Waits with some throttled time.
    pub throttled_waits: u64,
    /// Who held the CPU, largest first.
    pub blame: Vec<Blame>,
    /// Contended time that could not be charged (the CPU switched too often
    /// during the wait to remember every run, or the blame map was full).
    pub unattributed_ns: u64,
}

/// The quota a cgroup is under, its own or an ancestor's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuotaInfo {
    #[serde(flatten)]
    pub quota: Quota,
    /// The cgroup it is set on.
    pub owner: String,
}

/// Throttle episodes of a cgroup's cfs_rqs: how often and how long it could not
/// run because a quota ran out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Episodes {
    pub count: u64,
    pub total_ns: u64,
    pub durations: WaitHistogram,
    /// Per CPU: `[cpu, count, total_ns]`.
    pub per_cpu: Vec<[u64; 3]>,
    /// Whose quota ran out: cgroup path -> episodes.
    pub throttled_by: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CgroupEntry {
    /// Path in the cpu controller's hierarchy, from its root (`/` is the root).
    /// `?/name` for a cgroup removed before it could be resolved.
    pub path: String,
    /// The kernel's id for it (`kernfs_node.id`, the directory's inode number).
    pub id: u64,
    #[serde(flatten)]
    pub wait: WaitSplit,
    /// How long its tasks ran each time they got a CPU.
    pub on_cpu: WaitHistogram,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaInfo>,
    /// `cpu.stat` (and `cpu.stat.local`) deltas over the session, for cgroups
    /// under a quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_stat: Option<CpuStat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_episodes: Option<Episodes>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A `--pid` selection.
#[derive(Clone, Debug, Serialize)]
pub struct PidEntry {
    pub pid: u32,
    pub kind: PidKind,
    pub comm: String,
    /// Its cpu-controller cgroup at the start of the session.
    pub cgroup: Option<String>,
    #[serde(flatten)]
    pub wait: WaitSplit,
    pub on_cpu: WaitHistogram,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A `--threads` selection.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadsEntry {
    pub pattern: String,
    /// The threads that matched during the session.
    pub matched: Vec<MatchedThread>,
    /// Matching threads the kernel map had no room for (not traced).
    pub untraced: u64,
    #[serde(flatten)]
    pub wait: WaitSplit,
    pub on_cpu: WaitHistogram,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Event counts by their stable names (see [`Counter::name`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Events(BTreeMap<String, u64>);

impl Events {
    pub fn set(&mut self, counter: Counter, value: u64) {
        self.0.insert(counter.name().to_owned(), value);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(counter.name()).copied().unwrap_or(0)
    }

    /// Waits or records that were lost, and why.
    pub fn losses(&self) -> Vec<(Counter, u64)> {
        [
            Counter::TaskStorageFail,
            Counter::CgroupMapFull,
            Counter::SelectionMapFull,
            Counter::BlameMapFull,
            Counter::RingbufDrop,
            Counter::ReadFail,
        ]
        .into_iter()
        .map(|c| (c, self.get(c)))
        .filter(|&(_, n)| n > 0)
        .collect()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Recording {
    pub tool: String,
    pub tool_version: String,
    pub kernel: String,
    pub cpus: usize,
    pub cgroup_mode: Mode,
    /// Where the cpu controller's hierarchy is mounted.
    pub cpu_hierarchy: String,
    /// How throttled time is measured on this kernel.
    pub throttle_method: String,
    pub started_unix_ns: u64,
    /// From the moment the programs were attached to the moment they were detached.
    pub duration_ns: u64,
    pub probes: Vec<ProbeStatus>,
    pub events: Events,
    /// Sorted by total runnable wait, largest first.
    pub cgroups: Vec<CgroupEntry>,
    pub pids: Vec<PidEntry>,
    pub threads: Vec<ThreadsEntry>,
}
