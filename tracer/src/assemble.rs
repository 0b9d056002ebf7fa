//! The product's core transform: what the kernel's maps held ([`Sample`]s)
//! plus what the session knows about the host (names, quotas, `cpu.stat`,
//! selections, the filter) becomes a [`Recording`], verdicts included.
//!
//! Pure: no kernel, no files. The session takes a [`Window`] of its samples,
//! resolves the cgroup ids it names, gathers a [`Context`] and calls
//! [`recording`]; the unit tests build samples by hand.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
};

use crate::{
    cgroup::Mode,
    cpustat::CpuStat,
    filter::CgroupFilter,
    psi::{Pressure, PsiWindow},
    recording::{
        Blame, BlamedProcess, CgroupEntry, Episodes, Events, PidEntry, ProbeStatus, QuotaInfo,
        Recording, ThreadsEntry, WaitHistogram, WaitSplit,
    },
    sample::{BlamePair, EpisodeTotals, Sample, Totals},
    selection::{MatchedThread, Target},
    verdict::{self, Facts},
    weight::Weight,
    workload::names::PodNames,
};
use tracer_common::maps::{Counter, VICTIM_SELECTION};

/// Occupant cgroups kept per victim, and processes per occupant: enough to name
/// who held the CPU, few enough that a dump of hundreds of cgroups stays small.
pub const BLAME_CGROUPS: usize = 8;
pub const BLAME_PROCESSES: usize = 3;

/// What a recording says about where and how it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub host: String,
    pub kernel: String,
    pub cpus: usize,
    pub cgroup_mode: Mode,
    pub cpu_hierarchy: String,
    pub throttle_method: String,
    pub tier: String,
    pub state: String,
    /// When the programs were attached.
    pub started_unix_ns: u64,
    /// The same on `CLOCK_MONOTONIC`, the programs' clock (0: unknown).
    pub started_monotonic_ns: u64,
    pub probes: Vec<ProbeStatus>,
    /// The scheduler's slice the verdicts measure waits against.
    pub slice_ns: u64,
}

/// A `--pid` or `--threads` selection as the session knows it at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub target: Target,
    /// The cgroup reported with it: a `--pid`'s cgroup at the start, or that of
    /// the first thread a pattern matched.
    pub cgroup: Option<String>,
    /// Threads a pattern matched during the session.
    pub matched: Vec<MatchedThread>,
    /// Matching threads the kernel map had no room for.
    pub untraced: u64,
    /// The cgroups of every matched thread's process: reported beside it.
    pub cgroups: Vec<String>,
}

/// Everything besides the kernel's figures that a recording is made of.
pub struct Context<'a> {
    pub header: &'a Header,
    /// The path of every cgroup id the window names (see
    /// [`Window::ids_named`]); an id missing here is shown as `?/id-N`.
    pub paths: &'a HashMap<u64, String>,
    /// The quota each cgroup under one is under, by path.
    pub quotas: &'a BTreeMap<String, QuotaInfo>,
    /// By selection index: `--pid` values first, then `--threads` patterns.
    pub selections: &'a [Selection],
    pub filter: &'a CgroupFilter,
    /// Cgroups that hold unrelated processes: the root, and parents (which
    /// on cgroup v1 may have tasks of their own beside their children's).
    pub shared: &'a HashSet<String>,
    /// The names of the node's pods and containers.
    pub pods: &'a PodNames,
    /// The CPU weight of the cgroups named, by path, and what each
    /// guarantees.
    pub weights: &'a HashMap<String, Weight>,
}

/// What a recording covers: the whole session up to a sample, or the window
/// between two samples, with the `cpu.stat` readings at its two ends.
pub struct Window<'a> {
    data: Cow<'a, Sample>,
    start_stats: &'a BTreeMap<String, CpuStat>,
    end_stats: &'a BTreeMap<String, CpuStat>,
    /// Cgroups' own PSI readings at the two ends.
    start_psi: &'a BTreeMap<String, Pressure>,
    end_psi: &'a BTreeMap<String, Pressure>,
    /// From the start of the session to the start of the window.
    offset_ns: u64,
}

impl<'a> Window<'a> {
    /// The session up to `now` (`cpu.stat` from `start_stats`, read when the
    /// programs were attached, and cgroups' PSI from `start_psi`, read then
    /// or when each was first seen), or the window from `since` to `now`.
    pub fn new(
        now: &'a Sample,
        since: Option<&'a Sample>,
        start_stats: &'a BTreeMap<String, CpuStat>,
        start_psi: &'a BTreeMap<String, Pressure>,
    ) -> Self {
        match since {
            Some(earlier) => Self {
                data: Cow::Owned(now.since(earlier)),
                start_stats: &earlier.cpu_stats,
                end_stats: &now.cpu_stats,
                start_psi: &earlier.cgroup_psi,
                end_psi: &now.cgroup_psi,
                offset_ns: earlier.elapsed_ns,
            },
            None => Self {
                data: Cow::Borrowed(now),
                start_stats,
                end_stats: &now.cpu_stats,
                start_psi,
                end_psi: &now.cgroup_psi,
                offset_ns: 0,
            },
        }
    }

