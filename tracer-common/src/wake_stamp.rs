//! Waits begun by wakeups, dated when the task is switched in rather than by
//! programs on the wakeup tracepoints.
//!
//! What a wakeup's wait needs from the moment it began is its time, the
//! CPU's busy clock and the cfs_rq's throttle clock then. Where tasks are
//! throttled rather than whole cfs_rqs (6.18+), a woken task is never
//! throttled while it waits: the scheduler picks it, it runs until its way
//! back to user mode, and only there is it throttled, switching out runnable,
//! where `sched_switch` begins its throttled wait. The throttle clock is then
//! not needed, and the other two can be had at the switch-in:
//! - the kernel stamps every enqueue (`sched_info.last_queued`, on the run
//!   queue's clock, for `/proc/<pid>/schedstat`), and keeps the stamp until
//!   the task runs; a move to another CPU stamps it again there;
//! - the CPU remembers its last runs ([`Runs`]), so the busy time since the
//!   stamp is a walk over the runs that overlap the wait, usually one or two.
//!
//! A switch-in the tracepoint does not report (see the programs' `resync.rs`)
//! leaves no stamp: the kernel clears it as the task arrives. Its wait is then
//! what the kernel's run delay grew by since the last switch-in seen, which
//! each one seen notes ([`delay_after`], [`unseen_since`]).
//!
//! So there the wakeup programs are not attached: each wakeup saves a program
//! run (about 150 ns on an AMD EPYC VM with retpolines and return thunks),
//! and the switch-in pays a few loads and a short walk. The wait is dated on
//! the same stamp as before: the wakeup programs read that run queue's clock
//! too (see `crate::clock`).

use crate::{clock::ClockOffset, maps::Runs};

/// When a task, switched in (or moved to another CPU) at `now`, was queued,
/// on the programs' clock: `stamp` is its enqueue stamp on its run queue's
/// clock, `clock` that CPU's offset and `first_switch` the first switch the
/// programs saw there.
///
/// `None` if there is no stamp (the task was not queued), no offset yet, or
/// the wait began before `first_switch`: the tracer did not see all of it, and
/// counts only waits it saw begin. Never after `now`.
#[inline(always)]
pub fn queued_since(stamp: u64, clock: &ClockOffset, now: u64, first_switch: u64) -> Option<u64> {
    if stamp == 0 {
        return None;
    }
    let at = clock.monotonic(stamp)?;
    if first_switch == 0 || at < first_switch {
        return None;
    }
    Some(if at > now { now } else { at })
}

/// The kernel's run delay once a switch-in at run-queue clock `rq_clock`
/// has been counted in it: `run_delay` now, plus the wait since `stamp`, if
/// the task was queued, which the kernel adds just after the tracepoint.
#[inline(always)]
pub fn delay_after(run_delay: u64, stamp: u64, rq_clock: u64) -> u64 {
    if stamp == 0 {
        run_delay
    } else {
        run_delay.wrapping_add(rq_clock.saturating_sub(stamp))
    }
}

/// When a wait ended by an unreported switch-in at `arrived` began: the run
/// delay grew from `delay_seen` (see [`delay_after`]) to `run_delay` by it.
/// `None` if no switch-in was seen before, or the delay did not grow as it
/// must have.
#[inline(always)]
pub fn unseen_since(arrived: u64, run_delay: u64, delay_seen: u64) -> Option<u64> {
    if delay_seen == 0 || run_delay < delay_seen {
        return None;
    }
    Some(arrived.saturating_sub(run_delay - delay_seen))
}

