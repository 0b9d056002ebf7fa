use tracer_common::maps::CgroupStats;

use super::{render::*, *};
use crate::sample::Totals;

fn totals(waits: &[u64], throttled: u64, contended: u64, on_cpu: u64) -> Totals {
    let mut s = CgroupStats::ZERO;
    for &w in waits {
        s.record_wait(w, Default::default());
    }
    s.record_run(on_cpu);
    s.causes.throttled_ns = throttled;
    s.causes.contended_ns = contended;
    s.causes.other_ns = waits.iter().sum::<u64>() - throttled - contended;
    Totals::from_stats(&s)
}

/// `n` intervals splitting `rec`'s session, each holding every cgroup's waits
/// as the whole session's (for dump tests: figures that validate).
pub(crate) fn timeline_of(rec: &crate::recording::Recording, n: u64) -> Vec<Interval> {
    let step = rec.duration_ns / n.max(1);
    (0..n)
        .map(|k| {
            let mut cgroups: Vec<IntervalCgroup> = rec
                .cgroups
                .iter()
                .filter(|c| c.wait.runnable_wait.summary.count > 0)
                .map(|c| {
                    let w = &c.wait.runnable_wait;
                    let hist =
                        SparseHist::from_ranges(&w.buckets, w.summary.total_ns, w.summary.max_ns);
                    let causes = &c.wait.causes;
                    IntervalCgroup::new(
                        c.path.clone(),
                        hist,
                        (causes.throttled_ns, causes.contended_ns, causes.other_ns),
                        c.on_cpu.summary.total_ns,
                    )
                })
                .collect();
            sort(&mut cgroups);
            let mut i = Interval {
                start_ns: k * step,
                duration_ns: step,
                cgroups,
                ..Interval::default()
            };
            i.trim(usize::MAX);
            i
        })
        .collect()
}

fn path_of(id: u64) -> String {
    format!("/c{id}")
}

/// A one-second interval in which cgroup `id` waited `ns` in one wait.
fn one(start_s: u64, id: u64, ns: u64) -> Interval {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    w.cgroups.insert(id, totals(&[ns], 0, ns, 1));
    let mut i = Interval::from_window(&w, start_s * 1_000_000_000, path_of, |_| true);
    i.trim(usize::MAX);
    i
}

#[test]
fn a_window_becomes_rows_most_waiting_first_with_their_occupant() {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    w.cgroups.insert(1, totals(&[1_000, 2_000], 0, 3_000, 500));
    w.cgroups
        .insert(2, totals(&[4_000_000, 6_000_000], 7_000_000, 0, 9));
    w.cgroups.insert(3, totals(&[], 0, 0, 100)); // ran, never waited
    w.cgroups.insert(4, totals(&[9_000_000], 0, 0, 1)); // filtered out
    for (occupant, tgid, ns) in [(2, 10, 1_000), (3, 11, 2_000), (3, 12, 500)] {
        w.blame.insert(
            BlamePair {
                victim: 1,
                occupant_cgroup: occupant,
                occupant_tgid: tgid,
            },
            (format!("p{tgid}"), ns),
        );
    }
    let i = Interval::from_window(&w, 5_000_000_000, path_of, |p| p != "/c4");
    assert_eq!((i.start_ns, i.duration_ns), (5_000_000_000, 1_000_000_000));
    let paths: Vec<&str> = i.cgroups.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/c2", "/c1"]);
    let c2 = &i.cgroups[0];
    assert_eq!(
        (
            c2.waits,
            c2.wait_ns,
            c2.throttled_ns,
            c2.other_ns,
            c2.on_cpu_ns
        ),
        (2, 10_000_000, 7_000_000, 3_000_000, 9)
    );
    assert_eq!(c2.max_ns, 6_000_000);
    assert!(
        c2.p99_ns > 5_800_000 && c2.p99_ns <= 6_000_000,
        "{}",
        c2.p99_ns
    );
    assert!(c2.top_occupant.is_none());
    let top = i.cgroups[1].top_occupant.as_ref().unwrap();
    assert_eq!(
        (top.cgroup.as_str(), top.tgid, top.comm.as_str(), top.ns),
        ("/c3", 11, "p11", 2_000)
    );
}

