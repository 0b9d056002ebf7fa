//! The kernel's own CFS bandwidth figures for a cgroup: its quota (`cpu.max` on
//! v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us` on v1) and its counters
//! (`cpu.stat`, and `cpu.stat.local` on 6.6+), read at the start and end of a
//! session so that the traced figures can be shown beside them.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::cgroup::{CpuHierarchy, Mode};

/// A CFS bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub quota_us: u64,
    pub period_us: u64,
    /// Unused quota that may carry over (`cpu.cfs_burst_us` / `cpu.max.burst`).
    #[serde(default)]
    pub burst_us: u64,
}

impl Quota {
    /// The limit in CPUs (0.2 for 20 ms per 100 ms).
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// The counters of `cpu.stat` (and `cpu.stat.local`), in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// Summed over CPUs: the throttled time of every cfs_rq of this group that hit
    /// its own quota. A child throttled by its parent's quota shows 0 here.
    pub throttled_ns: u64,
    /// `cpu.stat.local` (6.6+): throttled time of this group however it was
    /// throttled, its ancestors' quotas included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_throttled_ns: Option<u64>,
    /// Periods in which the group ran into its burst (`nr_bursts`, 5.14+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_bursts: Option<u64>,
    /// CPU time it used beyond its quota, out of the burst (`burst_time` on
    /// v1, in ns; `burst_usec` on v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_ns: Option<u64>,
}

impl CpuStat {
    /// Counters accumulated between `self` (start) and `end`.
    pub fn delta(&self, end: &Self) -> Self {
        Self {
            nr_periods: end.nr_periods.saturating_sub(self.nr_periods),
            nr_throttled: end.nr_throttled.saturating_sub(self.nr_throttled),
            throttled_ns: end.throttled_ns.saturating_sub(self.throttled_ns),
            local_throttled_ns: since(self.local_throttled_ns, end.local_throttled_ns),
            nr_bursts: since(self.nr_bursts, end.nr_bursts),
            burst_ns: since(self.burst_ns, end.burst_ns),
        }
    }
}

