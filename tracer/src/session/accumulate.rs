//! What userspace keeps between reads of the maps, so that a long-running
//! session stays bounded however many cgroups come and go: throttle episodes
//! off the ring buffer, blame drained from the kernel's map, spill slots
//! folded into their cgroups, and the last figures of cgroups that are gone.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracer_common::maps::{
    BlameKey, BlameValue, CgroupStats, Counter, EPISODE_END_UNKNOWN, EpisodeRecord, TaggedStats,
};

use super::maps::{Kernel, nul_terminated};
use crate::{
    cgroup::Resolver,
    sample::{BlamePair, EpisodeTotals, SparseHist, Totals},
};

/// Cgroup ids missing from the hierarchy in this many consecutive rescans are
/// taken as gone (one miss may be a cgroup created after the rescan).
const GONE_AFTER: u32 = 2;

/// Processes named per victim and occupant cgroup; see
/// [`Accumulated::add_blame`].
pub const PROCESSES_PER_OCCUPANT: usize = 16;
/// The blame key of an occupant cgroup's processes beyond those named: tgid
/// 0 is the idle task, which never holds a CPU from a waiter.
pub const OTHER_PROCESSES: u32 = 0;
pub const OTHER_PROCESSES_NAME: &str = "(other processes)";

#[derive(Debug, Default)]
pub struct Accumulated {
    /// Throttle episodes from the ring buffer, per cgroup id.
    pub episodes: BTreeMap<u64, EpisodeTotals>,
    /// Contended time charged, by victim and occupant: what the kernel's map
    /// accumulated, drained into here (since the start, or the last release).
    /// The kernel's map then only holds the pairs of one drain interval,
    /// however many processes and cgroups come and go.
    pub blame: BTreeMap<BlamePair, (String, u64)>,
    /// Counts releases of `blame`; a sample carries it so that windows
    /// across a release are computed right.
    pub blame_epoch: u64,
    /// What spill slots held for cgroups that have their map entry now
    /// (folded here so that the slots are free for others), by cgroup id.
    pub spilled: HashMap<u64, Totals>,
    /// Spill slots were in use at the last read, and how many spilled events
    /// the programs had counted then.
    spill_in_use: bool,
    spill_events_seen: u64,
    /// The last figures of cgroups gone and removed from the kernel's maps,
    /// still part of every sample until [`Self::release`]: a dump covering
    /// the minutes a short-lived cgroup lived must still show it.
    pub departed: BTreeMap<u64, Totals>,
    /// Cgroup ids in the kernel's maps that the hierarchy lacked, and in how
    /// many walks in a row.
    missing: Missing,
    /// The last episode counted of each cgroup on each CPU, by its
    /// [`EpisodeRecord::episode_end`].
    episode_ends: HashMap<(u64, u32), u64>,
}

/// Cgroup ids the hierarchy lacked, and in how many complete walks in a row.
#[derive(Debug, Default)]
struct Missing(HashMap<u64, u32>);

impl Missing {
    /// Of `ids` (the cgroups the tracer holds figures of), those gone after
    /// the resolver's last walk: missing from [`GONE_AFTER`] complete walks
    /// in a row. A walk that failed says nothing about them: nothing is gone
    /// and the counts stand, so that a hierarchy unreadable for a moment
    /// does not evict every live cgroup.
    fn gone(&mut self, ids: &HashSet<u64>, resolver: &Resolver) -> Vec<u64> {
        if !resolver.last_walk_complete() {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let mut missing = HashMap::new();
        for &id in ids {
            if resolver.is_present(id) {
                continue;
            }
            let misses = self.0.get(&id).copied().unwrap_or(0) + 1;
            if misses >= GONE_AFTER {
                gone.push(id);
            } else {
                missing.insert(id, misses);
            }
        }
        self.0 = missing;
        gone.sort_unstable();
        gone
    }
}

impl Accumulated {
    pub fn add_episode(&mut self, record: &EpisodeRecord) {
        if record.episode_end != EPISODE_END_UNKNOWN {
            let last = self
                .episode_ends
                .insert((record.cgroup_id, record.cpu), record.episode_end);
            if last == Some(record.episode_end) {
                return; // a repeat the kernel's filter let through
            }
        }
        let acc = self.episodes.entry(record.cgroup_id).or_default();
        let mut hist = acc.durations.to_hist();
        hist.record(record.duration_ns);
        acc.durations = SparseHist::from_hist(&hist);
        let cpu = acc.per_cpu.entry(record.cpu).or_default();
        cpu.0 += 1;
        cpu.1 += record.duration_ns;
        *acc.throttled_by.entry(record.throttled_by).or_default() += 1;
    }

