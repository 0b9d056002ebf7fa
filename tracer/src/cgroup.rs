//! Where the cpu controller lives (cgroup v1, v2 or a hybrid of both) and how the
//! ids the kernel reports map to cgroup paths.
//!
//! The eBPF programs identify a task's group by `kernfs_node.id` of its cpu
//! controller cgroup. On 64-bit kernels that id is the inode number of the
//! cgroup's directory in the hierarchy the cpu controller is mounted on, so a walk
//! of that hierarchy resolves ids to paths, on v1 and v2 alike.

use std::{
    collections::HashMap,
    fmt,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// How the host mounts its cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// v1 controllers (cpu among them) plus a cgroup2 mount.
    Hybrid,
    /// The cpu controller is on cgroup v2.
    V2,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::V1 => "cgroup v1",
            Mode::Hybrid => "hybrid (cpu controller on cgroup v1, cgroup v2 mounted)",
            Mode::V2 => "cgroup v2",
        })
    }
}

/// The hierarchy the cpu controller is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuHierarchy {
    pub mode: Mode,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The hierarchy path of the mount's root (`/` unless the mount is a subtree,
    /// as inside a container).
    pub mount_root: String,
    /// Where this process's cgroup namespace is rooted in the hierarchy: `/`
    /// unless it runs in a private one (see [`crate::cgroupns`]). Paths read
    /// from `/proc/<pid>/cgroup` are relative to it.
    pub ns_root: String,
}

/// One line of `/proc/self/mountinfo`, the fields that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_owned();
            let _source = right.next()?;
            let super_options = right.next()?.split(',').map(str::to_owned).collect();
            Some(Mount {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// Finds the cpu controller in a mountinfo text. `v2_controllers` reads a cgroup2
/// mount's `cgroup.controllers` (a parameter so that tests need no real mounts).
fn find_cpu_hierarchy(
    mountinfo: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> anyhow::Result<CpuHierarchy> {
    let mounts = parse_mountinfo(mountinfo);
    let v2 = mounts.iter().find(|m| m.fs_type == "cgroup2");
    let v1_cpu = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == "cpu"));
    if let Some(m) = v1_cpu {
        return Ok(CpuHierarchy {
            mode: if v2.is_some() { Mode::Hybrid } else { Mode::V1 },
            mount: m.mount_point.clone(),
            mount_root: m.root.clone(),
            ns_root: "/".into(),
        });
    }
    if let Some(m) = v2 {
        let controllers = v2_controllers(&m.mount_point).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            return Ok(CpuHierarchy {
                mode: Mode::V2,
                mount: m.mount_point.clone(),
                mount_root: m.root.clone(),
                ns_root: "/".into(),
            });
        }
        bail!(
            "the cpu controller is not enabled on the cgroup v2 mount {} (cgroup.controllers: {:?})",
            m.mount_point.display(),
            controllers.trim()
        );
    }
    bail!("no cgroup hierarchy with the cpu controller is mounted (looked in /proc/self/mountinfo)")
}

impl CpuHierarchy {
    /// Finds the cpu controller's hierarchy on this host.
    pub fn detect() -> anyhow::Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let mut h = find_cpu_hierarchy(&mountinfo, |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })?;
        crate::cgroupns::place(&mut h);
        Ok(h)
    }

    /// The host path of a cgroup path read from `/proc/<pid>/cgroup`
    /// (relative to this process's cgroup namespace).
    pub fn host_path(&self, shown: &str) -> String {
        crate::cgroupns::to_host(&self.ns_root, shown)
    }

    /// The directory of a cgroup given by its hierarchy path (`/a/b`).
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let relative = path
            .strip_prefix(self.mount_root.trim_end_matches('/'))
            .unwrap_or(path)
            .trim_start_matches('/');
        self.mount.join(relative)
    }

    /// The id the kernel uses for a cgroup given by its hierarchy path.
    pub fn id_of(&self, path: &str) -> anyhow::Result<u64> {
        let dir = self.dir_of(path);
        let meta = std::fs::metadata(&dir).with_context(|| {
            format!(
                "no cgroup {path} in the cpu hierarchy (looked for {})",
                dir.display()
            )
        })?;
        if !meta.is_dir() {
            bail!("{} is not a cgroup directory", dir.display());
        }
        Ok(meta.ino())
    }
}

