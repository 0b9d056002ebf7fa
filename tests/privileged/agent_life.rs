//! `tracer agent` through its life: one per host, dumps on SIGUSR1 and at
//! exit, and whatever way it ends (SIGTERM while running or while still
//! loading its programs, SIGKILL), no program of its stays loaded.

use std::{
    collections::BTreeSet,
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use libtest_mimic::{Completion, Trial};
use tracer::dump;
use tracer_tests::{
    Load, TestCgroup, Worker, inspect, loaded_tracer_programs,
    services::{self, Agent, wait_for},
    settle_tracer_programs,
};

use crate::{Scratch, TestResult, agent, bin, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("agent_lock_signals_dumps_and_a_clean_exit", lifecycle),
        privileged(
            "agent_sigterm_while_loading_exits_cleanly_and_detaches",
            sigterm_while_loading,
        ),
        privileged("agent_killed_leaves_no_program_loaded", sigkill),
    ]
}

/// One agent per host, a dump on SIGUSR1, rolling dumps pruned, and SIGTERM:
/// exit status 0, a last dump, no program left in the kernel.
fn lifecycle() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let scratch = Scratch::new("lifecycle")?;
    let dumps = PathBuf::from(scratch.file("dumps"));
    let config = scratch.file("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"500ms\"\nlock_file = \"{}\"\n[dumps]\ndir = \"{}\"\nevery = \"2s\"\nkeep = 3\n",
            scratch.file("agent.lock"),
            dumps.display()
        ),
    )?;
    let cg = TestCgroup::create("agent-life")?;
    // Wakes every 20 ms, so that every dump window sees it run (a hog alone on
    // its CPU may not be switched out, and so not counted, for a whole window).
    let _w = Worker::start(Load::MostlySleep, &cg, busy)?;
    let programs_before = settle_tracer_programs(loaded_tracer_programs());

    let agent = Agent::start(&bin, &["--config", &config], &scratch.0)?;
    let (status, health) = services::http_get(agent.addr, "/health", None)?;
    check(
        status == 200 && health.contains("\"status\":\"ok\""),
        || format!("/health: {status} {health}"),
    )?;
    let (status, _) = services::http_get(agent.addr, "/nowhere", None)?;
    check(status == 404, || format!("/nowhere answered {status}"))?;
    let (_, openmetrics) = services::http_get(
        agent.addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )?;
    check(openmetrics.ends_with("# EOF\n"), || {
        "OpenMetrics page without # EOF".into()
    })?;

    // A second agent on the same host is refused, whatever port it asks for.
    let second = Command::new(&bin)
        .args(["agent", "--config", &config, "--listen", "127.0.0.1:0"])
        .output()?;
    let err = String::from_utf8_lossy(&second.stderr);
    check(!second.status.success(), || "a second agent started".into())?;
    check(
        err.contains("another tracer agent is running") && err.contains(&agent.pid.to_string()),
        || format!("second agent's error does not say who holds the lock: {err}"),
    )?;

    // The window since the start: long enough for the worker to run in it,
    // shorter than the 2 s after which a periodic dump starts a new one.
    std::thread::sleep(Duration::from_millis(1000));
    agent.signal(libc::SIGUSR1);
    let signalled = wait_for("the SIGUSR1 dump", Duration::from_secs(10), || {
        find_dump(&dumps, "-signal.json")
    })?;
    let rec = dump::read(&signalled)?;
    let entry = rec.cgroups.iter().find(|c| c.path == cg.path);
    check(entry.is_some_and(|e| e.on_cpu.summary.total_ns > 0), || {
        format!(
            "{} missing or idle in the SIGUSR1 dump of {} ms: {:?}",
            cg.path,
            rec.duration_ns / 1_000_000,
            rec.cgroups
                .iter()
                .map(|c| (&c.path, c.on_cpu.summary.count))
                .collect::<Vec<_>>()
        )
    })?;

    std::thread::sleep(Duration::from_secs(5));
    let kept = dump_files(&dumps).len();
    check(kept <= 3, || format!("{kept} dumps kept, keep = 3"))?;

    let pid = agent.pid;
    let (status, log) = agent.terminate(Duration::from_secs(10))?;
    check(status.success(), || {
        format!("agent {pid} exited with {status} on SIGTERM: {log}")
    })?;
    check(log.contains("every program detached"), || {
        format!("the agent did not report detaching: {log}")
    })?;
    let last = find_dump(&dumps, "-exit.json").ok_or("no dump written at exit")?;
    let rec = dump::read(&last)?;
    check(rec.duration_ns > 0, || "empty exit dump".into())?;
    let left = settle_tracer_programs(programs_before);
    measured(format!(
        "dumps kept {kept}; exit dump covers {:.1} s; programs loaded after exit: {left} (before: {programs_before})",
        rec.duration_ns as f64 / 1e9
    ));
    check(left <= programs_before, || {
        format!("{left} tracer programs still loaded after SIGTERM ({programs_before} before)")
    })?;
    Ok(Completion::Completed)
}

