//! The maps and load-time globals the programs share, their compiled-in sizes,
//! and the accessors every module uses (`count`, `cpu_state`, `now`).
//!
//! Userspace finds the maps by name (`tracer_common::maps`). Not here: each
//! store's `TASK_WAIT` (`task_storage.rs`, `pid_map.rs`); `CHARGE_ARGS`, the
//! argument slot of `blame.rs`'s global function, whose value type is that
//! module's; and `LAYOUT`, which stays in `kernel.rs` with the `layout!` macro
//! that reads it.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_map,
};
use tracer_common::blame_cache::BlameCache;
use tracer_common::maps::{
    BlameKey, BlameValue, CgroupStats, Counter, CpuState, DEFAULT_MAX_CGROUPS, EVENTS_BYTES,
    HOT_SLOTS, MAX_BLAME, MAX_SELECTED_TASKS, MAX_SELECTIONS, MAX_THROTTLE_CFS_RQS, SPILL_PER_CPU,
    STAMP_SLOTS, TaggedStats, ThrottleClock,
};

use crate::store::STATS_FLAGS;

/// CPU_STATE's compiled-in size; userspace sets it to the number of possible CPUs.
pub(crate) const MAX_CPUS: usize = 1024;
/// cfs_rqs whose last throttle episode was reported.
const MAX_EPISODE_CFS_RQS: usize = 8192;

#[btf_map]
pub(crate) static CPU_STATE: Array<CpuState, MAX_CPUS> = Array::new();

/// One entry per cgroup, shared by the CPUs (see `record.rs`).
#[btf_map]
pub(crate) static CGROUP_STATS: HashMap<
    u64,
    CgroupStats,
    { DEFAULT_MAX_CGROUPS as usize },
    STATS_FLAGS,
> = HashMap::new();

/// See `tracer_common::maps::MAP_HOT_STATS`.
#[btf_map]
pub(crate) static HOT_STATS: Array<TaggedStats, { HOT_SLOTS as usize }> = Array::new();

/// See `tracer_common::maps::MAP_CGROUP_STAMPS`.
#[btf_map]
pub(crate) static CGROUP_STAMPS: Array<[u32; STAMP_SLOTS as usize], 1> = Array::new();

/// See [`TaggedStats`]; userspace sizes it to the possible CPUs.
#[btf_map]
pub(crate) static SPILL: Array<TaggedStats, { MAX_CPUS * SPILL_PER_CPU as usize }> = Array::new();

#[btf_map]
pub(crate) static SELECTION_STATS: HashMap<
    u32,
    CgroupStats,
    { MAX_SELECTIONS as usize },
    STATS_FLAGS,
> = HashMap::new();

#[btf_map]
pub(crate) static SELECT_PROCESS: HashMap<u32, u32, { MAX_SELECTED_TASKS as usize }> =
    HashMap::new();

#[btf_map]
pub(crate) static SELECT_THREAD: HashMap<u32, u32, { MAX_SELECTED_TASKS as usize }> =
    HashMap::new();

/// Shared and preallocated rather than per-CPU and allocated on demand: an
/// insert from the scheduler's tracepoint then never waits for or fails on an
/// allocation, at the price of an atomic add.
#[btf_map]
pub(crate) static BLAME: HashMap<BlameKey, BlameValue, { MAX_BLAME as usize }> = HashMap::new();

/// Each CPU's blame rows on their way to `BLAME` (see `blame.rs`).
#[btf_map]
pub(crate) static BLAME_CACHE: PerCpuArray<BlameCache, 1> = PerCpuArray::new();

/// cfs_rq address -> its throttle total when its last episode was reported, so
/// that an episode seen by several of its tasks is reported once.
#[btf_map]
pub(crate) static EPISODE_SEEN: LruHashMap<u64, u64, MAX_EPISODE_CFS_RQS> = LruHashMap::new();

/// Never written: the zeroed source for new statistics entries, which are too
/// big for the 512-byte stack.
#[btf_map]
pub(crate) static ZERO_STATS: Array<CgroupStats, 1> = Array::new();

#[btf_map]
pub(crate) static EVENTS: RingBuf<u8, { EVENTS_BYTES as usize }> = RingBuf::new();

/// The fentry tier's throttle clocks, per cfs_rq address (see `fentry.rs`).
#[btf_map]
pub(crate) static THROTTLE_CLOCKS: LruHashMap<
    u64,
    ThrottleClock,
    { MAX_THROTTLE_CFS_RQS as usize },
> = LruHashMap::new();

/// Per CPU: the cgroup whose quota ran out in the `throttle_cfs_rq` in progress
/// there, for the `tg_throttle_down` calls of its walk. Written and read with
/// that CPU's run queue locked.
#[btf_map]
pub(crate) static THROTTLER: Array<u64, MAX_CPUS> = Array::new();

/// Non-zero when `--pid` or `--threads` selected tasks, so that the selection
/// lookups cost nothing otherwise.
#[unsafe(no_mangle)]
pub(crate) static SELECTIONS: u32 = 0;

/// Counts an event on this CPU.
#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(cs) = cpu_state(unsafe { bpf_get_smp_processor_id() }) {
        cs.count(counter);
    }
}

/// Timestamps come from `bpf_ktime_get_ns()`, not from the run queue's own
/// clock: that one would be free to read, but the scheduler skips its update
/// after a wakeup that preempts, so the woken task's wait would read as 0 where
/// it was the time the CPU took to get to the switch. Telling that case by the
/// woken task's stamp equal to the clock is not enough: a tick or another
/// enqueue in between updates the clock, and measured so it was still up to
/// 436 µs behind the time (README, Cost). Wakeups, which the scheduler stamps
/// just before their tracepoint, use it put on this clock
/// (`tracer_common::clock`).
#[inline(always)]
pub(crate) fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn cpu_state(cpu: u32) -> Option<&'static mut CpuState> {
    CPU_STATE.get_ptr_mut(cpu).map(|p| unsafe { &mut *p })
}
