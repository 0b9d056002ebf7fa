//! What a session measured, as plain data: rendered for the terminal by
//! [`crate::report`] and written as JSON by `--json`. JSON key names are stable
//! once released; new keys may be added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracer_common::{hist::LatencyHist, maps::Counter};

use crate::{
    cgroup::Mode,
    histogram::{Summary, sparse_buckets, summarize},
    process::PidKind,
    programs::ProbeStatus,
};

/// A wait-time distribution: the summary figures and the non-empty buckets as
/// `[low_ns, high_ns, count]` (high exclusive).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Serialize)]
pub struct CgroupEntry {
    /// Path in the cpu controller's hierarchy, from its root (`/` is the root).
    /// `?/name` for a cgroup removed before it could be resolved.
    pub path: String,
    /// The kernel's id for it (`kernfs_node.id`, the directory's inode number).
    pub id: u64,
    pub runnable_wait: WaitHistogram,
}

#[derive(Clone, Debug, Serialize)]
pub struct PidEntry {
    pub pid: u32,
    pub kind: PidKind,
    pub comm: String,
    /// Its cpu-controller cgroup at the start of the session.
    pub cgroup: Option<String>,
    pub runnable_wait: WaitHistogram,
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

    /// Waits that could not be recorded, and why.
    pub fn losses(&self) -> Vec<(Counter, u64)> {
        [
            Counter::TaskStorageFail,
            Counter::CgroupMapFull,
            Counter::PidMapFull,
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
    pub started_unix_ns: u64,
    /// From the moment the programs were attached to the moment they were detached.
    pub duration_ns: u64,
    pub probes: Vec<ProbeStatus>,
    pub events: Events,
    /// Sorted by total runnable wait, largest first.
    pub cgroups: Vec<CgroupEntry>,
    pub pids: Vec<PidEntry>,
}