#[test]
fn trimming_sums_what_it_leaves_out() {
    let mut w = Sample {
        elapsed_ns: 1,
        ..Sample::default()
    };
    for id in 1..=5 {
        w.cgroups.insert(id, totals(&[id * 1_000], 0, 0, 1));
    }
    let mut i = Interval::from_window(&w, 0, path_of, |_| true);
    i.trim(2);
    assert_eq!(i.cgroups.len(), 2);
    assert_eq!(i.cgroups[0].path, "/c5");
    assert_eq!((i.omitted_cgroups, i.omitted_wait_ns), (3, 6_000));
}

#[test]
fn a_long_session_is_merged_into_a_bounded_contiguous_timeline() {
    let mut t = Timeline::new(10, 4);
    let mut total = 0;
    for s in 0..37 {
        let ns = 1_000 * (s + 1);
        total += ns;
        t.push(one(s, s % 3, ns));
        assert!(t.intervals().len() <= 10, "at {s}: {}", t.intervals().len());
    }
    let intervals = t.intervals();
    // 37 one-second intervals at most 10 kept: 4 s each, the last partial.
    assert_eq!(intervals.len(), 10);
    let mut at = 0;
    for (k, i) in intervals.iter().enumerate() {
        assert_eq!(i.start_ns, at, "interval {k} is not contiguous");
        if k + 1 < intervals.len() {
            assert_eq!(i.duration_ns, 4_000_000_000, "interval {k}");
        }
        at = i.end_ns();
    }
    assert_eq!(at, 37_000_000_000);
    assert_eq!(intervals.last().unwrap().duration_ns, 1_000_000_000);
    let kept: u64 = intervals
        .iter()
        .flat_map(|i| &i.cgroups)
        .map(|c| c.wait_ns)
        .sum();
    assert_eq!(kept, total, "merging loses no wait");
    let waits: u64 = intervals
        .iter()
        .flat_map(|i| &i.cgroups)
        .map(|c| c.waits)
        .sum();
    assert_eq!(waits, 37);
    // The merged histogram is the sum of the parts: its maximum is the largest.
    let first = &intervals[0];
    let c0 = first.cgroups.iter().find(|c| c.path == "/c0").unwrap();
    assert_eq!((c0.waits, c0.max_ns), (2, 4_000));
}

#[test]
fn merged_occupants_keep_the_larger() {
    let mut a = one(0, 1, 1_000);
    let mut b = one(1, 1, 1_000);
    a.cgroups[0].top_occupant = Some(Occupant {
        cgroup: "/x".into(),
        ns: 10,
        ..Occupant::default()
    });
    b.cgroups[0].top_occupant = Some(Occupant {
        cgroup: "/y".into(),
        ns: 20,
        ..Occupant::default()
    });
    a.absorb(b);
    assert_eq!(a.cgroups[0].top_occupant.as_ref().unwrap().cgroup, "/y");
    assert_eq!(a.duration_ns, 2_000_000_000);
}

/// A window's throttle episodes (three of 80 ms on two CPUs) are its row's,
/// a merge adds them, and a dump keeps them.
#[test]
fn throttle_episodes_mark_the_interval_they_ended_in() {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    w.cgroups
        .insert(1, totals(&[80_000_000; 3], 240_000_000, 0, 20_000_000));
    w.cgroups.insert(2, totals(&[1_000], 0, 1_000, 1));
    let mut durations = tracer_common::hist::LatencyHist::ZERO;
    for _ in 0..3 {
        durations.record(80_000_000);
    }
    w.episodes.insert(
        1,
        crate::sample::EpisodeTotals {
            durations: SparseHist::from_hist(&durations),
            ..Default::default()
        },
    );
    let mut a = Interval::from_window(&w, 0, path_of, |_| true);
    let row = |i: &Interval, path: &str| {
        let c = i.cgroups.iter().find(|c| c.path == path).unwrap();
        (c.throttle_episodes, c.throttle_episode_ns)
    };
    assert_eq!(row(&a, "/c1"), (3, 240_000_000));
    assert_eq!(row(&a, "/c2"), (0, 0));
    let b = Interval::from_window(&w, 1_000_000_000, path_of, |_| true);
    a.absorb(b);
    a.trim(usize::MAX);
    assert_eq!(row(&a, "/c1"), (6, 480_000_000));
    let json = serde_json::to_string(&a).unwrap();
    // Rows without episodes say nothing of them: older readers and small dumps.
    assert_eq!(json.matches("throttle_episodes").count(), 1, "{json}");
    let mut back: Vec<Interval> = serde_json::from_str(&format!("[{json}]")).unwrap();
    validate(&mut back).unwrap();
    assert_eq!(row(&back[0], "/c1"), (6, 480_000_000));
}

