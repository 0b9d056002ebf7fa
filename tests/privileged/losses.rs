//! Every loss the tracer can suffer is counted and shown. Each test makes one
//! map too small on purpose (`--max-cgroups`, `--map-size`, the pre-6.1 object
//! with a small thread map) and checks that the loss is counted under its own
//! name and that the report's LOST line says so.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use libtest_mimic::{Completion, Trial};
use tracer::{
    programs::{StoreChoice, TierChoice},
    recording::Recording,
    report::{self, TextOptions},
    session::Config,
};
use tracer_common::maps::{
    Counter, CounterKind, MAP_BLAME, MAP_EVENTS, MAP_SELECTION_STATS, MAP_TASK_WAIT,
    MAP_THROTTLE_CLOCKS,
};
use tracer_tests::{Load, TestCgroup, Worker};

use crate::{TestResult, check, cpus, measured, or_skip, privileged, record};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("a_full_cgroup_map_counts_its_losses", full_cgroup_map),
        privileged("a_full_blame_map_counts_its_losses", full_blame_map),
        privileged("a_full_selection_map_counts_its_losses", full_selection_map),
        privileged("a_small_ring_buffer_counts_its_drops", small_ring_buffer),
        privileged("a_full_thread_map_counts_its_losses", full_thread_map),
        privileged("a_migration_unseen_counts_a_read_failure", migration_unseen),
        privileged(
            "an_evicted_throttle_clock_counts_its_loss",
            evicted_throttle_clock,
        ),
    ]
}

/// The counter is non-zero, a loss, and named on the report's LOST line.
fn lost(rec: &Recording, counter: Counter) -> TestResult {
    let n = rec.events.get(counter);
    let text = report::render(rec, TextOptions::default());
    let line = text
        .lines()
        .find(|l| l.starts_with("events:"))
        .unwrap_or_default()
        .to_owned();
    measured(format!("{} {}: {line}", n, counter.name()));
    check(counter.kind() == CounterKind::Loss, || {
        format!("{} is not a loss", counter.name())
    })?;
    check(n > 0, || format!("no {} counted", counter.name()))?;
    check(
        line.contains("LOST:") && line.contains(counter.name()),
        || format!("the report does not say it: {line}"),
    )?;
    Ok(Completion::Completed)
}

fn sized(map: &str, entries: u32) -> Config {
    Config {
        map_sizes: vec![(map.to_owned(), entries)],
        ..Config::default()
    }
}

