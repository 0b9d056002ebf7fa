//! The scheduler tracepoint programs (see the crate's documentation) and the
//! wait state machine they drive: a wait begins, is split into segments at
//! migrations, and ends when the task is switched in. Also both objects'
//! licence and panic handler.

use crate::blame::{blame_due, charge, tracer_flush_blame};
use crate::kernel::{
    self, Direct, cfs_rq_rq, fill_occupant, has_feature, layout, read, rq_clock, rq_cpu,
    task_cfs_rq, task_pid, task_rq_clock,
};
use crate::maps::{count, cpu_state, now};
use crate::record::{record_run, record_wait};
use crate::resync::{note_first_delay, switched_in_unseen};
use crate::slow::{note_slow, report_noted};
use crate::stats::{
    NO_SELECTION, Victims, cgroup_entry, cgroup_stats, forget_selected, record_selected_run,
    selecting, selection_stats, spilled_stats, victims_of,
};
use crate::store::{self, Task};
use crate::throttle::{is_throttled, report_episode, throttle_clock, throttling_cgroup};
use aya_ebpf::{
    helpers::bpf_get_smp_processor_id, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{
    account::{Readings, split},
    causes::Split,
    layout::{
        FEATURE_EXIT_GROUP_DEAD, FEATURE_FENTRY, FEATURE_SWITCH_PREV_STATE, FEATURE_WAKE_STAMP,
    },
    maps::{CgroupStats, Counter, CpuState, TaskWait},
    wake_stamp::{delay_after, queued_since},
};

/// The kernel's `TASK_RUNNING`.
const TASK_RUNNING: u32 = 0;

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
    //          unsigned int prev_state)   -- prev_state since 5.18
    let preempt: u64 = ctx.arg(0);
    let prev: *mut Task = ctx.arg(1);
    let next: *mut Task = ctx.arg(2);
    let prev_state: u32 = if has_feature(FEATURE_SWITCH_PREV_STATE) {
        ctx.arg::<u64>(3) as u32
    } else {
        read(prev.cast(), layout!(task_state)).unwrap_or(TASK_RUNNING)
    };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(cs) = cpu_state(cpu) else {
        return 0;
    };
    let now = now();
    cs.count(Counter::Switch);
    if cs.first_switch == 0 {
        cs.first_switch = now;
        note_first_delay(prev);
    }
    // prev is on this CPU's run queue, whose clock wakeups read instead of
    // the time (see tracer_common::clock). The idle task has one too. The
    // switch itself reads the time: the scheduler may not have updated that
    // clock for it (see `now`).
    let clock = task_rq_clock(prev.cast()).unwrap_or(0);
    if clock != 0 {
        cs.clock.sample(now, clock);
    }
    let next_stamp = read::<u64>(next.cast(), layout!(task_last_queued)).unwrap_or(0);

    // The last switch reported here put another task on this CPU: prev's own
    // switch-in was not reported (see resync.rs).
    if cs.runs.task != prev as u64 && cs.runs.task != 0 {
        switched_in_unseen(prev, now, cpu, cs);
    }

    // prev's run ends.
    let prev_cgroup = cs.runs.current.cgroup_id;
    let ran = cs.runs.end_run(now);

    // A preempted task stays on the run queue whatever its state says (it may have
    // been preempted between set_current_state() and schedule()). A task that goes
    // to sleep keeps whatever wait state it had: it can only run again after a
    // wakeup, which overwrites it.
    if (preempt & 0xff != 0 || prev_state == TASK_RUNNING)
        && task_pid(prev.cast()).is_some_and(|pid| pid != 0)
    {
        begin_wait(prev, now, cpu, cs.runs.busy_at(now));
    }

    // next's run begins; the idle tasks (pid 0) are nobody.
    let next_pid = task_pid(next.cast()).unwrap_or(0);
    if blame_due(now, next_pid == 0) {
        unsafe { tracer_flush_blame() };
    }
    let kn = if next_pid == 0 {
        None
    } else {
        fill_occupant(next.cast(), &mut cs.runs.current)
    };
    cs.runs.start_run(now, kn.is_none());
    cs.runs.task = next as u64;
    let next_cgroup = cs.runs.current.cgroup_id;
    let next_stats = match kn {
        Some(kn) => cgroup_stats(next_cgroup, kn, now),
        None => None,
    };
    if let Some(ran) = ran {
        let stats = if kn.is_some() && next_cgroup == prev_cgroup {
            next_stats
        } else {
            match cgroup_entry(prev_cgroup, now) {
                Some(stats) => Some(stats),
                // Its entry could not be allocated when it was switched in.
                None => spilled_stats(prev_cgroup),
            }
        };
        if let Some(stats) = stats {
            record_run(stats, ran);
        }
        record_selected_run(prev.cast(), ran);
    }
    if let Some(stats) = next_stats {
        end_wait(next, next_pid, now, cpu, cs, stats, (next_stamp, clock));
    }
    0
}

