//! A quota that bursty work exceeds within periods although its average use
//! stays well below it: the report must name the quota and say so.

use libtest_mimic::{Completion, Trial};
use tracer::{session::Config, verdict::Kind};
use tracer_tests::{Load, TestCgroup, Worker};

use crate::{
    TRACE_FOR, TestResult, attribution::DRAIN, cgroup_in, check, cpus, measured, or_skip,
    privileged, share, unrelated_ns,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "bursts_throttled_below_the_average_quota_are_flagged",
            bursts_below_quota,
        ),
        privileged(
            "a_quota_burst_is_reported_as_cpu_stat_counts_it",
            burst_allowance,
        ),
    ]
}

/// Two threads of `cg`, one on each CPU, burst together for 80 ms of CPU
/// each every 600 ms, traced: the recording and `cg`'s `cpu.stat` over it.
fn bursts_in(
    cg: &TestCgroup,
    quiet: usize,
    busy: usize,
) -> Result<(tracer::recording::Recording, tracer::cpustat::CpuStat), libtest_mimic::Failed> {
    let before = cg.cpu_stat()?;
    let session = crate::start_session(Config::default())?;
    let load = Load::Burst {
        every: 600,
        spin: 80,
    };
    let workers = [
        Worker::start(load, cg, quiet)?,
        Worker::start(load, cg, busy)?,
    ];
    std::thread::sleep(TRACE_FOR);
    for w in workers {
        w.stop();
    }
    std::thread::sleep(DRAIN);
    let rec = session.stop()?;
    Ok((rec, before.delta(&cg.cpu_stat()?)))
}

/// The same bursts under the same quota with a burst of 50 ms allowed: the
/// group carries unused quota into its busy periods. The report shows the
/// burst in the quota, the bursts `cpu.stat` counted, and, throttled still,
/// a verdict that says a burst was allowed.
fn burst_allowance() -> TestResult {
    let (quiet, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("burst-allowed")?;
    cg.set_quota(50_000, 100_000)?;
    if let Err(e) = cg.set_burst(50_000) {
        return Ok(Completion::ignored_with(format!(
            "no CFS burst on this kernel (5.14+): {e:#}"
        )));
    }
    let (rec, kernel) = bursts_in(&cg, quiet, busy)?;
    let e = cgroup_in(&rec, &cg)?;
    let traced = e.cpu_stat.ok_or("no cpu.stat in the report")?;
    measured(format!(
        "cpu.stat: {:?} bursts using {:?} ns, reported {:?} and {:?}; quota {}; {}",
        kernel.nr_bursts,
        kernel.burst_ns,
        traced.nr_bursts,
        traced.burst_ns,
        e.quota
            .as_ref()
            .map_or(String::new(), |q| q.describe(&e.path)),
        e.verdict.text
    ));
    let (Some(bursts), Some(reported)) = (kernel.nr_bursts, traced.nr_bursts) else {
        return Ok(Completion::ignored_with(
            "cpu.stat has no burst counters on this kernel",
        ));
    };
    check(bursts > 0, || "the group never used its burst".into())?;
    // The session's readings and the test's are moments apart: a burst
    // at either edge may fall on one side only.
    check(reported.abs_diff(bursts) <= 2, || {
        format!("reported {reported} bursts, cpu.stat counted {bursts}")
    })?;
    check(traced.burst_ns.is_some_and(|ns| ns > 0), || {
        format!("no burst time reported: {:?}", traced.burst_ns)
    })?;
    check(
        e.quota.as_ref().is_some_and(|q| q.quota.burst_us == 50_000)
            && e.quota
                .as_ref()
                .is_some_and(|q| q.describe(&e.path).contains("burst 50.0 ms")),
        || format!("the quota: {:?}", e.quota),
    )?;
    if e.verdict.kind == Kind::QuotaExpiry {
        check(
            e.verdict
                .text
                .contains("although a burst of 50.0 ms is allowed"),
            || format!("verdict: {}", e.verdict.text),
        )?;
    }
    Ok(Completion::Completed)
}

/// Two threads burst together for 80 ms of CPU each every 600 ms under a quota
/// of 0.5 CPUs. Wherever a burst falls relative to the 100 ms periods, one
/// period sees at least 80 ms of work against 50 ms of quota, so every burst is
/// throttled, although on average the group uses 0.27 CPUs, about half its
/// quota. The report says so.
fn bursts_below_quota() -> TestResult {
    let (quiet, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("bursty")?;
    cg.set_quota(50_000, 100_000)?;
    let (rec, kernel) = bursts_in(&cg, quiet, busy)?;
    let e = cgroup_in(&rec, &cg)?;
    let used = share(e.on_cpu.summary.total_ns, rec.duration_ns);
    measured(format!(
        "used {used:.2} CPUs of 0.50; {} of {} periods throttled; {}",
        kernel.nr_throttled,
        kernel.nr_periods,
        e.verdict.notes.join(" ")
    ));
    check(kernel.nr_throttled > 0, || {
        "the bursts were never throttled".into()
    })?;
    check(used < 0.4, || {
        format!("used {used:.2} CPUs: not bursty enough")
    })?;
    // Unrelated load on the CPUs makes host contention a cause too, maybe
    // the larger: the quota must still be named.
    let unrelated = share(unrelated_ns(e, &[&cg]), rec.duration_ns);
    if crate::arithmetic_holds(unrelated) {
        check(e.verdict.kind == Kind::QuotaExpiry, || {
            format!("verdict: {}", e.verdict.text)
        })?;
    } else {
        // The quota is named when it holds a significant share of the wait;
        // behind heavy load (an emulator on both CPUs: 63 % of the time)
        // host contention may hold nearly all of it.
        let waited = e.wait.runnable_wait.summary.total_ns;
        let throttled = share(e.wait.causes.throttled_ns, waited);
        check(
            matches!(e.verdict.kind, Kind::QuotaExpiry | Kind::HostContention)
                && (e.verdict.text.contains("quota expiry:")
                    || throttled < tracer::verdict::SIGNIFICANT_CAUSE),
            || {
                format!(
                    "unrelated load held the CPUs {:.1} % of the time, throttled {:.1} % of the wait: {}",
                    unrelated * 100.0,
                    throttled * 100.0,
                    e.verdict.text
                )
            },
        )?;
    }
    check(
        e.verdict
            .notes
            .iter()
            .any(|n| n.contains("below its quota") && n.contains("de53fd7aedb1")),
        || format!("no below-quota note: {:?}", e.verdict.notes),
    )?;
    Ok(Completion::Completed)
}
