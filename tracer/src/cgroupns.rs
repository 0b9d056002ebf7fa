//! Host paths from inside a cgroup namespace.
//!
//! An agent in a pod with a private cgroup namespace (or a session under
//! `unshare --cgroup`) is shown cgroup paths relative to its namespace's
//! root: `/proc/<pid>/cgroup` says `/` for the namespace's root and `/../x`
//! for a sibling, and `/proc/self/mountinfo` gives the root of a mount made
//! outside the namespace as `/..` repeated, once per level the namespace's
//! root lies below it. A report must name cgroups by their host paths,
//! whoever runs the tracer: a dump from a pod is read beside `cpu.stat` and
//! dashboards of the whole node.
//!
//! The ids the kernel reports are the host's, and a walk of a mount of the
//! hierarchy's root (the DaemonSet mounts the host's `/sys/fs/cgroup`) names
//! them by host path. What is left is where the namespace's root lies, to
//! place the paths read from `/proc`: it is the directory, as many levels
//! below the hierarchy's root as the mount's shown root climbs, that holds
//! this process where `/proc/self/cgroup` says it is.

use std::path::Path;

use crate::cgroup::{CpuHierarchy, Mode};

/// How many levels a path shown relative to a namespace's root climbs above
/// that root, and the rest: `/../..` is `(2, "")`, `/../x` is `(1, "/x")`,
/// `/a` is `(0, "/a")`.
pub fn climb(shown: &str) -> (usize, String) {
    let mut ups = 0;
    let mut rest = String::new();
    for part in shown.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." && rest.is_empty() {
            ups += 1;
        } else {
            rest.push('/');
            rest.push_str(part);
        }
    }
    (ups, rest)
}

/// `shown`, a path relative to a namespace whose root is `ns_root` on the
/// host, as a host path: `/../x` under `/a/b` is `/a/x`. Never above `/`.
pub fn to_host(ns_root: &str, shown: &str) -> String {
    let mut parts: Vec<&str> = ns_root.split('/').filter(|p| !p.is_empty()).collect();
    for part in shown.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            parts.pop();
        } else {
            parts.push(part);
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `dir` is the root of its cgroup hierarchy: only a v1 hierarchy's
/// root has `release_agent`, and only a v2 hierarchy's root lacks
/// `cgroup.type`.
pub fn is_hierarchy_root(dir: &Path, mode: Mode) -> bool {
    match mode {
        Mode::V1 | Mode::Hybrid => dir.join("release_agent").exists(),
        Mode::V2 => dir.join("cgroup.procs").exists() && !dir.join("cgroup.type").exists(),
    }
}

/// The host path of the namespace's root: the directory `ups` levels below
/// `root` (a mount of the hierarchy's root) under which `own` (this
/// process's cgroup as the namespace shows it) holds `pid`. `None` if no
/// directory, or more than one, does.
pub fn find_root(root: &Path, ups: usize, own: &str, pid: u32) -> Option<String> {
    let mut level = vec![String::new()];
    for _ in 0..ups {
        let mut next = Vec::new();
        for rel in &level {
            let Ok(entries) = std::fs::read_dir(root.join(rel.trim_start_matches('/'))) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(format!("{rel}/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        level = next;
    }
    let holds_us = |ns_root: &str| {
        let cgroup = to_host(ns_root, own);
        let procs = root
            .join(cgroup.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::read_to_string(procs)
            .is_ok_and(|text| text.lines().any(|l| l.trim() == pid.to_string()))
    };
    let mut found = level.into_iter().filter(|d| holds_us(d));
    match (found.next(), found.next()) {
        (Some(only), None) => Some(if only.is_empty() { "/".into() } else { only }),
        _ => None,
    }
}

/// In a private cgroup namespace, takes the mount's root and the
/// namespace's root on the host's terms (see [`crate::cgroupns`]); says
/// once on stderr when that cannot be done, and the paths reported are
/// then the namespace's.
pub fn place(h: &mut CpuHierarchy) {
    let (ups, rest) = climb(&h.mount_root);
    if ups == 0 {
        // No namespace between us and the mount's root.
        return;
    }
    if !rest.is_empty() || !is_hierarchy_root(&h.mount, h.mode) {
        eprintln!(
            "warning: the cpu hierarchy at {} is a part of the host's ({}) seen from a cgroup \
             namespace: cgroups are named by paths within it, not the host's (mount the \
             host's cgroup hierarchy root there)",
            h.mount.display(),
            h.mount_root
        );
        h.mount_root = if rest.is_empty() { "/".into() } else { rest };
        return;
    }
    h.mount_root = "/".into();
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| crate::process::cpu_cgroup_in(&text, h.mode));
    match own.and_then(|own| find_root(&h.mount, ups, &own, std::process::id())) {
        Some(root) => h.ns_root = root,
        None => eprintln!(
            "warning: this process runs in a cgroup namespace whose root could not be \
             found in {}: cgroups of --pid selections are named by paths within it",
            h.mount.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_roots_climb() {
        assert_eq!(climb("/"), (0, String::new()));
        assert_eq!(climb("/../.."), (2, String::new()));
        assert_eq!(climb("/../x/y"), (1, "/x/y".into()));
        assert_eq!(climb("/kubepods/pod1"), (0, "/kubepods/pod1".into()));
        assert_eq!(
            climb("/a/../b"),
            (0, "/a/../b".into()),
            "only leading ones climb"
        );
    }

    #[test]
    fn shown_paths_become_host_paths() {
        assert_eq!(to_host("/", "/"), "/");
        assert_eq!(to_host("/a/b", "/"), "/a/b");
        assert_eq!(to_host("/a/b", "/c"), "/a/b/c");
        assert_eq!(to_host("/a/b", "/../x"), "/a/x");
        assert_eq!(to_host("/a/b", "/../../.."), "/", "never above the root");
        assert_eq!(to_host("/", "/../x"), "/x");
    }

    #[test]
    fn the_namespace_root_is_where_this_process_is() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["pods/a/ctr", "pods/b/ctr", "system.slice/x"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("release_agent"), "").unwrap();
        std::fs::write(root.join("pods/b/ctr/cgroup.procs"), "7\n42\n").unwrap();
        std::fs::write(root.join("pods/a/ctr/cgroup.procs"), "420\n").unwrap();
        assert!(is_hierarchy_root(root, Mode::V1));
        assert!(!is_hierarchy_root(&root.join("pods"), Mode::V1));
        // The namespace is rooted at pods/b; we are in its ctr.
        assert_eq!(find_root(root, 2, "/ctr", 42), Some("/pods/b".into()));
        // Rooted at pods/b/ctr, where we are.
        assert_eq!(find_root(root, 3, "/", 42), Some("/pods/b/ctr".into()));
        // Moved out of the namespace's root into a sibling after unsharing:
        // every sibling of pods/a would place it there, so none is told.
        assert_eq!(find_root(root, 2, "/../a/ctr", 420), None);
        assert_eq!(find_root(root, 2, "/ctr", 99), None, "nowhere");
        assert_eq!(find_root(root, 0, "/pods/b/ctr", 42), Some("/".into()));
    }

    #[test]
    fn a_v2_root_lacks_cgroup_type() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("child")).unwrap();
        std::fs::write(root.join("cgroup.procs"), "").unwrap();
        std::fs::write(root.join("child/cgroup.procs"), "").unwrap();
        std::fs::write(root.join("child/cgroup.type"), "domain\n").unwrap();
        assert!(is_hierarchy_root(root, Mode::V2));
        assert!(!is_hierarchy_root(&root.join("child"), Mode::V2));
    }
}
