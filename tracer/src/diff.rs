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

fn block(out: &mut String, b: &CgroupEntry, a: &CgroupEntry, db: u64, da: u64) {
    let (wb, wa) = (&b.wait, &a.wait);
    let _ = writeln!(out, "{}", visible(&b.path));
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
        block(&mut out, cb, ca, before.duration_ns, after.duration_ns);
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dump, verdict::Kind};

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

    #[test]
    fn identical_dumps_change_nothing() {
        let rec = fixture();
        let text = render(&rec, &rec, 10);
        assert!(text.contains("(+0 %)") && !text.contains("only "), "{text}");
    }
}
