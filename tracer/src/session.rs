//! A tracing session: programs attached, maps and records read into a
//! [`Recording`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    layout::KernelLayout,
    maps::{
        BlameKey, BlameValue, CgroupStats, Counter, CpuState, DEFAULT_MAX_CGROUPS, EpisodeRecord,
        MAP_BLAME, MAP_CGROUP_STATS, MAP_CPU_STATE, MAP_EVENTS, MAP_SELECT_PROCESS,
        MAP_SELECT_THREAD, MAP_SELECTION_STATS, MAP_SPILL, MAX_SELECTIONS, NewCgroupRecord,
        RECORD_EPISODE, RECORD_NEW_CGROUP, SpillSlot, VICTIM_SELECTION,
    },
};

use crate::{
    btf::Btf,
    cgroup::{CpuHierarchy, Resolver, is_within},
    cpustat::{self, CpuStat, Quota},
    drain, layout, privilege,
    process::{self, PidKind},
    programs::{self, LoadOptions, ProbeStatus, Store, Tier, TierChoice},
    recording::{
        Blame, BlamedProcess, CgroupEntry, Episodes, Events, PidEntry, QuotaInfo, Recording,
        ThreadsEntry, WaitHistogram, WaitSplit,
    },
    sample::{BlamePair, EpisodeTotals, Sample, SparseHist, Totals},
    selection::{Target, ThreadScanner, pid_target},
    verdict::{self, Facts, QuotaFacts},
};

/// What to trace and report.
#[derive(Clone, Debug)]
pub struct Config {
    /// Report only these cgroups and their descendants (hierarchy paths). Empty: all.
    pub cgroups: Vec<String>,
    /// Also report these processes (or threads) on their own.
    pub pids: Vec<u32>,
    /// Also report threads whose name matches these globs, one group per pattern.
    pub threads: Vec<String>,
    /// Capacity of the kernel's per-cgroup map.
    pub max_cgroups: u32,
    /// Which probes to use.
    pub tier: TierChoice,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroups: Vec::new(),
            pids: Vec::new(),
            threads: Vec::new(),
            max_cgroups: DEFAULT_MAX_CGROUPS,
            tier: TierChoice::Auto,
        }
    }
}

/// How often `/proc` is scanned for threads matching `--threads`.
const THREAD_SCAN_EVERY: Duration = Duration::from_secs(1);
/// Occupant cgroups kept per victim, and processes per occupant: enough to name
/// who held the CPU, few enough that a dump of hundreds of cgroups stays small.
const BLAME_CGROUPS: usize = 8;
const BLAME_PROCESSES: usize = 3;

/// How often the kernel's blame map is drained while tracing: often enough
/// that the pairs of one interval fit in it.
const BLAME_DRAIN_EVERY: Duration = Duration::from_secs(1);

/// How often the spill slots are folded while tracing.
const SPILL_FOLD_EVERY: Duration = Duration::from_millis(200);

/// How long a cgroup's own quota, once read, is taken as still set.
const QUOTA_READ_EVERY: Duration = Duration::from_secs(30);

/// Cgroup ids missing from the hierarchy in this many consecutive rescans are
/// taken as gone (one miss may be a cgroup created after the rescan).
const GONE_AFTER: u32 = 2;

pub struct Session {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    resolver: Resolver,
    probes: Vec<ProbeStatus>,
    tier: Tier,
    store: Store,

