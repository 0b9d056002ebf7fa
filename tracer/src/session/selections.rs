//! Tasks reported on their own (`--pid`, `--threads`): resolved at the start,
//! handed to the programs' selection maps, and for `--threads` found again
//! and again by scanning `/proc`.

use std::{collections::BTreeMap, path::Path, time::Instant};

use anyhow::bail;
use tracer_common::maps::{MAP_SELECT_PROCESS, MAP_SELECT_THREAD, MAX_SELECTIONS};

use super::{THREAD_SCAN_EVERY, maps::Kernel};
use crate::{
    assemble::Selection,
    cgroup::CpuHierarchy,
    process::{self, PidKind},
    selection::{Target, ThreadScanner, pid_target},
};

pub struct Selections {
    /// By index: `--pid` values first, then `--threads` patterns.
    targets: Vec<Target>,
    /// The cgroup of each `--pid` target at the start.
    target_cgroups: Vec<Option<String>>,
    scanner: ThreadScanner,
    last_scan: Instant,
    /// Matching threads that did not fit into the kernel map, per selection.
    untraced: BTreeMap<u32, u64>,
}

impl Selections {
    /// Resolves the `--pid` values (failing on one that does not exist) and
    /// the `--threads` patterns.
    pub fn new(pids: &[u32], threads: &[String], hierarchy: &CpuHierarchy) -> anyhow::Result<Self> {
        let mut targets: Vec<Target> = pids
            .iter()
            .map(|&id| pid_target(id))
            .collect::<anyhow::Result<_>>()?;
        let target_cgroups = pids
            .iter()
            .map(|&id| process::cpu_cgroup(id, hierarchy))
            .collect();
        let first_pattern = targets.len() as u32;
        targets.extend(
            threads
                .iter()
                .map(|p| Target::Threads { pattern: p.clone() }),
        );
        if targets.len() > MAX_SELECTIONS as usize {
            bail!("at most {MAX_SELECTIONS} --pid and --threads values together are supported");
        }
        let scanner = ThreadScanner::new(
            threads
                .iter()
                .enumerate()
                .map(|(i, p)| (first_pattern + i as u32, p.clone()))
                .collect(),
        );
        Ok(Self {
            targets,
            target_cgroups,
            scanner,
            last_scan: Instant::now(),
            untraced: BTreeMap::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Hands the `--pid` targets to the programs.
    pub fn select_pids(&self, kernel: &mut Kernel) -> anyhow::Result<()> {
        for (index, target) in self.targets.iter().enumerate() {
            if let Target::Pid { id, kind, .. } = target {
                let map = match kind {
                    PidKind::Process => MAP_SELECT_PROCESS,
                    PidKind::Thread => MAP_SELECT_THREAD,
                };
                kernel.select(map, *id, index as u32)?;
            }
        }
        Ok(())
    }

    /// Whether `/proc` is due for another look for new matching threads.
    pub fn scan_due(&self) -> bool {
        !self.scanner.is_empty() && self.last_scan.elapsed() >= THREAD_SCAN_EVERY
    }

    /// Adds threads that newly match a `--threads` pattern to the kernel's map.
    pub fn scan_threads(&mut self, kernel: &mut Kernel) {
        if self.scanner.is_empty() {
            return;
        }
        self.last_scan = Instant::now();
        for (tid, index) in self.scanner.scan(Path::new("/proc")) {
            if kernel.select(MAP_SELECT_THREAD, tid, index).is_err() {
                *self.untraced.entry(index).or_default() += 1;
            }
        }
    }

    /// The selections as a recording shows them, with the cgroups of the
    /// threads they matched (read from `/proc` now).
    pub fn describe(&self, hierarchy: &CpuHierarchy) -> Vec<Selection> {
        self.targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let index = index as u32;
                let matched = self
                    .scanner
                    .matched
                    .get(&index)
                    .cloned()
                    .unwrap_or_default();
                let cgroups: Vec<String> = matched
                    .iter()
                    .filter_map(|m| process::cpu_cgroup(m.tgid, hierarchy))
                    .collect();
                let cgroup = match target {
                    Target::Pid { .. } => {
                        self.target_cgroups.get(index as usize).cloned().flatten()
                    }
                    Target::Threads { .. } => matched
                        .first()
                        .and_then(|t| process::cpu_cgroup(t.tgid, hierarchy)),
                };
                Selection {
                    target: target.clone(),
                    cgroup,
                    untraced: self.untraced.get(&index).copied().unwrap_or(0),
                    matched,
                    cgroups,
                }
            })
            .collect()
    }
}
