//! Slow waits (`record --slower D`): each wait of at least D, one by one, with
//! its split and who held its CPU meanwhile. `runqslower` lists such waits
//! without their cause; these carry it.
//!
//! The programs send one record per slow wait (see the programs' `slow.rs`),
//! at most a set number per CPU a second; what the limit drops is counted
//! (`slow_waits_limited`). A session keeps at most [`MAX_STALLS`], the
//! longest, so that its dump stays bounded.

use std::{cmp::Reverse, collections::BinaryHeap, fmt::Write as _};

use anyhow::ensure;
use serde::{Deserialize, Serialize};
use tracer_common::maps::{STALL_RUNS_PARTIAL, StallRecord};

use crate::{
    format::{fmt_ns, visible},
    session::nul_terminated,
};

/// Slow waits a recording keeps at most: the longest, in time order.
pub const MAX_STALLS: usize = 10_000;

/// How many slow-wait records each CPU may send a second by default.
pub const DEFAULT_RATE: u64 = 100;
/// ... and at least, when every wait of the GC threads is sent (`--gc-log`).
pub const SELECTED_RATE: u64 = 5_000;

/// Who ran on a slow wait's CPU during it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallOccupant {
    pub cgroup: String,
    pub tgid: u32,
    pub comm: String,
    pub ns: u64,
}

/// One slow wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    /// When it began, from the session's start.
    pub at_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    /// The thread's name.
    pub comm: String,
    /// Its process's name.
    #[serde(default)]
    pub process: String,
    pub cgroup: String,
    /// The CPU it ended on.
    pub cpu: u32,
    pub wait_ns: u64,
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    /// The cgroup whose quota ran out, if it began throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_by: Option<String>,
    /// The longest runs of others on its CPU during it, by process.
    #[serde(default)]
    pub occupants: Vec<StallOccupant>,
    /// Busy time of its CPU during it beyond `occupants`.
    #[serde(default)]
    pub others_ns: u64,
    /// The CPU no longer remembered all the runs during it: `occupants`
    /// are those of its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runs_partial: bool,
}

impl Stall {
    /// A record from the programs; `start_ns` is the session's start on the
    /// programs' clock, `path` names a cgroup id.
    pub fn from_record(
        r: &StallRecord,
        start_ns: u64,
        mut path: impl FnMut(u64) -> String,
    ) -> Self {
        let occupants = r
            .occupants
            .iter()
            .filter(|o| o.ns > 0)
            .map(|o| StallOccupant {
                cgroup: path(o.cgroup_id),
                tgid: o.tgid,
                comm: nul_terminated(&o.comm),
                ns: o.ns,
            })
            .collect();
        Self {
            at_ns: r.end.saturating_sub(r.wait_ns).saturating_sub(start_ns),
            tid: r.tid,
            tgid: r.tgid,
            comm: nul_terminated(&r.comm),
            process: nul_terminated(&r.process),
            cgroup: path(r.cgroup_id),
            cpu: r.cpu,
            wait_ns: r.wait_ns,
            throttled_ns: r.throttled_ns,
            contended_ns: r.contended_ns,
            other_ns: r.other_ns,
            throttled_by: (r.throttled_by != 0).then(|| path(r.throttled_by)),
            occupants,
            others_ns: r.others_ns,
            runs_partial: r.flags & STALL_RUNS_PARTIAL != 0,
        }
    }

    /// The occupant that ran longest during it.
    pub fn top_occupant(&self) -> Option<&StallOccupant> {
        self.occupants.iter().max_by_key(|o| o.ns)
    }

    /// Checks what the report relies on: its parts add up to the wait.
    pub fn check(&self) -> anyhow::Result<()> {
        let parts = [self.throttled_ns, self.contended_ns, self.other_ns];
        let sum = parts.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        ensure!(
            sum == Some(self.wait_ns),
            "its throttled, contended and other time do not add up to its wait_ns {}",
            self.wait_ns
        );
        ensure!(
            self.at_ns.checked_add(self.wait_ns).is_some(),
            "at_ns {} + wait_ns {} overflows",
            self.at_ns,
            self.wait_ns
        );
        Ok(())
    }
}

/// The slow waits of a session, bounded: the [`MAX_STALLS`] longest, in a
/// heap whose top is the shortest kept (a host of many CPUs may send
/// thousands a second: each costs a logarithm, not a scan).
#[derive(Clone, Debug, Default)]
pub struct Stalls {
    kept: BinaryHeap<Reverse<ByWait>>,
    /// Records received but not kept (shorter than those kept).
    pub omitted: u64,
    received: u64,
}

/// A stall ordered by its wait, then by arrival.
#[derive(Clone, Debug)]
struct ByWait(u64, u64, Stall);

impl PartialEq for ByWait {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for ByWait {}
impl PartialOrd for ByWait {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByWait {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

impl Stalls {
    pub fn push(&mut self, stall: Stall) {
        self.received += 1;
        let entry = Reverse(ByWait(stall.wait_ns, self.received, stall));
        if self.kept.len() < MAX_STALLS {
            self.kept.push(entry);
            return;
        }
        self.omitted += 1;
        // Full: it replaces the shortest kept, if longer.
        if let Some(mut shortest) = self.kept.peek_mut()
            && shortest.0.0 < entry.0.0
        {
            *shortest = entry;
        }
    }

