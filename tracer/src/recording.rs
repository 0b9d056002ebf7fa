//! What a session measured, as plain data: rendered for the terminal by
//! [`crate::report`] and written as JSON by `--json`. JSON key names are stable
//! once released; new keys may be added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracer_common::{
    causes::Causes,
    hist::LatencyHist,
    maps::{Counter, CounterKind},
};

use crate::{
    cgroup::Mode,
    cpustat::{CpuStat, Quota},
    format::fmt_ns,
    hdr,
    histogram::{Summary, sparse_buckets, summarize},
    process::PidKind,
    psi::PsiWindow,
    selection::MatchedThread,
    stall::Stall,
    timeline::{Interval, recorder::Fired},
    verdict::Verdict,
    weight::Weight,
    windows::GcPause,
    workload::Workload,
};

/// A duration distribution: the summary figures, and the whole distribution as
/// an HdrHistogram (V2 compressed, base64) that any HdrHistogram tool reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitHistogram {
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(default)]
    pub hdr: String,
    /// The tracer's own buckets as `[low_ns, high_ns, count]` (high exclusive).
    /// Not written: rebuilt exactly from `hdr` when a dump is read, since each
    /// bucket went into it at a value of its own range. (Record JSON from before
    /// the dump format carried them; they are read from there.)
    #[serde(default, skip_serializing)]
    pub buckets: Vec<[u64; 3]>,
}

impl WaitHistogram {
    pub fn from_hist(h: &LatencyHist) -> Self {
        Self::from_buckets(summarize(h), sparse_buckets(h))
    }

    pub fn from_buckets(summary: Summary, buckets: Vec<[u64; 3]>) -> Self {
        // Only fails on values HdrHistogram cannot hold, which the tracer's
        // buckets never have; an empty `hdr` reads back as "not recorded".
        let hdr = hdr::encode(&buckets, summary.max_ns).unwrap_or_default();
        Self {
            summary,
            hdr,
            buckets,
        }
    }
}

/// A process that held the CPU while the victim waited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlamedProcess {
    pub tgid: u32,
    pub comm: String,
    pub ns: u64,
}

impl BlamedProcess {
    /// Its pid; none for the row that sums an occupant cgroup's processes
    /// beyond those named (`tgid` 0, `crate::session` names them).
    pub fn pid(&self) -> Option<u32> {
        (self.tgid != 0).then_some(self.tgid)
    }
}

/// A cgroup that held the CPU while the victim waited, and its processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blame {
    pub path: String,
    pub id: u64,
    /// Contended time charged to it, weighted by how long it ran.
    pub ns: u64,
    pub processes: Vec<BlamedProcess>,
    /// The pod, container or unit it is, where the path tells one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// How long it ran over the recording, on any CPU and whoever waited
    /// (absent in dumps from before it was written).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ran_ns: u64,
    /// Its CPU weight and what that guarantees: whether it took more than
    /// its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Weight>,
}

impl Blame {
    /// How it is named: `namespace/pod/container`, a unit, or its path.
    pub fn name(&self) -> String {
        name_of(self.workload.as_ref(), &self.path)
    }
}

/// What a report calls a cgroup: its workload's name where it has one (a
/// dump from before workloads were written has its path's), else its path.
fn name_of(workload: Option<&Workload>, path: &str) -> String {
    match workload {
        Some(w) => w.display(path),
        None => Workload::from_path(path).display(path),
    }
}

/// The wait of a group of tasks, split by cause.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitSplit {
    pub runnable_wait: WaitHistogram,
    /// Throttled (CFS bandwidth), contended (other tasks ran on the CPU),
    /// other (an idle CPU: wake-up latency); flattened into this object.
    #[serde(flatten)]
    pub causes: Causes,
    /// Who held the CPU, largest first.
    pub blame: Vec<Blame>,
    /// Contended time that could not be charged (the CPU switched too often
    /// during the wait to remember every run, or the blame map was full).
    pub unattributed_ns: u64,
}

