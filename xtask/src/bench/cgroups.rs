//! Cgroups the bench creates, each with a process of its own, removed with
//! their processes on drop: idle services for the agent's read cost, CPU hogs
//! for the contended load.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, anyhow};

/// The hierarchy with the cpu controller: cgroup v1's `cpu`, or v2's root.
pub fn cpu_hierarchy() -> anyhow::Result<PathBuf> {
    ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .ok_or_else(|| anyhow!("no cpu cgroup hierarchy found"))
}

/// A folder of cgroups under the cpu hierarchy, one process in each.
pub struct Cgroups {
    root: PathBuf,
    children: Vec<Child>,
}

impl Cgroups {
    /// An empty folder of cgroups named after `what` and this process.
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let root = cpu_hierarchy()?.join(format!("tracer-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root,
            children: Vec::new(),
        })
    }

    /// `n` cgroups, each with a process that wakes 20 times a second.
    pub fn sleepers(n: usize) -> anyhow::Result<Self> {
        let mut cgroups = Self::new("sleepers")?;
        for i in 0..n {
            let mut perl = Command::new("perl");
            perl.args(["-e", "select(undef, undef, undef, 0.05) while 1"]);
            cgroups.spawn(&format!("c{i}"), perl)?;
        }
        Ok(cgroups)
    }

    /// A cgroup `name` with `cmd` started in it. The process is moved in
    /// right after it starts: its children (none here) would not follow.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let dir = self.dir(name)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", crate::cmd::describe(&cmd)))?;
        let id = child.id();
        self.children.push(child);
        std::fs::write(dir.join("cgroup.procs"), id.to_string())?;
        Ok(())
    }

    /// A cgroup `name` (created), for a process that joins it itself.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

fn remove(dir: &Path) {
    for _ in 0..250 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let dirs: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for dir in dirs {
            remove(&dir);
        }
        remove(&self.root);
    }
}
