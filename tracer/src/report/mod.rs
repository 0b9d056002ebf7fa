//! The terminal report of a [`Recording`].

use std::fmt::Write as _;

use tracer_common::{causes::Cause, maps::Counter};

use crate::{
    format::{fmt_ns, group_digits, percent_cell, visible},
    histogram::render_text,
    recording::{CgroupEntry, ProbeStatus, Recording, WaitHistogram, WaitSplit},
    timeline::{
        Interval,
        render::{clock, spread, worst},
    },
    verdict::Verdict,
};

/// Rows of the report's "When" table.
const WORST_MOMENTS: usize = 5;

/// How much of the recording the terminal report shows.
#[derive(Clone, Copy, Debug)]
pub struct TextOptions {
    /// Rows of the per-cgroup tables.
    pub top: usize,
    /// Cgroups (from the top of the table) described in detail.
    pub details: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            top: 20,
            details: 3,
        }
    }
}

/// A label from the recording as a table cell: shown [`visible`], shortened
/// from the left so that the table keeps its shape.
pub(crate) fn fit(label: &str, width: usize) -> String {
    let shown = visible(label);
    let chars: Vec<char> = shown.chars().collect();
    if chars.len() <= width {
        return shown.into_owned();
    }
    let keep = &chars[chars.len() - (width - 1)..];
    format!("…{}", keep.iter().collect::<String>())
}

fn wait_row(out: &mut String, label: &str, width: usize, w: &WaitHistogram, duration_ns: u64) {
    let s = &w.summary;
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fit(label, width),
        group_digits(s.count),
        fmt_ns(s.total_ns),
        percent_cell(s.total_ns, duration_ns),
        fmt_ns(s.p50_ns),
        fmt_ns(s.p90_ns),
        fmt_ns(s.p99_ns),
        fmt_ns(s.p999_ns),
        fmt_ns(s.max_ns),
    );
}

fn wait_header(out: &mut String, first: &str, width: usize) {
    let _ = writeln!(
        out,
        "{first:<width$} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "waits", "total", "of time", "p50", "p90", "p99", "p99.9", "max"
    );
}

fn cause_header(out: &mut String, first: &str, width: usize) {
    let mut line = format!("{first:<width$}");
    for cause in Cause::ALL {
        let _ = write!(line, " {:>10}", cause.name());
    }
    let _ = writeln!(out, "{line} {:>10}  verdict", "on CPU");
}

fn cause_row(
    out: &mut String,
    label: &str,
    width: usize,
    w: &WaitSplit,
    on_cpu: &WaitHistogram,
    verdict: &Verdict,
    duration_ns: u64,
) {
    let mut line = format!("{:<width$}", fit(label, width));
    for cause in Cause::ALL {
        let _ = write!(
            line,
            " {:>10}",
            percent_cell(w.causes.ns(cause), duration_ns)
        );
    }
    let _ = writeln!(
        out,
        "{line} {:>10}  {}",
        percent_cell(on_cpu.summary.total_ns, duration_ns),
        verdict.kind.label(),
    );
}

fn verdict_lines(out: &mut String, v: &Verdict) {
    let _ = writeln!(out, "  verdict: {}", visible(&v.text));
    for note in &v.notes {
        let _ = writeln!(out, "  note: {}", visible(note));
    }
}

/// Where the wait went, in time: `waited 2.11 s: throttled 1.19 s, ...`.
fn split_line(out: &mut String, w: &WaitSplit, on_cpu: &WaitHistogram) {
    let causes: Vec<String> = Cause::ALL
        .iter()
        .map(|&c| format!("{} {}", c.name(), fmt_ns(w.causes.ns(c))))
        .collect();
    let _ = writeln!(
        out,
        "  waited {} in {} waits: {}",
        fmt_ns(w.runnable_wait.summary.total_ns),
        group_digits(w.runnable_wait.summary.count),
        causes.join(", ")
    );
    if on_cpu.summary.count > 0 {
        let _ = writeln!(
            out,
            "  ran {} in {} slices: median {}, p99 {}, max {}",
            fmt_ns(on_cpu.summary.total_ns),
            group_digits(on_cpu.summary.count),
            fmt_ns(on_cpu.summary.p50_ns),
            fmt_ns(on_cpu.summary.p99_ns),
            fmt_ns(on_cpu.summary.max_ns)
        );
    }
}

