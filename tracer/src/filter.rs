//! Which cgroups to report: one filter for `record` (`--cgroup`, `--pod`,
//! `--namespace`, `--container`) and the agent's `include` / `exclude`, by
//! path prefix in the cpu controller's hierarchy or by the workload a
//! cgroup holds ([`crate::workload`]).

use std::fmt;

use crate::{cgroup::is_within, workload::Workload};

/// One way of naming cgroups. Written `/path`, `namespace:NS`,
/// `pod:NS/NAME` or `container:NAME` in the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// This cgroup and its descendants.
    Path(String),
    /// Every pod of a Kubernetes namespace, with its containers.
    Namespace(String),
    /// One pod (namespace, name), with its containers.
    Pod(String, String),
    /// Containers of this name, in any pod.
    Container(String),
}

impl Selector {
    /// Parses the written form; the error says what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = |name: &str| {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if text.starts_with('/') {
            return Ok(Self::Path(text.to_owned()));
        }
        let bad = |what: &str| {
            Err(format!(
                "{text:?}: {what}; a selector is a cgroup path starting with / (/kubepods), \
                 namespace:NS, \
                 pod:NS/NAME or container:NAME (Kubernetes names: lowercase letters, digits, \
                 '-' and '.')"
            ))
        };
        match text.split_once(':') {
            Some(("namespace", ns)) if valid(ns) => Ok(Self::Namespace(ns.to_owned())),
            Some(("container", c)) if valid(c) => Ok(Self::Container(c.to_owned())),
            Some(("pod", pod)) => match pod.split_once('/') {
                Some((ns, name)) if valid(ns) && valid(name) => {
                    Ok(Self::Pod(ns.to_owned(), name.to_owned()))
                }
                _ => bad("a pod is NAMESPACE/NAME"),
            },
            Some(("namespace" | "container", _)) => bad("not a Kubernetes name"),
            _ => bad("not a selector"),
        }
    }

    /// `--pod NAMESPACE/NAME`.
    pub fn pod(text: &str) -> Result<Self, String> {
        Self::parse(&format!("pod:{text}"))
    }

    /// `--namespace NS`.
    pub fn namespace(text: &str) -> Result<Self, String> {
        Self::parse(&format!("namespace:{text}"))
    }

    /// `--container NAME`.
    pub fn container(text: &str) -> Result<Self, String> {
        Self::parse(&format!("container:{text}"))
    }

    pub fn matches(&self, path: &str, workload: &Workload) -> bool {
        match self {
            Self::Path(prefix) => is_within(path, prefix),
            Self::Namespace(ns) => workload.in_namespace(ns),
            Self::Pod(ns, name) => workload.in_pod(ns, name),
            Self::Container(name) => workload.is_container(name),
        }
    }

    /// Whether it needs the names of pods, which may be known only later.
    pub fn needs_names(&self) -> bool {
        !matches!(self, Self::Path(_))
    }

    /// Which kind it is: selectors of one kind are alternatives, of
    /// different kinds all must hold.
    fn kind(&self) -> u8 {
        match self {
            Self::Path(_) => 0,
            Self::Namespace(_) => 1,
            Self::Pod(..) => 2,
            Self::Container(_) => 3,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{p}"),
            Self::Namespace(ns) => write!(f, "namespace:{ns}"),
            Self::Pod(ns, name) => write!(f, "pod:{ns}/{name}"),
            Self::Container(c) => write!(f, "container:{c}"),
        }
    }
}

/// Cgroups that every kind of `include` selector names (every cgroup when
/// there is none: `--namespace prod --container app` is the `app` containers
/// of `prod`, `--pod a/x --pod a/y` either pod), and that no `exclude`
/// selector names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFilter {
    pub include: Vec<Selector>,
    pub exclude: Vec<Selector>,
    /// Also these cgroups and their descendants, whatever `include` says
    /// (see [`Self::including`]).
    pub also: Vec<String>,
}

impl CgroupFilter {
    /// Only these cgroups and their descendants (`record --cgroup`).
    pub fn only(include: Vec<String>) -> Self {
        Self {
            include: include.into_iter().map(Selector::Path).collect(),
            ..Self::default()
        }
    }

    /// Whether the cgroup at `path`, holding `workload`, is reported.
    pub fn allows(&self, path: &str, workload: &Workload) -> bool {
        if self.exclude.iter().any(|s| s.matches(path, workload)) {
            return false;
        }
        if self.also.iter().any(|p| is_within(path, p)) {
            return true;
        }
        if self.include.is_empty() {
            // Only the tasks' cgroups, if some were selected.
            return self.also.is_empty();
        }
        (0..4u8).all(|kind| {
            let mut of_kind = self.include.iter().filter(|s| s.kind() == kind).peekable();
            of_kind.peek().is_none() || of_kind.any(|s| s.matches(path, workload))
        })
    }

    /// [`Self::allows`] by the path alone: what the path tells of its
    /// workload, no names.
    pub fn allows_path(&self, path: &str) -> bool {
        self.allows(path, &Workload::from_path(path))
    }