fn dump_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn find_dump(dir: &Path, suffix: &str) -> Option<PathBuf> {
    dump_files(dir)
        .into_iter()
        .rfind(|p| p.to_string_lossy().ends_with(suffix))
}

/// How long the kernel may take to free the programs of a process that has
/// exited: it frees each after an RCU grace period once its last descriptor
/// (program or link) is closed.
const FREED_WITHIN: Duration = Duration::from_secs(5);

/// Waits until none of `ids` is loaded; returns those still loaded then.
fn freed(ids: &BTreeSet<u32>) -> BTreeSet<u32> {
    wait_for("the kernel to free the programs", FREED_WITHIN, || {
        inspect::still_loaded(ids).is_empty().then_some(())
    })
    .map_or_else(|_| inspect::still_loaded(ids), |()| BTreeSet::new())
}

/// SIGTERM as soon as the agent listens, before or while its programs load
/// (it listens first, so that a bad address fails before anything is
/// loaded): it must still exit 0, detached, with nothing left loaded.
fn sigterm_while_loading() -> TestResult {
    let bin = or_skip!(bin());
    let scratch = Scratch::new("sigterm-loading")?;
    let before = settle_tracer_programs(loaded_tracer_programs());
    let mut agent = agent(&bin, &scratch, "1s", &[], false)?;
    let addr = agent.addr;
    // Polled tightly: the load takes a fraction of a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        check(!agent.exited() && Instant::now() < deadline, || {
            format!("the agent never listened: {}", agent.log())
        })?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let held = inspect::program_ids(agent.pid)?;
    agent.signal(libc::SIGTERM);
    let log_at_signal = agent.log();
    // The agent finishes loading, then detaches: seconds here, more than
    // 20 s in the 6.12 guest beside a build (verified under emulation).
    let patience = Duration::from_secs(if crate::emulated() { 90 } else { 20 });
    let (status, log) = agent.wait(patience)?;
    let left = settle_tracer_programs(before);
    measured(format!(
        "at SIGTERM the agent held {} programs and had {} attaching; exit {status}; loaded after: {left} (before: {before})",
        held.len(),
        if log_at_signal.contains("probes attached") {
            "finished"
        } else {
            "not finished"
        }
    ));
    check(status.success(), || {
        format!("SIGTERM while loading: the agent exited with {status}: {log}")
    })?;
    check(freed(&held).is_empty(), || {
        format!("programs {held:?} of the agent still loaded")
    })?;
    check(left <= before, || {
        format!("{left} tracer programs loaded after the agent exited, {before} before")
    })?;
    Ok(Completion::Completed)
}

/// SIGKILL gives the agent no chance to detach: the kernel must, as it
/// closes the agent's descriptors. Its programs are counted while it runs,
/// so that the check can fail.
fn sigkill() -> TestResult {
    let bin = or_skip!(bin());
    let scratch = Scratch::new("sigkill")?;
    let agent = agent(&bin, &scratch, "500ms", &[], true)?;
    let held = inspect::program_ids(agent.pid)?;
    let loaded = inspect::still_loaded(&held);
    check(!held.is_empty() && loaded == held, || {
        format!("a running agent holds programs {held:?}, of which the kernel lists {loaded:?}")
    })?;
    agent.signal(libc::SIGKILL);
    let (status, _) = agent.wait(Duration::from_secs(10))?;
    let left = freed(&held);
    measured(format!(
        "the agent held {} programs ({held:?}); after SIGKILL ({status}) still loaded: {left:?}",
        held.len()
    ));
    check(left.is_empty(), || {
        format!("programs {left:?} of the killed agent are still loaded")
    })?;
    Ok(Completion::Completed)
}
