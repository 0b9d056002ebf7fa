//! One line per cgroup (or thread selection) that says why its runnable threads
//! waited, with the figure behind it: its own quota, other cgroups holding the
//! CPU, its own threads outnumbering the CPUs, or not enough to matter.
//!
//! A verdict names a problem only when the waits would be felt: they take a
//! real share of the time the threads were runnable ([`HEALTHY_DELAY`]) and
//! of the traced time ([`NEGLIGIBLE_WAIT`]), and they are long: the 99th
//! percentile wait reaches half a scheduling slice ([`FELT_SLICES`]), or
//! they add up to a thread always waiting ([`QUEUED_THREADS`]). Shorter,
//! sparser waits are the scheduler working as designed: a woken thread gets
//! the CPU within a fraction of the slice of whatever runs. The README
//! states the rule with its figures.

use serde::{Deserialize, Serialize};
use tracer_common::causes::{Cause, Causes};

use crate::{
    format::{fmt_ns, percent},
    weight::{Weight, beyond, compared},
};

/// Waits below this share of the time the threads were runnable (waiting or
/// running) are no scheduling problem.
pub const HEALTHY_DELAY: f64 = 0.05;
/// Waits summing to less than this share of the traced time are no scheduling
/// problem either, however large a share of a nearly idle group's runnable time.
pub const NEGLIGIBLE_WAIT: f64 = 0.01;
/// Waits matter only when the p99 wait is at least this many scheduling
/// slices: half a slice.
pub const FELT_SLICES: f64 = 0.5;
/// Waits adding up to this many threads' worth of the traced time are felt
/// however short each one is: on average one of the group's threads was
/// always waiting, its runnable threads outnumbering the CPU it got (24
/// database connections on one CPU waited 21.6 threads' worth with a p99 of
/// 1.28 ms).
pub const QUEUED_THREADS: f64 = 1.0;
/// The scheduling slice when the kernel does not say
/// (`/sys/kernel/debug/sched/base_slice_ns`): 3 ms, EEVDF's base slice on
/// eight or more CPUs and CFS's minimum granularity before it.
pub const DEFAULT_SLICE_NS: u64 = 3_000_000;
/// A cause is named in the verdict when it holds at least this share of the wait.
pub const SIGNIFICANT_CAUSE: f64 = 0.2;
/// Throttled while using less than this share of the quota on average: the
/// quota ran out within periods although it suffices on average.
pub const BELOW_QUOTA: f64 = 0.8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Healthy,
    QuotaExpiry,
    HostContention,
    SelfContention,
    /// Runnable on an idle CPU: wake-up latency (IPIs, idle exit, a vCPU not
    /// running).
    WakeupLatency,
    /// Self contention of a cgroup that holds unrelated processes (the root,
    /// or a parent with tasks of its own on cgroup v1): the host is busy.
    HostBusy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::QuotaExpiry => "quota expiry",
            Kind::HostContention => "host contention",
            Kind::SelfContention => "self contention",
            Kind::WakeupLatency => "wake-up latency",
            Kind::HostBusy => "host busy",
        }
    }
}

/// The figures a verdict is drawn from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub duration_ns: u64,
    /// Total runnable wait and on-CPU time (summed over threads).
    pub wait_ns: u64,
    pub run_ns: u64,
    pub p99_ns: u64,
    pub causes: Causes,
    /// Contended time charged to the group's own tasks, and the largest other
    /// occupant (path, share of the charged time, top process).
    pub self_charged_ns: u64,
    pub others_charged_ns: u64,
    pub top_other: Option<(String, f64, String)>,
    /// What that occupant ran over the recording, and its weight.
    pub top_other_weight: Option<(u64, Weight)>,
    /// The group's own weight.
    pub weight: Option<Weight>,
    /// The quota that applies and the cgroup it is set on.
    pub quota: Option<QuotaFacts>,
    /// The scheduler's slice, which says which waits are long.
    pub slice_ns: u64,
    /// The group holds unrelated processes (the root cgroup, or a parent
    /// with tasks of its own): waiting behind "itself" means the host is busy.
    pub shared: bool,
}

