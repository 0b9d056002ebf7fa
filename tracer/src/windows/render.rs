//! The pause table (`--gc-log`) and the window table (`--windows`): each
//! window, how long it lasted, and what held its threads up.

use std::fmt::Write as _;

use anyhow::bail;

use super::{
    GcPause, TimeBase, Window, csv,
    explain::{Explained, explain},
    gc_log,
};
use crate::{
    format::{fmt_ns, visible},
    recording::Recording,
};

/// Rows a table lists at most: the windows held up longest.
const LISTED: usize = 20;

/// The `--threads` patterns `record --gc-log` selects: the threads that work
/// in a stop-the-world pause (G1's and Parallel's workers, the VM thread that
/// runs the safepoint and Serial's collection, ZGC's and Shenandoah's
/// workers); not the concurrent ones, which run between pauses.
pub const GC_THREAD_PATTERNS: &[&str] =
    &["GC Thread#*", "VM Thread", "ZWorker*", "Shenandoah GC T*"];

/// HotSpot's garbage-collector threads, by the names the kernel keeps (15
/// bytes), as OpenJDK 17 names them: G1's and Parallel's workers (`GC
/// Thread#N`), G1's concurrent threads, the VM thread (the safepoint; the
/// Serial collector's only one), ZGC's and Shenandoah's workers.
pub fn is_gc_thread(comm: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "GC Thread#",
        "G1 Conc#",
        "G1 Refine#",
        "G1 Main Marker",
        "VM Thread",
        "ZWorker",
        "ZDriver",
        "Shenandoah GC T",
        "Shenandoah Cont",
    ];
    PREFIXES.iter().any(|p| comm.starts_with(p))
}

/// Files larger than this are refused unread: a GC log of a year at a pause
/// a second is under 100 MiB.
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The tables of `--gc-log` and `--windows` files against `rec`, one after
/// the other; an unreadable file is an error that names it.
pub fn from_files(
    rec: &Recording,
    gc_log: Option<&std::path::Path>,
    windows: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    if let Some(path) = gc_log {
        let text = read(path, "--gc-log")?;
        out.push('\n');
        out.push_str(&gc_pauses(rec, &text, &path.display().to_string())?);
    }
    if let Some(path) = windows {
        let text = read(path, "--windows")?;
        out.push('\n');
        out.push_str(&csv_windows(rec, &text, &path.display().to_string()));
    }
    Ok(out)
}

/// A GC log's pauses placed on `rec`'s axis, and how many lines were
/// skipped; an error if none can be placed.
/// `jvm` is the JVM's pid, for a log whose lines carry only its uptime (the
/// log's `pid` decorator names it otherwise); its process must still run.
fn place_gc(
    rec: &Recording,
    text: &str,
    source: &str,
    jvm: Option<u32>,
) -> anyhow::Result<(Vec<Window>, u64)> {
    let log = gc_log::parse(text);
    let mut base = TimeBase::of(rec);
    let uptime_only = !log.pauses.is_empty()
        && log
            .pauses
            .iter()
            .all(|p| matches!(p.end, super::Stamp::Uptime(_)));
    if uptime_only && let Some(pid) = log.pid.or(jvm) {
        base.jvm_start_monotonic_ns = Some(super::jvm::start_monotonic_ns(pid)?);
    }
    let windows: Vec<Window> = log
        .pauses
        .iter()
        .filter_map(|p| {
            Window::ending(
                p.end,
                p.duration_ns,
                format!("GC({}) {}", p.gc, p.kind),
                &base,
            )
        })
        .collect();
    if !log.pauses.is_empty() && windows.is_empty() {
        bail!(
            "{source}: its pauses carry no clock the recording has (uptime alone needs the JVM's \
             pid: the log's pid decorator, or --pid, while the JVM runs); log with \
             -Xlog:gc:file=gc.log:timenanos,uptime,level,tags"
        );
    }
    Ok((windows, log.skipped))
}

/// The pauses of a GC log's text in `rec`, as its dump keeps them.
pub fn gc_pause_records(
    rec: &Recording,
    text: &str,
    source: &str,
    jvm: Option<u32>,
) -> anyhow::Result<Vec<GcPause>> {
    let (windows, _) = place_gc(rec, text, source, jvm)?;
    let (inside, _) = inside(rec, &windows);
    Ok(explain(&inside, &rec.stalls, |s| is_gc_thread(&s.comm))
        .iter()
        .filter_map(Explained::to_pause)
        .collect())
}

