//! The `/metrics` page: Prometheus text format 0.0.4, or OpenMetrics 1.0 when
//! the scraper asks for it. The metric families are documented in the README.

use std::fmt::Write as _;

use tracer_common::{causes::Cause, maps::Counter};

use super::{
    export::{LE_NS, OTHER, Series},
    program_cost::ProgramCost,
};
use crate::{cpustat::CpuStat, workload::Workload};

/// One exported cgroup.
#[derive(Clone, Debug, Default)]
pub struct CgroupSeries {
    pub path: String,
    pub series: Series,
    /// Its own `cpu.stat` counters (absolute), if it is under a quota.
    pub cpu_stat: Option<CpuStat>,
    /// The quota it is under, in CPUs.
    pub quota_cpus: Option<f64>,
    /// The burst it may use beyond that quota, in seconds (0: none).
    pub quota_burst_seconds: Option<f64>,
    /// What its CPU weight guarantees, in CPUs.
    pub guaranteed_cpus: Option<f64>,
    /// Its own CPU pressure totals (`cpu.pressure`, cgroup v2).
    pub psi: Option<crate::psi::Pressure>,
    /// Who held the CPU while it waited: occupant cgroup path and ns, largest first.
    pub occupants: Vec<(String, u64)>,
    /// Who it is, for `tracer_cgroup_info`.
    pub workload: Workload,
}

/// The workload labels `labels` may put on every per-cgroup series.
pub const WORKLOAD_LABELS: [&str; 5] = ["namespace", "pod", "container", "qos", "kind"];

impl CgroupSeries {
    /// The labels that say which cgroup a series is: `cgroup`, then the
    /// workload labels asked for (empty where unknown: a series keeps one
    /// set of label names).
    fn identity<'a>(&'a self, extra: &[&'static str]) -> Vec<(&'static str, &'a str)> {
        let w = &self.workload;
        let mut labels = vec![("cgroup", self.path.as_str())];
        for &name in extra {
            let value = match name {
                "namespace" => w.namespace.as_deref(),
                "pod" => w.pod.as_deref(),
                "container" => w.container.as_deref(),
                "qos" => w.qos.as_deref(),
                "kind" => Some(w.kind.name()),
                _ => None,
            };
            labels.push((name, value.unwrap_or("")));
        }
        labels
    }
}

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cgroups: Vec<CgroupSeries>,
    /// The sum of the cgroups without series of their own, if there are any.
    pub other: Option<Series>,
    pub counters: [u64; Counter::COUNT as usize],
    /// The programs' cost in the last sampled window; empty before the first.
    pub programs: Vec<ProgramCost>,
    pub agent_cpu_ns: u64,
    pub agent_resident_bytes: u64,
    /// Heap bytes allocated and not freed, where the C library says.
    pub agent_heap_bytes: Option<u64>,
    pub tracked_cgroups: usize,
    /// Per-cgroup entries read from the kernel since the start: only those
    /// that changed since the previous read.
    pub entries_read: u64,
    /// Gone, out of the kernel's maps, kept for the current dump window.
    pub departed_cgroups: usize,
    pub exported_cgroups: usize,
    /// Cgroups found gone and evicted since the start.
    pub evicted_cgroups: u64,
    pub version: String,
    pub kernel: String,
    pub throttle_method: String,
    /// `fentry` or `tracepoints`.
    pub tier: String,
    /// The flight recorder, when configured.
    pub recorder: Option<RecorderStats>,
    /// Workload labels on every per-cgroup series (`labels`; see
    /// [`WORKLOAD_LABELS`]), beside `cgroup`.
    pub labels: Vec<&'static str>,
    /// The host's CPU pressure totals (`/proc/pressure/cpu`).
    pub psi: Option<crate::psi::Pressure>,
}

/// What the flight recorder holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Heap bytes its intervals hold.
    pub bytes: usize,
    /// Triggers met since the start, whether or not they had a dump written.
    pub triggers: u64,
    /// Trigger dumps written since the start.
    pub dumps: u64,
}

/// A series' identity labels and more.
fn with<'a>(id: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    id.iter().chain(more).copied().collect()
}

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

struct Writer {
    out: String,
    openmetrics: bool,
}

