//! What a process the test started holds, read from `/proc/<pid>`: its BPF
//! programs (by id, so that a check is about this process and no other), its
//! descriptors, its CPU time. Ground truth about the test's own processes.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow};

/// The ids of the BPF programs `pid` holds, through program or link
/// descriptors (`prog_id:` in their fdinfo).
pub fn program_ids(pid: u32) -> anyhow::Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        // A descriptor closed while we read is not an error.
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    Ok(ids)
}

/// The kernel memory of the BPF maps `pid` holds (`memlock:` in their
/// fdinfo, summed), and how many maps. From 6.4 the kernel's estimate of
/// what each map uses now; before, what it was charged at creation (for a
/// hash map allocated on demand, as if full).
pub fn map_memory(pid: u32) -> anyhow::Result<(u64, usize)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let (mut bytes, mut maps) = (0, 0);
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !info.lines().any(|l| l.starts_with("map_type:")) {
            continue;
        }
        maps += 1;
        bytes += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok((bytes, maps))
}

/// Of `ids`, those the kernel still has loaded.
pub fn still_loaded(ids: &BTreeSet<u32>) -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// Where each of `pid`'s descriptors points (`socket:[123]`, a path, ...).
fn descriptors(pid: u32) -> anyhow::Result<Vec<String>> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| dir.clone())?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// How many descriptors `pid` has open.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(descriptors(pid)?.len())
}

/// How many of them are sockets.
pub fn sockets(pid: u32) -> anyhow::Result<usize> {
    Ok(descriptors(pid)?
        .iter()
        .filter(|d| d.starts_with("socket:"))
        .count())
}

/// User and system CPU time `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name (in parentheses, which may hold spaces):
    // state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("no command name in {stat:?}"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// Sets `pid`'s soft and hard limit on open descriptors (root may lower
/// another process's).
pub fn set_nofile(pid: u32, limit: u64) -> anyhow::Result<()> {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads `new` and writes nothing back (old is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("prlimit RLIMIT_NOFILE");
    }
    Ok(())
}
