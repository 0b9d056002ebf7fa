//! A tracing session: programs attached, maps and records read into a
//! [`Recording`].

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    hist::LatencyHist,
    layout::KernelLayout,
    maps::{
        BlameKey, BlameValue, CgroupStats, Counter, CpuState, DEFAULT_MAX_CGROUPS, EpisodeRecord,
        MAP_BLAME, MAP_CGROUP_STATS, MAP_CPU_STATE, MAP_EVENTS, MAP_SELECT_PROCESS,
        MAP_SELECT_THREAD, MAP_SELECTION_STATS, MAX_SELECTIONS, NewCgroupRecord, RECORD_EPISODE,
        RECORD_NEW_CGROUP, VICTIM_SELECTION,
    },
};

use crate::{
    btf::Btf,
    cgroup::{CpuHierarchy, Resolver, is_within},
    cpustat::{self, CpuStat, Quota},
    layout, privilege,
    process::{self, PidKind},
    programs::{self, LoadOptions, ProbeStatus},
    recording::{
        Blame, BlamedProcess, CgroupEntry, Episodes, Events, PidEntry, QuotaInfo, Recording,
        ThreadsEntry, WaitHistogram, WaitSplit,
    },
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroups: Vec::new(),
            pids: Vec::new(),
            threads: Vec::new(),
            max_cgroups: DEFAULT_MAX_CGROUPS,
        }
    }
}

/// How often `/proc` is scanned for threads matching `--threads`.
const THREAD_SCAN_EVERY: Duration = Duration::from_secs(1);
/// Occupant cgroups kept per victim, and processes per occupant: enough to name
/// who held the CPU, few enough that a dump of hundreds of cgroups stays small.
const BLAME_CGROUPS: usize = 8;
const BLAME_PROCESSES: usize = 3;

/// A cgroup under a quota (its own or an ancestor's), as it was at the start.
struct Limited {
    quota: QuotaInfo,
    start: Option<CpuStat>,
}

#[derive(Default)]
struct EpisodeAcc {
    hist: LatencyHist,
    per_cpu: BTreeMap<u32, (u64, u64)>,
    throttled_by: BTreeMap<u64, u64>,
}

pub struct Session {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    resolver: Resolver,
    probes: Vec<ProbeStatus>,
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
    episodes: HashMap<u64, EpisodeAcc>,
    limited: BTreeMap<String, Limited>,
    started: Instant,
    started_unix_ns: u64,
    detached_after: Option<Duration>,
    /// `cpu.stat` of the limited cgroups when the programs were detached.
    end_stats: Option<BTreeMap<String, CpuStat>>,
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
                 with CONFIG_DEBUG_INFO_BTF=y (Linux 5.12 or later)",
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

