//! The tracer's kernel side.
//!
//! A task's run-queue wait starts when it becomes runnable without running (a
//! wakeup, or a switch-out while still runnable: preemption, a time-slice end, or
//! on 6.18+ a CFS-bandwidth throttle) and ends when it is switched in. The wait is
//! added to a histogram of the task's cpu-controller cgroup in a per-CPU map; no
//! per-event record leaves the kernel. The ring buffer carries only the rare
//! "new cgroup" record.
#![no_std]
#![no_main]

mod kernel;
mod task_storage;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    btf_maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use kernel::{has_feature, kn_id, kn_name, layout, read, task_cgroup_kn};
use task_storage::{Task, TaskStorage};
use tracer_common::{
    layout::FEATURE_SWITCH_PREV_STATE,
    maps::{
        CGROUP_NAME_LEN, CgroupStats, Counter, DEFAULT_MAX_CGROUPS, EVENTS_BYTES, MAX_PIDS,
        NewCgroupRecord, PID_SELECT_PROCESS, PID_SELECT_THREAD, RECORD_NEW_CGROUP, TaskWait,
    },
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static TASK_WAIT: TaskStorage<TaskWait> = TaskStorage::new();

#[btf_map]
static CGROUP_STATS: PerCpuHashMap<
    u64,
    CgroupStats,
    { DEFAULT_MAX_CGROUPS as usize },
    NO_PREALLOC,
> = PerCpuHashMap::new();

#[btf_map]
static PID_STATS: PerCpuHashMap<u32, CgroupStats, { MAX_PIDS as usize }, NO_PREALLOC> =
    PerCpuHashMap::new();

#[btf_map]
static PID_FILTER: HashMap<u32, u32, { MAX_PIDS as usize }> = HashMap::new();

/// Never written: the zeroed source for new histogram entries, which are too big
/// for the 512-byte stack.
#[btf_map]
static ZERO_STATS: PerCpuArray<CgroupStats, 1> = PerCpuArray::new();

#[btf_map]
static COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
static EVENTS: RingBuf<NewCgroupRecord, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Non-zero when `--pid` selected ids, so the lookups cost nothing otherwise.
#[unsafe(no_mangle)]
static FILTER_PIDS: u32 = 0;

/// The kernel's `TASK_RUNNING`.
const TASK_RUNNING: u32 = 0;

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
    //          unsigned int prev_state)   -- prev_state since 5.18
    let now = unsafe { bpf_ktime_get_ns() };
    count(Counter::Switch);
    let preempt: u64 = ctx.arg(0);
    let prev: *mut Task = ctx.arg(1);
    let next: *mut Task = ctx.arg(2);
    let prev_state: u32 = if has_feature(FEATURE_SWITCH_PREV_STATE) {
        ctx.arg::<u64>(3) as u32
    } else {
        read(prev.cast(), layout!(task_state)).unwrap_or(TASK_RUNNING)
    };
    // A preempted task stays on the run queue whatever its state says (it may have
    // been preempted between set_current_state() and schedule()).
    let still_runnable = preempt & 0xff != 0 || prev_state == TASK_RUNNING;
    switch_out(prev, still_runnable, now);
    switch_in(next, now);
    0
}

#[inline(always)]
fn task_pid(task: *mut Task) -> Option<u32> {
    read(task.cast(), layout!(task_pid))
}

#[inline(always)]
fn switch_out(prev: *mut Task, still_runnable: bool, now: u64) {
    // A task that goes to sleep keeps whatever `queued_at` it had: it can only
    // run again after a wakeup, which overwrites it. That saves a storage lookup
    // on most switches.
    if !still_runnable {
        return;
    }
    // The per-CPU idle tasks (pid 0) are always "runnable" and never wait.
    match task_pid(prev) {
        Some(0) | None => return,
        Some(_) => {}
    }
    match unsafe { TASK_WAIT.get_or_create(prev) } {
        Some(state) => unsafe { (*state).queued_at = now },
        None => count(Counter::TaskStorageFail),
    }
}

