//! The arithmetic of a wait: how it splits into throttled, contended and other
//! time, and how contended time is charged to whoever held the CPU.
//!
//! The eBPF programs call these with values read from the kernel; the unit tests
//! replay event sequences through the same code.

use crate::{
    causes::Split,
    maps::{Interval, Occupant, RING, Runs, TaskWait, WAIT_STARTED_THROTTLED, WAIT_THROTTLE_CLOCK},
};

/// Splits `total` ns of waiting during which the hierarchy was throttled for
/// `throttled` ns and other tasks ran on the CPU for `busy` ns.
///
/// Throttled time comes first: a throttled task cannot run, whoever holds the
/// CPU. Others' running counts as contention for the rest of the wait, up to
/// `busy`. This is exact unless the CPU was busy during the throttle *and* idle
/// while the task was runnable afterwards, in which case a little wake-up
/// latency is counted as contention.
#[inline(always)]
pub fn split(total: u64, throttled: u64, busy: u64) -> Split {
    let throttled = if throttled < total { throttled } else { total };
    let rest = total - throttled;
    let contended = if busy < rest { busy } else { rest };
    Split {
        throttled,
        contended,
        other: rest - contended,
    }
}

/// Charges a segment's contended time to its occupants in proportion to how long
/// each ran: an occupant that ran `overlap` of the segment's `busy` ns is charged
/// `overlap * contended / busy`. Fixed point, so that no 128-bit division is
/// needed in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// `contended / busy` in units of 2^-20, rounded up so that charges do not
    /// fall short of the contended time by rounding.
    ratio: u64,
}

const CHARGE_SHIFT: u32 = 20;
/// Operands are capped so that `overlap * ratio` fits in 64 bits (2^43 ns is 2.4 hours).
const CHARGE_CAP: u64 = 1 << 43;

impl Charge {
    #[inline(always)]
    pub fn new(contended: u64, busy: u64) -> Self {
        let ratio = if busy == 0 || contended == 0 {
            0
        } else if contended >= busy {
            1 << CHARGE_SHIFT
        } else {
            let c = if contended > CHARGE_CAP {
                CHARGE_CAP
            } else {
                contended
            };
            let b = if busy > CHARGE_CAP { CHARGE_CAP } else { busy };
            (c << CHARGE_SHIFT).div_ceil(b)
        };
        Self { ratio }
    }

    #[inline(always)]
    pub fn of(&self, overlap: u64) -> u64 {
        let o = if overlap > CHARGE_CAP {
            CHARGE_CAP
        } else {
            overlap
        };
        (o * self.ratio) >> CHARGE_SHIFT
    }
}

/// Length of the overlap of `[a0, a1)` and `[b0, b1)`.
#[inline(always)]
pub fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    let lo = if a0 > b0 { a0 } else { b0 };
    let hi = if a1 < b1 { a1 } else { b1 };
    hi.saturating_sub(lo)
}

/// What the kernel says at a segment boundary of a wait: the task's cfs_rq, its
/// throttle clock (`S`, if the kernel has one) and the CPU's busy clock.
///
/// Plain fields, no `Option`: the kernel side copies these, and an `Option`'s
/// unused payload is uninitialised memory the verifier refuses to see read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// The cfs_rq's address: compared only, to notice a move to another cgroup.
    pub cfs_rq: u64,
    /// `S`, the cfs_rq's cumulative throttled time, if `has_throttle`.
    pub throttle: u64,
    pub has_throttle: bool,
    /// [`CpuState::busy_at`] on the segment's CPU.
    pub busy: u64,
}

/// One segment of a wait, ended: its split, the busy time it saw (for charging
/// the contended part), and whether the task changed cgroup during it (then its
/// throttled time is unknown and counted as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub split: Split,
    pub busy: u64,
    pub moved: bool,
    /// The throttle clock read less at the end than at the start (its entry
    /// in the fentry tier's map was evicted and began again): the segment's
    /// throttled time is unknown, taken as 0.
    pub clock_lost: bool,
}

