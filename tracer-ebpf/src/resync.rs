//! Switches the `sched_switch` tracepoint did not report.
//!
//! Some kernels do not report every context switch to the tracepoint: on
//! this project's 6.18 VM, switches away from the idle task of one CPU reach
//! neither ftrace's `sched_switch` event nor, now and then, its BPF programs.
//! A task switched in unreported leaves its wait open; before this module,
//! the next wait of the task overwrote it, and a whole throttle episode could
//! go missing without a trace. So each CPU remembers which task the last
//! reported switch put on it; a switch whose `prev` is another task was not
//! the first. The task's arrival is then dated from the kernel's own
//! `sched_info.last_arrival`, the CPU's runs are set right from then, and the
//! wait it ended is recorded as if its end had been reported.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use tracer_common::{
    account::{Readings, arrival},
    layout::FEATURE_WAKE_STAMP,
    maps::{Counter, CpuState, TaskWait},
    wake_stamp::{UnseenWait, unseen_wait},
};

use crate::kernel::{
    Direct, fill_occupant, has_feature, layout, read, task_cfs_rq, task_pid, task_rq_clock,
};
use crate::maps::{count, cpu_state};
use crate::programs::{begin_woken_at, wait_state};
use crate::record::record_wait;
use crate::slow::{note_slow, report_noted};
use crate::stats::{NO_SELECTION, Victims, cgroup_entry, selection_stats, victims_of};
use crate::store::Task;
use crate::throttle::throttle_clock;

/// A wait whose end was not reported, and what is known at that end: the
/// arguments of [`tracer_close_missed`], passed through this CPU's slot
/// (before 5.12 a global function takes scalars only).
#[repr(C)]
pub struct MissedEnd {
    wait: TaskWait,
    /// The task (an address, for a slow-wait record).
    task: u64,
    end: u64,
    cfs_rq: u64,
    throttle: u64,
    has_throttle: u64,
    victims: Victims,
}

#[btf_map]
static MISSED_END: PerCpuArray<MissedEnd, 1> = PerCpuArray::new();

/// `prev` is being switched out of `cpu` at `now`, but the last switch the
/// tracepoint reported there put another task on it: `prev`'s switch-in was
/// not reported. Sets the CPU's runs right from `prev`'s arrival on, and ends
/// the wait that arrival ended.
///
/// Two functions, called one after the other, not one: each has a stack
/// frame of its own, and 5.10's verifier refuses a chain of frames from
/// `sched_switch` down that adds up to more than 512 bytes.
#[inline(always)]
pub fn switched_in_unseen(prev: *mut Task, now: u64, cpu: u32, cs: &mut CpuState) {
    let arrived = resync_runs(prev, now, cs);
    if arrived != 0 && missed_wait(prev, arrived, cpu, cs) {
        // SAFETY: a tracepoint program, preemption off.
        unsafe { tracer_close_missed(cpu) };
        // From here, not from `tracer_close_missed`: three frames deep,
        // 5.10's verifier counts 576 bytes of stack.
        report_noted(cpu);
    }
}

/// Sets the CPU's runs right: what it believed ran ended at `prev`'s
/// arrival, and `prev` has run since. Returns the arrival, or 0 for the idle
/// task (whose wait there is none to end).
#[inline(never)]
fn resync_runs(prev: *mut Task, now: u64, cs: &mut CpuState) -> u64 {
    count(Counter::SwitchUnseen);
    let t: *const u8 = prev.cast();
    let pid = task_pid(t).unwrap_or(0);
    cs.runs.task = prev as u64;
    let floor = cs.runs.since;
    if pid == 0 {
        // The idle task: the kernel keeps no arrival for it.
        cs.runs.end_run(floor);
        cs.runs.start_run(floor, true);
        return 0;
    }
    let arrived = match (read::<u64>(t, layout!(task_last_arrival)), task_rq_clock(t)) {
        (Some(last), Some(clock)) => arrival(now, clock, last, floor),
        // Without the kernel's stamp: the last switch seen here, the earliest
        // it can have been (what the wait is then short of is not invented).
        _ => floor,
    };
    cs.runs.end_run(arrived);
    let kn = fill_occupant(t, &mut cs.runs.current);
    cs.runs.start_run(arrived, kn.is_none());
    arrived
}

