//! Slow-wait records (`--slower`) against the kernel's own figures for the
//! same cgroup.

use std::time::Duration;

use libtest_mimic::{Completion, Trial};
use tracer::{programs::TierChoice, session::Config};
use tracer_common::maps::Counter;
use tracer_tests::{Load, TestCgroup, Worker};

use crate::{TRACE_FOR, TestResult, cgroup_in, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    // On both tiers: each has a `sched_switch` of its own for the verifier.
    [
        (TierChoice::Tracepoints, "on_tracepoints"),
        (TierChoice::Fentry, "on_fentry"),
    ]
    .into_iter()
    .map(|(tier, suffix)| {
        privileged(
            &format!("slow_waits_of_a_quota_name_it_and_hold_its_throttled_time_{suffix}"),
            move || quota_stalls(tier),
        )
    })
    .collect()
}

/// A hog under a 20 % quota waits about 80 ms of every 100 ms period,
/// throttled: with `--slower 20ms` each such wait is a record that names the
/// hog's cgroup as the quota's owner, and the records' throttled time is
/// nearly all the cgroup's (at most all of it: they are some of its waits).
/// The hog is selected too (`--pid`), and every wait of threads of a name
/// nothing has is asked for (as `--gc-log` asks for the GC threads'): the
/// selections' code beside the records' is the most the verifier is asked
/// to walk.
fn quota_stalls(tier: TierChoice) -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("slower")?;
    cg.set_quota(20_000, 100_000)?;
    let hog = Worker::start(Load::Spin, &cg, busy)?;
    std::thread::sleep(Duration::from_millis(200));
    let threshold = Duration::from_millis(20);
    let before = tracer::host::monotonic_ns();
    let session = match crate::start_or_skip_fentry(Config {
        tier,
        pids: vec![hog.pid],
        threads: vec!["no-such-thread*".into()],
        slow_selected: true,
        slower: Some(threshold),
        ..Config::default()
    })? {
        Ok(session) => session,
        Err(skipped) => return Ok(skipped),
    };
    let after = tracer::host::monotonic_ns();
    std::thread::sleep(TRACE_FOR);
    let rec = session.stop()?;
    let entry = cgroup_in(&rec, &cg)?;
    let traced = entry.wait.causes.throttled_ns;
    let ours: Vec<_> = rec.stalls.iter().filter(|s| s.cgroup == cg.path).collect();
    let in_records: u64 = ours.iter().map(|s| s.throttled_ns).sum();
    let limited = rec.events.get(Counter::SlowLimited);
    measured(format!(
        "{} slow waits ({} of the hog), {limited} over the rate limit; their throttled time \
         {in_records} ns of the cgroup's {traced} ns",
        rec.stalls.len(),
        ours.len()
    ));
    check(!ours.is_empty(), || {
        "no slow wait of the hog's cgroup".into()
    })?;
    // The stalls' moments count from the attach, on the programs' clock:
    // the recording says when that was, between the test's readings.
    let start = rec.started_monotonic_ns.ok_or("no started_monotonic_ns")?;
    check((before..=after).contains(&start), || {
        format!("started_monotonic_ns {start} outside [{before}, {after}]")
    })?;
    let threshold_ns = threshold.as_nanos() as u64;
    if let Some(short) = rec.stalls.iter().find(|s| s.wait_ns < threshold_ns) {
        return Err(format!(
            "a record of {} ns, under the threshold: {short:?}",
            short.wait_ns
        )
        .into());
    }
    // A wait that began throttled names who throttled it: here the hog's own
    // cgroup, whose quota it is.
    for s in ours.iter().filter(|s| s.throttled_ns * 2 >= s.wait_ns) {
        check(s.throttled_by.as_deref() == Some(cg.path.as_str()), || {
            format!(
                "a throttled wait names {:?}, not {}: {s:?}",
                s.throttled_by, cg.path
            )
        })?;
    }
    check(limited == 0, || {
        format!("{limited} records dropped at 10 a second")
    })?;
    check(in_records <= traced, || {
        format!("the records' throttled time {in_records} ns exceeds the cgroup's {traced} ns")
    })?;
    // Its throttled waits last about 80 ms: nearly all of them are records.
    check(in_records * 2 >= traced, || {
        format!("the records hold {in_records} ns of the cgroup's {traced} ns throttled")
    })?;
    Ok(Completion::Completed)
}