#[test]
fn intervals_read_back_from_json_with_their_histograms() {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    w.cgroups
        .insert(1, totals(&[0, 5, 1_000, 3_000_000], 0, 0, 7));
    let mut written = vec![Interval::from_window(&w, 0, path_of, |_| true)];
    written[0].trim(usize::MAX);
    let json = serde_json::to_string(&written).unwrap();
    let mut read: Vec<Interval> = serde_json::from_str(&json).unwrap();
    assert!(read[0].cgroups[0].hist.buckets.is_empty(), "not written");
    validate(&mut read).unwrap();
    assert_eq!(read, written);
}

#[test]
fn corrupted_intervals_are_refused_with_where() {
    let written = vec![one(0, 1, 1_000), one(1, 2, 2_000)];
    let bad = |f: &dyn Fn(&mut Vec<Interval>)| {
        let mut v = written.clone();
        f(&mut v);
        let mut read: Vec<Interval> =
            serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        validate(&mut read).unwrap_err().to_string()
    };
    assert!(bad(&|v| v[1].cgroups[0].waits = 9).contains("intervals[1].cgroups[0] holds 1"));
    assert!(bad(&|v| v[0].cgroups[0].hdr = "x".into()).contains("intervals[0].cgroups[0].hdr"));
    assert!(bad(&|v| v[1].start_ns = 0).contains("starts before"));
    assert!(bad(&|v| v[0].cgroups[0].path = "rel".into()).contains("path"));
    assert!(bad(&|v| v[1].duration_ns = u64::MAX).contains("past the clock"));
}

#[test]
fn lines_show_the_split_as_shares_of_the_interval() {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    w.cgroups.insert(
        1,
        totals(&[100_000_000, 200_000_000], 250_000_000, 50_000_000, 1),
    );
    w.cgroups.insert(2, totals(&[1_000], 0, 1_000, 1));
    w.cgroups.insert(3, totals(&[500], 0, 500, 1));
    let i = Interval::from_window(&w, 2_000_000_000, path_of, |_| true);
    // 1970-01-01 00:01:40 UTC, two seconds in.
    let text = lines(100_000_000_000, &i, 2, &|p: &str| p.to_owned());
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("00:01:42    +2.0s  /c1 "), "{text}");
    let cells: Vec<&str> = first
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells[3..],
        [
            "2", "300 ms", "30.0 %", "200 ms", "25.0 %", "5.0 %", "0.0 %"
        ],
        "waits, wait, of time, p99, throttled, contended, other: {text}"
    );
    assert_eq!(
        first,
        first.trim_end(),
        "no trailing blanks without an occupant"
    );
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .contains("... and 1 more cgroups"),
        "{text}"
    );
    assert_eq!(clock(86_400_000_000_000 + 3_723_000_000_000), "01:02:03");
}

#[test]
fn a_dumps_timeline_prints_as_record_printed_it() {
    let mut rec =
        crate::dump::parse(include_bytes!("../../tests/fixtures/dump-trigger.json")).unwrap();
    let text = timeline(&rec, 20);
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::trim_end), Some(header().trim_end()));
    // One line per cgroup that waited in an interval, or one saying none did.
    let rows: usize = rec.intervals.iter().map(|i| i.cgroups.len().max(1)).sum();
    assert_eq!(lines.count(), rows, "{text}");
    assert!(text.contains("/svc") && text.contains(" 79.0 %"), "{text}");
    rec.intervals.clear();
    assert!(timeline(&rec, 20).contains("no timeline"));
    let quiet = Interval {
        start_ns: 2_000_000_000,
        duration_ns: 1_000_000_000,
        ..Interval::default()
    };
    assert_eq!(lines_of(&quiet), "00:00:02    +2.0s  (no cgroup waited)\n");
}

