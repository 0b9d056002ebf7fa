//! The flight recorder's life in the agent: a read of the maps every
//! `resolution`, its interval into the [`Recorder`], and the dump a trigger
//! (or SIGUSR2) has written, holding the minutes before it.

use std::{collections::VecDeque, time::Instant};

use super::{config, metrics::RecorderStats};
use crate::{
    recording::Recording,
    sample::Sample,
    session::Session,
    timeline::{
        rebase,
        recorder::{Fired, Recorder},
    },
};

pub struct Flight {
    pub config: config::Recorder,
    recorder: Recorder,
    /// The sample the last interval ended at.
    last: Sample,
    /// Samples a quarter of the span apart, the oldest at least the span
    /// old once there is one: where a recorder dump's aggregate starts.
    anchors: VecDeque<Sample>,
    /// A trigger met, and when its dump is due.
    pending: Option<(Fired, Instant)>,
    /// No trigger is acted on before this: one trigger dump per span, so
    /// that a fleet of throttled pods does not fill the dump directory.
    quiet_until: Option<Instant>,
    /// Triggers met while one was pending or in the quiet time after it.
    pub suppressed: u64,
    /// Triggers met, and trigger dumps due, since the start.
    met: u64,
    dumps: u64,
}

impl Flight {
    pub fn new(config: config::Recorder, start: Sample) -> Self {
        Self {
            recorder: Recorder::new(config.span.as_nanos() as u64, config.triggers.clone()),
            config,
            anchors: VecDeque::from([start.clone()]),
            last: start,
            pending: None,
            quiet_until: None,
            suppressed: 0,
            met: 0,
            dumps: 0,
        }
    }

    /// Reads the maps and adds the interval since the last read. Returns the
    /// trigger whose dump is due now.
    pub fn tick(&mut self, session: &mut Session) -> anyhow::Result<Option<Fired>> {
        let now = session.sample()?;
        let interval = session.interval(&now, &self.last);
        for fired in self.recorder.push(interval) {
            self.met += 1;
            // One dump at a time, one a span: what a second trigger saw is
            // in the first one's dump, or in the next.
            let quiet = self.quiet_until.is_some_and(|t| Instant::now() < t);
            if self.pending.is_some() || quiet {
                self.suppressed += 1;
            } else {
                eprintln!(
                    "tracer agent: recorder trigger \"{}\" met by {}; its dump follows in {:?}",
                    fired.rule,
                    crate::format::visible(&fired.cgroup),
                    self.config.after
                );
                self.pending = Some((fired, Instant::now() + self.config.after));
            }
        }
        let span = self.config.span.as_nanos() as u64;
        if self
            .anchors
            .back()
            .is_none_or(|a| now.elapsed_ns >= a.elapsed_ns + span / 4)
        {
            self.anchors.push_back(now.clone());
        }
        while self.anchors.len() > 1 && self.anchors[1].elapsed_ns + span <= now.elapsed_ns {
            self.anchors.pop_front();
        }
        self.last = now;
        let due = self
            .pending
            .as_ref()
            .is_some_and(|(_, at)| Instant::now() >= *at);
        Ok(if due {
            self.dumps += 1;
            self.quiet_until = Some(Instant::now() + self.config.span);
            self.pending.take().map(|(f, _)| f)
        } else {
            None
        })
    }

    /// The recorder's dump, up to its last read: the aggregate from the
    /// oldest anchor (up to a quarter of the span before the intervals
    /// kept), and the intervals, counted from that anchor.
    pub fn recording(&self, session: &mut Session, fired: Option<Fired>) -> Recording {
        let anchor = self.anchors.front().unwrap_or(&self.last);
        let offset = anchor.elapsed_ns;
        let mut rec = session.recording(&self.last, Some(anchor));
        rec.intervals = rebase(self.recorder.since(offset), offset);
        rec.trigger = fired.map(|mut f| {
            f.at_ns = f.at_ns.saturating_sub(offset);
            f
        });
        rec
    }

    /// What it holds and has done, for `/metrics`.
    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            bytes: self.recorder.heap_bytes(),
            triggers: self.met,
            dumps: self.dumps,
        }
    }
}
