//! `tracer diff BEFORE AFTER`: what changed per cgroup between two dumps, so that
//! a fix can be shown to have worked.
//!
//! Cgroups are matched by path (ids differ across hosts and boots). Times are
//! compared as shares of each session's traced time, since sessions differ in
//! length; percentiles as they are.

use std::{collections::BTreeMap, fmt::Write as _};

use tracer_common::causes::Cause;

use crate::{
    format::{fmt_ns, percent as share, visible},
    recording::{CgroupEntry, Recording},
    timeline::render::spread,
};

/// `47.2 ms -> 120 µs (-100 %)`.
fn change_ns(before: u64, after: u64) -> String {
    let rel = if before == 0 {
        String::new()
    } else {
        format!(
            " ({:+.0} %)",
            (after as f64 - before as f64) * 100.0 / before as f64
        )
    };
    format!("{} -> {}{rel}", fmt_ns(before), fmt_ns(after))
}

/// `39.6 % -> 0.0 %`.
fn change_share(before: f64, after: f64) -> String {
    format!("{before:.1} % -> {after:.1} %")
}

fn session(rec: &Recording) -> String {
    format!(
        "{} | kernel {} | {} CPUs | {:.2} s traced",
        visible(&rec.host),
        visible(&rec.kernel),
        rec.cpus,
        rec.duration_ns as f64 / 1e9
    )
}

fn block(
    out: &mut String,
    (b, a): (&CgroupEntry, &CgroupEntry),
    before: &Recording,
    after: &Recording,
) {
    let (db, da) = (before.duration_ns, after.duration_ns);
    let (wb, wa) = (&b.wait, &a.wait);
    let name = a.name();
    let _ = writeln!(out, "{}", visible(&name));
    if name != a.path {
        let _ = writeln!(out, "  cgroup       {}", visible(&a.path));
    }
    let _ = writeln!(
        out,
        "  verdict      {} -> {}",
        b.verdict.kind.label(),
        a.verdict.kind.label()
    );
    let _ = writeln!(
        out,
        "  waited       {} of the time",
        change_share(
            share(wb.runnable_wait.summary.total_ns, db),
            share(wa.runnable_wait.summary.total_ns, da)
        )
    );
    // Wake-up latency ("other") is left out: it is small and rarely what changed.
    for cause in [Cause::Throttled, Cause::Contended] {
        let _ = writeln!(
            out,
            "  {:<12} {}",
            cause.name(),
            change_share(
                share(wb.causes.ns(cause), db),
                share(wa.causes.ns(cause), da)
            )
        );
    }
    let _ = writeln!(
        out,
        "  on CPU       {}",
        change_share(
            share(b.on_cpu.summary.total_ns, db),
            share(a.on_cpu.summary.total_ns, da)
        )
    );
    let (sb, sa) = (&wb.runnable_wait.summary, &wa.runnable_wait.summary);
    for (label, x, y) in [
        ("p50 wait", sb.p50_ns, sa.p50_ns),
        ("p99 wait", sb.p99_ns, sa.p99_ns),
        ("p99.9 wait", sb.p999_ns, sa.p999_ns),
        ("max wait", sb.max_ns, sa.max_ns),
    ] {
        let _ = writeln!(out, "  {label:<12} {}", change_ns(x, y));
    }
    // The windows' distributions: a fix may leave the total and cut the
    // bursts, or the other way round.
    if let (Some(sb), Some(sa)) = (
        spread(&before.intervals, &b.path),
        spread(&after.intervals, &a.path),
    ) {
        let _ = writeln!(
            out,
            "  per interval median {}, worst {} of the time waiting; worst p99 {}",
            change_share(sb.median_share, sa.median_share),
            change_share(sb.worst_share, sa.worst_share),
            change_ns(sb.worst_p99_ns, sa.worst_p99_ns)
        );
    }
}

/// Paths in `x` that `y` lacks.
fn only<'a>(x: &BTreeMap<&'a str, &CgroupEntry>, y: &BTreeMap<&str, &CgroupEntry>) -> Vec<&'a str> {
    x.keys().filter(|p| !y.contains_key(*p)).copied().collect()
}

