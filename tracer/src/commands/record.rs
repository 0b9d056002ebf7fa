//! `tracer record`: trace until the duration ends or a signal, then report.

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, interval_at, sleep_until},
};

use super::note;
use crate::{
    cli::RecordArgs,
    dump,
    filter::{CgroupFilter, Selector},
    redact,
    report::{self, TextOptions},
    sample::Sample,
    session::{self, Config, Session},
    stall,
    timeline::{self, Interval, Timeline, render},
    windows,
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

    // With a GC log, every wait of the JVM's stop-the-world threads is sent,
    // however short: what held up each pause.
    let mut threads = args.threads.clone();
    if args.gc_log.is_some() {
        for pattern in windows::render::GC_THREAD_PATTERNS {
            if !threads.iter().any(|t| t == pattern) {
                threads.push((*pattern).to_owned());
            }
        }
    }
    let plan = Session::prepare(Config {
        filter: CgroupFilter {
            include: (args.cgroups.iter().cloned().map(Selector::Path))
                .chain(args.pods.iter().cloned())
                .chain(args.namespaces.iter().cloned())
                .chain(args.containers.iter().cloned())
                .collect(),
            ..CgroupFilter::default()
        },
        pods_log_dir: args.pods_log_dir.clone(),
        pids: args.pids.clone(),
        threads,
        max_cgroups: args.max_cgroups,
        map_sizes: args.map_sizes.clone(),
        store: args.store,
        left_out: Vec::new(),
        tier: args.tier,
        slower: args.slower,
        // A pause's GC threads may wait thousands of times a second.
        slow_rate: if args.gc_log.is_some() {
            args.slower_rate.max(crate::stall::SELECTED_RATE)
        } else {
            args.slower_rate
        },
        slow_selected: args.gc_log.is_some(),
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
    // The timeline: a sample of the maps every `resolution`, whose
    // differences are the intervals; printed as they come with `--interval`.
    let resolution = args
        .interval
        .unwrap_or(Duration::from_nanos(timeline::DEFAULT_RESOLUTION_NS));
    let mut lines = args
        .interval
        .map(|_| Lines::new(args.top, session.started_unix_ns()));
    let mut timeline = Timeline::default();
    let mut stalls_printed = false;
    let mut last = Sample::default();
    // Ticks from the attach, so that intervals are whole and aligned with
    // the session's clock.
    let mut tick = interval_at(
        Instant::from_std(session.started()) + resolution,
        resolution,
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => break,
            _ = drain.tick() => {
                session.drain_events();
                print_stalls(&mut session, &mut stalls_printed)?;
            }
            _ = tick.tick() => match session.sample() {
                Ok(now) => {
                    let i = session.interval(&now, &last);
                    if let Some(lines) = &mut lines {
                        lines.print(&i, &session)?;
                    }
                    timeline.push(i);
                    last = now;
                }
                // The next interval covers this one's time.
                Err(e) => note!("Could not read the maps for an interval: {e:#}"),
            },
        }
    }

    let end = session.detach()?;
    print_stalls(&mut session, &mut stalls_printed)?;
    let i = session.interval(&end, &last);
    if i.duration_ns > 0 {
        if let Some(lines) = &mut lines {
            lines.print(&i, &session)?;
        }
        timeline.push(i);
    }
    let mut recording = session.recording(&end, None);
    recording.intervals = timeline.into_intervals();
    // The JVM's pauses, explained, go into the dump; a log that cannot be
    // read loses nothing else.
    if let Some(path) = &args.gc_log {
        let name = path.display().to_string();
        match windows::render::read(path, "--gc-log").and_then(|text| {
            // An uptime-only log is placed by the JVM's start: the only
            // --pid given, if the log has no pid decorator.
            let jvm = match args.pids[..] {
                [pid] => Some(pid),
                _ => None,
            };
            windows::render::gc_pause_records(&recording, &text, &name, jvm)
        }) {
            Ok(pauses) => recording.gc_pauses = pauses,
            Err(e) => note!("No GC pauses: {e:#}"),
        }
    }
    if let Some(lines) = &lines
        && lines.printed
    {
        super::print("\n")?;
    }
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
    ))?;
    // Last: the dump and the report are out whatever becomes of this file.
    match windows::render::from_files(&recording, None, args.windows.as_deref()) {
        Ok(tables) => super::print(&tables),
        Err(e) => {
            note!("No window table: {e:#}");
            Ok(())
        }
    }
}

/// `--slower`'s waits received since the last call, one line each, with a
/// header before the first.
fn print_stalls(session: &mut Session, printed: &mut bool) -> anyhow::Result<()> {
    let new = session.take_new_stalls();
    if new.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    if !*printed {
        text.push_str(&stall::header());
        *printed = true;
    }
    for s in &new {
        text.push_str(&stall::line(s, &|path: &str| {
            session.identify(path).display(path)
        }));
    }
    super::print(&text)
}

/// `--interval`'s lines: a header before the first, then each interval's.
struct Lines {
    top: usize,
    printed: bool,
    /// When the programs were attached, for the lines' clock.
    started_unix_ns: u64,
}

impl Lines {
    fn new(top: usize, started_unix_ns: u64) -> Self {
        Self {
            top,
            printed: false,
            started_unix_ns,
        }
    }

    fn print(&mut self, i: &Interval, session: &Session) -> anyhow::Result<()> {
        let mut text = String::new();
        if !self.printed {
            text.push_str(&render::header());
            self.printed = true;
        }
        let name = |path: &str| session.identify(path).display(path);
        text.push_str(&render::lines(self.started_unix_ns, i, self.top, &name));
        super::print(&text)
    }
}
