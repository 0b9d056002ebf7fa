//! The terminal report of a [`Recording`].

use std::fmt::Write as _;

use tracer_common::maps::Counter;

use crate::{
    histogram::{fmt_ns, render_text},
    process::PidKind,
    recording::{Recording, WaitHistogram},
};

/// How much of the recording the terminal report shows.
#[derive(Clone, Copy, Debug)]
pub struct TextOptions {
    /// Rows of the per-cgroup table.
    pub top: usize,
    /// Cgroups (from the top of the table) whose histogram is drawn.
    pub histograms: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            top: 20,
            histograms: 3,
        }
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Shortens a path from the left so that the table keeps its shape.
fn fit(path: &str, width: usize) -> String {
    let chars: Vec<char> = path.chars().collect();
    if chars.len() <= width {
        return path.to_owned();
    }
    let keep = &chars[chars.len() - (width - 1)..];
    format!("…{}", keep.iter().collect::<String>())
}

fn share(total_ns: u64, duration_ns: u64) -> String {
    if duration_ns == 0 {
        return "-".into();
    }
    format!("{:.1} %", total_ns as f64 * 100.0 / duration_ns as f64)
}

const COLUMNS: [&str; 8] = [
    "waits", "total", "of time", "p50", "p90", "p99", "p99.9", "max",
];

fn row(out: &mut String, label: &str, width: usize, w: &WaitHistogram, duration_ns: u64) {
    let s = &w.summary;
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fit(label, width),
        group_digits(s.count),
        fmt_ns(s.total_ns),
        share(s.total_ns, duration_ns),
        fmt_ns(s.p50_ns),
        fmt_ns(s.p90_ns),
        fmt_ns(s.p99_ns),
        fmt_ns(s.p999_ns),
        fmt_ns(s.max_ns),
    );
}

fn header(out: &mut String, first: &str, width: usize) {
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        first,
        COLUMNS[0],
        COLUMNS[1],
        COLUMNS[2],
        COLUMNS[3],
        COLUMNS[4],
        COLUMNS[5],
        COLUMNS[6],
        COLUMNS[7]
    );
}