    config: Config,
    layout: KernelLayout,
    /// Selections by index: `--pid` values first, then `--threads` patterns.
    targets: Vec<Target>,
    /// The cgroup of each `--pid` target.
    target_cgroups: Vec<Option<String>>,
    scanner: ThreadScanner,
    last_scan: Instant,
    /// Matching threads that did not fit into the kernel map, per selection.
    untraced: BTreeMap<u32, u64>,
    /// Leaf names from new-cgroup records, for cgroups gone before the end.
    names: HashMap<u64, String>,
    /// Throttle episodes from the ring buffer, per cgroup id.
    episodes: BTreeMap<u64, EpisodeTotals>,
    /// The quota each cgroup under one is under, by path.
    quotas: BTreeMap<String, QuotaInfo>,
    /// The quota set on each cgroup itself, and when it was read: quotas
    /// change rarely, and reading them all every interval is most of what a
    /// refresh costs on a host with hundreds of cgroups.
    own_quotas: HashMap<String, (Option<Quota>, Instant)>,
    /// `cpu.stat` of those cgroups when the programs were attached (or when
    /// the cgroup was first seen).
    start_stats: BTreeMap<String, CpuStat>,
    /// Cgroup ids in the kernel's maps that the hierarchy lacked, and how many
    /// rescans in a row it did.
    missing: HashMap<u64, u32>,
    /// The last figures of cgroups gone and removed from the kernel's maps,
    /// still part of every sample until [`Self::release_departed`]: a dump
    /// covering the minutes a short-lived cgroup lived must still show it.
    departed: BTreeMap<u64, Totals>,
    /// Contended time charged, by victim and occupant: what the kernel's map
    /// accumulated, drained into here (since the start, or the last release).
    /// The kernel's map then only holds the pairs of one drain interval,
    /// however many processes and cgroups come and go.
    blame: BTreeMap<BlamePair, (String, u64)>,
    /// Counts releases of `blame`; a sample carries it so that windows
    /// across a release are computed right.
    blame_epoch: u64,
    last_blame_drain: Instant,
    /// What spill slots held for cgroups that have their map entry now
    /// (folded here so that the slots are free for others), by cgroup id.
    spilled: HashMap<u64, Totals>,
    /// Spill slots were in use at the last read, and how many spilled events
    /// the programs had counted then.
    spill_in_use: bool,
    spill_events_seen: u64,
    last_spill_fold: Instant,
    /// Entries in the kernel's per-cgroup map at the last sample.
    tracked: usize,
    started: Instant,
    started_unix_ns: u64,
    /// When the programs were detached: the end of the measurement.
    detached_at: Option<Instant>,
}

