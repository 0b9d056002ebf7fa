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
            scale: false,
            online: 2,
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
    let mut failures = Failures::default();
    let (status, _) = cmd::run_collecting(&mut cargo, |line| {
        failures.read(line);
        None
    })?;
    if status.success() {
        return Ok(());
    }
    if failures.failed.is_empty() {
        // A build error, or a test binary that died: cargo said which above.
        anyhow::bail!("cargo test failed ({status}) without a failing test: see above");
    }
    anyhow::bail!(
        "{} test(s) failed: {}",
        failures.failed.len(),
        failures.summary()
    )
}

/// The failed tests in libtest output, with what each measured and why it
/// failed, so that the summary's last lines say it without scrolling back
/// (CI keeps only the tail of a long log).
#[derive(Default)]
struct Failures {
    /// Per failed test: its name, its `[measured]` figures and its message.
    failed: Vec<(String, String, String)>,
    /// The test whose message (`---- name stdout ----`) is being read.
    reading: Option<usize>,
}

/// How much of one test's figures and message the summary repeats.
const FAILURE_CHARS: usize = 600;

impl Failures {
    fn read(&mut self, line: &str) {
        if let Some((name, figures)) = failed_test(line) {
            self.failed.push((name, figures, String::new()));
            self.reading = None;
            return;
        }
        // libtest: `---- name stdout ----`; libtest-mimic: `---- name ----`.
        if let Some(header) = line.strip_prefix("---- ")
            && let Some(header) = header.strip_suffix(" ----")
        {
            let name = header.trim_end_matches(" stdout");
            self.reading = self.failed.iter().position(|f| f.0 == name);
            return;
        }
        if line == "failures:" || line.starts_with("test result:") {
            self.reading = None;
            return;
        }
        if let Some(i) = self.reading
            && !line.trim().is_empty()
        {
            let message = &mut self.failed[i].2;
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(line.trim());
        }
    }

    fn summary(&self) -> String {
        self.failed
            .iter()
            .map(|(name, figures, message)| {
                let mut s = name.clone();
                for part in [message, figures] {
                    if !part.is_empty() {
                        s.push_str(" (");
                        s.push_str(&truncate(part, FAILURE_CHARS));
                        s.push(')');
                    }
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// The name of the test a libtest output line reports failed, and what it
/// measured, if it does: `test name ... [measured] FAILED`.
fn failed_test(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("test ")?;
    if !line.trim_end().ends_with("FAILED") || rest.starts_with("result:") {
        return None;
    }
    let name = rest.split_whitespace().next()?.to_owned();
    let figures = rest
        .split_once(" ... ")
        .map(|(_, r)| r.trim_end().trim_end_matches("FAILED").trim())
        .unwrap_or_default()
        .to_owned();
    Some((name, figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_read_from_libtest_lines() {
        assert_eq!(
            failed_test("test quota_only_is_throttled ... [throttled 71.7 %] FAILED"),
            Some((
                "quota_only_is_throttled".into(),
                "[throttled 71.7 %]".into()
            ))
        );
        assert_eq!(
            failed_test("test a::b ... FAILED"),
            Some(("a::b".into(), String::new()))
        );
        assert_eq!(failed_test("test a ... ok"), None);
        assert_eq!(failed_test("test result: FAILED. 1 passed; 1 failed"), None);
    }

    #[test]
    fn the_summary_repeats_each_failure_with_its_figures_and_message() {
        let mut f = Failures::default();
        for line in [
            "test light ... [p99 2 ms: self contention] FAILED",
            "test other ... ok",
            "test quota ... FAILED",
            "",
            "failures:",
            "",
            "---- light ----",
            "light services got: self contention",
            "",
            "---- quota stdout ----",
            "thread panicked",
            "",
            "failures:",
            "    light",
            "test result: FAILED. 1 passed; 2 failed",
        ] {
            f.read(line);
        }
        assert_eq!(
            f.summary(),
            "light (light services got: self contention) ([p99 2 ms: self contention]); \
             quota (thread panicked)"
        );
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
