//! A tracing session: the programs attached, their maps read into
//! [`Sample`]s, and samples turned into [`Recording`]s by [`assemble`].
//!
//! The stages live apart: [`maps`] reads the kernel, [`quotas`] the cgroups'
//! CFS figures, [`selections`] `--pid` / `--threads`, [`accumulate`] what
//! userspace keeps between reads; this module starts, samples, maintains and
//! stops, and says how often each thing is done.

mod accumulate;
mod changed;
mod hot;
mod maps;
mod pods;
mod pressures;
mod quotas;
mod recordings;
mod selections;
mod weights;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tracer_common::{
    layout::KernelLayout,
    maps::{Counter, DEFAULT_MAX_CGROUPS, MAP_SELECTION_STATS},
};

pub use self::maps::{Record, nul_terminated};
use self::{
    accumulate::Accumulated, changed::ChangedReader, maps::Kernel, pods::Pods,
    pressures::Pressures, quotas::Quotas, recordings::path_of, selections::Selections,
    weights::Weights,
};
use crate::{
    btf::Btf,
    cgroup::{CpuHierarchy, Resolver},
    filter::CgroupFilter,
    host, layout, privilege,
    programs::{self, LoadOptions, Store, StoreChoice, Tier, TierChoice},
    psi::Pressure,
    recording::{ProbeStatus, Recording},
    sample::Sample,
    stall::{Stall, Stalls},
    verdict,
};

/// What to trace and report.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which cgroups to report (`--cgroup`). Default: all.
    pub filter: CgroupFilter,
    /// Also report these processes (or threads) on their own.
    pub pids: Vec<u32>,
    /// Also report threads whose name matches these globs, one group per pattern.
    pub threads: Vec<String>,
    /// Capacity of the kernel's per-cgroup map.
    pub max_cgroups: u32,
    /// Which probes to use.
    pub tier: TierChoice,
    /// `--map-size` capacities.
    pub map_sizes: Vec<(String, u32)>,
    /// Where the programs keep their state.
    pub store: StoreChoice,
    /// Probes (by target) not to attach: for tests that provoke the loss a
    /// missing probe causes. Empty in the tracer's own use.
    pub left_out: Vec<String>,
    /// Send a record of each wait at least this long (`--slower`).
    pub slower: Option<Duration>,
    /// How many of those records each CPU may send a second.
    pub slow_rate: u64,
    /// Also send every wait of the threads `threads` selects, however short
    /// (`--gc-log`: the GC threads' waits in each pause).
    pub slow_selected: bool,
    /// The kubelet's pod log directory, whose names name pods and containers
    /// (`--pods-log-dir`; see [`crate::workload::names`]).
    pub pods_log_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            filter: CgroupFilter::default(),
            pids: Vec::new(),
            threads: Vec::new(),
            max_cgroups: DEFAULT_MAX_CGROUPS,
            tier: TierChoice::Auto,
            map_sizes: Vec::new(),
            store: StoreChoice::Auto,
            left_out: Vec::new(),
            slower: None,
            slow_rate: crate::stall::DEFAULT_RATE,
            slow_selected: false,
            pods_log_dir: PathBuf::from(crate::workload::names::PODS_LOG_DIR),
        }
    }
}

/// How often a running session should call [`Session::drain_events`]: new
/// cgroups' names are read off the ring buffer while the cgroups still exist,
/// and spill slots are freed for the next burst of new cgroups.
pub const DRAIN_EVERY: Duration = Duration::from_millis(250);
/// How often `/proc` is scanned for threads matching `--threads`.
const THREAD_SCAN_EVERY: Duration = Duration::from_secs(1);
/// How often the kernel's blame map is drained while tracing: often enough
/// that the pairs of one interval fit in it.
const BLAME_DRAIN_EVERY: Duration = Duration::from_secs(1);
/// How often the spill slots are folded while tracing.
const SPILL_FOLD_EVERY: Duration = Duration::from_millis(200);

pub struct Session {
    kernel: Kernel,
    probes: Vec<ProbeStatus>,
    tier: Tier,
    store: Store,
    /// How throttled time is measured, as reports name it.
    throttle_method: &'static str,
    filter: CgroupFilter,