/// The quota a cgroup is under, its own or an ancestor's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaInfo {
    #[serde(flatten)]
    pub quota: Quota,
    /// The cgroup it is set on.
    pub owner: String,
}

impl QuotaInfo {
    /// `20.0 ms per 100 ms (0.20 CPUs)`, and where it is set unless on `path`.
    pub fn describe(&self, path: &str) -> String {
        let mut s = format!(
            "{} per {} ({:.2} CPUs)",
            fmt_ns(self.quota.quota_us.saturating_mul(1_000)),
            fmt_ns(self.quota.period_us.saturating_mul(1_000)),
            self.quota.cpus()
        );
        if self.quota.burst_us > 0 {
            s.push_str(&format!(
                ", burst {}",
                fmt_ns(self.quota.burst_us.saturating_mul(1_000))
            ));
        }
        if self.owner != path {
            s.push_str(&format!(", set on {}", self.owner));
        }
        s
    }
}

/// Throttle episodes of a cgroup's cfs_rqs: how often and how long it could not
/// run because a quota ran out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Episodes {
    pub count: u64,
    pub total_ns: u64,
    pub durations: WaitHistogram,
    /// Per CPU: `[cpu, count, total_ns]`.
    pub per_cpu: Vec<[u64; 3]>,
    /// Whose quota ran out: cgroup path -> episodes.
    pub throttled_by: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaInfo>,
    /// `cpu.stat` (and `cpu.stat.local`) deltas over the session, for cgroups
    /// under a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_stat: Option<CpuStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_episodes: Option<Episodes>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Who it is: a pod's container, a service... (absent in dumps from
    /// before it was written; the path tells some of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// Its CPU weight and what that guarantees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Weight>,
    /// Its own CPU pressure over the recording (`cpu.pressure`, cgroup v2):
    /// wall time during which some (or all) of its runnable tasks waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiWindow>,
}

impl CgroupEntry {
    /// How reports name it: see [`Blame::name`].
    pub fn name(&self) -> String {
        name_of(self.workload.as_ref(), &self.path)
    }

    /// Its workload, or what its path tells of it.
    pub fn identity(&self) -> Workload {
        self.workload
            .clone()
            .unwrap_or_else(|| Workload::from_path(&self.path))
    }
}

/// What the cgroups a recording holds are called, by path: for rows that
/// carry a path only (intervals, slow waits, GC pauses).
pub struct Names(std::collections::HashMap<String, String>);

impl Names {
    /// The name of the cgroup at `path`: as the recording's entries name it,
    /// or what the path tells.
    pub fn of(&self, path: &str) -> String {
        match self.0.get(path) {
            Some(name) => name.clone(),
            None => Workload::from_path(path).display(path),
        }
    }
}

/// A `--pid` selection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Events(BTreeMap<String, u64>);

impl Events {
    pub fn set(&mut self, counter: Counter, value: u64) {
        self.0.insert(counter.name().to_owned(), value);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(counter.name()).copied().unwrap_or(0)
    }