/// When the wait of a task queued by a wakeup the programs did not see, and
/// moved to another CPU at `left` before it ran, began; `None` if it was not
/// queued or cannot be dated.
///
/// The kernel dequeues the task for the move before `sched_migrate_task`
/// fires: it has already added the wait so far to the run delay and cleared
/// the enqueue stamp, so the stamp is no help. What the run delay grew by
/// since the last switch-in seen (`delay_seen`, see [`delay_after`]) is that
/// wait, as at an unreported switch-in ([`unseen_since`]). A task that never
/// ran (`runs`, the kernel's `sched_info.pcount`, is 0) has waited all its
/// run delay. A run delay that did not grow is a task not queued: a wakeup
/// choosing its CPU.
///
/// `first_switch` is the first switch seen on the CPU it leaves: a wait begun
/// before it is not counted, as in [`queued_since`].
#[inline(always)]
pub fn moved_since(
    left: u64,
    run_delay: u64,
    delay_seen: u64,
    runs: u64,
    first_switch: u64,
) -> Option<u64> {
    let waited = if runs == 0 {
        run_delay
    } else if delay_seen != 0 && run_delay > delay_seen {
        run_delay - delay_seen
    } else {
        return None;
    };
    let since = left.checked_sub(waited)?;
    if waited == 0 || first_switch == 0 || since < first_switch {
        return None;
    }
    Some(since)
}

/// What is known of a wait (not begun in the task's state) whose switch-in at
/// `arrived` went unreported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnseenWait {
    /// It began then.
    Since(u64),
    /// It began before the first switch seen on its CPU: like a wait whose
    /// switch-in was reported, it is not counted (see [`queued_since`]).
    BeforeTracing,
    /// Its start is unknown: a loss.
    Unknown,
}

/// [`unseen_since`], and the task's first run: `runs` is the kernel's count
/// of the task's arrivals (`sched_info.pcount`), this one included. The
/// kernel zeroes a new task's `sched_info`, so the run delay of a task on its
/// first run is the wait that run ended, whether or not a switch-in was seen
/// before (there was none). `first_switch` is the first switch seen on the
/// CPU.
#[inline(always)]
pub fn unseen_wait(
    arrived: u64,
    run_delay: u64,
    delay_seen: u64,
    runs: u64,
    first_switch: u64,
) -> UnseenWait {
    let since = if runs == 1 {
        arrived.saturating_sub(run_delay)
    } else {
        match unseen_since(arrived, run_delay, delay_seen) {
            Some(since) => since,
            None => return UnseenWait::Unknown,
        }
    };
    if first_switch == 0 || since < first_switch {
        UnseenWait::BeforeTracing
    } else {
        UnseenWait::Since(since)
    }
}

impl Runs {
    /// The busy clock ([`Runs::busy_at`]) at `then`, up to `now`: what the
    /// runs overlapping `[then, now)` add up to, the current one included,
    /// taken from the clock now. If the runs remembered do not reach back to
    /// `then`, the CPU is taken as busy all along (the charge of that wait
    /// finds the same gap, and counts it).
    #[inline(always)]
    pub fn busy_then(&self, then: u64, now: u64) -> u64 {
        let mut busy = 0u64;
        let covered = self.for_each_run(then, now, true, |_, ns| busy = busy.wrapping_add(ns));
        let since = if covered {
            busy
        } else {
            now.saturating_sub(then)
        };
        self.busy_at(now).saturating_sub(since)
    }

