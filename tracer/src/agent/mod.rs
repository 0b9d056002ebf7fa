//! `tracer agent`: the programs stay attached, the kernel's maps are read
//! every interval into a snapshot that `/metrics` serves, rolling dumps are
//! written, and SIGTERM detaches everything and writes a last dump.
//!
//! Reading the maps is the agent's only real work, done on this loop; HTTP is
//! served on a thread of its own ([`http::Server`]) from the last snapshot,
//! rendered once per refresh ([`published`]), so a scraper polling often
//! costs almost nothing and no client can delay a read.

pub mod config;
pub mod dumps;
pub mod export;
pub mod flight;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod program_cost;
pub mod published;

use std::{collections::HashSet, sync::Arc, time::Instant};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at},
};

use self::{
    config::Config,
    export::{Exporter, Occupancy, Series, Slot},
    http::web_config::WebConfig,
    metrics::{CgroupSeries, Snapshot},
    published::Published,
};
use crate::{
    privilege,
    recording::Recording,
    sample::Sample,
    session::{self, Session},
    timeline::{Timeline, rebase, recorder::Fired},
};

/// The agent's state between refreshes.
struct Agent {
    session: Session,
    config: Config,
    exporter: Exporter,
    occupancy: Occupancy,
    /// Where the current dump window started.
    window_start: Sample,
    evicted: u64,
    /// The programs' cost in the last sampled window.
    program_costs: Vec<program_cost::ProgramCost>,
    /// While BPF statistics are on.
    cost_window: Option<program_cost::Window>,
    cost_warned: bool,
    /// The kernel release, read once.
    kernel: String,
    /// The dumps this agent wrote, newest of their directory.
    written: dumps::Written,
    /// The current dump window's intervals, one per refresh, and the sample
    /// the last one ended at.
    timeline: Timeline,
    last_refresh: Sample,
    flight: Option<flight::Flight>,
}

impl Agent {
    /// Reads the maps and builds the next snapshot.
    fn refresh(&mut self) -> anyhow::Result<Snapshot> {
        let gone: HashSet<u64> = self.session.maintain()?.into_iter().collect();
        let now = self.session.sample()?;
        self.note_blame(&now);
        // The dump window's timeline: nothing to keep without dumps.
        if self.config.dumps.is_some() {
            self.timeline
                .push(self.session.interval(&now, &self.last_refresh));
        }

        let mut cgroups = Vec::new();
        for (&id, totals) in &now.cgroups {
            // Set aside earlier and already evicted from the exporter.
            if self.session.is_departed(id) && !gone.contains(&id) {
                continue;
            }
            let path = self.session.path_of(id);
            let workload = self.session.identify(&path);
            let series = || Series::from_totals(totals, now.episodes.get(&id));
            match self.exporter.slot(id, &path, &workload) {
                Slot::Own if !gone.contains(&id) => {
                    let occupants = self
                        .occupancy
                        .top(id, self.config.top_occupants)
                        .into_iter()
                        .map(|(occupant, ns)| (self.session.path_of(occupant), ns))
                        .collect();
                    let quota = self.session.quota_of(&path).map(|q| q.quota);
                    cgroups.push(CgroupSeries {
                        // Read for the cgroups under a quota only.
                        cpu_stat: now.cpu_stats.get(&path).copied(),
                        quota_cpus: quota.map(|q| q.cpus()),
                        quota_burst_seconds: quota.map(|q| q.burst_us as f64 / 1e6),
                        guaranteed_cpus: None,
                        psi: now.cgroup_psi.get(&path).copied(),
                        series: series(),
                        path,
                        workload,
                        occupants,
                    });
                }
                Slot::Own | Slot::Skipped => {}
                Slot::Other => self.exporter.update_summed(id, series()),
            }
        }
        // Weights are read for the exported cgroups only (and kept a while).
        let weights = self.session.weights_of(cgroups.iter().map(|c| &c.path));
        for c in &mut cgroups {
            c.guaranteed_cpus = weights.get(&c.path).map(|w| w.guaranteed_cpus());
        }
        self.evicted += gone.len() as u64;
        for &id in &gone {
            self.exporter.evict(id);
        }
        self.occupancy.evict(&gone);
        if self.config.dumps.is_none() {
            // No dump window reaches back: nothing set aside is needed again.
            self.session.release_departed();
        }

        let (agent_cpu_ns, agent_resident_bytes) = own_usage();
        let agent_heap_bytes = heap_in_use();
        let counters = now.counters;
        let psi = now.psi;
        self.last_refresh = now;
        Ok(Snapshot {
            other: self.exporter.other(),
            cgroups,
            counters,
            programs: self.program_costs.clone(),
            agent_cpu_ns,
            agent_resident_bytes,
            agent_heap_bytes,
            tracked_cgroups: self.session.tracked_cgroups(),
            entries_read: self.session.entries_read(),
            departed_cgroups: self.session.departed_cgroups(),
            exported_cgroups: self.exporter.exported(),
            evicted_cgroups: self.evicted,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: self.kernel.clone(),
            throttle_method: self.session.throttle_method().into(),
            tier: self.session.tier().name().into(),
            recorder: self.flight.as_ref().map(flight::Flight::stats),
            labels: self.config.labels.clone(),
            psi,
        })
    }