fn cgroup_details(out: &mut String, c: &CgroupEntry, intervals: &[Interval], duration_ns: u64) {
    let _ = writeln!(out);
    let name = c.name();
    let _ = writeln!(out, "{}", visible(&name));
    if name != c.path {
        // The path stays findable: it is what the kernel and cpu.stat use.
        let _ = writeln!(out, "  cgroup: {}", visible(&c.path));
    }
    if let Some(facts) = c.identity().facts() {
        let _ = writeln!(out, "  {}", visible(&facts));
    }
    verdict_lines(out, &c.verdict);
    split_line(out, &c.wait, &c.on_cpu);
    if let Some(psi) = cgroup_psi_line(c, duration_ns) {
        let _ = writeln!(out, "  {psi}");
    }
    // Steady or in bursts: the same total reads differently.
    if intervals.len() > 1
        && let Some(s) = spread(intervals, &c.path)
    {
        let _ = writeln!(out, "  over time: {}", s.describe());
    }
    if let Some(q) = &c.quota {
        let _ = writeln!(out, "  quota: {}", visible(&q.describe(&c.path)));
    }
    if c.cpu_stat.is_some() || c.wait.causes.throttled_ns > 0 {
        // The traced figure beside the kernel's own counters.
        let mut line = format!(
            "  throttled time: traced {} in {} waits",
            fmt_ns(c.wait.causes.throttled_ns),
            group_digits(c.wait.causes.throttled_waits)
        );
        if let Some(s) = &c.cpu_stat {
            let _ = write!(line, " | cpu.stat {}", fmt_ns(s.throttled_ns));
            if let Some(local) = s.local_throttled_ns {
                let _ = write!(line, " | cpu.stat.local {}", fmt_ns(local));
            }
            let _ = write!(
                line,
                " ({} of {} periods throttled)",
                s.nr_throttled, s.nr_periods
            );
            if let (Some(n), Some(ns)) = (s.nr_bursts, s.burst_ns)
                && n > 0
            {
                let _ = write!(line, " | {n} bursts used {}", fmt_ns(ns));
            }
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(e) = &c.throttle_episodes {
        let by: Vec<String> = e
            .throttled_by
            .iter()
            .map(|(path, n)| format!("{} ({n})", visible(path)))
            .collect();
        let _ = writeln!(
            out,
            "  throttle episodes: {} totalling {} on {} CPUs, median {}, max {}; quota of {}",
            e.count,
            fmt_ns(e.total_ns),
            e.per_cpu.len(),
            fmt_ns(e.durations.summary.p50_ns),
            fmt_ns(e.durations.summary.max_ns),
            by.join(", ")
        );
    }
    blame_lines(out, &c.wait, duration_ns);
    let _ = writeln!(out, "  runnable wait:");
    out.push_str(&render_text(&c.wait.runnable_wait.buckets, "    "));
}

pub fn render(rec: &Recording, options: TextOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} | kernel {} | {} CPUs | {} | {:.2} s traced",
        visible(&rec.tool),
        visible(&rec.tool_version),
        visible(&rec.kernel),
        rec.cpus,
        rec.cgroup_mode,
        rec.duration_ns as f64 / 1e9
    );
    if let Some(t) = &rec.trigger {
        let _ = writeln!(
            out,
            "written by the agent's flight recorder: {} was met by {} at {} (+{:.1}s)",
            visible(&t.rule),
            visible(&t.cgroup),
            clock(
                rec.started_unix_ns
                    .saturating_sub(rec.intervals.first().map_or(0, |i| i.start_ns))
                    .saturating_add(t.at_ns)
            ),
            t.at_ns as f64 / 1e9
        );
    }
    let attached: Vec<String> = rec
        .probes
        .iter()
        .filter(|p| p.attached)
        .map(|p| format!("{}/{}", visible(&p.kind), visible(&p.name)))
        .collect();
    let _ = writeln!(out, "probes: {}", attached.join(", "));
    let unneeded: Vec<&ProbeStatus> = rec
        .probes
        .iter()
        .filter(|p| p.not_needed.is_some())
        .collect();
    if let Some(why) = unneeded.first().and_then(|p| p.not_needed.as_deref()) {
        let names: Vec<String> = unneeded
            .iter()
            .map(|p| format!("{}/{}", visible(&p.kind), visible(&p.name)))
            .collect();
        let _ = writeln!(
            out,
            "probes left out: {}: {}",
            names.join(", "),
            visible(why)
        );
    }
    for p in rec
        .probes
        .iter()
        .filter(|p| !p.attached && p.not_needed.is_none())
    {
        let _ = writeln!(
            out,
            "probe not attached: {}/{}: {}",
            visible(&p.kind),
            visible(&p.name),
            visible(p.error.as_deref().unwrap_or("unknown reason"))
        );
    }
    if !rec.tier.is_empty() {
        let _ = writeln!(out, "tier: {}", visible(&rec.tier));
    }
    let _ = writeln!(
        out,
        "throttled time from: {}",
        visible(&rec.throttle_method)
    );
    let e = &rec.events;
    // Where the wakeup programs are not needed, nothing counts wakeups.
    let wakeups = if !unneeded.iter().any(|p| p.name == "sched_wakeup") {
        format!(
            ", {} sched_wakeup, {} sched_wakeup_new",
            group_digits(e.get(Counter::Wakeup)),
            group_digits(e.get(Counter::WakeupNew))
        )
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "events: {} sched_switch{wakeups}; {} waits recorded, {} throttle episodes",
        group_digits(e.get(Counter::Switch)),
        group_digits(e.get(Counter::WaitRecorded)),
        group_digits(e.get(Counter::Episode)),
    );
    let losses = e.losses();
    if losses.is_empty() {
        let _ = writeln!(out, "; nothing lost");
    } else {
        let lost: Vec<String> = losses
            .iter()
            .map(|(c, n)| format!("{} {}", group_digits(*n), c.name()))
            .collect();
        let _ = writeln!(out, "; LOST: {}", lost.join(", "));
    }
    if let Some(line) = psi_line(rec) {
        let _ = writeln!(out, "{line}");
    }

    let width = rec
        .cgroups
        .iter()
        .take(options.top)
        .map(|c| visible(&c.name()).chars().count())
        .chain(
            rec.pids
                .iter()
                .map(|p| visible(&p.comm).chars().count() + 12),
        )
        .chain(
            rec.threads
                .iter()
                .map(|t| visible(&t.pattern).chars().count()),
        )
        .max()
        .unwrap_or(6)
        .clamp(6, 48);

    let _ = writeln!(out);
    if rec.cgroups.is_empty() {
        let _ = writeln!(
            out,
            "No runnable waits were recorded for the selected cgroups."
        );
    } else {
        let _ = writeln!(
            out,
            "Run-queue wait per cgroup (cpu controller), largest total first:"
        );
        wait_header(&mut out, "cgroup", width);
        for c in rec.cgroups.iter().take(options.top) {
            wait_row(
                &mut out,
                &c.name(),
                width,
                &c.wait.runnable_wait,
                rec.duration_ns,
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Why they waited, as shares of the traced time:");
        cause_header(&mut out, "cgroup", width);
        for c in rec.cgroups.iter().take(options.top) {
            cause_row(
                &mut out,
                &c.name(),
                width,
                &c.wait,
                &c.on_cpu,
                &c.verdict,
                rec.duration_ns,
            );
        }
        if rec.cgroups.len() > options.top {
            let _ = writeln!(
                out,
                "... and {} more cgroups (--top N shows more; --json has all)",
                rec.cgroups.len() - options.top
            );
        }
        let meanings: Vec<String> = Cause::ALL
            .iter()
            .map(|c| format!("{}: {}", c.name(), c.meaning()))
            .collect();
        let _ = writeln!(
            out,
            "(times are summed over threads: over 100 % means several threads at once; {})",
            meanings.join("; ")
        );
    }

    // `--pid` and `--threads` selections: label, wait, runs, verdict.
    let selections: Vec<(String, &WaitSplit, &WaitHistogram, &Verdict)> = rec
        .pids
        .iter()
        .map(|p| {
            (
                format!("{} {}", p.pid, p.comm),
                &p.wait,
                &p.on_cpu,
                &p.verdict,
            )
        })
        .chain(
            rec.threads
                .iter()
                .map(|t| (t.pattern.clone(), &t.wait, &t.on_cpu, &t.verdict)),
        )
        .collect();
    if !selections.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Selected processes and threads:");
        wait_header(&mut out, "selection", width);
        for (label, wait, _, _) in &selections {
            wait_row(&mut out, label, width, &wait.runnable_wait, rec.duration_ns);
        }
        cause_header(&mut out, "selection", width);
        for (label, wait, on_cpu, verdict) in &selections {
            cause_row(
                &mut out,
                label,
                width,
                wait,
                on_cpu,
                verdict,
                rec.duration_ns,
            );
        }
    }

    // When: the moments that waited most, with who held the CPU then.
    if rec.intervals.len() > 1 && !rec.cgroups.is_empty() {
        let _ = writeln!(out);
        let names = rec.names();
        out.push_str(&worst(
            rec.started_unix_ns,
            &rec.intervals,
            WORST_MOMENTS,
            &|path: &str| names.of(path),
        ));
    }

    stalls::section(&mut out, rec);
    out.push_str(&crate::windows::render::recorded(rec));

    for c in rec.cgroups.iter().take(options.details) {
        cgroup_details(&mut out, c, &rec.intervals, rec.duration_ns);
    }
    for p in &rec.pids {
        let _ = writeln!(out);
        let kind = match p.kind {
            crate::process::PidKind::Process => "process",
            crate::process::PidKind::Thread => "thread",
        };
        let _ = writeln!(
            out,
            "{kind} {} {}{}",
            p.pid,
            visible(&p.comm),
            p.cgroup
                .as_deref()
                .map(|c| format!(" in {}", visible(c)))
                .unwrap_or_default()
        );
        verdict_lines(&mut out, &p.verdict);
        split_line(&mut out, &p.wait, &p.on_cpu);
        blame_lines(&mut out, &p.wait, rec.duration_ns);
        let _ = writeln!(out, "  runnable wait:");
        out.push_str(&render_text(&p.wait.runnable_wait.buckets, "    "));
    }
    for t in &rec.threads {
        let _ = writeln!(out);
        let mut processes: Vec<u32> = t.matched.iter().map(|m| m.tgid).collect();
        processes.dedup();
        let _ = writeln!(
            out,
            "threads '{}': {} matched in {} processes{}",
            visible(&t.pattern),
            t.matched.len(),
            processes.len(),
            if t.untraced > 0 {
                format!(" ({} more not traced: map full)", t.untraced)
            } else {
                String::new()
            }
        );
        if t.matched.is_empty() {
            let _ = writeln!(
                out,
                "  no thread name matched the pattern during the session"
            );
            continue;
        }
        verdict_lines(&mut out, &t.verdict);
        split_line(&mut out, &t.wait, &t.on_cpu);
        blame_lines(&mut out, &t.wait, rec.duration_ns);
        let _ = writeln!(out, "  runnable wait:");
        out.push_str(&render_text(&t.wait.runnable_wait.buckets, "    "));
    }
    out
}

mod blame;
use blame::blame_lines;
mod pressure;
pub use pressure::{cgroup_psi_line, psi_line};
mod stalls;
#[cfg(test)]
mod tests;
