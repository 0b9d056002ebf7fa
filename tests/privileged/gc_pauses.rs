//! A real JVM's GC log, each stop-the-world pause explained by what the
//! tracer saw of its GC threads: under a quota and beside a neighbour on its
//! CPU they wait in its pauses, throttled and contended; alone they hardly
//! wait.

use std::{path::Path, process::Command, time::Duration};

use libtest_mimic::{Completion, Trial};
use tracer::{
    recording::Recording,
    session::Config,
    windows::{TimeBase, Window, explain::explain, gc_log, render},
};
use tracer_tests::{Load, TestCgroup, Worker};

use crate::{TestResult, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "gc_pauses_under_a_quota_and_a_neighbour_are_explained_and_told_from_alone",
        gc_pauses,
    )]
}

const RUN_MS: u64 = 4_000;

/// What one run gave: the recording, its GC log, and the pauses in it
/// explained.
struct Run {
    rec: Recording,
    log: String,
    pauses: usize,
    duration_ns: u64,
    stalled_ns: u64,
    throttled_ns: u64,
    contended_ns: u64,
    /// Who the pauses say throttled them, and the JVM's cgroup.
    throttled_by: Vec<String>,
    cgroup: String,
    /// How much later than its exact stamp each pause is placed by uptime
    /// (negative: earlier).
    uptime_late_ns: Vec<i128>,
}

