//! Integration tests against the running kernel: real programs, real cgroups,
//! real workloads, checked against the arithmetic of the set-up and the kernel's
//! own counters. They need root; without it each reports as ignored with the
//! reason. They run one at a time because they share CPUs and the scheduler.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::Stdio,
    time::{Duration, Instant},
};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tracer::{
    recording::{CgroupEntry, Recording},
    session::{Config, Session},
};
use tracer_tests::{
    Load, TestCgroup, Worker, loaded_tracer_programs, missing_privilege, online_cpus, run_delay_ns,
    run_worker_if_requested, settle_tracer_programs, tracer_bin, tracer_command,
};

type TestResult = Result<Completion, Failed>;

/// Returns from the test as ignored (with the reason) when a precondition fails.
macro_rules! or_skip {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(skip) => return Ok(skip),
        }
    };
}

const TRACE_FOR: Duration = Duration::from_secs(3);

fn main() {
    run_worker_if_requested();
    let mut args = Arguments::from_args();
    // The tests pin workloads to the same CPUs and measure the scheduler.
    args.test_threads = Some(1);
    let tests = vec![
        privileged(
            "two_busy_cgroups_sharing_a_cpu_each_wait_half_the_time",
            two_busy_cgroups,
        ),
        privileged("traced_wait_matches_schedstat_run_delay", matches_schedstat),
        privileged("cli_record_writes_the_json_report", cli_json),
        privileged("sigint_ends_the_session_and_detaches", || {
            cli_signal(libc::SIGINT)
        }),
        privileged("sigterm_ends_the_session_and_detaches", || {
            cli_signal(libc::SIGTERM)
        }),
        privileged(
            "unknown_cgroup_is_refused_before_tracing",
            cli_unknown_cgroup,
        ),
        Trial::ignorable_test("unprivileged_run_says_it_needs_root", cli_unprivileged),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// A test that needs root and BPF: ignored, with the reason, where they are missing.
fn privileged(name: &str, f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || match missing_privilege() {
        Some(reason) => Ok(Completion::ignored_with(reason)),
        None => f(),
    })
}

/// Two CPUs: one for the contended workloads, one for everything else.
fn cpus() -> Result<(usize, usize), Completion> {
    let cpus = online_cpus();
    match (cpus.first(), cpus.last()) {
        (Some(&quiet), Some(&busy)) if quiet != busy => Ok((quiet, busy)),
        _ => Err(Completion::ignored_with("needs at least two online CPUs")),
    }
}

fn record(config: Config, duration: Duration) -> Result<Recording, Failed> {
    let session = Session::start(config)?;
    std::thread::sleep(duration);
    Ok(session.stop()?)
}

fn cgroup_in<'a>(rec: &'a Recording, cg: &TestCgroup) -> Result<&'a CgroupEntry, Failed> {
    rec.cgroups
        .iter()
        .find(|c| c.path == cg.path)
        .ok_or_else(|| format!("{} missing from the recording: {:?}", cg.path, paths(rec)).into())
}

fn paths(rec: &Recording) -> Vec<&str> {
    rec.cgroups.iter().map(|c| c.path.as_str()).collect()
}

fn share(ns: u64, rec: &Recording) -> f64 {
    ns as f64 / rec.duration_ns as f64
}

/// Prints what a test measured, so that CI logs carry the figures.
fn measured(what: String) {
    eprint!("[{what}] ");
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(msg().into()) }
}