/// Maps cgroup ids to hierarchy paths, rescanning when it meets a new id.
#[derive(Debug)]
pub struct Resolver {
    hierarchy: CpuHierarchy,
    /// The cgroups of the last complete scan.
    paths: HashMap<u64, String>,
    /// Whether the last walk was complete: a walk that failed leaves `paths`
    /// as they were, and says nothing about which cgroups are gone.
    last_walk_complete: bool,
    /// Cgroups seen in an earlier scan but gone since: still named in reports
    /// until [`Self::forget`].
    retired: HashMap<u64, String>,
}

impl Resolver {
    /// A resolver of `hierarchy`, whose walk is where the scans start (a
    /// directory tree in tests).
    pub fn new(hierarchy: CpuHierarchy) -> Self {
        let mut r = Self {
            hierarchy,
            paths: HashMap::new(),
            last_walk_complete: false,
            retired: HashMap::new(),
        };
        // A first walk that fails leaves no paths, and the next one fills them.
        let _ = r.rescan();
        r
    }

    pub fn hierarchy(&self) -> &CpuHierarchy {
        &self.hierarchy
    }

    /// Walks the whole hierarchy again (cgroups come and go). Cgroups no longer
    /// there are retired, not forgotten. A walk that cannot be completed (its
    /// root unreadable: unmounted for a moment, say) changes nothing: taken
    /// as complete, it would make every cgroup look gone.
    pub fn rescan(&mut self) -> anyhow::Result<()> {
        let prefix = self.hierarchy.mount_root.trim_end_matches('/').to_owned();
        let mut fresh = HashMap::with_capacity(self.paths.len());
        let walked = scan_tree(&self.hierarchy.mount, &prefix, &mut fresh, true);
        self.last_walk_complete = walked.is_ok();
        walked.with_context(|| {
            format!(
                "cannot walk the cgroup hierarchy at {}",
                self.hierarchy.mount.display()
            )
        })?;
        for (id, path) in self.paths.drain() {
            if !fresh.contains_key(&id) {
                self.retired.insert(id, path);
            }
        }
        self.paths = fresh;
        Ok(())
    }

    /// Whether the last walk of the hierarchy was complete, so that a cgroup
    /// it lacked is gone.
    pub fn last_walk_complete(&self) -> bool {
        self.last_walk_complete
    }

    /// The path of a cgroup id, rescanning once if it is not known yet.
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if !self.paths.contains_key(&id) && !self.retired.contains_key(&id) {
            // A failed walk keeps what is known: the id stays unresolved.
            let _ = self.rescan();
        }
        self.paths
            .get(&id)
            .or_else(|| self.retired.get(&id))
            .cloned()
    }

    /// Whether the last scan found the cgroup.
    pub fn is_present(&self, id: u64) -> bool {
        self.paths.contains_key(&id)
    }

    /// Keeps the retired cgroups `keep` wants, drops the others' paths.
    pub fn retain_retired(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.retired.retain(|&id, _| keep(id));
    }

    /// Drops a retired cgroup's path.
    pub fn forget(&mut self, id: u64) {
        self.retired.remove(&id);
    }

    /// Every cgroup path known.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.paths.values()
    }
}

/// Adds every cgroup directory under `dir` to `out` (inode -> path). Files are
/// skipped, and so is a cgroup removed during the walk (not found). Any other
/// error, or the root missing, makes the walk incomplete.
fn scan_tree(
    dir: &Path,
    path: &str,
    out: &mut HashMap<u64, String>,
    root: bool,
) -> std::io::Result<()> {
    let gone_meanwhile = |e: std::io::Error| {
        if !root && e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    };
    if root {
        // Below the root, the directory entry's inode number is the cgroup
        // id: no stat per cgroup.
        let meta = std::fs::symlink_metadata(dir)?;
        let shown = if path.is_empty() { "/" } else { path };
        out.insert(meta.ino(), shown.to_owned());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return gone_meanwhile(e),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return gone_meanwhile(e),
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let name = entry.file_name();
            let child = format!("{path}/{}", name.to_string_lossy());
            out.insert(entry.ino(), child.clone());
            scan_tree(&entry.path(), &child, out, false)?;
        }
    }
    Ok(())
}

