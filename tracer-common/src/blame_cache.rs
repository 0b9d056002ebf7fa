//! Each CPU's small cache of blame rows, in front of the shared blame map.
//!
//! A wait's contended time is charged to every run it spans, for each of its
//! victims: on a busy CPU that is one or more rows per context switch, and a
//! row of the shared hash map costs a hash of its 24-byte key and a walk of a
//! cold bucket each time. The same few (victim, occupant) pairs recur on a CPU
//! (the services and hogs that share it), so the CPU adds to its own copy of
//! a row, in a slot chosen by the key, and moves it to the shared map only
//! when another pair needs the slot, or with all the others at the CPU's
//! first context switch after the oldest is [`BLAME_CACHE_AGE_NS`] old or as
//! it goes idle. Userspace adds what the caches still hold once the programs
//! are detached, so every nanosecond is counted once; while they run, a row
//! reaches userspace at most that age late, on any CPU that switches.

use crate::maps::{BlameKey, BlameValue, COMM_LEN};

/// Rows a CPU caches (a power of two): room for the pairs of a handful of
/// busy cgroups sharing a CPU (3 KiB per CPU).
pub const BLAME_CACHE_SLOTS: usize = 64;
/// When the oldest cached row is this old (ns), the CPU's next context switch
/// moves every row to the shared map: 67 ms, far below the agent's and
/// `record`'s blame drains (1 s).
pub const BLAME_CACHE_AGE_NS: u64 = 1 << 26;

/// One cached row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedBlame {
    pub key: BlameKey,
    /// `value.ns == 0`: the slot is free.
    pub value: BlameValue,
}

/// A CPU's cached rows (a per-CPU array of one).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlameCache {
    /// When the oldest row still cached was added (0: none is).
    pub since: u64,
    pub slots: [CachedBlame; BLAME_CACHE_SLOTS],
}

impl Default for BlameCache {
    fn default() -> Self {
        Self {
            since: 0,
            slots: [CachedBlame::default(); BLAME_CACHE_SLOTS],
        }
    }
}

/// The slot of `key`: a multiplicative hash of all three fields, so that the
/// rows of one victim (one per occupant) and of one occupant (one per victim)
/// spread over the slots.
#[inline(always)]
pub fn slot_of(key: &BlameKey) -> usize {
    let mixed = key.victim
        ^ key.occupant_cgroup.rotate_left(23)
        ^ (u64::from(key.occupant_tgid)).rotate_left(45);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize & (BLAME_CACHE_SLOTS - 1)
}

impl BlameCache {
    /// Adds `ns` of blame to `key` (whose occupant is named `comm`) at `now`.
    /// `put` receives the row that `key` displaces, if any, for the shared
    /// map.
    #[inline(always)]
    pub fn add(
        &mut self,
        key: &BlameKey,
        comm: &[u8; COMM_LEN],
        ns: u64,
        now: u64,
        mut put: impl FnMut(&BlameKey, &BlameValue),
    ) {
        let Some(slot) = self.slots.get_mut(slot_of(key)) else {
            put(key, &BlameValue { ns, comm: *comm });
            return;
        };
        if slot.value.ns != 0 && slot.key != *key {
            put(&slot.key, &slot.value);
            slot.value.ns = 0;
        }
        if slot.value.ns == 0 {
            slot.key = *key;
            slot.value.comm = *comm;
        }
        slot.value.ns = slot.value.ns.wrapping_add(ns);
        if self.since == 0 {
            self.since = now;
        }
    }

    /// Whether the cache should be flushed at `now`: it holds a row, and the
    /// CPU goes `idle` or the oldest row is [`BLAME_CACHE_AGE_NS`] old.
    #[inline(always)]
    pub fn due(&self, now: u64, idle: bool) -> bool {
        self.since != 0 && (idle || now.saturating_sub(self.since) >= BLAME_CACHE_AGE_NS)
    }

    /// Moves every cached row to `put`.
    #[inline(always)]
    pub fn flush(&mut self, mut put: impl FnMut(&BlameKey, &BlameValue)) {
        for slot in self.slots.iter_mut() {
            if slot.value.ns != 0 {
                put(&slot.key, &slot.value);
                slot.value.ns = 0;
            }
        }
        self.since = 0;
    }

    /// The rows still cached (read by userspace once the programs are gone).
    pub fn rows(&self) -> impl Iterator<Item = (&BlameKey, &BlameValue)> {
        self.slots
            .iter()
            .filter(|s| s.value.ns != 0)
            .map(|s| (&s.key, &s.value))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec::Vec};

    use super::*;

    fn key(victim: u64, occupant: u64, tgid: u32) -> BlameKey {
        BlameKey {
            victim,
            occupant_cgroup: occupant,
            occupant_tgid: tgid,
            _pad: 0,
        }
    }

    /// Totals per key: what reached the shared map plus what is cached.
    fn totals(cache: &BlameCache, shared: &[(BlameKey, u64)]) -> BTreeMap<(u64, u64, u32), u64> {
        let mut out = BTreeMap::new();
        let rows = shared
            .iter()
            .map(|(k, ns)| (*k, *ns))
            .chain(cache.rows().map(|(k, v)| (*k, v.ns)));
        for (k, ns) in rows {
            *out.entry((k.victim, k.occupant_cgroup, k.occupant_tgid))
                .or_default() += ns;
        }
        out
    }