/// Two CPU hogs in two cgroups pinned to one CPU each run half the time and wait
/// the other half; a mostly sleeping thread on another CPU hardly waits at all.
fn two_busy_cgroups() -> TestResult {
    let (quiet, busy) = or_skip!(cpus());
    let a = TestCgroup::create("a")?;
    let b = TestCgroup::create("b")?;
    let c = TestCgroup::create("sleeper")?;
    let _wa = Worker::start(Load::Spin, &a, busy)?;
    let _wb = Worker::start(Load::Spin, &b, busy)?;
    let _wc = Worker::start(Load::MostlySleep, &c, quiet)?;
    // Let the scheduler settle into alternating the two hogs.
    std::thread::sleep(Duration::from_millis(200));

    let rec = record(Config::default(), TRACE_FOR)?;
    check(rec.events.losses().is_empty(), || {
        format!("events lost: {:?}", rec.events.losses())
    })?;
    for cg in [&a, &b] {
        let entry = cgroup_in(&rec, cg)?;
        check(entry.id == cg.id(), || {
            format!(
                "{} has id {}, its directory inode is {}",
                cg.path,
                entry.id,
                cg.id()
            )
        })?;
        let s = share(entry.runnable_wait.summary.total_ns, &rec);
        check((0.45..=0.55).contains(&s), || {
            format!(
                "{} waited {:.1} % of the time, expected 50 % ± 5",
                cg.path,
                s * 100.0
            )
        })?;
    }
    let shares: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|cg| {
            let total = cgroup_in(&rec, cg).map_or(0, |e| e.runnable_wait.summary.total_ns);
            format!("{} {:.2} %", cg.path, share(total, &rec) * 100.0)
        })
        .collect();
    measured(format!("waited: {}", shares.join(", ")));
    let sleeper = cgroup_in(&rec, &c)?;
    // It wakes every ~20 ms: about 150 waits in 3 s, each of them short.
    check(sleeper.runnable_wait.summary.count >= 50, || {
        format!(
            "the sleeper was seen waking only {} times",
            sleeper.runnable_wait.summary.count
        )
    })?;
    let s = share(sleeper.runnable_wait.summary.total_ns, &rec);
    check(s < 0.01, || {
        format!(
            "the mostly sleeping thread waited {:.2} % of the time",
            s * 100.0
        )
    })?;
    Ok(Completion::Completed)
}

/// The kernel's own per-task run delay over the same interval agrees with the
/// traced waits of that task within 5 %.
fn matches_schedstat() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let cg = TestCgroup::create("schedstat")?;
    let w1 = Worker::start(Load::Spin, &cg, busy)?;
    let _w2 = Worker::start(Load::Spin, &cg, busy)?;
    std::thread::sleep(Duration::from_millis(200));

    let session = Session::start(Config {
        pids: vec![w1.pid],
        ..Config::default()
    })?;
    let before = run_delay_ns(w1.pid)?;
    std::thread::sleep(TRACE_FOR);
    let after = run_delay_ns(w1.pid)?;
    let rec = session.stop()?;

    let kernel = after - before;
    let traced = rec
        .pids
        .iter()
        .find(|p| p.pid == w1.pid)
        .ok_or("selected pid missing from the recording")?
        .runnable_wait
        .summary
        .total_ns;
    let diff = (traced as f64 - kernel as f64).abs() / kernel as f64;
    measured(format!(
        "traced {traced} ns, schedstat {kernel} ns, {:.2} % apart",
        diff * 100.0
    ));
    check(diff <= 0.05, || {
        format!(
            "traced {traced} ns, schedstat run delay grew {kernel} ns: {:.1} % apart",
            diff * 100.0
        )
    })?;
    // And the set-up's arithmetic: it shares its CPU with one other hog.
    let s = share(kernel, &rec);
    check((0.4..=0.6).contains(&s), || {
        format!(
            "run delay was {:.1} % of the time, expected about 50 %",
            s * 100.0
        )
    })?;
    Ok(Completion::Completed)
}

fn bin() -> Result<std::path::PathBuf, Completion> {
    tracer_bin().ok_or_else(|| {
        Completion::ignored_with("tracer binary not built (run the tests with `cargo xtask test`)")
    })
}

