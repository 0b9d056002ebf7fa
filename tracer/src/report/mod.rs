//! The terminal report of a [`Recording`].

use std::fmt::Write as _;

use tracer_common::{causes::Cause, maps::Counter};

use crate::{
    format::{fmt_ns, group_digits, percent_cell, visible},
    histogram::render_text,
    recording::{CgroupEntry, ProbeStatus, Recording, WaitHistogram, WaitSplit},
    verdict::Verdict,
};

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
fn fit(label: &str, width: usize) -> String {
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

/// Who held the CPU, top occupants with their top processes.
fn blame_lines(out: &mut String, w: &WaitSplit) {
    if w.causes.contended_ns == 0 {
        return;
    }
    let mut line = String::from("  waited behind:");
    for (i, b) in w.blame.iter().take(3).enumerate() {
        let processes: Vec<String> = b
            .processes
            .iter()
            .take(2)
            .map(|p| format!("{} {} {}", visible(&p.comm), p.tgid, fmt_ns(p.ns)))
            .collect();
        let _ = write!(
            line,
            "{} {} {} ({})",
            if i == 0 { "" } else { ";" },
            visible(&b.path),
            fmt_ns(b.ns),
            processes.join(", ")
        );
    }
    if w.unattributed_ns > w.causes.contended_ns / 100 {
        let _ = write!(line, "; not attributed {}", fmt_ns(w.unattributed_ns));
    }
    let _ = writeln!(out, "{line}");
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

fn cgroup_details(out: &mut String, c: &CgroupEntry) {
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", visible(&c.path));
    verdict_lines(out, &c.verdict);
    split_line(out, &c.wait, &c.on_cpu);
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
    blame_lines(out, &c.wait);
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

    let width = rec
        .cgroups
        .iter()
        .take(options.top)
        .map(|c| visible(&c.path).chars().count())
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
                &c.path,
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
                &c.path,
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

    for c in rec.cgroups.iter().take(options.details) {
        cgroup_details(&mut out, c);
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
        blame_lines(&mut out, &p.wait);
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
        blame_lines(&mut out, &t.wait);
        let _ = writeln!(out, "  runnable wait:");
        out.push_str(&render_text(&t.wait.runnable_wait.buckets, "    "));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tracer_common::{causes::Causes, hist::LatencyHist};

    use super::*;
    use crate::{
        cgroup::Mode,
        cpustat::{CpuStat, Quota},
        process::PidKind,
        recording::{
            Blame, BlamedProcess, Episodes, Events, PidEntry, ProbeStatus, QuotaInfo, ThreadsEntry,
        },
        selection::MatchedThread,
        verdict::{Facts, judge},
    };

    fn hist(values: &[u64]) -> WaitHistogram {
        let mut h = LatencyHist::ZERO;
        for &v in values {
            h.record(v);
        }
        WaitHistogram::from_hist(&h)
    }

    fn split(values: &[u64], throttled: u64, contended: u64) -> WaitSplit {
        let runnable_wait = hist(values);
        let other = runnable_wait.summary.total_ns - throttled - contended;
        WaitSplit {
            runnable_wait,
            causes: Causes {
                throttled_ns: throttled,
                contended_ns: contended,
                other_ns: other,
                ..Causes::ZERO
            },
            ..WaitSplit::default()
        }
    }

    fn recording() -> Recording {
        let mut events = Events::default();
        events.set(Counter::Switch, 123_456);
        events.set(Counter::WaitRecorded, 1_000);
        let mut busy = split(&[500_000_000, 500_000_000], 0, 1_000_000_000);
        busy.blame = vec![Blame {
            path: "/neighbour".into(),
            id: 9,
            ns: 1_000_000_000,
            processes: vec![BlamedProcess {
                tgid: 4242,
                comm: "apt-get".into(),
                ns: 1_000_000_000,
            }],
        }];
        let busy_verdict = judge(&Facts {
            duration_ns: 2_000_000_000,
            wait_ns: 1_000_000_000,
            run_ns: 1_000_000_000,
            causes: Causes {
                contended_ns: 1_000_000_000,
                ..Causes::ZERO
            },
            others_charged_ns: 1_000_000_000,
            top_other: Some(("/neighbour".into(), 1.0, "apt-get pid 4242".into())),
            ..Facts::default()
        });
        let limited = split(&[80_000_000; 20], 1_590_000_000, 0);
        let limited_verdict = judge(&Facts {
            duration_ns: 2_000_000_000,
            wait_ns: 1_600_000_000,
            run_ns: 400_000_000,
            causes: Causes {
                throttled_ns: 1_590_000_000,
                ..Causes::ZERO
            },
            ..Facts::default()
        });
        Recording {
            format: crate::dump::FORMAT.into(),
            format_version: crate::dump::VERSION,
            tool: "tracer".into(),
            tool_version: "0.1.0".into(),
            host: "test-host".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            cgroup_mode: Mode::Hybrid,
            cpu_hierarchy: "/sys/fs/cgroup/cpu".into(),
            throttle_method: "cfs_rq.throttled_clock_self_time".into(),
            tier: String::new(),
            state: String::new(),
            started_unix_ns: 0,
            duration_ns: 2_000_000_000,
            probes: vec![
                ProbeStatus {
                    name: "sched_switch".into(),
                    kind: "tp_btf".into(),
                    attached: true,
                    verified_insns: Some(1234),
                    error: None,
                    not_needed: None,
                },
                ProbeStatus {
                    name: "sched_process_exit".into(),
                    kind: "tp_btf".into(),
                    attached: false,
                    verified_insns: None,
                    error: Some("refused".into()),
                    not_needed: None,
                },
            ],
            sched_slice_ns: 0,
            events,
            cgroups: vec![
                CgroupEntry {
                    path: "/limited".into(),
                    id: 43,
                    wait: limited,
                    on_cpu: hist(&[20_000_000; 20]),
                    quota: Some(QuotaInfo {
                        quota: Quota {
                            quota_us: 20_000,
                            period_us: 100_000,
                            burst_us: 0,
                        },
                        owner: "/limited".into(),
                    }),
                    cpu_stat: Some(CpuStat {
                        nr_periods: 20,
                        nr_throttled: 20,
                        throttled_ns: 1_600_000_000,
                        local_throttled_ns: Some(1_600_000_000),
                    }),
                    throttle_episodes: Some(Episodes {
                        count: 20,
                        total_ns: 1_600_000_000,
                        durations: hist(&[80_000_000; 20]),
                        per_cpu: vec![[1, 20, 1_600_000_000]],
                        throttled_by: BTreeMap::from([("/limited".into(), 20)]),
                    }),
                    verdict: limited_verdict,
                },
                CgroupEntry {
                    path: "/busy".into(),
                    id: 42,
                    wait: busy,
                    on_cpu: hist(&[4_000_000; 250]),
                    quota: None,
                    cpu_stat: None,
                    throttle_episodes: None,
                    verdict: busy_verdict,
                },
            ],
            pids: vec![PidEntry {
                pid: 77,
                kind: PidKind::Thread,
                comm: "GC Thread#0".into(),
                cgroup: Some("/busy".into()),
                wait: split(&[3_000_000], 0, 3_000_000),
                on_cpu: hist(&[1_000_000]),
                verdict: judge(&Facts::default()),
            }],
            threads: vec![ThreadsEntry {
                pattern: "GC Thread*".into(),
                matched: vec![MatchedThread {
                    tid: 77,
                    tgid: 70,
                    comm: "GC Thread#0".into(),
                }],
                untraced: 0,
                wait: split(&[3_000_000], 0, 3_000_000),
                on_cpu: hist(&[1_000_000]),
                verdict: judge(&Facts::default()),
            }],
        }
    }

    #[test]
    fn report_shows_tables_causes_and_details() {
        let text = render(&recording(), TextOptions::default());
        assert!(text.contains("kernel 6.18.0 | 2 CPUs"), "{text}");
        assert!(text.contains("probes: tp_btf/sched_switch\n"), "{text}");
        assert!(text.contains("probe not attached: tp_btf/sched_process_exit: refused"));
        assert!(text.contains("throttled time from: cfs_rq.throttled_clock_self_time"));
        assert!(text.contains("123,456 sched_switch"));
        assert!(text.contains("nothing lost"));
        let busy = text.lines().find(|l| l.starts_with("/busy ")).unwrap();
        // Two waits of 500 ms in 2 s: 50 % of the time.
        assert!(busy.contains("1.00 s") && busy.contains("50.0 %"), "{busy}");
        let causes = text
            .lines()
            .filter(|l| l.starts_with("/limited "))
            .nth(1)
            .unwrap();
        assert!(
            causes.contains("79.5 %") && causes.ends_with("quota expiry"),
            "{causes}"
        );
        assert!(
            text.contains("quota: 20.0 ms per 100 ms (0.20 CPUs)"),
            "{text}"
        );
        assert!(
            text.contains(
                "throttled time: traced 1.59 s in 0 waits | cpu.stat 1.60 s | cpu.stat.local 1.60 s (20 of 20 periods throttled)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "waited 1.60 s in 20 waits: throttled 1.59 s, contended 0 ns, other 10.0 ms"
            ),
            "{text}"
        );
        assert!(
            text.contains("ran 400 ms in 20 slices: median 20.0 ms"),
            "{text}"
        );
        assert!(
            text.contains("throttle episodes: 20 totalling 1.60 s on 1 CPUs"),
            "{text}"
        );
        assert!(
            text.contains("waited behind: /neighbour 1.00 s (apt-get 4242 1.00 s)"),
            "{text}"
        );
        assert!(text.contains("verdict: host contention"), "{text}");
        assert!(text.contains("thread 77 GC Thread#0 in /busy"), "{text}");
        assert!(
            text.contains("threads 'GC Thread*': 1 matched in 1 processes"),
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
    fn wakeup_programs_left_out_are_said_once_and_not_counted() {
        let mut rec = recording();
        rec.events.set(Counter::Switch, 10);
        let text = render(&rec, TextOptions::default());
        assert!(
            text.contains("events: 10 sched_switch, 0 sched_wakeup, 0 sched_wakeup_new; "),
            "{text}"
        );
        let why = "not needed: wakeups are dated at the switch-in";
        for name in ["sched_wakeup", "sched_wakeup_new"] {
            rec.probes.push(ProbeStatus {
                name: name.into(),
                kind: "tp_btf".into(),
                attached: false,
                verified_insns: None,
                error: None,
                not_needed: Some(why.into()),
            });
        }
        let text = render(&rec, TextOptions::default());
        assert!(
            text.contains(&format!(
                "probes left out: tp_btf/sched_wakeup, tp_btf/sched_wakeup_new: {why}\n"
            )),
            "{text}"
        );
        assert!(
            !text.contains("probe not attached: tp_btf/sched_wakeup"),
            "{text}"
        );
        assert!(text.contains("probe not attached: tp_btf/sched_process_exit: refused"));
        assert!(text.contains("events: 10 sched_switch; "), "{text}");
    }

    #[test]
    fn top_limits_the_tables() {
        let text = render(&recording(), TextOptions { top: 1, details: 0 });
        assert!(text.contains("... and 1 more cgroups"));
        assert!(!text.lines().any(|l| l.starts_with("/busy")), "{text}");
        assert!(!text.contains("/limited\n  verdict"), "{text}");
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(fit("/short", 10), "/short");
        assert_eq!(fit("/a/very/long/path", 8), "…ng/path");
    }
}