    /// Moves what the kernel's blame map accumulated into `blame`.
    pub fn drain_blame(&mut self, kernel: &mut Kernel) -> anyhow::Result<()> {
        let rows = kernel.drain_blame()?;
        self.add_blame(rows);
        Ok(())
    }

    /// Adds blame rows (drained from the map, or left in the CPUs' caches).
    ///
    /// Each victim keeps at most [`PROCESSES_PER_OCCUPANT`] processes of each
    /// occupant cgroup by name; later ones are summed as
    /// [`OTHER_PROCESSES`]. A host that starts hundreds of short-lived
    /// processes a second (a build, shells, cron) would otherwise grow this
    /// map, and every sample's copy of it, by each of them until the next
    /// release: 0.6 MB a second was seen. The cgroup's total is unchanged;
    /// only the names of the late processes are lost, and a process keeps
    /// its own row once it has one, so that windows subtract per key.
    pub fn add_blame(&mut self, rows: impl IntoIterator<Item = (BlameKey, BlameValue)>) {
        for (key, value) in rows {
            let mut pair = BlamePair {
                victim: key.victim,
                occupant_cgroup: key.occupant_cgroup,
                occupant_tgid: key.occupant_tgid,
            };
            if !self.blame.contains_key(&pair) && self.processes_of(&pair) >= PROCESSES_PER_OCCUPANT
            {
                pair.occupant_tgid = OTHER_PROCESSES;
            }
            let comm = if pair.occupant_tgid == OTHER_PROCESSES {
                OTHER_PROCESSES_NAME.to_owned()
            } else {
                nul_terminated(&value.comm)
            };
            let row = self.blame.entry(pair).or_default();
            // The name as the latest row has it: a process seen first between
            // its fork and its exec (`sh`, `bash`, `timeout`) is named by what
            // it became.
            if !comm.is_empty() && row.0 != comm {
                row.0 = comm;
            }
            row.1 += value.ns;
        }
    }

    /// Processes of `pair`'s occupant cgroup with a row of their own for
    /// `pair`'s victim.
    fn processes_of(&self, pair: &BlamePair) -> usize {
        let from = BlamePair {
            occupant_tgid: 0,
            ..*pair
        };
        let to = BlamePair {
            occupant_tgid: u32::MAX,
            ..*pair
        };
        self.blame
            .range(from..=to)
            .filter(|(p, _)| p.occupant_tgid != OTHER_PROCESSES)
            .count()
    }

    /// Events the programs have put in spill slots so far, over all CPUs.
    pub fn spilled_events(kernel: &Kernel) -> anyhow::Result<u64> {
        Ok(kernel.counters()?[Counter::CgroupSpilled as usize])
    }

    /// Folds the spill slots of cgroups whose map entry now exists into
    /// `spilled` and frees them (the programs no longer write a slot once the
    /// entry exists), and returns the slots still in use, by index. `events`
    /// is [`Self::spilled_events`]: the slots are read only while there may
    /// be some in use, as a read copies every slot of every CPU.
    pub fn fold_spill(
        &mut self,
        kernel: &mut Kernel,
        events: u64,
    ) -> anyhow::Result<Vec<(u32, TaggedStats)>> {
        if events == self.spill_events_seen && !self.spill_in_use {
            return Ok(Vec::new());
        }
        self.spill_events_seen = events;
        let with_entry = kernel.cgroup_ids()?;
        let (folded, in_use): (Vec<_>, Vec<_>) = kernel
            .spill_slots()?
            .into_iter()
            .partition(|(_, slot)| with_entry.contains(&slot.cgroup_id));
        for (_, slot) in &folded {
            self.spilled
                .entry(slot.cgroup_id)
                .or_default()
                .add(&Totals::from_stats(&slot.stats));
        }
        kernel.free_spill_slots(folded.into_iter().map(|(i, _)| i))?;
        self.spill_in_use = !in_use.is_empty();
        Ok(in_use)
    }

