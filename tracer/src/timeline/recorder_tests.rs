use super::*;
use crate::timeline::tests::busy_second;

/// A one-second interval in which each `(path, throttled ms, contended ms)` waited.
fn second(s: u64, rows: &[(&str, u64, u64)]) -> Interval {
    Interval {
        start_ns: s * 1_000_000_000,
        duration_ns: 1_000_000_000,
        cgroups: rows
            .iter()
            .map(|&(path, t, c)| IntervalCgroup {
                path: path.into(),
                throttled_ns: t * 1_000_000,
                contended_ns: c * 1_000_000,
                wait_ns: (t + c) * 1_000_000,
                p99_ns: (t + c) * 10_000,
                ..IntervalCgroup::default()
            })
            .collect(),
        ..Interval::default()
    }
}

fn throttled_half_for_3s(prefix: &str) -> Trigger {
    Trigger {
        watched: Watched::Throttled,
        above: 0.5,
        for_ns: 3_000_000_000,
        cgroups: CgroupFilter::only(vec![prefix.into()]),
    }
}

#[test]
fn a_trigger_fires_after_its_time_above_and_not_before() {
    let mut r = Recorder::new(60_000_000_000, vec![throttled_half_for_3s("/svc")]);
    let mut fired_at = Vec::new();
    // Above in seconds 2..=4 and 6..=9 (one second below between), in
    // /svc; /other is always above but not watched.
    for s in 0..12 {
        let t = if (2..=4).contains(&s) || (6..=9).contains(&s) {
            800
        } else {
            100
        };
        for f in r.push(second(s, &[("/svc/a", t, 0), ("/other", 900, 0)])) {
            assert_eq!(f.cgroup, "/svc/a");
            assert_eq!(f.rule, "throttled above 50 % for 3.00 s");
            fired_at.push(f.at_ns / 1_000_000_000);
        }
    }
    // Met at the end of second 4 (2, 3, 4), then of second 8 (6, 7, 8);
    // second 9 alone is not three more.
    assert_eq!(fired_at, [5, 9]);
}

#[test]
fn a_cgroup_that_stops_waiting_is_not_above() {
    let mut r = Recorder::new(60_000_000_000, vec![throttled_half_for_3s("/")]);
    assert!(r.push(second(0, &[("/a", 900, 0)])).is_empty());
    assert!(r.push(second(1, &[("/a", 900, 0)])).is_empty());
    // Absent (it did not wait at all), then above again: the run restarts.
    assert!(r.push(second(2, &[])).is_empty());
    assert!(r.push(second(3, &[("/a", 900, 0)])).is_empty());
    assert!(r.push(second(4, &[("/a", 900, 0)])).is_empty());
    assert_eq!(r.push(second(5, &[("/a", 900, 0)])).len(), 1);
}

#[test]
fn p99_and_contended_triggers_read_their_own_figure() {
    let p99 = Trigger {
        watched: Watched::P99,
        above: 5_000_000.0,
        for_ns: 1_000_000_000,
        cgroups: CgroupFilter::default(),
    };
    let contended = Trigger {
        watched: Watched::Contended,
        above: 0.3,
        ..p99.clone()
    };
    assert_eq!(p99.describe(), "p99 above 5.00 ms for 1.00 s");
    let mut r = Recorder::new(60_000_000_000, vec![p99, contended]);
    // p99 = (t + c) * 10 µs: 1 ms; contended 40 %.
    let fired = r.push(second(0, &[("/a", 0, 400)]));
    assert_eq!(fired.len(), 1);
    assert!(fired[0].rule.starts_with("contended"));
    // p99 8 ms, contended 10 %.
    let fired = r.push(second(1, &[("/a", 700, 100)]));
    assert_eq!(fired.len(), 1);
    assert!(fired[0].rule.starts_with("p99"));
}

#[test]
fn it_keeps_its_span_and_gives_what_follows_a_moment() {
    let mut r = Recorder::new(10_000_000_000, Vec::new());
    for s in 0..25 {
        r.push(second(s, &[("/a", 1, 1)]));
    }
    assert_eq!(r.len(), 10);
    assert_eq!(r.oldest_ns(), Some(15_000_000_000));
    let tail = r.since(20_500_000_000);
    assert_eq!(tail.first().map(|i| i.start_ns), Some(20_000_000_000));
    assert_eq!(tail.len(), 5);
}

/// The README's bound: ten minutes at 1 s of 200 busy cgroups (long paths,
/// 30 histogram buckets each, an occupant each) under 8 MiB.
#[test]
fn ten_minutes_of_200_busy_cgroups_stay_under_the_bound() {
    let mut r = Recorder::new(600_000_000_000, vec![throttled_half_for_3s("/")]);
    for s in 0..700 {
        r.push(busy_second(s));
    }
    assert_eq!(r.len(), 600);
    let bytes = r.heap_bytes();
    assert!(bytes < 8 << 20, "{bytes} bytes");
    assert!(
        bytes > 2 << 20,
        "{bytes} bytes: the estimate misses the rows"
    );
}
