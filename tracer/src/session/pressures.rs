//! Each cgroup's own CPU pressure (`cpu.pressure`, cgroup v2), read beside
//! its traced waits.
//!
//! A cgroup's PSI is cumulative, so a window's stall is the difference of
//! two readings. Readings are taken when the cgroup's figures moved, not
//! for every cgroup at every sample: an idle cgroup costs nothing. A
//! reading taken late only moves stall time into a later window; the sum
//! stays the kernel's.

use std::collections::{BTreeMap, HashSet};

use crate::{
    cgroup::{Mode, Resolver},
    psi::Pressure,
};

#[derive(Debug, Default)]
pub struct Pressures {
    /// Off where the cpu controller is on v1: its cgroups have no
    /// `cpu.pressure` of their own.
    on: bool,
    /// The first reading of each cgroup: at the start for those there then,
    /// else when first seen moving. What a whole session's stall is from.
    first: BTreeMap<String, Pressure>,
    /// The latest reading of each cgroup: what samples carry.
    last: BTreeMap<String, Pressure>,
}

impl Pressures {
    /// Reads every cgroup of the first scan, where the hierarchy has PSI.
    pub fn start(resolver: &Resolver) -> Self {
        let hierarchy = resolver.hierarchy();
        let mut p = Self {
            on: hierarchy.mode == Mode::V2,
            ..Self::default()
        };
        if p.on {
            for path in resolver.paths() {
                p.read(resolver, path);
            }
            // Off when the kernel has no PSI (psi=0): nothing to read later.
            p.on = !p.last.is_empty();
        }
        p
    }

    /// Reads again the cgroups whose figures moved (by path).
    pub fn moved<'a>(&mut self, resolver: &Resolver, paths: impl Iterator<Item = &'a String>) {
        if self.on {
            for path in paths {
                self.read(resolver, path);
            }
        }
    }

    fn read(&mut self, resolver: &Resolver, path: &str) {
        let dir = resolver.hierarchy().dir_of(path);
        let Some(p) = Pressure::of_cgroup(&dir) else {
            return;
        };
        self.first.entry(path.to_owned()).or_insert(p);
        self.last.insert(path.to_owned(), p);
    }

    /// Forgets cgroups the last scan did not find.
    pub fn retain_present(&mut self, resolver: &Resolver) {
        if self.on {
            let present: HashSet<&String> = resolver.paths().collect();
            self.first.retain(|p, _| present.contains(p));
            self.last.retain(|p, _| present.contains(p));
        }
    }

    /// Every cgroup's first reading: where a whole session's stall starts.
    pub fn first(&self) -> &BTreeMap<String, Pressure> {
        &self.first
    }

    /// Every cgroup's latest reading, for a sample.
    pub fn last(&self) -> &BTreeMap<String, Pressure> {
        &self.last
    }
}