        let (mut ebpf, probes) = programs::load_and_attach(&LoadOptions {
            layout,
            max_cgroups: config.max_cgroups,
            selections: !targets.is_empty(),
        })?;
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
            targets,
            target_cgroups,
            scanner,
            last_scan: Instant::now(),
            untraced: BTreeMap::new(),
            names: HashMap::new(),
            episodes: HashMap::new(),
            limited: BTreeMap::new(),
            started: Instant::now(),
            started_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            detached_after: None,
            end_stats: None,
        };
        session.select_pids()?;
        session.scan_threads()?;
        session.limited = snapshot_limited(&mut session.resolver);
        Ok(session)
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
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
                    acc.hist.record(record.duration_ns);
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
    }

    /// Detaches every program, then reads what they aggregated. The maps are
    /// freed when the session is dropped.
    pub fn stop(mut self) -> anyhow::Result<Recording> {
        programs::detach_all(&mut self.ebpf);
        self.detached_after = Some(self.started.elapsed());
        // Right away: a throttle ending after the detach must not count on one
        // side only.
        self.end_stats = Some(self.read_limited_stats());
        self.read()
    }

    /// `cpu.stat` now, of every cgroup that was under a quota at the start.
    fn read_limited_stats(&self) -> BTreeMap<String, CpuStat> {
        self.limited
            .keys()
            .filter_map(|path| {
                let dir = self.resolver.hierarchy().dir_of(path);
                Some((path.clone(), cpustat::read_cpu_stat(&dir)?))
            })
            .collect()
    }

    /// Reads the maps (cumulative since the start).
    pub fn read(&mut self) -> anyhow::Result<Recording> {
        self.drain_events();
        let duration_ns = self
            .detached_after
            .unwrap_or_else(|| self.started.elapsed())
            .as_nanos() as u64;
        let events = self.read_counters()?;
        let per_cgroup = self.read_stats::<u64>(MAP_CGROUP_STATS)?;
        let per_selection = self.read_stats::<u32>(MAP_SELECTION_STATS)?;
        let blame = self.read_blame()?;
        let end_stats = match &self.end_stats {
            Some(stats) => stats.clone(),
            None => self.read_limited_stats(),
        };

        let mut cgroups = Vec::new();
        for (id, stats) in &per_cgroup {
            let path = self.path_of(*id);
            let wait = self.wait_split(stats, blame.get(id));
            let limited = self.limited.get(&path);
            let cpu_stat = limited.and_then(|l| Some(l.start?.delta(end_stats.get(&path)?)));
            let quota = limited.map(|l| l.quota.clone());
            let episodes = self.episodes(*id);
            cgroups.push(CgroupEntry {
                path,
                id: *id,
                wait,
                on_cpu: WaitHistogram::from_hist(&stats.on_cpu),
                quota,
                cpu_stat,
                throttle_episodes: episodes,
                verdict: verdict::judge(&Facts::default()),
            });
        }
        // Verdicts need every cgroup's run time (a quota covers a subtree).
        let run_by_path: Vec<(String, u64)> = cgroups
            .iter()
            .map(|c| (c.path.clone(), c.on_cpu.summary.total_ns))
            .collect();
        for c in &mut cgroups {
            let facts = self.facts(
                &c.wait,
                c.on_cpu.summary.total_ns,
                c.quota.as_ref(),
                &end_stats,
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
            let stats = per_selection
                .get(&index)
                .copied()
                .unwrap_or(CgroupStats::ZERO);
            let wait = self.wait_split(&stats, blame.get(&(VICTIM_SELECTION | index as u64)));
            let on_cpu = WaitHistogram::from_hist(&stats.on_cpu);
            let cgroup = match target {
                Target::Pid { .. } => self.target_cgroups.get(index as usize).cloned().flatten(),
                Target::Threads { .. } => self
                    .scanner
                    .matched
                    .get(&index)
                    .and_then(|m| m.first())
                    .and_then(|t| process::cpu_cgroup(t.tgid, self.resolver.hierarchy())),
            };
            let quota = cgroup
                .as_ref()
                .and_then(|c| self.limited.get(c))
                .map(|l| l.quota.clone());
            let facts = self.facts(
                &wait,
                on_cpu.summary.total_ns,
                quota.as_ref(),
                &end_stats,
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

        Ok(Recording {
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
            started_unix_ns: self.started_unix_ns,
            duration_ns,
            probes: self.probes.clone(),
            events,
            cgroups,
            pids,
            threads,
        })
    }

    /// The verdict's inputs for a group with wait `w` and run time `run_ns`.
    #[expect(clippy::too_many_arguments, reason = "plain inputs of one computation")]
    fn facts(
        &self,
        w: &WaitSplit,
        run_ns: u64,
        quota: Option<&QuotaInfo>,
        end_stats: &BTreeMap<String, CpuStat>,
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
            let owner_stat = self
                .limited
                .get(&q.owner)
                .and_then(|l| Some(l.start?.delta(end_stats.get(&q.owner)?)))
                .unwrap_or_default();
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

    fn wait_split(&mut self, stats: &CgroupStats, blame: Option<&Vec<RawBlame>>) -> WaitSplit {
        let blame = blame.map(|b| self.aggregate_blame(b)).unwrap_or_default();
        let charged: u64 = blame.iter().map(|b| b.ns).sum();
        WaitSplit {
            runnable_wait: WaitHistogram::from_hist(&stats.runnable_wait),
            throttled_ns: stats.throttled_ns,
            contended_ns: stats.contended_ns,
            other_ns: stats.other_ns,
            throttled_waits: stats.throttled_waits,
            unattributed_ns: stats.contended_ns.saturating_sub(charged),
            blame,
        }
    }

    /// Groups a victim's blame entries by occupant cgroup, largest first.
    fn aggregate_blame(&mut self, raw: &[RawBlame]) -> Vec<Blame> {
        let mut by_cgroup: BTreeMap<u64, Vec<BlamedProcess>> = BTreeMap::new();
        for r in raw {
            by_cgroup.entry(r.cgroup).or_default().push(BlamedProcess {
                tgid: r.tgid,
                comm: r.comm.clone(),
                ns: r.ns,
            });
        }
        let mut out: Vec<Blame> = by_cgroup
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
        out.sort_by_key(|b| std::cmp::Reverse(b.ns));
        out.truncate(BLAME_CGROUPS);
        out
    }

    fn episodes(&mut self, id: u64) -> Option<Episodes> {
        let acc = self.episodes.get(&id)?;
        let by: Vec<(u64, u64)> = acc.throttled_by.iter().map(|(&k, &v)| (k, v)).collect();
        let per_cpu = acc
            .per_cpu
            .iter()
            .map(|(&cpu, &(n, ns))| [u64::from(cpu), n, ns])
            .collect();
        let hist = acc.hist;
        let mut throttled_by = BTreeMap::new();
        for (cgroup, n) in by {
            let path = if cgroup == 0 {
                "(unknown)".to_owned()
            } else {
                self.path_of(cgroup)
            };
            *throttled_by.entry(path).or_default() += n;
        }
        Some(Episodes {
            count: hist.count,
            total_ns: hist.total_ns,
            durations: WaitHistogram::from_hist(&hist),
            per_cpu,
            throttled_by,
        })
    }

    fn path_of(&mut self, id: u64) -> String {
        if let Some(path) = self.resolver.resolve(id) {
            return path;
        }
        match self.names.get(&id) {
            // Gone before we could see where it lived: keep what the kernel told us.
            Some(name) => format!("?/{name}"),
            None => format!("?/id-{id}"),
        }
    }

    fn read_stats<K: aya::Pod + Ord>(&self, map: &str) -> anyhow::Result<BTreeMap<K, CgroupStats>> {
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
                Ok((key, total))
            })
            .collect()
    }

    /// Blame entries by victim.
    fn read_blame(&self) -> anyhow::Result<HashMap<u64, Vec<RawBlame>>> {
        let map: BpfHashMap<_, BlameKey, BlameValue> = BpfHashMap::try_from(
            self.ebpf
                .map(MAP_BLAME)
                .ok_or_else(|| anyhow!("map {MAP_BLAME} missing"))?,
        )?;
        let mut out: HashMap<u64, Vec<RawBlame>> = HashMap::new();
        for item in map.iter() {
            let (key, value) = item.context("reading the blame map")?;
            out.entry(key.victim).or_default().push(RawBlame {
                cgroup: key.occupant_cgroup,
                tgid: key.occupant_tgid,
                comm: comm_str(&value.comm),
                ns: value.ns,
            });
        }
        Ok(out)
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

    fn read_counters(&self) -> anyhow::Result<Events> {
        let mut totals = [0u64; Counter::COUNT as usize];
        for state in self.cpu_states()? {
            for (total, n) in totals.iter_mut().zip(state.counters) {
                *total += n;
            }
        }
        let mut events = Events::default();
        for counter in Counter::ALL {
            events.set(counter, totals[counter as usize]);
        }
        Ok(events)
    }
}

struct RawBlame {
    cgroup: u64,
    tgid: u32,
    comm: String,
    ns: u64,
}

fn comm_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Every cgroup under a quota (its own or an ancestor's), with that quota and
/// its `cpu.stat` now.
fn snapshot_limited(resolver: &mut Resolver) -> BTreeMap<String, Limited> {
    resolver.rescan();
    let hierarchy = resolver.hierarchy();
    let mut paths: Vec<String> = resolver.paths().cloned().collect();
    // Parents before children, so that a child finds its ancestor's quota.
    paths.sort();
    let mut out: BTreeMap<String, Limited> = BTreeMap::new();
    let mut quotas: BTreeMap<String, Quota> = BTreeMap::new();
    for path in paths {
        let dir = hierarchy.dir_of(&path);
        if let Some(q) = cpustat::read_quota(hierarchy, &dir) {
            quotas.insert(path.clone(), q);
        }
        // The nearest quota: the deepest ancestor-or-self that has one.
        let owner = quotas
            .iter()
            .filter(|(p, _)| is_within(&path, p))
            .max_by_key(|(p, _)| p.len());
        if let Some((owner, quota)) = owner {
            out.insert(
                path.clone(),
                Limited {
                    quota: QuotaInfo {
                        quota: *quota,
                        owner: owner.clone(),
                    },
                    start: cpustat::read_cpu_stat(&dir),
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