    resolver: Resolver,
    /// Leaf names from new-cgroup records, for cgroups gone before the end.
    names: HashMap<u64, String>,
    /// Pod and container names, read again with each rescan.
    pods: Pods,
    selections: Selections,
    quotas: Quotas,
    /// Cgroups' CPU weights, read when a recording names them.
    weights: Weights,
    acc: Accumulated,

    last_blame_drain: Instant,
    last_spill_fold: Instant,
    /// The per-cgroup map as last read, and what reading it cost.
    changed: ChangedReader,
    started: Instant,
    started_unix_ns: u64,
    /// When the programs were detached: the end of the measurement.
    detached_at: Option<Instant>,
    /// The scheduler's slice, read once.
    slice_ns: u64,
    /// When the programs were attached, on their clock.
    started_ns: u64,
    /// `--slower`'s threshold (0: not given).
    slower_ns: u64,
    /// Every wait of the selected threads is sent.
    slow_selected: bool,
    /// Slow waits (`--slower`), and those not yet taken to be shown.
    stalls: Stalls,
    /// The host's CPU pressure when the programs were attached.
    start_psi: Option<Pressure>,
    /// Each cgroup's own CPU pressure (cgroup v2).
    pressures: Pressures,
    new_stalls: Vec<Stall>,
}

/// What [`Session::prepare`] checked and found: everything needed to load
/// the programs.
pub struct Plan {
    config: Config,
    btf: Btf,
    layout: KernelLayout,
    hierarchy: CpuHierarchy,
    selections: Selections,
}

impl Session {
    /// Checks privileges and the kernel, loads and attaches the programs.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        Self::prepare(config)?.start()
    }

    /// Checks privileges, the kernel and what to trace, loading nothing: an
    /// error here leaves nothing to undo.
    pub fn prepare(config: Config) -> anyhow::Result<Plan> {
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
        for path in config.filter.paths() {
            hierarchy.id_of(path)?;
        }
        let selections = Selections::new(&config.pids, &config.threads, &hierarchy)?;
        Ok(Plan {
            config,
            btf,
            layout,
            hierarchy,
            selections,
        })
    }
}

impl Plan {
    /// Loads and attaches the programs.
    pub fn start(self) -> anyhow::Result<Session> {
        let Self {
            config,
            btf,
            layout,
            hierarchy,
            selections,
        } = self;
        // 0: no threshold (the programs read it so); a duration below 1 ns
        // is the least there is.
        let slower_ns = config.slower.map_or(0, |d| (d.as_nanos() as u64).max(1));
        // Waits of selected threads, if any are selected.
        let slow_selected = config.slow_selected && !config.threads.is_empty();
        let store = config.store.resolve(&btf);
        let programs::Loaded {
            ebpf,
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
                map_sizes: config.map_sizes.clone(),
                selections: !selections.is_empty(),
                left_out: config.left_out.clone(),
                slower_ns,
                slow_rate: config.slow_rate,
                slow_selected,
            },
            &btf,
        )?;
        // From here on, an error drops the object, which detaches every program.
        let mut session = Session {
            kernel: Kernel::new(ebpf)?,
            probes,
            tier,
            store,
            throttle_method: layout::method_description(layout.throttle_method),
            filter: config.filter,
            resolver: Resolver::new(hierarchy),
            names: HashMap::new(),
            pods: Pods::new(config.pods_log_dir),
            selections,
            quotas: Quotas::default(),
            weights: Weights::default(),
            acc: Accumulated::default(),
            last_blame_drain: Instant::now(),
            last_spill_fold: Instant::now(),
            changed: ChangedReader::default(),
            started: attached_at,
            started_unix_ns: SystemTime::now()
                .checked_sub(attached_at.elapsed())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            detached_at: None,
            slice_ns: host::scheduler_slice_ns().unwrap_or(verdict::DEFAULT_SLICE_NS),
            started_ns: host::monotonic_ns()
                .saturating_sub(attached_at.elapsed().as_nanos() as u64),
            slower_ns,
            slow_selected,
            stalls: Stalls::default(),
            new_stalls: Vec::new(),
            start_psi: Pressure::host(),
            pressures: Pressures::default(),
        };
        session.pressures = Pressures::start(&session.resolver);
        session.selections.select_pids(&mut session.kernel)?;
        session.selections.scan_threads(&mut session.kernel);
        session.quotas.refresh(&session.resolver);
        Ok(session)
    }
}