/// The comparison of `before` and `after`, for the terminal; at most `top`
/// cgroups (those that waited most, before or after) in detail.
pub fn render(before: &Recording, after: &Recording, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "before: {}", session(before));
    let _ = writeln!(out, "after:  {}", session(after));
    let b: BTreeMap<&str, &CgroupEntry> = before
        .cgroups
        .iter()
        .map(|c| (c.path.as_str(), c))
        .collect();
    let a: BTreeMap<&str, &CgroupEntry> =
        after.cgroups.iter().map(|c| (c.path.as_str(), c)).collect();
    let mut both: Vec<(&CgroupEntry, &CgroupEntry)> = b
        .iter()
        .filter_map(|(path, cb)| Some((*cb, *a.get(path)?)))
        .collect();
    // Most waiting first, in either session.
    both.sort_by(|x, y| {
        let key = |(cb, ca): &(&CgroupEntry, &CgroupEntry)| {
            share(cb.wait.runnable_wait.summary.total_ns, before.duration_ns).max(share(
                ca.wait.runnable_wait.summary.total_ns,
                after.duration_ns,
            ))
        };
        key(y).total_cmp(&key(x))
    });
    if both.is_empty() {
        let _ = writeln!(out, "\nNo cgroup is in both dumps.");
    }
    for (cb, ca) in both.iter().take(top) {
        let _ = writeln!(out);
        block(&mut out, (cb, ca), before, after);
    }
    if both.len() > top {
        let _ = writeln!(
            out,
            "\n... and {} more cgroups in both (--top N shows more)",
            both.len() - top
        );
    }
    for (label, paths) in [("only before", only(&b, &a)), ("only after", only(&a, &b))] {
        if !paths.is_empty() {
            let shown: Vec<_> = paths.iter().map(|p| visible(p)).collect();
            let _ = writeln!(out, "\n{label}: {}", shown.join(", "));
        }
    }
    gc_pauses(&mut out, before, after);
    out
}