/// Whether `path` is `selector` or below it (`/a` selects `/a` and `/a/b`, not `/ab`).
pub fn is_within(path: &str, selector: &str) -> bool {
    let selector = selector.trim_end_matches('/');
    if selector.is_empty() {
        return true;
    }
    path == selector
        || path
            .strip_prefix(selector)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1_COMBINED: &str = "\
25 18 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid shared:12 - cgroup cgroup rw,cpuset
";

    const V2: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const CONTAINER_V2: &str = "\
1302 1290 0:26 /kubepods/pod1/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
";

    fn no_controllers(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn hybrid_host() {
        let h = find_cpu_hierarchy(HYBRID, no_controllers).unwrap();
        assert_eq!(h.mode, Mode::Hybrid);
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(h.mount_root, "/");
    }

    #[test]
    fn v1_host_with_combined_controllers() {
        let h = find_cpu_hierarchy(V1_COMBINED, no_controllers).unwrap();
        assert_eq!(h.mode, Mode::V1);
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn v2_host() {
        let h = find_cpu_hierarchy(V2, |_| Some("cpuset cpu io memory pids\n".into())).unwrap();
        assert_eq!(h.mode, Mode::V2);
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup"));
        let err = find_cpu_hierarchy(V2, |_| Some("memory pids".into())).unwrap_err();
        assert!(
            err.to_string().contains("cpu controller is not enabled"),
            "{err}"
        );
    }

    #[test]
    fn container_mount_keeps_its_hierarchy_path() {
        let h = find_cpu_hierarchy(CONTAINER_V2, |_| Some("cpu".into())).unwrap();
        assert_eq!(h.mount_root, "/kubepods/pod1/abc");
        assert_eq!(
            h.dir_of("/kubepods/pod1/abc/x"),
            Path::new("/sys/fs/cgroup/x")
        );
    }

    #[test]
    fn nothing_mounted() {
        let err = find_cpu_hierarchy("", no_controllers).unwrap_err();
        assert!(err.to_string().contains("no cgroup hierarchy"), "{err}");
    }

    #[test]
    fn escapes_in_mount_points() {
        let m = parse_mountinfo("1 2 0:1 / /mnt/with\\040space rw - cgroup cgroup rw,cpu\n");
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn resolves_ids_of_a_directory_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["a", "a/b", "a/b/c", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("a/cpu.stat"), "usage_usec 0\n").unwrap();
        let hierarchy = CpuHierarchy {
            mode: Mode::V2,
            mount: root.to_path_buf(),
            mount_root: "/".into(),
            ns_root: "/".into(),
        };
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let mut r = Resolver::new(hierarchy.clone());
        assert_eq!(r.resolve(ino("")).as_deref(), Some("/"));
        assert_eq!(r.resolve(ino("a/b/c")).as_deref(), Some("/a/b/c"));
        assert_eq!(r.resolve(ino("other")).as_deref(), Some("/other"));
        // Files are not cgroups.
        assert_eq!(r.resolve(ino("a/cpu.stat")), None);
        // A cgroup created after the first scan is found by the rescan.
        std::fs::create_dir(root.join("late")).unwrap();
        assert_eq!(r.resolve(ino("late")).as_deref(), Some("/late"));
        // A removed one keeps its name until forgotten.
        let other = ino("other");
        std::fs::remove_dir(root.join("other")).unwrap();
        r.rescan().unwrap();
        assert!(!r.is_present(other));
        assert_eq!(r.resolve(other).as_deref(), Some("/other"));
        r.forget(other);
        assert_eq!(r.resolve(other), None);
        assert_eq!(hierarchy.id_of("/a/b").unwrap(), ino("a/b"));
        assert!(hierarchy.id_of("/missing").is_err());
    }

    /// A walk that cannot read the hierarchy's root (unmounted for a moment,
    /// say) keeps the previous scan: its cgroups must not look gone.
    #[test]
    fn a_failed_rescan_keeps_the_previous_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cpu");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let (a, b) = (ino("a"), ino("a/b"));
        let mut r = Resolver::new(CpuHierarchy {
            mode: Mode::V2,
            mount: root.clone(),
            mount_root: "/".into(),
            ns_root: "/".into(),
        });
        assert!(r.is_present(a) && r.is_present(b));
        let away = tmp.path().join("away");
        std::fs::rename(&root, &away).unwrap();
        let err = format!("{:#}", r.rescan().unwrap_err());
        assert!(err.contains("cannot walk the cgroup hierarchy"), "{err}");
        assert!(!r.last_walk_complete());
        assert!(
            r.is_present(a) && r.is_present(b),
            "the failed walk emptied the scan"
        );
        assert_eq!(r.resolve(b).as_deref(), Some("/a/b"));
        std::fs::rename(&away, &root).unwrap();
        std::fs::remove_dir(root.join("a/b")).unwrap();
        r.rescan().unwrap();
        assert!(r.last_walk_complete());
        assert!(r.is_present(a) && !r.is_present(b));
    }

    #[test]
    fn subtree_selection() {
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a/b", "/a/"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/anything", "/"));
    }
}