/// The text of a `--gc-log` or `--windows` file (`what`), refused unread if
/// larger than [`MAX_FILE_BYTES`].
pub fn read(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let size = std::fs::metadata(path)
        .with_context(|| format!("{what} {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{what} {}: {size} bytes, over the {} MiB this reads; cut it to the recording's time",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The pause table of a GC log's text against `rec`.
pub fn gc_pauses(rec: &Recording, text: &str, source: &str) -> anyhow::Result<String> {
    let (windows, skipped) = place_gc(rec, text, source, None)?;
    let mut out = windows_table(
        rec,
        &windows,
        |s| is_gc_thread(&s.comm),
        &format!("GC pauses ({})", visible(source)),
        "GC threads",
    );
    if skipped > 0 {
        let _ = writeln!(
            out,
            "  {skipped} lines named a pause but did not read as one"
        );
    }
    Ok(out)
}

/// The pause table of the pauses a dump kept (`gc_pauses[]`), if any.
pub fn recorded(rec: &Recording) -> String {
    if rec.gc_pauses.is_empty() {
        return String::new();
    }
    let explained: Vec<Explained> = rec.gc_pauses.iter().map(Explained::of_pause).collect();
    format!(
        "\n{}",
        table(rec, &explained, 0, "GC pauses (recorded)", "GC threads")
    )
}

/// The windows that overlap the recording, and how many do not.
fn inside(rec: &Recording, windows: &[Window]) -> (Vec<Window>, usize) {
    let end = i128::from(rec.duration_ns);
    let inside: Vec<Window> = windows
        .iter()
        .filter(|w| w.end_ns > 0 && w.start_ns < end)
        .cloned()
        .collect();
    let outside = windows.len() - inside.len();
    (inside, outside)
}

/// The window table of a `--windows` CSV's text against `rec`: every
/// thread's waits count.
pub fn csv_windows(rec: &Recording, text: &str, source: &str) -> String {
    let rows = csv::parse(text);
    let base = TimeBase::of(rec);
    let windows: Vec<Window> = rows
        .rows
        .iter()
        .filter_map(|r| {
            let (start, end) = (base.offset(r.start)?, base.offset(r.end)?);
            Some(Window {
                start_ns: start,
                end_ns: end,
                label: r.label.clone(),
            })
        })
        .collect();
    let mut out = windows_table(
        rec,
        &windows,
        |_| true,
        &format!("Windows ({})", visible(source)),
        "threads",
    );
    for (line, why) in &rows.bad {
        let _ = writeln!(out, "  line {line} skipped: {why}");
    }
    if rows.skipped > rows.bad.len() as u64 {
        let _ = writeln!(out, "  ... {} lines skipped in all", rows.skipped);
    }
    out
}

/// The table of `windows` that overlap the recording, explained by the
/// waits that `matters`.
fn windows_table(
    rec: &Recording,
    windows: &[Window],
    matters: impl Fn(&crate::stall::Stall) -> bool,
    title: &str,
    who: &str,
) -> String {
    let (inside, outside) = inside(rec, windows);
    let explained = explain(&inside, &rec.stalls, matters);
    table(rec, &explained, outside, title, who)
}

fn table(
    rec: &Recording,
    explained: &[Explained],
    outside: usize,
    title: &str,
    who: &str,
) -> String {
    // Saturating: a crafted dump's pauses may add up past u64.
    let total = explained
        .iter()
        .map(|e| e.duration_ns)
        .fold(0u64, u64::saturating_add);
    let sum = |f: fn(&Explained) -> u64| explained.iter().map(f).fold(0u64, u64::saturating_add);
    let stalled = sum(|e| e.stalled_ns);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{title}: {} in the recording{}: of {} of their time, {who} waited {}{}",
        explained.len(),
        if outside > 0 {
            format!(" ({outside} outside it)")
        } else {
            String::new()
        },
        fmt_ns(total),
        fmt_ns(stalled),
        causes(explained),
    );
    if rec.stalls_of_selected && who == "GC threads" {
        let _ = writeln!(out, "  (every wait of the GC threads was recorded)");
    } else if rec.slower_ns > 0 {
        let _ = writeln!(
            out,
            "  (from the waits of at least {} that --slower recorded: at least this much)",
            fmt_ns(rec.slower_ns)
        );
    } else {
        let _ = writeln!(
            out,
            "  (the recording has no slow waits: record with --slower to see them)"
        );
    }
    let mut rows: Vec<&Explained> = explained.iter().filter(|e| e.stalled_ns > 0).collect();
    rows.sort_by_key(|e| std::cmp::Reverse(e.stalled_ns));
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<48} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  top occupant",
        "window", "at", "length", "threads", "stalled", "throttled", "contended", "other"
    );
    for e in rows.into_iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {:<48} {:>8.3}s {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  {}",
            head(&visible(&e.label), 48),
            e.start_ns as f64 / 1e9,
            fmt_ns(e.duration_ns),
            e.threads,
            fmt_ns(e.stalled_ns),
            fmt_ns(e.throttled_ns),
            fmt_ns(e.contended_ns),
            fmt_ns(e.other_ns),
            e.top_occupant
                .as_ref()
                .map(|(cgroup, comm, ns)| format!(
                    "{} ({}) {}",
                    visible(comm),
                    visible(cgroup),
                    fmt_ns(*ns)
                ))
                .unwrap_or_default()
        );
    }
    out
}

