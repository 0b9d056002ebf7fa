//! Dumps end to end: what `record --output` writes, `report` shows the same way
//! without privileges, `--redact` hides names, and the HTML page renders in a
//! real browser.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use libtest_mimic::{Completion, Failed, Trial};
use tracer::dump;
use tracer_tests::{Load, TestCgroup, Worker, tracer_command};

use crate::{Scratch, TestResult, bin, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("a_recorded_dump_reports_the_same_without_root", round_trip),
        privileged("a_redacted_dump_names_no_cgroup_or_host", redacted),
        Trial::ignorable_test("the_html_report_renders_in_chromium", html_in_chromium),
    ]
}

/// `nobody` when the tests run as root, so that the reading side proves it
/// needs no privilege.
fn unprivileged() -> Option<u32> {
    (unsafe { libc::geteuid() } == 0).then_some(65534)
}

fn run(bin: &Path, args: &[&str], uid: Option<u32>) -> Result<String, Failed> {
    let out = tracer_command(bin, args, uid).output()?;
    if !out.status.success() {
        return Err(format!(
            "tracer {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A dump `record` wrote (as root) is readable by its owner only; made
/// readable to all, as whoever hands it over does, for the unprivileged
/// readers below.
fn hand_over(file: &str) -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file)?.permissions().mode() & 0o777;
    check(mode == 0o600, || {
        format!("{file} was written with mode {mode:o}")
    })?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// `tracer report` of a dump prints exactly what `tracer record` printed when it
/// wrote it, as an unprivileged user; the page and a diff come out of it too.
fn round_trip() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let a = TestCgroup::create("dump-a")?;
    let b = TestCgroup::create("dump-b")?;
    let _wa = Worker::start(Load::Spin, &a, busy)?;
    let _wb = Worker::start(Load::Spin, &b, busy)?;
    std::thread::sleep(Duration::from_millis(200));
    let scratch = Scratch::new("dump")?;
    let file = scratch.file("session.json");
    let recorded = run(
        &bin,
        &["record", "--duration", "2s", "--output", &file],
        None,
    )?;
    let size = std::fs::metadata(&file)?.len();
    hand_over(&file)?;
    let reported = run(&bin, &["report", &file], unprivileged())?;
    measured(format!("dump of {size} bytes"));
    check(reported == recorded, || {
        let line = recorded
            .lines()
            .zip(reported.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        format!(
            "report differs from record at line {}: {:?} vs {:?}",
            line + 1,
            recorded.lines().nth(line),
            reported.lines().nth(line)
        )
    })?;
    check(
        recorded.contains(&a.path) && recorded.contains(&b.path),
        || format!("the workloads' cgroups are missing:\n{recorded}"),
    )?;
    let page = scratch.file("session.html");
    run(&bin, &["report", &file, "--html", &page], unprivileged())?;
    let html = std::fs::read_to_string(&page)?;
    check(html.contains(&format!("data-path=\"{}\"", a.path)), || {
        "the page lacks a workload's cgroup".into()
    })?;
    let diff = run(&bin, &["diff", &file, &file], unprivileged())?;
    check(diff.contains(&a.path) && diff.contains("(+0 %)"), || {
        diff.clone()
    })?;
    // The library reads it back to the same figures.
    let rec = dump::read(Path::new(&file))?;
    let entry = rec
        .cgroups
        .iter()
        .find(|c| c.path == a.path)
        .ok_or("cgroup missing from the dump")?;
    check(
        entry.wait.causes.contended_ns > 0 && !entry.wait.runnable_wait.hdr.is_empty(),
        || format!("{entry:?}"),
    )?;
    Ok(Completion::Completed)
}

/// `--redact`: neither the host name nor any cgroup name is in the file, and it
/// still reads.
fn redacted() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let secret = TestCgroup::create("customer-secret")?;
    // Two hogs sharing a CPU: they switch, so the cgroup has waits to report
    // (a lone hog on an otherwise idle CPU may not switch at all in 1 s).
    let _w = Worker::start(Load::Spin, &secret, busy)?;
    let _w2 = Worker::start(Load::Spin, &secret, busy)?;
    let scratch = Scratch::new("redact")?;
    let file = scratch.file("redacted.json");
    let recorded = run(
        &bin,
        &["record", "--duration", "1s", "--output", &file, "--redact"],
        None,
    )?;
    check(recorded.contains(&secret.path), || {
        "the terminal report is not redacted, only the dump".into()
    })?;
    let text = std::fs::read_to_string(&file)?;
    for hidden in ["customer-secret", "tracer-test-"] {
        check(!text.contains(hidden), || {
            format!("{hidden:?} is in the redacted dump")
        })?;
    }
    // The host name as a name, not as letters: a host called "vm" is in
    // "vmlinux" and, now and then, in a histogram's base64.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mut named = Vec::new();
    strings_naming(&json, host.trim(), &mut named);
    check(named.is_empty(), || {
        format!(
            "the host name {:?} is in the redacted dump: {named:?}",
            host.trim()
        )
    })?;
    hand_over(&file)?;
    let reported = run(&bin, &["report", &file], unprivileged())?;
    check(reported.contains("/c-"), || {
        format!("no placeholder in:\n{reported}")
    })?;
    Ok(Completion::Completed)
}

/// Collects the strings of `v` (keys too) that hold `name` as a word of its
/// own: bounded by the ends or by characters that are not letters or digits.
/// Histograms (the `hdr` fields, base64) name nothing and are skipped.
fn strings_naming(v: &serde_json::Value, name: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    let names = |s: &str| {
        s.match_indices(name).any(|(at, _)| {
            let before = s[..at].chars().next_back();
            let after = s[at + name.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
    };
    match v {
        Value::String(s) if names(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings_naming(i, name, out)),
        Value::Object(fields) => {
            for (k, v) in fields {
                if names(k) {
                    out.push(k.clone());
                }
                if k != "hdr" {
                    strings_naming(v, name, out);
                }
            }
        }
        _ => {}
    }
}

/// The page from the committed dump, loaded in headless Chromium: what the
/// browser built shows every cgroup, its verdict, and bars of the right sizes.
fn html_in_chromium() -> TestResult {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        return Ok(Completion::ignored_with(
            "no Chromium (Debian package chromium; `cargo xtask test` installs it)",
        ));
    };
    let bin = or_skip!(bin());
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tracer/tests/fixtures/dump-v1.json");
    let rec = dump::read(&fixture)?;
    let scratch = Scratch::new("html")?;
    let page = scratch.file("page.html");
    run(
        &bin,
        &["report", &fixture.to_string_lossy(), "--html", &page],
        unprivileged(),
    )?;
    let browse = |extra: &[&str]| -> Result<std::process::Output, Failed> {
        Ok(Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,2000",
            ])
            .arg(format!("--user-data-dir={}", scratch.file("profile")))
            .args(extra)
            .arg(format!("file://{page}"))
            .output()?)
    };
    let dom = browse(&["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    check(
        dom.contains(&format!("<h1>Scheduler report for {}</h1>", rec.host)),
        || {
            format!(
                "no title in what Chromium rendered:\n{}",
                &dom[..dom.len().min(2000)]
            )
        },
    )?;
    for c in &rec.cgroups {
        let row = dom
            .split("<tr class=\"cgroup\"")
            .find(|r| r.contains(&format!("data-path=\"{}\"", c.path)))
            .ok_or_else(|| format!("no summary row for {}", c.path))?;
        check(row.contains(c.verdict.kind.label()), || {
            format!("{}: verdict {} not shown", c.path, c.verdict.kind.label())
        })?;
        // The throttled part of the bar is as wide as the throttled share says.
        let throttled = c.wait.causes.throttled_ns as f64 * 100.0 / rec.duration_ns as f64;
        if throttled >= 0.05 {
            check(
                row.contains(&format!(
                    "class=\"throttled\" data-share=\"{throttled:.1}\""
                )),
                || format!("{}: no throttled bar of {throttled:.1} %", c.path),
            )?;
        }
    }
    // As the browser serializes text: only &, < and > escaped.
    let as_text = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let verdicts = rec
        .cgroups
        .iter()
        .filter(|c| dom.contains(&as_text(&c.verdict.text)))
        .count();
    check(verdicts == rec.cgroups.len(), || {
        let missing: Vec<&str> = rec
            .cgroups
            .iter()
            .filter(|c| !dom.contains(&as_text(&c.verdict.text)))
            .map(|c| c.verdict.text.as_str())
            .collect();
        format!(
            "{verdicts} of {} verdicts shown; missing {missing:?}",
            rec.cgroups.len()
        )
    })?;
    // And it paints: a full-size screenshot.
    let shot = scratch.file("page.png");
    let screenshot = || -> Result<Vec<u8>, Failed> {
        browse(&[&format!("--screenshot={shot}")])?;
        let png = std::fs::read(&shot).map_err(|e| format!("no screenshot: {e}"))?;
        check(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
            || format!("screenshot of {} bytes", png.len()),
        )?;
        Ok(png)
    };
    let png = screenshot()?;
    let width = u32::from_be_bytes(png[16..20].try_into()?);
    check(width == 1280, || format!("screenshot {width} pixels wide"))?;
    measured(format!(
        "{} cgroups rendered, screenshot {} bytes",
        rec.cgroups.len(),
        png.len()
    ));

    // A trigger dump of the agent's flight recorder (a hog under a 20 %
    // quota started 4 s in): its timeline and heatmap, and the trigger.
    // A fixture's page as the browser built it.
    let fixture_page = |name: &str| -> Result<(tracer::recording::Recording, String), Failed> {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tracer/tests/fixtures")
            .join(name);
        let rec = dump::read(&fixture)?;
        run(
            &bin,
            &["report", &fixture.to_string_lossy(), "--html", &page],
            unprivileged(),
        )?;
        let dom = browse(&["--dump-dom"])?;
        Ok((rec, String::from_utf8_lossy(&dom.stdout).into_owned()))
    };
    let (rec, dom) = fixture_page("dump-trigger.json")?;
    let fired = rec
        .trigger
        .as_ref()
        .ok_or("the trigger fixture has no trigger")?;
    let (section, timeline) = group_timeline(&dom, &fired.cgroup)?;
    // A throttled column for every interval it was throttled in, as tall
    // as its share of the interval.
    let throttled: Vec<String> = rec
        .intervals
        .iter()
        .filter_map(|i| {
            let c = i.cgroups.iter().find(|c| c.path == fired.cgroup)?;
            let share = c.throttled_ns as f64 * 100.0 / i.duration_ns as f64;
            (share >= 0.05)
                .then(|| format!("data-start-ns=\"{}\" data-share=\"{share:.1}\"", i.start_ns))
        })
        .collect();
    check(throttled.len() >= 3, || {
        format!("the fixture has {} throttled intervals", throttled.len())
    })?;
    for cell in &throttled {
        check(
            timeline.contains(&format!("class=\"throttled\" {cell}")),
            || format!("no throttled column {cell} in the rendered timeline"),
        )?;
    }
    check(
        timeline.matches("class=\"throttled\"").count() == throttled.len(),
        || "throttled columns where the cgroup was not throttled".into(),
    )?;
    check(timeline.contains("class=\"trigger\""), || {
        "the trigger's moment is not marked".into()
    })?;
    check(section.contains("<svg class=\"heatmap\""), || {
        "no heatmap in the cgroup's section".into()
    })?;
    screenshot()?;
    measured(format!(
        "trigger dump: {} throttled columns of {} intervals, trigger and heatmap drawn",
        throttled.len(),
        rec.intervals.len()
    ));

    // A recording with `--slower 20ms` (a hog under a quota, then behind a
    // heavier neighbour): each of its slow waits is a dot on its timeline,
    // at its moment, coloured by its main cause.
    let (rec, dom) = fixture_page("dump-stalls.json")?;
    let path = "/svc";
    let (_, timeline) = group_timeline(&dom, path)?;
    let ours: Vec<_> = rec.stalls.iter().filter(|s| s.cgroup == path).collect();
    let mut causes = std::collections::BTreeSet::new();
    for s in &ours {
        let cause = if s.throttled_ns >= s.contended_ns.max(s.other_ns) {
            "throttled"
        } else if s.contended_ns >= s.other_ns {
            "contended"
        } else {
            "other"
        };
        causes.insert(cause);
        let dot = format!(
            "class=\"stall\" data-at-ns=\"{}\" data-cause=\"{cause}\"",
            s.at_ns
        );
        check(timeline.contains(&dot), || {
            format!("no dot {dot} on the timeline")
        })?;
    }
    check(
        timeline.matches("class=\"stall\"").count() == ours.len(),
        || "dots for slow waits of other cgroups".into(),
    )?;
    check(causes.len() >= 2, || {
        format!("the fixture's slow waits have one main cause only: {causes:?}")
    })?;
    // Its quota ran out while it ran alone: those intervals are marked
    // under the columns, and only those.
    let throttled: Vec<_> = rec
        .intervals
        .iter()
        .filter_map(|i| {
            let c = i.cgroups.iter().find(|c| c.path == path)?;
            (c.throttle_episodes > 0).then_some((i.start_ns, c.throttle_episodes))
        })
        .collect();
    check(throttled.len() >= 3, || {
        format!(
            "the fixture has {} intervals with episodes",
            throttled.len()
        )
    })?;
    for (at, n) in &throttled {
        let mark = format!("class=\"episodes\" data-start-ns=\"{at}\" data-count=\"{n}\"");
        check(timeline.contains(&mark), || format!("no mark {mark}"))?;
    }
    check(
        timeline.matches("class=\"episodes\"").count() == throttled.len(),
        || "episode marks in intervals without episodes".into(),
    )?;
    screenshot()?;
    measured(format!(
        "slow waits: {} dots on {path}'s timeline, main causes {causes:?}; {} intervals marked throttled",
        ours.len(),
        throttled.len()
    ));

    // A JVM's recording with its GC log (`record --slower 2ms --gc-log`, a
    // G1 JVM under a 25 % quota beside a hog; the slow waits of other
    // threads than its GC threads taken out, to keep it small): each pause
    // a band on the timeline of the JVM's cgroup, at its moment.
    let (rec, dom) = fixture_page("dump-gc.json")?;
    let jvm = rec
        .gc_pauses
        .iter()
        .find_map(|p| p.cgroup.clone())
        .ok_or("the GC fixture has no pause with a cgroup")?;
    let (_, timeline) = group_timeline(&dom, &jvm)?;
    let pauses: Vec<_> = rec
        .gc_pauses
        .iter()
        .filter(|p| p.cgroup.as_deref() == Some(jvm.as_str()))
        .collect();
    check(pauses.len() >= 3, || {
        format!("the GC fixture has {} pauses of {jvm}", pauses.len())
    })?;
    for p in &pauses {
        let band = format!("class=\"gc-pause\" data-at-ns=\"{}\"", p.at_ns);
        check(timeline.contains(&band), || {
            format!("no band {band} on the timeline")
        })?;
    }
    check(
        timeline.matches("class=\"gc-pause\"").count() == pauses.len(),
        || "bands for pauses of other cgroups".into(),
    )?;
    screenshot()?;
    measured(format!(
        "GC pauses: {} bands on {jvm}'s timeline",
        pauses.len()
    ));
    Ok(Completion::Completed)
}

/// The section of cgroup `path` on a rendered page, and its timeline.
fn group_timeline<'a>(dom: &'a str, path: &str) -> Result<(&'a str, &'a str), Failed> {
    let section = dom
        .split("<section class=\"group\"")
        .find(|s| s.contains(&format!("<h3>{path}</h3>")))
        .ok_or_else(|| format!("no section for {path}"))?;
    let timeline = section
        .split("<svg class=\"timeline\"")
        .nth(1)
        .and_then(|t| t.split("</svg>").next())
        .ok_or("no timeline in the cgroup's section")?;
    Ok((section, timeline))
}