    /// Whether a decision may change once pod names are known.
    pub fn needs_names(&self) -> bool {
        self.include
            .iter()
            .chain(&self.exclude)
            .any(Selector::needs_names)
    }

    /// The path prefixes it includes: cgroups that must exist.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.include.iter().filter_map(|s| match s {
            Selector::Path(p) => Some(p.as_str()),
            _ => None,
        })
    }

    /// Also includes these cgroups (and their descendants): the cgroups of
    /// the tasks `--pid` and `--threads` selected are reported beside the ones
    /// asked for, and without other selectors they are the only ones.
    pub fn including(&self, also: impl IntoIterator<Item = String>) -> Self {
        let mut wider = self.clone();
        wider.also.extend(also);
        wider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(path: &str) -> Workload {
        Workload::from_path(path)
    }

    fn named(ns: &str, pod: &str, container: &str) -> Workload {
        let mut w = w(
            "/kubepods/burstable/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d/\
             0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        w.namespace = Some(ns.into());
        w.pod = Some(pod.into());
        w.container = Some(container.into());
        w
    }

    #[test]
    fn prefixes_select_subtrees() {
        let f = CgroupFilter {
            include: vec![Selector::Path("/k".into())],
            exclude: vec![Selector::Path("/k/skip".into())],
            also: vec![],
        };
        assert!(f.allows_path("/k") && f.allows_path("/k/a"));
        assert!(!f.allows_path("/k-b"), "a sibling with a common prefix");
        assert!(!f.allows_path("/k/skip") && !f.allows_path("/k/skip/x"));
        assert!(!f.allows_path("/system.slice"));
        assert!(CgroupFilter::default().allows_path("/anything"));
        let only = CgroupFilter::only(vec!["/a".into()]);
        assert!(only.allows_path("/a/b") && !only.allows_path("/b"));
    }

    #[test]
    fn selected_tasks_cgroups_are_included() {
        let f = CgroupFilter::only(vec!["/a".into()]).including(["/b".to_owned()]);
        assert!(f.allows_path("/a") && f.allows_path("/b/c") && !f.allows_path("/c"));
        let pid = CgroupFilter::default().including(["/b".to_owned()]);
        assert!(
            pid.allows_path("/b") && !pid.allows_path("/c"),
            "only the task's cgroup"
        );
        assert!(CgroupFilter::default().including([]).allows_path("/c"));
        let ns = CgroupFilter {
            include: vec![Selector::Namespace("prod".into())],
            ..CgroupFilter::default()
        }
        .including(["/b".to_owned()]);
        assert!(ns.allows_path("/b"), "beside a namespace");
        assert!(ns.allows("/x", &named("prod", "p", "c")));
    }

    #[test]
    fn kinds_must_all_hold_and_alternatives_of_one_kind_any() {
        let path = "/kubepods/x";
        let f = CgroupFilter {
            include: vec![
                Selector::Namespace("prod".into()),
                Selector::Container("app".into()),
                Selector::Container("sidecar".into()),
            ],
            ..CgroupFilter::default()
        };
        assert!(f.allows(path, &named("prod", "api", "app")));
        assert!(f.allows(path, &named("prod", "api", "sidecar")));
        assert!(!f.allows(path, &named("dev", "api", "app")));
        assert!(!f.allows(path, &named("prod", "api", "db")));
        assert!(!f.allows_path("/system.slice/cron.service"));
        let pods = CgroupFilter {
            include: vec![
                Selector::Pod("a".into(), "x".into()),
                Selector::Pod("a".into(), "y".into()),
            ],
            ..CgroupFilter::default()
        };
        assert!(
            pods.allows(path, &named("a", "x", "c")) && pods.allows(path, &named("a", "y", "c"))
        );
        assert!(!pods.allows(path, &named("b", "x", "c")));
        let not_system = CgroupFilter {
            exclude: vec![Selector::Namespace("kube-system".into())],
            ..CgroupFilter::default()
        };
        assert!(!not_system.allows(path, &named("kube-system", "dns", "coredns")));
        assert!(not_system.allows(path, &named("prod", "api", "app")));
        assert!(not_system.allows_path("/system.slice"));
        assert!(not_system.needs_names() && !CgroupFilter::only(vec!["/a".into()]).needs_names());
    }

    #[test]
    fn selectors_parse_and_print_back() {
        for text in [
            "/kubepods",
            "namespace:prod",
            "pod:prod/api-7f9c",
            "container:app",
        ] {
            assert_eq!(Selector::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Selector::pod("prod/api").unwrap(),
            Selector::Pod("prod".into(), "api".into())
        );
        for bad in [
            "kubepods",
            "pod:api",
            "namespace:",
            "namespace:Prod",
            "container:a_b",
            "x:y",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains("namespace:NS"), "{bad}: {e}");
        }
        assert!(Selector::namespace("a/b").is_err());
    }
}