impl TaskWait {
    /// Begins a wait at `now` on `cpu`. If the task's hierarchy is throttled now,
    /// `throttled` is set and `throttled_by` is the cgroup whose quota ran out (0
    /// if unknown).
    #[inline(always)]
    pub fn begin(&mut self, now: u64, cpu: u32, at: Readings, throttled: bool, throttled_by: u64) {
        self.queued_at = now;
        // Volatile: LLVM merges two adjacent zero stores into a call of
        // `memset`, which for BPF is a subprogram storing a byte at a time.
        // On every preempted task's switch (and every wakeup before 6.18)
        // that was a call, 16 turns of its loop and a return.
        // SAFETY: fields of `self`, aligned and alive.
        unsafe {
            core::ptr::write_volatile(&raw mut self.throttled_acc, 0);
            core::ptr::write_volatile(&raw mut self.contended_acc, 0);
        }
        self.begin_segment(now, cpu, at, throttled, throttled_by);
    }

    /// Begins a new segment of the wait (after a migration), keeping what the
    /// earlier ones accumulated.
    #[inline(always)]
    pub fn begin_segment(
        &mut self,
        now: u64,
        cpu: u32,
        at: Readings,
        throttled: bool,
        throttled_by: u64,
    ) {
        self.segment_start = now;
        self.cpu = cpu;
        self.busy0 = at.busy;
        self.cfs_rq = at.cfs_rq;
        self.throttle0 = at.throttle;
        self.flags = 0;
        if at.has_throttle {
            self.flags |= WAIT_THROTTLE_CLOCK;
        }
        if throttled {
            self.flags |= WAIT_STARTED_THROTTLED;
        }
        self.throttled_by = throttled_by;
    }

    /// The current segment ended at `now`, with readings `at` on its CPU.
    /// Without a throttle clock, a segment that began throttled counts as
    /// throttled throughout.
    #[inline(always)]
    pub fn end_segment(&self, now: u64, at: Readings) -> Segment {
        let total = now.saturating_sub(self.segment_start);
        let busy = at.busy.saturating_sub(self.busy0);
        let moved = at.cfs_rq != self.cfs_rq;
        let clocked = at.has_throttle && self.flags & WAIT_THROTTLE_CLOCK != 0;
        let clock_lost = !moved && clocked && at.throttle < self.throttle0;
        let throttled = if moved {
            0
        } else if at.has_throttle {
            if clocked {
                at.throttle.saturating_sub(self.throttle0)
            } else {
                0
            }
        } else if self.flags & WAIT_STARTED_THROTTLED != 0 {
            total
        } else {
            0
        };
        Segment {
            split: split(total, throttled, busy),
            busy,
            moved,
            clock_lost,
        }
    }

    /// Keeps a finished segment's throttled and contended time (after a migration).
    #[inline(always)]
    pub fn carry(&mut self, segment: Split) {
        self.throttled_acc = self.throttled_acc.wrapping_add(segment.throttled);
        self.contended_acc = self.contended_acc.wrapping_add(segment.contended);
    }

    /// Ends the wait at `now`, `last` being its last segment: the total and its
    /// split over all segments. The task is no longer waiting afterwards.
    #[inline(always)]
    pub fn finish(&mut self, now: u64, last: Split) -> (u64, Split) {
        let total = now.saturating_sub(self.queued_at);
        self.queued_at = 0;
        let throttled = self.throttled_acc.wrapping_add(last.throttled);
        let contended = self.contended_acc.wrapping_add(last.contended);
        (
            total,
            Split {
                throttled,
                contended,
                other: total.saturating_sub(throttled).saturating_sub(contended),
            },
        )
    }
}

/// When a task got its CPU, on the programs' clock (`now`), from the kernel's
/// own stamp of it (`last_arrival`, `sched_info`) on its run queue's clock,
/// which reads `rq_clock` now; within `[floor, now]`, `floor` being the last
/// switch seen on that CPU.
#[inline(always)]
pub fn arrival(now: u64, rq_clock: u64, last_arrival: u64, floor: u64) -> u64 {
    let at = now.saturating_sub(rq_clock.saturating_sub(last_arrival));
    if at < floor {
        if floor < now { floor } else { now }
    } else {
        at
    }
}

impl Runs {
    /// The busy clock at `now`: finished runs plus the current one.
    #[inline(always)]
    pub fn busy_at(&self, now: u64) -> u64 {
        if self.idle == 0 && self.since != 0 {
            self.busy_ns.wrapping_add(now.saturating_sub(self.since))
        } else {
            self.busy_ns
        }
    }

