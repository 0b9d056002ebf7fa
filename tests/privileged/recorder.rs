//! The agent's flight recorder: a trigger writes a dump that holds the
//! seconds before it, and what follows, against the kernel's `cpu.stat`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use libtest_mimic::{Completion, Trial};
use tracer::dump;
use tracer_tests::{
    Load, TestCgroup, Worker,
    services::{Agent, sample_value, wait_for},
};

use crate::{
    Scratch, TestResult, apart, bin, check, cpus, measured, or_skip, privileged, share,
    throttle_tolerance,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "a_recorder_trigger_writes_the_seconds_before_it",
            trigger_dump,
        ),
        privileged(
            "post_dump_writes_a_recorder_dump_for_an_authenticated_client_only",
            post_dump,
        ),
    ]
}

/// `POST /dump` writes what the recorder holds, as SIGUSR2 does, for a
/// client with the web configuration's password; a wrong or missing one
/// gets 401 and writes nothing.
fn post_dump() -> TestResult {
    let bin = or_skip!(bin());
    let scratch = Scratch::new("post-dump")?;
    let dumps = PathBuf::from(scratch.file("dumps"));
    let hash = bcrypt::hash("dump-secret", 4)?;
    let web = scratch.file("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  oncall: '{hash}'\n"))?;
    let config = scratch.file("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"500ms\"\nlock_file = \"{}\"\n[dumps]\ndir = \"{}\"\nevery = \"10m\"\n\
             [recorder]\nminutes = 1\n",
            scratch.file("agent.lock"),
            dumps.display()
        ),
    )?;
    let mut agent = Agent::spawn(
        &bin,
        &["--config", &config, "--web-config", &web],
        &scratch.0,
    )?;
    // `oncall:dump-secret` and `oncall:guess`, base64.
    let right = "Basic b25jYWxsOmR1bXAtc2VjcmV0".to_owned();
    let wrong = "Basic b25jYWxsOmd1ZXNz".to_owned();
    // Ready once an authenticated scrape gets data.
    agent.wait_ready(|addr| status(addr, "GET /metrics", Some(&right)) == Some(200))?;
    let addr = agent.addr;
    std::thread::sleep(Duration::from_secs(2));
    let refused = [
        status(addr, "POST /dump", None),
        status(addr, "POST /dump", Some(&wrong)),
    ];
    let accepted = status(addr, "POST /dump", Some(&right));
    let found = wait_for("a recorder dump", Duration::from_secs(20), || {
        recorder_dumps(&dumps).first().cloned()
    });
    // Time for any dump a refused request would have caused.
    std::thread::sleep(Duration::from_secs(1));
    let written = recorder_dumps(&dumps);
    let (_, log) = agent.terminate(Duration::from_secs(30))?;
    measured(format!(
        "refused {refused:?}, accepted {accepted:?}; {} recorder dumps written",
        written.len()
    ));
    check(refused == [Some(401), Some(401)], || {
        format!("unauthenticated POSTs got {refused:?}")
    })?;
    check(accepted == Some(202), || {
        format!("the right password got {accepted:?}: {log}")
    })?;
    let path = found.map_err(|e| format!("{e:#}; the agent's log:\n{log}"))?;
    check(written.len() == 1, || {
        format!("{} recorder dumps: {written:?}", written.len())
    })?;
    let rec = dump::read(&path)?;
    check(rec.intervals.len() >= 2 && rec.trigger.is_none(), || {
        format!(
            "the dump holds {} intervals, trigger {:?}",
            rec.intervals.len(),
            rec.trigger
        )
    })?;
    Ok(Completion::Completed)
}

/// The status of `line` (method and path) with this `Authorization`.
fn status(addr: std::net::SocketAddr, line: &str, authorization: Option<&str>) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "{line} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn recorder_dumps(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("-recorder.json"))
                .collect()
        })
        .unwrap_or_default()
}

/// How long the agent runs before the hog starts: what the dump must hold
/// from before the trigger.
const QUIET_FOR: Duration = Duration::from_secs(4);