/// `tracer record --json` writes the documented keys, with values that match the
/// set-up: two hogs in one cgroup on one CPU wait 100 % of the time between them.
fn cli_json() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let cg = TestCgroup::create("cli")?;
    let _w1 = Worker::start(Load::Spin, &cg, busy)?;
    let _w2 = Worker::start(Load::Spin, &cg, busy)?;
    let dir = std::env::temp_dir().join(format!("tracer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("record.json");
    let json_arg = json_path.to_string_lossy().into_owned();

    let out = tracer_command(
        &bin,
        &[
            "record",
            "--duration",
            "2s",
            "--cgroup",
            &cg.path,
            "--json",
            &json_arg,
        ],
        None,
    )
    .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.success(), || format!("tracer failed: {stderr}"))?;
    check(
        stdout.contains(&cg.path) && stdout.contains("probes: tp_btf/sched_switch"),
        || format!("report lacks the cgroup or the probes:\n{stdout}"),
    )?;

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    let _ = std::fs::remove_dir_all(&dir);
    let duration = json["duration_ns"].as_u64().ok_or("no duration_ns")?;
    check((1_900_000_000..2_500_000_000).contains(&duration), || {
        format!("duration_ns {duration} for a 2 s session")
    })?;
    let cgroups = json["cgroups"].as_array().ok_or("no cgroups[]")?;
    check(cgroups.len() == 1, || {
        format!("--cgroup kept {} cgroups", cgroups.len())
    })?;
    let entry = &cgroups[0];
    check(entry["path"] == cg.path.as_str(), || {
        format!("path {}", entry["path"])
    })?;
    check(entry["id"].as_u64() == Some(cg.id()), || {
        format!("id {}", entry["id"])
    })?;
    let wait = &entry["runnable_wait"];
    for key in ["count", "total_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns"] {
        check(wait[key].is_u64(), || {
            format!("runnable_wait.{key} missing: {wait}")
        })?;
    }
    let total = wait["total_ns"].as_u64().unwrap_or(0);
    let s = total as f64 / duration as f64;
    measured(format!(
        "two hogs waited {:.1} % of the time in total",
        s * 100.0
    ));
    check((0.9..=1.1).contains(&s), || {
        format!(
            "two hogs sharing a CPU waited {:.1} % of the time in total, expected 100 %",
            s * 100.0
        )
    })?;
    let ordered = ["p50_ns", "p99_ns", "p999_ns", "max_ns"]
        .windows(2)
        .all(|w| wait[w[0]].as_u64() <= wait[w[1]].as_u64());
    check(ordered, || format!("percentiles out of order: {wait}"))?;
    Ok(Completion::Completed)
}

/// A signal ends an open-ended session cleanly: report printed, nothing attached.
fn cli_signal(signal: i32) -> TestResult {
    let bin = or_skip!(bin());
    // Programs of earlier sessions may still be on their way out.
    let before = settle_tracer_programs(0);
    let mut child = tracer_command(&bin, &["record"], None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    check(line.contains("Tracing"), || {
        format!("unexpected first line: {line:?}")
    })?;
    let during = loaded_tracer_programs();
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("tracer did not exit within 10 s of the signal".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut stdout)?;
    check(status.success(), || format!("exit status {status}"))?;
    check(stdout.contains("events:"), || {
        format!("no report after the signal:\n{stdout}")
    })?;
    check(during >= before + 3, || {
        format!(
            "only {} programs were loaded while tracing",
            during - before
        )
    })?;
    let after = settle_tracer_programs(before);
    check(after == before, || {
        format!("{} tracer programs still loaded after exit", after - before)
    })?;
    Ok(Completion::Completed)
}

fn cli_unknown_cgroup() -> TestResult {
    let bin = or_skip!(bin());
    let out = tracer_command(
        &bin,
        &["record", "--duration", "1s", "--cgroup", "/no/such/cgroup"],
        None,
    )
    .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.code() == Some(1), || {
        format!("exit status {}", out.status)
    })?;
    check(stderr.contains("no cgroup /no/such/cgroup"), || {
        format!("stderr: {stderr}")
    })?;
    check(stderr.lines().count() == 1, || {
        format!("expected one error line: {stderr}")
    })?;
    Ok(Completion::Completed)
}

/// Without privileges the tracer says what is missing in one line. Runs as
/// `nobody` when the tests are root, as the current user otherwise.
fn cli_unprivileged() -> TestResult {
    let bin = or_skip!(bin());
    let uid = (unsafe { libc::geteuid() } == 0).then_some(65534);
    let out = tracer_command(&bin, &["record", "--duration", "1s"], uid).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.code() == Some(1), || {
        format!("exit status {}: {stderr}", out.status)
    })?;
    check(
        stderr.contains("needs root") && stderr.contains("sudo"),
        || format!("stderr: {stderr}"),
    )?;
    check(stderr.lines().count() == 1, || {
        format!("expected one error line: {stderr}")
    })?;
    Ok(Completion::Completed)
}
