//! A real JVM under a CPU quota: its garbage collector's threads, picked out by
//! name, are throttled, and the verdict on its cgroup is quota expiry.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use libtest_mimic::{Completion, Trial};
use tracer::{session::Config, verdict::Kind};
use tracer_tests::TestCgroup;

use crate::{TestResult, cgroup_in, check, cpus, measured, or_skip, privileged, share};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "jvm_gc_threads_under_a_quota_are_throttled",
        jvm_gc_threads,
    )]
}

/// Two threads allocate short-lived arrays as fast as they can for `args[0]` ms:
/// young collections, one after the other.
pub(crate) const PROGRAM: &str = r#"
public class Alloc {
    public static void main(String[] args) throws Exception {
        final long until = System.nanoTime() + Long.parseLong(args[0]) * 1_000_000L;
        Thread[] threads = new Thread[2];
        for (int i = 0; i < threads.length; i++) {
            threads[i] = new Thread(() -> {
                java.util.ArrayList<byte[]> keep = new java.util.ArrayList<>();
                while (System.nanoTime() < until) {
                    keep.add(new byte[4096]);
                    if (keep.size() > 2_000) keep.clear();
                }
            });
            threads[i].start();
        }
        for (Thread t : threads) t.join();
        System.out.println("done");
    }
}
"#;

const RUN_MS: u64 = 6_000;

fn jvm_gc_threads() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    if Command::new("javac").arg("-version").output().is_err() {
        return Ok(Completion::ignored_with(
            "no OpenJDK (javac); `cargo xtask test` installs openjdk-17-jdk-headless",
        ));
    }
    let dir = std::env::temp_dir().join(format!("tracer-test-jvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_jvm(&dir, busy);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_jvm(dir: &Path, cpu: usize) -> TestResult {
    std::fs::write(dir.join("Alloc.java"), PROGRAM)?;
    let javac = Command::new("javac")
        .arg("Alloc.java")
        .current_dir(dir)
        .output()?;
    check(javac.status.success(), || {
        format!("javac failed: {}", String::from_utf8_lossy(&javac.stderr))
    })?;

    let cg = TestCgroup::create("jvm")?;
    cg.set_quota(20_000, 100_000)?;
    let mut session = crate::start_session(Config {
        threads: vec!["GC Thread*".into()],
        ..Config::default()
    })?;
    // The JVM joins the cgroup and its CPU before it starts.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec taskset -c {cpu} java -Xlog:gc -XX:+UseParallelGC \
         -XX:ParallelGCThreads=2 -XX:-UseDynamicNumberOfGCThreads -XX:TieredStopAtLevel=1 \
         -Xms32m -Xmx32m -cp {} Alloc {RUN_MS}",
        cg.dir.display(),
        dir.display()
    );
    // Into files, not pipes: hundreds of GC log lines would fill a pipe
    // nobody reads until the JVM exits, and the JVM would block on it.
    let (out_path, err_path) = (dir.join("java.out"), dir.join("java.err"));
    let mut java = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        // Keeps the `--threads` scan going, as `tracer record` does.
        session.drain_events();
        if let Some(status) = java.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // Say where it is stuck: throttled (cpu.stat climbing) or not runnable.
            let states = thread_states(java.id());
            let stat = std::fs::read_to_string(cg.dir.join("cpu.stat")).unwrap_or_default();
            let _ = java.kill();
            let _ = java.wait();
            return Err(format!(
                "the JVM did not finish within 120 s; thread states {states}; cpu.stat: {}",
                stat.replace('\n', ", ")
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let rec = session.stop()?;
    let stdout = std::fs::read_to_string(&out_path)?;
    let stderr = std::fs::read_to_string(&err_path)?;
    check(status.success() && stdout.contains("done"), || {
        format!("the JVM failed ({status}): {stdout}{stderr}")
    })?;
    let collections = stdout.lines().filter(|l| l.contains("Pause Young")).count();

    let gc = rec
        .threads
        .iter()
        .find(|t| t.pattern == "GC Thread*")
        .ok_or("no thread selection in the recording")?;
    let e = cgroup_in(&rec, &cg)?;
    measured(format!(
        "{collections} young collections; {} GC threads; GC waits {}, throttled {} ns, contended {} ns; cgroup throttled {:.1} %: {}",
        gc.matched.len(),
        gc.wait.runnable_wait.summary.count,
        gc.wait.causes.throttled_ns,
        gc.wait.causes.contended_ns,
        share(e.wait.causes.throttled_ns, rec.duration_ns) * 100.0,
        e.verdict.kind.label()
    ));
    check(collections > 0, || {
        format!("no young collection logged: {stdout}")
    })?;
    check(
        !gc.matched.is_empty() && gc.matched.iter().all(|t| t.comm.starts_with("GC Thread")),
        || format!("matched {:?}", gc.matched),
    )?;
    check(gc.wait.causes.throttled_ns > 0, || {
        format!("the GC threads were never throttled: {:?}", gc.wait)
    })?;
    check(e.verdict.kind == Kind::QuotaExpiry, || {
        format!("verdict on the JVM's cgroup: {}", e.verdict.text)
    })?;
    Ok(Completion::Completed)
}

/// How many threads of the processes under `pid` (the shell, then the JVM it
/// execs) are in each scheduler state, e.g. `R: 2, S: 17`.
fn thread_states(pid: u32) -> String {
    let mut counts = std::collections::BTreeMap::<char, usize>::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()).collect::<Vec<_>>())
        .unwrap_or_default();
    for t in tasks {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        if let Some(state) = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()) {
            *counts.entry(state).or_default() += 1;
        }
    }
    format!("{counts:?}")
}
