//! Slow-wait records (`--slower`): each wait of at least the threshold is
//! sent through the ring buffer as its task gets the CPU, with its split and
//! the others that ran on its CPU during it.
//!
//! The threshold is a load-time global in read-only data, 0 without
//! `--slower`: the verifier then knows no record can be sent and drops the
//! code that would, so a session without `--slower` runs what it ran before.
//! With it, every wait's end writes the wait into its CPU's state, at hand
//! there, and calls a global function, which compares it with the
//! threshold and sends it. The call is unconditional on purpose: a branch
//! at each wait's end would double the paths the verifier walks after it,
//! and took `sched_switch` past its million instructions. A global function
//! is checked once, on its own.

use tracer_common::{
    causes::Split,
    maps::{
        COMM_LEN, Counter, CpuState, RECORD_STALL, STALL_OCCUPANTS, STALL_RUNS_PARTIAL,
        StallOccupant, StallRecord,
    },
};

use crate::kernel::{Probe, Reader as _, layout};
use crate::maps::{EVENTS, count, cpu_state};
use crate::stats::NO_SELECTION;

/// The threshold in ns; 0 sends none.
#[unsafe(no_mangle)]
pub(crate) static SLOWER: u64 = 0;

/// How many records each CPU may send a second.
#[unsafe(no_mangle)]
pub(crate) static SLOW_RATE: u64 = 0;

/// Non-zero: every wait of a thread `--threads` selected is sent, however
/// short (`--gc-log`: the GC threads' waits in each pause).
#[unsafe(no_mangle)]
pub(crate) static SLOW_SELECTED: u64 = 0;

#[inline(always)]
fn threshold() -> u64 {
    unsafe { core::ptr::read_volatile(&raw const SLOWER) }
}

/// Whether every wait of a selected thread is sent.
#[inline(always)]
fn of_selected() -> bool {
    unsafe { core::ptr::read_volatile(&raw const SLOW_SELECTED) != 0 }
}

/// Whether any wait may be sent: the verifier drops what follows if not.
#[inline(always)]
fn enabled() -> bool {
    threshold() != 0 || of_selected()
}

/// How many records each CPU may send a second.
#[inline(always)]
fn rate() -> u64 {
    unsafe { core::ptr::read_volatile(&raw const SLOW_RATE) }
}

/// Sends the record of the wait [`note_slow`] noted on `cpu`, if it is slow.
#[inline(always)]
pub(crate) fn report_noted(cpu: u32) {
    if enabled() {
        // SAFETY: a tracepoint program, preemption off.
        unsafe { tracer_report_slow(cpu) };
    }
}

/// Notes the wait of `task` (in `cgroup_id`) that ended at `end` in its
/// CPU's state `cs`, for [`report_noted`]; `thread` is its `--threads`
/// selection, if any.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn note_slow(
    cs: &mut CpuState,
    task: *const u8,
    cgroup_id: u64,
    throttled_by: u64,
    end: u64,
    total: u64,
    parts: Split,
    thread: u32,
) {
    if !enabled() {
        return;
    }
    let slow = &mut cs.slow;
    slow.noted = 1;
    // As it is: comparing here would split the verifier's paths.
    slow.thread = u64::from(thread);
    slow.task = task as u64;
    slow.cgroup_id = cgroup_id;
    slow.throttled_by = throttled_by;
    slow.end = end;
    slow.total = total;
    slow.throttled = parts.throttled;
    slow.contended = parts.contended;
    slow.other = parts.other;
}

/// Sends the record of the wait in `cpu`'s state if it is slow, unless the
/// CPU sent its share this second (counted then).
///
/// # Safety
/// Called from a tracepoint program, with preemption off, on `cpu`.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_report_slow(cpu: u32) -> i32 {
    let Some(cs) = cpu_state(cpu) else {
        return 0;
    };
    // Each wait noted is considered once.
    if cs.slow.noted == 0 {
        return 0;
    }
    cs.slow.noted = 0;
    let threshold = threshold();
    let slow_enough = threshold != 0 && cs.slow.total >= threshold;
    if !slow_enough && !(cs.slow.thread != u64::from(NO_SELECTION) && of_selected()) {
        return 0;
    }
    let second = cs.slow.end / 1_000_000_000;
    if cs.slow.window != second {
        cs.slow.window = second;
        cs.slow.sent = 0;
    }
    if cs.slow.sent >= rate() {
        cs.count(Counter::SlowLimited);
        return 0;
    }
    cs.slow.sent += 1;
    let Some(mut entry) = EVENTS.reserve_untyped::<StallRecord>(0) else {
        count(Counter::RingbufDrop);
        return 0;
    };
    let slow = &cs.slow;
    let task = slow.task as *const u8;
    let tid = Probe::read::<u32>(task, layout!(task_pid)).unwrap_or(0);
    let comm = Probe::read::<[u8; COMM_LEN]>(task, layout!(task_comm)).unwrap_or([0; COMM_LEN]);
    let rec = entry.as_mut_ptr();
    // SAFETY: the reserved record, written field by field in place: built on
    // the stack it would take more than half of the 512 bytes.
    unsafe {
        (*rec).kind = RECORD_STALL;
        (*rec).cpu = cpu;
        (*rec).tid = tid;
        (*rec).tgid = cs.runs.current.tgid;
        (*rec).cgroup_id = slow.cgroup_id;
        (*rec).end = slow.end;
        (*rec).wait_ns = slow.total;
        (*rec).throttled_ns = slow.throttled;
        (*rec).contended_ns = slow.contended;
        (*rec).other_ns = slow.other;
        (*rec).throttled_by = slow.throttled_by;
        (*rec).others_ns = 0;
        (*rec)._pad = 0;
        (*rec).comm = comm;
        (*rec).process = cs.runs.current.comm;
        (*rec).occupants = [StallOccupant::default(); STALL_OCCUPANTS];
        let from = slow.end.saturating_sub(slow.total);
        let covered = cs.runs.for_each_run(from, slow.end, false, |who, ns| {
            StallOccupant::add(&mut (*rec).occupants, &mut (*rec).others_ns, who, ns);
        });
        (*rec).flags = if covered { 0 } else { STALL_RUNS_PARTIAL };
    }
    entry.submit(0);
    1
}
