//! Which cgroups to report: one filter for `record --cgroup` and the agent's
//! `include` / `exclude`, by path prefix in the cpu controller's hierarchy.

use crate::cgroup::is_within;

/// Cgroups at or below an `include` prefix (every cgroup when there is none),
/// and at or below no `exclude` prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl CgroupFilter {
    /// Only these cgroups and their descendants (`record --cgroup`).
    pub fn only(include: Vec<String>) -> Self {
        Self {
            include,
            exclude: Vec::new(),
        }
    }

    pub fn allows(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| is_within(path, p)))
            && !self.exclude.iter().any(|p| is_within(path, p))
    }

    /// Also includes these cgroups (and their descendants): the cgroups of
    /// the tasks `--pid` and `--threads` selected are reported beside the ones
    /// asked for, and without `--cgroup` they are the only ones.
    pub fn including(&self, also: impl IntoIterator<Item = String>) -> Self {
        let mut wider = self.clone();
        wider.include.extend(also);
        wider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_subtrees() {
        let f = CgroupFilter {
            include: vec!["/k".into()],
            exclude: vec!["/k/skip".into()],
        };
        assert!(f.allows("/k") && f.allows("/k/a"));
        assert!(!f.allows("/k-b"), "a sibling with a common prefix");
        assert!(!f.allows("/k/skip") && !f.allows("/k/skip/x"));
        assert!(!f.allows("/system.slice"));
        assert!(CgroupFilter::default().allows("/anything"));
        let only = CgroupFilter::only(vec!["/a".into()]);
        assert!(only.allows("/a/b") && !only.allows("/b"));
    }

    #[test]
    fn selected_tasks_cgroups_are_included() {
        let f = CgroupFilter::only(vec!["/a".into()]).including(["/b".to_owned()]);
        assert!(f.allows("/a") && f.allows("/b/c") && !f.allows("/c"));
        let pid = CgroupFilter::default().including(["/b".to_owned()]);
        assert!(
            pid.allows("/b") && !pid.allows("/c"),
            "only the task's cgroup"
        );
        assert!(CgroupFilter::default().including([]).allows("/c"));
    }
}
