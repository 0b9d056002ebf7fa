//! What a cgroup's CPU weight is worth: `cpu.shares` on v1, `cpu.weight` on
//! v2, turned into the CPUs it guarantees.
//!
//! Contention blame says who held the CPU; whether that was fair is a
//! question of weights. CFS shares a parent's CPU among its runnable
//! children in proportion to their weights, level by level from the root.
//! So when every cgroup beside this one and beside each of its ancestors
//! wants all the CPU, this one still gets
//! `online CPUs × Π (weight / sum of its siblings' weights)`: what its
//! weight guarantees. Kubernetes sets a pod's weight from its CPU request
//! in just this way, so on a node the guarantee reads like a request
//! ("500m"). An occupant that ran far beyond its guarantee took CPU that
//! others' weights did not claim in time; a victim that ran beyond its own
//! waited for CPU its weight never promised.
//!
//! Siblings that sleep leave their share to the others, so a cgroup may
//! run beyond its guarantee without anyone being wronged: the guarantee is
//! a floor, not a limit. Tasks placed directly in a non-leaf cgroup (v1
//! allows it) also compete, each as one more child, and are not counted
//! here.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::cgroup::Mode;

/// The kernel's weight of a group whose `cpu.idle` is set (`WEIGHT_IDLEPRIO`).
pub const IDLE_WEIGHT: u64 = 3;
/// `cpu.weight`'s default, which the kernel scales to `cpu.shares`' 1024.
const V2_DEFAULT: u64 = 100;
/// `cpu.shares`' default: one nice-0 task's weight.
const V1_DEFAULT: u64 = 1024;

/// A cgroup's weight, as set and as worth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    /// The file it is set in: `cpu.shares`, `cpu.weight`, or `cpu.idle`
    /// when the group runs at idle priority whatever its weight.
    pub file: String,
    /// The value written there.
    pub value: u64,
    /// The CPUs it is guaranteed when everything beside it is busy, in
    /// thousandths of a CPU (Kubernetes' millicores).
    pub guaranteed_mcpu: u64,
}

impl Weight {
    pub fn guaranteed_cpus(&self) -> f64 {
        self.guaranteed_mcpu as f64 / 1_000.0
    }

    /// `cpu.shares of 512`, as a sentence names it.
    pub fn setting(&self) -> String {
        if self.file == "cpu.idle" {
            "cpu.idle".into()
        } else {
            format!("{} of {}", self.file, self.value)
        }
    }
}

/// Running more than this many times its guarantee is "beyond" it: below,
/// the difference is within what rounding and a sleeping sibling's
/// leftovers make of a fair share.
pub const BEYOND: f64 = 1.1;

/// Whether a group that ran `ran_ns` over `duration_ns` ran beyond what
/// `w` guarantees.
pub fn beyond(ran_ns: u64, duration_ns: u64, w: &Weight) -> bool {
    duration_ns > 0 && ran_ns as f64 / duration_ns as f64 > w.guaranteed_cpus() * BEYOND
}

/// `ran 1.80 CPUs, 3.6× the 0.50 guaranteed by its cpu.shares of 512`: how
/// what a group ran over `duration_ns` compares with its weight's guarantee.
pub fn compared(ran_ns: u64, duration_ns: u64, w: &Weight) -> String {
    let ran = if duration_ns == 0 {
        0.0
    } else {
        ran_ns as f64 / duration_ns as f64
    };
    let guaranteed = w.guaranteed_cpus();
    let by = format!("guaranteed by its {}", w.setting());
    if w.guaranteed_mcpu == 0 {
        format!("ran {ran:.2} CPUs, with nothing {by}")
    } else if beyond(ran_ns, duration_ns, w) {
        format!(
            "ran {ran:.2} CPUs, {:.1}× the {guaranteed:.2} {by}",
            ran / guaranteed
        )
    } else {
        format!("ran {ran:.2} CPUs, within the {guaranteed:.2} {by}")
    }
}

/// The weight files of one cgroup, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `cpu.shares` (v1) or `cpu.weight` (v2).
    pub value: u64,
    /// `cpu.idle` is 1 (5.15+).
    pub idle: bool,
}