/// `label` cut to `width` characters from its start (a window's name says
/// what it is first: `GC(62) Pause Young ...`).
fn head(label: &str, width: usize) -> String {
    if label.chars().count() <= width {
        return label.to_owned();
    }
    let mut out: String = label.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// ": 0.7 s throttled by /svc's quota, 0.2 s behind /batch, 1 ms other".
fn causes(explained: &[Explained]) -> String {
    let (throttled, contended, other) =
        explained.iter().fold((0u64, 0u64, 0u64), |(t, c, o), e| {
            (
                t.saturating_add(e.throttled_ns),
                c.saturating_add(e.contended_ns),
                o.saturating_add(e.other_ns),
            )
        });
    let most = |pick: fn(&Explained) -> Option<String>| {
        let mut counts = std::collections::BTreeMap::new();
        for e in explained {
            if let Some(k) = pick(e) {
                let n = counts.entry(k).or_insert(0u64);
                *n = n.saturating_add(e.stalled_ns);
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k)
    };
    let mut parts = Vec::new();
    if throttled > 0 {
        let by = most(|e| e.throttled_by.clone());
        parts.push(match by {
            Some(b) => format!("{} throttled by {}'s quota", fmt_ns(throttled), visible(&b)),
            None => format!("{} throttled", fmt_ns(throttled)),
        });
    }
    if contended > 0 {
        let behind = most(|e| e.top_occupant.as_ref().map(|(cgroup, _, _)| cgroup.clone()));
        parts.push(match behind {
            Some(b) => format!("{} behind {}", fmt_ns(contended), visible(&b)),
            None => format!("{} contended", fmt_ns(contended)),
        });
    }
    if other > 0 {
        parts.push(format!("{} other", fmt_ns(other)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::tests::stall;

    #[test]
    fn gc_threads_are_known_by_their_names() {
        for name in [
            "GC Thread#0",
            "G1 Conc#1",
            "VM Thread",
            "ZWorker#0",
            "Shenandoah GC T",
        ] {
            assert!(is_gc_thread(name), "{name}");
        }
        for name in ["java", "Thread-0", "C2 CompilerThre", "Finalizer"] {
            assert!(!is_gc_thread(name), "{name}");
        }
    }

    #[test]
    fn a_pause_table_names_what_held_the_gc_threads_up() {
        let mut rec =
            crate::dump::parse(include_bytes!("../../tests/fixtures/record-v0.json")).unwrap();
        rec.duration_ns = 10_000_000_000;
        rec.started_monotonic_ns = Some(1_000_000_000_000);
        rec.slower_ns = 1_000_000;
        // GC(1) ends 2 s in, after 30 ms; its GC thread waited 20 ms of it,
        // throttled by /svc.
        let mut gc = stall(1_975_000_000, 20_000_000);
        gc.comm = "GC Thread#0".into();
        gc.throttled_ns = 20_000_000;
        gc.other_ns = 0;
        gc.throttled_by = Some("/svc".into());
        rec.stalls = vec![gc];
        let log = "[2.000s][1002000000000ns][info][gc] GC(1) Pause Young (Normal) (G1 Evacuation Pause) 6M->6M(64M) 30.000ms\n\
                   [9.000s][9002000000000ns][info][gc] GC(2) Pause Young (Normal) (G1 Evacuation Pause) 6M->6M(64M) 1.000ms\n";
        let text = gc_pauses(&rec, log, "gc.log").unwrap();
        assert!(
            text.contains("GC pauses (gc.log): 1 in the recording (1 outside it): of 30.0 ms of their time, GC threads waited 20.0 ms: 20.0 ms throttled by /svc's quota"),
            "{text}"
        );
        assert!(
            text.contains("GC(1) Pause Young (Normal) (G1 Evacuation Pause)"),
            "{text}"
        );
        // Uptime alone cannot be placed.
        let e = gc_pauses(
            &rec,
            "[2.000s][info][gc] GC(1) Pause Remark 1.000ms\n",
            "gc.log",
        )
        .unwrap_err();
        assert!(e.to_string().contains("timenanos"), "{e}");
    }
}
