//! `cargo xtask vm`: the privileged tests on other kernels. Each of Debian's
//! 5.10, 6.1 and 6.12 kernels boots under QEMU with an initramfs holding the
//! `tracer` binary, the privileged test binary and busybox; the guest runs the
//! tests and reports on a second serial port; the host prints every test's
//! outcome per kernel and a matrix, and fails if any kernel failed a test or did
//! not report.

mod initramfs;
mod kernels;
mod qemu;
mod results;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use crate::{cmd, setup};
use results::{GuestReport, Outcome, Row};

#[derive(Args, Clone)]
pub struct Options {
    /// Which kernel to boot: 5.10, 6.1, 6.12 or all.
    #[arg(long, default_value = "all", value_parser = ["5.10", "6.1", "6.12", "all"])]
    pub kernel: String,
    /// Build the binaries in release instead of debug.
    #[arg(long)]
    pub release: bool,
    /// Arguments for the test binary in the guests, after `--` (e.g. a name
    /// filter); they replace the default selection (`VM_TESTS`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// The privileged tests the guests run by default, each on its own (so that a
/// test that crashes or hangs costs only itself). They are the ones whose result
/// depends on the kernel: the wait split and attribution against `cpu.stat` and
/// schedstat (the throttle model and struct layouts differ per kernel), and the
/// CLI's loading, attaching and detaching of the programs. The JVM, Chromium and
/// Prometheus tests are included to show that they report ignored (their
/// programs are not in the initramfs) rather than fail. The dump round trips
/// are cheap (seconds) and check reading as `nobody`; the agent's churn and
/// life-cycle tests take about 100 s per kernel under emulation and exercise
/// kernel-dependent map operations (batched lookup-and-delete, eviction). The
/// loss tests check that each map too small is counted on every kernel (on
/// 5.10 the thread map is the one the tracer really uses there). Left out:
/// the verdict tests, whose figures are wake-up latencies that emulation
/// does not keep (and whose database is not in the initramfs). About 4
/// minutes per kernel; a new test joins the list once it is known to fit in
/// CI's time under emulation.
const VM_TESTS: &[&str] = &[
    // waits.rs
    "two_busy_cgroups_sharing_a_cpu_each_wait_half_the_time",
    "traced_wait_matches_schedstat_run_delay",
    "waits_that_migrate_still_match_schedstat_and_stay_contended",
    // attribution.rs
    // (each on both tiers: the guests allow fentry)
    "quota_only_is_throttled_80_percent_and_matches_cpu_stat_on_tracepoints",
    "quota_only_is_throttled_80_percent_and_matches_cpu_stat_on_fentry",
    "contention_only_is_contended_half_and_blames_the_other_cgroup_on_tracepoints",
    "contention_only_is_contended_half_and_blames_the_other_cgroup_on_fentry",
    "quota_and_neighbour_split_into_throttled_and_contended_on_tracepoints",
    "quota_and_neighbour_split_into_throttled_and_contended_on_fentry",
    "a_parent_quota_throttles_the_child_as_cpu_stat_local_says_on_tracepoints",
    "a_parent_quota_throttles_the_child_as_cpu_stat_local_says_on_fentry",
    "bursts_throttled_below_the_average_quota_are_flagged",
    // cli.rs
    "cli_record_writes_the_json_report",
    "sigint_ends_the_session_and_detaches",
    "sigterm_ends_the_session_and_detaches",
    "unknown_cgroup_is_refused_before_tracing",
    "unprivileged_run_says_it_needs_root",
    // dump.rs
    "a_recorded_dump_reports_the_same_without_root",
    "a_redacted_dump_names_no_cgroup_or_host",
    // agent.rs
    "agent_memory_and_series_stay_bounded_under_cgroup_churn",
    "agent_lock_signals_dumps_and_a_clean_exit",
    // losses.rs
    "a_full_cgroup_map_counts_its_losses",
    "a_full_blame_map_counts_its_losses",
    "a_full_selection_map_counts_its_losses",
    "a_small_ring_buffer_counts_its_drops",
    "a_full_thread_map_counts_its_losses",
    // Programs the initramfs lacks: these must report ignored.
    "jvm_gc_threads_under_a_quota_are_throttled",
    "the_html_report_renders_in_chromium",
    "agent_series_hold_the_expected_values_in_prometheus",
];

/// The guest kills one invocation of the test binary after this long: each
/// test takes seconds to tens of seconds under emulation.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Boot, unpacking the initramfs and the mounts, under emulation.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);
/// What a whole boot may take on top of the boot: a hung kernel must not hold
/// CI for each test's full timeout in turn.
const RUN_ALLOWANCE: Duration = Duration::from_secs(12 * 60);

pub fn run(options: Options) -> anyhow::Result<()> {
    let rows = run_matrix(options)?;
    let bad: Vec<String> = rows.iter().filter_map(problem).collect();
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    Ok(())
}

/// What went wrong in one guest, in one line: which kernel, and which tests
/// failed or did not report (or why the guest itself did not).
pub fn problem(row: &results::Row) -> Option<String> {
    if row.verdict.starts_with("ok") {
        return None;
    }
    Some(if row.not_ok.is_empty() {
        format!("the {} guest: {}", row.kernel, row.verdict)
    } else {
        format!(
            "the {} guest ({}): {}",
            row.kernel,
            row.verdict,
            row.not_ok.join(", ")
        )
    })
}

/// Boots every kernel asked for and runs the plan in each: a row per kernel.
pub fn run_matrix(options: Options) -> anyhow::Result<Vec<results::Row>> {
    setup::ensure()?;
    setup::apt_packages(
        &["qemu-system-x86", "busybox-static", "cpio"],
        "to boot other kernels for the privileged tests (QEMU, the guests' busybox, the initramfs)",
    )?;
    let vm_dir = cmd::workspace_root().join("target/vm");
    let series: Vec<kernels::Series> = kernels::SERIES
        .into_iter()
        .filter(|s| options.kernel == "all" || options.kernel == s.name)
        .collect();
    let (tracer, tests) = build(options.release)?;
    let plan = plan(&tests, &options.args)?;
    if plan.invocations.is_empty() {
        return Ok(Vec::new());
    }
    let kernels = kernels::fetch(&vm_dir, &series)?;
    let initrd = initramfs::build(&vm_dir, "initramfs.cpio.gz", &tracer, &tests, &plan)?;
    let size = std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0);
    println!(
        "vm: initramfs {} ({:.1} MiB): busybox, tracer, privileged tests, their libraries; {} invocation(s)",
        initrd.display(),
        size as f64 / 1048576.0,
        plan.invocations.len()
    );