/// The weight file of the cpu controller in `mode`.
pub fn file(mode: Mode) -> &'static str {
    match mode {
        Mode::V2 => "cpu.weight",
        Mode::V1 | Mode::Hybrid => "cpu.shares",
    }
}

impl Setting {
    /// From the contents of the weight file and of `cpu.idle` (absent
    /// before 5.15: not idle).
    pub fn parse(weight: &str, idle: Option<&str>) -> Option<Self> {
        Some(Self {
            value: weight.trim().parse().ok().filter(|&v| v > 0)?,
            idle: idle.is_some_and(|s| s.trim() == "1"),
        })
    }

    /// The cgroup's default weight, for one whose file is missing (a v2
    /// cgroup whose parent does not enable the cpu controller for it).
    pub fn default_of(mode: Mode) -> Self {
        Self {
            value: match mode {
                Mode::V2 => V2_DEFAULT,
                Mode::V1 | Mode::Hybrid => V1_DEFAULT,
            },
            idle: false,
        }
    }

    /// The weight the scheduler gives the group's entity, in `cpu.shares`
    /// units: v2's weight is scaled so that 100 is 1024
    /// (`sched_weight_from_cgroup`), and an idle group weighs 3.
    pub fn kernel_weight(&self, mode: Mode) -> u64 {
        if self.idle {
            return IDLE_WEIGHT;
        }
        match mode {
            Mode::V2 => (self.value * V1_DEFAULT + V2_DEFAULT / 2) / V2_DEFAULT,
            Mode::V1 | Mode::Hybrid => self.value,
        }
    }

    pub fn describe(&self, mode: Mode, guaranteed_mcpu: u64) -> Weight {
        Weight {
            file: if self.idle { "cpu.idle" } else { file(mode) }.into(),
            value: if self.idle { 1 } else { self.value },
            guaranteed_mcpu,
        }
    }
}

/// The parent of a cgroup path (`/` for a top-level one), none for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || !path.starts_with('/') {
        return None;
    }
    match path.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((parent, _)) => Some(parent),
        None => None,
    }
}

/// The tree of cgroups whose weights compete: every cgroup of a scan, by
/// parent.
#[derive(Debug, Default)]
pub struct Tree<'a> {
    children: HashMap<&'a str, Vec<&'a str>>,
    known: HashSet<&'a str>,
}

impl<'a> Tree<'a> {
    pub fn new(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut known = HashSet::new();
        for path in paths {
            if known.insert(path)
                && let Some(parent) = parent(path)
            {
                children.entry(parent).or_default().push(path);
            }
        }
        Self { children, known }
    }

    pub fn children(&self, path: &str) -> &[&'a str] {
        self.children.get(path).map_or(&[], Vec::as_slice)
    }

