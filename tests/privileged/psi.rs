//! The host's CPU pressure (PSI) in a recording, against the kernel's own
//! `/proc/pressure/cpu` read around it.

use std::time::Duration;

use libtest_mimic::{Completion, Trial};
use tracer::{psi::Pressure, session::Config};
use tracer_tests::{Load, TestCgroup, Worker};

use crate::{TestResult, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "host_psi_in_a_recording_is_the_kernels_over_its_window",
        host_psi,
    )]
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
    std::thread::sleep(Duration::from_millis(200));
    let outer_start = Pressure::host().ok_or("PSI vanished")?;
    let session = crate::start_session(Config::default())?;
    let inner_start = Pressure::host().ok_or("PSI vanished")?;
    std::thread::sleep(Duration::from_secs(2));
    let inner_end = Pressure::host().ok_or("PSI vanished")?;
    let rec = session.stop()?;
    let outer_end = Pressure::host().ok_or("PSI vanished")?;
    let psi = rec.host_psi.ok_or("the recording has no host_psi")?;
    let (inner, outer) = (
        inner_start.until(&inner_end).some_ns,
        outer_start.until(&outer_end).some_ns,
    );
    measured(format!(
        "PSI some {} ns in the recording; the kernel's {inner} ns inside it, {outer} ns around it",
        psi.some_ns
    ));
    // PSI's totals move in µs, and the kernel folds a running stall in
    // when it is read: a few ms either way.
    let slack = 5_000_000;
    check(
        psi.some_ns + slack >= inner && psi.some_ns <= outer + slack,
        || {
            format!(
                "recorded {} ns, the kernel counted {inner} ns inside and {outer} ns around",
                psi.some_ns
            )
        },
    )?;
    check(psi.some_share(rec.duration_ns) > 0.5, || {
        format!(
            "two hogs on one CPU, yet some pressure only {:.1} % of the time",
            psi.some_share(rec.duration_ns) * 100.0
        )
    })?;
    let report = tracer::report::render(&rec, tracer::report::TextOptions::default());
    check(
        report.contains("host CPU pressure (PSI, wall time): some"),
        || format!("the report does not show PSI:\n{report}"),
    )?;
    Ok(Completion::Completed)
}