    /// Moves the cgroups missing from the last walks out of the kernel's
    /// per-cgroup map into `departed`; returns their ids. After a walk that
    /// failed, none.
    pub fn evict_gone(
        &mut self,
        kernel: &mut Kernel,
        resolver: &mut Resolver,
    ) -> anyhow::Result<Vec<u64>> {
        let slots = self.fold_spill(kernel, Self::spilled_events(kernel)?)?;
        let mut ids: HashSet<u64> = kernel.cgroup_ids()?;
        ids.extend(slots.iter().map(|(_, slot)| slot.cgroup_id));
        ids.extend(self.spilled.keys());
        let gone = self.missing.gone(&ids, resolver);
        for &id in &gone {
            let mut total: CgroupStats = kernel.take_cgroup(id)?;
            for (_, slot) in slots.iter().filter(|(_, s)| s.cgroup_id == id) {
                total.merge(&slot.stats);
            }
            let departed = self.departed.entry(id).or_default();
            departed.add(&Totals::from_stats(&total));
            if let Some(folded) = self.spilled.remove(&id) {
                departed.add(&folded);
            }
        }
        // A gone cgroup's slots are free for others: nothing writes them any more.
        kernel.free_spill_slots(
            slots
                .iter()
                .filter(|(_, s)| gone.binary_search(&s.cgroup_id).is_ok())
                .map(|(i, _)| *i),
        )?;
        // Paths of cgroups that were never in the map (no task ran there) are
        // not needed; those of cgroups set aside are, until released.
        let departed = &self.departed;
        resolver.retain_retired(|id| ids.contains(&id) || departed.contains_key(&id));
        Ok(gone)
    }

    /// Adds what userspace holds for each cgroup (spill slots still in use,
    /// slots folded earlier, cgroups set aside) to the kernel map's figures.
    pub fn complete(&self, cgroups: &mut BTreeMap<u64, Totals>, slots: &[(u32, TaggedStats)]) {
        for (_, slot) in slots {
            cgroups
                .entry(slot.cgroup_id)
                .or_default()
                .add(&Totals::from_stats(&slot.stats));
        }
        for (id, totals) in &self.spilled {
            cgroups.entry(*id).or_default().add(totals);
        }
        for (id, totals) in &self.departed {
            // Normally absent from the map; present if a dying task ran again
            // after its cgroup was evicted, and then the two add up.
            cgroups.entry(*id).or_default().add(totals);
        }
    }

