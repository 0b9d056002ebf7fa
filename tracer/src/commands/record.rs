//! `tracer record`: trace until the duration ends or a signal, then report.

use std::fs::File;

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, interval, sleep_until},
};

use crate::{
    cli::RecordArgs,
    dump,
    filter::CgroupFilter,
    redact,
    report::{self, TextOptions},
    session::{self, Config, Session},
};

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    // A bad output path should fail before tracing, not after.
    if let Some(path) = &args.output {
        let probe = path.with_extension("probe.tmp");
        File::create(&probe)
            .with_context(|| format!("cannot write --output {}", path.display()))?;
        let _ = std::fs::remove_file(&probe);
    }

    let mut session = Session::start(Config {
        filter: CgroupFilter::only(args.cgroups.clone()),
        pids: args.pids.clone(),
        threads: args.threads.clone(),
        max_cgroups: args.max_cgroups,
        map_sizes: args.map_sizes.clone(),
        store: args.store,
        tier: args.tier,
    })?;
    let attached = session.probes().iter().filter(|p| p.attached).count();
    match args.duration {
        Some(d) => eprintln!(
            "Tracing run-queue waits with {attached} probes for {:.1} s (Ctrl-C ends early)...",
            d.as_secs_f64()
        ),
        None => eprintln!("Tracing run-queue waits with {attached} probes... Ctrl-C to stop."),
    }
    eprintln!("Probes: {}", session.tier().describe());

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut drain = interval(session::DRAIN_EVERY);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => break,
            _ = drain.tick() => session.drain_events(),
        }
    }

    let recording = session.stop()?;
    print!(
        "{}",
        report::render(
            &recording,
            TextOptions {
                top: args.top,
                ..TextOptions::default()
            }
        )
    );
    if let Some(path) = &args.output {
        let mut recording = recording;
        if args.redact {
            redact::redact(&mut recording);
        }
        dump::write(path, &recording)?;
        eprintln!("Wrote {}", path.display());
    }
    Ok(())
}