    let mut rows = Vec::new();
    let binaries = Binaries {
        tracer: &tracer,
        tests: &tests,
    };
    for kernel in &kernels {
        rows.push(boot(&vm_dir, kernel, &initrd, &plan, &binaries)?);
    }
    println!();
    println!(
        "vm: matrix (QEMU {}, 2 vCPUs, 2 GiB; cgroup mode in the guests):",
        qemu::ACCELERATOR
    );
    print!("{}", results::matrix(&rows));
    Ok(rows)
}

/// Builds `tracer` and the privileged test binary and returns their paths.
fn build(release: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    println!(
        "vm: cargo build {}-p tracer",
        if release { "--release " } else { "" }
    );
    cmd::run(cmd::cargo().args(["build", "-p", "tracer"]).args(profile))?;
    let tracer = cmd::workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("tracer");
    println!("vm: cargo test -p tracer-tests --test privileged --no-run");
    let out = cmd::checked_output(
        cmd::cargo()
            .args([
                "test",
                "-p",
                "tracer-tests",
                "--test",
                "privileged",
                "--no-run",
                "--message-format=json",
            ])
            .args(profile),
    )?;
    let tests = test_executable(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| anyhow!("cargo named no executable for the privileged tests"))?;
    Ok((tracer, tests))
}

