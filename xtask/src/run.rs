//! `cargo xtask run -- <tracer arguments>`.

use std::process::Command;

use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Arguments for the tracer, after `--` (e.g. `-- record --duration 10s`).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    let bin = build_release()?;
    let args = if options.args.is_empty() {
        vec!["record".to_owned()]
    } else {
        options.args
    };
    println!("run: {} {}", bin.display(), args.join(" "));
    cmd::run(Command::new(&bin).args(&args))
}

/// Builds the tracer in release and returns its path.
pub fn build_release() -> anyhow::Result<std::path::PathBuf> {
    println!("build: cargo build --release -p tracer");
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "tracer"]))?;
    Ok(cmd::workspace_root().join("target/release/tracer"))
}
