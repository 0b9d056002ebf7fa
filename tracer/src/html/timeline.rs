//! A cgroup's timeline on the page: what it waited in each interval,
//! stacked by cause, and the distribution of its waits over time as a
//! heatmap, with the recorder's trigger marked.

use std::fmt::Write as _;

use tracer_common::causes::Cause;

use super::escape;
use crate::{
    format::{fmt_ns, percent},
    recording::Recording,
    stall::{self, Stall},
    timeline::{Interval, IntervalCgroup},
    windows::GcPause,
};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 110.0;
/// Heatmap rows: powers of two from 1.02 µs (2^10 ns) to 2^31 ns (2.1 s),
/// and one for everything above.
const FIRST_POWER: u32 = 10;
const LAST_POWER: u32 = 31;
const ROW: f64 = 6.0;
/// The strip under the columns that marks throttle episodes.
const STRIP: f64 = 4.0;
/// Below the strip: the axis' labels.
const LABELS: f64 = HEIGHT + STRIP + 12.0;

/// The stacked parts of a column, each cause's name and colour as the
/// page's other charts draw it, and its ns.
fn parts(c: &IntervalCgroup) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
    // The page's parts are running, then each cause in `Cause::ALL`'s order.
    super::parts()
        .into_iter()
        .skip(1)
        .zip(Cause::ALL)
        .map(move |((name, colour, _), cause)| {
            let ns = match cause {
                Cause::Throttled => c.throttled_ns,
                Cause::Contended => c.contended_ns,
                Cause::Other => c.other_ns,
            };
            (name, colour, ns)
        })
}

/// Where a moment `ns` into the recording falls on the chart.
fn x_of(ns: u64, end_ns: u64) -> f64 {
    WIDTH * ns as f64 / end_ns.max(1) as f64
}

/// The timeline and the heatmap of `path`, or nothing when the recording has
/// no timeline (older dumps) or only one interval.
pub fn figures(rec: &Recording, path: &str) -> String {
    let intervals = &rec.intervals;
    let end_ns = intervals.last().map_or(0, Interval::end_ns);
    if intervals.len() < 2 || end_ns == 0 {
        return String::new();
    }
    let rows: Vec<(&Interval, Option<&IntervalCgroup>)> = intervals
        .iter()
        .map(|i| (i, i.cgroups.iter().find(|c| c.path == path)))
        .collect();
    let names = rec.names();
    // A scale of at least 100 % of one thread's time: several threads can
    // wait at once.
    let top = rows
        .iter()
        .filter_map(|(i, c)| Some(percent((*c)?.wait_ns, i.duration_ns)))
        .fold(100.0_f64, f64::max);
    let mut svg = format!(
        "<svg class=\"timeline\" width=\"{WIDTH:.0}\" height=\"{:.0}\" role=\"img\" \
         aria-label=\"waits per interval, by cause\">",
        LABELS + 3.0
    );
    for (i, c) in &rows {
        let Some(c) = c else { continue };
        let x = x_of(i.start_ns, end_ns);
        let w = (x_of(i.end_ns(), end_ns) - x).max(1.0);
        let mut y = HEIGHT;
        for (name, colour, ns) in parts(c) {
            let share = percent(ns, i.duration_ns);
            let h = HEIGHT * share / top;
            if h <= 0.0 {
                continue;
            }
            y -= h;
            let _ = write!(
                svg,
                "<rect class=\"{name}\" data-start-ns=\"{}\" data-share=\"{share:.1}\" x=\"{x:.2}\" \
                 y=\"{y:.2}\" width=\"{w:.2}\" height=\"{h:.2}\" fill=\"{colour}\"><title>{}</title></rect>",
                i.start_ns,
                escape(&format!(
                    "+{:.1} s: {name} {share:.1} % of the interval; {} waits, p99 {}{}",
                    i.start_ns as f64 / 1e9,
                    c.waits,
                    fmt_ns(c.p99_ns),
                    c.top_occupant
                        .as_ref()
                        .map(|o| format!("; behind {} ({})", names.of(&o.cgroup), o.comm))
                        .unwrap_or_default()
                ))
            );
        }
    }
    // 100 %: one thread's whole time.
    let at = HEIGHT - HEIGHT * 100.0 / top;
    let _ = write!(
        svg,
        "<line x1=\"0\" x2=\"{WIDTH:.0}\" y1=\"{at:.2}\" y2=\"{at:.2}\" stroke=\"#d0d7de\" \
         stroke-dasharray=\"2,2\"/><text x=\"2\" y=\"{:.0}\" font-size=\"10\" fill=\"#59636e\">\
         {:.0} %</text><text x=\"2\" y=\"{:.0}\" font-size=\"10\" fill=\"#59636e\">0</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"10\" fill=\"#59636e\" text-anchor=\"end\">+{:.0} s</text>",
        at + 10.0,
        100.0,
        LABELS,
        WIDTH,
        LABELS,
        end_ns as f64 / 1e9
    );
    let episodes = episode_marks(&rows, end_ns);
    svg.push_str(&episodes);
    let stalls = stall_points(rec, path, end_ns);
    svg.push_str(&stalls);
    let pauses = pause_bands(rec, path, end_ns);
    svg.push_str(&pauses);
    if let Some(t) = &rec.trigger {
        let x = x_of(t.at_ns, end_ns);
        let _ = write!(
            svg,
            "<line class=\"trigger\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"0\" y2=\"{HEIGHT:.0}\" \
             stroke=\"#1f2328\" stroke-width=\"2\"><title>{}</title></line>",
            escape(&format!("trigger: {} met by {}", t.rule, t.cgroup))
        );
    }
    svg.push_str("</svg>");
    let mut out = format!(
        "<figure>{svg}<figcaption>Over time: the share of each interval ({}) its threads \
         waited, by cause{}{}{}{}.</figcaption></figure>\n",
        fmt_ns(intervals[0].duration_ns),
        if episodes.is_empty() {
            ""
        } else {
            "; the strip under the columns marks the intervals in which its quota ran out \
             (throttle episodes: hover for how many and how long)"
        },
        if pauses.is_empty() {
            ""
        } else {
            "; each violet band is a GC pause of the JVM's log (--gc-log), hover for what held \
             its GC threads up"
        },
        if stalls.is_empty() {
            ""
        } else {
            "; each dot at the top is a slow wait (--slower), coloured by its main cause \
             (hover for its record)"
        },
        if rec.trigger.is_some() {
            "; the black line is the moment the recorder's trigger was met"
        } else {
            ""
        }
    );
    out.push_str(&heatmap(&rows, end_ns));
    out
}