    #[test]
    fn a_recurring_pair_stays_in_its_slot_until_the_cache_is_due() {
        let mut cache = BlameCache::default();
        let mut shared = Vec::new();
        let k = key(1, 2, 3);
        assert!(!cache.due(1_000, true), "nothing to flush");
        for i in 0..100 {
            cache.add(
                &k,
                b"hog\0\0\0\0\0\0\0\0\0\0\0\0\0",
                10,
                1_000 + i,
                |k, v| shared.push((*k, v.ns)),
            );
        }
        assert!(shared.is_empty(), "{shared:?}");
        assert_eq!(cache.rows().count(), 1);
        assert!(!cache.due(1_000 + BLAME_CACHE_AGE_NS - 1, false));
        assert!(cache.due(1_000 + BLAME_CACHE_AGE_NS, false), "old");
        assert!(cache.due(1_001, true), "going idle");
        cache.flush(|k, v| shared.push((*k, v.ns)));
        assert_eq!(shared, [(k, 1_000)]);
        assert_eq!(cache.rows().count(), 0);
        assert!(!cache.due(u64::MAX, true));
        // The age counts from the oldest row added after the flush.
        cache.add(&k, &[0; COMM_LEN], 5, 9_000, |_, _| {});
        assert!(!cache.due(9_000 + BLAME_CACHE_AGE_NS - 1, false));
    }

    #[test]
    fn a_pair_that_needs_a_taken_slot_displaces_its_row_and_nothing_is_lost() {
        let mut cache = BlameCache::default();
        let mut shared = Vec::new();
        // Many pairs over few slots: displacements are certain.
        let keys: Vec<BlameKey> = (0..64).map(|i| key(i % 5, 100 + i, i as u32)).collect();
        let mut expected = BTreeMap::new();
        for round in 0..10u64 {
            for (i, k) in keys.iter().enumerate() {
                let ns = 1 + i as u64 + round;
                cache.add(k, &[b'x'; COMM_LEN], ns, 50 + round, |k, v| {
                    shared.push((*k, v.ns))
                });
                *expected
                    .entry((k.victim, k.occupant_cgroup, k.occupant_tgid))
                    .or_insert(0) += ns;
            }
        }
        assert!(!shared.is_empty());
        assert_eq!(totals(&cache, &shared), expected);
        // A flush empties the cache into the shared map, losing nothing.
        cache.flush(|k, v| shared.push((*k, v.ns)));
        assert_eq!(cache.rows().count(), 0);
        assert_eq!(cache.since, 0);
        assert_eq!(totals(&cache, &shared), expected);
    }

    #[test]
    fn a_displaced_row_keeps_the_name_it_was_charged_with() {
        let mut cache = BlameCache::default();
        let a = key(1, 2, 3);
        let b = (0..1000)
            .map(|i| key(1, 2, 4 + i))
            .find(|b| slot_of(b) == slot_of(&a))
            .expect("a colliding key");
        let mut shared = Vec::new();
        cache.add(&a, b"first\0\0\0\0\0\0\0\0\0\0\0", 7, 1, |k, v| {
            shared.push((*k, *v))
        });
        cache.add(&b, b"second\0\0\0\0\0\0\0\0\0\0", 9, 2, |k, v| {
            shared.push((*k, *v))
        });
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].0, a);
        assert_eq!(shared[0].1.ns, 7);
        assert_eq!(&shared[0].1.comm[..6], b"first\0");
        let cached: Vec<_> = cache.rows().collect();
        assert_eq!(cached.len(), 1);
        assert_eq!(*cached[0].0, b);
        assert_eq!(&cached[0].1.comm[..7], b"second\0");
    }

    #[test]
    fn the_pairs_of_one_cpu_spread_over_the_slots() {
        // Four hogs in four cgroups and a two-process service in a fifth,
        // taking turns on one CPU: every thread waits behind every other
        // process, 28 pairs, which should mostly keep a slot of their own.
        let cgroups: Vec<u64> = (0..5).map(|i| 4_000 + i).collect();
        let processes: Vec<(u64, u32)> = (0..4)
            .map(|i| (cgroups[i], 7_000 + i as u32))
            .chain([(cgroups[4], 7_100), (cgroups[4], 7_101)])
            .collect();
        let mut used = [0u32; BLAME_CACHE_SLOTS];
        let mut pairs = 0;
        for &(victim, victim_tgid) in &processes {
            for &(occupant, tgid) in &processes {
                if tgid != victim_tgid {
                    used[slot_of(&key(victim, occupant, tgid))] += 1;
                    pairs += 1;
                }
            }
        }
        let shared: u32 = used.iter().filter(|&&n| n > 1).copied().sum();
        assert!(
            shared <= pairs / 3,
            "{shared} of {pairs} pairs share a slot: {used:?}"
        );
    }
}