#[derive(Clone, Debug)]
pub struct QuotaFacts {
    pub owner: String,
    pub cpus: f64,
    /// `cpu.stat` over the session, from the owner.
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// Average CPUs used by the owner's whole subtree while its quota was in
    /// force (the periods `cpu.stat` counted, at most the session).
    pub used_cpus: f64,
    /// The burst it may use beyond its quota (`cpu.max.burst`,
    /// `cpu.cfs_burst_us`), and how often and how much it did, where
    /// `cpu.stat` says.
    pub burst_us: u64,
    pub nr_bursts: Option<u64>,
    pub burst_ns: Option<u64>,
}

/// In JSON, flattened into its owner as `verdict` (the kind), `verdict_text` and
/// `verdict_notes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(rename = "verdict")]
    pub kind: Kind,
    #[serde(rename = "verdict_text")]
    pub text: String,
    /// Further observations (e.g. throttled below quota).
    #[serde(
        rename = "verdict_notes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub notes: Vec<String>,
}

pub fn judge(f: &Facts) -> Verdict {
    let runnable = f.wait_ns + f.run_ns;
    let delay = if runnable == 0 {
        0.0
    } else {
        f.wait_ns as f64 / runnable as f64
    };
    let mut notes = Vec::new();
    if let Some(q) = &f.quota
        && q.nr_throttled > 0
        && q.used_cpus < q.cpus * BELOW_QUOTA
    {
        notes.push(format!(
            "throttled in {} of {} periods although {} used {:.2} CPUs on average over them, below \
             its quota of {:.2}: the quota runs out within periods (bursts of runnable threads, or \
             per-CPU slice expiry on kernels before 5.4, fixed by de53fd7aedb1)",
            q.nr_throttled, q.nr_periods, q.owner, q.used_cpus, q.cpus
        ));
    }
    let wait_share = if f.duration_ns == 0 {
        0.0
    } else {
        f.wait_ns as f64 / f.duration_ns as f64
    };
    let felt_ns = (f.slice_ns as f64 * FELT_SLICES) as u64;
    let long = f.p99_ns >= felt_ns || wait_share >= QUEUED_THREADS;
    if f.wait_ns == 0 || delay < HEALTHY_DELAY || wait_share < NEGLIGIBLE_WAIT || !long {
        let mut text = format!(
            "healthy: runnable threads waited {:.1} % of the time they were runnable, p99 wait \
             {} (half a scheduling slice is {}); no unusual scheduling delay",
            delay * 100.0,
            fmt_ns(f.p99_ns),
            fmt_ns(felt_ns)
        );
        // The figures stay visible: a little throttling is worth knowing of.
        let parts: Vec<String> = Cause::ALL
            .iter()
            .filter(|&&c| f.causes.ns(c) > 0)
            .map(|&c| format!("{} {}", c.name(), fmt_ns(f.causes.ns(c))))
            .collect();
        if !parts.is_empty() {
            text.push_str(&format!(" (waited: {})", parts.join(", ")));
        }
        if let Some(q) = &f.quota
            && f.causes.throttled_ns > 0
        {
            text.push_str(&format!(
                "; throttled by {}'s quota of {:.2} CPUs in {} of {} periods",
                q.owner, q.cpus, q.nr_throttled, q.nr_periods
            ));
        }
        return Verdict {
            kind: Kind::Healthy,
            text,
            notes,
        };
    }
    // Contended time splits into own and others' in the proportion it was
    // charged; what could not be charged goes with the others.
    let charged = f.self_charged_ns + f.others_charged_ns;
    let self_ns = if charged == 0 {
        0
    } else {
        (f.causes.contended_ns as f64 * f.self_charged_ns as f64 / charged as f64) as u64
    };
    let others_ns = f.causes.contended_ns.saturating_sub(self_ns);
    let own = if f.shared {
        Kind::HostBusy
    } else {
        Kind::SelfContention
    };
    let mut causes = [
        (Kind::QuotaExpiry, f.causes.throttled_ns),
        (Kind::HostContention, others_ns),
        (own, self_ns),
        (Kind::WakeupLatency, f.causes.other_ns),
    ];
    causes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut parts = Vec::new();
    for (i, &(kind, ns)) in causes.iter().enumerate() {
        if i > 0 && (ns as f64) < SIGNIFICANT_CAUSE * f.wait_ns as f64 {
            break;
        }
        parts.push(describe(kind, ns, f));
    }
    Verdict {
        kind: causes[0].0,
        text: parts.join("; "),
        notes,
    }
}