#[inline(always)]
fn switch_in(next: *mut Task, now: u64) {
    let Some(pid) = task_pid(next) else {
        count(Counter::ReadFail);
        return;
    };
    if pid == 0 {
        return;
    }
    let Some(state) = (unsafe { TASK_WAIT.get(next) }) else {
        return;
    };
    let queued_at = unsafe { (*state).queued_at };
    if queued_at == 0 {
        return;
    }
    unsafe { (*state).queued_at = 0 };
    let wait = now.saturating_sub(queued_at);
    record_wait(next, pid, wait);
}

#[inline(always)]
fn record_wait(task: *mut Task, pid: u32, wait: u64) {
    let Some(kn) = task_cgroup_kn(task.cast()) else {
        count(Counter::ReadFail);
        return;
    };
    let Some(cgroup_id) = kn_id(kn) else {
        count(Counter::ReadFail);
        return;
    };
    let stats = match CGROUP_STATS.get_ptr_mut(cgroup_id) {
        Some(stats) => stats,
        None => match insert_cgroup(cgroup_id, kn) {
            Some(stats) => stats,
            None => {
                count(Counter::CgroupMapFull);
                return;
            }
        },
    };
    unsafe { (*stats).runnable_wait.record(wait) };
    count(Counter::WaitRecorded);

    if unsafe { core::ptr::read_volatile(&raw const FILTER_PIDS) } != 0 {
        record_selected_pid(task, pid, wait);
    }
}

/// Creates a cgroup's entry and tells userspace about the cgroup.
#[inline(never)]
fn insert_cgroup(cgroup_id: u64, kn: *const u8) -> Option<*mut CgroupStats> {
    let (stats, created) = create_entry(&CGROUP_STATS, cgroup_id)?;
    // Another CPU may have created it first; only the creator announces it.
    if created {
        announce_cgroup(cgroup_id, kn);
    }
    Some(stats)
}

/// Inserts a zeroed entry for `key` unless one exists, and returns it and
/// whether this call created it.
#[inline(always)]
fn create_entry<K, const N: usize>(
    map: &PerCpuHashMap<K, CgroupStats, N, NO_PREALLOC>,
    key: K,
) -> Option<(*mut CgroupStats, bool)> {
    let zero = ZERO_STATS.get_ptr(0)?;
    // SAFETY: map values live as long as the program runs.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "passing the value would copy 4 KiB onto the 512-byte stack"
    )]
    let created = map
        .insert(&key, unsafe { &*zero }, BPF_NOEXIST as u64)
        .is_ok();
    Some((map.get_ptr_mut(&key)?, created))
}

#[inline(always)]
fn announce_cgroup(cgroup_id: u64, kn: *const u8) {
    let Some(mut entry) = EVENTS.reserve(0) else {
        count(Counter::RingbufDrop);
        return;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).kind = RECORD_NEW_CGROUP;
        (*record)._pad = 0;
        (*record).cgroup_id = cgroup_id;
        (*record).name = [0; CGROUP_NAME_LEN];
        if let Some(name) = kn_name(kn) {
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*record).name);
        }
    }
    entry.submit(0);
}

#[inline(never)]
fn record_selected_pid(task: *mut Task, pid: u32, wait: u64) {
    let mut key = None;
    if let Some(tgid) = read::<u32>(task.cast(), layout!(task_tgid))
        && let Some(kind) = unsafe { PID_FILTER.get(tgid) }
        && *kind == PID_SELECT_PROCESS
    {
        key = Some(tgid);
    }
    if key.is_none()
        && let Some(kind) = unsafe { PID_FILTER.get(pid) }
        && *kind == PID_SELECT_THREAD
    {
        key = Some(pid);
    }
    let Some(key) = key else { return };
    let stats = match PID_STATS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => match create_entry(&PID_STATS, key) {
            Some((stats, _)) => stats,
            None => {
                count(Counter::PidMapFull);
                return;
            }
        },
    };
    unsafe { (*stats).runnable_wait.record(wait) };
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

#[inline(always)]
fn mark_queued(task: *mut Task) {
    let now = unsafe { bpf_ktime_get_ns() };
    match unsafe { TASK_WAIT.get_or_create(task) } {
        Some(state) => unsafe { (*state).queued_at = now },
        None => count(Counter::TaskStorageFail),
    }
}

/// Frees a task's storage as soon as it exits rather than when its last
/// reference goes.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p[, bool group_dead])
    count(Counter::Exit);
    unsafe { TASK_WAIT.delete(ctx.arg(0)) };
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
