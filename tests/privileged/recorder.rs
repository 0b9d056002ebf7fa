//! The agent's flight recorder: a trigger writes a dump that holds the
//! seconds before it, and what follows, against the kernel's `cpu.stat`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use libtest_mimic::{Completion, Trial};
use tracer::dump;
use tracer_tests::{
    Load, TestCgroup, Worker,
    services::{Agent, sample_value, wait_for},
};

use crate::{
    Scratch, TestResult, apart, bin, check, cpus, measured, or_skip, privileged, share,
    throttle_tolerance,
};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "a_recorder_trigger_writes_the_seconds_before_it",
        trigger_dump,
    )]
}

/// How long the agent runs before the hog starts: what the dump must hold
/// from before the trigger.
const QUIET_FOR: Duration = Duration::from_secs(4);

/// A hog under a 20 % quota starts 4 s into the agent's life; a trigger on
/// throttled time above 50 % for 2 s must write, 3 s after it is met, a dump
/// holding the quiet seconds before the hog, the throttling that met it and
/// what followed, whose throttled time is `cpu.stat`'s.
fn trigger_dump() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let scratch = Scratch::new("recorder")?;
    let dumps = PathBuf::from(scratch.file("dumps"));
    let cg = TestCgroup::create("recorder")?;
    cg.set_quota(20_000, 100_000)?;
    let config = scratch.file("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nlock_file = \"{}\"\n[dumps]\ndir = \"{}\"\nevery = \"10m\"\n\
             [recorder]\nminutes = 1\nafter = \"3s\"\n[[recorder.trigger]]\non = \"throttled\"\n\
             above = 0.5\nfor = \"2s\"\ninclude = [\"{}\"]\n",
            scratch.file("agent.lock"),
            dumps.display(),
            cg.path
        ),
    )?;
    let agent = Agent::start(&bin, &["--config", &config], &scratch.0)?;
    std::thread::sleep(QUIET_FOR);
    let hog_started = Instant::now();
    let hog = Worker::start(Load::Spin, &cg, busy)?;
    let found = wait_for("a trigger dump", Duration::from_secs(60), || {
        trigger_dump_in(&dumps)
    });
    let waited = hog_started.elapsed();
    // What the recorder did, as Prometheus sees it, after the next refresh.
    std::thread::sleep(Duration::from_millis(1_500));
    let page = agent.metrics()?;
    cg.lift_quota()?;
    hog.stop();
    let (_, log) = agent.terminate(Duration::from_secs(30))?;
    let path = found.map_err(|e| format!("{e:#}; the agent's log:\n{log}"))?;
    let metric = |name: &str| sample_value(&page, name, &[]);
    check(
        metric("tracer_recorder_trigger_dumps_total") == Some(1.0)
            && metric("tracer_recorder_triggers_total").is_some_and(|n| n >= 1.0)
            && metric("tracer_recorder_bytes").is_some_and(|b| b > 0.0),
        || {
            format!(
                "the recorder's series: dumps {:?}, triggers {:?}, bytes {:?}",
                metric("tracer_recorder_trigger_dumps_total"),
                metric("tracer_recorder_triggers_total"),
                metric("tracer_recorder_bytes")
            )
        },
    )?;
    let rec = dump::read(&path)?;

    let fired = rec
        .trigger
        .as_ref()
        .ok_or("the trigger dump names no trigger")?;
    check(
        fired.cgroup == cg.path && fired.rule == "throttled above 50 % for 2.00 s",
        || format!("the dump says {fired:?}"),
    )?;
    // The dump starts where the agent did (the recorder keeps a minute), so
    // the hog started QUIET_FOR into it; the trigger was met at least 2 s
    // after that (its run of 2 s above), and the dump was written 3 s later.
    let rows = |i: &tracer::timeline::Interval| {
        i.cgroups
            .iter()
            .find(|c| c.path == cg.path)
            .cloned()
            .unwrap_or_default()
    };
    let quiet_ns = QUIET_FOR.as_nanos() as u64;
    let before: Vec<_> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() + 1_000_000_000 <= quiet_ns)
        .collect();
    let end = rec.intervals.last().map_or(0, |i| i.end_ns());
    measured(format!(
        "trigger met at +{:.1} s of a dump of {:.1} s ({} intervals), {:.1} s after the hog \
         started; dump found {:.1} s after it",
        fired.at_ns as f64 / 1e9,
        end as f64 / 1e9,
        rec.intervals.len(),
        fired.at_ns.saturating_sub(quiet_ns) as f64 / 1e9,
        waited.as_secs_f64()
    ));
    check(before.len() >= 2, || {
        format!(
            "the dump holds {} whole intervals before the hog started (of {} s)",
            before.len(),
            QUIET_FOR.as_secs()
        )
    })?;
    check(before.iter().all(|i| rows(i).wait_ns == 0), || {
        "the cgroup waited before its hog started".into()
    })?;
    check(fired.at_ns >= quiet_ns + 1_500_000_000, || {
        format!(
            "the trigger was met at {} ns, before the hog could meet it",
            fired.at_ns
        )
    })?;
    check(end >= fired.at_ns + 2_000_000_000, || {
        format!(
            "the dump ends {} ns after the trigger: the 3 s that followed it are not in it",
            end.saturating_sub(fired.at_ns)
        )
    })?;
    // What met it: the two seconds before it, over half throttled.
    let met: Vec<f64> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() <= fired.at_ns && i.end_ns() + 2_000_000_000 > fired.at_ns)
        .map(|i| share(rows(i).throttled_ns, i.duration_ns))
        .collect();
    check(met.len() >= 2 && met.iter().all(|&s| s > 0.5), || {
        format!("the intervals that met the trigger were throttled {met:?}")
    })?;

    // The timeline adds up to the dump's aggregate, and that to the kernel's
    // throttled time over the same window.
    let entry = rec
        .cgroups
        .iter()
        .find(|c| c.path == cg.path)
        .ok_or("the cgroup is not in the dump")?;
    let traced = entry.wait.causes.throttled_ns;
    let in_intervals: u64 = rec.intervals.iter().map(|i| rows(i).throttled_ns).sum();
    check(in_intervals == traced, || {
        format!("the intervals hold {in_intervals} ns throttled, the dump's total {traced} ns")
    })?;
    let kernel = entry
        .cpu_stat
        .ok_or("no cpu.stat for a cgroup under a quota")?
        .throttled_ns;
    measured(format!(
        "throttled: traced {traced} ns, cpu.stat {kernel} ns"
    ));
    check(apart(traced, kernel) <= throttle_tolerance(&rec), || {
        format!("traced throttled {traced} ns, cpu.stat {kernel} ns over the dump's window")
    })?;
    Ok(Completion::Completed)
}

fn trigger_dump_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-trigger.json"))
}