pub fn render(rec: &Recording, options: TextOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} | kernel {} | {} CPUs | {} | {:.2} s traced",
        rec.tool,
        rec.tool_version,
        rec.kernel,
        rec.cpus,
        rec.cgroup_mode,
        rec.duration_ns as f64 / 1e9
    );
    let attached: Vec<String> = rec
        .probes
        .iter()
        .filter(|p| p.attached)
        .map(|p| format!("{}/{}", p.kind, p.name))
        .collect();
    let _ = writeln!(out, "probes: {}", attached.join(", "));
    for p in rec.probes.iter().filter(|p| !p.attached) {
        let _ = writeln!(
            out,
            "probe not attached: {}/{}: {}",
            p.kind,
            p.name,
            p.error.as_deref().unwrap_or("unknown reason")
        );
    }
    let e = &rec.events;
    let _ = write!(
        out,
        "events: {} sched_switch, {} sched_wakeup, {} sched_wakeup_new; {} waits recorded",
        group_digits(e.get(Counter::Switch)),
        group_digits(e.get(Counter::Wakeup)),
        group_digits(e.get(Counter::WakeupNew)),
        group_digits(e.get(Counter::WaitRecorded)),
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

    let width = rec
        .cgroups
        .iter()
        .take(options.top)
        .map(|c| c.path.chars().count())
        .chain(rec.pids.iter().map(|p| p.comm.len() + 12))
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
        header(&mut out, "cgroup", width);
        for c in rec.cgroups.iter().take(options.top) {
            row(&mut out, &c.path, width, &c.runnable_wait, rec.duration_ns);
        }
        if rec.cgroups.len() > options.top {
            let _ = writeln!(
                out,
                "... and {} more cgroups (--top N shows more; --json has all)",
                rec.cgroups.len() - options.top
            );
        }
        let _ = writeln!(
            out,
            "(of time: total wait / traced time; over 100 % means several threads waited at once)"
        );
    }

    if !rec.pids.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Run-queue wait of the selected processes and threads:");
        header(&mut out, "pid", width);
        for p in &rec.pids {
            let label = format!("{} {}", p.pid, p.comm);
            row(&mut out, &label, width, &p.runnable_wait, rec.duration_ns);
        }
    }

    for c in rec.cgroups.iter().take(options.histograms) {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}: runnable wait", c.path);
        out.push_str(&render_text(&c.runnable_wait.buckets, "  "));
    }
    for p in &rec.pids {
        let _ = writeln!(out);
        let kind = match p.kind {
            PidKind::Process => "process",
            PidKind::Thread => "thread",
        };
        let _ = writeln!(out, "{kind} {} {}: runnable wait", p.pid, p.comm);
        out.push_str(&render_text(&p.runnable_wait.buckets, "  "));
    }
    out
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::{
        cgroup::Mode,
        programs::ProbeStatus,
        recording::{CgroupEntry, Events, PidEntry},
    };

    fn wait(values: &[u64]) -> WaitHistogram {
        let mut h = LatencyHist::ZERO;
        for &v in values {
            h.record(v);
        }
        WaitHistogram::from_hist(&h)
    }

    fn recording() -> Recording {
        let mut events = Events::default();
        events.set(Counter::Switch, 123_456);
        events.set(Counter::WaitRecorded, 1_000);
        Recording {
            tool: "tracer".into(),
            tool_version: "0.1.0".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            cgroup_mode: Mode::Hybrid,
            cpu_hierarchy: "/sys/fs/cgroup/cpu".into(),
            started_unix_ns: 0,
            duration_ns: 2_000_000_000,
            probes: vec![
                ProbeStatus {
                    name: "sched_switch".into(),
                    kind: "tp_btf".into(),
                    attached: true,
                    error: None,
                },
                ProbeStatus {
                    name: "sched_process_exit".into(),
                    kind: "tp_btf".into(),
                    attached: false,
                    error: Some("refused".into()),
                },
            ],
            events,
            cgroups: vec![
                CgroupEntry {
                    path: "/busy".into(),
                    id: 42,
                    runnable_wait: wait(&[500_000_000, 500_000_000]),
                },
                CgroupEntry {
                    path: "/".into(),
                    id: 1,
                    runnable_wait: wait(&[2_000]),
                },
            ],
            pids: vec![PidEntry {
                pid: 77,
                kind: PidKind::Thread,
                comm: "GC Thread#0".into(),
                cgroup: Some("/busy".into()),
                runnable_wait: wait(&[3_000_000]),
            }],
        }
    }

    #[test]
    fn report_shows_the_table_probes_and_histograms() {
        let text = render(&recording(), TextOptions::default());
        assert!(text.contains("kernel 6.18.0 | 2 CPUs"), "{text}");
        assert!(text.contains("probes: tp_btf/sched_switch\n"), "{text}");
        assert!(text.contains("probe not attached: tp_btf/sched_process_exit: refused"));
        assert!(text.contains("123,456 sched_switch"));
        assert!(text.contains("nothing lost"));
        let busy = text.lines().find(|l| l.starts_with("/busy ")).unwrap();
        // Two waits of 500 ms in 2 s: 50 % of the time.
        assert!(busy.contains("1.00 s") && busy.contains("50.0 %"), "{busy}");
        assert!(text.contains("/busy: runnable wait\n"));
        assert!(
            text.contains("thread 77 GC Thread#0: runnable wait"),
            "{text}"
        );
    }

    #[test]
    fn losses_are_loud() {
        let mut rec = recording();
        rec.events.set(Counter::CgroupMapFull, 3);
        let text = render(&rec, TextOptions::default());
        assert!(text.contains("LOST: 3 cgroup_map_full"), "{text}");
    }

    #[test]
    fn top_limits_the_table() {
        let text = render(
            &recording(),
            TextOptions {
                top: 1,
                histograms: 0,
            },
        );
        assert!(text.contains("... and 1 more cgroups"));
        assert!(!text.contains("/busy: runnable wait"), "{text}");
    }

    #[test]
    fn helpers() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(fit("/short", 10), "/short");
        assert_eq!(fit("/a/very/long/path", 8), "…ng/path");
        assert_eq!(share(1, 0), "-");
    }
}