    /// Waits or records that were lost, and why (the counters of kind
    /// [`CounterKind::Loss`] that are not zero).
    pub fn losses(&self) -> Vec<(Counter, u64)> {
        Counter::of_kind(CounterKind::Loss)
            .map(|c| (c, self.get(c)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// What happened to one probe, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: String,
    pub attached: bool,
    /// Instructions the verifier processed to accept the program: how close it
    /// is to the kernel's limit of one million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was not attached although nothing failed: this kernel makes it
    /// unnecessary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_needed: Option<String>,
}

/// Everything a session measured: what `--output` / `--json` write (see
/// `docs/dump-format.md`) and what `tracer report` reads back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Always [`crate::dump::FORMAT`].
    #[serde(default)]
    pub format: String,
    /// [`crate::dump::VERSION`] when written; 0 for record JSON from before it.
    #[serde(default)]
    pub format_version: u32,
    pub tool: String,
    pub tool_version: String,
    /// Host name (a placeholder in a `--redact`ed dump).
    #[serde(default)]
    pub host: String,
    pub kernel: String,
    pub cpus: usize,
    pub cgroup_mode: Mode,
    /// Where the cpu controller's hierarchy is mounted.
    pub cpu_hierarchy: String,
    /// How throttled time is measured on this kernel.
    pub throttle_method: String,
    /// Which probes measured it: fentry with the tracepoints, or the
    /// tracepoints alone and why (empty in dumps older than the tiers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Where the programs kept their state (empty in older dumps).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    pub started_unix_ns: u64,
    /// The same moment on `CLOCK_MONOTONIC`, the programs' clock (and
    /// Java's `System.nanoTime()`): what places a GC log's `timenanos` or
    /// other monotonic stamps on the recording exactly (absent in older
    /// dumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_monotonic_ns: Option<u64>,
    /// From the moment the programs were attached to the moment they were detached.
    pub duration_ns: u64,
    pub probes: Vec<ProbeStatus>,
    /// The scheduler's slice the verdicts measured waits against (0 in dumps
    /// older than the rule).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sched_slice_ns: u64,
    pub events: Events,
    /// Sorted by total runnable wait, largest first.
    pub cgroups: Vec<CgroupEntry>,
    #[serde(default)]
    pub pids: Vec<PidEntry>,
    #[serde(default)]
    pub threads: Vec<ThreadsEntry>,
    /// The session interval by interval (absent in older dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<Interval>,
    /// The agent's flight recorder wrote it because this trigger was met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Fired>,
    /// `--slower`'s threshold (0: not given).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slower_ns: u64,
    /// Every wait of the `--threads` selections is in `stalls[]`, however
    /// short (`record --gc-log`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stalls_of_selected: bool,
    /// Waits of at least `--slower`, one by one, in time order (the longest
    /// [`crate::stall::MAX_STALLS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
    /// Slow waits received but not kept, shorter than those kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stalls_omitted: u64,
    /// `record --gc-log`: the JVM's pauses in the recording, explained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gc_pauses: Vec<GcPause>,
    /// The host's CPU pressure (PSI) over the recording, wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_psi: Option<crate::psi::PsiWindow>,
}

impl Recording {
    /// What its cgroups are called (see [`Names`]).
    pub fn names(&self) -> Names {
        let blame = self
            .cgroups
            .iter()
            .flat_map(|c| &c.wait.blame)
            .chain(self.pids.iter().flat_map(|p| &p.wait.blame))
            .chain(self.threads.iter().flat_map(|t| &t.wait.blame))
            .map(|b| (b.path.clone(), b.name()));
        let cgroups = self.cgroups.iter().map(|c| (c.path.clone(), c.name()));
        Names(blame.chain(cgroups).collect())
    }

    /// Every histogram in it, with where it is (for messages).
    pub fn histograms_mut(&mut self) -> Vec<(String, &mut WaitHistogram)> {
        let mut out = Vec::new();
        for (i, c) in self.cgroups.iter_mut().enumerate() {
            let at = format!("cgroups[{i}] ({})", c.path);
            out.push((format!("{at}.runnable_wait"), &mut c.wait.runnable_wait));
            out.push((format!("{at}.on_cpu"), &mut c.on_cpu));
            if let Some(e) = &mut c.throttle_episodes {
                out.push((
                    format!("{at}.throttle_episodes.durations"),
                    &mut e.durations,
                ));
            }
        }
        for (i, p) in self.pids.iter_mut().enumerate() {
            out.push((
                format!("pids[{i}].runnable_wait"),
                &mut p.wait.runnable_wait,
            ));
            out.push((format!("pids[{i}].on_cpu"), &mut p.on_cpu));
        }
        for (i, t) in self.threads.iter_mut().enumerate() {
            out.push((
                format!("threads[{i}].runnable_wait"),
                &mut t.wait.runnable_wait,
            ));
            out.push((format!("threads[{i}].on_cpu"), &mut t.on_cpu));
        }
        out
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