    /// Every cgroup id the window names (its cgroups, blame occupants and
    /// victims, episode owners and quota owners): what [`Context::paths`]
    /// must resolve.
    pub fn ids_named(&self) -> impl Iterator<Item = u64> + '_ {
        let data = &*self.data;
        data.cgroups
            .keys()
            .copied()
            .chain(
                data.blame
                    .keys()
                    .flat_map(|p| [p.victim, p.occupant_cgroup]),
            )
            .chain(
                data.episodes
                    .iter()
                    .flat_map(|(&id, e)| std::iter::once(id).chain(e.throttled_by.keys().copied())),
            )
            .filter(|&id| id & VICTIM_SELECTION == 0 && id != 0)
    }

    /// `cpu.stat` of a cgroup under a quota, over the window.
    fn cpu_stat(&self, path: &str) -> Option<CpuStat> {
        Some(self.start_stats.get(path)?.delta(self.end_stats.get(path)?))
    }

    /// A cgroup's own CPU pressure over the window, where both ends were read.
    fn psi(&self, path: &str) -> Option<PsiWindow> {
        Some(self.start_psi.get(path)?.until(self.end_psi.get(path)?))
    }
}

impl Context<'_> {
    fn path_of(&self, id: u64) -> String {
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("?/id-{id}"))
    }
}

/// The recording of a window.
pub fn recording(window: &Window, ctx: &Context) -> Recording {
    let data = &*window.data;
    let duration_ns = data.elapsed_ns;
    let stat_delta = |path: &str| window.cpu_stat(path);
    // What every cgroup ran, for blame rows: an occupant may not be shown.
    let ran: HashMap<u64, u64> = data
        .cgroups
        .iter()
        .map(|(&id, t)| (id, t.on_cpu.total_ns))
        .collect();
    let split = |totals: &Totals, victim: u64| wait_split(totals, &data.blame, victim, &ran, ctx);

    let mut cgroups: Vec<CgroupEntry> = data
        .cgroups
        .iter()
        .map(|(&id, totals)| {
            let path = ctx.path_of(id);
            CgroupEntry {
                cpu_stat: stat_delta(&path),
                psi: window.psi(&path),
                quota: ctx.quotas.get(&path).cloned(),
                throttle_episodes: data.episodes.get(&id).map(|e| episodes(e, ctx)),
                wait: split(totals, id),
                on_cpu: WaitHistogram::from_hist(&totals.on_cpu.to_hist()),
                verdict: verdict::judge(&Facts::default()),
                workload: Some(ctx.pods.identify(&path)),
                weight: ctx.weights.get(&path).cloned(),
                path,
                id,
            }
        })
        .collect();
    // Verdicts need every cgroup's run time (a quota covers a subtree).
    let run_by_path: Vec<(String, u64)> = cgroups
        .iter()
        .map(|c| (c.path.clone(), c.on_cpu.summary.total_ns))
        .collect();
    let quota_facts = |quota: Option<&QuotaInfo>| {
        quota.map(|q| {
            quota_facts(
                q,
                stat_delta(&q.owner).unwrap_or_default(),
                &run_by_path,
                duration_ns,
            )
        })
    };
    for c in &mut cgroups {
        let mut facts = facts(
            &c.wait,
            c.on_cpu.summary.total_ns,
            quota_facts(c.quota.as_ref()),
            duration_ns,
            Some(c.id),
            c.weight.clone(),
        );
        facts.slice_ns = ctx.header.slice_ns;
        facts.shared = c.path == "/" || ctx.shared.contains(&c.path);
        c.verdict = verdict::judge(&facts);
    }

    let mut pids = Vec::new();
    let mut threads = Vec::new();
    for (index, s) in ctx.selections.iter().enumerate() {
        let index = index as u32;
        let totals = data.selections.get(&index).cloned().unwrap_or_default();
        let wait = split(&totals, VICTIM_SELECTION | u64::from(index));
        let on_cpu = WaitHistogram::from_hist(&totals.on_cpu.to_hist());
        let quota = s.cgroup.as_ref().and_then(|c| ctx.quotas.get(c));
        let verdict = verdict::judge(&Facts {
            slice_ns: ctx.header.slice_ns,
            ..facts(
                &wait,
                on_cpu.summary.total_ns,
                quota_facts(quota),
                duration_ns,
                None,
                None,
            )
        });
        match &s.target {
            Target::Pid { id, kind, comm } => pids.push(PidEntry {
                pid: *id,
                kind: *kind,
                comm: comm.clone(),
                cgroup: s.cgroup.clone(),
                wait,
                on_cpu,
                verdict,
            }),
            Target::Threads { pattern } => threads.push(ThreadsEntry {
                pattern: pattern.clone(),
                matched: s.matched.clone(),
                untraced: s.untraced,
                wait,
                on_cpu,
                verdict,
            }),
        }
    }

    // The cgroups asked for, and those of the selected tasks.
    let shown = ctx.filter.including(
        ctx.selections
            .iter()
            .flat_map(|s| {
                let pid_cgroup = match s.target {
                    Target::Pid { .. } => s.cgroup.clone(),
                    Target::Threads { .. } => None,
                };
                pid_cgroup.into_iter().chain(s.cgroups.iter().cloned())
            })
            .collect::<Vec<_>>(),
    );
    cgroups.retain(|c| match &c.workload {
        Some(w) => shown.allows(&c.path, w),
        None => shown.allows_path(&c.path),
    });
    cgroups.sort_by(|a, b| {
        b.wait
            .runnable_wait
            .summary
            .total_ns
            .cmp(&a.wait.runnable_wait.summary.total_ns)
            .then_with(|| a.path.cmp(&b.path))
    });

    let mut events = Events::default();
    for counter in Counter::ALL {
        events.set(counter, data.counters[counter as usize]);
    }
    let h = ctx.header;
    Recording {
        format: crate::dump::FORMAT.into(),
        format_version: crate::dump::VERSION,
        tool: "tracer".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: h.host.clone(),
        kernel: h.kernel.clone(),
        cpus: h.cpus,
        cgroup_mode: h.cgroup_mode,
        cpu_hierarchy: h.cpu_hierarchy.clone(),
        throttle_method: h.throttle_method.clone(),
        tier: h.tier.clone(),
        state: h.state.clone(),
        started_unix_ns: h.started_unix_ns + window.offset_ns,
        started_monotonic_ns: (h.started_monotonic_ns != 0)
            .then(|| h.started_monotonic_ns + window.offset_ns),
        duration_ns,
        probes: h.probes.clone(),
        sched_slice_ns: h.slice_ns,
        events,
        cgroups,
        pids,
        threads,
        intervals: Vec::new(),
        trigger: None,
        slower_ns: 0,
        stalls_of_selected: false,
        stalls: Vec::new(),
        stalls_omitted: 0,
        gc_pauses: Vec::new(),
        host_psi: None,
    }
}