/// The intervals in which `path`'s cfs_rqs were throttled, as a strip under
/// its columns: darker the more of the interval its CPUs spent throttled.
fn episode_marks(rows: &[(&Interval, Option<&IntervalCgroup>)], end_ns: u64) -> String {
    let colour = super::parts()
        .into_iter()
        .find(|(name, _, _)| *name == Cause::Throttled.name())
        .map_or("#cf222e", |(_, colour, _)| colour);
    let mut out = String::new();
    for (i, c) in rows {
        let Some(c) = c.filter(|c| c.throttle_episodes > 0) else {
            continue;
        };
        let x = x_of(i.start_ns, end_ns);
        let w = (x_of(i.end_ns(), end_ns) - x).max(1.0);
        // Episodes on several CPUs overlap: the share can pass 100 %.
        let share = percent(c.throttle_episode_ns, i.duration_ns);
        let opacity = 0.35 + 0.65 * (share / 100.0).min(1.0);
        let _ = write!(
            out,
            "<rect class=\"episodes\" data-start-ns=\"{}\" data-count=\"{}\" x=\"{x:.2}\" \
             y=\"{:.1}\" width=\"{w:.2}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"{opacity:.2}\">\
             <title>{}</title></rect>",
            i.start_ns,
            c.throttle_episodes,
            HEIGHT + 1.0,
            STRIP - 1.0,
            escape(&format!(
                "+{:.1} s: {} throttle episode{} (its quota ran out), {} throttled in all",
                i.start_ns as f64 / 1e9,
                c.throttle_episodes,
                if c.throttle_episodes == 1 { "" } else { "s" },
                fmt_ns(c.throttle_episode_ns)
            ))
        );
    }
    out
}

/// Slow-wait dots a timeline shows at most: the longest.
const MAX_DOTS: usize = 500;

