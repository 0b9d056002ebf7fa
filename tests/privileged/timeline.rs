//! The time dimension: `record --interval` tells when the waits happened and
//! who held the CPU then, from a workload whose phases are known.

use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Trial};
use tracer::{dump, timeline::Interval};
use tracer_tests::{Load, TestCgroup, Worker, run_delay_ns};

use crate::{
    QUIET, Scratch, TestResult, bin, check,
    cli::{finish, start_tracing},
    cpus, emulated, measured, or_skip, privileged, share, unrelated_ns,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "intervals_show_when_a_neighbour_joined_and_who_it_was",
            neighbour_joins,
        ),
        privileged(
            "throttle_episodes_are_placed_in_the_intervals_the_quota_ran_out",
            episodes_in_time,
        ),
    ]
}

/// A hog under a 20 ms / 100 ms quota runs out of it every period, about
/// five times in each 500 ms interval, until the quota is lifted 2 s into
/// the session; from then on it is never throttled. The intervals must
/// place the throttle episodes so: each one before the lift holds some, none
/// after it holds any, and together they hold what `cpu.stat` counted.
fn episodes_in_time() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let cg = TestCgroup::create("iv-quota")?;
    cg.set_quota(20_000, 100_000)?;
    let scratch = Scratch::new("episodes")?;
    let out_path = scratch.0.join("episodes.json");
    let out_arg = out_path.to_string_lossy().into_owned();
    let _hog = Worker::start(Load::Spin, &cg, busy)?;
    let mut child = start_tracing(
        &bin,
        &[
            "record",
            "--duration",
            "4s",
            "--interval",
            "500ms",
            "--cgroup",
            &cg.path,
            "--output",
            &out_arg,
        ],
    )?;
    let tracing = Instant::now();
    let before = cg.cpu_stat()?;
    std::thread::sleep(Duration::from_secs(2));
    cg.lift_quota()?;
    let lifted = tracing.elapsed().as_nanos() as u64;
    let limit = if emulated() { 120 } else { 30 };
    let (status, _) = finish(&mut child.0, Duration::from_secs(limit))?;
    check(status.success(), || format!("exit status {status}"))?;
    let kernel = before.delta(&cg.cpu_stat()?);

    let rec = dump::read(&out_path)?;
    let episodes = |i: &Interval| {
        i.cgroups
            .iter()
            .find(|c| c.path == cg.path)
            .map_or(0, |c| c.throttle_episodes)
    };
    let placed: Vec<(u64, u64)> = rec
        .intervals
        .iter()
        .map(|i| (i.start_ns / 1_000_000, episodes(i)))
        .collect();
    let timed: u64 = placed.iter().map(|(_, n)| n).sum();
    measured(format!(
        "episodes per interval (ms from the start, count): {placed:?}; quota lifted at {} ms; \
         cpu.stat counted {} throttled periods",
        lifted / 1_000_000,
        kernel.nr_throttled
    ));
    // The kernel counted from just after the attach: an episode either
    // side of that moment may be in one count and not the other.
    check(timed.abs_diff(kernel.nr_throttled) <= 1, || {
        format!(
            "the intervals hold {timed} episodes, cpu.stat counted {}",
            kernel.nr_throttled
        )
    })?;
    // A tenth of a second of slack around the lift: one period.
    let slack = 150_000_000;
    let quota_on: Vec<&Interval> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() + slack <= lifted)
        .collect();
    check(quota_on.len() >= 2, || {
        format!("{} intervals ended before the lift", quota_on.len())
    })?;
    for i in quota_on {
        check(episodes(i) >= 2, || {
            format!(
                "the interval at {} ns, quota on, holds {} episodes",
                i.start_ns,
                episodes(i)
            )
        })?;
    }
    for i in rec
        .intervals
        .iter()
        .filter(|i| i.start_ns >= lifted + slack)
    {
        check(episodes(i) == 0, || {
            format!(
                "the interval at {} ns, after the lift at {lifted} ns, holds {} episodes",
                i.start_ns,
                episodes(i)
            )
        })?;
    }
    Ok(Completion::Completed)
}

/// When the neighbour joins, from the moment the session said it traced.
const JOINS_AT: Duration = Duration::from_secs(3);
const SESSION: &str = "7s";