/// Two entries for twelve busy cgroups on one CPU, whose spill slots hold
/// four: the rest find neither.
fn full_cgroup_map() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cgroups: Vec<TestCgroup> = (0..12)
        .map(|i| TestCgroup::create(&format!("full-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let _workers: Vec<Worker> = cgroups
        .iter()
        .map(|cg| Worker::start(Load::MostlySleep, cg, busy))
        .collect::<anyhow::Result<_>>()?;
    let rec = record(
        Config {
            max_cgroups: 2,
            ..Config::default()
        },
        Duration::from_secs(2),
    )?;
    lost(&rec, Counter::CgroupMapFull)
}

/// Two blame rows for four hogs in four cgroups taking turns on one CPU.
fn full_blame_map() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cgroups: Vec<TestCgroup> = (0..4)
        .map(|i| TestCgroup::create(&format!("blame-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let _workers: Vec<Worker> = cgroups
        .iter()
        .map(|cg| Worker::start(Load::Spin, cg, busy))
        .collect::<anyhow::Result<_>>()?;
    let rec = record(sized(MAP_BLAME, 2), Duration::from_secs(2))?;
    lost(&rec, Counter::BlameMapFull)
}

/// Room for one selection's figures, two selected hogs.
fn full_selection_map() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("selected")?;
    let a = Worker::start(Load::Spin, &cg, busy)?;
    let b = Worker::start(Load::Spin, &cg, busy)?;
    let rec = record(
        Config {
            pids: vec![a.pid, b.pid],
            ..sized(MAP_SELECTION_STATS, 1)
        },
        Duration::from_secs(2),
    )?;
    lost(&rec, Counter::SelectionMapFull)
}

/// A 4 KiB ring buffer holds about 46 new-cgroup records; 300 new cgroups
/// announce themselves faster than userspace drains it (every 250 ms).
fn small_ring_buffer() -> TestResult {
    let parent = TestCgroup::create("ring")?;
    let children: Vec<TestCgroup> = (0..300)
        .map(|i| parent.child(&format!("c{i}")))
        .collect::<anyhow::Result<_>>()?;
    // The shell ends in the last child (under cgroup v2 the parent may hold
    // no process once its children have controllers) and exits before the
    // cgroups are removed.
    let script: String = children
        .iter()
        .map(|c| format!("echo $$ > {}/cgroup.procs; /bin/true\n", c.dir.display()))
        .collect();
    let session = crate::start_session(sized(MAP_EVENTS, 4096))?;
    let status = Command::new("sh").args(["-c", &script]).status()?;
    check(status.success(), || "the hopping shell failed".into())?;
    std::thread::sleep(Duration::from_millis(300));
    let rec = session.stop()?;
    drop(children);
    lost(&rec, Counter::RingbufDrop)
}

/// The pre-6.1 object keeps each thread's wait in a hash map; with room for
/// 32 threads, 60 shells starting processes in a loop overflow it.
fn full_thread_map() -> TestResult {
    let cg = TestCgroup::create("threads")?;
    let mut shells: Vec<Child> = (0..60)
        .map(|_| {
            Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "echo $$ > {} && while :; do /bin/true; sleep 0.01; done",
                        cg.dir.join("cgroup.procs").display()
                    ),
                ])
                .stdin(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let rec = record(
        Config {
            store: StoreChoice::Legacy,
            ..sized(MAP_TASK_WAIT, 32)
        },
        Duration::from_secs(2),
    );
    for shell in &mut shells {
        let _ = shell.kill();
        let _ = shell.wait();
    }
    let rec = rec?;
    check(rec.state.contains("hash map"), || {
        format!("not the pre-6.1 object: {}", rec.state)
    })?;
    lost(&rec, Counter::TaskStorageFail)
}

/// Moves `pid` to `cpu` alone (sched_setaffinity).
fn move_to(pid: u32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let r = unsafe { libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Without sched_migrate_task attached, a wait that ends on another CPU than
/// it began cannot be split: a hog waiting behind another is moved back and
/// forth between the two CPUs every 20 ms, and its moved waits are counted
/// as kernel read failures.
fn migration_unseen() -> TestResult {
    let cpus = tracer_tests::online_cpus();
    let [a, b, ..] = cpus[..] else {
        return Ok(Completion::ignored_with("needs two online CPUs"));
    };
    let cg = TestCgroup::create("unseen")?;
    let _hog_a = Worker::start(Load::Spin, &cg, a)?;
    let _hog_b = Worker::start(Load::Spin, &cg, b)?;
    let mover = Worker::start(Load::Spin, &cg, a)?;
    let session = crate::start_session(Config {
        left_out: vec!["sched_migrate_task".to_owned()],
        ..Config::default()
    })?;
    for i in 0..50 {
        move_to(mover.pid, if i % 2 == 0 { b } else { a })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = session.stop()?;
    check(
        rec.probes
            .iter()
            .any(|p| p.name == "sched_migrate_task" && !p.attached),
        || "sched_migrate_task was attached".into(),
    )?;
    lost(&rec, Counter::ReadFail)
}

/// The fentry tier keeps a throttle clock per throttled cfs_rq in an LRU map.
/// With room for two, four hogs under quotas throttling in turn on one CPU
/// evict each other's clocks while their tasks wait, and those waits' clock
/// reads less at their end than at their start. Skipped where the kernel
/// refuses fentry by policy (this machine), and from 6.6, where the waits'
/// clock is the kernel's own.
fn evicted_throttle_clock() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cgroups: Vec<TestCgroup> = (0..4)
        .map(|i| TestCgroup::create(&format!("clock-{i}")))
        .collect::<anyhow::Result<_>>()?;
    for cg in &cgroups {
        cg.set_quota(10_000, 100_000)?;
    }
    let _workers: Vec<Worker> = cgroups
        .iter()
        .map(|cg| Worker::start(Load::Spin, cg, busy))
        .collect::<anyhow::Result<_>>()?;
    let config = Config {
        tier: TierChoice::Fentry,
        ..sized(MAP_THROTTLE_CLOCKS, 2)
    };
    let session = match crate::start_or_skip_fentry(config)? {
        Ok(session) => session,
        Err(skip) => return Ok(skip),
    };
    std::thread::sleep(Duration::from_secs(2));
    let rec = session.stop()?;
    // From 6.6 the kernel's own self time is the waits' throttle clock, and
    // the tier's clocks only date episodes: none can go back.
    if !rec.throttle_method.starts_with("fentry") {
        return Ok(Completion::ignored_with(format!(
            "the waits' throttle clock here is the kernel's: {}",
            rec.throttle_method
        )));
    }
    lost(&rec, Counter::ThrottleClockLost)
}