/// Starts a wait of `task` on `cpu` at `now`, `busy` being that CPU's busy clock.
#[inline(always)]
fn begin_wait(task: *mut Task, now: u64, cpu: u32, busy: u64) {
    let Some(state) = (unsafe { store::wait_or_new(task) }) else {
        storage_failed();
        return;
    };
    let t: *const u8 = task.cast();
    let cfs_rq = task_cfs_rq(t).unwrap_or(core::ptr::null());
    let throttled = is_throttled::<Direct>(t, cfs_rq);
    let by = if throttled {
        throttling_cgroup(t, cpu)
    } else {
        0
    };
    unsafe { &mut *state }.begin(
        now,
        cpu,
        readings::<Direct>(cfs_rq, now, busy),
        throttled,
        by,
    );
}

/// The segment-boundary readings of `cfs_rq` (read with `R`) at `now` and a
/// busy clock.
#[inline(always)]
pub(crate) fn readings<R: kernel::Reader>(cfs_rq: *const u8, now: u64, busy: u64) -> Readings {
    let clock = throttle_clock::<R>(cfs_rq, now);
    Readings {
        cfs_rq: cfs_rq as u64,
        throttle: clock.unwrap_or(0),
        has_throttle: clock.is_some(),
        busy,
    }
}

/// Ends the current segment at `now` on CPU state `cs`, the task being queued
/// on `cfs_rq` now: splits it, charges its contended time to whoever ran,
/// reports a throttle episode it ended.
#[inline(always)]
pub(crate) fn end_segment(
    state: &TaskWait,
    cfs_rq: *const u8,
    now: u64,
    cs: &CpuState,
    with_current: bool,
    victims: Victims,
) -> Split {
    let segment = state.end_segment(now, readings::<Direct>(cfs_rq, now, cs.runs.busy_at(now)));
    if segment.moved {
        // Moved to another cgroup while waiting: the old cfs_rq may be gone.
        count(Counter::CgroupMoved);
    }
    if segment.clock_lost {
        count(Counter::ThrottleClockLost);
    }
    let parts = segment.split;
    if parts.contended > 0 {
        charge(
            state.segment_start,
            state.cpu,
            &cs.runs,
            now,
            parts.contended,
            segment.busy,
            with_current,
            victims,
        );
    }
    // The fentry tier reports episodes as they end, all of them.
    if parts.throttled > 0 && !has_feature(FEATURE_FENTRY) {
        report_episode(state, cfs_rq, parts.throttled, now, victims.cgroup);
    }
    parts
}

/// The wait state of `task`, switched in or moved; created if `woken_unseen`
/// (the wakeup programs, which would have created it, are left out).
#[inline(always)]
pub(crate) fn wait_state(task: *mut Task, woken_unseen: bool) -> Option<&'static mut TaskWait> {
    let state = if woken_unseen {
        unsafe { store::wait_or_new(task) }
    } else {
        unsafe { store::wait_of(task) }
    };
    // SAFETY: task storage, alive while the program runs.
    state.map(|state| unsafe { &mut *state })
}