    /// Ends the current run at `now`: adds it to the busy clock and remembers it.
    /// Returns its length, or `None` if the idle task (or nothing seen yet) ran.
    #[inline(always)]
    pub fn end_run(&mut self, now: u64) -> Option<u64> {
        if self.idle != 0 || self.since == 0 {
            return None;
        }
        let ran = now.saturating_sub(self.since);
        self.busy_ns = self.busy_ns.wrapping_add(ran);
        let slot = (self.head as usize) & (RING - 1);
        if let Some(entry) = self.ring.get_mut(slot) {
            *entry = Interval {
                start: self.since,
                end: now,
                who: self.current,
            };
        }
        self.head = self.head.wrapping_add(1);
        // Closed: the busy clock no longer grows until the next run starts.
        self.since = now;
        Some(ran)
    }

    /// Starts a run at `now`: of `current` (filled in by the caller, in place, to
    /// spare the kernel's small stack a copy), or of the idle task.
    #[inline(always)]
    pub fn start_run(&mut self, now: u64, idle: bool) {
        self.since = now;
        self.idle = u32::from(idle);
    }

    /// Who ran the newest remembered run, if it began at or before `from`:
    /// then no other finished run overlaps a window `[from, to)` that ends
    /// at or after it, and that run alone holds the window's busy time (the
    /// walk of [`Runs::for_each_run`] without the current run would find it
    /// alone).
    #[inline(always)]
    pub fn sole_run(&self, from: u64) -> Option<&Occupant> {
        if self.head == 0 {
            return None;
        }
        let run = self
            .ring
            .get((self.head.wrapping_sub(1) as usize) & (RING - 1))?;
        (run.start <= from).then_some(&run.who)
    }

    /// Calls `f(occupant, ns)` for every remembered run overlapping `[from, to)`,
    /// newest first, and for the current run too if `with_current`. Returns
    /// `false` when the runs remembered do not reach back to `from` (the CPU
    /// switched more than [`RING`] times since), so part of the window is unknown.
    #[inline(always)]
    pub fn for_each_run(
        &self,
        from: u64,
        to: u64,
        with_current: bool,
        mut f: impl FnMut(&Occupant, u64),
    ) -> bool {
        if with_current && self.idle == 0 && self.since != 0 {
            let ns = overlap(self.since, to, from, to);
            if ns > 0 {
                f(&self.current, ns);
            }
        }
        let remembered = if (self.head as usize) < RING {
            self.head as usize
        } else {
            RING
        };
        for i in 0..RING {
            if i >= remembered {
                // Nothing older was ever recorded: the window is covered.
                return true;
            }
            let slot = (self.head as usize).wrapping_sub(1 + i) & (RING - 1);
            let Some(run) = self.ring.get(slot) else {
                return true;
            };
            if run.end <= from {
                return true;
            }
            let ns = overlap(run.start, run.end, from, to);
            if ns > 0 {
                f(&run.who, ns);
            }
        }
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec::Vec};

    use super::*;

    pub(crate) fn who(cgroup_id: u64, tgid: u32) -> Occupant {
        Occupant {
            cgroup_id,
            tgid,
            ..Occupant::default()
        }
    }

    /// `who` (or the idle task) starts running at `now`.
    fn run(cpu: &mut Runs, now: u64, who: Option<Occupant>) {
        if let Some(who) = who {
            cpu.current = who;
        }
        cpu.start_run(now, who.is_none());
    }

    #[test]
    fn an_unreported_switch_in_is_dated_by_the_kernels_own_stamp() {
        // The rq clock reads 5_000 now and stamped the arrival at 4_200: 800 ago.
        assert_eq!(arrival(10_000, 5_000, 4_200, 0), 9_200);
        // Never before the last switch seen on the CPU, never after now.
        assert_eq!(arrival(10_000, 5_000, 100, 9_500), 9_500);
        assert_eq!(
            arrival(10_000, 5_000, 6_000, 0),
            10_000,
            "a stamp ahead of the clock"
        );
        assert_eq!(arrival(10_000, 5_000, 4_200, 12_000), 10_000);
    }

