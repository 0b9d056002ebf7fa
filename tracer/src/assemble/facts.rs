//! A recording's verdict inputs: a group's wait, run and blame, and the
//! quota it is under with its owner's `cpu.stat`, as [`Facts`].

use crate::{
    cgroup::is_within,
    cpustat::CpuStat,
    recording::{QuotaInfo, WaitSplit},
    verdict::{Facts, QuotaFacts},
    weight::Weight,
};

/// The quota's side of a verdict: the owner's `cpu.stat` over the recording
/// and the CPUs its whole subtree used on average.
pub(super) fn quota_facts(
    q: &QuotaInfo,
    owner_stat: CpuStat,
    run_by_path: &[(String, u64)],
    duration_ns: u64,
) -> QuotaFacts {
    let used: u64 = run_by_path
        .iter()
        .filter(|(path, _)| is_within(path, &q.owner))
        .map(|(_, ns)| ns)
        .sum();
    QuotaFacts {
        owner: q.owner.clone(),
        cpus: q.quota.cpus(),
        nr_periods: owner_stat.nr_periods,
        nr_throttled: owner_stat.nr_throttled,
        used_cpus: match active_ns(q, &owner_stat, duration_ns) {
            0 => 0.0,
            active => used as f64 / active as f64,
        },
        burst_us: q.quota.burst_us,
        nr_bursts: owner_stat.nr_bursts,
        burst_ns: owner_stat.burst_ns,
    }
}

/// How long the quota was in force: the periods `cpu.stat` counted (the
/// kernel runs a group's period timer only while it is active), or the whole
/// recording if that is shorter or nothing was counted. A workload that ran
/// for only part of a window (an agent's dump, a recorder's trigger dump) is
/// judged against the time it ran, not against the window.
fn active_ns(q: &QuotaInfo, stat: &CpuStat, duration_ns: u64) -> u64 {
    let periods_ns = stat
        .nr_periods
        .saturating_mul(q.quota.period_us)
        .saturating_mul(1_000);
    if periods_ns == 0 {
        duration_ns
    } else {
        periods_ns.min(duration_ns)
    }
}

/// The verdict's inputs for a group with wait `w` and run time `run_ns`;
/// `own_cgroup` is the group's cgroup id (none for a task selection, whose
/// blame is all "others").
pub(super) fn facts(
    w: &WaitSplit,
    run_ns: u64,
    quota: Option<QuotaFacts>,
    duration_ns: u64,
    own_cgroup: Option<u64>,
    weight: Option<Weight>,
) -> Facts {
    let (self_charged, others_charged): (u64, u64) = match own_cgroup {
        Some(id) => w.blame.iter().fold((0, 0), |(s, o), b| {
            if b.id == id {
                (s + b.ns, o)
            } else {
                (s, o + b.ns)
            }
        }),
        None => (0, w.blame.iter().map(|b| b.ns).sum()),
    };
    let charged_others: u64 = others_charged.max(1);
    let top = w.blame.iter().find(|b| Some(b.id) != own_cgroup);
    let top_other = top.map(|b| {
        let process = b
            .processes
            .first()
            .map(|p| match p.pid() {
                None => p.comm.clone(),
                Some(pid) => format!("{} pid {pid}", p.comm),
            })
            .unwrap_or_default();
        (b.name(), b.ns as f64 / charged_others as f64, process)
    });
    let top_other_weight = top.and_then(|b| Some((b.ran_ns, b.weight.clone()?)));
    Facts {
        duration_ns,
        wait_ns: w.runnable_wait.summary.total_ns,
        run_ns,
        p99_ns: w.runnable_wait.summary.p99_ns,
        causes: w.causes,
        self_charged_ns: self_charged,
        others_charged_ns: others_charged,
        top_other,
        top_other_weight,
        weight,
        quota,
        slice_ns: 0,
        shared: false,
    }
}
