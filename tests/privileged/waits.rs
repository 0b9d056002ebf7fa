//! Run-queue wait per cgroup and per task, against the arithmetic of pinned
//! workloads and the kernel's per-task run delay.

use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};
use tracer::{histogram::Summary, recording::Recording, session::Config};
use tracer_tests::{Load, TestCgroup, Worker, run_delay_ns};

use crate::{
    TRACE_FOR, TestResult, apart, cgroup_in, check, cpus, emulated, measured, or_skip, privileged,
    schedstat_tolerance, share, unrelated_ns,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "two_busy_cgroups_sharing_a_cpu_each_wait_half_the_time",
            two_busy_cgroups,
        ),
        privileged("traced_wait_matches_schedstat_run_delay", matches_schedstat),
        privileged(
            "waits_begun_by_wakeups_match_schedstat_run_delay",
            wakeup_waits_match_schedstat,
        ),
        privileged(
            "first_waits_of_sleeping_and_new_threads_are_all_counted",
            first_waits,
        ),
    ]
}

/// Threads asleep as tracing begins, each woken once, and threads started
/// after it, each run once: every time one got a CPU ended a wait, and the
/// kernel counts both (`schedstat`'s timeslices and run delay). Where the
/// wakeup programs are left out (6.18), a switch-in the tracepoint does not
/// report is dated by what the task's run delay grew by since it was noted:
/// a task asleep since before tracing began had it noted by the iterator at
/// the start, and a new one's is its whole run delay. Before either, an idle
/// host lost one such wait in about 30 two-second sessions.
fn first_waits() -> TestResult {
    let (_, cpu) = or_skip!(cpus());
    let cg = TestCgroup::create("wake-once")?;
    let (early, late, tag) = (150, 150, 0);
    let load = Load::WakeOnce {
        early,
        late,
        step_ms: 4,
        tag,
    };
    let (go, done) = (Load::go_file(tag), Load::done_file(tag));
    let _ = (std::fs::remove_file(&go), std::fs::remove_file(&done));
    let fifo = std::ffi::CString::new(go.as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "mkfifo {}: {}",
            go.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    // Alone on its CPU, each wakes onto an idle CPU: those are the switch-ins
    // the tracepoint may not report.
    let worker = Worker::start(load, &cg, cpu)?;
    std::thread::sleep(Duration::from_millis(100));
    let session = crate::start_session(Config::default())?;
    let before = tracer_tests::thread_schedstats(worker.pid)?;
    // Opening it for writing wakes the worker's main thread, blocked in its
    // open for reading.
    drop(std::fs::OpenOptions::new().write(true).open(&go)?);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = tracer_tests::thread_schedstats(worker.pid)?;
    let rec = session.stop()?;
    let _ = (std::fs::remove_file(&go), std::fs::remove_file(&done));
    worker.stop();
    check(after.len() as u32 > early + late, || {
        format!("the worker ended with {} threads", after.len())
    })?;
    let (mut kernel_waits, mut kernel_ns) = (0, 0);
    for (tid, (delay, runs)) in &after {
        let (delay0, runs0) = before.get(tid).copied().unwrap_or_default();
        kernel_waits += runs - runs0;
        kernel_ns += delay - delay0;
    }
    let wait = cgroup_in(&rec, &cg)?.wait.runnable_wait.summary;
    measured(format!(
        "{} waits traced, {kernel_waits} switch-ins counted by the kernel; {} ns traced, \
         {kernel_ns} ns of run delay; host-wide {} woken waits unseen, {} switches unseen",
        wait.count,
        wait.total_ns,
        rec.events.get(tracer_common::maps::Counter::WakeUnseen),
        rec.events.get(tracer_common::maps::Counter::SwitchUnseen),
    ));
    // Every thread sleeps from the session's start to the first reading, and
    // from the last reading to its stop: a wake-up of the main thread at the
    // edges at most (a signal, a page fault's I/O).
    check(wait.count.abs_diff(kernel_waits) <= 2, || {
        format!(
            "{} waits traced, but the kernel counted {kernel_waits} switch-ins of the \
             worker's threads",
            wait.count
        )
    })?;
    // As for the sleeper above: wake-up latency on an idle CPU, which the
    // kernel's stamps leave out, 0.5 ms a wake-up at most.
    let slack = (kernel_ns as f64 * schedstat_tolerance()) as u64 + 2_000_000;
    let per_wakeup: u64 = if emulated() { 2_000_000 } else { 500_000 };
    check(
        wait.total_ns + slack >= kernel_ns
            && wait.total_ns <= kernel_ns + slack + wait.count * per_wakeup,
        || {
            format!(
                "{} ns traced in {} waits, the kernel's run delay grew {kernel_ns} ns",
                wait.total_ns, wait.count
            )
        },
    )?;
    Ok(Completion::Completed)
}

/// Two CPU hogs in two cgroups pinned to one CPU each run half the time and wait
/// the other half; a mostly sleeping thread on another CPU hardly waits at all.
fn two_busy_cgroups() -> TestResult {
    let (quiet, busy) = or_skip!(cpus());
    let a = TestCgroup::create("a")?;
    let b = TestCgroup::create("b")?;
    let c = TestCgroup::create("sleeper")?;
    let _wa = Worker::start(Load::Spin, &a, busy)?;
    let _wb = Worker::start(Load::Spin, &b, busy)?;
    let wc = Worker::start(Load::MostlySleep, &c, quiet)?;
    // Let the scheduler settle into alternating the two hogs.
    std::thread::sleep(Duration::from_millis(200));

    let session = crate::start_session(Config::default())?;
    let before = run_delay_ns(wc.pid)?;
    std::thread::sleep(TRACE_FOR);
    let sleeper_kernel = run_delay_ns(wc.pid)? - before;
    let rec = session.stop()?;
    let shares: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|cg| {
            let total = cgroup_in(&rec, cg).map_or(0, |e| e.wait.runnable_wait.summary.total_ns);
            format!("{} {:.2} %", cg.path, share(total, rec.duration_ns) * 100.0)
        })
        .collect();
    measured(format!("waited: {}", shares.join(", ")));
    let unrelated: f64 = [(&a, &b), (&b, &a)]
        .iter()
        .map(|(me, _)| {
            cgroup_in(&rec, me).map_or(0.0, |e| share(unrelated_ns(e, &[&a, &b]), rec.duration_ns))
        })
        .fold(0.0, f64::max);
    for cg in [&a, &b] {
        let entry = cgroup_in(&rec, cg)?;
        // Each hog ran before the programs were attached and after they were
        // detached: runnable all the traced time.
        let filled = share(
            entry.wait.runnable_wait.summary.total_ns + entry.on_cpu.summary.total_ns,
            rec.duration_ns,
        );
        check(
            apart((filled * 1e9) as u64, 1_000_000_000) <= schedstat_tolerance(),
            || {
                format!(
                    "{} waited or ran {:.1} % of the traced time; an always-runnable hog fills it",
                    cg.path,
                    filled * 100.0
                )
            },
        )?;
        check(entry.id == cg.id(), || {
            format!(
                "{} has id {}, its directory inode is {}",
                cg.path,
                entry.id,
                cg.id()
            )
        })?;
        let s = share(entry.wait.runnable_wait.summary.total_ns, rec.duration_ns);
        if crate::arithmetic_holds(unrelated) {
            check((0.45..=0.55).contains(&s), || {
                format!(
                    "{} waited {:.1} % of the time, expected 50 % ± 5",
                    cg.path,
                    s * 100.0
                )
            })?;
        }
    }
    if !crate::arithmetic_holds(unrelated) {
        measured(format!(
            "unrelated load (or emulation) held the CPU up to {:.1} % of the time: the halves are not asserted",
            unrelated * 100.0
        ));
    }
    let sleeper = cgroup_in(&rec, &c)?;
    // It wakes every ~20 ms: about 150 waits in 3 s, each of them short.
    check(sleeper.wait.runnable_wait.summary.count >= 50, || {
        format!(
            "the sleeper was seen waking only {} times",
            sleeper.wait.runnable_wait.summary.count
        )
    })?;
    // Its waits include what the kernel's run delay for it says (the two
    // windows differ by the moments between reading schedstat and attaching or
    // detaching, a wake-up or two: 2 ms). They may be longer by up to the
    // wake-up latency of each wait: a wake-up that preempts the idle task asks
    // the scheduler to skip its next clock update (rq_clock_skip_update), so
    // the kernel stamps the switch-in with the wake-up's time. runqlat,
    // timing both tracepoints, agrees with the tracer there (30 µs a wake-up
    // here, 60 µs in quiet guests). A sleep taken for a wait would add 20 ms a
    // wake-up: 0.5 ms a wake-up still catches that. Emulated on a busy host,
    // an idle vCPU runs its wake-up late: 0.98 ms a wake-up in the 6.12 guest
    // beside a build, of which the kernel's run delay saw 3 µs. 2 ms there.
    let per_wakeup: u64 = if emulated() { 2_000_000 } else { 500_000 };
    let traced = sleeper.wait.runnable_wait.summary.total_ns;
    let waits = sleeper.wait.runnable_wait.summary.count;
    measured(format!(
        "the sleeper's traced wait {traced} ns in {waits} waits, its schedstat run delay \
         grew {sleeper_kernel} ns"
    ));
    let slack = (sleeper_kernel as f64 * schedstat_tolerance()) as u64 + 2_000_000;
    check(
        traced + slack >= sleeper_kernel && traced <= sleeper_kernel + slack + waits * per_wakeup,
        || {
            format!(
                "the sleeper's traced wait is {traced} ns in {waits} waits, its schedstat run \
                 delay grew {sleeper_kernel} ns"
            )
        },
    )?;
    // And they are short: wake-up latency on a quiet CPU, under 1 % of the
    // time here (0.3 to 0.8 % seen). Emulated, waking a vCPU takes longer
    // (0.5 to 1.2 % seen in quiet guests): 3 % there. A busy host makes them
    // longer still: then the kernel says so too, and the bound is not
    // asserted. A busy emulator does too, and the guest's kernel cannot say
    // so (above): there the bound is the 2 ms a wake-up already checked.
    let bound = if emulated() { 0.03 } else { 0.01 };
    let s = share(traced, rec.duration_ns);
    let kernel_share = share(sleeper_kernel, rec.duration_ns);
    if emulated() && s >= bound {
        measured(format!(
            "the sleeper waited {:.2} % of the time, {:.2} ms a wake-up: a busy emulator",
            s * 100.0,
            traced as f64 / waits.max(1) as f64 / 1e6
        ));
    } else if kernel_share >= bound {
        measured(format!(
            "the kernel saw the sleeper wait {:.2} % of the time: a busy host; the bound is \
             not asserted",
            kernel_share * 100.0
        ));
    } else {
        check(s < bound, || {
            format!(
                "the mostly sleeping thread waited {:.2} % of the time (at most {:.0} %)",
                s * 100.0,
                bound * 100.0
            )
        })?;
    }
    Ok(Completion::Completed)
}

