//! Windows of time from outside the tracer, to explain with what it
//! recorded: a JVM's GC pauses (`gc_log`), or any application's slow
//! requests as a CSV of (start, end, label) (`csv`). Each is placed on the
//! recording's time axis ([`TimeBase`]), exactly where the source's clock is
//! the programs' own (`CLOCK_MONOTONIC`: the GC log's `timenanos`, a CSV's
//! nanoseconds), to the millisecond where it is the wall clock.

use serde::{Deserialize, Serialize};

pub mod csv;
pub mod explain;
pub mod gc_log;
pub mod jvm;
pub mod render;

/// A moment, by the clock a source gave it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// `CLOCK_MONOTONIC` ns: the programs' clock (`bpf_ktime_get_ns`), and
    /// Java's `System.nanoTime()`.
    Monotonic(u64),
    /// ns since the Unix epoch.
    Unix(u64),
    /// ns since the JVM started.
    Uptime(u64),
}

/// Where a recording's time axis starts, on each clock a source may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeBase {
    /// The recording's start on `CLOCK_MONOTONIC`, if known.
    pub monotonic_ns: Option<u64>,
    /// The recording's start in ns since the Unix epoch.
    pub unix_ns: u64,
    /// The JVM's start on `CLOCK_MONOTONIC`, if known (from its pid).
    pub jvm_start_monotonic_ns: Option<u64>,
}

impl TimeBase {
    /// A recording's axis: its start on the monotonic clock (absent from
    /// older dumps) and on the wall clock.
    pub fn of(rec: &crate::recording::Recording) -> Self {
        Self {
            monotonic_ns: rec.started_monotonic_ns,
            unix_ns: rec.started_unix_ns,
            jvm_start_monotonic_ns: None,
        }
    }

    /// `stamp` as ns from the recording's start (negative: before it);
    /// `None` where the base lacks that clock.
    pub fn offset(&self, stamp: Stamp) -> Option<i128> {
        let (at, base) = match stamp {
            Stamp::Monotonic(ns) => (ns, self.monotonic_ns?),
            Stamp::Unix(ns) => (ns, self.unix_ns),
            Stamp::Uptime(ns) => (
                self.jvm_start_monotonic_ns?.checked_add(ns)?,
                self.monotonic_ns?,
            ),
        };
        Some(i128::from(at) - i128::from(base))
    }
}

/// A GC pause as a dump keeps it (`gc_pauses[]`, `record --gc-log`): the
/// pause table's row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPause {
    /// When it began, from the recording's start.
    pub at_ns: u64,
    pub duration_ns: u64,
    /// `GC(n)` and what the log calls it.
    pub kind: String,
    /// The GC threads that waited in it.
    pub gc_threads: u32,
    /// Wall time in it during which at least one of them waited.
    pub stalled_ns: u64,
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_by: Option<String>,
    /// Who held their CPUs longest: `{cgroup, comm, ns}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_occupant: Option<PauseOccupant>,
    /// The GC threads' cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// [`GcPause::top_occupant`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseOccupant {
    pub cgroup: String,
    pub comm: String,
    pub ns: u64,
}

impl GcPause {
    /// Checks what the report relies on: its parts add up to its stalled
    /// time, which its length holds.
    pub fn check(&self) -> anyhow::Result<()> {
        let parts = [self.throttled_ns, self.contended_ns, self.other_ns]
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b));
        anyhow::ensure!(
            parts == Some(self.stalled_ns) && self.stalled_ns <= self.duration_ns,
            "its throttled, contended and other time do not add up to its stalled_ns {}, or \
             that exceeds its duration_ns {}",
            self.stalled_ns,
            self.duration_ns
        );
        anyhow::ensure!(
            self.at_ns.checked_add(self.duration_ns).is_some(),
            "at_ns {} + duration_ns {} overflows",
            self.at_ns,
            self.duration_ns
        );
        Ok(())
    }
}

/// A window of time on a recording's axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// ns from the recording's start (the window may begin before it).
    pub start_ns: i128,
    pub end_ns: i128,
    pub label: String,
}

impl Window {
    /// A window that ended at `end` after lasting `duration_ns`, placed by
    /// `base`; `None` where the base lacks that clock.
    pub fn ending(end: Stamp, duration_ns: u64, label: String, base: &TimeBase) -> Option<Self> {
        let end_ns = base.offset(end)?;
        Some(Self {
            start_ns: end_ns - i128::from(duration_ns),
            end_ns,
            label,
        })
    }

    /// How much of `[from, to)` (ns from the recording's start) lies in it.
    pub fn overlap(&self, from: u64, to: u64) -> u64 {
        let lo = self.start_ns.max(i128::from(from));
        let hi = self.end_ns.min(i128::from(to));
        u64::try_from(hi - lo).unwrap_or(0)
    }
}

/// The date and time at the start of `text` (`YYYY-MM-DDTHH:MM:SS`, with
/// `T`, `t` or a space between) in seconds since the Unix epoch, before any
/// offset from UTC; `None` if it does not read as a time of day.
fn civil_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_clock_is_placed_on_the_recording_axis() {
        let base = TimeBase {
            monotonic_ns: Some(10_000_000_000),
            unix_ns: 1_764_800_000_000_000_000,
            jvm_start_monotonic_ns: Some(9_000_000_000),
        };
        assert_eq!(
            base.offset(Stamp::Monotonic(10_500_000_000)),
            Some(500_000_000)
        );
        assert_eq!(
            base.offset(Stamp::Monotonic(9_500_000_000)),
            Some(-500_000_000)
        );
        assert_eq!(
            base.offset(Stamp::Unix(1_764_800_000_250_000_000)),
            Some(250_000_000)
        );
        // The JVM started 1 s before the recording.
        assert_eq!(base.offset(Stamp::Uptime(1_200_000_000)), Some(200_000_000));
        let bare = TimeBase {
            unix_ns: 1,
            ..TimeBase::default()
        };
        assert_eq!(bare.offset(Stamp::Monotonic(5)), None);
        assert_eq!(bare.offset(Stamp::Uptime(5)), None);
        assert_eq!(bare.offset(Stamp::Unix(5)), Some(4));
    }

    #[test]
    fn a_pause_is_the_window_before_its_end() {
        let base = TimeBase {
            monotonic_ns: Some(1_000),
            ..TimeBase::default()
        };
        let w = Window::ending(Stamp::Monotonic(1_500), 200, "GC(1)".into(), &base).unwrap();
        assert_eq!((w.start_ns, w.end_ns), (300, 500));
        assert_eq!(w.overlap(0, 1_000), 200);
        assert_eq!(w.overlap(400, 450), 50);
        assert_eq!(w.overlap(450, 1_000), 50);
        assert_eq!(w.overlap(500, 1_000), 0, "touching is not overlapping");
        assert_eq!(w.overlap(0, 100), 0);
    }
}
