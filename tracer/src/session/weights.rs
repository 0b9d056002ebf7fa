//! The CPU weights of the cgroups a recording names, and what each one's
//! weight guarantees (see [`crate::weight`]).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    cgroup::{CpuHierarchy, Resolver},
    weight::{self, Setting, Tree, Weight},
};

/// How long a weight, once read, is taken as still set: weights change
/// rarely (a pod's request is fixed for its life), and a guarantee needs the
/// weights of every sibling up the tree, hundreds on a busy node.
const READ_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Weights {
    read: HashMap<String, (Setting, Instant)>,
}

impl Weights {
    /// The weight of each of `paths` that the last scan found, the root
    /// aside, with what it guarantees on `cpus` CPUs.
    pub fn of<'a>(
        &mut self,
        resolver: &Resolver,
        cpus: usize,
        paths: impl Iterator<Item = &'a String>,
    ) -> HashMap<String, Weight> {
        let hierarchy = resolver.hierarchy();
        let tree = Tree::new(resolver.paths().map(String::as_str));
        let mut out = HashMap::new();
        // The root competes with nothing: its weight guarantees nothing.
        for path in paths.filter(|p| *p != "/") {
            let mut kernel_weight =
                |p: &str| self.setting(hierarchy, p).kernel_weight(hierarchy.mode);
            if let Some(mcpu) = tree.guaranteed_mcpu(path, cpus, &mut kernel_weight) {
                let setting = self.setting(hierarchy, path);
                out.insert(path.clone(), setting.describe(hierarchy.mode, mcpu));
            }
        }
        // Cgroups gone, or not asked about for a while, are read afresh.
        self.read.retain(|_, (_, at)| at.elapsed() < READ_EVERY);
        out
    }

    fn setting(&mut self, hierarchy: &CpuHierarchy, path: &str) -> Setting {
        if let Some((s, at)) = self.read.get(path)
            && at.elapsed() < READ_EVERY
        {
            return *s;
        }
        let dir = hierarchy.dir_of(path);
        let read = |name| std::fs::read_to_string(dir.join(name)).ok();
        // A v2 cgroup without the cpu controller has no weight file: its
        // tasks count with its parent's, at the default weight.
        let s = read(weight::file(hierarchy.mode))
            .and_then(|w| Setting::parse(&w, read("cpu.idle").as_deref()))
            .unwrap_or_else(|| Setting::default_of(hierarchy.mode));
        self.read.insert(path.to_owned(), (s, Instant::now()));
        s
    }
}
