//! A tracing session: programs attached, maps read into a [`Recording`].

use std::{
    collections::HashMap,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    hist::LatencyHist,
    maps::{
        CgroupStats, Counter, DEFAULT_MAX_CGROUPS, MAP_CGROUP_STATS, MAP_COUNTERS, MAP_EVENTS,
        MAP_PID_FILTER, MAP_PID_STATS, MAX_PIDS, NewCgroupRecord, PID_SELECT_PROCESS,
        PID_SELECT_THREAD, RECORD_NEW_CGROUP,
    },
};

use crate::{
    btf::Btf,
    cgroup::{CpuHierarchy, Resolver, is_within},
    layout, privilege,
    process::{self, PidKind},
    programs::{self, LoadOptions, ProbeStatus},
    recording::{CgroupEntry, Events, PidEntry, Recording, WaitHistogram},
};

/// What to trace and report.
#[derive(Clone, Debug)]
pub struct Config {
    /// Report only these cgroups and their descendants (hierarchy paths). Empty: all.
    pub cgroups: Vec<String>,
    /// Also report these processes (or threads) on their own.
    pub pids: Vec<u32>,
    /// Capacity of the kernel's per-cgroup map.
    pub max_cgroups: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroups: Vec::new(),
            pids: Vec::new(),
            max_cgroups: DEFAULT_MAX_CGROUPS,
        }
    }
}

struct SelectedPid {
    id: u32,
    kind: PidKind,
    comm: String,
    cgroup: Option<String>,
}

pub struct Session {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    resolver: Resolver,
    probes: Vec<ProbeStatus>,
    config: Config,
    pids: Vec<SelectedPid>,
    /// Leaf names from new-cgroup records, for cgroups gone before the end.
    names: HashMap<u64, String>,
    started: Instant,
    started_unix_ns: u64,
    detached_after: Option<std::time::Duration>,
}

