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
    if options.no_vm {
        return host;
    }
    // The kernel matrix runs even when the host's tests failed: its outcomes
    // say whether a failure is this kernel's or everyone's.
    let vms = vm::run(vm::Options {
        kernel: "all".to_owned(),
        release: false,
        args: options.args,
    });
    match (host, vms) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Err(h), Err(v)) => Err(h.context(format!("and on other kernels: {v:#}"))),
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
    println!("test: cargo test --workspace");
    let mut cargo = cmd::cargo();
    cargo
        .env("TRACER_BIN", &bin)
        .args(["test", "--workspace", "--exclude", "tracer-ebpf"]);
    if !args.is_empty() {
        cargo.arg("--").args(args);
    }
    cmd::run(&mut cargo)
}
