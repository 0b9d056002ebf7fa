//! The per-cgroup map, read by what changed. Each read looks at the stamps
//! (one 16 KiB value, see `MAP_CGROUP_STAMPS`) and reads the entries of only
//! the cgroups whose slot was stamped since the previous read; the others'
//! figures are the ones read before. An idle cgroup costs no read however
//! many there are, and a read costs the same on 2 CPUs as on 192.

use std::collections::BTreeMap;

use tracer_common::maps::{Stamps, stamp_at, stamp_slot};

use super::maps::Kernel;
use crate::sample::Totals;

#[derive(Debug, Default)]
pub struct ChangedReader {
    /// Each cgroup's figures as last read from its entry.
    totals: BTreeMap<u64, Totals>,
    /// The stamp when the previous read began; `None` before the first read,
    /// which reads every entry.
    since: Option<u32>,
    /// Cgroups announced (a new entry) since the previous read: read whatever
    /// their slot says.
    announced: Vec<u64>,
    /// Ring-buffer drops at the previous read. A drop may have been a new
    /// cgroup's announcement: the next read then reads every entry.
    drops_seen: u64,
    /// Entries read by all reads.
    pub entries_read: u64,
    /// The cgroups whose figures moved in the last read.
    moved: Vec<u64>,
}

impl ChangedReader {
    /// A cgroup got an entry (its ring-buffer record).
    pub fn announced(&mut self, id: u64) {
        self.announced.push(id);
    }

    /// A cgroup's entry was taken out of the map.
    pub fn forget(&mut self, id: u64) {
        self.totals.remove(&id);
    }

    /// Reads the entries that changed; `drops` is the ring buffer's drop
    /// count now. Returns every cgroup's figures.
    pub fn read(&mut self, kernel: &Kernel, drops: u64) -> anyhow::Result<&BTreeMap<u64, Totals>> {
        // Taken before reading: a stamp written while the read goes on is
        // newer, and the next read looks at it.
        let began = stamp_at(crate::host::monotonic_ns());
        match self.since {
            Some(since) if drops == self.drops_seen => {
                let stamps = kernel.stamps()?;
                let mut ids = changed(&stamps, since, self.totals.keys().copied());
                ids.append(&mut self.announced);
                ids.sort_unstable();
                ids.dedup();
                self.entries_read += ids.len() as u64;
                self.moved.clear();
                for id in ids {
                    match kernel.cgroup_stats(id)? {
                        Some(totals) => {
                            if self.totals.get(&id) != Some(&totals) {
                                self.moved.push(id);
                            }
                            self.totals.insert(id, totals);
                        }
                        // Taken out of the map: by an eviction, whose figures
                        // userspace keeps elsewhere.
                        None => {
                            self.totals.remove(&id);
                        }
                    }
                }
            }
            _ => {
                let totals = kernel.all_cgroup_stats()?;
                self.moved = totals
                    .iter()
                    .filter(|&(id, now)| self.totals.get(id) != Some(now))
                    .map(|(&id, _)| id)
                    .collect();
                self.totals = totals;
                self.announced.clear();
                self.entries_read += self.totals.len() as u64;
            }
        }
        self.since = Some(began);
        self.drops_seen = drops;
        Ok(&self.totals)
    }

    /// The cgroups whose figures moved in the last read.
    pub fn moved(&self) -> &[u64] {
        &self.moved
    }

    /// Cgroups with an entry, as last read.
    pub fn len(&self) -> usize {
        self.totals.len()
    }
}

/// Of `ids`, those whose slot was stamped since `since`, with one stamp of
/// slack: a program that read the clock just before a read began may store
/// its stamp after the read looked.
pub fn changed(stamps: &Stamps, since: u32, ids: impl Iterator<Item = u64>) -> Vec<u64> {
    let from = since.wrapping_sub(1);
    ids.filter(|&id| {
        let stamp = stamps[stamp_slot(id) as usize];
        // 0: never written. Compared as a difference, so that the wrap
        // after 2.3 years does not matter.
        stamp != 0 && stamp.wrapping_sub(from) < u32::MAX / 2
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use tracer_common::maps::STAMP_SLOTS;

    use super::*;

    fn stamps_with(entries: &[(u64, u32)]) -> Box<Stamps> {
        let mut stamps = Box::new([0u32; STAMP_SLOTS as usize]);
        for &(id, stamp) in entries {
            stamps[stamp_slot(id) as usize] = stamp;
        }
        stamps
    }

    #[test]
    fn only_cgroups_stamped_since_the_last_read_are_read() {
        // 10 written long ago, 11 just before the last read began (within
        // the slack), 12 after it, 13 never.
        let stamps = stamps_with(&[(10, 100), (11, 499), (12, 501)]);
        let ids = [10, 11, 12, 13];
        assert!(ids.iter().all(|&a| {
            ids.iter()
                .all(|&b| a == b || stamp_slot(a) != stamp_slot(b))
        }));
        assert_eq!(changed(&stamps, 500, ids.into_iter()), vec![11, 12]);
    }

    #[test]
    fn stamps_compare_across_the_wrap() {
        let stamps = stamps_with(&[(10, 2), (11, u32::MAX - 5)]);
        assert_eq!(
            changed(&stamps, u32::MAX - 1, [10, 11].into_iter()),
            vec![10]
        );
    }

    #[test]
    fn consecutive_cgroup_ids_spread_over_the_slots() {
        // Cgroup ids are inode numbers, often consecutive: 1,000 of them
        // should share few slots, or an idle one is read with a busy one.
        let mut used = std::collections::HashSet::new();
        for id in 5_000..6_000u64 {
            used.insert(stamp_slot(id));
        }
        assert!(used.len() > 850, "1,000 ids in {} slots", used.len());
    }

    #[test]
    fn a_stamp_lasts_16_ms() {
        assert_eq!(stamp_at(0), 0);
        assert_eq!(stamp_at((1 << 24) - 1), 0);
        assert_eq!(stamp_at(1 << 24), 1);
    }
}