/// Ends the wait of `next`, just switched in on `cpu`, whose cgroup is the
/// CPU's current occupant: `stamp` is its enqueue stamp and `clock` its run
/// queue's clock, as the switch read them.
#[inline(always)]
fn end_wait(
    next: *mut Task,
    pid: u32,
    now: u64,
    cpu: u32,
    cs: &mut CpuState,
    stats: *mut CgroupStats,
    (stamp, clock): (u64, u64),
) {
    let woken_unseen = has_feature(FEATURE_WAKE_STAMP);
    let Some(state) = wait_state(next, woken_unseen) else {
        if woken_unseen {
            // Its wait, begun where no program saw it, has nowhere to go.
            storage_failed();
        }
        return;
    };
    let task: *const u8 = next.cast();
    let cfs_rq = task_cfs_rq(task).unwrap_or(core::ptr::null());
    if woken_unseen {
        // For a later switch-in the tracepoint may not report (resync.rs).
        let run_delay = read::<u64>(task, layout!(task_run_delay)).unwrap_or(0);
        let seen = state.delay_seen;
        state.delay_seen = delay_after(run_delay, stamp, clock);
        if state.queued_at == 0 {
            // The kernel's run delay grew since the last switch-in seen,
            // though this wait is not in it yet: it counted a wait the
            // programs did not see end, the part before a move to another
            // CPU that `sched_migrate_task` did not report. Such a wait's
            // stamp is the move's: only the part after it is here.
            if seen != 0 && run_delay > seen {
                count(Counter::ReadFail);
            }
            // Queued by a wakeup the programs did not see. Without `--pid`
            // or `--threads` the whole wait is here; with them it is begun
            // in the state like any other: a second way through their code
            // passed the verifier's limit of a million instructions.
            if !selecting() {
                if let Some(since) = queued_since(stamp, &cs.clock, now, cs.first_switch) {
                    let (total, parts) = woken_wait(since, now, cpu, cs);
                    record_wait(stats, total, parts);
                    cs.count(Counter::WaitRecorded);
                    let cgroup = cs.runs.current.cgroup_id;
                    note_slow(cs, task, cgroup, 0, now, total, parts, NO_SELECTION);
                    report_noted(cpu);
                }
                return;
            }
            if !begin_woken_wait(state, stamp, cfs_rq, now, cpu, cs) {
                return;
            }
        }
    } else if state.queued_at == 0 {
        return;
    }
    let victims = victims_of(task, pid, cs.runs.current.cgroup_id);
    let last = if state.cpu == cpu {
        end_segment(state, cfs_rq, now, cs, false, victims)
    } else {
        // Every CPU change goes through sched_migrate_task; without it the segment
        // cannot be split.
        count(Counter::ReadFail);
        Split::default()
    };
    let (total, parts) = state.finish(now, last);
    record_wait(stats, total, parts);
    cs.count(Counter::WaitRecorded);
    let throttled_by = state.throttled_by;
    note_slow(
        cs,
        task,
        victims.cgroup,
        throttled_by,
        now,
        total,
        parts,
        victims.thread,
    );
    report_noted(cpu);
    for selection in [victims.process, victims.thread] {
        if selection == NO_SELECTION {
            continue;
        }
        match selection_stats(selection) {
            Some(stats) => record_wait(stats, total, parts),
            None => count(Counter::SelectionMapFull),
        }
    }
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    count(Counter::Wakeup);
    mark_queued(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    count(Counter::WakeupNew);
    mark_queued(ctx.arg(0));
    0
}

/// A wait queued at `since` on `cpu` (whose state is `cs`) by a wakeup the
/// programs did not see, and switched in there at `now`, in a session that
/// selects no task (its only victim is its cgroup, the CPU's occupant now):
/// its total and split, its contended time charged.
///
/// It begins and ends here, so nothing is stored and nothing is read twice:
/// its readings at both ends would be taken now, so its throttle clock moves
/// by nothing (such a wait is never throttled, see
/// `tracer_common::wake_stamp`), and its busy time is the CPU's since
/// `since`. The same figures as `TaskWait::begin` then `end_segment`, for
/// fewer loads and stores on every woken switch-in.
#[inline(always)]
fn woken_wait(since: u64, now: u64, cpu: u32, cs: &CpuState) -> (u64, Split) {
    let busy_then = match cs.runs.busy_then_recent(since, now) {
        Some(busy) => busy,
        // SAFETY: a tracepoint program, preemption off.
        None => unsafe { tracer_busy_then(cpu, since, now) },
    };
    let busy = cs.runs.busy_at(now).saturating_sub(busy_then);
    let total = now.saturating_sub(since);
    let parts = split(total, 0, busy);
    if parts.contended > 0 {
        let victims = Victims::of_cgroup(cs.runs.current.cgroup_id);
        charge(
            since,
            cpu,
            &cs.runs,
            now,
            parts.contended,
            busy,
            false,
            victims,
        );
    }
    (total, parts)
}

/// Begins a wait at `stamp`, the kernel's enqueue stamp of a task queued on
/// `cpu` (whose state is `cs`) by a wakeup the programs did not see (see
/// `tracer_common::wake_stamp`); false if the stamp cannot be used.
#[inline(always)]
fn begin_woken_wait(
    state: &mut TaskWait,
    stamp: u64,
    cfs_rq: *const u8,
    now: u64,
    cpu: u32,
    cs: &CpuState,
) -> bool {
    let Some(since) = queued_since(stamp, &cs.clock, now, cs.first_switch) else {
        return false;
    };
    begin_woken_at(state, since, cfs_rq, now, cpu, cs);
    true
}

/// Begins at `since` the wait of a task queued on `cpu` (whose state is `cs`)
/// by a wakeup the programs did not see, found at `now`. Such a wait is never
/// throttled (see `tracer_common::wake_stamp`): its throttle clock is read at
/// `now`.
#[inline(always)]
pub(crate) fn begin_woken_at(
    state: &mut TaskWait,
    since: u64,
    cfs_rq: *const u8,
    now: u64,
    cpu: u32,
    cs: &CpuState,
) {
    let busy = match cs.runs.busy_then_recent(since, now) {
        Some(busy) => busy,
        // SAFETY: a tracepoint program, preemption off.
        None => unsafe { tracer_busy_then(cpu, since, now) },
    };
    state.begin(since, cpu, readings::<Direct>(cfs_rq, now, busy), false, 0);
}

/// `cpu`'s busy clock at `then`, up to `now` (see `Runs::busy_then`).
///
/// A global function, verified once on its own like `tracer_charge_runs`:
/// inlined, its walk over the runs multiplied `sched_switch`'s states past
/// the verifier's limit.
///
/// # Safety
/// Called from a tracepoint program, with preemption off.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_busy_then(cpu: u32, then: u64, now: u64) -> u64 {
    cpu_state(cpu).map_or(0, |cs| cs.runs.busy_then(then, now))
}