    /// Turns BPF statistics on for a window (see [`program_cost`]).
    fn open_cost_window(&mut self) {
        if self.cost_window.is_some() {
            return;
        }
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => {
                self.cost_window = Some(program_cost::Window {
                    _on: fd,
                    opened: Instant::now(),
                    start: self.session.program_stats(),
                });
            }
            Err(e) if !self.cost_warned => {
                self.cost_warned = true;
                eprintln!(
                    "tracer agent: cannot turn on BPF statistics (needs CAP_SYS_ADMIN), the programs' cost is not measured: {e}"
                );
            }
            Err(_) => {}
        }
    }

    /// Reads the window's figures and turns the statistics off again.
    fn close_cost_window(&mut self) {
        if let Some(window) = self.cost_window.take() {
            let end = self.session.program_stats();
            self.program_costs =
                program_cost::between(&window.start, &end, window.opened.elapsed());
        }
    }

    fn note_blame(&mut self, now: &Sample) {
        self.occupancy.update(
            now.blame_epoch,
            now.blame.iter().map(|(pair, (_, ns))| (pair, *ns)),
        );
    }

    /// Writes the dump of the window since the last one (`now` is the sample
    /// that ends it) and starts the next window.
    fn dump(&mut self, now: Sample, why: &str) {
        let Some(d) = self.config.dumps.clone() else {
            return;
        };
        // The blame up to now counts before it is released below.
        self.note_blame(&now);
        let mut rec = self.session.recording(&now, Some(&self.window_start));
        // The window's timeline, to its end.
        self.timeline
            .push(self.session.interval(&now, &self.last_refresh));
        rec.intervals = rebase(
            std::mem::take(&mut self.timeline).into_intervals(),
            self.window_start.elapsed_ns,
        );
        self.write(&d, &rec, why);
        self.last_refresh = now.clone();
        self.window_start = now;
        self.session.release_departed();
    }

    fn write(&mut self, d: &config::Dumps, rec: &Recording, why: &str) {
        match dumps::write_rolling(&d.dir, rec, why, d.keep, &mut self.written) {
            Ok(path) => eprintln!("tracer agent: wrote {}", path.display()),
            Err(e) => eprintln!("tracer agent: cannot write a dump: {e:#}"),
        }
    }

    /// The recorder's read; writes a trigger's dump when it is due.
    fn flight_tick(&mut self) {
        let Some(flight) = &mut self.flight else {
            return;
        };
        match flight.tick(&mut self.session) {
            Ok(Some(fired)) => self.flight_dump(Some(fired)),
            Ok(None) => {}
            Err(e) => eprintln!("tracer agent: cannot read the maps for the recorder: {e:#}"),
        }
    }

    /// Writes what the recorder holds: for a trigger, or on SIGUSR2.
    fn flight_dump(&mut self, fired: Option<Fired>) {
        let (Some(flight), Some(d)) = (&self.flight, self.config.dumps.clone()) else {
            eprintln!("tracer agent: SIGUSR2 ignored: no [recorder] is configured");
            return;
        };
        let why = if fired.is_some() {
            "trigger"
        } else {
            "recorder"
        };
        let rec = flight.recording(&mut self.session, fired);
        self.write(&d, &rec, why);
    }
}

/// The agent process's CPU time (user + system, ns) and resident memory (bytes).
fn own_usage() -> (u64, u64) {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let cpu = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        ns(ru.ru_utime) + ns(ru.ru_stime)
    } else {
        0
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    (cpu, resident)
}

