//! Verdicts a user can act on: a host that is fine gets *healthy*, however
//! busy it looks, and real problems keep their names. Each test sets up a
//! workload whose waits are known to be short (or long) and checks the
//! verdict of its own cgroups.

use std::{process::Stdio, time::Duration};

use libtest_mimic::{Completion, Trial};
use tracer::{recording::Recording, session::Config, verdict::Kind};
use tracer_tests::{Load, TestCgroup, Worker, postgres::Postgres};

use crate::{
    QUIET, Scratch, TestResult, cgroup_in, check, cpus, measured, or_skip, privileged, record,
    share, unrelated_ns,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("an_idle_host_is_healthy_and_loses_nothing", idle_host),
        privileged("light_services_that_sleep_are_healthy", light_services),
        privileged(
            "a_database_client_alone_on_its_cpu_is_healthy",
            pgbench_alone,
        ),
        privileged(
            "a_database_with_24_busy_connections_on_one_cpu_is_self_contended",
            pgbench_crowded,
        ),
    ]
}

/// How the host's CPUs spent the time over a test, from `/proc/stat`.
struct HostCpu {
    /// Share of the CPUs' time not idle.
    busy: f64,
    /// Share of the CPUs' time the hypervisor ran something else while a
    /// vCPU had work (steal): the guest sees its threads wait for it, and
    /// no verdict of the tracer's can be expected to say "healthy" then.
    steal: f64,
}

/// Above this share of the CPUs' time stolen by the hypervisor, waits are
/// the host's, not the workload's.
const STEAL_LIMIT: f64 = 0.01;

/// Runs `f` and says how the host's CPUs spent the time meanwhile.
fn host_cpu<T>(f: impl FnOnce() -> T) -> anyhow::Result<(T, HostCpu)> {
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user and nice).
    let read = || -> anyhow::Result<[u64; 8]> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let mut cpu = [0u64; 8];
        let fields = stat.lines().next().unwrap_or_default().split_whitespace();
        for (slot, v) in cpu.iter_mut().zip(fields.skip(1)) {
            *slot = v.parse()?;
        }
        Ok(cpu)
    };
    let t0 = read()?;
    let out = f();
    let t1 = read()?;
    let d: Vec<u64> = t1
        .iter()
        .zip(t0)
        .map(|(a, b)| a.saturating_sub(b))
        .collect();
    let total = d.iter().sum::<u64>().max(1) as f64;
    Ok((
        out,
        HostCpu {
            busy: 1.0 - (d[3] + d[4]) as f64 / total,
            steal: d[7] as f64 / total,
        },
    ))
}

/// Why a *healthy* verdict cannot be expected of `ours` over `rec`: unrelated
/// load on their CPUs, or a hypervisor that took the CPUs away. Asked only
/// of a verdict that is not healthy: one that is holds whatever the host did.
fn unfair_host(rec: &Recording, ours: &[&TestCgroup], cpu: &HostCpu) -> Option<String> {
    if let Some(load) = disturbed(rec, ours) {
        return Some(format!(
            "unrelated load held the test's CPUs {:.1} % of the time",
            load * 100.0
        ));
    }
    stolen(cpu)
}

/// Why nothing can be expected of a host whose hypervisor took its CPUs
/// away, if it did.
fn stolen(cpu: &HostCpu) -> Option<String> {
    (cpu.steal >= STEAL_LIMIT).then(|| {
        format!(
            "the hypervisor took {:.1} % of the CPUs' time (steal in /proc/stat)",
            cpu.steal * 100.0
        )
    })
}