/// A woken task starts waiting on the run queue it was put on, which may be
/// another CPU's.
#[inline(always)]
fn mark_queued(task: *mut Task) {
    let rq = task_cfs_rq(task.cast()).and_then(cfs_rq_rq);
    let Some(cpu) = rq.and_then(rq_cpu) else {
        count(Counter::ReadFail);
        return;
    };
    // The wakeup has just updated that run queue's clock: put on the
    // programs' clock, it saves reading the time (see tracer_common::clock).
    let cs = cpu_state(cpu);
    let now = cs
        .as_ref()
        .zip(rq.and_then(rq_clock))
        .and_then(|(cs, clock)| cs.clock.monotonic(clock))
        .unwrap_or_else(now);
    let busy = cs.map_or(0, |cs| cs.runs.busy_at(now));
    begin_wait(task, now, cpu, busy);
}

/// Counts a wait whose state could not be had: the tracer's own doing if
/// this CPU is inside `sched_process_exit`'s free (the kernel refuses the
/// nested storage access), a loss otherwise.
#[inline(never)]
fn storage_failed() {
    if let Some(cs) = cpu_state(unsafe { bpf_get_smp_processor_id() }) {
        cs.count(if cs.freeing != 0 {
            Counter::WakeupInOwnFree
        } else {
            Counter::TaskStorageFail
        });
    }
}

/// Frees a task's storage as soon as it exits rather than when its last
/// reference goes, and drops a selected thread (or process) from the
/// selection maps, so that a later task reusing its id is not taken for it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p[, bool group_dead])
    let task: *mut Task = ctx.arg(0);
    let cs = cpu_state(unsafe { bpf_get_smp_processor_id() });
    if let Some(cs) = cs {
        cs.count(Counter::Exit);
        cs.freeing = 1;
    }
    unsafe { store::forget(task) };
    if let Some(cs) = cpu_state(unsafe { bpf_get_smp_processor_id() }) {
        cs.freeing = 0;
    }
    let group_dead = has_feature(FEATURE_EXIT_GROUP_DEAD) && ctx.arg::<u64>(1) & 0xff != 0;
    forget_selected(task.cast(), group_dead);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
