//! Adding figures to the statistics entries, which every CPU shares: a
//! cgroup has one entry whatever the CPU count, so its kernel memory and the
//! cost of reading it do not grow with the host. Counts and sums are atomic
//! adds, exact however many CPUs add at once; the maximum is a plain
//! compare-and-store (BPF has no atomic maximum, and compare-and-exchange only
//! from 5.12), which two CPUs racing may leave at the smaller of their values.
//!
//! Each cgroup entry written also stamps its slot in `CGROUP_STAMPS`, so
//! that userspace reads the entries that changed rather than all of them.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use tracer_common::{
    causes::{Causes, Split},
    hist::bucket_index,
    maps::{stamp_at, stamp_slot},
    stats::{CgroupStats, HistHead, RUN, WAIT},
};

use crate::maps::CGROUP_STAMPS;

/// Adds `v` to a counter other CPUs may be adding to.
#[inline(always)]
fn add(counter: *mut u64, v: u64) {
    // SAFETY: callers pass a field of a map value, aligned and alive while
    // the program runs.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, v) };
}

/// Adds one duration to a histogram of a shared entry: its head, and its
/// bucket in `column` (see `tracer_common::stats` for the layout).
#[inline(always)]
fn record(stats: *mut CgroupStats, head: *mut HistHead, column: usize, ns: u64) {
    // SAFETY: fields of a map value (see `add`).
    unsafe {
        add(&raw mut (*head).total_ns, ns);
        if ns > (*head).max_ns {
            (*head).max_ns = ns;
        }
        if let Some(pair) = (*stats).buckets.get_mut(bucket_index(ns))
            && let Some(bucket) = pair.get_mut(column)
        {
            add(bucket, 1);
        }
    }
}

/// Adds a finished run of `ran` ns.
#[inline(always)]
pub(crate) fn record_run(stats: *mut CgroupStats, ran: u64) {
    record(stats, unsafe { &raw mut (*stats).run }, RUN, ran);
}

/// Adds a finished wait of `total` ns, split into `parts`.
#[inline(always)]
pub(crate) fn record_wait(stats: *mut CgroupStats, total: u64, parts: Split) {
    record(stats, unsafe { &raw mut (*stats).wait }, WAIT, total);
    // Names every field, so that a new one fails to compile here until it is
    // added below (the kernel cannot use `Causes::add`, which is not atomic).
    let Causes {
        throttled_ns: _,
        contended_ns: _,
        other_ns: _,
        throttled_waits: _,
    } = Causes::ZERO;
    // SAFETY: as in `record`.
    let causes = unsafe { &raw mut (*stats).causes };
    unsafe {
        if parts.throttled > 0 {
            add(&raw mut (*causes).throttled_ns, parts.throttled);
            add(&raw mut (*causes).throttled_waits, 1);
        }
        if parts.contended > 0 {
            add(&raw mut (*causes).contended_ns, parts.contended);
        }
        if parts.other > 0 {
            add(&raw mut (*causes).other_ns, parts.other);
        }
    }
}

/// Marks `cgroup_id`'s entry as written at `now`. The slot is stored only
/// when its stamp changes, so that CPUs writing the same cgroup's slot do not
/// take its cache line from each other on every switch.
#[inline(always)]
pub(crate) fn stamp(cgroup_id: u64, now: u64) {
    let at = stamp_at(now);
    if let Some(stamps) = CGROUP_STAMPS.get_ptr_mut(0)
        // SAFETY: a map value; a racing store writes the same stamp, or one
        // 16 ms apart, either of which userspace reads as "changed".
        && let Some(slot) = unsafe { (*stamps).get_mut(stamp_slot(cgroup_id) as usize) }
        && *slot != at
    {
        *slot = at;
    }
}
