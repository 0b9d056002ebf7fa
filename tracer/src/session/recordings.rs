//! Turning samples into what reports show: the recording of a window
//! with its cgroups' paths, names, quotas and weights, and the timeline's
//! intervals.

use std::collections::{HashMap, HashSet};

use super::Session;
use crate::{
    assemble::{self, Context, Header, Window},
    cgroup::Resolver,
    host,
    recording::{QuotaInfo, Recording},
    sample::Sample,
    timeline::Interval,
    workload::Workload,
};

impl Session {
    /// The path of a cgroup id, as the report shows it.
    pub fn path_of(&mut self, id: u64) -> String {
        path_of(&mut self.resolver, &self.names, id)
    }

    /// Who the cgroup at `path` is: its path's workload, named from the
    /// node's pods.
    pub fn identify(&self, path: &str) -> Workload {
        self.pods.names().identify(path)
    }

    /// The quota a cgroup is under, by path.
    pub fn quota_of(&self, path: &str) -> Option<&QuotaInfo> {
        self.quotas.of(path)
    }

    /// The CPU weight of each of `paths` and what it guarantees (the root
    /// aside).
    pub fn weights_of<'a>(
        &mut self,
        paths: impl Iterator<Item = &'a String>,
    ) -> HashMap<String, crate::weight::Weight> {
        self.weights.of(&self.resolver, host::online_cpus(), paths)
    }

    /// What each cgroup `--cgroup` lets through waited from `since` to `now`
    /// (two samples of this session): one interval of the timeline.
    pub fn interval(&mut self, now: &Sample, since: &Sample) -> Interval {
        let window = now.since(since);
        let (resolver, names, filter) = (&mut self.resolver, &self.names, &self.filter);
        let pods = self.pods.names();
        Interval::from_window(
            &window,
            since.elapsed_ns,
            |id| path_of(resolver, names, id),
            |path| filter.allows(path, &pods.identify(path)),
        )
    }

    /// The recording of `now`, or of the window from `since` to `now`.
    pub fn recording(&mut self, now: &Sample, since: Option<&Sample>) -> Recording {
        // Pods started during the session have their names by now.
        self.pods.rescan();
        let window = Window::new(
            now,
            since,
            self.quotas.start_stats(),
            self.pressures.first(),
        );
        let ids: Vec<u64> = window.ids_named().collect();
        let paths: HashMap<u64, String> = ids
            .into_iter()
            .map(|id| (id, path_of(&mut self.resolver, &self.names, id)))
            .collect();
        let hierarchy = self.resolver.hierarchy();
        let header = Header {
            host: host::host_name(),
            kernel: host::kernel_release(),
            cpus: host::online_cpus(),
            cgroup_mode: hierarchy.mode,
            cpu_hierarchy: hierarchy.mount.display().to_string(),
            throttle_method: self.throttle_method.into(),
            tier: self.tier.describe(),
            state: self.store.describe().into(),
            started_unix_ns: self.started_unix_ns,
            started_monotonic_ns: self.started_ns,
            probes: self.probes.clone(),
            slice_ns: self.slice_ns,
        };
        // Every cgroup with a child: it may hold tasks beside its children's.
        let shared: HashSet<String> = self
            .resolver
            .paths()
            .filter_map(|p| p.rsplit_once('/').map(|(parent, _)| parent))
            .map(|parent| {
                if parent.is_empty() {
                    "/".to_owned()
                } else {
                    parent.to_owned()
                }
            })
            .collect();
        let selections = self.selections.describe(hierarchy);
        let weights = self.weights.of(&self.resolver, header.cpus, paths.values());
        let mut rec = assemble::recording(
            &window,
            &Context {
                header: &header,
                paths: &paths,
                quotas: self.quotas.by_path(),
                selections: &selections,
                filter: &self.filter,
                shared: &shared,
                pods: self.pods.names(),
                weights: &weights,
            },
        );
        rec.slower_ns = self.slower_ns;
        let from = since.map_or(self.start_psi, |s| s.psi);
        rec.host_psi = from.zip(now.psi).map(|(a, b)| a.until(&b));
        rec.stalls_of_selected = self.slow_selected;
        rec.stalls = self.stalls.sorted();
        rec.stalls_omitted = self.stalls.omitted;
        rec
    }
}

/// The path of a cgroup id: from the hierarchy, or, for a cgroup gone before
/// it could be resolved, the leaf name the kernel told us.
pub(super) fn path_of(resolver: &mut Resolver, names: &HashMap<u64, String>, id: u64) -> String {
    if let Some(path) = resolver.resolve(id) {
        return path;
    }
    match names.get(&id) {
        Some(name) => format!("?/{name}"),
        None => format!("?/id-{id}"),
    }
}
