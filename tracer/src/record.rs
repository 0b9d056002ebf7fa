//! `tracer record`: trace until the duration ends or a signal, then report.

use std::{fs::File, io::Write as _, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, interval, sleep_until},
};

use crate::{
    cli::RecordArgs,
    report::{self, TextOptions},
    session::{Config, Session},
};

/// How often the ring buffer is drained while tracing (new-cgroup records).
const DRAIN_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    // Open the output first: a bad path should fail before tracing, not after.
    let json = args
        .json
        .as_ref()
        .map(|path| {
            File::create(path).with_context(|| format!("cannot write --json {}", path.display()))
        })
        .transpose()?;

    let mut session = Session::start(Config {
        cgroups: args.cgroups.clone(),
        pids: args.pids.clone(),
        threads: args.threads.clone(),
        max_cgroups: args.max_cgroups,
    })?;
    let attached = session.probes().iter().filter(|p| p.attached).count();
    match args.duration {
        Some(d) => eprintln!(
            "Tracing run-queue waits with {attached} probes for {:.1} s (Ctrl-C ends early)...",
            d.as_secs_f64()
        ),
        None => eprintln!("Tracing run-queue waits with {attached} probes... Ctrl-C to stop."),
    }

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut drain = interval(DRAIN_EVERY);
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
    if let (Some(mut file), Some(path)) = (json, args.json.as_ref()) {
        serde_json::to_writer_pretty(&mut file, &recording)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("Wrote {}", path.display());
    }
    Ok(())
}
