//! The loaded programs' maps, as the session reads them: one typed lookup
//! for every map, and the ring buffer's records decoded into one enum.

use std::{
    collections::{BTreeMap, HashSet},
    time::Instant,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, RingBuf},
};
use tracer_common::blame_cache::BlameCache;
use tracer_common::maps::{
    BlameKey, BlameValue, CgroupStats, Counter, CpuState, EpisodeRecord, MAP_BLAME,
    MAP_BLAME_CACHE, MAP_CGROUP_STAMPS, MAP_CGROUP_STATS, MAP_CPU_STATE, MAP_EVENTS, MAP_HOT_STATS,
    MAP_SPILL, NewCgroupRecord, RECORD_EPISODE, RECORD_NEW_CGROUP, RECORD_STALL, StallRecord,
    Stamps, TaggedStats,
};

use super::hot::HotSlots;
use crate::{drain, programs, sample::Totals};

/// A record the programs sent through the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A cgroup got statistics for the first time: its leaf name, to show if it
    /// is gone before its path is resolved.
    NewCgroup { id: u64, name: String },
    /// A throttle episode ended.
    Episode(EpisodeRecord),
    /// A slow wait ended (`--slower`).
    Stall(Box<StallRecord>),
}

impl Record {
    /// Decodes one record; `None` for an unknown kind or a short record.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
        match kind {
            RECORD_NEW_CGROUP if bytes.len() >= size_of::<NewCgroupRecord>() => {
                // SAFETY: length checked; plain data written by the programs.
                let record: NewCgroupRecord =
                    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                Some(Self::NewCgroup {
                    id: record.cgroup_id,
                    name: nul_terminated(&record.name),
                })
            }
            RECORD_EPISODE if bytes.len() >= size_of::<EpisodeRecord>() => {
                // SAFETY: as above.
                Some(Self::Episode(unsafe {
                    std::ptr::read_unaligned(bytes.as_ptr().cast())
                }))
            }
            RECORD_STALL if bytes.len() >= size_of::<StallRecord>() => {
                // SAFETY: as above.
                Some(Self::Stall(Box::new(unsafe {
                    std::ptr::read_unaligned(bytes.as_ptr().cast())
                })))
            }
            _ => None,
        }
    }
}

/// A NUL-padded name from the kernel as text.
pub fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The loaded object: its programs, its maps and the ring buffer. Dropping it
/// detaches every program and frees the maps.
pub struct Kernel {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// Who owns the slots of [`MAP_HOT_STATS`].
    hot: HotSlots,
}

impl Kernel {
    pub fn new(mut ebpf: Ebpf) -> anyhow::Result<Self> {
        let events = RingBuf::try_from(
            ebpf.take_map(MAP_EVENTS)
                .ok_or_else(|| anyhow!("map {MAP_EVENTS} missing from the eBPF object"))?,
        )?;
        Ok(Self {
            ebpf,
            events,
            hot: HotSlots::default(),
        })
    }