/// A service (an always-runnable hog) runs alone on its CPU; 3 s into the
/// session a neighbour's hog joins it there. `--interval 1s` must show the
/// service's first intervals all but uncontended, and its last ones
/// contended about half the time, behind the neighbour.
fn neighbour_joins() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let svc = TestCgroup::create("iv-svc")?;
    let nb = TestCgroup::create("iv-neighbour")?;
    let scratch = Scratch::new("intervals")?;
    let out_path = scratch.0.join("intervals.json");
    let out_arg = out_path.to_string_lossy().into_owned();
    let service = Worker::start(Load::Spin, &svc, busy)?;
    let mut child = start_tracing(
        &bin,
        &[
            "record",
            "--duration",
            SESSION,
            "--interval",
            "1s",
            "--cgroup",
            &svc.path,
            "--cgroup",
            &nb.path,
            "--output",
            &out_arg,
        ],
    )?;
    let tracing = Instant::now();
    // The kernel's count of the service's waits while it is alone: the
    // truth its first intervals are held to.
    let delay_at_start = run_delay_ns(service.pid)?;
    std::thread::sleep(JOINS_AT);
    let alone_delay = run_delay_ns(service.pid)?.saturating_sub(delay_at_start);
    let joined = tracing.elapsed();
    let _neighbour = Worker::start(Load::Spin, &nb, busy)?;
    let limit = if emulated() { 120 } else { 30 };
    let (status, stdout) = finish(&mut child.0, Duration::from_secs(limit))?;
    check(status.success(), || format!("exit status {status}"))?;

    let rec = dump::read(&out_path)?;
    let rows = |i: &Interval| i.cgroups.iter().find(|c| c.path == svc.path).cloned();
    // The lines printed as the intervals came: one per interval for the
    // service, which waits in every one of them.
    let printed = stdout
        .lines()
        .filter(|l| l.contains(&svc.path) && l.contains("+"))
        .count();
    check(printed >= rec.intervals.len(), || {
        format!(
            "{printed} interval lines for the service, {} intervals in the dump:\n{stdout}",
            rec.intervals.len()
        )
    })?;
    check((7..=8).contains(&rec.intervals.len()), || {
        format!("{} intervals in a 7 s session at 1 s", rec.intervals.len())
    })?;

    // Before: intervals that ended half a second before the join; after:
    // those that began half a second after it.
    let join_ns = joined.as_nanos() as u64;
    let before: Vec<&Interval> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() + 500_000_000 <= join_ns)
        .collect();
    let after: Vec<&Interval> = rec
        .intervals
        .iter()
        .filter(|i| i.start_ns >= join_ns + 500_000_000 && i.duration_ns >= 500_000_000)
        .collect();
    check(before.len() >= 2 && after.len() >= 2, || {
        format!(
            "{} intervals before the join at {joined:?}, {} after",
            before.len(),
            after.len()
        )
    })?;
    let contended = |i: &Interval| rows(i).map_or(0.0, |c| share(c.contended_ns, i.duration_ns));
    let shares = |set: &[&Interval]| {
        set.iter()
            .map(|i| format!("{:.1} %", contended(i) * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    measured(format!(
        "service contended before the join: {}; after: {}",
        shares(&before),
        shares(&after)
    ));

    // Alone, the service waits only behind the machine's other work, which
    // the kernel counts: no interval before the join holds more wait than
    // the kernel counted over all the time alone, and together they hold no
    // more either. Where that is under 5 % of an interval, so is each one.
    let alone_share = share(alone_delay, joined.as_nanos() as u64);
    measured(format!(
        "the kernel counted the service waiting {:.1} % of the time alone ({:.1} ms)",
        alone_share * 100.0,
        alone_delay as f64 / 1e6
    ));
    let bound = alone_delay + alone_delay / 10 + 5_000_000;
    let traced_alone: u64 = before
        .iter()
        .filter_map(|i| rows(i))
        .map(|c| c.wait_ns)
        .sum();
    check(traced_alone <= bound, || {
        format!(
            "the intervals before the join hold {traced_alone} ns of wait; the kernel counted \
             {alone_delay} ns over all the time alone"
        )
    })?;
    for i in &before {
        check(rows(i).is_some(), || {
            format!(
                "the always-runnable service is missing from the interval at {} ns",
                i.start_ns
            )
        })?;
        // The neighbour had not started: nothing of it can be in an interval.
        check(
            rows(i)
                .and_then(|c| c.top_occupant)
                .is_none_or(|o| o.cgroup != nb.path),
            || {
                format!(
                    "the neighbour is blamed before it started, at {} ns",
                    i.start_ns
                )
            },
        )?;
        if bound < i.duration_ns / 20 {
            check(contended(i) < 0.05, || {
                format!(
                    "alone on its CPU the service was contended {:.1} % in the interval at {} ns; \
                     the kernel counted {alone_delay} ns of wait over all its time alone",
                    contended(i) * 100.0,
                    i.start_ns,
                )
            })?;
        }
    }
    // Whether the machine's other work shared the CPU with the two: judged
    // on the whole session, from the service's contended time not charged to
    // the neighbour.
    let whole = rec
        .cgroups
        .iter()
        .find(|c| c.path == svc.path)
        .ok_or("the service is not in the dump")?;
    let unrelated = share(unrelated_ns(whole, &[&nb]), rec.duration_ns);
    let quiet = unrelated < QUIET && !emulated();
    let mut behind_neighbour = 0;
    for i in &after {
        check(contended(i) > 0.30, || {
            format!(
                "sharing its CPU with a hog the service was contended only {:.1} % in the \
                 interval at {} ns",
                contended(i) * 100.0,
                i.start_ns
            )
        })?;
        if rows(i)
            .and_then(|c| c.top_occupant)
            .is_some_and(|o| o.cgroup == nb.path)
        {
            behind_neighbour += 1;
        }
    }
    // Quiet, the neighbour is the only other task on the CPU; under other
    // load it shares the blame, and must still lead it somewhere.
    let needed = if quiet { after.len() } else { 1 };
    check(behind_neighbour >= needed, || {
        format!(
            "the neighbour was the top occupant in {behind_neighbour} of {} intervals after it \
             joined:\n{stdout}",
            after.len()
        )
    })?;
    check(stdout.contains(&format!("{} (", nb.path)), || {
        format!("no interval line names the neighbour:\n{stdout}")
    })?;
    Ok(Completion::Completed)
}
