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
    maps::{Counter, CpuState, TaskWait},
};

use crate::blame::charge;
use crate::kernel::{Direct, fill_occupant, layout, read, task_cfs_rq, task_pid};
use crate::maps::{CGROUP_STATS, count, cpu_state};
use crate::stats::{NO_SELECTION, Victims, record_wait, selection_stats, victims_of};
use crate::store::{self, Task};
use crate::throttle::throttle_clock;

/// A wait whose end was not reported, and what is known at that end: the
/// arguments of [`tracer_close_missed`], passed through this CPU's slot
/// (before 5.12 a global function takes scalars only).
#[repr(C)]
pub struct MissedEnd {
    wait: TaskWait,
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
/// Not inlined: the rare path is verified once, apart from the switch's own.
#[inline(never)]
pub fn switched_in_unseen(prev: *mut Task, now: u64, cpu: u32, cs: &mut CpuState) {
    count(Counter::SwitchUnseen);
    let t: *const u8 = prev.cast();
    let pid = task_pid(t).unwrap_or(0);
    cs.runs.task = prev as u64;
    let floor = cs.runs.since;
    if pid == 0 {
        // The idle task: the kernel keeps no arrival for it.
        cs.runs.end_run(floor);
        cs.runs.start_run(floor, true);
        return;
    }
    let cfs_rq = task_cfs_rq(t).unwrap_or(core::ptr::null());
    let rq: *const u8 = read(cfs_rq, layout!(cfs_rq_rq)).unwrap_or(core::ptr::null());
    let arrived = match (
        read::<u64>(t, layout!(task_last_arrival)),
        read::<u64>(rq, layout!(rq_clock)),
    ) {
        (Some(last), Some(clock)) => arrival(now, clock, last, floor),
        // Without the kernel's stamp: the last switch seen here, the earliest
        // it can have been (what the wait is then short of is not invented).
        _ => floor,
    };
    cs.runs.end_run(arrived);
    let kn = fill_occupant(t, &mut cs.runs.current);
    cs.runs.start_run(arrived, kn.is_none());

    let Some(state) = (unsafe { store::wait_of(prev) }) else {
        return;
    };
    let state = unsafe { &mut *state };
    if state.queued_at == 0 || state.cpu != cpu {
        return;
    }
    let clock = throttle_clock::<Direct>(cfs_rq, arrived);
    if let Some(slot) = MISSED_END.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; preemption is off in a tracepoint.
        unsafe {
            *slot = MissedEnd {
                wait: *state,
                end: arrived,
                cfs_rq: cfs_rq as u64,
                throttle: clock.unwrap_or(0),
                has_throttle: u64::from(clock.is_some()),
                victims: victims_of(t, pid, cs.runs.current.cgroup_id),
            };
            tracer_close_missed(cpu);
        }
    }
    state.queued_at = 0;
}

/// Ends the wait in this CPU's [`MISSED_END`] slot: splits it, charges its
/// contended part, records it for its cgroup and selections. Returns 1 if it
/// was recorded.
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
    let parts = segment.split;
    if parts.contended > 0 {
        charge(
            &args.wait,
            end,
            parts.contended,
            segment.busy,
            false,
            args.victims,
        );
    }
    let (total, parts) = args.wait.finish(end, parts);
    let Some(stats) = CGROUP_STATS.get_ptr_mut(args.victims.cgroup) else {
        count(Counter::CgroupMapFull);
        return 0;
    };
    record_wait(stats, total, parts);
    count(Counter::WaitRecorded);
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
