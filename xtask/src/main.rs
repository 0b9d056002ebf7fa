//! Project tasks: `cargo xtask setup | run | test | vm | bench`.

mod apt;
mod bench;
mod cmd;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up, run, test and benchmark the tracer"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs needs (idempotent).
    Setup,
    /// Set up if needed, build in release and run the tracer with the given arguments.
    Run(run::Options),
    /// Run every test: unit tests and the privileged integration tests.
    Test(test::Options),
    /// Run the privileged tests on Debian's 5.10, 6.1 and 6.12 kernels under QEMU.
    Vm(vm::Options),
    /// Measure the tracer's cost per context switch (against no tracing and runqlat)
    /// and the agent's CPU and memory.
    Bench(bench::Options),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Run(options) => run::run(options),
        Task::Test(options) => test::run(options),
        Task::Vm(options) => vm::run(options),
        Task::Bench(options) => bench::run(options),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