/// Nothing runs but the system: every cgroup is healthy and nothing is
/// lost, over several sessions. A host busy with something else (a build
/// beside the tests) is not idle: the test then says so and asserts nothing.
fn idle_host() -> TestResult {
    for round in 1..=3 {
        // Busy while traced, not while the programs load and the recording is
        // assembled: the verifier alone keeps a CPU busy for a moment.
        let session = crate::start_session(Config::default())?;
        let ((), cpu) = host_cpu(|| std::thread::sleep(Duration::from_secs(2)))?;
        let busy = cpu.busy;
        let rec = session.stop()?;
        if busy > 0.10 {
            return Ok(Completion::ignored_with(format!(
                "the host was {:.0} % busy during the test: not idle",
                busy * 100.0
            )));
        }
        let unhealthy: Vec<String> = rec
            .cgroups
            .iter()
            .filter(|c| c.verdict.kind != Kind::Healthy)
            .map(|c| format!("{}: {}", c.path, c.verdict.text))
            .collect();
        measured(format!(
            "round {round}: host {:.1} % busy, {} cgroups, {} waits, p99 of / {} ns",
            busy * 100.0,
            rec.cgroups.len(),
            rec.events.get(tracer_common::maps::Counter::WaitRecorded),
            rec.cgroups.iter().find(|c| c.path == "/").map_or(0, |c| c
                .wait
                .runnable_wait
                .summary
                .p99_ns)
        ));
        if !unhealthy.is_empty()
            && let Some(why) = stolen(&cpu)
        {
            return Ok(Completion::ignored_with(format!("{why}: {unhealthy:?}")));
        }
        check(unhealthy.is_empty(), || {
            format!("an idle host got verdicts: {unhealthy:?}")
        })?;
        check(rec.events.losses().is_empty(), || {
            format!("an idle host lost: {:?}", rec.events.losses())
        })?;
    }
    Ok(Completion::Completed)
}

/// Whether the test's own cgroups waited behind unrelated load (then a
/// *healthy* verdict cannot be expected of them).
fn disturbed(rec: &Recording, ours: &[&TestCgroup]) -> Option<f64> {
    let worst = ours
        .iter()
        .filter_map(|cg| cgroup_in(rec, cg).ok())
        .map(|e| share(unrelated_ns(e, ours), rec.duration_ns))
        .fold(0.0, f64::max);
    (worst >= QUIET).then_some(worst)
}