fn lines_of(i: &Interval) -> String {
    lines(0, i, 5, &|p: &str| p.to_owned())
}

#[test]
fn escapes_in_names_do_not_reach_the_terminal() {
    let mut i = one(0, 1, 1_000);
    i.cgroups[0].path = "/\u{1b}]0;pwned\u{7}".into();
    i.cgroups[0].top_occupant = Some(Occupant {
        cgroup: "/x".into(),
        comm: "\u{1b}[31mred".into(),
        ..Occupant::default()
    });
    let text =
        lines(0, &i, 5, &|p: &str| p.to_owned()) + &worst(0, &[i], 5, &|p: &str| p.to_owned());
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
}

#[test]
fn the_worst_moments_and_the_spread_come_from_shares() {
    // /c1 waits 10 ms every second, then 600 ms in second 7.
    let mut t = Timeline::default();
    for s in 0..10 {
        t.push(one(s, 1, if s == 7 { 600_000_000 } else { 10_000_000 }));
    }
    let text = worst(0, t.intervals(), 1, &|p: &str| p.to_owned());
    assert!(
        text.starts_with("When: the 1 worst moments of 10 intervals of 1.00 s"),
        "{text}"
    );
    assert!(text.lines().nth(2).unwrap().contains("+7.0s"), "{text}");
    let s = spread(t.intervals(), "/c1").unwrap();
    assert_eq!((s.waited_in, s.of), (10, 10));
    assert!((s.median_share - 1.0).abs() < 1e-9 && (s.worst_share - 60.0).abs() < 1e-9);
    assert_eq!(s.worst_p99_ns, 600_000_000);
    assert!(spread(t.intervals(), "/none").is_none());
    assert_eq!(worst(0, &[], 3, &|p: &str| p.to_owned()), "");
}

/// 200 busy cgroups, each with waits spread over 30 buckets, every second.
pub(crate) fn busy_second(s: u64) -> Interval {
    let mut w = Sample {
        elapsed_ns: 1_000_000_000,
        ..Sample::default()
    };
    for id in 0..200 {
        let waits: Vec<u64> = (0..30).map(|k| (1_000 + id * 37 + s) << (k % 20)).collect();
        let sum: u64 = waits.iter().sum();
        w.cgroups.insert(id, totals(&waits, sum / 3, sum / 3, 1));
        w.blame.insert(
            BlamePair {
                victim: id,
                occupant_cgroup: (id + 1) % 200,
                occupant_tgid: 1_000 + id as u32,
            },
            ("a-fifteen-char!".into(), 1),
        );
    }
    let long = |id: u64| format!("/kubepods.slice/kubepods-burstable.slice/pod{id:032x}.slice");
    Interval::from_window(&w, s * 1_000_000_000, long, |_| true)
}

/// The bound docs/dump-format.md states for a dump's timeline.
const TIMELINE_BOUND: usize = 8 << 20;

#[test]
fn a_dump_timeline_of_200_busy_cgroups_stays_bounded() {
    // Ten minutes at 1 s: the most intervals a timeline keeps, each with as
    // many rows as it keeps; a longer session merges them, never more.
    let mut t = Timeline::default();
    for s in 0..600 {
        t.push(busy_second(s));
    }
    assert_eq!(t.intervals().len(), MAX_INTERVALS);
    assert!(
        t.intervals()
            .iter()
            .all(|i| i.cgroups.len() == DUMP_CGROUPS)
    );
    assert!(
        t.intervals()
            .iter()
            .all(|i| i.omitted_cgroups == 200 - DUMP_CGROUPS as u64)
    );
    let json = serde_json::to_string(t.intervals()).unwrap();
    assert!(
        json.len() < TIMELINE_BOUND,
        "{} bytes in {} intervals",
        json.len(),
        t.intervals().len()
    );
}
