//! The programs' cost by the kernel's own account (BPF statistics), under two
//! loads: the pinned ping-pong, where nearly every wait is short, and a
//! contended CPU, where four hogs in four cgroups share one CPU with the
//! ping-pong in a fifth, so that each of its waits spans several runs of
//! others (the work per wait that grows with contention). Each variant's
//! service throughput is shown beside it: what the application felt.

use std::{collections::BTreeMap, path::Path, process::Command, time::Instant};

use super::{
    Attached, Tracers, Variant, attach,
    bpf_stats::{Objects, Runs, StatsOn, host_switches},
    cgroups::Cgroups,
    median, ping_pong,
};

/// Busy loops sharing the service's CPU, each in a cgroup of its own.
const HOGS: usize = 4;
/// Seconds of service per measured run under contention.
const CONTENDED_SECONDS: f64 = 3.0;

#[derive(Clone, Copy)]
pub enum Load {
    PingPong,
    Contended,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::PingPong => "ping-pong",
            Load::Contended => "contended CPU",
        }
    }

    fn describe(self, cpu: u32) -> String {
        match self {
            Load::PingPong => format!("pinned ping-pong on CPU {cpu}"),
            Load::Contended => format!(
                "{HOGS} hogs in {HOGS} cgroups and the ping-pong in a fifth, all on CPU {cpu}"
            ),
        }
    }
}

/// One measured run of a variant.
struct Sample {
    /// Round trips of the service per second.
    service_per_s: f64,
    switches_per_s: f64,
    /// Programs' runs over the run, by name.
    programs: BTreeMap<String, Runs>,
    seconds: f64,
    switches: u64,
    map_bytes: u64,
}

impl Sample {
    fn program_ns(&self) -> u64 {
        self.programs.values().map(|r| r.ns).sum()
    }

    fn ns_per_switch(&self) -> f64 {
        self.program_ns() as f64 / self.switches.max(1) as f64
    }
}

/// Runs the service once with `attached` tracing: `loops` round trips of the
/// ping-pong on `cpu`, in `cgroup` if given.
fn sample(
    attached: &Attached,
    cpu: u32,
    loops: u64,
    cgroup: Option<&Path>,
) -> anyhow::Result<Sample> {
    let objects = || attached.pid().map(Objects::of).transpose();
    let before = objects()?;
    let switches0 = host_switches()?;
    let start = Instant::now();
    let ns_per_switch = ping_pong(cpu, loops, cgroup)?;
    let seconds = start.elapsed().as_secs_f64();
    let switches = host_switches()? - switches0;
    let after = objects()?;
    let (programs, map_bytes) = match (&after, &before) {
        (Some(a), Some(b)) => (a.since(b), a.map_bytes),
        _ => (BTreeMap::new(), 0),
    };
    Ok(Sample {
        // Two switches per round trip.
        service_per_s: 1e9 / (2.0 * ns_per_switch),
        switches_per_s: switches as f64 / seconds,
        programs,
        seconds,
        switches,
        map_bytes,
    })
}

/// The median per-switch program cost of each variant under `load`, with the
/// table behind it; returns (tracer, runqlat) ns per switch.
pub fn run(
    load: Load,
    tracers: &Tracers,
    cpu: u32,
    loops: u64,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    let _stats = StatsOn::new()?;
    let mut hogs = None;
    let mut service_cgroup = None;
    let loops = match load {
        Load::PingPong => loops,
        Load::Contended => {
            let mut cgroups = Cgroups::new("contended")?;
            for i in 0..HOGS {
                let mut hog = Command::new("taskset");
                hog.args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"]);
                cgroups.spawn(&format!("hog{i}"), hog)?;
            }
            let dir = cgroups.dir("service")?;
            // As many round trips as take CONTENDED_SECONDS behind the hogs.
            let ns = ping_pong(cpu, 2_000, Some(&dir))?;
            service_cgroup = Some(dir);
            hogs = Some(cgroups);
            ((CONTENDED_SECONDS * 1e9 / (2.0 * ns)) as u64).max(1_000)
        }
    };
    println!();
    println!(
        "programs' cost: {}, {loops} round trips per run, {rounds} rounds, kernel BPF statistics on",
        load.describe(cpu)
    );
    let mut results: Vec<(Variant, Vec<Sample>)> = tracers
        .variants()
        .into_iter()
        .map(|v| (v, Vec::new()))
        .collect();
    for round in 0..rounds {
        for variant in tracers.round(round) {
            let attached = attach(variant, tracers)?;
            let s = sample(&attached, cpu, loops, service_cgroup.as_deref())?;
            drop(attached);
            println!(
                "  round {}: {:<24} {:>9.0} round trips/s {:>9.0} switches/s {:>7.1} ns/switch in programs",
                round + 1,
                variant.label(),
                s.service_per_s,
                s.switches_per_s,
                s.ns_per_switch()
            );
            if let Some((_, v)) = results.iter_mut().find(|(v, _)| *v == variant) {
                v.push(s);
            }
        }
    }
    drop(hogs);
    Ok(summarise(&results))
}

fn summarise(results: &[(Variant, Vec<Sample>)]) -> (f64, f64) {
    println!();
    println!(
        "{:<24} {:>14} {:>12} {:>12} {:>13} {:>10}   per program: ns/run (runs/s)",
        "variant", "round trips/s", "switches/s", "ns/switch", "programs CPU", "maps"
    );
    let mut per_switch = BTreeMap::new();
    for (variant, samples) in results {
        let m = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
        let ns = m(&|s| s.ns_per_switch());
        per_switch.insert(variant.label(), ns);
        // Per program: summed over the rounds.
        let mut programs: BTreeMap<&str, Runs> = BTreeMap::new();
        for s in samples {
            for (name, r) in &s.programs {
                let p = programs.entry(name).or_default();
                p.count += r.count;
                p.ns += r.ns;
            }
        }
        let seconds: f64 = samples.iter().map(|s| s.seconds).sum();
        let detail: Vec<String> = programs
            .iter()
            .filter(|(_, r)| r.count > 0)
            .map(|(name, r)| {
                format!(
                    "{name} {:.0} ({:.0})",
                    r.ns as f64 / r.count as f64,
                    r.count as f64 / seconds
                )
            })
            .collect();
        let maps = samples.iter().map(|s| s.map_bytes).max().unwrap_or(0);
        println!(
            "{:<24} {:>14.0} {:>12.0} {:>12.1} {:>12.3}% {:>6.1} MiB   {}",
            variant.label(),
            m(&|s| s.service_per_s),
            m(&|s| s.switches_per_s),
            ns,
            m(&|s| s.program_ns() as f64 / (s.seconds * 1e9)) * 100.0,
            maps as f64 / 1048576.0,
            detail.join(", ")
        );
    }
    let tracer = per_switch[Variant::Tracer.label()];
    let runqlat = per_switch[Variant::Runqlat.label()];
    if let Some(slower) = per_switch.get(Variant::Slower.label()) {
        println!(
            "with --slower: {slower:.0} ns per switch in programs, {:+.0} ns beside the tracer without it",
            slower - tracer
        );
    }
    println!(
        "in programs per switch: tracer {tracer:.0} ns, runqlat {runqlat:.0} ns: {:.2}x (target: at most 0.5x: {})",
        tracer / runqlat,
        if tracer <= 0.5 * runqlat {
            "met"
        } else {
            "NOT met"
        }
    );
    (tracer, runqlat)
}
