//! The agent's flight recorder: the last minutes of the timeline, kept in
//! bounded memory, and the triggers that have it written when something goes
//! wrong, so that a dump holds the minutes *before* the moment, which no
//! dump started at that moment could.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{DUMP_CGROUPS, Interval, IntervalCgroup};
use crate::{filter::CgroupFilter, format::fmt_ns};

/// What a trigger watches in each interval of each cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
    /// Throttled time as a share of the interval (1.0: one thread's whole time).
    Throttled,
    Contended,
    /// All runnable wait, whatever its cause.
    Wait,
    /// The interval's p99 wait, in ns.
    P99,
}

impl Watched {
    fn value(self, c: &IntervalCgroup, duration_ns: u64) -> f64 {
        let share = |ns: u64| ns as f64 / duration_ns.max(1) as f64;
        match self {
            Self::Throttled => share(c.throttled_ns),
            Self::Contended => share(c.contended_ns),
            Self::Wait => share(c.wait_ns),
            Self::P99 => c.p99_ns as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Contended => "contended",
            Self::Wait => "wait",
            Self::P99 => "p99",
        }
    }
}

/// A cgroup's `watched` figure above `above` for `for_ns` in a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub watched: Watched,
    /// A share (0.5: half the interval) or, for `p99`, ns.
    pub above: f64,
    pub for_ns: u64,
    /// Which cgroups it watches.
    pub cgroups: CgroupFilter,
}

impl Trigger {
    /// `throttled above 50 % for 5.00 s`.
    pub fn describe(&self) -> String {
        let level = match self.watched {
            Watched::P99 => fmt_ns(self.above as u64),
            _ => format!("{:.0} %", self.above * 100.0),
        };
        format!(
            "{} above {level} for {}",
            self.watched.name(),
            fmt_ns(self.for_ns)
        )
    }
}

/// Why a recorder dump was written: which trigger, on which cgroup, when.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    /// The rule, as [`Trigger::describe`] says it.
    pub rule: String,
    pub cgroup: String,
    /// When the rule was met, from the start of the session.
    pub at_ns: u64,
}

/// The last minutes of the timeline, and the triggers watching it.
#[derive(Debug)]
pub struct Recorder {
    intervals: VecDeque<Interval>,
    /// How much time it keeps.
    span_ns: u64,
    triggers: Vec<Trigger>,
    /// (trigger, cgroup) -> how long its figure has been above, in a row.
    above_for: HashMap<(usize, String), u64>,
}

impl Recorder {
    pub fn new(span_ns: u64, triggers: Vec<Trigger>) -> Self {
        Self {
            intervals: VecDeque::new(),
            span_ns,
            triggers,
            above_for: HashMap::new(),
        }
    }

    /// Adds the next interval, whole (all its cgroups, for the triggers),
    /// keeps the [`DUMP_CGROUPS`] that waited most of it and forgets what is
    /// older than the span. Returns the triggers it met, at most one per
    /// trigger.
    pub fn push(&mut self, mut interval: Interval) -> Vec<Fired> {
        let mut fired = Vec::new();
        let d = interval.duration_ns;
        for (t, trigger) in self.triggers.iter().enumerate() {
            let mut met: Option<&IntervalCgroup> = None;
            for c in &interval.cgroups {
                if !trigger.cgroups.allows_path(&c.path) {
                    continue;
                }
                let key = (t, c.path.clone());
                if trigger.watched.value(c, d) > trigger.above {
                    let run = self.above_for.entry(key).or_default();
                    *run += d;
                    if *run >= trigger.for_ns && met.is_none() {
                        met = Some(c);
                    }
                } else {
                    self.above_for.remove(&key);
                }
            }
            // A cgroup that did not wait in this interval is not above.
            self.above_for
                .retain(|(i, path), _| *i != t || interval.cgroups.iter().any(|c| &c.path == path));
            if let Some(c) = met {
                fired.push(Fired {
                    rule: trigger.describe(),
                    cgroup: c.path.clone(),
                    at_ns: interval.end_ns(),
                });
                // Met again only after as long again.
                self.above_for.retain(|(i, _), _| *i != t);
            }
        }
        interval.trim(DUMP_CGROUPS);
        // Kept to be written, never merged: the encoded histogram is enough.
        for c in &mut interval.cgroups {
            c.hist.buckets = Vec::new();
        }
        let end = interval.end_ns();
        self.intervals.push_back(interval);
        while self
            .intervals
            .front()
            .is_some_and(|i| i.end_ns() + self.span_ns <= end)
        {
            self.intervals.pop_front();
        }
        fired
    }

    /// The intervals kept that end after `from_ns`.
    pub fn since(&self, from_ns: u64) -> Vec<Interval> {
        self.intervals
            .iter()
            .filter(|i| i.end_ns() > from_ns)
            .cloned()
            .collect()
    }

    /// Where the kept time starts (from the start of the session).
    pub fn oldest_ns(&self) -> Option<u64> {
        self.intervals.front().map(|i| i.start_ns)
    }

    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Heap bytes it holds (an upper bound of the rows' own strings and
    /// histograms): what the README's bound is checked against.
    pub fn heap_bytes(&self) -> usize {
        let row = |c: &IntervalCgroup| {
            std::mem::size_of::<IntervalCgroup>()
                + c.path.capacity()
                + c.hdr.capacity()
                + c.hist.buckets.capacity() * std::mem::size_of::<(u16, u64)>()
                + c.top_occupant
                    .as_ref()
                    .map_or(0, |o| o.cgroup.capacity() + o.comm.capacity())
        };
        self.intervals.capacity() * std::mem::size_of::<Interval>()
            + self
                .intervals
                .iter()
                .map(|i| {
                    i.cgroups.capacity().saturating_sub(i.cgroups.len())
                        * std::mem::size_of::<IntervalCgroup>()
                        + i.cgroups.iter().map(row).sum::<usize>()
                })
                .sum::<usize>()
            + self
                .above_for
                .keys()
                .map(|(_, p)| p.capacity() + 32)
                .sum::<usize>()
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