    /// [`Runs::busy_then`] without the walk, when at most the newest run
    /// remembered and the current one overlap `[then, now)`: a task woken
    /// while the task it then waited behind ran, or while the CPU was idle.
    /// `None` otherwise (the walk is needed).
    #[inline(always)]
    pub fn busy_then_recent(&self, then: u64, now: u64) -> Option<u64> {
        let running = self.idle == 0 && self.since != 0;
        let current = if running {
            crate::account::overlap(self.since, now, then, now)
        } else {
            0
        };
        if running && self.since <= then {
            return Some(self.busy_at(now).saturating_sub(current));
        }
        let newest = if self.head == 0 {
            0
        } else {
            let slot = (self.head as usize).wrapping_sub(1) & (crate::maps::RING - 1);
            let run = self.ring.get(slot)?;
            if run.start > then {
                return None;
            }
            crate::account::overlap(run.start, run.end, then, now)
        };
        Some(self.busy_at(now).saturating_sub(current + newest))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::maps::{Occupant, RING};

    fn offset(rq_behind: u64) -> ClockOffset {
        let mut c = ClockOffset::UNSET;
        c.sample(1_000_000 + rq_behind, 1_000_000);
        c
    }

    #[test]
    fn a_stamp_is_put_on_the_programs_clock() {
        // The run queue's clock runs 500 behind; queued at 2_000 on it.
        assert_eq!(queued_since(2_000, &offset(500), 9_000, 100), Some(2_500));
    }

    #[test]
    fn no_stamp_no_offset_or_an_early_stamp_begins_no_wait() {
        assert_eq!(
            queued_since(0, &offset(500), 9_000, 100),
            None,
            "not queued"
        );
        assert_eq!(queued_since(2_000, &ClockOffset::UNSET, 9_000, 100), None);
        assert_eq!(
            queued_since(2_000, &offset(500), 9_000, 3_000),
            None,
            "queued before the first switch seen here"
        );
        assert_eq!(
            queued_since(2_000, &offset(500), 9_000, 0),
            None,
            "no switch seen here yet"
        );
    }

    #[test]
    fn a_stamp_ahead_of_now_is_now() {
        assert_eq!(queued_since(9_000, &offset(500), 9_200, 100), Some(9_200));
    }

    #[test]
    fn a_wait_whose_switch_in_went_unreported_is_the_run_delay_it_added() {
        // Seen switched in at rq clock 5_000, queued since 4_000, with 700 of
        // run delay before: the kernel will have 1_700.
        let seen = delay_after(700, 4_000, 5_000);
        assert_eq!(seen, 1_700);
        assert_eq!(delay_after(700, 0, 5_000), 700, "not queued: nothing added");
        // Later woken, and switched in unreported at 90_000 after 300 more.
        assert_eq!(unseen_since(90_000, 2_000, seen), Some(89_700));
        assert_eq!(unseen_since(90_000, 2_000, 0), None, "none seen before");
        assert_eq!(unseen_since(90_000, 1_000, seen), None, "went back");
    }

    #[test]
    fn a_first_run_unreported_is_dated_by_its_whole_run_delay() {
        // Forked after tracing began (first switch here at 10_000), queued
        // for 400 and switched in unreported at 20_000: never seen before.
        assert_eq!(
            unseen_wait(20_000, 400, 0, 1, 10_000),
            UnseenWait::Since(19_600)
        );
        assert_eq!(
            unseen_wait(20_000, 400, 0, 2, 10_000),
            UnseenWait::Unknown,
            "ran before, unseen: what its delay was then is unknown"
        );
        assert_eq!(
            unseen_wait(10_300, 400, 0, 1, 10_000),
            UnseenWait::BeforeTracing,
            "queued before the first switch seen here"
        );
        // Seen before: the delay it added since.
        assert_eq!(
            unseen_wait(90_000, 2_000, 1_700, 5, 10_000),
            UnseenWait::Since(89_700)
        );
        assert_eq!(
            unseen_wait(90_000, 1_000, 1_700, 5, 10_000),
            UnseenWait::Unknown
        );
        assert_eq!(
            unseen_wait(90_000, 2_000, 1_700, 5, 0),
            UnseenWait::BeforeTracing,
            "no switch seen here yet"
        );
    }

    fn who(cgroup_id: u64) -> Occupant {
        Occupant {
            cgroup_id,
            ..Occupant::default()
        }
    }

    /// A CPU that ran `runs` (start, end), idle between them and since the
    /// last. Times from 10_000: 0 is "not seen yet" to [`Runs`].
    fn cpu(runs: &[(u64, u64)]) -> Runs {
        let mut cpu = Runs::default();
        for &(start, end) in runs {
            cpu.current = who(1);
            cpu.start_run(start, false);
            cpu.end_run(end);
            cpu.start_run(end, true);
        }
        cpu
    }

    #[test]
    fn the_busy_clock_then_leaves_out_the_runs_since() {
        let c = cpu(&[(10_000, 10_100), (10_200, 10_300), (10_400, 10_450)]);
        assert_eq!(c.busy_at(11_000), 250);
        // Queued at 10_250, switched in at 11_000: 50 + 50 ns of runs since.
        assert_eq!(c.busy_then(10_250, 11_000), 150);
        assert_eq!(c.busy_then(10_450, 11_000), 250, "idle all along");
        assert_eq!(c.busy_then(10_000, 11_000), 0);
    }

    #[test]
    fn the_busy_clock_then_counts_the_run_in_progress() {
        // A queued task moves away while another task runs, since 10_500.
        let mut c = cpu(&[(10_000, 10_100)]);
        c.current = who(2);
        c.start_run(10_500, false);
        assert_eq!(c.busy_at(10_800), 400);
        assert_eq!(c.busy_then(10_600, 10_800), 200);
        assert_eq!(c.busy_then(10_300, 10_800), 100);
    }

    #[test]
    fn without_a_walk_where_the_newest_runs_cover_the_wait() {
        // A task woken at 10_250 while the task that ran from 10_200 to
        // 10_300 held the CPU; switched in at 10_300.
        let c = cpu(&[(10_000, 10_100), (10_200, 10_300)]);
        assert_eq!(c.busy_then_recent(10_250, 10_300), Some(150));
        // Woken while the CPU was idle.
        assert_eq!(c.busy_then_recent(10_350, 10_400), Some(200));
        // Woken before the newest run began: the walk is needed.
        assert_eq!(c.busy_then_recent(10_150, 10_300), None);
        // A run in progress since before the wakeup.
        let mut c = cpu(&[(10_000, 10_100)]);
        c.current = who(2);
        c.start_run(10_500, false);
        assert_eq!(c.busy_then_recent(10_600, 10_800), Some(200));
    }

    #[test]
    fn with_or_without_the_walk_the_busy_clock_is_the_same() {
        // Runs of 5 every 10 from 10_000, then every instant of the last
        // 300 ns as a wait's start and end, with and without a run in
        // progress.
        let runs: std::vec::Vec<(u64, u64)> = (0..40)
            .map(|i| (10_000 + i * 10, 10_000 + i * 10 + 5))
            .collect();
        let idle = cpu(&runs);
        let mut busy = idle;
        busy.current = who(3);
        busy.start_run(10_400, false);
        let mut quick = 0;
        for c in [idle, busy] {
            for then in 10_100..10_420 {
                for now in then..10_420 {
                    if let Some(b) = c.busy_then_recent(then, now) {
                        assert_eq!(b, c.busy_then(then, now), "[{then}, {now})");
                        quick += 1;
                    }
                }
            }
        }
        assert!(quick > 500, "{quick} cases took the quick way");
    }

    #[test]
    fn beyond_the_runs_remembered_the_cpu_was_busy() {
        let runs: std::vec::Vec<(u64, u64)> = (0..RING as u64 + 4)
            .map(|i| (10_000 + i * 10, 10_000 + i * 10 + 5))
            .collect();
        let c = cpu(&runs);
        let now = 20_000;
        let busy = c.busy_at(now);
        assert_eq!(busy, (RING as u64 + 4) * 5);
        // The oldest runs are forgotten: the CPU counts as busy since then.
        assert_eq!(c.busy_then(19_990, now), busy, "covered: idle since");
        assert_eq!(c.busy_then(10_002, now), busy.saturating_sub(now - 10_002));
    }

    #[test]
    fn a_moved_wait_began_where_the_run_delay_grew_from() {
        // Seen arriving with 5 ms of run delay; dequeued for the move at
        // 10 s with 7 ms: it had waited 2 ms.
        assert_eq!(
            moved_since(10_000_000_000, 7_000_000, 5_000_000, 3, 1),
            Some(9_998_000_000)
        );
        // Never ran: its whole run delay is the wait.
        assert_eq!(
            moved_since(10_000_000_000, 1_000, 0, 0, 1),
            Some(9_999_999_000)
        );
    }

    #[test]
    fn a_move_of_a_task_not_queued_or_not_dated_begins_no_wait() {
        // A wakeup choosing the CPU: the run delay did not grow.
        assert_eq!(moved_since(10_000, 7_000, 7_000, 3, 1), None);
        // No switch-in seen to count the growth from.
        assert_eq!(moved_since(10_000, 7_000, 0, 3, 1), None);
        // A new task placed before it ever waited.
        assert_eq!(moved_since(10_000, 0, 0, 0, 1), None);
        // Begun before the first switch seen on the CPU it left, or before
        // any was seen.
        assert_eq!(moved_since(10_000, 7_000, 5_000, 3, 9_000), None);
        assert_eq!(moved_since(10_000, 7_000, 5_000, 3, 0), None);
        // A run delay larger than the clock: not a wait of this session.
        assert_eq!(moved_since(1_000, 7_000, 0, 0, 1), None);
    }
}