/// Bytes the agent's allocator has handed out and not had back: what the
/// agent holds, whereas its resident memory also keeps what the allocator
/// was given back but has not returned to the kernel (glibc keeps the peak
/// of a burst of large reads resident). A leak grows this; a busier peak
/// grows only the resident figure. `None` where the C library cannot say.
fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions; it walks the arenas under
        // their locks.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    // First of all: from here a SIGTERM or SIGINT (or SIGUSR1) is held until
    // the loop below sees it, which then detaches everything. Loading the
    // programs takes a moment; without the handlers a signal then would kill
    // the process halfway.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut user2 = signal(SignalKind::user_defined2())?;
    if let Some(reason) = privilege::check() {
        anyhow::bail!("{reason}; run the agent as root (see deploy/ for a systemd unit)");
    }
    let access = match &config.web_config {
        Some(path) => Some(Arc::new(
            WebConfig::load(path)
                .and_then(|web| web.access())
                .with_context(|| format!("--web-config {}", path.display()))?,
        )),
        None => None,
    };
    let _lock = lock::acquire(&config.lock_file)?;
    let listener = http::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let address = listener.local_addr()?;
    if let Some(d) = &config.dumps {
        std::fs::create_dir_all(&d.dir).with_context(|| {
            format!(
                "cannot create the dump directory {} (--dump-dir, or --no-dumps)",
                d.dir.display()
            )
        })?;
    }

    // Served from now on: /health says "starting" until the first read.
    let published = Arc::new(Published::new(config.interval));
    let server = http::Server::start(
        listener,
        published.clone(),
        access.clone(),
        http::Limits::default(),
    )?;
    let mut session = Session::start(session::Config {
        pods_log_dir: config.pods_log_dir.clone(),
        ..session::Config::default()
    })?;
    let probes: Vec<String> = session
        .probes()
        .iter()
        .filter(|p| p.attached)
        .map(|p| p.name.clone())
        .collect();
    let window_start = session.sample()?;
    published.set_probes(probes.join(","));
    let (scheme, users) = match &access {
        Some(a) => (
            if a.tls.is_some() { "https" } else { "http" },
            if a.users.is_some() {
                " (basic auth)"
            } else {
                ""
            },
        ),
        None => ("http", ""),
    };
    eprintln!(
        "tracer agent: {} probes attached ({}; {}), throttled time from {}; serving {scheme}://{address}/metrics{users} every {:?}{}",
        probes.len(),
        probes.join(", "),
        session.tier().describe(),
        session.throttle_method(),
        config.interval,
        match &config.dumps {
            Some(d) => format!("; dumps in {} every {:?}", d.dir.display(), d.every),
            None => String::new(),
        }
    );

    let flight = config
        .recorder
        .clone()
        .map(|r| flight::Flight::new(r, window_start.clone()));
    // A recorder dump needs the recorder and somewhere to write it.
    if flight.is_some() && config.dumps.is_some() {
        published.set_recorder();
    }
    let mut agent = Agent {
        exporter: Exporter::new(config.export_limit, config.filter.clone()),
        occupancy: Occupancy::default(),
        session,
        timeline: Timeline::default(),
        last_refresh: window_start.clone(),
        flight,
        window_start,
        config,
        evicted: 0,
        program_costs: Vec::new(),
        cost_window: None,
        cost_warned: false,
        kernel: crate::host::kernel_release(),
        written: dumps::Written::default(),
    };
    let start = tokio::time::Instant::now();
    let mut refresh = interval_at(start, agent.config.interval);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dump_tick = agent.config.dumps.as_ref().map(|d| {
        let mut tick = interval_at(start + d.every, d.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    });
    // Between reads: new-cgroup records off the ring buffer while their
    // cgroups still exist, spill slots freed for the next burst.
    let mut drain = interval_at(start, session::DRAIN_EVERY);
    drain.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut costs = agent.config.program_stats.then(|| {
        let mut tick = interval_at(start, program_cost::EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    });
    let mut recorder_tick = agent.config.recorder.as_ref().map(|r| {
        let mut tick = interval_at(start + r.resolution, r.resolution);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    });
    let mut failures = 0u32;
    loop {
        let cost_window_end = agent
            .cost_window
            .as_ref()
            .map(|w| tokio::time::Instant::from_std(w.opened + program_cost::WINDOW));
        tokio::select! {
            // A signal that came while the programs loaded is seen first.
            biased;
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = async { costs.as_mut()?.tick().await; Some(()) }, if costs.is_some() => {
                agent.open_cost_window();
            }
            _ = async { tokio::time::sleep_until(cost_window_end?).await; Some(()) }, if cost_window_end.is_some() => {
                agent.close_cost_window();
            }
            _ = drain.tick() => agent.session.drain_events(),
            _ = refresh.tick() => match agent.refresh() {
                Ok(snapshot) => {
                    failures = 0;
                    published.publish(snapshot);
                }
                Err(e) => {
                    // /health turns stale; say it once, not every interval.
                    failures += 1;
                    if failures == 1 {
                        eprintln!("tracer agent: cannot read the maps: {e:#}");
                    }
                }
            },
            _ = async { dump_tick.as_mut()?.tick().await; Some(()) }, if dump_tick.is_some() => match agent.session.sample() {
                Ok(now) => agent.dump(now, "periodic"),
                Err(e) => eprintln!("tracer agent: cannot read the maps for a dump: {e:#}"),
            },
            _ = async { recorder_tick.as_mut()?.tick().await; Some(()) }, if recorder_tick.is_some() => {
                agent.flight_tick();
            }
            _ = user2.recv() => agent.flight_dump(None),
            _ = published.dump_requested() => agent.flight_dump(None),
            _ = user1.recv() => {
                if agent.config.dumps.is_none() {
                    eprintln!("tracer agent: SIGUSR1 ignored: dumps are disabled (--no-dumps)");
                } else {
                    match agent.session.sample() {
                        Ok(now) => agent.dump(now, "signal"),
                        Err(e) => eprintln!("tracer agent: cannot read the maps for a dump: {e:#}"),
                    }
                }
            }
        }
    }

    server.stop();
    agent.close_cost_window();
    let last = agent.session.detach()?;
    eprintln!("tracer agent: every program detached");
    agent.dump(last, "exit");
    Ok(())
}