impl Session {
    /// Checks privileges and the kernel, loads and attaches the programs.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        if let Some(reason) = privilege::check() {
            bail!("{reason}; run it as root, e.g. `sudo tracer record`");
        }
        if !Path::new(crate::btf::VMLINUX).exists() {
            bail!(
                "this kernel exposes no BTF ({} is missing); the tracer needs a kernel built \
                 with CONFIG_DEBUG_INFO_BTF=y (Linux 5.10 or later)",
                crate::btf::VMLINUX
            );
        }
        let btf = Btf::from_sys_fs()?;
        let layout =
            layout::from_btf(&btf).context("this kernel lacks a field the tracer reads")?;
        let hierarchy = CpuHierarchy::detect()?;
        for path in &config.cgroups {
            hierarchy.id_of(path)?;
        }
        let mut targets: Vec<Target> = config
            .pids
            .iter()
            .map(|&id| pid_target(id))
            .collect::<anyhow::Result<_>>()?;
        let target_cgroups = config
            .pids
            .iter()
            .map(|&id| process::cpu_cgroup(id, &hierarchy))
            .collect();
        let first_pattern = targets.len() as u32;
        targets.extend(
            config
                .threads
                .iter()
                .map(|p| Target::Threads { pattern: p.clone() }),
        );
        if targets.len() > MAX_SELECTIONS as usize {
            bail!("at most {MAX_SELECTIONS} --pid and --threads values together are supported");
        }
        let scanner = ThreadScanner::new(
            config
                .threads
                .iter()
                .enumerate()
                .map(|(i, p)| (first_pattern + i as u32, p.clone()))
                .collect(),
        );

        let store = Store::for_kernel(&btf);
        let programs::Loaded {
            mut ebpf,
            probes,
            layout,
            tier,
            attached_at,
        } = programs::load_and_attach(
            &LoadOptions {
                layout,
                store,
                tier: config.tier,
                max_cgroups: config.max_cgroups,
                selections: !targets.is_empty(),
            },
            &btf,
        )?;
        // From here on, an error drops `ebpf`, which detaches every program.
        let events = RingBuf::try_from(
            ebpf.take_map(MAP_EVENTS)
                .ok_or_else(|| anyhow!("map {MAP_EVENTS} missing"))?,
        )?;
        let mut session = Self {
            events,
            ebpf,
            resolver: Resolver::new(hierarchy),
            probes,
            config,
            layout,
            tier,
            store,
            targets,
            target_cgroups,
            scanner,
            last_scan: Instant::now(),
            untraced: BTreeMap::new(),
            names: HashMap::new(),
            episodes: BTreeMap::new(),
            quotas: BTreeMap::new(),
            own_quotas: HashMap::new(),
            start_stats: BTreeMap::new(),
            missing: HashMap::new(),
            departed: BTreeMap::new(),
            blame: BTreeMap::new(),
            blame_epoch: 0,
            last_blame_drain: Instant::now(),
            spilled: HashMap::new(),
            spill_in_use: false,
            spill_events_seen: 0,
            last_spill_fold: Instant::now(),
            tracked: 0,
            started: attached_at,
            started_unix_ns: SystemTime::now()
                .checked_sub(attached_at.elapsed())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            detached_at: None,
        };
        session.select_pids()?;
        session.scan_threads()?;
        session.note_quotas();
        Ok(session)
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// Which probes are in use, and why not fentry if not.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// How this kernel's throttled time is measured, as reports name it.
    pub fn throttle_method(&self) -> &'static str {
        layout::method_description(self.layout.throttle_method)
    }

    /// Each program's cumulative run time (ns) and run count, from the kernel's
    /// BPF statistics: zero unless they are enabled (`aya::sys::enable_stats`,
    /// or the sysctl `kernel.bpf_stats_enabled`).
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

    /// One of the selection maps (tgid or tid -> selection index).
    fn selection_map(&mut self, name: &str) -> anyhow::Result<BpfHashMap<&mut MapData, u32, u32>> {
        Ok(BpfHashMap::try_from(
            self.ebpf
                .map_mut(name)
                .ok_or_else(|| anyhow!("map {name} missing"))?,
        )?)
    }

    fn select_pids(&mut self) -> anyhow::Result<()> {
        let pids: Vec<(u32, PidKind, u32)> = self
            .targets
            .iter()
            .enumerate()
            .filter_map(|(index, target)| match target {
                Target::Pid { id, kind, .. } => Some((*id, *kind, index as u32)),
                Target::Threads { .. } => None,
            })
            .collect();
        for (id, kind, index) in pids {
            let map = match kind {
                PidKind::Process => MAP_SELECT_PROCESS,
                PidKind::Thread => MAP_SELECT_THREAD,
            };
            self.selection_map(map)?.insert(id, index, 0)?;
        }
        Ok(())
    }

    /// Adds threads that newly match a `--threads` pattern to the kernel's map.
    fn scan_threads(&mut self) -> anyhow::Result<()> {
        if self.scanner.is_empty() {
            return Ok(());
        }
        self.last_scan = Instant::now();
        let found = self.scanner.scan(Path::new("/proc"));
        let mut threads = self.selection_map(MAP_SELECT_THREAD)?;
        let full: Vec<u32> = found
            .into_iter()
            .filter(|&(tid, index)| threads.insert(tid, index, 0).is_err())
            .map(|(_, index)| index)
            .collect();
        for index in full {
            *self.untraced.entry(index).or_default() += 1;
        }
        Ok(())
    }

    /// Handles the ring buffer's records (new cgroups, throttle episodes) and
    /// looks for new threads to select.
    pub fn drain_events(&mut self) {
        while let Some(item) = self.events.next() {
            let kind = item
                .get(..4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            match kind {
                Some(RECORD_NEW_CGROUP) if item.len() >= size_of::<NewCgroupRecord>() => {
                    // SAFETY: length checked; plain data written by the programs.
                    let record: NewCgroupRecord =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    let end = record
                        .name
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(record.name.len());
                    let name = String::from_utf8_lossy(&record.name[..end]).into_owned();
                    // Resolving now rescans the hierarchy once for a cgroup first seen.
                    self.resolver.resolve(record.cgroup_id);
                    self.names.insert(record.cgroup_id, name);
                }
                Some(RECORD_EPISODE) if item.len() >= size_of::<EpisodeRecord>() => {
                    // SAFETY: as above.
                    let record: EpisodeRecord =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    let acc = self.episodes.entry(record.cgroup_id).or_default();
                    let mut hist = acc.durations.to_hist();
                    hist.record(record.duration_ns);
                    acc.durations = SparseHist::from_hist(&hist);
                    let cpu = acc.per_cpu.entry(record.cpu).or_default();
                    cpu.0 += 1;
                    cpu.1 += record.duration_ns;
                    *acc.throttled_by.entry(record.throttled_by).or_default() += 1;
                }
                _ => {}
            }
        }
        if !self.scanner.is_empty() && self.last_scan.elapsed() >= THREAD_SCAN_EVERY {
            let _ = self.scan_threads();
        }
        if self.last_blame_drain.elapsed() >= BLAME_DRAIN_EVERY {
            let _ = self.drain_blame();
        }
        // Spill slots are few: free them soon for the next burst of new cgroups.
        if self.last_spill_fold.elapsed() >= SPILL_FOLD_EVERY
            && let Ok(events) = self.spilled_events()
        {
            let _ = self.fold_spill(events);
        }
    }

    /// Detaches every program, then reads what they aggregated. The maps are
    /// freed when the session is dropped.
    pub fn stop(mut self) -> anyhow::Result<Recording> {
        self.detached_at = Some(programs::detach_all(&mut self.ebpf));
        let sample = self.sample()?;
        Ok(self.recording(&sample, None))
    }

    /// Detaches every program and returns what they aggregated, keeping the
    /// session for [`Self::recording`].
    pub fn detach(&mut self) -> anyhow::Result<Sample> {
        self.detached_at = Some(programs::detach_all(&mut self.ebpf));
        self.sample()
    }

    /// Reads everything aggregated so far (cumulative since the start).
    pub fn sample(&mut self) -> anyhow::Result<Sample> {
        // cpu.stat first: when the programs were just detached, a throttle
        // ending meanwhile must not count on one side only.
        let cpu_stats = self.read_quota_stats();
        let end = self.detached_at.unwrap_or_else(Instant::now);
        let elapsed_ns = end.duration_since(self.started).as_nanos() as u64;
        let mut counters = [0u64; Counter::COUNT as usize];
        for state in self.cpu_states()? {
            for (total, n) in counters.iter_mut().zip(state.counters) {
                *total += n;
            }
        }
        let slots = self.fold_spill(counters[Counter::CgroupSpilled as usize])?;
        self.drain_blame()?;
        // The ring buffer's records; blame and spill slots were just read, so
        // this does not read them again.
        self.drain_events();
        let mut cgroups = self.read_stats::<u64>(MAP_CGROUP_STATS)?;
        self.tracked = cgroups.len();
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
        Ok(Sample {
            elapsed_ns,
            counters,
            cgroups,
            selections: self.read_stats::<u32>(MAP_SELECTION_STATS)?,
            blame: self.blame.clone(),
            blame_epoch: self.blame_epoch,
            episodes: self.episodes.clone(),
            cpu_stats,
        })
    }

    /// `cpu.stat` now, of every cgroup under a quota.
    fn read_quota_stats(&self) -> BTreeMap<String, CpuStat> {
        self.quotas
            .keys()
            .filter_map(|path| {
                let dir = self.resolver.hierarchy().dir_of(path);
                Some((path.clone(), cpustat::read_cpu_stat(&dir)?))
            })
            .collect()
    }

    /// Keeps a long-running session bounded however many cgroups come and go:
    /// rescans the hierarchy, moves the figures of cgroups that are gone out
    /// of the kernel's map (they stay in samples until
    /// [`Self::release_departed`]) and refreshes the quotas. Returns the ids
    /// of the cgroups found gone.
    pub fn maintain(&mut self) -> anyhow::Result<Vec<u64>> {
        self.resolver.rescan();
        let gone = self.evict_gone()?;
        self.note_quotas();
        Ok(gone)
    }

    /// Forgets the cgroups [`Self::maintain`] set aside and the blame
    /// accumulated so far: samples from now on start their blame afresh (a
    /// new epoch, which [`Sample::since`] knows to handle). Call it when no
    /// window needs to reach back before now: the agent does when it starts
    /// a new dump window.
    pub fn release_departed(&mut self) {
        for id in std::mem::take(&mut self.departed).into_keys() {
            self.episodes.remove(&id);
            self.names.remove(&id);
            self.resolver.forget(id);
        }
        self.blame.clear();
        self.blame_epoch += 1;
    }

    /// Whether [`Self::maintain`] set this cgroup aside (it is gone).
    pub fn is_departed(&self, id: u64) -> bool {
        self.departed.contains_key(&id)
    }

    /// Cgroups set aside by [`Self::maintain`] and not yet released.
    pub fn departed_cgroups(&self) -> usize {
        self.departed.len()
    }

    /// Finds which cgroups are under a quota (quotas change, cgroups come and
    /// go) in the last scan, and notes the `cpu.stat` of those seen for the
    /// first time.
    fn note_quotas(&mut self) {
        let hierarchy = self.resolver.hierarchy();
        let cache = &mut self.own_quotas;
        cache.retain(|_, (_, at)| at.elapsed() < QUOTA_READ_EVERY);
        self.quotas = quotas_of(self.resolver.paths(), |path| {
            cache
                .entry(path.to_owned())
                .or_insert_with(|| {
                    (
                        cpustat::read_quota(hierarchy, &hierarchy.dir_of(path)),
                        Instant::now(),
                    )
                })
                .0
        });
        let new: Vec<String> = self
            .quotas
            .keys()
            .filter(|p| !self.start_stats.contains_key(*p))
            .cloned()
            .collect();
        for path in new {
            let dir = self.resolver.hierarchy().dir_of(&path);
            if let Some(stat) = cpustat::read_cpu_stat(&dir) {
                self.start_stats.insert(path, stat);
            }
        }
        self.start_stats.retain(|p, _| self.quotas.contains_key(p));
    }

    /// Moves the cgroups missing from the last scans out of the kernel's
    /// per-cgroup map into `departed`.
    fn evict_gone(&mut self) -> anyhow::Result<Vec<u64>> {
        let slots = self.fold_spill(self.spilled_events()?)?;
        let mut stats: PerCpuHashMap<_, u64, CgroupStats> = PerCpuHashMap::try_from(
            self.ebpf
                .map_mut(MAP_CGROUP_STATS)
                .ok_or_else(|| anyhow!("map {MAP_CGROUP_STATS} missing"))?,
        )?;
        let mut ids: HashSet<u64> = stats.keys().filter_map(Result::ok).collect();
        ids.extend(slots.iter().map(|(_, slot)| slot.cgroup_id));
        ids.extend(self.spilled.keys());
        let mut gone = Vec::new();
        let mut missing = HashMap::new();
        for &id in &ids {
            if self.resolver.is_present(id) {
                continue;
            }
            let misses = self.missing.get(&id).copied().unwrap_or(0) + 1;
            if misses >= GONE_AFTER {
                gone.push(id);
            } else {
                missing.insert(id, misses);
            }
        }
        self.missing = missing;
        gone.sort_unstable();
        for &id in &gone {
            let mut total = CgroupStats::ZERO;
            if let Ok(per_cpu) = stats.get(&id, 0) {
                for v in per_cpu.iter() {
                    total.merge(v);
                }
            }
            for (_, slot) in slots.iter().filter(|(_, s)| s.cgroup_id == id) {
                total.merge(&slot.stats);
            }
            let departed = self.departed.entry(id).or_default();
            departed.add(&Totals::from_stats(&total));
            if let Some(folded) = self.spilled.remove(&id) {
                departed.add(&folded);
            }
            let _ = stats.remove(&id);
        }
        // A gone cgroup's slots are free for others: nothing writes them any more.
        let mut spill: Array<_, SpillSlot> = Array::try_from(
            self.ebpf
                .map_mut(MAP_SPILL)
                .ok_or_else(|| anyhow!("map {MAP_SPILL} missing"))?,
        )?;
        for (index, slot) in &slots {
            if gone.binary_search(&slot.cgroup_id).is_ok() {
                let _ = spill.set(*index, SpillSlot::ZERO, 0);
            }
        }
        // Paths of cgroups that were never in the map (no task ran there) are
        // not needed; those of cgroups set aside are, until released.
        let departed = &self.departed;
        self.resolver
            .retain_retired(|id| ids.contains(&id) || departed.contains_key(&id));
        Ok(gone)
    }

    /// Events the programs have put in spill slots so far, over all CPUs.
    fn spilled_events(&self) -> anyhow::Result<u64> {
        Ok(self
            .cpu_states()?
            .iter()
            .map(|s| s.counters[Counter::CgroupSpilled as usize])
            .sum())
    }

    /// Folds the spill slots of cgroups whose map entry now exists into
    /// `spilled` and frees them (the programs no longer write a slot once the
    /// entry exists), and returns the slots still in use, by index. `events`
    /// is [`Self::spilled_events`]: the slots are read only while there may
    /// be some in use, as a read copies every slot of every CPU.
    fn fold_spill(&mut self, events: u64) -> anyhow::Result<Vec<(u32, SpillSlot)>> {
        self.last_spill_fold = Instant::now();
        if events == self.spill_events_seen && !self.spill_in_use {
            return Ok(Vec::new());
        }
        self.spill_events_seen = events;
        let with_entry: HashSet<u64> = PerCpuHashMap::<_, u64, CgroupStats>::try_from(
            self.ebpf
                .map(MAP_CGROUP_STATS)
                .ok_or_else(|| anyhow!("map {MAP_CGROUP_STATS} missing"))?,
        )?
        .keys()
        .filter_map(Result::ok)
        .collect();
        let mut spill: Array<_, SpillSlot> = Array::try_from(
            self.ebpf
                .map_mut(MAP_SPILL)
                .ok_or_else(|| anyhow!("map {MAP_SPILL} missing"))?,
        )?;
        let mut in_use = Vec::new();
        for i in 0..spill.len() {
            let Ok(slot) = spill.get(&i, 0) else { continue };
            if slot.cgroup_id == 0 {
                continue;
            }
            if with_entry.contains(&slot.cgroup_id) {
                self.spilled
                    .entry(slot.cgroup_id)
                    .or_default()
                    .add(&Totals::from_stats(&slot.stats));
                let _ = spill.set(i, SpillSlot::ZERO, 0);
            } else {
                in_use.push((i, slot));
            }
        }
        self.spill_in_use = !in_use.is_empty();
        Ok(in_use)
    }

    /// Moves what the kernel's blame map accumulated into `blame`.
    fn drain_blame(&mut self) -> anyhow::Result<()> {
        self.last_blame_drain = Instant::now();
        let map = self
            .ebpf
            .map_mut(MAP_BLAME)
            .ok_or_else(|| anyhow!("map {MAP_BLAME} missing"))?;
        let rows = drain::drain::<BlameKey, BlameValue>(map).context("draining the blame map")?;
        for (key, value) in rows {
            let pair = BlamePair {
                victim: key.victim,
                occupant_cgroup: key.occupant_cgroup,
                occupant_tgid: key.occupant_tgid,
            };
            let row = self
                .blame
                .entry(pair)
                .or_insert_with(|| (comm_str(&value.comm), 0));
            row.1 += value.ns;
        }
        Ok(())
    }

    /// Cgroups the kernel's per-cgroup map held at the last sample.
    pub fn tracked_cgroups(&self) -> usize {
        self.tracked
    }

    /// The path of a cgroup id, as the report shows it.
    pub fn path_of(&mut self, id: u64) -> String {
        if let Some(path) = self.resolver.resolve(id) {
            return path;
        }
        match self.names.get(&id) {
            // Gone before we could see where it lived: keep what the kernel told us.
            Some(name) => format!("?/{name}"),
            None => format!("?/id-{id}"),
        }
    }

    /// The quota a cgroup is under, by path.
    pub fn quota_of(&self, path: &str) -> Option<&QuotaInfo> {
        self.quotas.get(path)
    }

    /// The recording of `now`, or of the window from `since` to `now`.
    pub fn recording(&mut self, now: &Sample, since: Option<&Sample>) -> Recording {
        let window;
        let (data, start_stats, offset_ns) = match since {
            Some(earlier) => {
                window = now.since(earlier);
                (&window, earlier.cpu_stats.clone(), earlier.elapsed_ns)
            }
            None => (now, self.start_stats.clone(), 0),
        };
        let duration_ns = data.elapsed_ns;
        let end_stats = &now.cpu_stats;
        let stat_delta = |path: &str| -> Option<CpuStat> {
            Some(start_stats.get(path)?.delta(end_stats.get(path)?))
        };

        let mut cgroups = Vec::new();
        for (id, totals) in &data.cgroups {
            let path = self.path_of(*id);
            let wait = self.wait_split(totals, &data.blame, *id);
            cgroups.push(CgroupEntry {
                cpu_stat: stat_delta(&path),
                quota: self.quotas.get(&path).cloned(),
                throttle_episodes: data.episodes.get(id).map(|e| self.episodes_of(e)),
                path,
                id: *id,
                wait,
                on_cpu: WaitHistogram::from_hist(&totals.on_cpu.to_hist()),
                verdict: verdict::judge(&Facts::default()),
            });
        }
        // Verdicts need every cgroup's run time (a quota covers a subtree).
        let run_by_path: Vec<(String, u64)> = cgroups
            .iter()
            .map(|c| (c.path.clone(), c.on_cpu.summary.total_ns))
            .collect();
        for c in &mut cgroups {
            let facts = facts(
                &c.wait,
                c.on_cpu.summary.total_ns,
                c.quota.as_ref(),
                c.quota
                    .as_ref()
                    .and_then(|q| stat_delta(&q.owner))
                    .unwrap_or_default(),
                &run_by_path,
                duration_ns,
                Some(c.id),
            );
            c.verdict = verdict::judge(&facts);
        }

        let mut pids = Vec::new();
        let mut threads = Vec::new();
        let targets = self.targets.clone();
        for (index, target) in targets.iter().enumerate() {
            let index = index as u32;
            let totals = data.selections.get(&index).cloned().unwrap_or_default();
            let wait = self.wait_split(&totals, &data.blame, VICTIM_SELECTION | u64::from(index));
            let on_cpu = WaitHistogram::from_hist(&totals.on_cpu.to_hist());
            let cgroup = match target {
                Target::Pid { .. } => self.target_cgroups.get(index as usize).cloned().flatten(),
                Target::Threads { .. } => self
                    .scanner
                    .matched
                    .get(&index)
                    .and_then(|m| m.first())
                    .and_then(|t| process::cpu_cgroup(t.tgid, self.resolver.hierarchy())),
            };
            let quota = cgroup.as_ref().and_then(|c| self.quotas.get(c)).cloned();
            let facts = facts(
                &wait,
                on_cpu.summary.total_ns,
                quota.as_ref(),
                quota
                    .as_ref()
                    .and_then(|q| stat_delta(&q.owner))
                    .unwrap_or_default(),
                &run_by_path,
                duration_ns,
                None,
            );
            let verdict = verdict::judge(&facts);
            match target {
                Target::Pid { id, kind, comm } => pids.push(PidEntry {
                    pid: *id,
                    kind: *kind,
                    comm: comm.clone(),
                    cgroup,
                    wait,
                    on_cpu,
                    verdict,
                }),
                Target::Threads { pattern } => threads.push(ThreadsEntry {
                    pattern: pattern.clone(),
                    matched: self
                        .scanner
                        .matched
                        .get(&index)
                        .cloned()
                        .unwrap_or_default(),
                    untraced: self.untraced.get(&index).copied().unwrap_or(0),
                    wait,
                    on_cpu,
                    verdict,
                }),
            }
        }

        // Which cgroups to show: those asked for, and those of the selected tasks.
        let mut shown: Vec<String> = self.config.cgroups.clone();
        shown.extend(pids.iter().filter_map(|p| p.cgroup.clone()));
        for t in &threads {
            for m in &t.matched {
                if let Some(c) = process::cpu_cgroup(m.tgid, self.resolver.hierarchy()) {
                    shown.push(c);
                }
            }
        }
        if !shown.is_empty() {
            cgroups.retain(|c| shown.iter().any(|s| is_within(&c.path, s)));
        }
        cgroups.sort_by(|a, b| {
            b.wait
                .runnable_wait
                .summary
                .total_ns
                .cmp(&a.wait.runnable_wait.summary.total_ns)
                .then_with(|| a.path.cmp(&b.path))
        });

        let mut events = Events::default();
        for counter in Counter::ALL {
            events.set(counter, data.counters[counter as usize]);
        }
        Recording {
            format: crate::dump::FORMAT.into(),
            format_version: crate::dump::VERSION,
            tool: "tracer".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: host_name(),
            kernel: kernel_release(),
            cpus: online_cpus(),
            cgroup_mode: self.resolver.hierarchy().mode,
            cpu_hierarchy: self.resolver.hierarchy().mount.display().to_string(),
            throttle_method: layout::method_description(self.layout.throttle_method).into(),
            tier: self.tier.describe(),
            state: self.store.describe().into(),
            started_unix_ns: self.started_unix_ns + offset_ns,
            duration_ns,
            probes: self.probes.clone(),
            events,
            cgroups,
            pids,
            threads,
        }
    }

    /// The wait of `victim` (a cgroup id, or a selection's blame key), split
    /// and with its blame grouped by occupant.
    fn wait_split(
        &mut self,
        totals: &Totals,
        blame: &BTreeMap<BlamePair, (String, u64)>,
        victim: u64,
    ) -> WaitSplit {
        let from = BlamePair {
            victim,
            occupant_cgroup: 0,
            occupant_tgid: 0,
        };
        let mut by_cgroup: BTreeMap<u64, Vec<BlamedProcess>> = BTreeMap::new();
        for (pair, (comm, ns)) in blame.range(from..).take_while(|(p, _)| p.victim == victim) {
            by_cgroup
                .entry(pair.occupant_cgroup)
                .or_default()
                .push(BlamedProcess {
                    tgid: pair.occupant_tgid,
                    comm: comm.clone(),
                    ns: *ns,
                });
        }
        let mut occupants: Vec<Blame> = by_cgroup
            .into_iter()
            .map(|(id, mut processes)| {
                processes.sort_by_key(|p| std::cmp::Reverse(p.ns));
                let ns = processes.iter().map(|p| p.ns).sum();
                processes.truncate(BLAME_PROCESSES);
                Blame {
                    path: self.path_of(id),
                    id,
                    ns,
                    processes,
                }
            })
            .collect();
        occupants.sort_by_key(|b| std::cmp::Reverse(b.ns));
        // Charged to anyone, before trimming the list for the report.
        let charged: u64 = occupants.iter().map(|b| b.ns).sum();
        occupants.truncate(BLAME_CGROUPS);
        WaitSplit {
            runnable_wait: WaitHistogram::from_hist(&totals.wait.to_hist()),
            throttled_ns: totals.throttled_ns,
            contended_ns: totals.contended_ns,
            other_ns: totals.other_ns,
            throttled_waits: totals.throttled_waits,
            unattributed_ns: totals.contended_ns.saturating_sub(charged),
            blame: occupants,
        }
    }

    fn episodes_of(&mut self, e: &EpisodeTotals) -> Episodes {
        let per_cpu = e
            .per_cpu
            .iter()
            .map(|(&cpu, &(n, ns))| [u64::from(cpu), n, ns])
            .collect();
        let mut throttled_by = BTreeMap::new();
        for (&cgroup, &n) in &e.throttled_by {
            let path = if cgroup == 0 {
                "(unknown)".to_owned()
            } else {
                self.path_of(cgroup)
            };
            *throttled_by.entry(path).or_default() += n;
        }
        Episodes {
            count: e.durations.count,
            total_ns: e.durations.total_ns,
            durations: WaitHistogram::from_hist(&e.durations.to_hist()),
            per_cpu,
            throttled_by,
        }
    }

    fn read_stats<K: aya::Pod + Ord>(&self, map: &str) -> anyhow::Result<BTreeMap<K, Totals>> {
        let stats: PerCpuHashMap<_, K, CgroupStats> = PerCpuHashMap::try_from(
            self.ebpf
                .map(map)
                .ok_or_else(|| anyhow!("map {map} missing"))?,
        )?;
        stats
            .iter()
            .map(|item| {
                let (key, per_cpu) = item.with_context(|| format!("reading {map}"))?;
                let mut total = CgroupStats::ZERO;
                for v in per_cpu.iter() {
                    total.merge(v);
                }
                Ok((key, Totals::from_stats(&total)))
            })
            .collect()
    }

    /// Every CPU's state (run history, counters).
    fn cpu_states(&self) -> anyhow::Result<Vec<CpuState>> {
        let states: Array<_, CpuState> = Array::try_from(
            self.ebpf
                .map(MAP_CPU_STATE)
                .ok_or_else(|| anyhow!("map {MAP_CPU_STATE} missing"))?,
        )?;
        states
            .iter()
            .map(|s| s.context("reading the per-CPU state"))
            .collect()
    }
}

