use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use tracer::{
    cli::{Cli, Command},
    commands,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => commands::record::run(args).await,
            Command::Report(args) => commands::report::run(args),
            Command::Diff(args) => commands::diff::run(args),
            Command::Agent(args) => commands::agent::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors name files, cgroups and what a dump said.
            let shown = tracer::format::visible(&format!("{e:#}")).into_owned();
            let _ = writeln!(std::io::stderr(), "tracer: {shown}");
            ExitCode::FAILURE
        }
    }
}
