//! Which cgroups are under a CFS quota, and the kernel's `cpu.stat` counters
//! of those: read at the start, re-read at every sample, shown beside the
//! traced figures.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::{
    cgroup::{Resolver, is_within},
    cpustat::{self, CpuStat, Quota},
    recording::QuotaInfo,
};

/// How long a cgroup's own quota, once read, is taken as still set: quotas
/// change rarely, and reading them all every interval is most of what a
/// refresh costs on a host with hundreds of cgroups.
const QUOTA_READ_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Quotas {
    /// The quota each cgroup under one is under, by path.
    by_path: BTreeMap<String, QuotaInfo>,
    /// The quota set on each cgroup itself, and when it was read.
    own: HashMap<String, (Option<Quota>, Instant)>,
    /// `cpu.stat` of the cgroups under a quota when the programs were
    /// attached (or when the cgroup was first seen under one).
    start_stats: BTreeMap<String, CpuStat>,
}

impl Quotas {
    /// Finds which cgroups of the last scan are under a quota (quotas change,
    /// cgroups come and go), and notes the `cpu.stat` of those seen for the
    /// first time.
    pub fn refresh(&mut self, resolver: &Resolver) {
        let hierarchy = resolver.hierarchy();
        // Rebuilt from the cgroups of this scan only: a cgroup gone leaves
        // nothing behind, however fast cgroups come and go.
        let mut old = std::mem::take(&mut self.own);
        let cache = &mut self.own;
        self.by_path = quotas_of(resolver.paths(), |path| {
            let (quota, at) = old
                .remove(path)
                .filter(|(_, at)| at.elapsed() < QUOTA_READ_EVERY)
                .unwrap_or_else(|| {
                    (
                        cpustat::read_quota(hierarchy, &hierarchy.dir_of(path)),
                        Instant::now(),
                    )
                });
            cache.insert(path.to_owned(), (quota, at));
            quota
        });
        let new: Vec<&String> = self
            .by_path
            .keys()
            .filter(|p| !self.start_stats.contains_key(*p))
            .collect();
        for path in new {
            if let Some(stat) = cpustat::read_cpu_stat(&hierarchy.dir_of(path)) {
                self.start_stats.insert(path.clone(), stat);
            }
        }
        let by_path = &self.by_path;
        self.start_stats.retain(|p, _| by_path.contains_key(p));
    }

    /// `cpu.stat` now, of every cgroup under a quota.
    pub fn read_stats(&self, resolver: &Resolver) -> BTreeMap<String, CpuStat> {
        let hierarchy = resolver.hierarchy();
        self.by_path
            .keys()
            .filter_map(|path| {
                Some((
                    path.clone(),
                    cpustat::read_cpu_stat(&hierarchy.dir_of(path))?,
                ))
            })
            .collect()
    }

    /// The quota a cgroup is under, by path.
    pub fn of(&self, path: &str) -> Option<&QuotaInfo> {
        self.by_path.get(path)
    }

    pub fn by_path(&self) -> &BTreeMap<String, QuotaInfo> {
        &self.by_path
    }

    pub fn start_stats(&self) -> &BTreeMap<String, CpuStat> {
        &self.start_stats
    }
}

/// Every cgroup of `paths` under a quota (its own or an ancestor's), with
/// that quota; `own_quota` gives the quota set on a cgroup itself.
fn quotas_of<'a>(
    paths: impl Iterator<Item = &'a String>,
    mut own_quota: impl FnMut(&str) -> Option<Quota>,
) -> BTreeMap<String, QuotaInfo> {
    let mut paths: Vec<&String> = paths.collect();
    // Parents before children, so that a child finds its ancestor's quota.
    paths.sort();
    let mut own: BTreeMap<String, Quota> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in paths {
        if let Some(q) = own_quota(path) {
            own.insert(path.clone(), q);
        }
        // The nearest quota: the deepest ancestor-or-self that has one.
        let owner = own
            .iter()
            .filter(|(p, _)| is_within(path, p))
            .max_by_key(|(p, _)| p.len());
        if let Some((owner, quota)) = owner {
            out.insert(
                path.clone(),
                QuotaInfo {
                    quota: *quota,
                    owner: owner.clone(),
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_covers_its_subtree_and_the_nearest_one_wins() {
        let q = |quota_us| Quota {
            quota_us,
            period_us: 100_000,
            burst_us: 0,
        };
        let paths: Vec<String> = ["/", "/k", "/k/a", "/k/a/x", "/k/b", "/k-b", "/sys"]
            .map(String::from)
            .to_vec();
        let mut asked = Vec::new();
        let quotas = quotas_of(paths.iter(), |p| {
            asked.push(p.to_owned());
            match p {
                "/k" => Some(q(200_000)),
                "/k/a" => Some(q(50_000)),
                _ => None,
            }
        });
        assert_eq!(
            asked.len(),
            paths.len(),
            "each cgroup's own quota asked once"
        );
        let owner = |p: &str| quotas.get(p).map(|i| (i.owner.as_str(), i.quota.quota_us));
        assert_eq!(owner("/k"), Some(("/k", 200_000)));
        assert_eq!(owner("/k/a"), Some(("/k/a", 50_000)));
        assert_eq!(
            owner("/k/a/x"),
            Some(("/k/a", 50_000)),
            "the nearest ancestor"
        );
        assert_eq!(owner("/k/b"), Some(("/k", 200_000)));
        assert_eq!(
            owner("/k-b"),
            None,
            "a sibling with a common prefix is not below /k"
        );
        assert_eq!(owner("/"), None);
        assert_eq!(owner("/sys"), None);
    }
}
