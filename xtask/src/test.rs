//! `cargo xtask test`: every test, unit and privileged, on this machine.

use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Extra arguments for the test binaries, after `--` (e.g. a name filter).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
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
    println!("test: cargo test --workspace");
    let mut cargo = cmd::cargo();
    cargo
        .env("TRACER_BIN", &bin)
        .args(["test", "--workspace", "--exclude", "tracer-ebpf"]);
    if !options.args.is_empty() {
        cargo.arg("--").args(&options.args);
    }
    cmd::run(&mut cargo)
}
