//! The timeline as text: `record --interval`'s lines as they come, the
//! report's worst moments, and how a cgroup's intervals are spread.

use std::fmt::Write as _;

use super::{Interval, IntervalCgroup};
use crate::{
    format::{fmt_ns, group_digits, percent, percent_cell, visible},
    report::fit,
};

/// `17:52:03` (UTC) of a moment given in ns since the Unix epoch.
pub fn clock(unix_ns: u64) -> String {
    let s = unix_ns / 1_000_000_000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

const CGROUP_WIDTH: usize = 32;

/// An interval's first two cells: its clock time and its offset.
fn when(started_unix_ns: u64, i: &Interval) -> String {
    format!(
        "{:<8} {:>8}",
        clock(started_unix_ns.saturating_add(i.start_ns)),
        format!("+{:.1}s", i.start_ns as f64 / 1e9)
    )
}

/// The header of the interval table.
pub fn header() -> String {
    format!(
        "{:<8} {:>8}  {:<w$} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7}  behind\n",
        "UTC",
        "at",
        "cgroup",
        "waits",
        "wait",
        "of time",
        "p99",
        "throttled",
        "contended",
        "other",
        w = CGROUP_WIDTH
    )
}

/// What a row calls the cgroup at a path: its workload's name where it has
/// one (`namespace/pod/container`), else the path.
pub type NameOf<'a> = &'a dyn Fn(&str) -> String;

/// One row: a cgroup in an interval.
fn row(out: &mut String, started_unix_ns: u64, i: &Interval, c: &IntervalCgroup, name: NameOf) {
    let d = i.duration_ns;
    let behind = c.top_occupant.as_ref().map_or(String::new(), |o| {
        format!("{} ({})", visible(&name(&o.cgroup)), visible(&o.comm))
    });
    let line = format!(
        "{}  {:<w$} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7}  {behind}",
        when(started_unix_ns, i),
        fit(&name(&c.path), CGROUP_WIDTH),
        group_digits(c.waits),
        fmt_ns(c.wait_ns),
        percent_cell(c.wait_ns, d),
        fmt_ns(c.p99_ns),
        percent_cell(c.throttled_ns, d),
        percent_cell(c.contended_ns, d),
        percent_cell(c.other_ns, d),
        w = CGROUP_WIDTH
    );
    let _ = writeln!(out, "{}", line.trim_end());
}

/// An interval's rows: the `top` cgroups that waited most in it, and how many
/// more there were; a row that says so when none waited.
pub fn lines(started_unix_ns: u64, interval: &Interval, top: usize, name: NameOf) -> String {
    let mut out = String::new();
    if interval.cgroups.is_empty() && interval.omitted_cgroups == 0 {
        let _ = writeln!(
            out,
            "{}  (no cgroup waited)",
            when(started_unix_ns, interval)
        );
        return out;
    }
    for c in interval.cgroups.iter().take(top) {
        row(&mut out, started_unix_ns, interval, c, name);
    }
    let more = interval.cgroups.len().saturating_sub(top) as u64 + interval.omitted_cgroups;
    if more > 0 {
        let _ = writeln!(out, "{:<8} {:>8}  ... and {more} more cgroups", "", "");
    }
    out
}

/// A recording's whole timeline as `record --interval` prints it: the
/// header, then each interval's lines; or why there is none.
pub fn timeline(rec: &crate::recording::Recording, top: usize) -> String {
    if rec.intervals.is_empty() {
        return "This dump has no timeline (it was written by a tracer from before intervals).\n"
            .into();
    }
    let names = rec.names();
    let name = |path: &str| names.of(path);
    let mut out = header();
    for i in &rec.intervals {
        out.push_str(&lines(rec.started_unix_ns, i, top, &name));
    }
    out
}

/// The `top` moments when a cgroup waited most, over the whole timeline: the
/// report's answer to "when".
pub fn worst(started_unix_ns: u64, intervals: &[Interval], top: usize, name: NameOf) -> String {
    let mut rows: Vec<(&Interval, &IntervalCgroup)> = intervals
        .iter()
        .flat_map(|i| i.cgroups.iter().map(move |c| (i, c)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    // By share of the interval: a merged interval is longer, not worse.
    rows.sort_by(|(ia, a), (ib, b)| {
        percent(b.wait_ns, ib.duration_ns)
            .total_cmp(&percent(a.wait_ns, ia.duration_ns))
            .then_with(|| ia.start_ns.cmp(&ib.start_ns))
    });
    // The median: the last interval is cut short by the session's end.
    let mut durations: Vec<u64> = intervals.iter().map(|i| i.duration_ns).collect();
    durations.sort_unstable();
    let resolution = durations[durations.len() / 2];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "When: the {} worst moments of {} intervals of {}, by wait:",
        top.min(rows.len()),
        intervals.len(),
        fmt_ns(resolution)
    );
    out.push_str(&header());
    for (i, c) in rows.into_iter().take(top) {
        row(&mut out, started_unix_ns, i, c, name);
    }
    out
}

/// How a cgroup's wait was spread over the intervals: the median and the
/// worst interval's share of time waiting, and the worst interval's p99. `None`
/// when the timeline does not hold it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Intervals in which it waited, of all.
    pub waited_in: usize,
    pub of: usize,
    pub median_share: f64,
    pub worst_share: f64,
    pub worst_p99_ns: u64,
}

pub fn spread(intervals: &[Interval], path: &str) -> Option<Spread> {
    if intervals.is_empty() {
        return None;
    }
    let mut shares: Vec<f64> = Vec::with_capacity(intervals.len());
    let mut worst_p99_ns = 0;
    let mut waited_in = 0;
    for i in intervals {
        match i.cgroups.iter().find(|c| c.path == path) {
            Some(c) => {
                waited_in += 1;
                worst_p99_ns = worst_p99_ns.max(c.p99_ns);
                shares.push(percent(c.wait_ns, i.duration_ns));
            }
            None => shares.push(0.0),
        }
    }
    if waited_in == 0 {
        return None;
    }
    shares.sort_by(f64::total_cmp);
    Some(Spread {
        waited_in,
        of: intervals.len(),
        median_share: shares[shares.len() / 2],
        worst_share: shares[shares.len() - 1],
        worst_p99_ns,
    })
}

impl Spread {
    /// `waited in 7 of 10 intervals: median 12.0 %, worst 48.1 % of the time, worst p99 4.10 ms`.
    pub fn describe(&self) -> String {
        format!(
            "waited in {} of {} intervals: median {:.1} %, worst {:.1} % of the time; worst p99 {}",
            self.waited_in,
            self.of,
            self.median_share,
            self.worst_share,
            fmt_ns(self.worst_p99_ns)
        )
    }
}