/// The JVM's pauses (`record --gc-log`) of both dumps: how much of their
/// time its GC threads stalled, and why, as shares of the pauses' time.
fn gc_pauses(out: &mut String, before: &Recording, after: &Recording) {
    if before.gc_pauses.is_empty() && after.gc_pauses.is_empty() {
        return;
    }
    // (pauses, their time, stalled, throttled, contended, longest stall).
    let figures = |r: &Recording| {
        r.gc_pauses
            .iter()
            .fold((0u64, 0u64, 0u64, 0u64, 0u64, 0u64), |f, p| {
                (
                    f.0 + 1,
                    f.1.saturating_add(p.duration_ns),
                    f.2.saturating_add(p.stalled_ns),
                    f.3.saturating_add(p.throttled_ns),
                    f.4.saturating_add(p.contended_ns),
                    f.5.max(p.stalled_ns),
                )
            })
    };
    let (b, a) = (figures(before), figures(after));
    let _ = writeln!(out, "\nGC pauses (--gc-log): {} -> {}", b.0, a.0);
    let _ = writeln!(out, "  pause time   {}", change_ns(b.1, a.1));
    for (label, bv, av) in [
        ("stalled", b.2, a.2),
        ("throttled", b.3, a.3),
        ("contended", b.4, a.4),
    ] {
        let _ = writeln!(
            out,
            "  {label:<12} {} of the pauses' time",
            change_share(share(bv, b.1), share(av, a.1))
        );
    }
    let _ = writeln!(out, "  worst stall  {}", change_ns(b.5, a.5));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dump,
        timeline::{Interval, IntervalCgroup},
        verdict::Kind,
    };

    fn fixture() -> Recording {
        dump::parse(include_bytes!("../tests/fixtures/record-v0.json")).unwrap()
    }

    #[test]
    fn a_fix_shows_as_changes() {
        let before = fixture();
        let mut after = before.clone();
        // The quota was raised: no more throttling, shorter waits.
        let svc = after.cgroups.iter_mut().find(|c| c.path == "/svc").unwrap();
        svc.wait.causes.throttled_ns = 0;
        svc.wait.runnable_wait.summary.p99_ns /= 10;
        svc.verdict.kind = Kind::Healthy;
        after.cgroups.retain(|c| c.path != "/neighbour");
        after.cgroups.push(CgroupEntry {
            path: "/new".into(),
            ..before.cgroups[0].clone()
        });
        let text = render(&before, &after, 10);
        let block: Vec<&str> = text.lines().skip_while(|l| *l != "/svc").take(10).collect();
        assert_eq!(block[1], "  verdict      quota expiry -> healthy", "{text}");
        assert!(
            block[3].starts_with("  throttled    ") && block[3].ends_with("-> 0.0 %"),
            "{text}"
        );
        assert!(
            block
                .iter()
                .any(|l| l.starts_with("  p99 wait") && l.contains("(-90 %)")),
            "{text}"
        );
        assert!(text.contains("only before: /neighbour"), "{text}");
        assert!(text.contains("only after: /new"), "{text}");
    }

    /// Ten one-second intervals in which `/svc` waited these many ms.
    fn timeline(ms: [u64; 10]) -> Vec<Interval> {
        ms.iter()
            .enumerate()
            .map(|(s, &ms)| Interval {
                start_ns: s as u64 * 1_000_000_000,
                duration_ns: 1_000_000_000,
                cgroups: vec![IntervalCgroup {
                    path: "/svc".into(),
                    wait_ns: ms * 1_000_000,
                    p99_ns: ms * 100_000,
                    ..IntervalCgroup::default()
                }],
                ..Interval::default()
            })
            .collect()
    }

    #[test]
    fn the_windows_distributions_are_compared() {
        // The same total, spread evenly before and in one burst after.
        let mut before = fixture();
        before.intervals = timeline([100; 10]);
        let mut after = before.clone();
        after.intervals = timeline([0, 0, 0, 1_000, 0, 0, 0, 0, 0, 0]);
        let text = render(&before, &after, 10);
        let line = text
            .lines()
            .find(|l| l.starts_with("  per interval"))
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            line,
            "  per interval median 10.0 % -> 0.0 %, worst 10.0 % -> 100.0 % of the time waiting; \
             worst p99 10.0 ms -> 100 ms (+900 %)"
        );
        // Without a timeline on either side, nothing is said.
        before.intervals.clear();
        assert!(!render(&before, &after, 10).contains("per interval"));
    }

    #[test]
    fn identical_dumps_change_nothing() {
        let rec = fixture();
        let text = render(&rec, &rec, 10);
        assert!(text.contains("(+0 %)") && !text.contains("only "), "{text}");
    }

    #[test]
    fn gc_pauses_squeezed_and_alone_are_told_apart() {
        let pause = |stalled_ns: u64, throttled_ns: u64| crate::windows::GcPause {
            duration_ns: 50_000_000,
            stalled_ns,
            throttled_ns,
            contended_ns: stalled_ns - throttled_ns,
            ..Default::default()
        };
        let mut before = fixture();
        before.gc_pauses = vec![pause(40_000_000, 30_000_000), pause(20_000_000, 0)];
        let mut after = fixture();
        after.gc_pauses = vec![pause(0, 0), pause(500_000, 0), pause(0, 0)];
        let text = render(&before, &after, 10);
        let gc: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("GC pauses"))
            .collect();
        assert_eq!(gc[0], "GC pauses (--gc-log): 2 -> 3", "{text}");
        assert_eq!(
            gc[2], "  stalled      60.0 % -> 0.3 % of the pauses' time",
            "{text}"
        );
        assert_eq!(
            gc[3], "  throttled    30.0 % -> 0.0 % of the pauses' time",
            "{text}"
        );
        assert!(
            gc[5].starts_with("  worst stall  40.0 ms -> 500 µs"),
            "{text}"
        );
        assert!(!render(&fixture(), &fixture(), 10).contains("GC pauses"));
    }
}