impl Session {
    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// Which probes are in use, and why not fentry if not.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// When the programs were attached.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the programs were attached, in ns since the Unix epoch.
    pub fn started_unix_ns(&self) -> u64 {
        self.started_unix_ns
    }

    /// How this kernel's throttled time is measured, as reports name it.
    pub fn throttle_method(&self) -> &'static str {
        self.throttle_method
    }

    /// Each program's cumulative run time (ns) and run count, from the kernel's
    /// BPF statistics: zero unless they are enabled (`aya::sys::enable_stats`,
    /// or the sysctl `kernel.bpf_stats_enabled`).
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.kernel.program_stats()
    }

    /// Handles the ring buffer's records (new cgroups, which get a free hot
    /// slot; throttle episodes), and what is due: new threads to select,
    /// blame to drain, spill slots to free. Call it every [`DRAIN_EVERY`].
    pub fn drain_events(&mut self) {
        let announced = self.take_records();
        // A cgroup announced has just had its first event: a free hot slot
        // saves the programs a hash lookup at each of its next ones.
        let _ = self.kernel.claim_hot_slots(announced);
        if self.selections.scan_due() {
            self.selections.scan_threads(&mut self.kernel);
        }
        if self.last_blame_drain.elapsed() >= BLAME_DRAIN_EVERY {
            let _ = self.drain_blame();
        }
        // Spill slots are few: free them soon for the next burst of new cgroups.
        if self.last_spill_fold.elapsed() >= SPILL_FOLD_EVERY
            && let Ok(events) = Accumulated::spilled_events(&self.kernel)
        {
            self.last_spill_fold = Instant::now();
            let _ = self.acc.fold_spill(&mut self.kernel, events);
        }
    }

    /// Slow waits received since the last call (`--slower`), to show as they
    /// come.
    pub fn take_new_stalls(&mut self) -> Vec<Stall> {
        std::mem::take(&mut self.new_stalls)
    }

    /// Handles the ring buffer's records; returns the cgroups announced.
    fn take_records(&mut self) -> Vec<u64> {
        let mut announced = Vec::new();
        for record in self.kernel.records() {
            match record {
                Record::NewCgroup { id, name } => {
                    announced.push(id);
                    self.changed.announced(id);
                    // Resolving now rescans the hierarchy once for a cgroup first seen.
                    self.resolver.resolve(id);
                    self.names.insert(id, name);
                }
                Record::Episode(episode) => self.acc.add_episode(&episode),
                Record::Stall(record) => {
                    let (resolver, names) = (&mut self.resolver, &self.names);
                    let stall = Stall::from_record(&record, self.started_ns, |id| {
                        path_of(resolver, names, id)
                    });
                    self.new_stalls.push(stall.clone());
                    self.stalls.push(stall);
                }
            }
        }
        announced
    }

    fn drain_blame(&mut self) -> anyhow::Result<()> {
        self.last_blame_drain = Instant::now();
        self.acc.drain_blame(&mut self.kernel)
    }

    /// Detaches every program, then reads what they aggregated. The maps are
    /// freed when the session is dropped.
    pub fn stop(mut self) -> anyhow::Result<Recording> {
        let sample = self.detach()?;
        Ok(self.recording(&sample, None))
    }

    /// Detaches every program and returns what they aggregated, keeping the
    /// session for [`Self::recording`].
    pub fn detach(&mut self) -> anyhow::Result<Sample> {
        if self.detached_at.is_none() {
            self.detached_at = Some(self.kernel.detach());
            // The records sent last: slow waits among them.
            self.take_records();
            // What the CPUs' blame caches held when the programs went.
            let cached = self.kernel.cached_blame()?;
            self.acc.add_blame(cached);
        }
        self.sample()
    }

    /// Reads everything aggregated so far (cumulative since the start).
    pub fn sample(&mut self) -> anyhow::Result<Sample> {
        // cpu.stat first: when the programs were just detached, a throttle
        // ending meanwhile must not count on one side only.
        let cpu_stats = self.quotas.read_stats(&self.resolver);
        let psi = Pressure::host();
        let end = self.detached_at.unwrap_or_else(Instant::now);
        let elapsed_ns = end.duration_since(self.started).as_nanos() as u64;
        let counters = self.kernel.counters()?;
        self.last_spill_fold = Instant::now();
        let slots = self
            .acc
            .fold_spill(&mut self.kernel, counters[Counter::CgroupSpilled as usize])?;
        self.drain_blame()?;
        // The ring buffer's records; blame and spill slots were just read, so
        // this does not read them again.
        self.drain_events();
        let drops = counters[Counter::RingbufDrop as usize];
        let mut cgroups = self.changed.read(&self.kernel, drops)?.clone();
        // Cgroups whose slot was taken when they were announced, or whose
        // announcement was dropped. A failed claim costs speed, not figures.
        let _ = self
            .kernel
            .claim_hot_slots(self.changed.moved().iter().copied());
        self.acc.complete(&mut cgroups, &slots);
        // Cgroups whose figures moved: their own PSI moved too, likely.
        // Cgroups the last scan found only: an unknown id would rescan.
        let present: Vec<u64> = self
            .changed
            .moved()
            .iter()
            .copied()
            .filter(|&id| self.resolver.is_present(id))
            .collect();
        let moved: Vec<String> = present
            .into_iter()
            .filter_map(|id| self.resolver.resolve(id))
            .collect();
        self.pressures.moved(&self.resolver, moved.iter());
        Ok(Sample {
            elapsed_ns,
            counters,
            cgroups,
            selections: self.kernel.stats::<u32>(MAP_SELECTION_STATS)?,
            blame: self.acc.blame.clone(),
            blame_epoch: self.acc.blame_epoch,
            episodes: self.acc.episodes.clone(),
            cpu_stats,
            psi,
            cgroup_psi: self.pressures.last().clone(),
        })
    }

    /// Keeps a long-running session bounded however many cgroups come and go:
    /// rescans the hierarchy, moves the figures of cgroups that are gone out
    /// of the kernel's map (they stay in samples until
    /// [`Self::release_departed`]) and refreshes the quotas. Returns the ids
    /// of the cgroups found gone: none when the hierarchy could not be
    /// walked, which keeps the previous walk.
    pub fn maintain(&mut self) -> anyhow::Result<Vec<u64>> {
        let _ = self.resolver.rescan();
        self.last_spill_fold = Instant::now();
        let gone = self.acc.evict_gone(&mut self.kernel, &mut self.resolver)?;
        for &id in &gone {
            self.changed.forget(id);
        }
        self.quotas.refresh(&self.resolver);
        self.pressures.retain_present(&self.resolver);
        self.pods.rescan();
        Ok(gone)
    }

    /// Forgets the cgroups [`Self::maintain`] set aside and the blame
    /// accumulated so far: samples from now on start their blame afresh (a
    /// new epoch, which [`Sample::since`] knows to handle). Call it when no
    /// window needs to reach back before now: the agent does when it starts
    /// a new dump window.
    pub fn release_departed(&mut self) {
        for id in self.acc.release() {
            self.names.remove(&id);
            self.resolver.forget(id);
        }
    }

    /// Whether [`Self::maintain`] set this cgroup aside (it is gone).
    pub fn is_departed(&self, id: u64) -> bool {
        self.acc.departed.contains_key(&id)
    }

    /// Cgroups set aside by [`Self::maintain`] and not yet released.
    pub fn departed_cgroups(&self) -> usize {
        self.acc.departed.len()
    }

    /// Cgroups the kernel's per-cgroup map held at the last sample.
    pub fn tracked_cgroups(&self) -> usize {
        self.changed.len()
    }

    /// Per-cgroup entries read from the kernel by all samples (a sample
    /// reads only the entries that changed).
    pub fn entries_read(&self) -> u64 {
        self.changed.entries_read
    }
}