/// The wait of `victim` (a cgroup id, or a selection's blame key), split and
/// with its blame grouped by occupant cgroup, largest first, trimmed to
/// [`BLAME_CGROUPS`] × [`BLAME_PROCESSES`].
fn wait_split(
    totals: &Totals,
    blame: &BTreeMap<BlamePair, (String, u64)>,
    victim: u64,
    ran: &HashMap<u64, u64>,
    ctx: &Context,
) -> WaitSplit {
    let from = BlamePair {
        victim,
        occupant_cgroup: 0,
        occupant_tgid: 0,
    };
    let mut by_cgroup: BTreeMap<u64, Vec<BlamedProcess>> = BTreeMap::new();
    for (pair, (comm, ns)) in blame.range(from..).take_while(|(p, _)| p.victim == victim) {
        by_cgroup
            .entry(pair.occupant_cgroup)
            .or_default()
            .push(BlamedProcess {
                tgid: pair.occupant_tgid,
                comm: comm.clone(),
                ns: *ns,
            });
    }
    let mut occupants: Vec<Blame> = by_cgroup
        .into_iter()
        .map(|(id, mut processes)| {
            processes.sort_by_key(|p| std::cmp::Reverse(p.ns));
            let ns = processes.iter().map(|p| p.ns).sum();
            processes.truncate(BLAME_PROCESSES);
            let path = ctx.path_of(id);
            let workload = ctx.pods.identify(&path);
            Blame {
                workload: workload.name().is_some().then_some(workload),
                ran_ns: ran.get(&id).copied().unwrap_or(0),
                weight: ctx.weights.get(&path).cloned(),
                path,
                id,
                ns,
                processes,
            }
        })
        .collect();
    occupants.sort_by_key(|b| std::cmp::Reverse(b.ns));
    // Charged to anyone, before trimming the list for the report.
    let charged: u64 = occupants.iter().map(|b| b.ns).sum();
    occupants.truncate(BLAME_CGROUPS);
    WaitSplit {
        runnable_wait: WaitHistogram::from_hist(&totals.wait.to_hist()),
        causes: totals.causes,
        unattributed_ns: totals.causes.contended_ns.saturating_sub(charged),
        blame: occupants,
    }
}

fn episodes(e: &EpisodeTotals, ctx: &Context) -> Episodes {
    let per_cpu = e
        .per_cpu
        .iter()
        .map(|(&cpu, &(n, ns))| [u64::from(cpu), n, ns])
        .collect();
    let mut throttled_by = BTreeMap::new();
    for (&cgroup, &n) in &e.throttled_by {
        let path = if cgroup == 0 {
            "(unknown)".to_owned()
        } else {
            ctx.path_of(cgroup)
        };
        *throttled_by.entry(path).or_default() += n;
    }
    Episodes {
        count: e.durations.count,
        total_ns: e.durations.total_ns,
        durations: WaitHistogram::from_hist(&e.durations.to_hist()),
        per_cpu,
        throttled_by,
    }
}

mod facts;

use facts::{facts, quota_facts};

#[cfg(test)]
mod tests;