    /// Forgets the cgroups set aside and the blame accumulated so far; returns
    /// the ids forgotten. Samples from now on start their blame afresh (a new
    /// epoch, which `Sample::since` knows to handle).
    pub fn release(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = std::mem::take(&mut self.departed).into_keys().collect();
        for id in &ids {
            self.episodes.remove(id);
        }
        let departed: HashSet<u64> = ids.iter().copied().collect();
        self.episode_ends
            .retain(|(cgroup, _), _| !departed.contains(cgroup));
        self.blame.clear();
        self.blame_epoch += 1;
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::cgroup::{CpuHierarchy, Mode};

    /// Cgroups missing from two complete walks in a row are gone; walks that
    /// fail (the hierarchy unreadable for a while) evict nothing however
    /// many there are, and do not count as misses.
    #[test]
    fn failed_walks_evict_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cpu");
        for d in ["live", "late", "doomed"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let (live, doomed) = (ino("live"), ino("doomed"));
        let mut r = Resolver::new(CpuHierarchy {
            mode: Mode::V2,
            mount: root.clone(),
            mount_root: "/".into(),
            ns_root: "/".into(),
        });
        // A cgroup created after the first walk, as the kernel's map has it.
        std::fs::create_dir(root.join("newer")).unwrap();
        let newer = ino("newer");
        let ids: HashSet<u64> = [live, doomed, newer, ino("late")].into();
        let mut missing = Missing::default();
        assert_eq!(missing.gone(&ids, &r), [0u64; 0], "newer missed once");
        std::fs::remove_dir(root.join("doomed")).unwrap();
        let away = tmp.path().join("away");
        std::fs::rename(&root, &away).unwrap();
        for _ in 0..3 {
            assert!(r.rescan().is_err());
            assert_eq!(missing.gone(&ids, &r), [0u64; 0]);
        }
        std::fs::rename(&away, &root).unwrap();
        r.rescan().unwrap();
        assert_eq!(missing.gone(&ids, &r), [0u64; 0], "doomed missed once");
        r.rescan().unwrap();
        assert_eq!(missing.gone(&ids, &r), [doomed]);
    }

    fn episode(cgroup_id: u64, cpu: u32, episode_end: u64) -> EpisodeRecord {
        EpisodeRecord {
            kind: tracer_common::maps::RECORD_EPISODE,
            cpu,
            cgroup_id,
            throttled_by: cgroup_id,
            duration_ns: 80_000_000,
            seen_at: 0,
            episode_end,
        }
    }

    /// The kernel's filter of repeated episodes may forget one (an insert it
    /// refused, an entry it evicted): a repeat is known by its end and counted
    /// once, per cgroup and CPU. Without a throttle clock every record counts.
    #[test]
    fn an_episode_sent_twice_counts_once() {
        let mut acc = Accumulated::default();
        for record in [
            episode(7, 0, 80),
            episode(7, 0, 80), // a second waiter through the same episode
            episode(7, 1, 80), // the same clock value on another CPU's cfs_rq
            episode(8, 0, 80), // and in another cgroup
            episode(7, 0, 160),
            episode(7, 0, EPISODE_END_UNKNOWN),
            episode(7, 0, EPISODE_END_UNKNOWN),
        ] {
            acc.add_episode(&record);
        }
        let counts = |id: u64| acc.episodes[&id].per_cpu.clone();
        assert_eq!(counts(7)[&0].0, 4, "80, 160 and both unknown");
        assert_eq!(counts(7)[&1].0, 1);
        assert_eq!(counts(8)[&0].0, 1);
        // A departed cgroup's ends go with its episodes.
        acc.departed.insert(7, Totals::default());
        acc.release();
        assert!(acc.episode_ends.keys().all(|(id, _)| *id == 8));
    }

    /// A process first seen before its exec (a shell that execs the job) is
    /// named by what it became, and its time keeps adding up.
    #[test]
    fn blame_names_a_process_as_it_became() {
        let mut acc = Accumulated::default();
        let key = BlameKey {
            victim: 1,
            occupant_cgroup: 2,
            occupant_tgid: 3,
            ..BlameKey::default()
        };
        let value = |comm: &str, ns| {
            let mut v = BlameValue {
                ns,
                comm: [0; tracer_common::maps::COMM_LEN],
            };
            v.comm[..comm.len()].copy_from_slice(comm.as_bytes());
            v
        };
        acc.add_blame([(key, value("bash", 10))]);
        acc.add_blame([(key, value("nightly-batch", 20)), (key, value("", 5))]);
        let row = acc.blame.values().next().unwrap();
        assert_eq!((row.0.as_str(), row.1), ("nightly-batch", 35));
    }

    /// Short-lived processes beyond the first few of an occupant cgroup are
    /// summed under one row: the map stays bounded, the total is kept, and
    /// a process with a row keeps adding to it.
    #[test]
    fn blame_names_a_bounded_number_of_processes() {
        let mut acc = Accumulated::default();
        let row = |tgid: u32, ns: u64| {
            let mut v = BlameValue {
                ns,
                comm: [0; tracer_common::maps::COMM_LEN],
            };
            v.comm[..2].copy_from_slice(b"sh");
            (
                BlameKey {
                    victim: 1,
                    occupant_cgroup: 2,
                    occupant_tgid: tgid,
                    ..BlameKey::default()
                },
                v,
            )
        };
        acc.add_blame((100..1_100).map(|tgid| row(tgid, 10)));
        // The first process again, and another occupant cgroup's.
        acc.add_blame([row(100, 5)]);
        let mut other_cgroup = row(5_000, 7);
        other_cgroup.0.occupant_cgroup = 3;
        acc.add_blame([other_cgroup]);
        assert_eq!(acc.blame.len(), PROCESSES_PER_OCCUPANT + 1 + 1);
        let total: u64 = acc.blame.values().map(|(_, ns)| ns).sum();
        assert_eq!(total, 1_000 * 10 + 5 + 7);
        let others = &acc.blame[&BlamePair {
            victim: 1,
            occupant_cgroup: 2,
            occupant_tgid: OTHER_PROCESSES,
        }];
        assert_eq!(others.0, OTHER_PROCESSES_NAME);
        assert_eq!(others.1, (1_000 - PROCESSES_PER_OCCUPANT as u64) * 10);
        assert_eq!(
            acc.blame[&BlamePair {
                victim: 1,
                occupant_cgroup: 2,
                occupant_tgid: 100,
            }]
                .1,
            15
        );
    }
}
