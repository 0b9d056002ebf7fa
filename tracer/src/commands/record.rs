//! `tracer record`: trace until the duration ends or a signal, then report.

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, interval, sleep_until},
};

use super::note;
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
        dump::check_writable(path).with_context(|| format!("--output {}", path.display()))?;
    }
    // Before anything is loaded: a signal while the programs load ends the
    // session like one while tracing (the loop below sees it at once), instead
    // of killing the process half-way.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    let plan = Session::prepare(Config {
        filter: CgroupFilter::only(args.cgroups.clone()),
        pids: args.pids.clone(),
        threads: args.threads.clone(),
        max_cgroups: args.max_cgroups,
        map_sizes: args.map_sizes.clone(),
        store: args.store,
        left_out: Vec::new(),
        tier: args.tier,
    })?;
    note!("Loading the programs...");
    let mut session = plan.start()?;
    let attached = session.probes().iter().filter(|p| p.attached).count();
    match args.duration {
        Some(d) => note!(
            "Tracing run-queue waits with {attached} probes for {:.1} s (Ctrl-C ends early)...",
            d.as_secs_f64()
        ),
        None => note!("Tracing run-queue waits with {attached} probes... Ctrl-C to stop."),
    }
    note!("Probes: {}", session.tier().describe());

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
    // The dump first: whatever becomes of stdout (`| head -1`), it is kept.
    if let Some(path) = &args.output {
        if args.redact {
            let mut redacted = recording.clone();
            redact::redact(&mut redacted);
            dump::write(path, &redacted)?;
        } else {
            dump::write(path, &recording)?;
        }
        note!("Wrote {}", path.display());
    }
    super::print(&report::render(
        &recording,
        TextOptions {
            top: args.top,
            ..TextOptions::default()
        },
    ))
}