/// `path`'s slow waits as dots along the top of its timeline, each coloured
/// by its largest cause, its record in its tooltip.
fn stall_points(rec: &Recording, path: &str, end_ns: u64) -> String {
    let mut ours: Vec<&Stall> = rec.stalls.iter().filter(|s| s.cgroup == path).collect();
    ours.sort_by_key(|s| std::cmp::Reverse(s.wait_ns));
    ours.truncate(MAX_DOTS);
    let colours: Vec<(&str, &str)> = super::parts()
        .into_iter()
        .skip(1)
        .map(|(name, colour, _)| (name, colour))
        .collect();
    let names = rec.names();
    let name_of = |path: &str| names.of(path);
    let mut out = String::new();
    for s in ours {
        let by_cause = [s.throttled_ns, s.contended_ns, s.other_ns];
        let main = (0..by_cause.len())
            .max_by_key(|&i| by_cause[i])
            .unwrap_or(0);
        let (name, colour) = colours.get(main).copied().unwrap_or(("other", "#8c959f"));
        let x = x_of(s.at_ns, end_ns);
        let _ = write!(
            out,
            "<circle class=\"stall\" data-at-ns=\"{}\" data-cause=\"{name}\" cx=\"{x:.2}\" cy=\"5\" \
             r=\"3.5\" fill=\"{colour}\" stroke=\"#1f2328\" stroke-width=\"0.5\"><title>{}</title></circle>",
            s.at_ns,
            escape(stall::line(s, &name_of).trim_end())
        );
    }
    out
}

/// The GC pauses of `path`'s JVM (`gc_pauses[]`) as bands across its
/// timeline, the longest [`MAX_DOTS`], each explained in its tooltip.
fn pause_bands(rec: &Recording, path: &str, end_ns: u64) -> String {
    let mut ours: Vec<&GcPause> = rec
        .gc_pauses
        .iter()
        .filter(|p| p.cgroup.as_deref() == Some(path))
        .collect();
    ours.sort_by_key(|p| std::cmp::Reverse(p.duration_ns));
    ours.truncate(MAX_DOTS);
    let names = rec.names();
    let mut out = String::new();
    for p in ours {
        let x = x_of(p.at_ns, end_ns);
        let w = (x_of(p.at_ns.saturating_add(p.duration_ns), end_ns) - x).max(1.0);
        let _ = write!(
            out,
            "<rect class=\"gc-pause\" data-at-ns=\"{}\" x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" \
             height=\"{HEIGHT:.0}\" fill=\"#8250df\" fill-opacity=\"0.3\"><title>{}</title></rect>",
            p.at_ns,
            escape(&format!(
                "+{:.3} s {}: {}; GC threads stalled {} (throttled {}{}, contended {}{}, other {})",
                p.at_ns as f64 / 1e9,
                p.kind,
                fmt_ns(p.duration_ns),
                fmt_ns(p.stalled_ns),
                fmt_ns(p.throttled_ns),
                p.throttled_by
                    .as_ref()
                    .map(|b| format!(" by {}", names.of(b)))
                    .unwrap_or_default(),
                fmt_ns(p.contended_ns),
                p.top_occupant
                    .as_ref()
                    .map(|o| format!(" behind {} ({})", o.comm, names.of(&o.cgroup)))
                    .unwrap_or_default(),
                fmt_ns(p.other_ns)
            ))
        );
    }
    out
}

/// Row of a wait of `ns`: its power of two, within the chart's range.
fn row_of(ns: u64) -> u32 {
    (63 - (ns | 1).leading_zeros()).clamp(FIRST_POWER, LAST_POWER + 1) - FIRST_POWER
}