    /// The kept ones, in time order.
    pub fn sorted(&self) -> Vec<Stall> {
        let mut out: Vec<Stall> = self.kept.iter().map(|e| e.0.2.clone()).collect();
        out.sort_by_key(|s| (s.at_ns, s.tid));
        out
    }
}

/// The header of [`line`]'s columns.
pub fn header() -> String {
    format!(
        "{:>9}  {:<16} {:>7} {:>4} {:>9} {:>9} {:>9} {:>9}  {:<24} {}\n",
        "AT", "COMM", "TID", "CPU", "WAIT", "THROTTLED", "CONTENDED", "OTHER", "CGROUP", "CAUSE"
    )
}

/// One slow wait as a line: when (seconds from the start), who, how long,
/// its split, and its cause: the quota's owner, and who held the CPU most if
/// it was contended a tenth of it or more.
pub fn line(s: &Stall, name: crate::timeline::render::NameOf) -> String {
    let mut cause = String::new();
    if let Some(by) = &s.throttled_by {
        let _ = write!(cause, "throttled by {}", visible(&name(by)));
    }
    // Who ran meanwhile is the cause only of the contended part: while the
    // task was throttled, whoever ran did not keep it waiting.
    if let Some(o) = s
        .top_occupant()
        .filter(|_| s.contended_ns * 10 >= s.wait_ns)
    {
        if !cause.is_empty() {
            cause.push_str("; ");
        }
        let _ = write!(
            cause,
            "behind {} ({}, pid {}) {}",
            visible(&o.comm),
            visible(&name(&o.cgroup)),
            o.tgid,
            fmt_ns(o.ns)
        );
    }
    format!(
        "{:>8.3}s  {:<16} {:>7} {:>4} {:>9} {:>9} {:>9} {:>9}  {:<24} {}\n",
        s.at_ns as f64 / 1e9,
        visible(&s.comm),
        s.tid,
        s.cpu,
        fmt_ns(s.wait_ns),
        fmt_ns(s.throttled_ns),
        fmt_ns(s.contended_ns),
        fmt_ns(s.other_ns),
        visible(&name(&s.cgroup)),
        cause
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use tracer_common::maps::{RECORD_STALL, StallOccupant as RawOccupant};

    use super::*;

    fn comm(name: &str) -> [u8; 16] {
        let mut out = [0; 16];
        out[..name.len()].copy_from_slice(name.as_bytes());
        out
    }

    pub(crate) fn stall(at_ns: u64, wait_ns: u64) -> Stall {
        Stall {
            at_ns,
            tid: 7,
            tgid: 7,
            comm: "svc".into(),
            process: "svc".into(),
            cgroup: "/svc".into(),
            wait_ns,
            other_ns: wait_ns,
            ..Stall::default()
        }
    }

    #[test]
    fn a_record_becomes_a_stall_with_its_cause() {
        let mut r = StallRecord {
            kind: RECORD_STALL,
            cpu: 1,
            tid: 42,
            tgid: 40,
            cgroup_id: 10,
            end: 5_000_000_000,
            wait_ns: 30_000_000,
            throttled_ns: 20_000_000,
            contended_ns: 8_000_000,
            other_ns: 2_000_000,
            throttled_by: 9,
            others_ns: 1_000,
            comm: comm("GC Thread#0"),
            process: comm("java"),
            ..StallRecord::default()
        };
        r.occupants[0] = RawOccupant {
            cgroup_id: 11,
            tgid: 99,
            ns: 8_000_000,
            comm: comm("batch"),
            ..RawOccupant::default()
        };
        let path = |id| format!("/cg{id}");
        let s = Stall::from_record(&r, 1_000_000_000, path);
        assert_eq!(s.at_ns, 3_970_000_000, "began wait_ns before its end");
        assert_eq!((s.tid, s.tgid, s.cpu), (42, 40, 1));
        assert_eq!(
            (s.comm.as_str(), s.process.as_str()),
            ("GC Thread#0", "java")
        );
        assert_eq!(s.cgroup, "/cg10");
        assert_eq!(s.throttled_by.as_deref(), Some("/cg9"));
        assert_eq!(s.occupants.len(), 1, "empty slots left out");
        assert_eq!(s.top_occupant().map(|o| o.comm.as_str()), Some("batch"));
        s.check().unwrap();
        let text = line(&s, &|p: &str| p.to_owned());
        assert!(
            text.contains("throttled by /cg9; behind batch (/cg11, pid 99) 8.00 ms"),
            "{text}"
        );
        r.throttled_by = 0;
        r.flags = STALL_RUNS_PARTIAL;
        let s = Stall::from_record(&r, 1_000_000_000, path);
        assert_eq!(s.throttled_by, None);
        assert!(s.runs_partial);
    }

    #[test]
    fn a_line_shows_no_escape_sequence() {
        let mut s = stall(0, 25_000_000);
        s.comm = "\x1b]0;pwned\x07".into();
        assert!(!line(&s, &|p: &str| p.to_owned()).contains('\x1b'));
    }

    #[test]
    fn parts_that_do_not_add_up_are_refused() {
        let mut s = stall(0, 100);
        s.check().unwrap();
        s.other_ns = 99;
        assert!(s.check().is_err());
        s.other_ns = u64::MAX;
        s.throttled_ns = 2;
        assert!(s.check().is_err(), "no overflow");
    }

    #[test]
    fn a_full_session_keeps_the_longest() {
        let mut stalls = Stalls::default();
        for i in 0..MAX_STALLS as u64 {
            stalls.push(stall(i, 1_000 + i));
        }
        stalls.push(stall(1, 10));
        stalls.push(stall(2, 1_000_000));
        assert_eq!(stalls.omitted, 2);
        let kept = stalls.sorted();
        assert_eq!(kept.len(), MAX_STALLS);
        assert!(kept.iter().any(|s| s.wait_ns == 1_000_000));
        assert!(!kept.iter().any(|s| s.wait_ns == 10 || s.wait_ns == 1_000));
        assert!(
            kept.windows(2).all(|w| w[0].at_ns <= w[1].at_ns),
            "in time order"
        );
    }
}
