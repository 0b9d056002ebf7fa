//! `sched_migrate_task`: a waiting task moves to another CPU. Its segment on
//! the old CPU ends there (split, and its contended time charged to that
//! CPU's runs), and a new one begins on the destination's cfs_rq.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{layout::FEATURE_WAKE_STAMP, maps::Counter, wake_stamp::moved_since};

use crate::kernel::{
    self, Probe, has_feature, kn_id, layout, read, task_cfs_rq, task_cgroup_kn, task_pid,
    tg_cfs_rq_on,
};
use crate::maps::{count, cpu_state, now};
use crate::programs::{begin_woken_at, end_segment, readings, wait_state};
use crate::stats::victims_of;
use crate::store::Task;
use crate::throttle::{is_throttled, throttling_cgroup};

/// A waiting task moves to another CPU: the segment on the old CPU ends (split and
/// charged there), a new one starts on `dest_cpu`'s cfs_rq.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, int dest_cpu)
    let task: *mut Task = ctx.arg(0);
    let dest_cpu = ctx.arg::<u64>(1) as u32;
    let woken_unseen = has_feature(FEATURE_WAKE_STAMP);
    let Some(state) = wait_state(task, woken_unseen) else {
        return 0;
    };
    let t: *const u8 = task.cast();
    // Still the source cfs_rq: the tracepoint fires before the move.
    let cfs_rq = task_cfs_rq(t).unwrap_or(core::ptr::null());
    let now = if state.queued_at != 0 {
        now()
    } else {
        // Not waiting: a wakeup picks its CPU before the task is queued. Or
        // queued by a wakeup the programs do not see: its wait began on the
        // CPU it leaves, when the run delay says (the kernel has dequeued
        // it, and cleared its stamp; see `moved_since`).
        if !woken_unseen {
            return 0;
        }
        let run_delay = read::<u64>(t, layout!(task_run_delay)).unwrap_or(0);
        let runs = read::<u64>(t, layout!(task_pcount)).unwrap_or(0);
        let rq = kernel::cfs_rq_rq(cfs_rq);
        let Some((src, src_state)) = rq
            .and_then(kernel::rq_cpu)
            .and_then(|src| cpu_state(src).map(|cs| (src, cs)))
        else {
            return 0;
        };
        let now = now();
        // The dequeue was timed by the run queue's clock, just updated.
        let left = rq
            .and_then(kernel::rq_clock)
            .and_then(|clock| src_state.clock.monotonic(clock))
            .map_or(now, |left| left.min(now));
        let Some(since) = moved_since(
            left,
            run_delay,
            state.delay_seen,
            runs,
            src_state.first_switch,
        ) else {
            return 0;
        };
        begin_woken_at(state, since, cfs_rq, now, src, src_state);
        state.delay_seen = run_delay;
        now
    };
    count(Counter::WaitMigrated);
    if let Some(old) = cpu_state(state.cpu)
        && let Some(cgroup) = task_cgroup_kn(t).and_then(kn_id)
    {
        let victims = victims_of(t, task_pid(t).unwrap_or(0), cgroup);
        let parts = end_segment(state, cfs_rq, now, old, true, victims);
        state.carry(parts);
    } else {
        // The segment's split is lost: it will count as "other".
        count(Counter::ReadFail);
    }
    let busy = cpu_state(dest_cpu).map_or(0, |cs| cs.runs.busy_at(now));
    let dest_cfs_rq = read::<*const u8>(t, layout!(task_sched_task_group))
        .and_then(|tg| tg_cfs_rq_on(tg, dest_cpu))
        .unwrap_or(core::ptr::null());
    let throttled = is_throttled::<Probe>(t, dest_cfs_rq);
    let by = if throttled {
        throttling_cgroup(t, dest_cpu)
    } else {
        0
    };
    state.begin_segment(
        now,
        dest_cpu,
        readings::<Probe>(dest_cfs_rq, now, busy),
        throttled,
        by,
    );
    0
}
