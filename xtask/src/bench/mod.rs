//! `cargo xtask bench`: what tracing adds to each context switch.
//!
//! A context-switch ping-pong (`perf bench sched pipe`: two tasks, pinned to one
//! CPU, passing a token through pipes, so every round trip is two switches) runs
//! with nothing attached, with `tracer record` attached and with libbpf-tools'
//! `runqlat` attached. The three alternate round by round, in rotating order, so
//! that drift of the machine hits all of them alike; the medians are compared.
//! Then the programs' own cost per switch is read from the kernel's BPF
//! statistics on the ping-pong and on a contended CPU (`program_cost`), and
//! the agent's cost is measured (`agent`).

mod agent;
mod bpf_stats;
mod cgroups;
mod program_cost;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;

use crate::{cmd, run::build_release, setup};

#[derive(Args)]
pub struct Options {
    /// Rounds per variant.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Round trips per run of the ping-pong.
    #[arg(long, default_value_t = 200_000)]
    loops: u64,
    /// Seconds of ping-pong per agent measurement.
    #[arg(long, default_value_t = 30)]
    agent_seconds: u64,
    /// Run only one part: `switch` (time added per context switch),
    /// `programs` (the programs' run time, on the ping-pong and under
    /// contention) or `agent`.
    #[arg(long, value_parser = ["switch", "programs", "agent"])]
    only: Option<String>,
    /// Another build of the tracer (its binary) to measure beside this one,
    /// in the same rounds: an A/B of a change.
    #[arg(long)]
    compare: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Baseline,
    Tracer,
    Runqlat,
    /// This build with slow-wait records (`--slower`).
    Slower,
    /// The `--compare` build.
    Compared,
}

/// `--slower` of [`Variant::Slower`]: above the ping-pong's waits, below
/// some of the contended service's (four hogs' slices), so that its cost
/// there includes records sent.
const SLOWER: &str = "10ms";

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "nothing attached",
            Variant::Tracer => "tracer record",
            Variant::Runqlat => "runqlat (libbpf-tools)",
            Variant::Slower => "tracer record --slower 10ms",
            Variant::Compared => "tracer record (compared)",
        }
    }
}

/// The tracer builds under measurement.
struct Tracers {
    this: PathBuf,
    compared: Option<PathBuf>,
}

impl Tracers {
    /// The variants each round runs, in a rotating order.
    fn variants(&self) -> Vec<Variant> {
        let mut all = vec![
            Variant::Baseline,
            Variant::Tracer,
            Variant::Runqlat,
            Variant::Slower,
        ];
        if self.compared.is_some() {
            all.push(Variant::Compared);
        }
        all
    }

    /// The order of the variants in round `round`: rotated, so that drift of
    /// the machine hits all of them alike.
    fn round(&self, round: usize) -> Vec<Variant> {
        let mut all = self.variants();
        let n = all.len();
        all.rotate_left(round % n);
        all
    }
}

/// A tracer running in the background; interrupted and reaped on drop.
struct Attached(Option<Child>);

