//! CFS-bandwidth throttling: whether a task is throttled and by which cgroup,
//! a cfs_rq's throttle clock (the kernel's own, or the fentry tier's), and the
//! throttle-episode records sent to userspace.

use tracer_common::{
    layout::{FEATURE_TASK_THROTTLE, method},
    maps::{Counter, EPISODE_END_UNKNOWN, EpisodeRecord, RECORD_EPISODE, TaskWait},
};

use crate::kernel::{Probe, Reader, has_feature, layout, read, tg_cfs_rq_on, tg_cgroup_id};
use crate::maps::{EPISODE_SEEN, EVENTS, THROTTLE_CLOCKS, count};

/// The cfs_rq's cumulative throttled time `S` (see `tracer_common::layout::method`),
/// in-progress part included. `None` without a throttle clock.
#[inline(always)]
pub fn throttle_clock<R: Reader>(cfs_rq: *const u8, now: u64) -> Option<u64> {
    let how = layout!(throttle_method);
    if how == method::STATE || cfs_rq.is_null() {
        return None;
    }
    if how == method::FENTRY {
        return Some(fentry_clock(cfs_rq, now));
    }
    let total: u64 = R::read(cfs_rq, layout!(cfs_rq_throttle_time))?;
    let start: u64 = R::read(cfs_rq, layout!(cfs_rq_throttle_start))?;
    let running = if how == method::SELF_TIME {
        start != 0
    } else {
        R::read::<i32>(cfs_rq, layout!(cfs_rq_throttle_count))? > 0
    };
    if !running {
        return Some(total);
    }
    let rq: *const u8 = R::read(cfs_rq, layout!(cfs_rq_rq))?;
    let clock: u64 = R::read(rq, layout!(rq_throttle_clock))?;
    Some(total.wrapping_add(clock.saturating_sub(start)))
}

/// The fentry tier's throttle clock of `cfs_rq` at `now` (see
/// `tracer_common::layout::method::FENTRY`): 0 for a cfs_rq never throttled
/// since the programs were attached.
#[inline(always)]
fn fentry_clock(cfs_rq: *const u8, now: u64) -> u64 {
    match unsafe { THROTTLE_CLOCKS.get(cfs_rq as u64) } {
        Some(c) if c.start != 0 => c.total + now.saturating_sub(c.start),
        Some(c) => c.total,
        None => 0,
    }
}

/// The cumulative throttled time without the part in progress: it changes only
/// when a throttle ends, so it identifies the last finished episode.
#[inline(always)]
pub fn throttle_total(cfs_rq: *const u8) -> Option<u64> {
    read(cfs_rq, layout!(cfs_rq_throttle_time))
}

/// Whether the task cannot run because of CFS bandwidth: on 6.18+ the task
/// itself is marked throttled; before, its cfs_rq hierarchy is.
/// `task` is BTF-typed; `cfs_rq` is read with `R`.
#[inline(always)]
pub fn is_throttled<R: Reader>(task: *const u8, cfs_rq: *const u8) -> bool {
    if has_feature(FEATURE_TASK_THROTTLE) {
        read::<u8>(task, layout!(task_throttled)).is_some_and(|t| t != 0)
    } else {
        R::read::<i32>(cfs_rq, layout!(cfs_rq_throttle_count)).is_some_and(|n| n > 0)
    }
}

/// Levels walked up from a task's group to find the one whose quota ran out.
const MAX_DEPTH: usize = 8;

/// The cgroup whose quota ran out for `task` on `cpu`: the nearest level, the
/// task's own group included, whose cfs_rq is marked throttled. 0 if none is
/// found within [`MAX_DEPTH`] levels.
#[inline(never)]
pub fn throttling_cgroup(task: *const u8, cpu: u32) -> u64 {
    let Some(mut tg) = read::<*const u8>(task, layout!(task_sched_task_group)) else {
        return 0;
    };
    let offset = layout!(cfs_rq_throttled);
    let mask = layout!(cfs_rq_throttled_mask) as u8;
    for _ in 0..MAX_DEPTH {
        if tg.is_null() {
            break;
        }
        if let Some(cfs_rq) = tg_cfs_rq_on(tg, cpu)
            && Probe::read::<u8>(cfs_rq, offset).is_some_and(|b| b & mask != 0)
        {
            return tg_cgroup_id(tg).unwrap_or(0);
        }
        match read::<*const u8>(tg, layout!(tg_parent)) {
            Some(parent) => tg = parent,
            None => break,
        }
    }
    0
}

/// Reports the throttle episode that a wait's throttled time came from, once per
/// episode of a cfs_rq (several of its tasks may have waited through it).
///
/// `EPISODE_SEEN` only spares the ring buffer the repeats: an entry it could
/// not insert, or evicted, lets a repeat through, and userspace drops that by
/// the record's `episode_end`. Nothing is lost or counted twice either way.
#[inline(never)]
pub(crate) fn report_episode(
    state: &TaskWait,
    cfs_rq: *const u8,
    throttled: u64,
    now: u64,
    cgroup_id: u64,
) {
    let key = cfs_rq as u64;
    let total = throttle_total(cfs_rq);
    if let Some(total) = total {
        if unsafe { EPISODE_SEEN.get(key) }.is_some_and(|seen| *seen == total) {
            return;
        }
        let _ = EPISODE_SEEN.insert(key, total, 0);
    }
    let end = total.unwrap_or(EPISODE_END_UNKNOWN);
    send_episode(
        state.cpu,
        cgroup_id,
        state.throttled_by,
        throttled,
        now,
        end,
    );
}

/// Sends one throttle episode record to userspace. Inlined: a call between
/// programs' functions takes at most five arguments.
#[inline(always)]
pub(crate) fn send_episode(
    cpu: u32,
    cgroup_id: u64,
    throttled_by: u64,
    duration_ns: u64,
    seen_at: u64,
    episode_end: u64,
) {
    let Some(mut entry) = EVENTS.reserve_untyped::<EpisodeRecord>(0) else {
        count(Counter::RingbufDrop);
        return;
    };
    count(Counter::Episode);
    let record = entry.as_mut_ptr();
    // SAFETY: a reserved record of the right size.
    unsafe {
        (*record).kind = RECORD_EPISODE;
        (*record).cpu = cpu;
        (*record).cgroup_id = cgroup_id;
        (*record).throttled_by = throttled_by;
        (*record).duration_ns = duration_ns;
        (*record).seen_at = seen_at;
        (*record).episode_end = episode_end;
    }
    entry.submit(0);
}