/// Time across, wait length up, darker where more waits were.
fn heatmap(rows: &[(&Interval, Option<&IntervalCgroup>)], end_ns: u64) -> String {
    let n_rows = LAST_POWER - FIRST_POWER + 2;
    let height = f64::from(n_rows) * ROW;
    let mut cells: Vec<(f64, f64, u32, u64)> = Vec::new();
    for (i, c) in rows {
        let Some(c) = c else { continue };
        let x = x_of(i.start_ns, end_ns);
        let w = (x_of(i.end_ns(), end_ns) - x).max(1.0);
        let mut counts = vec![0u64; n_rows as usize];
        for [low, _, n] in c.hist.ranges() {
            counts[row_of(low) as usize] += n;
        }
        for (r, n) in counts.into_iter().enumerate() {
            if n > 0 {
                cells.push((x, w, r as u32, n));
            }
        }
    }
    if cells.is_empty() {
        return String::new();
    }
    let most = cells.iter().map(|c| c.3).max().unwrap_or(1) as f64;
    let mut svg = format!(
        "<svg class=\"heatmap\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" role=\"img\" \
         aria-label=\"wait lengths over time\">"
    );
    for (x, w, r, n) in cells {
        let y = height - f64::from(r + 1) * ROW;
        // Log scale: one wait shows, a thousand do not drown it.
        let opacity = 0.15 + 0.85 * (1.0 + n as f64).ln() / (1.0 + most).ln();
        let low = 1u64 << (r + FIRST_POWER);
        let _ = write!(
            svg,
            "<rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{ROW:.0}\" fill=\"#0969da\" \
             fill-opacity=\"{opacity:.2}\"><title>{n} waits of {} or more</title></rect>",
            fmt_ns(low)
        );
    }
    svg.push_str("</svg>");
    format!(
        "<figure>{svg}<figcaption>Wait lengths over time: each row a power of two from {} (bottom) \
         to {} and above (top), darker where more waits were.</figcaption></figure>\n",
        fmt_ns(1 << FIRST_POWER),
        fmt_ns(1 << (LAST_POWER + 1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{recorder::Fired, tests::timeline_of};

    fn recording() -> Recording {
        let mut rec =
            crate::dump::parse(include_bytes!("../../tests/fixtures/record-v0.json")).unwrap();
        rec.intervals = timeline_of(&rec, 4);
        rec
    }

    #[test]
    fn every_interval_is_a_column_stacked_by_cause() {
        let rec = recording();
        let svc = rec.cgroups.iter().find(|c| c.path == "/svc").unwrap();
        let html = figures(&rec, "/svc");
        // Each of the 4 intervals holds /svc's whole waits (timeline_of):
        // throttled and contended, a column each.
        assert_eq!(
            html.matches("<rect class=\"throttled\"").count(),
            4,
            "{html}"
        );
        assert_eq!(html.matches("<rect class=\"contended\"").count(), 4);
        let share = percent(svc.wait.causes.throttled_ns, rec.intervals[0].duration_ns);
        assert!(
            html.contains(&format!("data-share=\"{share:.1}\"")),
            "{html}"
        );
        assert!(html.contains("class=\"heatmap\""));
        assert!(!html.contains("class=\"trigger\""));
        assert_eq!(figures(&rec, "/nobody").matches("<rect").count(), 0);
    }

    #[test]
    fn the_trigger_is_marked_and_names_are_escaped() {
        let mut rec = recording();
        rec.trigger = Some(Fired {
            rule: "wait above 50 % for 1.00 s".into(),
            cgroup: "/<script>".into(),
            at_ns: rec.intervals[2].start_ns,
        });
        let html = figures(&rec, "/svc");
        assert!(html.contains("class=\"trigger\""), "{html}");
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    }

    #[test]
    fn intervals_with_throttle_episodes_are_marked() {
        let mut rec = recording();
        for (k, n, ns) in [(1, 7, 560_000_000), (3, 1, 20_000_000)] {
            let svc = rec.intervals[k]
                .cgroups
                .iter_mut()
                .find(|c| c.path == "/svc");
            let svc = svc.unwrap();
            svc.throttle_episodes = n;
            svc.throttle_episode_ns = ns;
        }
        let html = figures(&rec, "/svc");
        assert_eq!(html.matches("class=\"episodes\"").count(), 2, "{html}");
        let at = rec.intervals[1].start_ns;
        assert!(
            html.contains(&format!("data-start-ns=\"{at}\" data-count=\"7\"")),
            "{html}"
        );
        assert!(html.contains("7 throttle episodes (its quota ran out), 560 ms"));
        assert!(html.contains("1 throttle episode (its"));
        assert!(html.contains("marks the intervals in which its quota ran out"));
        // Other cgroups' timelines show none of them.
        let other = rec.intervals[1]
            .cgroups
            .iter()
            .find(|c| c.path != "/svc")
            .unwrap();
        assert!(!figures(&rec, &other.path.clone()).contains("class=\"episodes\""));
        assert!(!figures(&recording(), "/svc").contains("class=\"episodes\""));
    }

    #[test]
    fn one_interval_or_none_draws_nothing() {
        let mut rec = recording();
        rec.intervals.truncate(1);
        assert_eq!(figures(&rec, "/svc"), "");
        rec.intervals.clear();
        assert_eq!(figures(&rec, "/svc"), "");
    }

    #[test]
    fn rows_cover_the_range() {
        assert_eq!(row_of(0), 0);
        assert_eq!(row_of(1_024), 0);
        assert_eq!(row_of(2_048), 1);
        assert_eq!(row_of(u64::MAX), LAST_POWER + 1 - FIRST_POWER);
    }
}