    #[test]
    fn a_throttled_wait_whose_end_was_not_reported_keeps_its_throttled_time() {
        // A hog throttled at 1_000 (its hierarchy's clock reads 50); unthrottled
        // and switched in at 81_000 unreported (the clock reads 80_050 from then
        // on); switched out again at 101_000, when the missed end is found.
        let mut cpu = Runs::default();
        run(&mut cpu, 0, Some(who(7, 1)));
        cpu.end_run(1_000);
        run(&mut cpu, 1_000, None);
        let mut state = TaskWait::default();
        let at = |throttle, busy| Readings {
            cfs_rq: 0xc0,
            throttle,
            has_throttle: true,
            busy,
        };
        state.begin(1_000, 0, at(50, cpu.busy_at(1_000)), true, 7);
        let arrived = arrival(101_000, 900_000, 880_000, cpu.since);
        assert_eq!(arrived, 81_000);
        // The CPU's runs: idle until the arrival, the hog since.
        assert_eq!(cpu.end_run(arrived), None, "the idle task's run");
        cpu.current = who(7, 1);
        cpu.start_run(arrived, false);
        let segment = state.end_segment(arrived, at(80_050, cpu.busy_at(arrived)));
        let (total, parts) = state.finish(arrived, segment.split);
        assert_eq!(total, 80_000);
        assert_eq!(parts.throttled, 80_000);
        assert_eq!(
            cpu.end_run(101_000),
            Some(20_000),
            "the hog's run is counted"
        );
    }

    #[test]
    fn a_throttle_clock_that_went_back_is_a_lost_clock() {
        let at = |throttle| Readings {
            cfs_rq: 0xc0,
            throttle,
            has_throttle: true,
            busy: 0,
        };
        let mut state = TaskWait::default();
        state.begin(1_000, 0, at(5_000), false, 0);
        // The fentry tier's map evicted the cfs_rq: its clock began again.
        let segment = state.end_segment(2_000, at(300));
        assert!(segment.clock_lost);
        assert_eq!(segment.split.throttled, 0, "unknown, not invented");
        assert!(!state.end_segment(2_000, at(5_400)).clock_lost);
    }

    #[test]
    fn split_puts_throttling_first() {
        assert_eq!(
            split(100, 0, 100),
            Split {
                throttled: 0,
                contended: 100,
                other: 0
            }
        );
        assert_eq!(
            split(100, 80, 0),
            Split {
                throttled: 80,
                contended: 0,
                other: 20
            }
        );
        // A neighbour ran during the whole throttle and after it.
        assert_eq!(
            split(100, 60, 100),
            Split {
                throttled: 60,
                contended: 40,
                other: 0
            }
        );
        // Counters a little ahead of the wait's own clock never overflow it.
        assert_eq!(
            split(100, 130, 500),
            Split {
                throttled: 100,
                contended: 0,
                other: 0
            }
        );
        let s = split(1_000, 300, 200);
        assert_eq!(s.throttled + s.contended + s.other, 1_000);
    }

    #[test]
    fn charge_is_proportional() {
        let c = Charge::new(40, 100);
        assert_eq!(c.of(100), 40);
        assert_eq!(c.of(50), 20);
        // Rounding errs by at most a nanosecond per millisecond of overlap.
        let c = Charge::new(1_000_000, 3_000_000);
        let charged = c.of(3_000_000);
        assert!((1_000_000..=1_000_003).contains(&charged), "{charged}");
        assert_eq!(Charge::new(100, 100).of(77), 77);
        assert_eq!(Charge::new(200, 100).of(77), 77);
        assert_eq!(Charge::new(0, 100).of(100), 0);
        assert_eq!(Charge::new(5, 0).of(100), 0);
        // Long intervals do not overflow.
        let big = Charge::new(3 << 40, 4 << 40);
        assert_eq!(big.of(4 << 40), 3 << 40);
        let huge = Charge::new(u64::MAX / 2, u64::MAX);
        assert!(huge.of(u64::MAX) <= CHARGE_CAP);
    }

    #[test]
    fn overlaps() {
        assert_eq!(overlap(0, 10, 5, 20), 5);
        assert_eq!(overlap(5, 20, 0, 10), 5);
        assert_eq!(overlap(0, 10, 10, 20), 0);
        assert_eq!(overlap(0, 10, 2, 3), 1);
    }