    /// What `path`'s weight guarantees on `cpus` CPUs, in thousandths of a
    /// CPU, with `weight_of` giving each cgroup's kernel weight. Levels above
    /// the tree's top (a hierarchy seen from inside a cgroup namespace) count
    /// as having no siblings. None for a path outside the tree.
    pub fn guaranteed_mcpu(
        &self,
        path: &str,
        cpus: usize,
        mut weight_of: impl FnMut(&str) -> u64,
    ) -> Option<u64> {
        if !self.known.contains(path) {
            return None;
        }
        let mut share = cpus as f64;
        let mut node = path;
        // Up to the root, or to the top of the scanned tree: above it,
        // nothing known competes.
        while let Some(parent) = parent(node).filter(|p| self.known.contains(p)) {
            let siblings = self.children(parent);
            let total: u64 = siblings.iter().map(|s| weight_of(s)).sum();
            if total == 0 {
                return None;
            }
            share *= weight_of(node) as f64 / total as f64;
            node = parent;
        }
        Some((share * 1_000.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_scale_as_the_kernel_does() {
        let v1 = Setting::parse("512\n", Some("0\n")).unwrap();
        assert_eq!(v1.kernel_weight(Mode::Hybrid), 512);
        // v2: 100 is 1024; Kubernetes' 500m becomes weight 20, i.e. 205.
        let v2 = Setting::parse("100\n", None).unwrap();
        assert_eq!(v2.kernel_weight(Mode::V2), 1024);
        assert_eq!(
            Setting::parse("20", None).unwrap().kernel_weight(Mode::V2),
            205
        );
        // cpu.idle overrides any weight.
        let idle = Setting::parse("10000", Some("1")).unwrap();
        assert_eq!(idle.kernel_weight(Mode::V2), IDLE_WEIGHT);
        assert_eq!(idle.describe(Mode::V2, 7).setting(), "cpu.idle");
        assert_eq!(v1.describe(Mode::V1, 500).setting(), "cpu.shares of 512");
        for bad in ["", "max", "-1", "0", "1e3"] {
            assert_eq!(Setting::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn runs_compare_with_guarantees() {
        let w = |mcpu| Weight {
            file: "cpu.shares".into(),
            value: 512,
            guaranteed_mcpu: mcpu,
        };
        let sec = 1_000_000_000;
        assert_eq!(
            compared(18 * sec / 10, sec, &w(500)),
            "ran 1.80 CPUs, 3.6× the 0.50 guaranteed by its cpu.shares of 512"
        );
        assert_eq!(
            compared(sec / 2, sec, &w(500)),
            "ran 0.50 CPUs, within the 0.50 guaranteed by its cpu.shares of 512"
        );
        assert_eq!(
            compared(sec, sec, &w(0)),
            "ran 1.00 CPUs, with nothing guaranteed by its cpu.shares of 512"
        );
        assert_eq!(
            compared(sec, 0, &w(500)),
            "ran 0.00 CPUs, within the 0.50 guaranteed by its cpu.shares of 512"
        );
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b.slice"), Some("/a"));
        assert_eq!(parent("?/gone"), None);
    }

    #[test]
    fn a_guarantee_is_the_product_of_shares_down_the_tree() {
        // A node of 8 CPUs: kubepods holds most of the weight, beside two
        // system slices; a 500m pod and a 1.5-CPU pod under burstable.
        let paths = [
            "/",
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods/burstable/poda",
            "/kubepods/burstable/podb",
            "/kubepods/besteffort",
            "/system.slice",
            "/user.slice",
        ];
        let weights: HashMap<&str, u64> = [
            ("/kubepods", 6144),
            ("/kubepods/burstable", 2048),
            ("/kubepods/burstable/poda", 512),
            ("/kubepods/burstable/podb", 1536),
            ("/kubepods/besteffort", 2),
            ("/system.slice", 1024),
            ("/user.slice", 1024),
        ]
        .into();
        let tree = Tree::new(paths);
        let g = |p| tree.guaranteed_mcpu(p, 8, |s| weights[s]);
        // kubepods: 8 × 6144 / 8192 = 6 CPUs; burstable: 6 × 2048 / 2050.
        assert_eq!(g("/kubepods"), Some(6_000));
        assert_eq!(g("/kubepods/burstable"), Some(5_994));
        // Siblings split their parent's guarantee in their weights' ratio.
        let (a, b) = (
            g("/kubepods/burstable/poda").unwrap(),
            g("/kubepods/burstable/podb").unwrap(),
        );
        assert_eq!(a, 1_499);
        assert_eq!(b, 4_496);
        assert!((a + b).abs_diff(5_994) <= 1);
        // The root is guaranteed every CPU; a path outside the tree nothing.
        assert_eq!(g("/"), Some(8_000));
        assert_eq!(g("/nowhere"), None);
        assert_eq!(tree.guaranteed_mcpu("/kubepods", 8, |_| 0), None);
    }

    #[test]
    fn a_tree_seen_from_a_namespace_starts_at_its_top() {
        // Only a subtree was scanned: its top competes with nothing known.
        let tree = Tree::new(["/ns", "/ns/a", "/ns/b"]);
        let w: HashMap<&str, u64> = [("/ns", 100), ("/ns/a", 300), ("/ns/b", 100)].into();
        assert_eq!(tree.guaranteed_mcpu("/ns/a", 4, |s| w[s]), Some(3_000));
        assert_eq!(tree.guaranteed_mcpu("/ns", 4, |s| w[s]), Some(4_000));
    }
}
