//! `tracer report FILE --html OUT`: one self-contained page (inline CSS and SVG,
//! no script, nothing fetched) that someone who has never used the tool can
//! read: per cgroup, what its threads' time went to, how long they waited, and
//! the verdict with the figures behind it.

mod timeline;

use std::fmt::Write as _;

use tracer_common::{causes::Cause, maps::Counter};

use crate::{
    format::{fmt_ns, group_digits, percent, visible},
    histogram::log2_rows,
    recording::{Recording, WaitHistogram, WaitSplit},
    verdict::{Kind, Verdict},
    weight::compared,
};

/// Escapes text for HTML element content and attribute values, control
/// characters and bidi overrides shown [`visible`] as in the terminal.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; font-family: ui-monospace, monospace; }
.meta, .note, footer { color: #59636e; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { text-align: left; padding: .25rem .7rem .25rem 0; vertical-align: middle; font-size: .92rem; }
th { color: #59636e; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .path { font-family: ui-monospace, monospace; }
section.group { border: 1px solid #d0d7de; border-radius: 6px; padding: 1rem 1.2rem; margin: 1rem 0; }
.badge { display: inline-block; border-radius: 1rem; padding: .05rem .6rem; font-size: .85rem; font-weight: 600; }
.verdict { margin: .3rem 0 .6rem; }
.kind-healthy { background: #dafbe1; color: #116329; }
.kind-quota_expiry { background: #ffebe9; color: #a40e26; }
.kind-host_contention { background: #fff1e5; color: #953800; }
.kind-self_contention { background: #fbefff; color: #6e40c9; }
.kind-wakeup_latency { background: #ddf4ff; color: #0550ae; }
.kind-host_busy { background: #eaeef2; color: #424a53; }
.legend span { display: inline-block; margin-right: 1.2rem; font-size: .9rem; }
.swatch { display: inline-block; width: .9rem; height: .9rem; border-radius: 2px; vertical-align: -2px; margin-right: .3rem; }
.lost { color: #a40e26; font-weight: 600; }
figure { margin: .6rem 0; }
figcaption { color: #59636e; font-size: .85rem; }
";

/// The parts of a group's time in the order they are stacked: running, then
/// each cause of waiting.
const PARTS: usize = 1 + Cause::ALL.len();

/// Name, colour and meaning of each part.
fn parts() -> [(&'static str, &'static str, &'static str); PARTS] {
    std::array::from_fn(|i| match Cause::ALL.get(i.wrapping_sub(1)) {
        None => ("running", "#2da44e", "on a CPU"),
        Some(&c) => {
            let (colour, meaning) = match c {
                Cause::Throttled => ("#cf222e", "its CPU quota had run out"),
                Cause::Contended => ("#fb8500", "runnable, other tasks held the CPU"),
                Cause::Other => ("#8c959f", "runnable on an idle CPU (wake-up latency)"),
            };
            (c.name(), colour, meaning)
        }
    })
}

/// Each part's share of the traced time, in percent.
fn shares(w: &WaitSplit, on_cpu: &WaitHistogram, duration_ns: u64) -> [f64; PARTS] {
    std::array::from_fn(|i| match Cause::ALL.get(i.wrapping_sub(1)) {
        None => percent(on_cpu.summary.total_ns, duration_ns),
        Some(&c) => percent(w.causes.ns(c), duration_ns),
    })
}

/// A horizontal stacked bar of the shares (percent of traced time, summed over
/// threads, so possibly above 100): drawn on a scale of at least 100 %.
fn stacked_bar(shares: [f64; PARTS], width: f64) -> String {
    let total: f64 = shares.iter().sum();
    let scale = total.max(100.0);
    let mut svg = format!(
        "<svg class=\"bar\" width=\"{width:.0}\" height=\"18\" role=\"img\" aria-label=\"{}\">",
        escape(
            &parts()
                .iter()
                .zip(shares)
                .map(|((name, _, _), s)| format!("{name} {s:.1} %"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    let mut x = 0.0;
    for ((name, colour, _), s) in parts().iter().zip(shares) {
        let w = width * s / scale;
        if w > 0.0 {
            let _ = write!(
                svg,
                "<rect class=\"{name}\" data-share=\"{s:.1}\" x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"18\" fill=\"{colour}\"><title>{name}: {s:.1} % of the traced time</title></rect>"
            );
        }
        x += w;
    }
    // The 100 % mark, when threads together exceed the traced time.
    if total > 100.0 {
        let at = width * 100.0 / scale;
        let _ = write!(
            svg,
            "<line x1=\"{at:.2}\" x2=\"{at:.2}\" y1=\"0\" y2=\"18\" stroke=\"#1f2328\" stroke-dasharray=\"2,2\"/>"
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Column chart of a wait histogram in power-of-two rows.
fn histogram_svg(h: &WaitHistogram) -> String {
    let rows = log2_rows(&h.buckets);
    if rows.is_empty() {
        return "<p class=\"note\">No waits recorded.</p>".into();
    }
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1) as f64;
    let (col, gap, height, label_h) = (34.0, 4.0, 120.0, 34.0);
    let width = rows.len() as f64 * (col + gap);
    let mut svg = format!(
        "<svg class=\"histogram\" width=\"{width:.0}\" height=\"{:.0}\" role=\"img\" aria-label=\"wait histogram\">",
        height + label_h
    );
    for (i, (lo, hi, n)) in rows.iter().enumerate() {
        let x = i as f64 * (col + gap);
        let h = if *n == 0 {
            0.0
        } else {
            (height * *n as f64 / peak).max(1.5)
        };
        let _ = write!(
            svg,
            "<rect class=\"row\" data-count=\"{n}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{col}\" height=\"{h:.1}\" fill=\"#0969da\"><title>{} to {}: {} waits</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#59636e\">{}</text>",
            height - h,
            escape(&fmt_ns(*lo)),
            escape(&fmt_ns(*hi)),
            group_digits(*n),
            x + col / 2.0,
            height + 12.0,
            escape(&fmt_ns(*lo)),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn verdict_html(out: &mut String, v: &Verdict) {
    let _ = writeln!(
        out,
        "<p class=\"verdict\"><span class=\"badge kind-{}\">{}</span> {}</p>",
        kind_class(v.kind),
        escape(v.kind.label()),
        escape(&v.text)
    );
    for note in &v.notes {
        let _ = writeln!(out, "<p class=\"note\">Note: {}</p>", escape(note));
    }
}

fn kind_class(kind: Kind) -> &'static str {
    match kind {
        Kind::Healthy => "healthy",
        Kind::QuotaExpiry => "quota_expiry",
        Kind::HostContention => "host_contention",
        Kind::SelfContention => "self_contention",
        Kind::WakeupLatency => "wakeup_latency",
        Kind::HostBusy => "host_busy",
    }
}

fn wait_table(out: &mut String, w: &WaitSplit, on_cpu: &WaitHistogram) {
    let s = &w.runnable_wait.summary;
    let cause_heads: String = Cause::ALL
        .iter()
        .map(|c| format!("<th>{}</th>", c.name()))
        .collect();
    let cause_cells: String = Cause::ALL
        .iter()
        .map(|&c| format!("<td class=\"num\">{}</td>", fmt_ns(w.causes.ns(c))))
        .collect();
    let _ = writeln!(
        out,
        "<table class=\"figures\"><tr><th>waits</th><th>total wait</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th>{cause_heads}<th>ran</th></tr>\
         <tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{cause_cells}<td class=\"num\">{}</td></tr></table>",
        group_digits(s.count),
        fmt_ns(s.total_ns),
        fmt_ns(s.p50_ns),
        fmt_ns(s.p90_ns),
        fmt_ns(s.p99_ns),
        fmt_ns(s.p999_ns),
        fmt_ns(s.max_ns),
        fmt_ns(on_cpu.summary.total_ns),
    );
}

fn blame_table(out: &mut String, w: &WaitSplit, duration_ns: u64) {
    if w.blame.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<table class=\"blame\"><caption class=\"note\" style=\"text-align:left\">Who held the CPU while it waited (contended time charged by how long each ran)</caption>\
         <tr><th>cgroup</th><th>time</th><th>processes</th><th>its weight</th></tr>"
    );
    for b in w.blame.iter().take(5) {
        let processes: Vec<String> = b
            .processes
            .iter()
            .take(3)
            .map(|p| match p.pid() {
                None => format!("{} {}", escape(&p.comm), fmt_ns(p.ns)),
                Some(pid) => format!("{} (pid {pid}) {}", escape(&p.comm), fmt_ns(p.ns)),
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"path\"{}>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            // A workload's name, with its path where a pointer rests on it.
            if b.name() == b.path {
                String::new()
            } else {
                format!(" title=\"{}\"", escape(&b.path))
            },
            escape(&b.name()),
            fmt_ns(b.ns),
            processes.join(", "),
            // Whether it took more than its weight's share.
            b.weight
                .as_ref()
                .map(|w| escape(&compared(b.ran_ns, duration_ns, w)))
                .unwrap_or_default()
        );
    }
    if w.unattributed_ns > w.causes.contended_ns / 100 {
        let _ = writeln!(
            out,
            "<tr><td>not attributed</td><td class=\"num\">{}</td><td></td></tr>",
            fmt_ns(w.unattributed_ns)
        );
    }
    out.push_str("</table>\n");
}

/// The page for `rec`, describing at most `top` cgroups in detail.
pub fn render(rec: &Recording, top: usize) -> String {
    let mut out = String::new();
    let title = format!("Scheduler report for {}", rec.host);
    let _ = writeln!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} traced on kernel {} with {} CPUs ({}); {} {}.</p>",
        escape(&format!("{:.2} s", rec.duration_ns as f64 / 1e9)),
        escape(&rec.kernel),
        rec.cpus,
        escape(&rec.cgroup_mode.to_string()),
        escape(&rec.tool),
        escape(&rec.tool_version)
    );

    out.push_str(
        "<h2>How to read this</h2>\n<p>Every time a thread was ready to run but did not run, \
         the tracer measured how long it waited and why. A thread <b>throttled</b> was held back \
         because its cgroup had used up its CPU quota for the period (<code>cpu.max</code> / \
         <code>cpu.cfs_quota_us</code>). A thread <b>contended</b> was ready while other tasks \
         held the CPU: other containers or services (host contention), or its own group's other \
         threads (self contention). <b>Other</b> is the short delay of waking up on an idle CPU. \
         Times are shares of the traced time, summed over a group's threads, so a group with \
         several threads can pass 100 %.</p>\n<p class=\"legend\">",
    );
    for (name, colour, meaning) in parts() {
        let _ = write!(
            out,
            "<span><i class=\"swatch\" style=\"background:{colour}\"></i><b>{name}</b>: {}</span>",
            escape(meaning)
        );
    }
    out.push_str("</p>\n");

    let losses = rec.events.losses();
    if !losses.is_empty() {
        let lost: Vec<String> = losses
            .iter()
            .map(|(c, n)| format!("{} {}", group_digits(*n), c.name()))
            .collect();
        let _ = writeln!(
            out,
            "<p class=\"lost\">Some events were lost: {}.</p>",
            escape(&lost.join(", "))
        );
    }

    if let Some(psi) = crate::report::psi_line(rec) {
        let _ = writeln!(out, "<p class=\"psi\">{}</p>", escape(&psi));
    }

    let _ = writeln!(out, "<h2>Cgroups</h2>");
    if rec.cgroups.is_empty() {
        out.push_str("<p>No runnable waits were recorded.</p>\n");
    } else {
        out.push_str(
            "<table class=\"summary\"><tr><th>cgroup</th><th>verdict</th><th>waited</th>\
             <th>p99 wait</th><th>where its threads' time went</th></tr>\n",
        );
        for (i, c) in rec.cgroups.iter().enumerate() {
            let s = shares(&c.wait, &c.on_cpu, rec.duration_ns);
            let waited: f64 = s[1..].iter().sum();
            let name = escape(&c.name());
            let link = if i < top {
                format!("<a href=\"#cgroup-{i}\">{name}</a>")
            } else {
                name
            };
            let _ = writeln!(
                out,
                "<tr class=\"cgroup\" data-path=\"{}\"><td class=\"path\">{link}</td><td><span class=\"badge kind-{}\">{}</span></td>\
                 <td class=\"num\">{waited:.1} %</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&c.path),
                kind_class(c.verdict.kind),
                escape(c.verdict.kind.label()),
                fmt_ns(c.wait.runnable_wait.summary.p99_ns),
                stacked_bar(s, 320.0)
            );
        }
        out.push_str("</table>\n");
    }

    for (i, c) in rec.cgroups.iter().enumerate().take(top) {
        let _ = writeln!(
            out,
            "<section class=\"group\" id=\"cgroup-{i}\"><h3>{}</h3>",
            escape(&c.name())
        );
        let name = c.name();
        if name != c.path {
            let _ = writeln!(out, "<p class=\"path\">cgroup {}</p>", escape(&c.path));
        }
        if let Some(facts) = c.identity().facts() {
            let _ = writeln!(out, "<p class=\"workload\">{}</p>", escape(&facts));
        }
        verdict_html(&mut out, &c.verdict);
        let _ = writeln!(
            out,
            "<figure>{}<figcaption>Where its threads' time went, as shares of the traced time.</figcaption></figure>",
            stacked_bar(shares(&c.wait, &c.on_cpu, rec.duration_ns), 640.0)
        );
        out.push_str(&timeline::figures(rec, &c.path));
        if let Some(psi) = crate::report::cgroup_psi_line(c, rec.duration_ns) {
            let _ = writeln!(out, "<p class=\"psi\">{}</p>", escape(&psi));
        }
        wait_table(&mut out, &c.wait, &c.on_cpu);
        if c.quota.is_some() || c.cpu_stat.is_some() {
            out.push_str("<table class=\"kernel\"><tr><th>quota</th><th>throttled (traced)</th><th>cpu.stat throttled</th><th>cpu.stat.local</th><th>periods throttled</th></tr><tr>");
            let quota = c
                .quota
                .as_ref()
                .map_or("none".into(), |q| q.describe(&c.path));
            let _ = write!(
                out,
                "<td>{}</td><td class=\"num\">{}</td>",
                escape(&quota),
                fmt_ns(c.wait.causes.throttled_ns)
            );
            match &c.cpu_stat {
                Some(s) => {
                    let _ = write!(
                        out,
                        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} of {}</td>",
                        fmt_ns(s.throttled_ns),
                        s.local_throttled_ns.map_or("-".into(), fmt_ns),
                        s.nr_throttled,
                        s.nr_periods
                    );
                }
                None => out.push_str("<td>-</td><td>-</td><td>-</td>"),
            }
            out.push_str("</tr></table>\n");
        }
        let _ = writeln!(
            out,
            "<figure>{}<figcaption>How long its threads waited for a CPU: number of waits per duration range.</figcaption></figure>",
            histogram_svg(&c.wait.runnable_wait)
        );
        blame_table(&mut out, &c.wait, rec.duration_ns);
        out.push_str("</section>\n");
    }
    if rec.cgroups.len() > top {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more cgroups are in the summary table only.</p>",
            rec.cgroups.len() - top
        );
    }

    let selections: Vec<(String, &WaitSplit, &WaitHistogram, &Verdict)> = rec
        .pids
        .iter()
        .map(|p| {
            (
                format!("process {} ({})", p.pid, p.comm),
                &p.wait,
                &p.on_cpu,
                &p.verdict,
            )
        })
        .chain(rec.threads.iter().map(|t| {
            (
                format!(
                    "threads named '{}' ({} threads)",
                    t.pattern,
                    t.matched.len()
                ),
                &t.wait,
                &t.on_cpu,
                &t.verdict,
            )
        }))
        .collect();
    if !selections.is_empty() {
        let _ = writeln!(out, "<h2>Selected processes and threads</h2>");
    }
    for (label, wait, on_cpu, verdict) in selections {
        let _ = writeln!(
            out,
            "<section class=\"group selection\"><h3>{}</h3>",
            escape(&label)
        );
        verdict_html(&mut out, verdict);
        let _ = writeln!(
            out,
            "<figure>{}</figure>",
            stacked_bar(shares(wait, on_cpu, rec.duration_ns), 640.0)
        );
        wait_table(&mut out, wait, on_cpu);
        let _ = writeln!(
            out,
            "<figure>{}</figure>",
            histogram_svg(&wait.runnable_wait)
        );
        blame_table(&mut out, wait, rec.duration_ns);
        out.push_str("</section>\n");
    }

    let _ = writeln!(
        out,
        "<footer><p>Throttled time measured with {}. Probes: {}.{} {} context switches seen.</p></footer></body></html>",
        escape(&rec.throttle_method),
        escape(
            &rec.probes
                .iter()
                .filter(|p| p.attached)
                .map(|p| format!("{}/{}", p.kind, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        if rec.tier.is_empty() {
            String::new()
        } else {
            format!(" Tier: {}.", escape(&rec.tier))
        },
        group_digits(rec.events.get(Counter::Switch))
    );
    out
}

#[cfg(test)]
mod tests;