/// The kernel's own per-task run delay over the same interval agrees with the
/// traced waits of that task within 5 %.
fn matches_schedstat() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("schedstat")?;
    let w1 = Worker::start(Load::Spin, &cg, busy)?;
    let _w2 = Worker::start(Load::Spin, &cg, busy)?;
    std::thread::sleep(Duration::from_millis(200));

    // The hog waits at a steady rate: the kernel's figure over the session.
    let (rec, wait, kernel) = traced_beside_schedstat(w1.pid)?;
    let traced = wait.total_ns;
    let diff = apart(traced, kernel);
    measured(format!(
        "traced {traced} ns, schedstat {kernel} ns, {:.2} % apart; {} switches unseen of {}",
        diff * 100.0,
        rec.events.get(tracer_common::maps::Counter::SwitchUnseen),
        rec.events.get(tracer_common::maps::Counter::Switch),
    ));
    check(diff <= schedstat_tolerance(), || {
        format!(
            "traced {traced} ns, schedstat run delay grew {kernel} ns: {:.1} % apart",
            diff * 100.0
        )
    })?;
    // And the set-up's arithmetic, on a quiet CPU: it shares it with one
    // other hog.
    let s = share(kernel, rec.duration_ns);
    let e = cgroup_in(&rec, &cg)?;
    if crate::arithmetic_holds(share(unrelated_ns(e, &[&cg]), rec.duration_ns)) {
        check((0.4..=0.6).contains(&s), || {
            format!(
                "run delay was {:.1} % of the time, expected about 50 %",
                s * 100.0
            )
        })?;
    }
    Ok(Completion::Completed)
}

