//! Fixtures for the privileged integration tests: throw-away cgroups, pinned
//! workloads in them, and the kernel's own figures to compare against.
//!
//! Workloads are this test binary re-executed in "worker" mode (see
//! [`run_worker_if_requested`]), so that each one is a single-threaded process
//! whose pid is its only thread id, placed in its cgroup and pinned to its CPU
//! before it reports ready.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use tracer::cgroup::CpuHierarchy;

pub mod inspect;
pub mod postgres;
pub mod services;
pub mod tls;

mod worker;

pub use worker::{Load, Worker, pin_to_cpu, run_worker_if_requested, spawn_in};

/// Why the privileged tests cannot run here, if they cannot.
pub fn missing_privilege() -> Option<String> {
    if let Some(reason) = tracer::privilege::check() {
        return Some(reason);
    }
    if !Path::new(tracer::btf::VMLINUX).exists() {
        return Some(format!("no kernel BTF at {}", tracer::btf::VMLINUX));
    }
    None
}

/// Online CPUs, in order.
pub fn online_cpus() -> Vec<usize> {
    aya::util::online_cpus()
        .map(|c| c.into_iter().map(|c| c as usize).collect())
        .unwrap_or_default()
}

/// A cgroup in the cpu controller's hierarchy, removed on drop.
pub struct TestCgroup {
    /// Path from the hierarchy's root, as the tracer reports it.
    pub path: String,
    pub dir: PathBuf,
}

impl TestCgroup {
    /// A cgroup below the hierarchy's root.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        Self::at(format!("/tracer-test-{}-{name}", std::process::id()))
    }

    /// A cgroup below this one. Drop it before its parent.
    pub fn child(&self, name: &str) -> anyhow::Result<Self> {
        // cgroup v2: a child has the cpu controller only if its parent
        // delegates it.
        let delegate = self.dir.join("cgroup.subtree_control");
        if delegate.exists() {
            std::fs::write(&delegate, "+cpu").with_context(|| {
                format!("enabling the cpu controller in {}", delegate.display())
            })?;
        }
        Self::at(format!("{}/{name}", self.path))
    }

    fn at(path: String) -> anyhow::Result<Self> {
        let hierarchy = CpuHierarchy::detect()?;
        let dir = hierarchy.dir_of(&path);
        if dir.exists() {
            // Left by an earlier run of this pid that was killed: start clean.
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { path, dir })
    }

    /// The id the kernel (and so the tracer) uses for it.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir).map(|m| m.ino()).unwrap_or(0)
    }

    fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Sets a CFS quota: `quota_us` of CPU time every `period_us` (cgroup v1 or
    /// v2 files, whichever the hierarchy has).
    pub fn set_quota(&self, quota_us: u64, period_us: u64) -> anyhow::Result<()> {
        if let Some(v2) = self.cpu_max() {
            std::fs::write(&v2, format!("{quota_us} {period_us}"))?;
        } else {
            std::fs::write(self.dir.join("cpu.cfs_period_us"), period_us.to_string())?;
            std::fs::write(self.dir.join("cpu.cfs_quota_us"), quota_us.to_string())?;
        }
        Ok(())
    }

    /// Lets the group carry up to `burst_us` of unused quota into a later
    /// period (`cpu.max.burst` on v2, `cpu.cfs_burst_us` on v1, 5.14+).
    pub fn set_burst(&self, burst_us: u64) -> anyhow::Result<()> {
        let file = if self.cpu_max().is_some() {
            "cpu.max.burst"
        } else {
            "cpu.cfs_burst_us"
        };
        std::fs::write(self.dir.join(file), burst_us.to_string())
            .with_context(|| format!("writing {file} of {}", self.dir.display()))
    }

    /// Sets its CPU weight to `shares` in `cpu.shares` units (1024 is the
    /// default): `cpu.shares` on v1, or the same weight on v2's scale
    /// (`cpu.weight`, 100 for 1024). Returns the file and the value written.
    pub fn set_shares(&self, shares: u64) -> anyhow::Result<(&'static str, u64)> {
        let (file, value) = if self.cpu_max().is_some() {
            ("cpu.weight", shares * 100 / 1024)
        } else {
            ("cpu.shares", shares)
        };
        std::fs::write(self.dir.join(file), value.to_string())
            .with_context(|| format!("writing {file} of {}", self.dir.display()))?;
        Ok((file, value))
    }

    /// Removes its CPU quota: the group is unthrottled at once and never
    /// throttled again.
    pub fn lift_quota(&self) -> anyhow::Result<()> {
        if let Some(v2) = self.cpu_max() {
            std::fs::write(&v2, "max")?;
        } else {
            std::fs::write(self.dir.join("cpu.cfs_quota_us"), "-1")?;
        }
        Ok(())
    }

    /// Its cgroup v2 `cpu.max`, if the cpu controller is on v2 here (v1 has
    /// `cpu.cfs_quota_us` and `cpu.cfs_period_us` instead).
    fn cpu_max(&self) -> Option<std::path::PathBuf> {
        let v2 = self.dir.join("cpu.max");
        v2.exists().then_some(v2)
    }

    /// The kernel's counters for it now.
    pub fn cpu_stat(&self) -> anyhow::Result<tracer::cpustat::CpuStat> {
        tracer::cpustat::read_cpu_stat(&self.dir)
            .ok_or_else(|| anyhow!("no CFS bandwidth counters in {}", self.dir.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Killed workers leave the cgroup asynchronously; retry for a while.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if Instant::now() > deadline {
                eprintln!("could not remove test cgroup {}", self.dir.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cgroup at an exact path from the hierarchy's root (a Kubernetes
/// layout, say), with the cgroups above it that did not exist: created from
/// the top down, removed from the bottom up on drop. Ancestors that existed
/// before are left alone.
pub struct CgroupPath {
    /// Created, top first; the last is the path itself.
    created: Vec<TestCgroup>,
}

impl CgroupPath {
    pub fn create(path: &str) -> anyhow::Result<Self> {
        let hierarchy = CpuHierarchy::detect()?;
        let mut created: Vec<TestCgroup> = Vec::new();
        let mut at = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let parent = hierarchy.dir_of(if at.is_empty() { "/" } else { &at });
            at = format!("{at}/{part}");
            let leaf = i + 1 == parts.len();
            if !leaf && hierarchy.dir_of(&at).exists() {
                continue;
            }
            // cgroup v2: a child has the cpu controller only if its parent
            // delegates it.
            let delegate = parent.join("cgroup.subtree_control");
            if delegate.exists() {
                std::fs::write(&delegate, "+cpu").with_context(|| {
                    format!("enabling the cpu controller in {}", delegate.display())
                })?;
            }
            created.push(TestCgroup::at(at.clone())?);
        }
        anyhow::ensure!(!created.is_empty(), "{path:?} names no cgroup");
        Ok(Self { created })
    }

    /// The cgroup at the path itself.
    pub fn leaf(&self) -> &TestCgroup {
        &self.created[self.created.len() - 1]
    }
}

impl Drop for CgroupPath {
    fn drop(&mut self) {
        while let Some(cgroup) = self.created.pop() {
            drop(cgroup);
        }
    }
}

/// A task's `/proc/<pid>/schedstat`: how long it ran on a CPU
/// (`sum_exec_runtime`) and waited for one (run delay), in ns.
pub fn schedstat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(ran)), Some(Ok(waited))) => Ok((ran, waited)),
        _ => bail!("short schedstat: {text:?}"),
    }
}

/// The kernel's count of the time a task was runnable: on a CPU plus
/// waiting for one.
pub fn runnable_ns(pid: u32) -> anyhow::Result<u64> {
    schedstat(pid).map(|(ran, waited)| ran + waited)
}

/// The kernel's count of the time a task ran (`sum_exec_runtime`).
pub fn ran_ns(pid: u32) -> anyhow::Result<u64> {
    schedstat(pid).map(|(ran, _)| ran)
}

/// Each thread of `pid` by id: the kernel's run delay and how many times it
/// got a CPU (`/proc/<pid>/task/<tid>/schedstat`).
pub fn thread_schedstats(pid: u32) -> anyhow::Result<std::collections::BTreeMap<u32, (u64, u64)>> {
    let mut threads = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("schedstat"))?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("schedstat of thread {tid}: {text:?}"))?;
        let [_, delay, runs] = fields[..] else {
            bail!("schedstat of thread {tid}: {text:?}");
        };
        threads.insert(tid, (delay, runs));
    }
    Ok(threads)
}

