//! `cargo xtask vm`: the privileged tests on other kernels. Each of Debian's
//! 5.10, 6.1 and 6.12 kernels boots under QEMU with an initramfs holding the
//! `tracer` binary, the privileged test binary and busybox; the guest runs the
//! tests and reports on a second serial port; the host prints every test's
//! outcome per kernel and a matrix, and fails if any kernel failed a test or did
//! not report.

mod guest;
mod initramfs;
mod kernels;
mod qemu;
mod results;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail};
use clap::Args;

use crate::{cmd, setup};
use guest::{Binaries, boot};

#[derive(Args, Clone)]
pub struct Options {
    /// Which kernel to boot: 5.10, 6.1, 6.12 or all.
    #[arg(long, default_value = "all", value_parser = ["5.10", "6.1", "6.12", "all"])]
    pub kernel: String,
    /// Build the binaries in release instead of debug.
    #[arg(long)]
    pub release: bool,
    /// Boot with 192 possible CPUs (2 online) and run the scale tests
    /// (`SCALE_TESTS`): per-CPU maps are sized by the possible CPUs.
    #[arg(long)]
    pub scale: bool,
    /// Online vCPUs of the guests (`-smp N`). Emulated, each takes a host
    /// thread: more than the host's cores run slower, not faster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=192))]
    pub online: u32,
    /// Arguments for the test binary in the guests, after `--` (e.g. a name
    /// filter); they replace the default selection (`VM_TESTS`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// The privileged tests every guest runs by default, each on its own (so that
/// a test that crashes or hangs costs only itself). They are the ones whose
/// result depends on what differs between kernels: the wait split and
/// attribution against `cpu.stat` and schedstat (the throttle model and
/// struct layouts differ per kernel, each tier on its own), and the losses
/// of each map too small (on 5.10 the thread map is the one the tracer
/// really uses there). The JVM, Chromium and Prometheus tests are included
/// to show that they report ignored (their programs are not in the
/// initramfs) rather than fail. Left out: the verdict tests, whose figures
/// are wake-up latencies that emulation does not keep (and whose database
/// is not in the initramfs). The oldest kernel also runs
/// `OLDEST_KERNEL_TESTS`. A new test joins a list once it is known to fit
/// in CI's time under emulation.
const VM_TESTS: &[&str] = &[
    // waits.rs
    "two_busy_cgroups_sharing_a_cpu_each_wait_half_the_time",
    "traced_wait_matches_schedstat_run_delay",
    "waits_begun_by_wakeups_match_schedstat_run_delay",
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
    // weights.rs (cpu.weight on the guests' cgroup v2)
    "contention_blame_weighs_the_occupant_as_cfs_does",
    // psi.rs: cgroups' own cpu.pressure exists on v2 only
    "a_cgroups_own_psi_is_the_kernels_in_the_recording_and_on_metrics",
    // stalls.rs
    "slow_waits_of_a_quota_name_it_and_hold_its_throttled_time_on_tracepoints",
    "slow_waits_of_a_quota_name_it_and_hold_its_throttled_time_on_fentry",
    // losses.rs
    "a_full_cgroup_map_counts_its_losses",
    "a_full_blame_map_counts_its_losses",
    "a_full_selection_map_counts_its_losses",
    "a_small_ring_buffer_counts_its_drops",
    "a_full_thread_map_counts_its_losses",
    "a_migration_unseen_counts_a_read_failure",
    "an_evicted_throttle_clock_counts_its_loss",
    // Programs the initramfs lacks: these must report ignored.
    "jvm_gc_threads_under_a_quota_are_throttled",
    "the_html_report_renders_in_chromium",
    "agent_series_hold_the_expected_values_in_prometheus",
];

/// The privileged tests only the oldest kernel (5.10) runs, after
/// `VM_TESTS`: the CLI's and the agent's life cycle, the dumps and the agent
/// under cgroup churn. They depend on the kernel through what every kernel
/// from 5.10 on has (links, batched map operations, the ring buffer), and
/// this machine's kernel runs them too, so the oldest and the newest kernel
/// bound them. Run on every guest they took 12 of CI's minutes (294 s of the
/// 6.1 guest, 400 s of the 6.12 guest, a debug build under emulation).
const OLDEST_KERNEL_TESTS: &[&str] = &[
    // cli.rs
    "cli_record_writes_the_json_report",
    "sigint_ends_the_session_and_detaches",
    "sigterm_ends_the_session_and_detaches",
    "unknown_cgroup_is_refused_before_tracing",
    "unprivileged_run_says_it_needs_root",
    "a_signal_while_loading_ends_cleanly",
    "sigkill_leaves_no_program_loaded",
    // dump.rs
    "a_recorded_dump_reports_the_same_without_root",
    "a_redacted_dump_names_no_cgroup_or_host",
    // agent.rs
    "agent_memory_and_series_stay_bounded_under_cgroup_churn",
    "agent_lock_signals_dumps_and_a_clean_exit",
    "agent_sigterm_while_loading_exits_cleanly_and_detaches",
    "agent_killed_leaves_no_program_loaded",
];

/// The default tests of a guest of `series`.
fn vm_tests(series: &str) -> Vec<&'static str> {
    let mut tests = VM_TESTS.to_vec();
    if series == kernels::SERIES[0].name {
        tests.extend_from_slice(OLDEST_KERNEL_TESTS);
    }
    tests
}