/// Puts `prev`'s wait on `cpu`, if one was open, in this CPU's
/// [`MISSED_END`] slot with what is known at its end, `arrived`, and closes
/// it in the task's state; says whether it did.
#[inline(never)]
fn missed_wait(prev: *mut Task, arrived: u64, cpu: u32, cs: &CpuState) -> bool {
    let t: *const u8 = prev.cast();
    let woken_unseen = has_feature(FEATURE_WAKE_STAMP);
    // Where the wakeup programs are left out, a task first seen here has no
    // state yet: made now, it notes the run delay for the next switch-in
    // that goes unreported.
    let Some(state) = wait_state(prev, woken_unseen) else {
        return false;
    };
    let cfs_rq = task_cfs_rq(t).unwrap_or(core::ptr::null());
    if woken_unseen {
        // Where the wakeup programs are left out, a wait a wakeup began is
        // dated at its switch-in, which went unreported: it is what the
        // kernel's run delay grew by (see tracer_common::wake_stamp).
        let run_delay = read::<u64>(t, layout!(task_run_delay)).unwrap_or(0);
        if state.queued_at == 0 {
            let runs = read::<u64>(t, layout!(task_pcount)).unwrap_or(0);
            match unseen_wait(arrived, run_delay, state.delay_seen, runs, cs.first_switch) {
                UnseenWait::Since(since) => begin_woken_at(state, since, cfs_rq, arrived, cpu, cs),
                UnseenWait::BeforeTracing => {
                    state.delay_seen = run_delay;
                    return false;
                }
                UnseenWait::Unknown => {
                    count(Counter::WakeUnseen);
                    state.delay_seen = run_delay;
                    return false;
                }
            }
        }
        state.delay_seen = run_delay;
    }
    if state.queued_at == 0 || state.cpu != cpu {
        return false;
    }
    let Some(slot) = MISSED_END.get_ptr_mut(0) else {
        return false;
    };
    {
        // SAFETY: this CPU's slot; preemption is off in a tracepoint. Written
        // field by field, straight into the map: built on the stack first, it
        // took 5.10's verifier over the 512 bytes that sched_switch and this
        // function may use together. The throttle clock is read after the
        // slot's lookup and stored at once: read before, it was kept on the
        // stack across the lookup only when it existed, and reloaded
        // unconditionally, which 5.10's verifier refuses (a read of
        // uninitialised stack) where the fentry tier's clock is used.
        unsafe {
            core::ptr::copy_nonoverlapping(state, &raw mut (*slot).wait, 1);
            (*slot).end = arrived;
            (*slot).task = prev as u64;
            (*slot).cfs_rq = cfs_rq as u64;
            match throttle_clock::<Direct>(cfs_rq, arrived) {
                Some(clock) => {
                    (*slot).throttle = clock;
                    (*slot).has_throttle = 1;
                }
                None => {
                    (*slot).throttle = 0;
                    (*slot).has_throttle = 0;
                }
            }
            (*slot).victims = victims_of(t, task_pid(t).unwrap_or(0), cs.runs.current.cgroup_id);
        }
    }
    state.queued_at = 0;
    true
}

/// Ends the wait in this CPU's [`MISSED_END`] slot: splits it and records it
/// for its cgroup and selections. Returns 1 if it was recorded. Its contended
/// part is not charged to the CPU's runs (the runs of a CPU whose switches
/// went unreported are not all known): it shows as unattributed.
///
/// A global function: the verifier checks it once, on its own.
///
/// # Safety
/// Called from a tracepoint program, with preemption off.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_close_missed(cpu: u32) -> i32 {
    let (Some(args), Some(cs)) = (MISSED_END.get_ptr_mut(0), cpu_state(cpu)) else {
        return 0;
    };
    // SAFETY: this CPU's slot.
    let args = unsafe { &mut *args };
    let end = args.end;
    let at = Readings {
        cfs_rq: args.cfs_rq,
        throttle: args.throttle,
        has_throttle: args.has_throttle != 0,
        busy: cs.runs.busy_at(end),
    };
    let segment = args.wait.end_segment(end, at);
    if segment.moved {
        count(Counter::CgroupMoved);
    }
    if segment.clock_lost {
        count(Counter::ThrottleClockLost);
    }
    let (total, parts) = args.wait.finish(end, segment.split);
    let Some(stats) = cgroup_entry(args.victims.cgroup, end) else {
        count(Counter::CgroupMapFull);
        return 0;
    };
    record_wait(stats, total, parts);
    count(Counter::WaitRecorded);
    let task = args.task as *const u8;
    let throttled_by = args.wait.throttled_by;
    note_slow(
        cs,
        task,
        args.victims.cgroup,
        throttled_by,
        end,
        total,
        parts,
        args.victims.thread,
    );
    for selection in [args.victims.process, args.victims.thread] {
        if selection == NO_SELECTION {
            continue;
        }
        match selection_stats(selection) {
            Some(stats) => record_wait(stats, total, parts),
            None => count(Counter::SelectionMapFull),
        }
    }
    1
}

/// Notes the run delay of `prev`, the task that was running on this CPU when
/// tracing began (`prev` of the CPU's first switch seen), where the wakeup
/// programs are left out: otherwise, should its next switch-in go
/// unreported, the wait that switch-in ended could not be dated (the
/// kernel's run delay is up to date while the task runs). The iterator
/// below notes it too, but a moment later.
#[inline(never)]
pub fn note_first_delay(prev: *mut Task) {
    if has_feature(FEATURE_WAKE_STAMP) {
        note_delay(prev);
    }
}

/// Notes the run delay of `task`, unless a switch-in seen did first (its
/// note then counts the wait that switch-in ended, the kernel's not yet).
#[inline(always)]
fn note_delay(task: *mut Task) {
    let t: *const u8 = task.cast();
    if task_pid(t).unwrap_or(0) == 0 {
        return;
    }
    if let Some(state) = wait_state(task, true)
        && state.delay_seen == 0
    {
        state.delay_seen = read::<u64>(t, layout!(task_run_delay)).unwrap_or(0);
    }
}

/// Runs once over every task as tracing begins, where the wakeup programs
/// are left out: a task asleep then, whose next switch-in the tracepoint does
/// not report, has its wait dated by what its run delay grew by since (see
/// [`missed_wait`]). Nothing else knows its run delay before that wait: the
/// kernel clears the enqueue stamp as the task arrives.
///
/// aya-ebpf has no macro for iterators; this is what one would expand to.
/// The context is `struct bpf_iter__task { meta; task; }`; `task` is null
/// once past the last.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn note_run_delays(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__task`, whose second pointer is
    // the task (a trusted pointer, or null).
    let task = unsafe { *ctx.cast::<*mut Task>().add(1) };
    if !task.is_null() {
        note_delay(task);
    }
    0
}
