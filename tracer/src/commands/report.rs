//! `tracer report FILE [--html OUT]`: a dump rendered, on any machine, without
//! privileges: the terminal report `record` printed, or a self-contained page.

use anyhow::Context as _;

use crate::{
    cli::ReportArgs,
    dump, html,
    report::{self, TextOptions},
};

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let rec = dump::read(&args.file)?;
    match &args.html {
        Some(out) => {
            std::fs::write(out, html::render(&rec, args.top))
                .with_context(|| format!("writing {}", out.display()))?;
            super::note!("Wrote {}", out.display());
            Ok(())
        }
        None => super::print(&report::render(
            &rec,
            TextOptions {
                top: args.top,
                ..TextOptions::default()
            },
        )),
    }
}