    /// Map `name` as `T`: every read goes through here (and [`Self::map_mut`]),
    /// so a missing or mistyped map is one error, named.
    pub fn map<'a, T>(&'a self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
        T::try_from(map).with_context(|| format!("map {name}"))
    }

    pub fn map_mut<'a, T>(&'a mut self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a mut Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
        T::try_from(map).with_context(|| format!("map {name}"))
    }

    /// The ring buffer's records waiting now.
    pub fn records(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.extend(Record::decode(&item));
        }
        out
    }

    /// Every entry of a statistics map.
    pub fn stats<K: aya::Pod + Ord>(&self, name: &str) -> anyhow::Result<BTreeMap<K, Totals>> {
        let stats: BpfHashMap<_, K, CgroupStats> = self.map(name)?;
        stats
            .iter()
            .map(|item| {
                let (key, value) = item.with_context(|| format!("reading {name}"))?;
                Ok((key, Totals::from_stats(&value)))
            })
            .collect()
    }

    /// A cgroup's figures: its entry in the per-cgroup map plus its hot
    /// slot, if it has either.
    pub fn cgroup_stats(&self, id: u64) -> anyhow::Result<Option<Totals>> {
        let stats: BpfHashMap<_, u64, CgroupStats> = self.map(MAP_CGROUP_STATS)?;
        let entry = match stats.get(&id, 0) {
            Ok(value) => Some(value),
            Err(MapError::KeyNotFound) => None,
            Err(e) => return Err(e).context(format!("reading {MAP_CGROUP_STATS}")),
        };
        Ok(match (entry, self.hot_stats(id)?) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(Totals::from_stats(&one)),
            (Some(mut entry), Some(hot)) => {
                entry.merge(&hot);
                Some(Totals::from_stats(&entry))
            }
        })
    }

    /// Every cgroup's figures: the per-cgroup map's entries plus the hot
    /// slots.
    pub fn all_cgroup_stats(&self) -> anyhow::Result<BTreeMap<u64, Totals>> {
        let mut all = self.stats::<u64>(MAP_CGROUP_STATS)?;
        for (_, id) in self.hot.owned() {
            if let Some(hot) = self.hot_stats(id)? {
                all.entry(id).or_default().add(&Totals::from_stats(&hot));
            }
        }
        Ok(all)
    }

    /// What the hot slot of `id` holds, if it owns one.
    fn hot_stats(&self, id: u64) -> anyhow::Result<Option<CgroupStats>> {
        let Some(slot) = self.hot.slot_of(id) else {
            return Ok(None);
        };
        let hot: Array<_, TaggedStats> = self.map(MAP_HOT_STATS)?;
        let value = hot
            .get(&slot, 0)
            .with_context(|| format!("reading {MAP_HOT_STATS}"))?;
        Ok((value.cgroup_id == id).then_some(value.stats))
    }

    /// Gives free hot slots to cgroups in `ids` (whose figures just moved):
    /// from then on the programs write those there, without a hash lookup.
    pub fn claim_hot_slots(&mut self, ids: impl IntoIterator<Item = u64>) -> anyhow::Result<()> {
        for (slot, id) in self.hot.claimable(ids) {
            self.tag_hot_slot(slot, id)?;
            // Marked at once: once tagged, the slot holds figures to read.
            self.hot.taken(slot, id);
        }
        Ok(())
    }

    /// When each slot's cgroups last got figures (see [`MAP_CGROUP_STAMPS`]).
    pub fn stamps(&self) -> anyhow::Result<Box<Stamps>> {
        let stamps: Array<_, Stamps> = self.map(MAP_CGROUP_STAMPS)?;
        let value = stamps.get(&0, 0).context("reading the cgroups' stamps")?;
        Ok(Box::new(value))
    }

    /// The cgroups the per-cgroup map or a hot slot holds.
    pub fn cgroup_ids(&self) -> anyhow::Result<HashSet<u64>> {
        let stats: BpfHashMap<_, u64, CgroupStats> = self.map(MAP_CGROUP_STATS)?;
        let mut ids: HashSet<u64> = stats.keys().filter_map(Result::ok).collect();
        ids.extend(self.hot.owned().map(|(_, id)| id));
        Ok(ids)
    }

    /// Removes a cgroup from the per-cgroup map and frees its hot slot,
    /// returning what they held.
    pub fn take_cgroup(&mut self, id: u64) -> anyhow::Result<CgroupStats> {
        let mut total = {
            let mut stats: BpfHashMap<_, u64, CgroupStats> = self.map_mut(MAP_CGROUP_STATS)?;
            let total = stats.get(&id, 0).unwrap_or(CgroupStats::ZERO);
            let _ = stats.remove(&id);
            total
        };
        if let Some(hot) = self.hot_stats(id)? {
            total.merge(&hot);
        }
        if let Some(slot) = self.hot.release(id) {
            self.tag_hot_slot(slot, 0)?;
        }
        Ok(total)
    }

    /// Writes a hot slot afresh, tagged with cgroup `id` (0: free).
    fn tag_hot_slot(&mut self, slot: u32, id: u64) -> anyhow::Result<()> {
        let mut hot: Array<_, TaggedStats> = self.map_mut(MAP_HOT_STATS)?;
        let tagged = TaggedStats {
            cgroup_id: id,
            ..TaggedStats::ZERO
        };
        hot.set(slot, tagged, 0)
            .with_context(|| format!("writing {MAP_HOT_STATS}"))
    }

    /// Every CPU's state (run history, counters).
    pub fn cpu_states(&self) -> anyhow::Result<Vec<CpuState>> {
        let states: Array<_, CpuState> = self.map(MAP_CPU_STATE)?;
        states
            .iter()
            .map(|s| s.context("reading the per-CPU state"))
            .collect()
    }

    /// The event counters, summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<[u64; Counter::COUNT as usize]> {
        let mut counters = [0u64; Counter::COUNT as usize];
        for state in self.cpu_states()? {
            for (total, n) in counters.iter_mut().zip(state.counters) {
                *total += n;
            }
        }
        Ok(counters)
    }

    /// The spill slots in use, by index.
    pub fn spill_slots(&self) -> anyhow::Result<Vec<(u32, TaggedStats)>> {
        let spill: Array<_, TaggedStats> = self.map(MAP_SPILL)?;
        Ok((0..spill.len())
            .filter_map(|i| Some((i, spill.get(&i, 0).ok()?)))
            .filter(|(_, slot)| slot.cgroup_id != 0)
            .collect())
    }

    /// Frees spill slots (the programs then reuse them).
    pub fn free_spill_slots(
        &mut self,
        indices: impl IntoIterator<Item = u32>,
    ) -> anyhow::Result<()> {
        let mut spill: Array<_, TaggedStats> = self.map_mut(MAP_SPILL)?;
        for i in indices {
            let _ = spill.set(i, TaggedStats::ZERO, 0);
        }
        Ok(())
    }

    /// The blame rows the CPUs' caches still hold: read once the programs
    /// are detached, when no CPU moves them to the blame map any more.
    pub fn cached_blame(&self) -> anyhow::Result<Vec<(BlameKey, BlameValue)>> {
        let caches: PerCpuArray<_, BlameCache> = self.map(MAP_BLAME_CACHE)?;
        let per_cpu = caches.get(&0, 0).context("reading the blame caches")?;
        Ok(per_cpu
            .iter()
            .flat_map(|cache| cache.rows().map(|(k, v)| (*k, *v)))
            .collect())
    }

    /// Takes every row out of the blame map.
    pub fn drain_blame(&mut self) -> anyhow::Result<Vec<(BlameKey, BlameValue)>> {
        let map = self
            .ebpf
            .map_mut(MAP_BLAME)
            .ok_or_else(|| anyhow!("map {MAP_BLAME} missing from the eBPF object"))?;
        drain::drain::<BlameKey, BlameValue>(map).context("draining the blame map")
    }

    /// Adds `key -> value` to a selection map (tgid or tid -> selection).
    pub fn select(&mut self, map: &str, key: u32, value: u32) -> anyhow::Result<()> {
        let mut selected: BpfHashMap<_, u32, u32> = self.map_mut(map)?;
        Ok(selected.insert(key, value, 0)?)
    }

    /// Each program's cumulative run time (ns) and run count, from the kernel's
    /// BPF statistics: zero unless they are enabled.
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some((
                    name.to_owned(),
                    info.run_time().as_nanos() as u64,
                    info.run_count(),
                ))
            })
            .collect()
    }

    /// Detaches every program (the maps stay readable); returns when the first
    /// was detached.
    pub fn detach(&mut self) -> Instant {
        programs::detach_all(&mut self.ebpf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading a plain-data value's bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn records_decode_by_kind_and_length() {
        let mut name = [0u8; tracer_common::maps::CGROUP_NAME_LEN];
        name[..7].copy_from_slice(b"cron.sv");
        let new = NewCgroupRecord {
            kind: RECORD_NEW_CGROUP,
            _pad: 0,
            cgroup_id: 42,
            name,
        };
        assert_eq!(
            Record::decode(&bytes(&new)),
            Some(Record::NewCgroup {
                id: 42,
                name: "cron.sv".into()
            })
        );
        let episode = EpisodeRecord {
            kind: RECORD_EPISODE,
            cpu: 1,
            cgroup_id: 7,
            throttled_by: 6,
            duration_ns: 80_000_000,
            seen_at: 123,
            episode_end: 160_000_000,
        };
        assert_eq!(
            Record::decode(&bytes(&episode)),
            Some(Record::Episode(episode))
        );
        let short = bytes(&episode);
        assert_eq!(Record::decode(&short[..short.len() - 1]), None, "truncated");
        assert_eq!(
            Record::decode(&[9, 0, 0, 0, 0, 0, 0, 0]),
            None,
            "unknown kind"
        );
        assert_eq!(Record::decode(&[1, 0]), None, "no kind");
    }

    #[test]
    fn names_end_at_the_first_nul() {
        assert_eq!(nul_terminated(b"kworker/0:1\0\0junk"), "kworker/0:1");
        assert_eq!(nul_terminated(b"full"), "full");
    }
}