impl Session {
    /// Checks privileges and the kernel, loads and attaches the programs.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        if let Some(reason) = privilege::check() {
            bail!("{reason}; run it as root, e.g. `sudo tracer record`");
        }
        if !std::path::Path::new(crate::btf::VMLINUX).exists() {
            bail!(
                "this kernel exposes no BTF ({} is missing); the tracer needs a kernel built \
                 with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8 or later)",
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
        if config.pids.len() > MAX_PIDS as usize {
            bail!("at most {MAX_PIDS} --pid values are supported");
        }
        let pids = config
            .pids
            .iter()
            .map(|&id| {
                let info = process::describe(id)?;
                Ok(SelectedPid {
                    id,
                    kind: info.kind,
                    comm: info.comm,
                    cgroup: process::cpu_cgroup(id, &hierarchy),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let (mut ebpf, probes) = programs::load_and_attach(&LoadOptions {
            layout,
            max_cgroups: config.max_cgroups,
            filter_pids: !pids.is_empty(),
        })?;
        // Everything after the attach must detach on error: `ebpf` drops on `?`,
        // and its programs' links with it.
        if !pids.is_empty() {
            let mut filter: BpfHashMap<_, u32, u32> = BpfHashMap::try_from(
                ebpf.map_mut(MAP_PID_FILTER)
                    .ok_or_else(|| anyhow!("map {MAP_PID_FILTER} missing"))?,
            )?;
            for p in &pids {
                let kind = match p.kind {
                    PidKind::Process => PID_SELECT_PROCESS,
                    PidKind::Thread => PID_SELECT_THREAD,
                };
                filter.insert(p.id, kind, 0)?;
            }
        }
        let events = RingBuf::try_from(
            ebpf.take_map(MAP_EVENTS)
                .ok_or_else(|| anyhow!("map {MAP_EVENTS} missing"))?,
        )?;
        Ok(Self {
            ebpf,
            events,
            resolver: Resolver::new(hierarchy),
            probes,
            config,
            pids,
            names: HashMap::new(),
            started: Instant::now(),
            started_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            detached_after: None,
        })
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// Handles the ring buffer's records (new cgroups): resolves their paths now,
    /// while the cgroups still exist.
    pub fn drain_events(&mut self) {
        while let Some(item) = self.events.next() {
            if item.len() < size_of::<NewCgroupRecord>() {
                continue;
            }
            // SAFETY: length checked; the record is plain data written by the programs.
            let record: NewCgroupRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if record.kind != RECORD_NEW_CGROUP {
                continue;
            }
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
    }

    /// Detaches every program, then reads what they aggregated. The maps are
    /// freed when the session is dropped.
    pub fn stop(mut self) -> anyhow::Result<Recording> {
        programs::detach_all(&mut self.ebpf);
        self.detached_after = Some(self.started.elapsed());
        self.read()
    }

    /// Reads the maps (cumulative since the start).
    pub fn read(&mut self) -> anyhow::Result<Recording> {
        self.drain_events();
        let duration = self
            .detached_after
            .unwrap_or_else(|| self.started.elapsed());
        let events = self.read_counters()?;

        let per_cgroup = self.read_per_cgroup()?;
        let mut cgroups = Vec::new();
        for (id, total) in per_cgroup {
            cgroups.push(CgroupEntry {
                path: self.path_of(id),
                id,
                runnable_wait: WaitHistogram::from_hist(&total.runnable_wait),
            });
        }
        let selected: Vec<String> = self
            .config
            .cgroups
            .iter()
            .cloned()
            .chain(self.pids.iter().filter_map(|p| p.cgroup.clone()))
            .collect();
        if !selected.is_empty() {
            cgroups.retain(|c| selected.iter().any(|s| is_within(&c.path, s)));
        }
        cgroups.sort_by(|a, b| {
            b.runnable_wait
                .summary
                .total_ns
                .cmp(&a.runnable_wait.summary.total_ns)
                .then_with(|| a.path.cmp(&b.path))
        });

        let pid_stats: PerCpuHashMap<_, u32, CgroupStats> = PerCpuHashMap::try_from(
            self.ebpf
                .map(MAP_PID_STATS)
                .ok_or_else(|| anyhow!("map {MAP_PID_STATS} missing"))?,
        )?;
        let mut pids = Vec::new();
        for p in &self.pids {
            let hist = match pid_stats.get(&p.id, 0) {
                Ok(per_cpu) => merge(&per_cpu).runnable_wait,
                Err(_) => LatencyHist::ZERO,
            };
            pids.push(PidEntry {
                pid: p.id,
                kind: p.kind,
                comm: p.comm.clone(),
                cgroup: p.cgroup.clone(),
                runnable_wait: WaitHistogram::from_hist(&hist),
            });
        }

        Ok(Recording {
            tool: "tracer".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            kernel: kernel_release(),
            cpus: online_cpus(),
            cgroup_mode: self.resolver.hierarchy().mode,
            cpu_hierarchy: self.resolver.hierarchy().mount.display().to_string(),
            started_unix_ns: self.started_unix_ns,
            duration_ns: duration.as_nanos() as u64,
            probes: self.probes.clone(),
            events,
            cgroups,
            pids,
        })
    }

    /// Every cgroup's statistics, summed over CPUs.
    fn read_per_cgroup(&self) -> anyhow::Result<Vec<(u64, CgroupStats)>> {
        let stats: PerCpuHashMap<_, u64, CgroupStats> = PerCpuHashMap::try_from(
            self.ebpf
                .map(MAP_CGROUP_STATS)
                .ok_or_else(|| anyhow!("map {MAP_CGROUP_STATS} missing"))?,
        )?;
        stats
            .iter()
            .map(|item| {
                let (id, per_cpu) = item.context("reading the per-cgroup map")?;
                Ok((id, merge(&per_cpu)))
            })
            .collect()
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

    fn read_counters(&self) -> anyhow::Result<Events> {
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(MAP_COUNTERS)
                .ok_or_else(|| anyhow!("map {MAP_COUNTERS} missing"))?,
        )?;
        let mut events = Events::default();
        for counter in Counter::ALL {
            let per_cpu = counters.get(&(counter as u32), 0)?;
            events.set(counter, per_cpu.iter().sum());
        }
        Ok(events)
    }
}

fn merge(per_cpu: &[CgroupStats]) -> CgroupStats {
    let mut total = CgroupStats::ZERO;
    for v in per_cpu {
        total.merge(v);
    }
    total
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn online_cpus() -> usize {
    aya::util::online_cpus().map(|c| c.len()).unwrap_or(0)
}
