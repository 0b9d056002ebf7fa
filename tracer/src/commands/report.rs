//! `tracer report FILE [--html OUT | --intervals]`: a dump rendered, on any
//! machine, without privileges: the terminal report `record` printed, a
//! self-contained page, or the timeline's lines.

use anyhow::Context as _;

use crate::{
    cli::ReportArgs,
    dump, html,
    report::{self, TextOptions},
    timeline::render,
    windows,
};

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let rec = dump::read(&args.file)?;
    if args.intervals {
        return super::print(&render::timeline(&rec, args.top));
    }
    match &args.html {
        Some(out) => {
            std::fs::write(out, html::render(&rec, args.top))
                .with_context(|| format!("writing {}", out.display()))?;
            super::note!("Wrote {}", out.display());
            Ok(())
        }
        None => {
            let mut text = report::render(
                &rec,
                TextOptions {
                    top: args.top,
                    ..TextOptions::default()
                },
            );
            text.push_str(&windows::render::from_files(
                &rec,
                args.gc_log.as_deref(),
                args.windows.as_deref(),
            )?);
            super::print(&text)
        }
    }
}