/// The tests of a guest with many possible CPUs (`--scale`): the maps'
/// kernel memory and the agent's reads with a thousand idle cgroups, and the
/// agent under cgroup churn.
const SCALE_TESTS: &[&str] = &[
    "a_thousand_idle_cgroups_cost_the_agent_no_reads_and_little_kernel_memory",
    "agent_memory_and_series_stay_bounded_under_cgroup_churn",
];

/// Possible CPUs of the `--scale` guests: as many as the biggest hosts the
/// agent is meant for.
pub const SCALE_CPUS: u32 = 192;

/// The guest kills one invocation of the test binary after this long: each
/// test takes seconds to tens of seconds under emulation, the agent's churn
/// 3 minutes on a quiet machine whose emulation is slow (3.5 minutes with 2
/// rounds of 1,000 cgroups on a faster one, with a build on the host).
const TEST_TIMEOUT: Duration = Duration::from_secs(420);
/// Boot, unpacking the initramfs and the mounts, under emulation.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);
/// What a whole boot may take on top of the boot: a hung kernel must not hold
/// CI for each test's full timeout in turn. The guests' tests take 5 to 7
/// minutes on a quiet fast machine; beside a build on a machine whose
/// emulation is slow, 15 to 17 minutes for 5.10 and 6.1, and the 6.12 guest
/// did not finish in 20.
const RUN_ALLOWANCE: Duration = Duration::from_secs(28 * 60);

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
        .filter(|s| {
            let many_cpus = !options.scale || options.kernel != "all" || s.name != "6.12";
            if !many_cpus {
                println!(
                    "vm: --scale leaves out 6.12: under QEMU it gets no hotpluggable CPUs, \
                     and from 6.9 possible_cpus= cannot add them (--kernel 6.12 boots it anyway)"
                );
            }
            many_cpus
        })
        .collect();
    let (tracer, tests) = build(options.release)?;
    let listed = list(&tests, &options.args)?;
    let plans = series
        .iter()
        .map(|s| {
            let selection = if options.scale {
                SCALE_TESTS.to_vec()
            } else {
                vm_tests(s.name)
            };
            plan(&listed, &options.args, &selection)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpus = qemu::Cpus {
        online: options.online,
        possible: options.scale.then_some(SCALE_CPUS),
    };
    if plans.iter().all(|p| p.invocations.is_empty()) {
        println!("vm: no privileged test matches {}", options.args.join(" "));
        return Ok(Vec::new());
    }
    let kernels = kernels::fetch(&vm_dir, &series)?;

    let mut rows = Vec::new();
    let binaries = Binaries {
        tracer: &tracer,
        tests: &tests,
    };
    for (kernel, plan) in kernels.iter().zip(&plans) {
        let image = format!("initramfs-{}.cpio.gz", kernel.series.name);
        let initrd = initramfs::build(&vm_dir, &image, &tracer, &tests, plan)?;
        let size = std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0);
        println!(
            "vm: initramfs {} ({:.1} MiB): busybox, tracer, privileged tests, their libraries; {} invocation(s)",
            initrd.display(),
            size as f64 / 1048576.0,
            plan.invocations.len()
        );
        rows.push(boot(&vm_dir, kernel, &initrd, plan, &binaries, cpus)?);
    }
    println!();
    println!(
        "vm: matrix (QEMU {}, {} vCPUs, 2 GiB; cgroup mode in the guests):",
        qemu::ACCELERATOR,
        cpus.online
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

/// One invocation per test of `selection` (checked against `listed`, what
/// the binary lists with `args`, so that a renamed test is noticed here
/// rather than silently not run), or one with the user's arguments if they
/// select any test (none: no boot).
fn plan(listed: &[String], args: &[String], selection: &[&str]) -> anyhow::Result<initramfs::Plan> {
    let invocations = if !args.is_empty() {
        if listed.is_empty() {
            Vec::new()
        } else {
            vec![args.to_vec()]
        }
    } else {
        let unknown: Vec<&str> = selection
            .iter()
            .copied()
            .filter(|t| !listed.iter().any(|l| l == t))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "xtask/src/vm.rs names tests the binary does not have: {}",
                unknown.join(", ")
            );
        }
        selection
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_kernel_runs_the_life_cycle_tests() {
        assert_eq!(kernels::SERIES[0].name, "5.10");
        let oldest = vm_tests("5.10");
        assert_eq!(oldest.len(), VM_TESTS.len() + OLDEST_KERNEL_TESTS.len());
        assert!(oldest.contains(&"sigkill_leaves_no_program_loaded"));
        for newer in ["6.1", "6.12"] {
            let tests = vm_tests(newer);
            assert_eq!(tests, VM_TESTS, "{newer}");
            assert!(!tests.contains(&"sigkill_leaves_no_program_loaded"));
        }
        for t in OLDEST_KERNEL_TESTS {
            assert!(!VM_TESTS.contains(t), "{t} is in both lists");
        }
    }

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
}