    /// A CPU that alternates two hogs `a` and `b` every 4 ms: each waits while the
    /// other runs, and every bit of the wait is charged to the other.
    #[test]
    fn two_hogs_charge_each_other() {
        let mut cpu = Runs::default();
        let (a, b) = (who(10, 100), who(20, 200));
        let mut t = 1_000;
        run(&mut cpu, t, Some(a));
        let mut charged: BTreeMap<u64, u64> = BTreeMap::new();
        let mut contended = 0;
        let mut wait_start = t; // b waits from the start
        let mut busy0 = cpu.busy_at(t);
        for i in 0..100 {
            t += 4_000_000;
            cpu.end_run(t);
            let (waiter_runs, next_waiter) = if i % 2 == 0 { (b, a) } else { (a, b) };
            // `waiter_runs` ends its wait at t.
            let s = split(t - wait_start, 0, cpu.busy_at(t) - busy0);
            contended += s.contended;
            let charge = Charge::new(s.contended, cpu.busy_at(t) - busy0);
            let covered = cpu.for_each_run(wait_start, t, false, |occ, ns| {
                assert_ne!(occ.cgroup_id, waiter_runs.cgroup_id);
                *charged.entry(occ.cgroup_id).or_default() += charge.of(ns);
            });
            assert!(covered);
            run(&mut cpu, t, Some(waiter_runs));
            let _ = next_waiter;
            wait_start = t;
            busy0 = cpu.busy_at(t);
        }
        assert_eq!(contended, 100 * 4_000_000);
        assert_eq!(charged.values().sum::<u64>(), contended);
        assert_eq!(charged[&10], 50 * 4_000_000);
        assert_eq!(charged[&20], 50 * 4_000_000);
    }

    /// A throttled task on an otherwise idle CPU: throttled, not contended.
    #[test]
    fn throttle_on_an_idle_cpu() {
        let mut cpu = Runs::default();
        let hog = who(30, 300);
        run(&mut cpu, 0, Some(hog));
        cpu.end_run(20_000_000); // ran 20 ms, then throttled
        run(&mut cpu, 20_000_000, None); // idle for 80 ms
        let busy0 = cpu.busy_at(20_000_000);
        cpu.end_run(100_000_000);
        let s = split(80_000_000, 79_900_000, cpu.busy_at(100_000_000) - busy0);
        assert_eq!(s.throttled, 79_900_000);
        assert_eq!(s.contended, 0);
        assert_eq!(s.other, 100_000);
    }

    /// A quota-limited task sharing its CPU with a neighbour: the neighbour runs
    /// through the throttle, and only the time after it is contention.
    #[test]
    fn throttle_with_a_busy_neighbour() {
        let mut cpu = Runs::default();
        let (q, n) = (who(40, 400), who(50, 500));
        run(&mut cpu, 0, Some(q));
        cpu.end_run(10_000_000);
        // q throttled at 10 ms; n runs until 90 ms; q unthrottled at 70 ms.
        run(&mut cpu, 10_000_000, Some(n));
        let busy0 = cpu.busy_at(10_000_000);
        cpu.end_run(90_000_000);
        let busy = cpu.busy_at(90_000_000) - busy0;
        let s = split(80_000_000, 60_000_000, busy);
        assert_eq!(
            s,
            Split {
                throttled: 60_000_000,
                contended: 20_000_000,
                other: 0
            }
        );
        let charge = Charge::new(s.contended, busy);
        let mut charged = Vec::new();
        cpu.for_each_run(10_000_000, 90_000_000, false, |occ, ns| {
            charged.push((occ.tgid, charge.of(ns)))
        });
        assert_eq!(charged, [(500, 20_000_000)]);
    }

    /// Readings with a throttle clock.
    fn at(cfs_rq: u64, throttle: u64, busy: u64) -> Readings {
        Readings {
            cfs_rq,
            throttle,
            has_throttle: true,
            busy,
        }
    }

    fn parts(throttled: u64, contended: u64, other: u64) -> Split {
        Split {
            throttled,
            contended,
            other,
        }
    }

    /// A wait that migrates: each segment is split on its own CPU's clocks.
    #[test]
    fn a_wait_split_across_a_migration() {
        let mut w = TaskWait::default();
        let (rq_a, rq_b) = (0xa000, 0xb000);
        // Preempted on CPU 0 at 1 ms; its hierarchy is not throttled.
        w.begin(1_000_000, 0, at(rq_a, 500, 10_000_000), false, 0);
        // At 5 ms it migrates: CPU 0 was busy the whole 4 ms, no throttling.
        let first = w.end_segment(5_000_000, at(rq_a, 500, 14_000_000));
        assert_eq!(first.split, parts(0, 4_000_000, 0));
        w.carry(first.split);
        w.begin_segment(5_000_000, 1, at(rq_b, 7_000, 30_000_000), false, 0);
        // On CPU 1 its group is throttled for 2 ms, then the CPU is idle 1 ms.
        let last = w.end_segment(8_000_000, at(rq_b, 2_007_000, 30_000_000));
        assert_eq!(last.split, parts(2_000_000, 0, 1_000_000));
        let (total, whole) = w.finish(8_000_000, last.split);
        assert_eq!(total, 7_000_000);
        assert_eq!(whole, parts(2_000_000, 4_000_000, 1_000_000));
        assert_eq!(w.queued_at, 0);
    }