/// Four services that compute 0.3 ms and sleep 1 ms, over both CPUs: they
/// wait often but briefly, behind each other.
fn light_services() -> TestResult {
    let _ = or_skip!(cpus());
    let cg = TestCgroup::create("services")?;
    let _workers: Vec<Worker> = (0..4)
        .map(|_| {
            Worker::start_anywhere(
                Load::Service {
                    work_us: 300,
                    sleep_us: 1_000,
                },
                &cg,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(200));
    let (rec, cpu) = host_cpu(|| record(Config::default(), Duration::from_secs(3)))?;
    let rec = rec?;
    let e = cgroup_in(&rec, &cg)?;
    let s = &e.wait.runnable_wait.summary;
    measured(format!(
        "{} waits, {:.1} % of the time, p99 {} ns, steal {:.2} %: {}",
        s.count,
        share(s.total_ns, rec.duration_ns) * 100.0,
        s.p99_ns,
        cpu.steal * 100.0,
        e.verdict.text
    ));
    if e.verdict.kind != Kind::Healthy
        && let Some(why) = unfair_host(&rec, &[&cg], &cpu)
    {
        return Ok(Completion::ignored_with(why));
    }
    if e.verdict.kind == Kind::WakeupLatency {
        // Idle CPUs slow to take a woken thread (deep idle states, a
        // hypervisor slow to run a halted vCPU) are the host's, and true;
        // what this test is about is the services' waits behind each other.
        return Ok(Completion::ignored_with(format!(
            "this host's idle CPUs were slow to run woken threads: {}",
            e.verdict.text
        )));
    }
    check(e.verdict.kind == Kind::Healthy, || {
        format!("light services got: {}", e.verdict.text)
    })?;
    Ok(Completion::Completed)
}

/// `pgbench` runs read-only transactions over `clients` connections for
/// `seconds`, itself in cgroup `client` on `cpu`, while a session traces.
fn traced_pgbench(
    pg: &Postgres,
    client: &TestCgroup,
    cpu: usize,
    clients: u32,
    seconds: u64,
) -> anyhow::Result<Recording> {
    let session = tracer::session::Session::start(Config::default())?;
    let script = format!(
        "echo $$ > {} && exec taskset -c {cpu} \"$@\"",
        client.dir.join("cgroup.procs").display()
    );
    let args: Vec<String> = std::iter::once("pgbench".to_owned())
        .chain(pg.pgbench_args())
        .chain([
            "-n".into(),
            "-S".into(),
            "-c".into(),
            clients.to_string(),
            "-j".into(),
            clients.min(4).to_string(),
            "-T".into(),
            seconds.to_string(),
            "postgres".into(),
        ])
        .collect();
    let out = std::process::Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(&args)
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or_default()
        .to_owned();
    measured(tps);
    session.stop()
}

/// One pgbench client on a CPU of its own, the server on the other: the
/// client waits for every answer but never for a CPU for long.
fn pgbench_alone() -> TestResult {
    if let Some(why) = tracer_tests::postgres::missing() {
        return Ok(Completion::ignored_with(why));
    }
    let (quiet, busy) = or_skip!(cpus());
    let scratch = Scratch::new("pg-alone")?;
    let server = TestCgroup::create("pg-server")?;
    let client = TestCgroup::create("pg-client")?;
    let pg = Postgres::start(&scratch.0.join("pg"), &server, quiet)?;
    pg.init_pgbench()?;
    let (rec, cpu) = host_cpu(|| traced_pgbench(&pg, &client, busy, 1, 3))?;
    let rec = rec?;
    let e = cgroup_in(&rec, &client)?;
    let s = &e.wait.runnable_wait.summary;
    measured(format!(
        "client: {} waits, p99 {} ns, steal {:.2} %: {}",
        s.count,
        s.p99_ns,
        cpu.steal * 100.0,
        e.verdict.text
    ));
    if e.verdict.kind != Kind::Healthy
        && let Some(why) = unfair_host(&rec, &[&client, &server], &cpu)
    {
        return Ok(Completion::ignored_with(why));
    }
    check(s.count > 1000, || {
        format!("only {} waits: pgbench did not run", s.count)
    })?;
    check(e.verdict.kind == Kind::Healthy, || {
        format!("a client alone on its CPU got: {}", e.verdict.text)
    })?;
    Ok(Completion::Completed)
}

/// 24 busy connections to a server pinned to one CPU: its backends
/// outnumber the CPU, and wait behind each other.
fn pgbench_crowded() -> TestResult {
    if let Some(why) = tracer_tests::postgres::missing() {
        return Ok(Completion::ignored_with(why));
    }
    let (quiet, busy) = or_skip!(cpus());
    let scratch = Scratch::new("pg-crowded")?;
    let server = TestCgroup::create("pg-server")?;
    let client = TestCgroup::create("pg-client")?;
    let pg = Postgres::start(&scratch.0.join("pg"), &server, busy)?;
    pg.init_pgbench()?;
    let rec = traced_pgbench(&pg, &client, quiet, 24, 3)?;
    let e = cgroup_in(&rec, &server)?;
    measured(format!(
        "server waited {:.1} threads' worth, p99 {} ns: {}",
        share(e.wait.runnable_wait.summary.total_ns, rec.duration_ns),
        e.wait.runnable_wait.summary.p99_ns,
        e.verdict.text
    ));
    check(e.verdict.kind == Kind::SelfContention, || {
        format!("24 connections on one CPU got: {}", e.verdict.text)
    })?;
    check(e.verdict.text.contains("on average"), || {
        format!("thread time not said in threads: {}", e.verdict.text)
    })?;
    Ok(Completion::Completed)
}