impl Attached {
    /// The tracer's process (it holds its programs and maps), if any.
    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SIGINT, as Ctrl-C: both tracers then detach and print their report.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` and waits until it prints a line containing `ready` on the
/// stream `from_stderr` selects, i.e. until its programs are attached.
fn start(mut cmd: Command, ready: &str, from_stderr: bool) -> anyhow::Result<Attached> {
    let what = cmd::describe(&cmd);
    if from_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let stream: Box<dyn std::io::Read + Send> = if from_stderr {
        Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?)
    } else {
        Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
    };
    let attached = Attached(Some(child));
    // Read on a thread so that a tracer that never gets ready cannot hang the bench.
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut signalled = false;
        // Keep draining after the ready line so that the child never blocks on a
        // full pipe.
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if !signalled && line.contains(&ready) {
                signalled = true;
                let _ = tx.send(());
            }
            line.clear();
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow!("{what} did not report being attached within 60 s"))?;
    Ok(attached)
}

fn attach(variant: Variant, tracers: &Tracers) -> anyhow::Result<Attached> {
    let record = |tracer: &Path, args: &[&str]| {
        let mut cmd = Command::new(tracer);
        cmd.arg("record").args(args);
        start(cmd, "Tracing", true)
    };
    match variant {
        Variant::Baseline => Ok(Attached(None)),
        Variant::Tracer => record(&tracers.this, &[]),
        Variant::Slower => record(&tracers.this, &["--slower", SLOWER]),
        Variant::Compared => match &tracers.compared {
            Some(path) => record(path, &[]),
            None => bail!("no build to compare with (--compare)"),
        },
        Variant::Runqlat => {
            // runqlat's stdout is a pipe here, so make it line-buffered to see
            // its "Tracing ..." line as soon as it is attached.
            let mut cmd = Command::new("stdbuf");
            cmd.args(["-oL", "runqlat"]);
            start(cmd, "Tracing", false)
        }
    }
}

/// One ping-pong run pinned to `cpu`, in `cgroup` if given: nanoseconds per
/// context switch.
pub fn ping_pong(cpu: u32, loops: u64, cgroup: Option<&Path>) -> anyhow::Result<f64> {
    // The shell joins the cgroup, then becomes perf: both tasks start there.
    let join = cgroup.map_or(String::new(), |dir| {
        format!("echo $$ > {}/cgroup.procs && ", dir.display())
    });
    let script = format!("{join}exec taskset -c {cpu} perf bench sched pipe -l {loops}");
    let out = cmd::output(Command::new("sh").args(["-c", &script]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "perf bench sched pipe failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let usecs_per_op: f64 = text
        .lines()
        .find(|l| l.contains("usecs/op"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no usecs/op in perf's output: {text}"))?;
    // One op is a round trip: two context switches.
    Ok(usecs_per_op * 1000.0 / 2.0)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn last_cpu() -> anyhow::Result<u32> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    online
        .trim()
        .rsplit([',', '-'])
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse online CPUs {online:?}"))
}

pub fn run(options: Options) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the benchmark attaches tracers: run it as root");
    }
    setup::ensure()?;
    setup::apt_packages(
        &["linux-perf", "libbpf-tools"],
        "for the benchmark (perf bench, runqlat)",
    )?;
    let tracer: PathBuf = build_release()?;
    if let Some(path) = &options.compare {
        ensure!(path.exists(), "--compare {}: no such file", path.display());
    }
    let tracers = Tracers {
        this: tracer.clone(),
        compared: options.compare.clone(),
    };
    let cpu = last_cpu()?;
    println!(
        "bench: perf bench sched pipe -l {} pinned to CPU {cpu}, {} rounds per variant, interleaved",
        options.loops, options.rounds
    );
    // Warm caches and frequency before the first measured run.
    ping_pong(cpu, options.loops / 4, None)?;
    let part = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    if part("switch") {
        switch_cost(&options, &tracers, cpu)?;
    }
    if part("programs") {
        let mut lines = Vec::new();
        for load in [program_cost::Load::PingPong, program_cost::Load::Contended] {
            let (tracer_ns, runqlat_ns) =
                program_cost::run(load, &tracers, cpu, options.loops, options.rounds)?;
            lines.push((load, tracer_ns, runqlat_ns));
        }
        println!();
        for (load, tracer_ns, runqlat_ns) in lines {
            println!(
                "programs per switch, {}: tracer {tracer_ns:.0} ns, runqlat {runqlat_ns:.0} ns ({:.2}x)",
                load.name(),
                tracer_ns / runqlat_ns
            );
        }
    }
    if part("agent") {
        agent::run(&tracer, cpu, options.loops, options.agent_seconds)?;
    }
    Ok(())
}

fn switch_cost(options: &Options, tracers: &Tracers, cpu: u32) -> anyhow::Result<()> {
    let mut results: Vec<(Variant, Vec<f64>)> = tracers
        .variants()
        .into_iter()
        .map(|v| (v, Vec::new()))
        .collect();
    for round in 0..options.rounds {
        for variant in tracers.round(round) {
            let attached = attach(variant, tracers)?;
            let ns = ping_pong(cpu, options.loops, None)?;
            drop(attached);
            if let Some((_, v)) = results.iter_mut().find(|(v, _)| *v == variant) {
                v.push(ns);
            }
            println!(
                "  round {}: {:<24} {ns:8.1} ns/switch",
                round + 1,
                variant.label()
            );
        }
    }

    let base = median(&results[0].1);
    println!();
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>14}",
        "variant", "median ns", "min", "max", "added ns"
    );
    for (variant, values) in &results {
        let m = median(values);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<24} {m:>12.1} {min:>10.1} {max:>10.1} {:>+14.1}",
            variant.label(),
            m - base
        );
    }
    let added = |variant: Variant| {
        results
            .iter()
            .find(|(v, _)| *v == variant)
            .map_or(f64::NAN, |(_, values)| median(values) - base)
    };
    let tracer_added = added(Variant::Tracer);
    let runqlat_added = added(Variant::Runqlat);
    println!();
    println!(
        "per context switch: tracer adds {tracer_added:.0} ns, runqlat adds {runqlat_added:.0} ns ({})",
        if tracer_added < runqlat_added {
            "tracer is cheaper"
        } else {
            "tracer is NOT cheaper"
        }
    );
    Ok(())
}