/// A counter's growth, where both readings have it.
fn since(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

fn keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// Parses `cpu.stat` and, if present, `cpu.stat.local`. v1 gives nanoseconds
/// (`throttled_time`), v2 microseconds (`throttled_usec`).
pub fn parse_cpu_stat(stat: &str, local: Option<&str>) -> Option<CpuStat> {
    let throttled = |m: &HashMap<&str, u64>| {
        m.get("throttled_time")
            .copied()
            .or_else(|| m.get("throttled_usec").map(|us| us * 1_000))
    };
    let s = keyed(stat);
    Some(CpuStat {
        nr_periods: *s.get("nr_periods")?,
        nr_throttled: *s.get("nr_throttled")?,
        throttled_ns: throttled(&s)?,
        local_throttled_ns: local.and_then(|l| throttled(&keyed(l))),
        nr_bursts: s.get("nr_bursts").copied(),
        burst_ns: s
            .get("burst_time")
            .copied()
            .or_else(|| s.get("burst_usec").map(|us| us * 1_000)),
    })
}

/// Parses a quota: v2 `cpu.max` ("max 100000" or "20000 100000") and
/// `cpu.max.burst`, or v1 `cpu.cfs_quota_us` (-1 for none), `cpu.cfs_period_us`
/// and `cpu.cfs_burst_us`. `None` when there is no limit.
pub fn parse_quota(mode: Mode, files: [Option<&str>; 3]) -> Option<Quota> {
    let number = |s: Option<&str>| s.and_then(|s| s.trim().parse::<i64>().ok());
    let burst = number(files[2]).unwrap_or(0).max(0) as u64;
    let (quota, period) = match mode {
        Mode::V2 => {
            let mut it = files[0]?.split_whitespace();
            let quota = it.next()?;
            let period = it.next()?.parse::<i64>().ok()?;
            (quota.parse::<i64>().ok()?, period)
        }
        Mode::V1 | Mode::Hybrid => (number(files[0])?, number(files[1])?),
    };
    (quota > 0 && period > 0).then_some(Quota {
        quota_us: quota as u64,
        period_us: period as u64,
        burst_us: burst,
    })
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// The quota set on the cgroup at `dir` itself (not inherited).
pub fn read_quota(hierarchy: &CpuHierarchy, dir: &Path) -> Option<Quota> {
    let names = match hierarchy.mode {
        Mode::V2 => ["cpu.max", "", "cpu.max.burst"],
        Mode::V1 | Mode::Hybrid => ["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.cfs_burst_us"],
    };
    let limit = read(dir, names[0])?;
    // Most cgroups have no quota: one read says so (v1 "-1", v2 "max ...").
    if limit.trim() == "-1" || limit.starts_with("max") {
        return None;
    }
    let files = [
        Some(limit),
        (!names[1].is_empty())
            .then(|| read(dir, names[1]))
            .flatten(),
        read(dir, names[2]),
    ];
    parse_quota(
        hierarchy.mode,
        [
            files[0].as_deref(),
            files[1].as_deref(),
            files[2].as_deref(),
        ],
    )
}

pub fn read_cpu_stat(dir: &Path) -> Option<CpuStat> {
    let stat = read(dir, "cpu.stat")?;
    let local = read(dir, "cpu.stat.local");
    parse_cpu_stat(&stat, local.as_deref())
}

#[cfg(test)]
mod tests {
    use crate::cgroup::CpuHierarchy;

    #[test]
    fn quotas_from_files_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let at = |mode| CpuHierarchy {
            mode,
            mount: dir.path().to_owned(),
            mount_root: "/".into(),
            ns_root: "/".into(),
        };
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("cpu.cfs_quota_us", "-1\n");
        write("cpu.cfs_period_us", "100000\n");
        assert_eq!(read_quota(&at(Mode::V1), dir.path()), None, "unlimited");
        write("cpu.cfs_quota_us", "20000\n");
        let q = read_quota(&at(Mode::Hybrid), dir.path()).unwrap();
        assert_eq!((q.quota_us, q.period_us, q.burst_us), (20_000, 100_000, 0));
        write("cpu.max", "max 100000\n");
        assert_eq!(read_quota(&at(Mode::V2), dir.path()), None);
        write("cpu.max", "50000 100000\n");
        write("cpu.max.burst", "1000\n");
        let q = read_quota(&at(Mode::V2), dir.path()).unwrap();
        assert_eq!(
            (q.quota_us, q.period_us, q.burst_us),
            (50_000, 100_000, 1_000)
        );
        assert_eq!(read_quota(&at(Mode::V2), &dir.path().join("gone")), None);
    }

    use super::*;

    #[test]
    fn v1_counters_are_nanoseconds() {
        let stat = "nr_periods 40\nnr_throttled 38\nthrottled_time 6471666428\nnr_bursts 0\nburst_time 0\n";
        let s = parse_cpu_stat(stat, Some("throttled_time 5603036534\n")).unwrap();
        assert_eq!(
            s,
            CpuStat {
                nr_periods: 40,
                nr_throttled: 38,
                throttled_ns: 6_471_666_428,
                local_throttled_ns: Some(5_603_036_534),
                nr_bursts: Some(0),
                burst_ns: Some(0),
            }
        );
        let bursts = parse_cpu_stat(
            "nr_periods 40\nnr_throttled 38\nthrottled_time 1\nnr_bursts 12\nburst_time 240000000\n",
            None,
        )
        .unwrap();
        assert_eq!(
            (bursts.nr_bursts, bursts.burst_ns),
            (Some(12), Some(240_000_000))
        );
        // Before 5.14 there are no burst counters.
        let old = parse_cpu_stat("nr_periods 1\nnr_throttled 1\nthrottled_time 1\n", None).unwrap();
        assert_eq!((old.nr_bursts, old.burst_ns), (None, None));
    }

    #[test]
    fn v2_counters_are_microseconds() {
        let stat = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 48\nnr_throttled 47\nthrottled_usec 4203581\nnr_bursts 0\nburst_usec 0\n";
        let s = parse_cpu_stat(stat, None).unwrap();
        assert_eq!(s.throttled_ns, 4_203_581_000);
        assert_eq!(s.local_throttled_ns, None);
        assert_eq!((s.nr_periods, s.nr_throttled), (48, 47));
        let bursts = parse_cpu_stat(
            "nr_periods 4\nnr_throttled 1\nthrottled_usec 1\nnr_bursts 3\nburst_usec 20000\n",
            None,
        )
        .unwrap();
        assert_eq!(
            (bursts.nr_bursts, bursts.burst_ns),
            (Some(3), Some(20_000_000))
        );
        // A kernel without CFS bandwidth has no such lines.
        assert_eq!(parse_cpu_stat("usage_usec 5\n", None), None);
    }

    #[test]
    fn deltas() {
        let a = CpuStat {
            nr_periods: 10,
            nr_throttled: 5,
            throttled_ns: 1_000,
            local_throttled_ns: Some(500),
            nr_bursts: Some(1),
            burst_ns: None,
        };
        let b = CpuStat {
            nr_periods: 40,
            nr_throttled: 30,
            throttled_ns: 9_000,
            local_throttled_ns: Some(4_500),
            nr_bursts: Some(4),
            burst_ns: Some(7),
        };
        assert_eq!(
            a.delta(&b),
            CpuStat {
                nr_periods: 30,
                nr_throttled: 25,
                throttled_ns: 8_000,
                local_throttled_ns: Some(4_000),
                nr_bursts: Some(3),
                burst_ns: None,
            }
        );
    }

    #[test]
    fn quotas() {
        let v1 = parse_quota(Mode::V1, [Some("20000\n"), Some("100000\n"), Some("0\n")]).unwrap();
        assert_eq!(v1.quota_us, 20_000);
        assert!((v1.cpus() - 0.2).abs() < 1e-9);
        assert_eq!(
            parse_quota(Mode::Hybrid, [Some("-1\n"), Some("100000\n"), None]),
            None
        );
        let v2 = parse_quota(Mode::V2, [Some("150000 100000\n"), None, Some("5000\n")]).unwrap();
        assert_eq!(
            v2,
            Quota {
                quota_us: 150_000,
                period_us: 100_000,
                burst_us: 5_000
            }
        );
        assert_eq!(
            parse_quota(Mode::V2, [Some("max 100000\n"), None, None]),
            None
        );
        assert_eq!(parse_quota(Mode::V2, [None, None, None]), None);
    }
}
