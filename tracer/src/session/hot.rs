//! Which cgroups own a slot of the hot array (`MAP_HOT_STATS`). Userspace
//! is the only writer of the slots' tags, so this mirror is exact and the
//! array is never read to find an owner: a cgroup's figures are read from
//! its slot only if it owns one.
//!
//! A slot goes to the first cgroup whose figures move while the slot is free,
//! and is freed when that cgroup is gone. On a host with more busy cgroups
//! than slots, the others keep their hash map entry, which costs the programs
//! a hash lookup per context switch and nothing else.

use tracer_common::maps::{HOT_SLOTS, hot_slot};

#[derive(Debug)]
pub struct HotSlots {
    /// The owner of each slot; 0 for free (no cgroup id is 0).
    owners: Vec<u64>,
}

impl Default for HotSlots {
    fn default() -> Self {
        Self {
            owners: vec![0; HOT_SLOTS as usize],
        }
    }
}

impl HotSlots {
    /// The slot `id` owns, if any.
    pub fn slot_of(&self, id: u64) -> Option<u32> {
        let slot = hot_slot(id);
        (id != 0 && self.owners.get(slot as usize) == Some(&id)).then_some(slot)
    }

    /// The free slots `ids` may take, with their new owners, in the order of
    /// `ids`; the first of two cgroups sharing a slot takes it. Nothing is
    /// marked taken until [`Self::taken`].
    pub fn claimable(&self, ids: impl IntoIterator<Item = u64>) -> Vec<(u32, u64)> {
        let mut claims: Vec<(u32, u64)> = Vec::new();
        for id in ids {
            let slot = hot_slot(id);
            let free = self.owners.get(slot as usize) == Some(&0);
            if id != 0 && free && !claims.iter().any(|&(s, _)| s == slot) {
                claims.push((slot, id));
            }
        }
        claims
    }

    /// `id` now owns `slot` (its tag is in the kernel's array).
    pub fn taken(&mut self, slot: u32, id: u64) {
        if let Some(owner) = self.owners.get_mut(slot as usize) {
            *owner = id;
        }
    }

    /// Frees the slot of `id`, which is gone; returns it.
    pub fn release(&mut self, id: u64) -> Option<u32> {
        let slot = self.slot_of(id)?;
        self.owners[slot as usize] = 0;
        Some(slot)
    }

    /// Every owned slot and its owner.
    pub fn owned(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(|&(_, &id)| id != 0)
            .map(|(slot, &id)| (slot as u32, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ids that share a slot, and one that does not.
    fn sharing() -> (u64, u64, u64) {
        let a = 1000;
        let b = (1001..).find(|&b| hot_slot(b) == hot_slot(a)).unwrap();
        let c = (1001..).find(|&c| hot_slot(c) != hot_slot(a)).unwrap();
        (a, b, c)
    }

    #[test]
    fn the_first_of_two_cgroups_sharing_a_slot_takes_it() {
        let (a, b, c) = sharing();
        let mut hot = HotSlots::default();
        let claims = hot.claimable([a, b, c]);
        assert_eq!(claims, vec![(hot_slot(a), a), (hot_slot(c), c)]);
        for (slot, id) in claims {
            hot.taken(slot, id);
        }
        assert_eq!(hot.slot_of(a), Some(hot_slot(a)));
        assert_eq!(hot.slot_of(b), None);
        assert_eq!(hot.slot_of(c), Some(hot_slot(c)));
        // Taken: b cannot claim it until a is gone.
        assert!(hot.claimable([b]).is_empty());
        assert_eq!(hot.release(a), Some(hot_slot(a)));
        assert_eq!(hot.slot_of(a), None);
        assert_eq!(hot.claimable([b]), vec![(hot_slot(b), b)]);
    }

    #[test]
    fn nothing_is_owned_before_it_is_taken_and_id_zero_never_is() {
        let mut hot = HotSlots::default();
        assert!(hot.claimable([0]).is_empty());
        let _ = hot.claimable([5]);
        assert_eq!(hot.slot_of(5), None);
        assert_eq!(hot.slot_of(0), None);
        assert_eq!(hot.release(5), None);
        hot.taken(hot_slot(5), 5);
        assert_eq!(hot.owned().collect::<Vec<_>>(), vec![(hot_slot(5), 5)]);
    }

    #[test]
    fn consecutive_cgroup_ids_mostly_get_slots_of_their_own() {
        // Cgroup ids are inode numbers, often consecutive. Random slots
        // would give 63 % of the cgroups one of their own.
        let hot = HotSlots::default();
        let claims = hot.claimable(5_000..5_000 + u64::from(HOT_SLOTS));
        assert!(
            claims.len() * 4 >= HOT_SLOTS as usize * 3,
            "{} of {HOT_SLOTS}",
            claims.len()
        );
    }
}