/// The `executable` of the `privileged` test target in cargo's JSON messages.
fn test_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "privileged")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// One invocation per test of `VM_TESTS` (checked against the binary's list,
/// so that a renamed test is noticed here rather than silently not run), or
/// one with the user's arguments if they select any test (none: no boot).
fn plan(tests: &Path, args: &[String]) -> anyhow::Result<initramfs::Plan> {
    let listed = list(tests, args)?;
    let invocations = if !args.is_empty() {
        if listed.is_empty() {
            println!("vm: no privileged test matches {}", args.join(" "));
            Vec::new()
        } else {
            vec![args.to_vec()]
        }
    } else {
        let unknown: Vec<&str> = VM_TESTS
            .iter()
            .copied()
            .filter(|t| !listed.iter().any(|l| l == t))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "VM_TESTS in xtask/src/vm.rs names tests the binary does not have: {}",
                unknown.join(", ")
            );
        }
        VM_TESTS
            .iter()
            .map(|t| vec!["--exact".to_owned(), (*t).to_owned()])
            .collect()
    };
    Ok(initramfs::Plan {
        invocations,
        timeout_s: TEST_TIMEOUT.as_secs(),
    })
}

/// The names of the tests the binary would run with `args`.
fn list(tests: &Path, args: &[String]) -> anyhow::Result<Vec<String>> {
    let out = cmd::checked_output(std::process::Command::new(tests).args(args).arg("--list"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// The binaries the guests run, for a second initramfs.
struct Binaries<'a> {
    tracer: &'a Path,
    tests: &'a Path,
}

/// Boots one kernel, prints its tests' outcomes and returns its matrix row.
///
/// A guest that dies of an emulation crash (see [`emulation_crash`]) is booted
/// once more for the tests it did not finish, and says so; any other death,
/// and a second crash, fail.
fn boot(
    vm_dir: &Path,
    kernel: &kernels::Kernel,
    initrd: &Path,
    plan: &initramfs::Plan,
    binaries: &Binaries,
) -> anyhow::Result<Row> {
    let dir = vm_dir.join(kernel.series.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (outcome, mut report) = boot_once(&dir, kernel, initrd, plan)?;
    let mut verdict = verdict(&report, &outcome.exit);
    let mut seconds = outcome.elapsed.as_secs_f64();
    let mut note = String::new();
    if verdict.starts_with("did not report")
        && let Some(crash) = emulation_crash(&qemu::tail(&outcome.console, usize::MAX))
    {
        let again = report.interrupted();
        println!(
            "vm: {}: the guest kernel crashed on a breakpoint of its own live code \
             patching ({crash}); QEMU's multi-threaded emulation can miss such patching, \
             which attaching and detaching programs does. Console log kept as {}. \
             Booting once more for the {} test(s) it did not finish.",
            kernel.series.name,
            keep_log(&outcome.console, "crash")?.display(),
            again.len()
        );
        let rerun = initramfs::Plan {
            invocations: again
                .iter()
                .map(|t| vec!["--exact".to_owned(), t.clone()])
                .collect(),
            timeout_s: plan.timeout_s,
        };
        let image = initramfs::build(
            vm_dir,
            "initramfs-rerun.cpio.gz",
            binaries.tracer,
            binaries.tests,
            &rerun,
        )?;
        let (second, second_report) = boot_once(&dir, kernel, &image, &rerun)?;
        verdict = self::verdict(&second_report, &second.exit);
        seconds += second.elapsed.as_secs_f64();
        report.replace(second_report);
        if verdict == "ok" {
            verdict = match report.failed() {
                0 => "ok".to_owned(),
                _ => "FAILED".to_owned(),
            };
        }
        note = format!(" (rerun after an emulation crash: {crash})");
        if verdict != "ok" {
            print_kernel_messages(&second.console, verdict.starts_with("did not report"));
        }
    } else if verdict != "ok" {
        print_kernel_messages(&outcome.console, verdict.starts_with("did not report"));
    }

    println!(
        "vm: {}: guest kernel {}, cgroup {}, {seconds:.0} s from boot to exit{note}",
        kernel.series.name,
        report.release.as_deref().unwrap_or("(not reported)"),
        report.cgroup_mode(),
    );
    print_outcomes(&report);
    if verdict != "ok" {
        println!("vm: {}: {verdict}", kernel.series.name);
    }
    Ok(Row {
        kernel: kernel.series.name.to_owned(),
        release: report.release.clone().unwrap_or_else(|| "?".to_owned()),
        cgroup: report.cgroup_mode(),
        passed: report.passed(),
        failed: report.failed(),
        ignored: report.ignored(),
        not_run: report.not_run(),
        not_ok: report.not_ok(),
        seconds,
        verdict: if note.is_empty() || verdict != "ok" {
            verdict
        } else {
            "ok (rerun)".to_owned()
        },
    })
}

/// Boots `kernel` with `initrd` and reads what its guest reported.
fn boot_once(
    dir: &Path,
    kernel: &kernels::Kernel,
    initrd: &Path,
    plan: &initramfs::Plan,
) -> anyhow::Result<(qemu::Outcome, GuestReport)> {
    println!();
    println!(
        "vm: booting {} ({} from {}) under QEMU {}; console log in {}",
        kernel.series.name,
        kernel.package,
        kernel.series.suite,
        qemu::ACCELERATOR,
        dir.join("console.log").display()
    );
    let outcome = qemu::run(&qemu::Boot {
        kernel: &kernel.vmlinuz,
        initrd,
        dir,
        timeout: BOOT_ALLOWANCE + RUN_ALLOWANCE,
    })?;
    let stream = std::fs::read(&outcome.results)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut report = results::parse(&stream);
    report.add_not_run(&planned(plan));
    Ok((outcome, report))
}

/// Copies a console log aside (the next boot overwrites it).
fn keep_log(console: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let kept = console.with_extension(format!("{suffix}.log"));
    std::fs::copy(console, &kept).with_context(|| format!("keeping {}", console.display()))?;
    Ok(kept)
}

/// The kernel's oops line if the guest died of a breakpoint trap (`int3`) in
/// kernel code: the kernel patches its own code through a temporary `int3`
/// whenever a program is attached or detached (static keys, trampolines), and
/// under QEMU's multi-threaded TCG a vCPU can still execute the stale
/// breakpoint after the patch completed. Seen about once in five runs of the
/// 6.12 guest; a bug of the tracer's programs would not look like this.
fn emulation_crash(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.contains("Oops: int3") || (l.contains("int3: ") && l.contains("[#")))
        .map(|l| {
            l.split_once("] ")
                .map_or(l, |(_, rest)| rest)
                .trim()
                .to_owned()
        })
}

/// Each invocation as the guest echoes its arguments, and the name to report
/// it under if it never starts.
fn planned(plan: &initramfs::Plan) -> Vec<(String, String)> {
    plan.invocations
        .iter()
        .map(|args| {
            let name = match args.as_slice() {
                [exact, name] if exact == "--exact" => name.clone(),
                _ => format!("(privileged {})", args.join(" ")),
            };
            (args.join(" "), name)
        })
        .collect()
}

/// `ok`, `FAILED`, or `did not report: <why>`: a guest counts as passed only if
/// it got to the end, said so through isa-debug-exit, and no test failed.
fn verdict(report: &GuestReport, exit: &qemu::Exit) -> String {
    if let Some(why) = &report.setup_failed {
        return format!("did not report: the guest's /init failed: {why}");
    }
    match exit {
        qemu::Exit::TimedOut(after) => {
            return format!(
                "did not report: killed after {} s (hard timeout)",
                after.as_secs()
            );
        }
        qemu::Exit::Other(code) => {
            return format!(
                "did not report: guest died (QEMU exit status {}, not isa-debug-exit)",
                code.map_or("none".to_owned(), |c| c.to_string())
            );
        }
        qemu::Exit::Passed | qemu::Exit::Failed => {}
    }
    if report.done.is_none() {
        return "did not report: no end marker on the results port".to_owned();
    }
    if report.tests.is_empty() {
        return "did not report: no test ran".to_owned();
    }
    if report.failed() > 0 || *exit == qemu::Exit::Failed || report.done != Some(0) {
        return "FAILED".to_owned();
    }
    "ok".to_owned()
}

fn print_outcomes(report: &GuestReport) {
    for t in &report.tests {
        match &t.outcome {
            Outcome::Passed => println!("  ok       {}", t.name),
            Outcome::Ignored(reason) => println!("  ignored  {}: {reason}", t.name),
            Outcome::NotRun => println!("  not run  {} (the guest stopped before it)", t.name),
            Outcome::Failed(msg) => {
                println!("  FAILED   {}", t.name);
                for line in msg.lines() {
                    println!("             {line}");
                }
            }
        }
    }
}

/// The kernel's complaints (the console is `quiet`: warnings and worse), or
/// the console's tail when the guest did not report.
fn print_kernel_messages(console: &Path, tail: bool) {
    if tail {
        println!("vm: last lines of {}:", console.display());
        for line in qemu::tail(console, 40).lines() {
            println!("  console| {line}");
        }
        return;
    }
    let text = qemu::tail(console, usize::MAX);
    let noteworthy: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                "WARNING:",
                "BUG:",
                "Oops",
                "Call Trace",
                "Kernel panic",
                // Functions in traces; not "bpf", which the LSM list at boot has.
                "bpf_",
                "BPF:",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .take(40)
        .collect();
    if !noteworthy.is_empty() {
        println!("vm: kernel messages in {}:", console.display());
        for line in noteworthy {
            println!("  console| {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_executable_comes_from_cargo_json() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"tracer"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"privileged"},"executable":"/w/target/debug/deps/privileged-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages),
            Some(PathBuf::from("/w/target/debug/deps/privileged-abc"))
        );
    }

    #[test]
    fn only_a_breakpoint_trap_in_the_kernel_counts_as_an_emulation_crash() {
        let v6_12 = "[   97.1] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[   97.1] RIP: 0010:ttwu_do_activate+0x8d/0x250\n";
        assert_eq!(
            emulation_crash(v6_12).as_deref(),
            Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI")
        );
        let v5_10 = "[   12.0] int3: 0000 [#1] SMP NOPTI\n";
        assert_eq!(
            emulation_crash(v5_10).as_deref(),
            Some("int3: 0000 [#1] SMP NOPTI")
        );
        for other in [
            "[   12.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\n[   12.0] Oops: 0000 [#1] SMP NOPTI\n",
            "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n",
            "",
        ] {
            assert_eq!(emulation_crash(other), None, "{other}");
        }
    }

    #[test]
    fn a_guest_passes_only_when_it_said_so_and_no_test_failed() {
        let passed = results::parse("@@vm run x\ntest a ... ok\n@@vm exit 0\n@@vm done 0\n");
        assert_eq!(verdict(&passed, &qemu::Exit::Passed), "ok");
        assert!(verdict(&passed, &qemu::Exit::Other(Some(0))).starts_with("did not report"));
        assert!(
            verdict(&passed, &qemu::Exit::TimedOut(Duration::from_secs(5)))
                .starts_with("did not report")
        );
        let unfinished = results::parse("@@vm run x\ntest a ... ok\n");
        assert!(verdict(&unfinished, &qemu::Exit::Passed).starts_with("did not report"));
        let failed = results::parse("test a ... FAILED\n@@vm done 1\n");
        assert_eq!(verdict(&failed, &qemu::Exit::Failed), "FAILED");
        assert_eq!(verdict(&passed, &qemu::Exit::Failed), "FAILED");
    }
}
