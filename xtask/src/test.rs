//! `cargo xtask test`: every test, unit and privileged, on this machine, then
//! the privileged tests on other kernels under QEMU (`cargo xtask vm`).

use clap::Args;

use crate::{cmd, setup, vm};

#[derive(Args)]
pub struct Options {
    /// Skip the privileged tests on other kernels (`cargo xtask vm`).
    #[arg(long)]
    no_vm: bool,
    /// Extra arguments for the test binaries, after `--` (e.g. a name filter);
    /// the VMs get them too.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let host = host_tests(&options.args);
    // The kernel matrix runs even when the host's tests failed: its outcomes
    // say whether a failure is this kernel's or everyone's.
    let vms = (!options.no_vm).then(|| {
        vm::run_matrix(vm::Options {
            kernel: "all".to_owned(),
            release: false,
            args: options.args,
        })
    });
    // The last lines say what failed, and where.
    let mut problems = Vec::new();
    println!();
    println!("test: summary");
    match &host {
        Ok(()) => println!("  this machine: ok"),
        Err(e) => {
            println!("  this machine: {e:#}");
            problems.push(format!("on this machine: {e:#}"));
        }
    }
    match vms {
        None => println!("  other kernels: not run (--no-vm)"),
        Some(Err(e)) => {
            println!("  other kernels: {e:#}");
            problems.push(format!("the kernel matrix: {e:#}"));
        }
        Some(Ok(rows)) => {
            for row in &rows {
                match vm::problem(row) {
                    None => println!("  {} guest: {}", row.kernel, row.verdict),
                    Some(p) => {
                        println!("  {p}");
                        problems.push(p);
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("tests failed: {}", problems.join("; "))
    }
}

fn host_tests(args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    // A real JVM for the GC-thread test, a real browser for the HTML report
    // test, a real Prometheus server (and promtool) for the agent's.
    setup::apt_packages(
        &["openjdk-17-jdk-headless", "chromium", "prometheus"],
        "for the JVM, HTML report and agent tests",
    )?;
    // The CLI tests run the real binary; build it with the tests' profile.
    println!("test: cargo build -p tracer");
    cmd::run(cmd::cargo().args(["build", "-p", "tracer"]))?;
    let bin = cmd::workspace_root().join("target/debug/tracer");
    if !cmd::is_root() {
        println!(
            "test: not root: the privileged tests will report as ignored (run as root to run them)"
        );
    }
    println!("test: cargo test --workspace --no-fail-fast");
    let mut cargo = cmd::cargo();
    cargo.env("TRACER_BIN", &bin).args([
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-fail-fast",
    ]);
    if !args.is_empty() {
        cargo.arg("--").args(args);
    }
    let (status, failed) = cmd::run_collecting(&mut cargo, failed_test)?;
    if status.success() {
        return Ok(());
    }
    if failed.is_empty() {
        // A build error, or a test binary that died: cargo said which above.
        anyhow::bail!("cargo test failed ({status}) without a failing test: see above");
    }
    anyhow::bail!("{} test(s) failed: {}", failed.len(), failed.join(", "))
}

/// The name of the test a libtest output line reports failed, if it does:
/// `test name ... [measured] FAILED`.
fn failed_test(line: &str) -> Option<String> {
    let rest = line.strip_prefix("test ")?;
    if !line.trim_end().ends_with("FAILED") || rest.starts_with("result:") {
        return None;
    }
    Some(rest.split_whitespace().next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_read_from_libtest_lines() {
        assert_eq!(
            failed_test("test quota_only_is_throttled ... [throttled 71.7 %] FAILED").as_deref(),
            Some("quota_only_is_throttled")
        );
        assert_eq!(failed_test("test a::b ... FAILED").as_deref(), Some("a::b"));
        assert_eq!(failed_test("test a ... ok"), None);
        assert_eq!(failed_test("test result: FAILED. 1 passed; 1 failed"), None);
    }
}