/// A hog under a 20 % quota starts 4 s into the agent's life; a trigger on
/// throttled time above 50 % for 2 s must write, 3 s after it is met, a dump
/// holding the quiet seconds before the hog, the throttling that met it and
/// what followed, whose throttled time is `cpu.stat`'s.
fn trigger_dump() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    let scratch = Scratch::new("recorder")?;
    let dumps = PathBuf::from(scratch.file("dumps"));
    let cg = TestCgroup::create("recorder")?;
    cg.set_quota(20_000, 100_000)?;
    let config = scratch.file("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\nlock_file = \"{}\"\n[dumps]\ndir = \"{}\"\nevery = \"10m\"\n\
             [recorder]\nminutes = 1\nafter = \"3s\"\n[[recorder.trigger]]\non = \"throttled\"\n\
             above = 0.5\nfor = \"2s\"\ninclude = [\"{}\"]\n",
            scratch.file("agent.lock"),
            dumps.display(),
            cg.path
        ),
    )?;
    let agent = Agent::start(&bin, &["--config", &config], &scratch.0)?;
    std::thread::sleep(QUIET_FOR);
    let hog_started = Instant::now();
    let hog = Worker::start(Load::Spin, &cg, busy)?;
    let found = wait_for("a trigger dump", Duration::from_secs(60), || {
        trigger_dump_in(&dumps)
    });
    let waited = hog_started.elapsed();
    // What the recorder did, as Prometheus sees it, after the next refresh.
    std::thread::sleep(Duration::from_millis(1_500));
    let page = agent.metrics()?;
    cg.lift_quota()?;
    hog.stop();
    let (_, log) = agent.terminate(Duration::from_secs(30))?;
    let path = found.map_err(|e| format!("{e:#}; the agent's log:\n{log}"))?;
    let metric = |name: &str| sample_value(&page, name, &[]);
    check(
        metric("tracer_recorder_trigger_dumps_total") == Some(1.0)
            && metric("tracer_recorder_triggers_total").is_some_and(|n| n >= 1.0)
            && metric("tracer_recorder_bytes").is_some_and(|b| b > 0.0),
        || {
            format!(
                "the recorder's series: dumps {:?}, triggers {:?}, bytes {:?}",
                metric("tracer_recorder_trigger_dumps_total"),
                metric("tracer_recorder_triggers_total"),
                metric("tracer_recorder_bytes")
            )
        },
    )?;
    let rec = dump::read(&path)?;

    let fired = rec
        .trigger
        .as_ref()
        .ok_or("the trigger dump names no trigger")?;
    check(
        fired.cgroup == cg.path && fired.rule == "throttled above 50 % for 2.00 s",
        || format!("the dump says {fired:?}"),
    )?;
    // The dump starts where the agent did (the recorder keeps a minute), so
    // the hog started QUIET_FOR into it; the trigger was met at least 2 s
    // after that (its run of 2 s above), and the dump was written 3 s later.
    let rows = |i: &tracer::timeline::Interval| {
        i.cgroups
            .iter()
            .find(|c| c.path == cg.path)
            .cloned()
            .unwrap_or_default()
    };
    let quiet_ns = QUIET_FOR.as_nanos() as u64;
    let before: Vec<_> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() + 1_000_000_000 <= quiet_ns)
        .collect();
    let end = rec.intervals.last().map_or(0, |i| i.end_ns());
    measured(format!(
        "trigger met at +{:.1} s of a dump of {:.1} s ({} intervals), {:.1} s after the hog \
         started; dump found {:.1} s after it",
        fired.at_ns as f64 / 1e9,
        end as f64 / 1e9,
        rec.intervals.len(),
        fired.at_ns.saturating_sub(quiet_ns) as f64 / 1e9,
        waited.as_secs_f64()
    ));
    check(before.len() >= 2, || {
        format!(
            "the dump holds {} whole intervals before the hog started (of {} s)",
            before.len(),
            QUIET_FOR.as_secs()
        )
    })?;
    check(before.iter().all(|i| rows(i).wait_ns == 0), || {
        "the cgroup waited before its hog started".into()
    })?;
    check(fired.at_ns >= quiet_ns + 1_500_000_000, || {
        format!(
            "the trigger was met at {} ns, before the hog could meet it",
            fired.at_ns
        )
    })?;
    check(end >= fired.at_ns + 2_000_000_000, || {
        format!(
            "the dump ends {} ns after the trigger: the 3 s that followed it are not in it",
            end.saturating_sub(fired.at_ns)
        )
    })?;
    // What met it: the two seconds before it, over half throttled.
    let met: Vec<f64> = rec
        .intervals
        .iter()
        .filter(|i| i.end_ns() <= fired.at_ns && i.end_ns() + 2_000_000_000 > fired.at_ns)
        .map(|i| share(rows(i).throttled_ns, i.duration_ns))
        .collect();
    check(met.len() >= 2 && met.iter().all(|&s| s > 0.5), || {
        format!("the intervals that met the trigger were throttled {met:?}")
    })?;

    // The timeline adds up to the dump's aggregate, and that to the kernel's
    // throttled time over the same window.
    let entry = rec
        .cgroups
        .iter()
        .find(|c| c.path == cg.path)
        .ok_or("the cgroup is not in the dump")?;
    let traced = entry.wait.causes.throttled_ns;
    let in_intervals: u64 = rec.intervals.iter().map(|i| rows(i).throttled_ns).sum();
    check(in_intervals == traced, || {
        format!("the intervals hold {in_intervals} ns throttled, the dump's total {traced} ns")
    })?;
    let kernel = entry
        .cpu_stat
        .ok_or("no cpu.stat for a cgroup under a quota")?
        .throttled_ns;
    measured(format!(
        "throttled: traced {traced} ns, cpu.stat {kernel} ns"
    ));
    check(apart(traced, kernel) <= throttle_tolerance(&rec), || {
        format!("traced throttled {traced} ns, cpu.stat {kernel} ns over the dump's window")
    })?;
    Ok(Completion::Completed)
}

fn trigger_dump_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-trigger.json"))
}