/// The kernel's run delay of a task: nanoseconds spent runnable on a run
/// queue.
pub fn run_delay_ns(pid: u32) -> anyhow::Result<u64> {
    schedstat(pid).map(|(_, waited)| waited)
}

/// The tracer's programs currently loaded in the kernel, by name (the kernel
/// keeps 15 characters of a program name).
pub fn loaded_tracer_programs() -> usize {
    const NAMES: [&str; 9] = [
        "sched_switch",
        "sched_wakeup",
        "sched_wakeup_ne",
        "sched_migrate_t",
        "sched_process_e",
        "throttle_cfs_rq",
        "tg_throttle_dow",
        "tg_unthrottle_u",
        "note_run_delays",
    ];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| NAMES.contains(&n)))
        .count()
}

/// Waits (up to 5 s) until at most `limit` tracer programs are loaded and
/// returns how many are. The kernel frees a program only after an RCU grace
/// period once its last file descriptor is closed, so a count taken right
/// after a tracer exits can still include its programs.
pub fn settle_tracer_programs(limit: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = loaded_tracer_programs();
        if n <= limit || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the BPF programs process `pid` holds, through a program or a
/// link file descriptor (`prog_id` in its fdinfo): what that process loaded
/// and attached, whatever else runs on the host.
pub fn programs_held_by(pid: u32) -> std::collections::BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Default::default();
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target == "anon_inode:bpf-prog" || target == "anon_inode:bpf_link"
            })
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Which of `ids` are still loaded, after waiting (up to 5 s) for them to
/// go: the kernel frees a program an RCU grace period after its last
/// reference is dropped.
pub fn still_loaded(ids: &std::collections::BTreeSet<u32>) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `tracer` binary: `TRACER_BIN`, or the one next to this test's directory.
pub fn tracer_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TRACER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("tracer");
    candidate.exists().then_some(candidate)
}

/// Runs `tracer` with `args`, as `uid` if given.
pub fn tracer_command(bin: &Path, args: &[&str], uid: Option<u32>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd
}