    /// A task throttled at switch-out on 6.18 waits in limbo until the period
    /// ends; the throttle clock advances by exactly that time.
    #[test]
    fn a_throttled_wait_and_a_cgroup_move() {
        let mut w = TaskWait::default();
        w.begin(0, 0, at(1, 100, 0), true, 42);
        assert_eq!(w.throttled_by, 42);
        assert!(w.flags & WAIT_STARTED_THROTTLED != 0);
        let end = w.end_segment(80_000_000, at(1, 79_500_100, 0));
        assert_eq!(end.split, parts(79_500_000, 0, 500_000));
        assert!(!end.moved);
        // Moved to another cgroup: the old clock is not read.
        let moved = w.end_segment(80_000_000, at(2, 1, 0));
        assert!(moved.moved);
        assert_eq!(moved.split.throttled, 0);
        // Without a throttle clock a wait that began throttled is throttled throughout.
        let no_clock = Readings {
            has_throttle: false,
            ..at(1, 0, 0)
        };
        let mut w = TaskWait::default();
        w.begin(0, 0, no_clock, true, 0);
        assert_eq!(w.end_segment(9, no_clock).split.throttled, 9);
    }

    #[test]
    fn ring_remembers_only_the_last_runs() {
        let mut cpu = Runs::default();
        let mut t = 1;
        for i in 0..(RING as u32 + 10) {
            run(&mut cpu, t, Some(who(1, i)));
            t += 10;
            cpu.end_run(t);
        }
        let mut seen = Vec::new();
        // The window starts before the oldest remembered run.
        let covered = cpu.for_each_run(1, t, false, |occ, ns| seen.push((occ.tgid, ns)));
        assert!(!covered);
        assert_eq!(seen.len(), RING);
        assert_eq!(seen[0].0, RING as u32 + 9, "newest first");
        // A recent window is covered, and only overlapping runs are reported.
        seen.clear();
        assert!(cpu.for_each_run(t - 25, t, false, |occ, ns| seen.push((occ.tgid, ns))));
        assert_eq!(
            seen,
            [
                (RING as u32 + 9, 10),
                (RING as u32 + 8, 10),
                (RING as u32 + 7, 5)
            ]
        );
    }

    /// A window inside the newest run is charged to that run alone, all of
    /// its contended time, as the walk charges it; a window reaching back
    /// past the newest run's start has no sole run.
    #[test]
    fn a_window_inside_the_newest_run_has_it_as_its_sole_run() {
        let mut cpu = Runs::default();
        assert!(cpu.sole_run(0).is_none(), "nothing ran yet");
        run(&mut cpu, 100, Some(who(1, 10)));
        cpu.end_run(200);
        run(&mut cpu, 200, None);
        cpu.end_run(250);
        run(&mut cpu, 250, Some(who(2, 20)));
        cpu.end_run(400);
        run(&mut cpu, 400, Some(who(3, 30)));
        for (from, to, contended) in [(250, 400, 150), (300, 400, 100), (320, 400, 60)] {
            assert_eq!(cpu.sole_run(from).map(|w| w.tgid), Some(20));
            let busy = overlap(250, 400, from, to);
            let charge = Charge::new(contended, busy);
            let mut walked = Vec::new();
            assert!(cpu.for_each_run(from, to, false, |w, ns| {
                walked.push((w.tgid, charge.of(ns)))
            }));
            assert_eq!(walked, [(20, contended)], "window [{from}, {to})");
        }
        // From inside the idle gap or earlier, older runs may overlap.
        assert!(cpu.sole_run(249).is_none());
        assert!(cpu.sole_run(150).is_none());
    }

    #[test]
    fn current_run_counts_when_asked() {
        let mut cpu = Runs::default();
        run(&mut cpu, 100, Some(who(7, 70)));
        assert_eq!(cpu.busy_at(150), 50);
        let mut seen = Vec::new();
        assert!(cpu.for_each_run(120, 150, true, |occ, ns| seen.push((occ.tgid, ns))));
        assert_eq!(seen, [(70, 30)]);
        cpu.end_run(150);
        run(&mut cpu, 150, None);
        assert_eq!(cpu.busy_at(500), 50, "idle time is not busy");
        assert_eq!(cpu.end_run(500), None);
    }
}
