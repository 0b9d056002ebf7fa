//! What `/proc` says about a process or thread selected with `--pid`.

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::cgroup::{CpuHierarchy, Mode};

/// Whether an id selects a whole process or one of its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidKind {
    Process,
    Thread,
}

pub struct PidInfo {
    pub kind: PidKind,
    pub comm: String,
}

/// `Tgid` from a `/proc/<id>/status` text.
fn tgid_of(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn describe(id: u32) -> anyhow::Result<PidInfo> {
    let status = match std::fs::read_to_string(format!("/proc/{id}/status")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no process or thread with id {id} (--pid)")
        }
        Err(e) => return Err(e).with_context(|| format!("reading /proc/{id}/status")),
    };
    let tgid = tgid_of(&status).with_context(|| format!("no Tgid in /proc/{id}/status"))?;
    let comm = std::fs::read_to_string(format!("/proc/{id}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    Ok(PidInfo {
        kind: if tgid == id {
            PidKind::Process
        } else {
            PidKind::Thread
        },
        comm,
    })
}

/// The cpu-controller cgroup path in a `/proc/<id>/cgroup` text.
pub fn cpu_cgroup_in(text: &str, mode: Mode) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (hierarchy, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let found = match mode {
            Mode::V2 => hierarchy == "0" && controllers.is_empty(),
            Mode::V1 | Mode::Hybrid => controllers.split(',').any(|c| c == "cpu"),
        };
        found.then(|| path.to_owned())
    })
}

/// The cpu-controller cgroup of a process or thread, if it can be read, as
/// a host path (`/proc` shows it relative to this process's cgroup
/// namespace).
pub fn cpu_cgroup(id: u32, hierarchy: &CpuHierarchy) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{id}/cgroup")).ok()?;
    cpu_cgroup_in(&text, hierarchy.mode).map(|shown| hierarchy.host_path(&shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines() {
        let hybrid = "12:pids:/\n4:cpu:/jobs/a\n3:cpuacct:/jobs\n0::/user.slice\n";
        assert_eq!(
            cpu_cgroup_in(hybrid, Mode::Hybrid).as_deref(),
            Some("/jobs/a")
        );
        let combined = "5:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n";
        assert_eq!(
            cpu_cgroup_in(combined, Mode::V1).as_deref(),
            Some("/docker/abc")
        );
        // `cpuset` is not `cpu`.
        assert_eq!(cpu_cgroup_in("6:cpuset:/x\n", Mode::V1), None);
        assert_eq!(
            cpu_cgroup_in("0::/kubepods/pod1\n", Mode::V2).as_deref(),
            Some("/kubepods/pod1")
        );
    }

    #[test]
    fn status_tgid() {
        assert_eq!(
            tgid_of("Name:\tjava\nTgid:\t4242\nPid:\t4250\n"),
            Some(4242)
        );
        assert_eq!(tgid_of("Name: x\n"), None);
    }

    #[test]
    fn this_process_is_a_process() {
        let me = std::process::id();
        let info = describe(me).unwrap();
        assert_eq!(info.kind, PidKind::Process);
        assert!(!info.comm.is_empty());
        assert!(describe(u32::MAX - 1).is_err());
    }
}