impl Writer {
    /// A metric family header. Counters are named without `_total` in
    /// OpenMetrics' TYPE line and with it in Prometheus' text format.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let base = if self.openmetrics {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let _ = writeln!(self.out, "# HELP {base} {help}");
        let _ = writeln!(self.out, "# TYPE {base} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

pub fn content_type(openmetrics: bool) -> &'static str {
    if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

pub fn render(s: &Snapshot, openmetrics: bool) -> String {
    let mut w = Writer {
        out: String::new(),
        openmetrics,
    };
    // Each group's identity labels: `cgroup`, and the workload labels asked
    // for (empty for "other", which sums many).
    let other: Vec<(&str, &str)> = std::iter::once(("cgroup", OTHER))
        .chain(s.labels.iter().map(|&l| (l, "")))
        .collect();
    // Built once: every per-cgroup family below labels its series with them.
    let ids: Vec<Vec<(&str, &str)>> = s.cgroups.iter().map(|c| c.identity(&s.labels)).collect();
    let groups: Vec<(&[(&str, &str)], &Series)> = s
        .cgroups
        .iter()
        .zip(&ids)
        .map(|(c, id)| (id.as_slice(), &c.series))
        .chain(s.other.as_ref().map(|o| (other.as_slice(), o)))
        .collect();

    w.family(
        "tracer_runnable_wait_seconds",
        "histogram",
        "Time runnable threads waited for a CPU (run-queue wait), per wait; bucket bounds are powers of four of ns, exclusive.",
    );
    for (cgroup, series) in &groups {
        let mut cumulative = 0;
        for (i, n) in series.wait_buckets.iter().enumerate() {
            cumulative += n;
            let le = LE_NS.get(i).map_or("+Inf".to_owned(), |&ns| seconds(ns));
            w.sample(
                "tracer_runnable_wait_seconds_bucket",
                &with(cgroup, &[("le", &le)]),
                cumulative,
            );
        }
        w.sample(
            "tracer_runnable_wait_seconds_sum",
            cgroup,
            seconds(series.wait_ns),
        );
        w.sample(
            "tracer_runnable_wait_seconds_count",
            cgroup,
            series.wait_count,
        );
    }

    w.family(
        "tracer_wait_seconds_total",
        "counter",
        "Run-queue wait by cause, summed over threads: throttled (CFS quota), contended (other tasks held the CPU), other (idle CPU).",
    );
    for (cgroup, series) in &groups {
        for cause in Cause::ALL {
            w.sample(
                "tracer_wait_seconds_total",
                &with(cgroup, &[("cause", cause.name())]),
                seconds(series.causes.ns(cause)),
            );
        }
    }

    for (name, help, get) in [
        (
            "tracer_on_cpu_seconds_total",
            "Time the cgroup's tasks ran, summed over threads.",
            (|s: &Series| seconds(s.on_cpu_ns)) as fn(&Series) -> String,
        ),
        (
            "tracer_throttle_episodes_total",
            "Times a cfs_rq of the cgroup was throttled (its quota, or an ancestor's, ran out on a CPU).",
            |s: &Series| s.episodes.to_string(),
        ),
        (
            "tracer_throttle_episode_seconds_total",
            "Duration of those throttle episodes, summed over CPUs.",
            |s: &Series| seconds(s.episode_ns),
        ),
    ] {
        w.family(name, "counter", help);
        for (cgroup, series) in &groups {
            w.sample(name, cgroup, get(series));
        }
    }

    let limited: Vec<(&[(&str, &str)], &CpuStat)> = s
        .cgroups
        .iter()
        .zip(&ids)
        .filter_map(|(c, id)| Some((id.as_slice(), c.cpu_stat.as_ref()?)))
        .collect();
    for (name, help, get) in [
        (
            "tracer_cpu_stat_periods_total",
            "cpu.stat nr_periods: enforcement periods elapsed.",
            (|s: &CpuStat| s.nr_periods.to_string()) as fn(&CpuStat) -> String,
        ),
        (
            "tracer_cpu_stat_throttled_periods_total",
            "cpu.stat nr_throttled: periods in which the cgroup was throttled.",
            |s: &CpuStat| s.nr_throttled.to_string(),
        ),
        (
            "tracer_cpu_stat_throttled_seconds_total",
            "cpu.stat throttled time, summed over CPUs (0 for a cgroup throttled through its parent).",
            |s: &CpuStat| seconds(s.throttled_ns),
        ),
    ] {
        w.family(name, "counter", help);
        for (cgroup, stat) in &limited {
            w.sample(name, cgroup, get(stat));
        }
    }
    for (name, help, get) in [
        (
            "tracer_cpu_stat_bursts_total",
            "cpu.stat nr_bursts: periods in which the cgroup used its burst (5.14+).",
            (|s: &CpuStat| s.nr_bursts.map(|n| n.to_string())) as fn(&CpuStat) -> Option<String>,
        ),
        (
            "tracer_cpu_stat_burst_seconds_total",
            "cpu.stat burst time: CPU time used beyond the quota, out of the burst (5.14+).",
            |s: &CpuStat| s.burst_ns.map(seconds),
        ),
    ] {
        w.family(name, "counter", help);
        for (cgroup, stat) in &limited {
            if let Some(v) = get(stat) {
                w.sample(name, cgroup, v);
            }
        }
    }
    w.family(
        "tracer_cpu_stat_local_throttled_seconds_total",
        "counter",
        "cpu.stat.local throttled time: however the cgroup was throttled, its ancestors' quotas included (6.6+).",
    );
    for (cgroup, stat) in &limited {
        if let Some(ns) = stat.local_throttled_ns {
            w.sample(
                "tracer_cpu_stat_local_throttled_seconds_total",
                cgroup,
                seconds(ns),
            );
        }
    }
    w.family(
        "tracer_cpu_quota_cpus",
        "gauge",
        "The CFS quota the cgroup is under (its own or an ancestor's), in CPUs.",
    );
    for (c, id) in s.cgroups.iter().zip(&ids) {
        if let Some(q) = c.quota_cpus {
            w.sample("tracer_cpu_quota_cpus", id, q);
        }
    }
    w.family(
        "tracer_cpu_quota_burst_seconds",
        "gauge",
        "The burst the cgroup's quota allows beyond it each period (cpu.max.burst, cpu.cfs_burst_us), in seconds.",
    );
    for (c, id) in s.cgroups.iter().zip(&ids) {
        if let Some(b) = c.quota_burst_seconds {
            w.sample("tracer_cpu_quota_burst_seconds", id, b);
        }
    }

    w.family(
        "tracer_cpu_weight_guaranteed_cpus",
        "gauge",
        "The CPUs the cgroup's weight (cpu.shares, cpu.weight) guarantees when every sibling, and every ancestor's sibling, wants all the CPUs: its request, on Kubernetes.",
    );
    for (c, id) in s.cgroups.iter().zip(&ids) {
        if let Some(g) = c.guaranteed_cpus {
            w.sample("tracer_cpu_weight_guaranteed_cpus", id, g);
        }
    }

    w.family(
        "tracer_cgroup_info",
        "gauge",
        "Who each exported cgroup is, always 1: join on `cgroup` for pod and container names (a series keeps its identity when names resolve late).",
    );
    for c in &s.cgroups {
        let wl = &c.workload;
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        w.sample(
            "tracer_cgroup_info",
            &[
                ("cgroup", &c.path),
                ("kind", wl.kind.name()),
                ("namespace", &field(&wl.namespace)),
                ("pod", &field(&wl.pod)),
                ("container", &field(&wl.container)),
                ("qos", &field(&wl.qos)),
                ("runtime", &field(&wl.runtime)),
                ("container_id", &field(&wl.container_id)),
                ("pod_uid", &field(&wl.pod_uid)),
                ("unit", &field(&wl.unit)),
            ],
            1,
        );
    }

    w.family(
        "tracer_contended_by_seconds_total",
        "counter",
        "Contended wait of the cgroup charged to the cgroups that held the CPU, by how long each ran (top occupants).",
    );
    for (c, id) in s.cgroups.iter().zip(&ids) {
        for (occupant, ns) in &c.occupants {
            w.sample(
                "tracer_contended_by_seconds_total",
                &with(id, &[("occupant", occupant)]),
                seconds(*ns),
            );
        }
    }

    if let Some(p) = s.psi {
        w.family(
            "tracer_psi_cpu_seconds_total",
            "counter",
            "The host's CPU pressure (/proc/pressure/cpu): wall time during which some (or, for full, every non-idle) runnable task waited for a CPU. PSI cannot tell a quota from a neighbour; tracer_wait_seconds_total splits the same waits by cause, in thread time.",
        );
        w.sample(
            "tracer_psi_cpu_seconds_total",
            &[("kind", "some")],
            seconds(p.some_us * 1_000),
        );
        if let Some(full) = p.full_us {
            w.sample(
                "tracer_psi_cpu_seconds_total",
                &[("kind", "full")],
                seconds(full * 1_000),
            );
        }
    }

    if s.cgroups.iter().any(|c| c.psi.is_some()) {
        w.family(
            "tracer_cgroup_psi_cpu_seconds_total",
            "counter",
            "A cgroup's own CPU pressure (cpu.pressure, cgroup v2): wall time during which some (or, for full, all) of its runnable tasks waited for a CPU, whatever the cause. tracer_wait_seconds_total splits the same waits by cause, in thread time.",
        );
        for (c, id) in s.cgroups.iter().zip(&ids) {
            let Some(p) = c.psi else { continue };
            w.sample(
                "tracer_cgroup_psi_cpu_seconds_total",
                &with(id, &[("kind", "some")]),
                seconds(p.some_us * 1_000),
            );
            if let Some(full) = p.full_us {
                w.sample(
                    "tracer_cgroup_psi_cpu_seconds_total",
                    &with(id, &[("kind", "full")]),
                    seconds(full * 1_000),
                );
            }
        }
    }

    health::families(&mut w, s);
    if openmetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

mod health;

#[cfg(test)]
mod tests;
