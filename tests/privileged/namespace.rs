//! The tracer in a private cgroup namespace, as an agent in a pod runs:
//! `/proc` shows it cgroup paths relative to its namespace, and the reports
//! must still name the host's.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command};

use libtest_mimic::{Completion, Trial};
use tracer_tests::{Load, TestCgroup, Worker, services::wait_for};

use crate::{Scratch, TestResult, bin, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![privileged(
        "record_and_agent_in_a_cgroup_namespace_report_host_paths",
        in_a_namespace,
    )]
}

/// A script that runs the tracer with its arguments in a new cgroup
/// namespace rooted at `home` (a cgroup that is not the host's root, so that
/// the namespace's view differs from the host's).
fn namespaced(
    scratch: &Scratch,
    home: &TestCgroup,
    tracer: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let script = scratch.0.join("in-namespace.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}/cgroup.procs' || exit 97\nexec unshare --cgroup '{}' \"$@\"\n",
            home.dir.display(),
            tracer.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// `record` and the agent, each started in a cgroup namespace rooted at a
/// test cgroup, name a hog's cgroup (a sibling of that root, `/../x` to
/// them) by its host path: in the dump, for its `--pid`, with `--cgroup`
/// given the host path, and in `/metrics`.
fn in_a_namespace() -> TestResult {
    let tracer = or_skip!(bin());
    if Command::new("unshare").arg("--help").output().is_err() {
        return Ok(Completion::ignored_with("no unshare (util-linux)"));
    }
    let (_, busy) = or_skip!(cpus());
    let scratch = Scratch::new("cgroupns")?;
    let home = TestCgroup::create("ns-home")?;
    let hogs = TestCgroup::create("ns-hogs")?;
    let hog = Worker::start(Load::Spin, &hogs, busy)?;
    let _other = Worker::start(Load::Spin, &hogs, busy)?;
    let script = namespaced(&scratch, &home, &tracer)?;

    // What the namespace shows: the hog's cgroup relative to `home`.
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && exec unshare --cgroup cat /proc/{}/cgroup",
            home.dir.display(),
            hog.pid
        ))
        .output()?;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    measured(format!(
        "the namespace shows the hog in: {}",
        shown.trim().replace('\n', " | ")
    ));
    check(shown.contains("/../"), || {
        format!("the namespace shows host paths already, nothing is tested: {shown}")
    })?;

    let out_file = scratch.file("ns.json");
    let pid = hog.pid.to_string();
    let out = Command::new(&script)
        .args([
            "record",
            "--duration",
            "2s",
            "--cgroup",
            &hogs.path,
            "--pid",
            &pid,
            "--output",
            &out_file,
        ])
        .output()?;
    check(out.status.success(), || {
        format!(
            "record in a cgroup namespace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let dump: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file)?)?;
    let paths = crate::dump_paths(&dump);
    check(paths.contains(&hogs.path.as_str()), || {
        format!("record's cgroups are {paths:?}, not {}", hogs.path)
    })?;
    check(dump["pids"][0]["cgroup"] == hogs.path.as_str(), || {
        format!("the --pid's cgroup is {}", dump["pids"][0]["cgroup"])
    })?;
    check(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        || format!("warnings: {}", String::from_utf8_lossy(&out.stderr)),
    )?;

    let agent = crate::agent(&script, &scratch, "1s", &[], true)?;
    let series = format!(
        "tracer_wait_seconds_total{{cgroup=\"{}\",cause=\"contended\"}}",
        hogs.path
    );
    let metrics = wait_for(
        "the hogs' series",
        std::time::Duration::from_secs(20),
        || agent.metrics().ok().filter(|m| m.contains(&series)),
    );
    check(metrics.is_ok(), || {
        format!(
            "the agent in a cgroup namespace has no {series}: {}",
            agent.log()
        )
    })?;
    Ok(Completion::Completed)
}