/// The verdict's inputs for a group with wait `w` and run time `run_ns`.
fn facts(
    w: &WaitSplit,
    run_ns: u64,
    quota: Option<&QuotaInfo>,
    owner_stat: CpuStat,
    run_by_path: &[(String, u64)],
    duration_ns: u64,
    own_cgroup: Option<u64>,
) -> Facts {
    let (self_charged, others_charged): (u64, u64) = match own_cgroup {
        Some(id) => w.blame.iter().fold((0, 0), |(s, o), b| {
            if b.id == id {
                (s + b.ns, o)
            } else {
                (s, o + b.ns)
            }
        }),
        // A task selection has no cgroup of its own: all of it is "others".
        None => (0, w.blame.iter().map(|b| b.ns).sum()),
    };
    let charged_others: u64 = others_charged.max(1);
    let top_other = w.blame.iter().find(|b| Some(b.id) != own_cgroup).map(|b| {
        let process = b
            .processes
            .first()
            .map(|p| format!("{} pid {}", p.comm, p.tgid))
            .unwrap_or_default();
        (b.path.clone(), b.ns as f64 / charged_others as f64, process)
    });
    let quota = quota.map(|q| {
        let used: u64 = run_by_path
            .iter()
            .filter(|(path, _)| is_within(path, &q.owner))
            .map(|(_, ns)| ns)
            .sum();
        QuotaFacts {
            owner: q.owner.clone(),
            cpus: q.quota.cpus(),
            nr_periods: owner_stat.nr_periods,
            nr_throttled: owner_stat.nr_throttled,
            used_cpus: if duration_ns == 0 {
                0.0
            } else {
                used as f64 / duration_ns as f64
            },
        }
    });
    Facts {
        duration_ns,
        wait_ns: w.runnable_wait.summary.total_ns,
        run_ns,
        p99_ns: w.runnable_wait.summary.p99_ns,
        throttled_ns: w.throttled_ns,
        contended_ns: w.contended_ns,
        other_ns: w.other_ns,
        self_charged_ns: self_charged,
        others_charged_ns: others_charged,
        top_other,
        quota,
    }
}

fn comm_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Every cgroup of `paths` under a quota (its own or an ancestor's), with
/// that quota; `own` gives the quota set on a cgroup itself.
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

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn online_cpus() -> usize {
    aya::util::online_cpus().map(|c| c.len()).unwrap_or(0)
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