fn gc_pauses() -> TestResult {
    let (_, cpu) = or_skip!(cpus());
    if Command::new("javac").arg("-version").output().is_err() {
        return Ok(Completion::ignored_with(
            "no OpenJDK (javac); `cargo xtask test` installs openjdk-17-jdk-headless",
        ));
    }
    let dir = std::env::temp_dir().join(format!("tracer-test-gc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> TestResult {
        // The same program as the other JVM test: young collections, one
        // after the other.
        std::fs::write(dir.join("Alloc.java"), crate::jvm::PROGRAM)?;
        let javac = Command::new("javac")
            .arg("Alloc.java")
            .current_dir(&dir)
            .output()?;
        check(javac.status.success(), || {
            format!("javac failed: {}", String::from_utf8_lossy(&javac.stderr))
        })?;
        let squeezed = run(&dir, cpu, true)?;
        let alone = run(&dir, cpu, false)?;
        let share = |r: &Run| r.stalled_ns as f64 / r.duration_ns.max(1) as f64;
        measured(format!(
            "under a quota beside a neighbour: {} pauses, {:.1} % of their time stalled ({} ns \
             throttled, {} ns contended); alone: {} pauses, {:.1} %",
            squeezed.pauses,
            share(&squeezed) * 100.0,
            squeezed.throttled_ns,
            squeezed.contended_ns,
            alone.pauses,
            share(&alone) * 100.0
        ));
        measured(render::gc_pauses(&squeezed.rec, &squeezed.log, "gc.log")?);
        check(squeezed.pauses > 0 && alone.pauses > 0, || {
            "no pause in one of the recordings".into()
        })?;
        check(
            squeezed.throttled_ns > 0 && squeezed.contended_ns > 0,
            || "the GC threads' waits in the pauses were not both throttled and contended".into(),
        )?;
        // Wall time: a pause is held up once however many threads wait.
        for r in [&squeezed, &alone] {
            check(r.stalled_ns <= r.duration_ns, || {
                format!(
                    "{} ns stalled in {} ns of pauses",
                    r.stalled_ns, r.duration_ns
                )
            })?;
        }
        // And in a diff of the two dumps, as `tracer diff` prints it.
        let diff = tracer::diff::render(&squeezed.rec, &alone.rec, 5);
        let throttled = diff
            .lines()
            .skip_while(|l| !l.starts_with("GC pauses"))
            .find(|l| l.trim_start().starts_with("throttled"))
            .unwrap_or_default()
            .to_owned();
        measured(format!("diff: {}", throttled.trim()));
        check(
            throttled.ends_with("-> 0.0 % of the pauses' time") && !throttled.contains(" 0.0 % ->"),
            || format!("the diff does not tell them apart: {diff}"),
        )?;
        // Placed by uptime, pauses are early by the JVM's start-up after its
        // process started (its uptime counts from there: 31 to 55 ms here),
        // the same for each (to the log's ms and the start's 10 ms tick).
        let late = &squeezed.uptime_late_ns;
        let (lo, hi) = (
            late.iter().copied().min().unwrap_or(0),
            late.iter().copied().max().unwrap_or(0),
        );
        measured(format!(
            "placed by uptime and the process start: {} pauses {:.1} to {:.1} ms early",
            late.len(),
            -hi as f64 / 1e6,
            -lo as f64 / 1e6
        ));
        check(
            late.len() == squeezed.pauses
                && lo >= -150_000_000
                && hi <= 12_000_000
                && hi - lo <= 15_000_000,
            || format!("uptime placed {} pauses {lo} to {hi} ns off", late.len()),
        )?;
        // Told apart by physics, whatever else runs on the host: only the
        // JVM under a quota can be throttled, and by its own cgroup's quota.
        check(alone.throttled_ns == 0, || {
            format!(
                "the JVM alone, without a quota, was throttled {} ns in its pauses",
                alone.throttled_ns
            )
        })?;
        check(
            squeezed.throttled_by.iter().all(|b| *b == squeezed.cgroup),
            || {
                format!(
                    "pauses throttled by {:?}, not {}",
                    squeezed.throttled_by, squeezed.cgroup
                )
            },
        )?;
        check(share(&squeezed) >= 0.10, || {
            format!(
                "squeezed pauses stalled only {:.1} % of their time",
                share(&squeezed) * 100.0
            )
        })?;
        Ok(Completion::Completed)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The JVM in a cgroup of its own, traced with `--slower 1ms`. If
/// `squeezed`, pinned to `cpu` beside a neighbour hog, under a 25 % quota
/// (below the half of the CPU its share would give it, so that it is
/// throttled too); otherwise alone, on every CPU, its two GC threads free
/// to run at once.
fn run(dir: &Path, cpu: usize, squeezed: bool) -> Result<Run, libtest_mimic::Failed> {
    let cg = TestCgroup::create(if squeezed { "gc-squeezed" } else { "gc-alone" })?;
    let neighbour = TestCgroup::create("gc-neighbour")?;
    let _hog = if squeezed {
        cg.set_quota(25_000, 100_000)?;
        Some(Worker::start(Load::Spin, &neighbour, cpu)?)
    } else {
        None
    };
    // As `record --gc-log` traces: every wait of the GC threads.
    let mut session = crate::start_session(Config {
        threads: render::GC_THREAD_PATTERNS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        slow_selected: true,
        slow_rate: tracer::stall::SELECTED_RATE,
        ..Config::default()
    })?;
    let log_path = dir.join(if squeezed {
        "squeezed.log"
    } else {
        "alone.log"
    });
    let pin = if squeezed {
        format!("taskset -c {cpu} ")
    } else {
        String::new()
    };
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {pin}java -XX:+UseG1GC \
         -XX:ParallelGCThreads=2 -XX:-UseDynamicNumberOfGCThreads -XX:TieredStopAtLevel=1 \
         -Xms64m -Xmx64m -Xlog:gc:file={}:timenanos,uptime,level,tags -cp {} Alloc {RUN_MS}",
        cg.dir.display(),
        log_path.display(),
        dir.display()
    );
    let mut java = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // As `record` does: the ring buffer's records read, and new threads
    // named like GC threads selected (a scan a second), while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // `sh` execs the JVM: the same pid. Its start, while it runs.
    let mut jvm_start = None;
    while java.try_wait()?.is_none() && std::time::Instant::now() < deadline {
        if jvm_start.is_none()
            && std::fs::read_to_string(format!("/proc/{}/comm", java.id()))
                .is_ok_and(|c| c.trim() == "java")
        {
            jvm_start = tracer::windows::jvm::start_monotonic_ns(java.id()).ok();
        }
        session.drain_events();
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = java.wait_with_output()?;
    let rec = session.stop()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    check(out.status.success() && stdout.contains("done"), || {
        format!(
            "the JVM failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let log = std::fs::read_to_string(&log_path)?;
    let parsed = gc_log::parse(&log);
    check(parsed.skipped == 0, || {
        format!("{} GC log lines skipped", parsed.skipped)
    })?;
    let base = TimeBase::of(&rec);
    let windows: Vec<Window> = parsed
        .pauses
        .iter()
        .filter_map(|p| Window::ending(p.end, p.duration_ns, p.kind.clone(), &base))
        .filter(|w| w.start_ns >= 0 && w.end_ns <= i128::from(rec.duration_ns))
        .collect();
    check(windows.len() == parsed.pauses.len(), || {
        format!(
            "{} of the log's {} pauses fall in the recording, which ran the whole JVM",
            windows.len(),
            parsed.pauses.len()
        )
    })?;
    let explained = explain(&windows, &rec.stalls, |s| render::is_gc_thread(&s.comm));
    // As `record --gc-log` keeps them in the dump: every pause, and those
    // whose GC threads waited in the JVM's own cgroup.
    let kept = render::gc_pause_records(&rec, &log, "gc.log", None)?;
    check(kept.len() == explained.len(), || {
        format!("{} pauses kept of {}", kept.len(), explained.len())
    })?;
    check(
        kept.iter()
            .filter_map(|p| p.cgroup.as_deref())
            .all(|c| c == cg.path),
        || format!("pauses placed in other cgroups than {}: {kept:?}", cg.path),
    )?;
    // The same log with its uptime alone (the `timenanos` stamps taken out),
    // placed by the JVM's process start: each pause as far from where its
    // exact stamp put it as the JVM's start is from the process's.
    let uptime_only: String = log
        .lines()
        .map(|l| {
            let mut parts: Vec<&str> = l.splitn(3, ']').collect();
            if parts.len() == 3 && parts[1].ends_with("ns") {
                parts.remove(1);
            }
            parts.join("]") + "\n"
        })
        .collect();
    let base = TimeBase {
        jvm_start_monotonic_ns: Some(jvm_start.ok_or("the JVM's start was not read")?),
        ..TimeBase::of(&rec)
    };
    let late: Vec<i128> = gc_log::parse(&uptime_only)
        .pauses
        .iter()
        .zip(&parsed.pauses)
        .filter_map(|(by_uptime, exact)| {
            check(
                matches!(by_uptime.end, tracer::windows::Stamp::Uptime(_)),
                || "the uptime-only log still has another clock".into(),
            )
            .ok()?;
            let placed =
                Window::ending(by_uptime.end, by_uptime.duration_ns, String::new(), &base)?;
            let exact = Window::ending(exact.end, exact.duration_ns, String::new(), &base)?;
            Some(placed.start_ns - exact.start_ns)
        })
        .collect();
    let sum = |f: fn(&tracer::windows::explain::Explained) -> u64| explained.iter().map(f).sum();
    let mut rec = rec;
    rec.gc_pauses = kept;
    Ok(Run {
        pauses: explained.len(),
        duration_ns: sum(|e| e.duration_ns),
        stalled_ns: sum(|e| e.stalled_ns),
        throttled_ns: sum(|e| e.throttled_ns),
        contended_ns: sum(|e| e.contended_ns),
        throttled_by: explained
            .iter()
            .filter_map(|e| e.throttled_by.clone())
            .collect(),
        cgroup: cg.path.clone(),
        uptime_late_ns: late,
        rec,
        log,
    })
}
