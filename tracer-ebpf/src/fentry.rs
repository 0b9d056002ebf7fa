//! The fentry tier: programs on the CFS bandwidth functions themselves, for
//! kernels that allow fentry (userspace tries them and falls back to the
//! tracepoints alone if the kernel refuses).
//!
//! `throttle_cfs_rq(cfs_rq)` is the level whose quota ran out; it then walks the
//! task-group tree below it, calling `tg_throttle_down(tg, rq)` for every level,
//! and `unthrottle_cfs_rq` walks it again with `tg_unthrottle_up(tg, rq)`. A
//! level's `throttle_count` is 0 on entry to the first and 1 on entry to the
//! last: those two calls bracket the time the level could not run on that CPU,
//! whoever's quota it was. So per cfs_rq this keeps:
//! - an episode: reported when it ends, with its length and the cgroup whose
//!   quota ran out, once per episode and as it happens (the tracepoint tier only
//!   sees an episode when one of the cgroup's tasks runs again);
//! - a throttle clock ([`ThrottleClock`]) on `bpf_ktime_get_ns()`, exact on every
//!   kernel; used where the kernel's own counter is approximate or missing
//!   (before 6.6). `throttle.rs` reads it.
//!
//! These functions run with the run queue locked and are called once per
//! throttle and unthrottle, not per context switch.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::fentry, programs::FEntryContext};
use tracer_common::maps::{Counter, ThrottleClock};

use crate::{
    kernel::{Probe, Reader, cfs_rq_cgroup_id, cfs_rq_cpu, layout, tg_cfs_rq_on, tg_cgroup_id},
    maps::{THROTTLE_CLOCKS, THROTTLER},
    throttle::send_episode,
};

#[fentry(function = "throttle_cfs_rq")]
pub fn throttle_cfs_rq(ctx: FEntryContext) -> i32 {
    // bool throttle_cfs_rq(struct cfs_rq *cfs_rq)   (void before 5.8)
    let cfs_rq: *const u8 = ctx.arg(0);
    if let Some(cpu) = cfs_rq_cpu(cfs_rq)
        && let Some(slot) = THROTTLER.get_ptr_mut(cpu)
    {
        // SAFETY: a map value; see THROTTLER.
        unsafe { *slot = cfs_rq_cgroup_id(cfs_rq).unwrap_or(0) };
    }
    0
}

#[fentry(function = "tg_throttle_down")]
pub fn tg_throttle_down(ctx: FEntryContext) -> i32 {
    // int tg_throttle_down(struct task_group *tg, void *data /* struct rq * */)
    let tg: *const u8 = ctx.arg(0);
    let rq: *const u8 = ctx.arg(1);
    let Some((cpu, cfs_rq, count)) = level(tg, rq) else {
        return 0;
    };
    if count != 0 {
        return 0; // already in a throttled hierarchy
    }
    let by = THROTTLER.get(cpu).copied().unwrap_or(0);
    let queued = Probe::read::<u64>(cfs_rq, layout!(cfs_rq_load_weight)).is_some_and(|w| w != 0);
    let now = unsafe { bpf_ktime_get_ns() };
    let key = cfs_rq as u64;
    if let Some(clock) = THROTTLE_CLOCKS.get_ptr_mut(key) {
        // SAFETY: a map value; this cfs_rq's run queue is locked.
        let clock = unsafe { &mut *clock };
        clock.start = now;
        clock.throttled_by = by;
        clock.queued = u32::from(queued);
    } else {
        let clock = ThrottleClock {
            start: now,
            total: 0,
            throttled_by: by,
            queued: u32::from(queued),
            _pad: 0,
        };
        // An LRU map evicts to make room; it fails only when none is free
        // to take on this CPU: this episode's clock is then unknown.
        if THROTTLE_CLOCKS.insert(key, clock, 0).is_err() {
            crate::maps::count(Counter::ThrottleClockLost);
        }
    }
    0
}

#[fentry(function = "tg_unthrottle_up")]
pub fn tg_unthrottle_up(ctx: FEntryContext) -> i32 {
    // int tg_unthrottle_up(struct task_group *tg, void *data /* struct rq * */)
    let tg: *const u8 = ctx.arg(0);
    let rq: *const u8 = ctx.arg(1);
    let Some((cpu, cfs_rq, count)) = level(tg, rq) else {
        return 0;
    };
    if count != 1 {
        return 0; // an ancestor stays throttled
    }
    let Some(clock) = THROTTLE_CLOCKS.get_ptr_mut(cfs_rq as u64) else {
        return 0; // throttled before the tracer started
    };
    // SAFETY: as in tg_throttle_down.
    let clock = unsafe { &mut *clock };
    if clock.start == 0 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = now.saturating_sub(clock.start);
    clock.total += duration;
    clock.start = 0;
    if clock.queued != 0 {
        send_episode(
            cpu,
            tg_cgroup_id(tg).unwrap_or(0),
            clock.throttled_by,
            duration,
            now,
            clock.total,
        );
    }
    0
}

/// `rq`'s CPU, the cfs_rq of `tg` on it and its `throttle_count`.
#[inline(always)]
fn level(tg: *const u8, rq: *const u8) -> Option<(u32, *const u8, i32)> {
    // `data` is a `void *` to the verifier: read through it with the helper.
    let cpu = Probe::read::<u32>(rq, layout!(rq_cpu))?;
    let cfs_rq = tg_cfs_rq_on(tg, cpu)?;
    let count = Probe::read::<i32>(cfs_rq, layout!(cfs_rq_throttle_count))?;
    Some((cpu, cfs_rq, count))
}