/// `ns` of thread time over the traced time in words a person can picture:
/// `throttled 39.6 % of the time` for less than one thread's worth, `on
/// average 22.5 threads throttled` from one on.
fn how_much(verb: &str, ns: u64, f: &Facts) -> String {
    let threads = if f.duration_ns == 0 {
        0.0
    } else {
        ns as f64 / f.duration_ns as f64
    };
    if threads < 1.0 {
        format!("{verb} {:.1} % of the time", threads * 100.0)
    } else {
        format!("on average {threads:.1} threads {verb}")
    }
}

fn describe(kind: Kind, ns: u64, f: &Facts) -> String {
    let of_wait = percent(ns, f.wait_ns);
    match kind {
        Kind::QuotaExpiry => {
            let mut s = format!(
                "quota expiry: {} ({of_wait:.0} % of its wait)",
                how_much("throttled", ns, f)
            );
            if let Some(q) = &f.quota {
                s.push_str(&format!(
                    " by {}'s quota of {:.2} CPUs; cpu.stat: {} of {} periods throttled",
                    q.owner, q.cpus, q.nr_throttled, q.nr_periods
                ));
                if q.burst_us > 0 {
                    // A burst only carries over what earlier periods left
                    // unused: it cannot cover a steady excess.
                    s.push_str(&format!(
                        ", although a burst of {} is allowed",
                        fmt_ns(q.burst_us.saturating_mul(1_000))
                    ));
                    if let (Some(n), Some(ns)) = (q.nr_bursts, q.burst_ns) {
                        s.push_str(&format!(" ({n} periods used {} of it)", fmt_ns(ns)));
                    }
                }
            }
            s
        }
        Kind::HostContention => {
            let mut s = format!(
                "host contention: {} while other cgroups held the CPU ({of_wait:.0} % of its wait)",
                how_much("waited", ns, f)
            );
            if let Some((path, share, process)) = &f.top_other {
                s.push_str(&format!(
                    ", {:.0} % of it behind {path} ({process})",
                    share * 100.0
                ));
                // Whether the neighbour took more than its weight's share,
                // and whether this group asked for more than its own.
                if let Some((ran_ns, w)) = &f.top_other_weight {
                    s.push_str(&format!(", which {}", compared(*ran_ns, f.duration_ns, w)));
                }
                if let Some(w) = &f.weight {
                    s.push_str(&format!(
                        "; this group {}",
                        compared(f.run_ns, f.duration_ns, w)
                    ));
                }
                if let (Some((ran_ns, w)), Some(_)) = (&f.top_other_weight, &f.weight) {
                    // Whether capping the neighbour is fair, or the weights
                    // themselves share the CPU this way.
                    s.push_str(if beyond(*ran_ns, f.duration_ns, w) {
                        ": the neighbour ran beyond its weight's guarantee; cap it (cpu.max) or \
                         raise this group's weight"
                    } else {
                        ": the CPU went as the weights say; raise this group's weight (its CPU \
                         request) to wait less"
                    });
                }
            }
            s
        }
        Kind::SelfContention => format!(
            "self contention: {} behind its own threads ({of_wait:.0} % of its wait): more \
             runnable threads than CPUs",
            how_much("waited", ns, f)
        ),
        Kind::HostBusy => format!(
            "host busy: {} behind other tasks of this cgroup ({of_wait:.0} % of its wait), which \
             holds the host's own processes: the host is busy, not one workload",
            how_much("waited", ns, f)
        ),
        Kind::WakeupLatency => format!(
            "wake-up latency: {} on an idle CPU ({of_wait:.0} % of its wait)",
            how_much("waited", ns, f)
        ),
        Kind::Healthy => "healthy".into(),
    }
}

#[cfg(test)]
mod tests;
