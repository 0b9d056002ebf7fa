//! Big hosts: what the tracer's maps take in the kernel and what the agent
//! reads per interval do not grow with the CPU count or with idle cgroups.
//! Here on this host's CPUs; `cargo xtask vm --scale` runs it in a guest
//! that believes it has 192 possible CPUs (the per-CPU maps' size).

use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed, Trial};
use tracer_tests::{
    TestCgroup,
    inspect::{cpu_seconds, map_memory},
    services::{Agent, sample_value, wait_for},
    spawn_in,
};

use crate::{Scratch, TestResult, bin, check, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "a_thousand_idle_cgroups_cost_the_agent_no_reads_and_little_kernel_memory",
        idle_thousand,
    )]
}

/// Idle cgroups with an entry in the kernel's map.
const CGROUPS: usize = 1_000;
/// The bound on the kernel memory of all the maps, with 1,000
/// cgroups on 192 possible CPUs.
const MAP_MEMORY_LIMIT: u64 = 64 << 20;
/// The agent's interval here.
const INTERVAL: Duration = Duration::from_secs(1);
/// Idle intervals measured.
const MEASURED: Duration = Duration::from_secs(10);
/// Of ours, how many may share a slot with a cgroup that did run (and so be
/// read with it): 1,000 of 4,096 slots taken, a few dozen active cgroups.
const SHARING_SLOTS: f64 = 32.0;

fn metric(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> Result<f64, Failed> {
    let page = agent.metrics()?;
    sample_value(&page, name, labels).ok_or_else(|| format!("{name} missing from /metrics").into())
}

/// 1,000 cgroups whose one process slept briefly and exited: each has an entry
/// in the kernel's map and then stays idle. Over ten idle intervals the
/// agent reads about the cgroups that ran (the host's own), not the
/// thousand; all the maps take at most 64 MiB of kernel memory.
fn idle_thousand() -> TestResult {
    let bin = or_skip!(bin());
    // The possible CPUs, what per-CPU maps are sized by, as the tracer counts them.
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    let scratch = Scratch::new("scale")?;
    let config = scratch.file("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"{}ms\"\nlock_file = \"{}\"\n",
            INTERVAL.as_millis(),
            scratch.file("agent.lock")
        ),
    )?;
    let agent = Agent::start(&bin, &["--config", &config], &scratch.0)?;
    let tracked_before = metric(&agent, "tracer_cgroups", &[("state", "tracked")])?;
    let (bytes_before, _) = map_memory(agent.pid)?;

    let parent = TestCgroup::create("scale")?;
    let cgroups: Vec<TestCgroup> = (0..CGROUPS)
        .map(|i| parent.child(&format!("c{i}")))
        .collect::<anyhow::Result<_>>()?;
    for chunk in cgroups.chunks(100) {
        let children: Vec<_> = chunk
            .iter()
            // Switched in after joining the cgroup (a sleep's wakeup), which
            // is when a cgroup gets its entry.
            .map(|cg| spawn_in(cg, "/bin/sh", &["-c", "sleep 0.01"]))
            .collect::<anyhow::Result<_>>()?;
        for mut c in children {
            c.wait()?;
        }
    }
    let patience = Duration::from_secs(if crate::emulated() { 180 } else { 30 });
    wait_for("the agent to track the thousand cgroups", patience, || {
        let tracked = metric(&agent, "tracer_cgroups", &[("state", "tracked")]).ok()?;
        (tracked >= tracked_before + CGROUPS as f64).then_some(())
    })?;
    // A read or two to take the last of the creation in.
    std::thread::sleep(2 * INTERVAL);

    let read0 = metric(&agent, "tracer_cgroup_entries_read_total", &[])?;
    let cpu0 = cpu_seconds(agent.pid)?;
    let started = Instant::now();
    std::thread::sleep(MEASURED);
    let read1 = metric(&agent, "tracer_cgroup_entries_read_total", &[])?;
    let cpu1 = cpu_seconds(agent.pid)?;
    let intervals = (started.elapsed().as_secs_f64() / INTERVAL.as_secs_f64()).max(1.0);
    let tracked = metric(&agent, "tracer_cgroups", &[("state", "tracked")])?;
    let (map_bytes, maps) = map_memory(agent.pid)?;
    let resident = agent.resident_bytes()?;
    let read_per_interval = (read1 - read0) / intervals;
    let cpu_per_interval = (cpu1 - cpu0) / intervals;
    // The cgroups that are not ours: the host's, which may run any time.
    let others = tracked - CGROUPS as f64;
    measured(format!(
        "{cpus} possible CPUs, {tracked} cgroups tracked ({others} not ours): {:.1} MiB in {maps} maps, \
         {:.1} MiB with {tracked_before} ({:.2} KiB per added cgroup), {read_per_interval:.1} entries \
         read per idle interval, agent {:.1} ms CPU per interval, {:.1} MiB resident",
        map_bytes as f64 / 1048576.0,
        bytes_before as f64 / 1048576.0,
        map_bytes.saturating_sub(bytes_before) as f64
            / 1024.0
            / (tracked - tracked_before).max(1.0),
        cpu_per_interval * 1000.0,
        resident as f64 / 1048576.0,
    ));
    check(map_bytes <= MAP_MEMORY_LIMIT, || {
        format!(
            "the maps take {:.1} MiB with {tracked} cgroups on {cpus} possible CPUs, over {} MiB",
            map_bytes as f64 / 1048576.0,
            MAP_MEMORY_LIMIT >> 20
        )
    })?;
    check(read_per_interval <= others + SHARING_SLOTS, || {
        format!(
            "{read_per_interval:.1} entries read per idle interval, with {others} cgroups \
             not ours that may have run: the idle ones are read too"
        )
    })?;
    // Emulated, the debug agent's last refresh over the thousand takes
    // seconds.
    agent.terminate(Duration::from_secs(if crate::emulated() { 90 } else { 10 }))?;
    drop(cgroups);
    Ok(Completion::Completed)
}