/// Traces `pid` alone for [`TRACE_FOR`]: the recording, its traced waits,
/// and the kernel's run delay for it over the same time, scaled to the
/// session's length (the task waits at a steady rate).
fn traced_beside_schedstat(pid: u32) -> Result<(Recording, Summary, u64), Failed> {
    let session = crate::start_session(Config {
        pids: vec![pid],
        ..Config::default()
    })?;
    let (before, from) = (run_delay_ns(pid)?, std::time::Instant::now());
    std::thread::sleep(TRACE_FOR);
    let (after, window) = (run_delay_ns(pid)?, from.elapsed());
    let rec = session.stop()?;
    let kernel = crate::over_session(after - before, window, &rec);
    let wait = rec
        .pids
        .iter()
        .find(|p| p.pid == pid)
        .ok_or("selected pid missing from the recording")?
        .wait
        .runnable_wait
        .summary;
    Ok((rec, wait, kernel))
}

/// A light service that wakes every millisecond onto a CPU a hog holds: each
/// of its waits begins at a wakeup, which the programs date by the woken run
/// queue's clock put on their own (`tracer_common::clock`). Their sum agrees
/// with the kernel's run delay, whose ends are that same run-queue clock.
fn wakeup_waits_match_schedstat() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let hog_cg = TestCgroup::create("wake-hog")?;
    let svc_cg = TestCgroup::create("wake-svc")?;
    let _hog = Worker::start(Load::Spin, &hog_cg, busy)?;
    let svc = Worker::start(
        Load::Service {
            work_us: 300,
            sleep_us: 1000,
        },
        &svc_cg,
        busy,
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let (_, wait, kernel) = traced_beside_schedstat(svc.pid)?;
    let (traced, waits) = (wait.total_ns, wait.count);
    measured(format!(
        "traced {traced} ns in {waits} waits, schedstat {kernel} ns: {:.2} % apart, \
         {:.2} µs a wait",
        apart(traced, kernel) * 100.0,
        (traced as f64 - kernel as f64) / waits.max(1) as f64 / 1e3
    ));
    check(waits >= 500, || {
        format!("the service waited only {waits} times: it hardly woke")
    })?;
    // The windows differ by a wait or two at each edge (2 ms). A wakeup that
    // preempts the hog makes the kernel skip its next clock update, so the
    // kernel's run delay leaves out the time to the switch that the tracer
    // sees: up to a few µs a wait here, tens of µs emulated, and more when
    // the emulator is starved: 147 µs a wait in the 5.10 guest while the host
    // ran a benchmark, two JVMs and a build beside it (as the sleeper's
    // wake-ups above). A wait dated by a wrong offset would be off by the
    // offset, or by a stale clock's age.
    let per_wait: u64 = if emulated() { 300_000 } else { 10_000 };
    let slack = (kernel as f64 * schedstat_tolerance()) as u64 + 2_000_000;
    check(
        traced + slack >= kernel && traced <= kernel + slack + waits * per_wait,
        || {
            format!(
                "the service's traced wait is {traced} ns in {waits} waits; its schedstat run \
                 delay grew {kernel} ns"
            )
        },
    )?;
    Ok(Completion::Completed)
}
