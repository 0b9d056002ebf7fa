//! What a tracer's programs cost in the kernel, by the kernel's own account:
//! with `kernel.bpf_stats_enabled` on, every program counts its runs and the
//! time they took, and `/proc/<pid>/fdinfo` shows both for each program the
//! process holds, and each map's memory (`memlock`).

use std::collections::BTreeMap;

use anyhow::Context as _;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Keeps the kernel's BPF statistics on; puts the setting back on drop.
pub struct StatsOn {
    before: String,
}

impl StatsOn {
    pub fn new() -> anyhow::Result<Self> {
        let before = std::fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL}"))?
            .trim()
            .to_owned();
        std::fs::write(SYSCTL, "1").with_context(|| format!("enabling {SYSCTL}"))?;
        Ok(Self { before })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.before);
    }
}

/// One program's counters: runs and total run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub count: u64,
    pub ns: u64,
}

/// A process's BPF objects as its file descriptors show them.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Per program id: its name and counters.
    pub programs: BTreeMap<u32, (String, Runs)>,
    /// Bytes of kernel memory of its maps, summed.
    pub map_bytes: u64,
    pub maps: usize,
}

impl Objects {
    /// Reads the BPF objects `pid` holds open.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let mut objects = Self::default();
        let dir = format!("/proc/{pid}/fdinfo");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A descriptor closed meanwhile is simply gone.
            let Ok(info) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            match parse_fdinfo(&info) {
                Some(Fd::Program(id, runs)) => {
                    objects.programs.insert(id, (program_name(id), runs));
                }
                Some(Fd::Map(bytes)) => {
                    objects.map_bytes += bytes;
                    objects.maps += 1;
                }
                None => {}
            }
        }
        Ok(objects)
    }

    /// Each program's runs since `before` (a program new since then counts
    /// from zero), by name; programs of one name (one per tier) add up.
    pub fn since(&self, before: &Self) -> BTreeMap<String, Runs> {
        let mut out: BTreeMap<String, Runs> = BTreeMap::new();
        for (id, (name, runs)) in &self.programs {
            let base = before.programs.get(id).map(|p| &p.1);
            let entry = out.entry(name.clone()).or_default();
            entry.count += runs.count - base.map_or(0, |b| b.count.min(runs.count));
            entry.ns += runs.ns - base.map_or(0, |b| b.ns.min(runs.ns));
        }
        out
    }
}

enum Fd {
    Program(u32, Runs),
    Map(u64),
}

/// A BPF program's or map's fdinfo; `None` for any other descriptor.
fn parse_fdinfo(info: &str) -> Option<Fd> {
    let field = |key: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    // A link's fdinfo names its program too (`prog_id`), but has no
    // `prog_type` and no counters.
    if let Some(id) = field("prog_id")
        && field("prog_type").is_some()
    {
        return Some(Fd::Program(
            id as u32,
            Runs {
                count: field("run_cnt").unwrap_or(0),
                ns: field("run_time_ns").unwrap_or(0),
            },
        ));
    }
    if field("map_id").is_some() || field("map_type").is_some() {
        return Some(Fd::Map(field("memlock").unwrap_or(0)));
    }
    None
}

/// A program's name, from `bpftool` (fdinfo has only its tag).
fn program_name(id: u32) -> String {
    crate::cmd::stdout_of(std::process::Command::new("bpftool").args([
        "prog",
        "show",
        "id",
        &id.to_string(),
        "-j",
    ]))
    .and_then(|json| {
        let v: serde_json::Value = serde_json::from_str(&json).ok()?;
        Some(v.get("name")?.as_str()?.to_owned())
    })
    .unwrap_or_else(|| format!("prog {id}"))
}

/// Context switches on the whole host so far (`ctxt` in `/proc/stat`).
pub fn host_switches() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|v| v.trim().parse().ok())
        .context("no ctxt line in /proc/stat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_and_map_descriptors_are_told_apart() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t26\n\
                    prog_jited:\t1\nprog_tag:\tb8a1a5a9a0f2e2c4\nmemlock:\t4096\nprog_id:\t7852\n\
                    run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t99623\n";
        match parse_fdinfo(prog) {
            Some(Fd::Program(7852, runs)) => assert_eq!(
                runs,
                Runs {
                    count: 789,
                    ns: 123456
                }
            ),
            _ => panic!("not read as a program"),
        }
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nmap_type:\t5\n\
                   key_size:\t8\nvalue_size:\t8544\nmax_entries:\t4096\nmap_flags:\t0x1\n\
                   map_extra:\t0x0\nmemlock:\t3497984\nmap_id:\t412\nfrozen:\t0\n";
        assert!(matches!(parse_fdinfo(map), Some(Fd::Map(3497984))));
        assert!(parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1\n").is_none());
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t17\nino:\t1038\nlink_type:\traw_tracepoint\n\
                    link_id:\t4802\nprog_tag:\tb205300bf137067c\nprog_id:\t7970\ntp_name:\tsched_wakeup\n";
        assert!(parse_fdinfo(link).is_none());
    }

    #[test]
    fn runs_since_an_earlier_reading_count_new_programs_from_zero() {
        let runs = |count, ns| Runs { count, ns };
        let before = Objects {
            programs: [(1, ("sched_switch".into(), runs(10, 1000)))].into(),
            ..Default::default()
        };
        let after = Objects {
            programs: [
                (1, ("sched_switch".into(), runs(30, 5000))),
                (2, ("sched_wakeup".into(), runs(5, 50))),
            ]
            .into(),
            ..Default::default()
        };
        let d = after.since(&before);
        assert_eq!(d["sched_switch"], runs(20, 4000));
        assert_eq!(d["sched_wakeup"], runs(5, 50));
    }
}
