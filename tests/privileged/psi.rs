//! CPU pressure (PSI) in a recording, the host's and a cgroup's own,
//! against the kernel's own `/proc/pressure/cpu` and `cpu.pressure` read
//! around it.

use std::time::Duration;

use libtest_mimic::{Completion, Trial};
use tracer::{
    psi::{Pressure, PsiWindow},
    session::Config,
};
use tracer_tests::{
    Load, TestCgroup, Worker,
    services::{sample_value, wait_for},
};

use crate::{Scratch, TestResult, cgroup_in, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "host_psi_in_a_recording_is_the_kernels_over_its_window",
            host_psi,
        ),
        privileged(
            "a_cgroups_own_psi_is_the_kernels_in_the_recording_and_on_metrics",
            cgroup_psi,
        ),
    ]
}

/// PSI's totals move in µs, and the kernel folds a running stall in when
/// it is read: a few ms either way.
const SLACK_NS: u64 = 5_000_000;

/// Two hogs share a CPU in a cgroup of their own (cgroup v2), so one of its
/// tasks always waits. The cgroup's `psi` in the recording lies between
/// what its `cpu.pressure` counted over a window just inside the session
/// and one just outside it; the report shows it beside the cgroup's split;
/// and the agent's `tracer_cgroup_psi_cpu_seconds_total` lies between the
/// kernel's readings before it started and after it was scraped.
fn cgroup_psi() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("psi-own")?;
    let Some(_) = Pressure::of_cgroup(&cg.dir) else {
        return Ok(Completion::ignored_with(
            "the test cgroup has no cpu.pressure: the cpu controller is on cgroup v1 here (the \
             v2 guests of `cargo xtask vm` run this test), or PSI is off",
        ));
    };
    let own = || Pressure::of_cgroup(&cg.dir).ok_or("cpu.pressure vanished");
    let _a = Worker::start(Load::Spin, &cg, busy)?;
    let _b = Worker::start(Load::Spin, &cg, busy)?;
    let (rec, inner, outer) = bracketed(&own)?;
    let e = cgroup_in(&rec, &cg)?;
    let psi = e.psi.ok_or("the cgroup has no psi in the recording")?;
    measured(format!("{}:", cg.path));
    recorded_between(psi, rec.duration_ns, inner, outer)?;
    let report = tracer::report::render(&rec, tracer::report::TextOptions::default());
    check(
        report.contains("  CPU pressure (PSI, wall time): some "),
        || format!("the report does not show the cgroup's PSI:\n{report}"),
    )?;

    let Ok(bin) = crate::bin() else {
        return Ok(Completion::ignored_with(
            "tracer binary not built: the agent's part was not run",
        ));
    };
    let scratch = Scratch::new("psi-own")?;
    let before = own()?;
    let agent = crate::agent(&bin, &scratch, "1s", &[], true)?;
    let exported = |page: &str| {
        sample_value(
            page,
            "tracer_cgroup_psi_cpu_seconds_total",
            &[("cgroup", &cg.path), ("kind", "some")],
        )
    };
    // Once a reading taken after the agent started is out.
    let moved_past = before.some_us as f64 / 1e6 + 0.5;
    let value = wait_for(
        "the cgroup's PSI on /metrics",
        Duration::from_secs(20),
        || exported(&agent.metrics().ok()?).filter(|&v| v > moved_past),
    )?;
    let after = own()?;
    measured(format!(
        "agent: {value} s; the kernel {} s before it started, {} s after the scrape",
        before.some_us as f64 / 1e6,
        after.some_us as f64 / 1e6
    ));
    check(value * 1e6 <= after.some_us as f64 + 1.0, || {
        format!(
            "the agent exports {value} s, more than the kernel's {} µs since",
            after.some_us
        )
    })?;
    Ok(Completion::Completed)
}

/// Two hogs share a CPU, so a task waits for a CPU all the time. The
/// recording's `host_psi` lies between what `/proc/pressure/cpu` counted over
/// a window just inside the session and one just outside it (unrelated load
/// can only add to both), and the report shows it beside the split.
fn host_psi() -> TestResult {
    let Some(_) = Pressure::host() else {
        return Ok(Completion::ignored_with(
            "no /proc/pressure/cpu (PSI off: psi=0, or CONFIG_PSI unset)",
        ));
    };
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("psi-pair")?;
    let _a = Worker::start(Load::Spin, &cg, busy)?;
    let _b = Worker::start(Load::Spin, &cg, busy)?;
    let host = || Pressure::host().ok_or("PSI vanished");
    let (rec, inner, outer) = bracketed(&host)?;
    let psi = rec.host_psi.ok_or("the recording has no host_psi")?;
    recorded_between(psi, rec.duration_ns, inner, outer)?;
    let report = tracer::report::render(&rec, tracer::report::TextOptions::default());
    check(
        report.contains("host CPU pressure (PSI, wall time): some"),
        || format!("the report does not show PSI:\n{report}"),
    )?;
    Ok(Completion::Completed)
}

/// A 2 s session, with PSI as `read` gives it read just outside and just
/// inside it: the recording, and the `some` stall inside and around.
fn bracketed(
    read: &dyn Fn() -> Result<Pressure, &'static str>,
) -> Result<(tracer::recording::Recording, u64, u64), libtest_mimic::Failed> {
    // The hogs settle first.
    std::thread::sleep(Duration::from_millis(200));
    let outer_start = read()?;
    let session = crate::start_session(Config::default())?;
    let inner_start = read()?;
    std::thread::sleep(Duration::from_secs(2));
    let inner_end = read()?;
    let rec = session.stop()?;
    let outer_end = read()?;
    Ok((
        rec,
        inner_start.until(&inner_end).some_ns,
        outer_start.until(&outer_end).some_ns,
    ))
}

/// The recorded stall lies between the kernel's inside and around the
/// session (unrelated load can only add to both), and two hogs on one CPU
/// stalled most of the time.
fn recorded_between(psi: PsiWindow, duration_ns: u64, inner: u64, outer: u64) -> TestResult {
    measured(format!(
        "PSI some {} ns in the recording; the kernel's {inner} ns inside it, {outer} ns around it",
        psi.some_ns
    ));
    check(
        psi.some_ns + SLACK_NS >= inner && psi.some_ns <= outer + SLACK_NS,
        || {
            format!(
                "recorded {} ns, the kernel counted {inner} ns inside and {outer} ns around",
                psi.some_ns
            )
        },
    )?;
    check(psi.some_share(duration_ns) > 0.5, || {
        format!(
            "two hogs on one CPU, yet some pressure only {:.1} % of the time",
            psi.some_share(duration_ns) * 100.0
        )
    })?;
    Ok(Completion::Completed)
}
