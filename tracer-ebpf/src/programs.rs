//! The scheduler tracepoint programs (see the crate's documentation).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::kernel::{
    self, Direct, Probe, cfs_rq_cpu, fill_occupant, has_feature, is_throttled, kn_id, kn_name,
    layout, read, task_cfs_rq, task_cgroup_kn, task_pid, task_tgid, tg_cfs_rq_on, throttle_clock,
    throttle_total, throttling_cgroup,
};
use crate::store::{self, STATS_FLAGS, Task};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use tracer_common::{
    account::{Charge, Readings, Split},
    layout::{FEATURE_FENTRY, FEATURE_SWITCH_PREV_STATE},
    maps::{
        BlameKey, BlameValue, CGROUP_NAME_LEN, CgroupStats, Counter, CpuState, DEFAULT_MAX_CGROUPS,
        EVENTS_BYTES, EpisodeRecord, MAX_BLAME, MAX_SELECTED_TASKS, MAX_SELECTIONS,
        NewCgroupRecord, Occupant, RECORD_EPISODE, RECORD_NEW_CGROUP, SPILL_PER_CPU, SpillSlot,
        TaskWait, VICTIM_SELECTION,
    },
};

/// CPU_STATE's compiled-in size; userspace sets it to the number of possible CPUs.
pub(crate) const MAX_CPUS: usize = 1024;
/// cfs_rqs whose last throttle episode was reported.
const MAX_EPISODE_CFS_RQS: usize = 8192;

#[btf_map]
static CPU_STATE: Array<CpuState, MAX_CPUS> = Array::new();

#[btf_map]
static CGROUP_STATS: PerCpuHashMap<
    u64,
    CgroupStats,
    { DEFAULT_MAX_CGROUPS as usize },
    STATS_FLAGS,
> = PerCpuHashMap::new();

/// See [`SpillSlot`]; userspace sizes it to the possible CPUs.
#[btf_map]
static SPILL: Array<SpillSlot, { MAX_CPUS * SPILL_PER_CPU as usize }> = Array::new();

#[btf_map]
static SELECTION_STATS: PerCpuHashMap<u32, CgroupStats, { MAX_SELECTIONS as usize }, STATS_FLAGS> =
    PerCpuHashMap::new();

#[btf_map]
static SELECT_PROCESS: HashMap<u32, u32, { MAX_SELECTED_TASKS as usize }> = HashMap::new();

#[btf_map]
static SELECT_THREAD: HashMap<u32, u32, { MAX_SELECTED_TASKS as usize }> = HashMap::new();

/// Shared and preallocated rather than per-CPU and allocated on demand: an
/// insert from the scheduler's tracepoint then never waits for or fails on an
/// allocation, at the price of an atomic add.
#[btf_map]
static BLAME: HashMap<BlameKey, BlameValue, { MAX_BLAME as usize }> = HashMap::new();

/// cfs_rq address -> its throttle total when its last episode was reported, so
/// that an episode seen by several of its tasks is reported once.
#[btf_map]
static EPISODE_SEEN: LruHashMap<u64, u64, MAX_EPISODE_CFS_RQS> = LruHashMap::new();

/// Never written: the zeroed source for new statistics entries, which are too
/// big for the 512-byte stack.
#[btf_map]
static ZERO_STATS: PerCpuArray<CgroupStats, 1> = PerCpuArray::new();

#[btf_map]
pub(crate) static EVENTS: RingBuf<u8, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Non-zero when `--pid` or `--threads` selected tasks, so that the selection
/// lookups cost nothing otherwise.
#[unsafe(no_mangle)]
static SELECTIONS: u32 = 0;

/// The kernel's `TASK_RUNNING`.
const TASK_RUNNING: u32 = 0;

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
/// it was really a few microseconds.
#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn cpu_state(cpu: u32) -> Option<&'static mut CpuState> {
    CPU_STATE.get_ptr_mut(cpu).map(|p| unsafe { &mut *p })
}

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
    let now = now();
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(cs) = cpu_state(cpu) else {
        return 0;
    };
    cs.count(Counter::Switch);

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
    let kn = if next_pid == 0 {
        None
    } else {
        fill_occupant(next.cast(), &mut cs.runs.current)
    };
    cs.runs.start_run(now, kn.is_none());
    let next_cgroup = cs.runs.current.cgroup_id;
    let next_stats = match kn {
        Some(kn) => cgroup_stats(next_cgroup, kn),
        None => None,
    };
    if let Some(ran) = ran {
        let stats = if kn.is_some() && next_cgroup == prev_cgroup {
            next_stats
        } else {
            CGROUP_STATS.get_ptr_mut(prev_cgroup)
        };
        if let Some(stats) = stats {
            unsafe { (*stats).on_cpu.record(ran) };
        }
        record_selected_run(prev.cast(), ran);
    }
    if let Some(stats) = next_stats {
        end_wait(next, next_pid, now, cpu, cs, stats);
    }
    0
}

/// Adds a finished run of `task` to its selections' on-CPU histograms.
#[inline(always)]
fn record_selected_run(task: *const u8, ran: u64) {
    let victims = victims_of(task, task_pid(task).unwrap_or(0), 0);
    for selection in [victims.process, victims.thread] {
        if selection != NO_SELECTION
            && let Some(stats) = selection_stats(selection)
        {
            unsafe { (*stats).on_cpu.record(ran) };
        }
    }
}

/// The statistics entry of a cgroup, created (and announced) on first use.
#[inline(always)]
fn cgroup_stats(cgroup_id: u64, kn: *const u8) -> Option<*mut CgroupStats> {
    if let Some(stats) = CGROUP_STATS.get_ptr_mut(cgroup_id) {
        return Some(stats);
    }
    if let Some(stats) = insert_cgroup(cgroup_id, kn) {
        return Some(stats);
    }
    // No entry could be allocated right now: this CPU's spill slots keep the
    // figures until a later event's allocation succeeds.
    if let Some(stats) = spill_slot(cgroup_id) {
        count(Counter::CgroupSpilled);
        return Some(stats);
    }
    count(Counter::CgroupMapFull);
    None
}

/// This CPU's spill slot for a cgroup: the one it already has, or a free one.
#[inline(never)]
fn spill_slot(cgroup_id: u64) -> Option<*mut CgroupStats> {
    let base = unsafe { bpf_get_smp_processor_id() }.checked_mul(SPILL_PER_CPU)?;
    for i in 0..SPILL_PER_CPU {
        let slot = SPILL.get_ptr_mut(base + i)?;
        // SAFETY: a map value; only this CPU writes its slots, with
        // preemption off in a tracepoint.
        unsafe {
            if (*slot).cgroup_id == 0 {
                (*slot).cgroup_id = cgroup_id;
            }
            if (*slot).cgroup_id == cgroup_id {
                return Some(&raw mut (*slot).stats);
            }
        }
    }
    None
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
    map: &PerCpuHashMap<K, CgroupStats, N, STATS_FLAGS>,
    key: K,
) -> Option<(*mut CgroupStats, bool)> {
    let zero = ZERO_STATS.get_ptr(0)?;
    // SAFETY: map values live as long as the program runs.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "passing the value would copy 8 KiB onto the 512-byte stack"
    )]
    let created = map
        .insert(&key, unsafe { &*zero }, BPF_NOEXIST as u64)
        .is_ok();
    Some((map.get_ptr_mut(&key)?, created))
}

#[inline(always)]
fn announce_cgroup(cgroup_id: u64, kn: *const u8) {
    let Some(mut entry) = EVENTS.reserve_untyped::<NewCgroupRecord>(0) else {
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

/// Starts a wait of `task` on `cpu` at `now`, `busy` being that CPU's busy clock.
#[inline(always)]
fn begin_wait(task: *mut Task, now: u64, cpu: u32, busy: u64) {
    let Some(state) = (unsafe { store::wait_or_new(task) }) else {
        count(Counter::TaskStorageFail);
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
fn readings<R: kernel::Reader>(cfs_rq: *const u8, now: u64, busy: u64) -> Readings {
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
fn end_segment(
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
    let parts = segment.split;
    if parts.contended > 0 {
        let window = Window {
            from: state.segment_start,
            to: now,
            contended: parts.contended,
            busy: segment.busy,
            with_current: u64::from(with_current),
        };
        let charged = match CHARGE_ARGS.get_ptr_mut(0) {
            Some(args) => {
                // SAFETY: this CPU's slot; preemption is off in a tracepoint.
                unsafe {
                    (*args).window = window;
                    (*args).victims = victims;
                    tracer_charge_runs(state.cpu)
                }
            }
            None => 0,
        };
        if charged == 0 {
            count(Counter::RingOverrun);
        }
    }
    // The fentry tier reports episodes as they end, all of them.
    if parts.throttled > 0 && !has_feature(FEATURE_FENTRY) {
        report_episode(state, cfs_rq, parts.throttled, now, victims.cgroup);
    }
    parts
}

/// No selection (see [`Victims`]).
const NO_SELECTION: u32 = u32::MAX;

/// Whose statistics a waiting task's time goes to: its cgroup, and the
/// `--pid` / `--threads` selections it belongs to as a process and as a thread
/// ([`NO_SELECTION`] for none). Plain integers rather than `Option`s: the
/// programs copy this around, and an `Option`'s unused payload is uninitialised
/// memory, which the verifier refuses to see read.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Victims {
    cgroup: u64,
    process: u32,
    thread: u32,
}

/// The victims of a wait of `task` (thread id `pid`) in `cgroup`.
#[inline(always)]
fn victims_of(task: *const u8, pid: u32, cgroup: u64) -> Victims {
    let mut found = Victims {
        cgroup,
        process: NO_SELECTION,
        thread: NO_SELECTION,
    };
    if unsafe { core::ptr::read_volatile(&raw const SELECTIONS) } == 0 {
        return found;
    }
    if let Some(tgid) = task_tgid(task)
        && let Some(selection) = unsafe { SELECT_PROCESS.get(tgid) }
    {
        found.process = *selection;
    }
    if let Some(selection) = unsafe { SELECT_THREAD.get(pid) } {
        found.thread = *selection;
    }
    found
}

/// The part of a wait segment to charge to the CPU's runs (see
/// [`tracer_charge_runs`]).
#[repr(C)]
pub struct Window {
    from: u64,
    to: u64,
    contended: u64,
    busy: u64,
    /// 1 to include the run in progress (a segment ended by a migration).
    with_current: u64,
}

/// The arguments of [`tracer_charge_runs`], passed through this CPU's slot:
/// before 5.12 a global function takes scalars only.
#[repr(C)]
pub struct ChargeArgs {
    window: Window,
    victims: Victims,
}

#[btf_map]
static CHARGE_ARGS: PerCpuArray<ChargeArgs, 1> = PerCpuArray::new();

/// Charges a wait segment's contended time to the runs of `cpu` during it, in
/// proportion to their lengths, for every victim (the segment and the victims
/// are in this CPU's [`CHARGE_ARGS`]). Returns 0 if the runs the CPU remembers
/// do not cover the window.
///
/// A global function: the verifier checks it once, on its own, instead of at
/// every call in every state of `sched_switch`, whose verification would
/// otherwise grow with each of the `RING` iterations times the map updates in
/// each.
///
/// # Safety
/// Called from a tracepoint program, with preemption off.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_charge_runs(cpu: u32) -> i32 {
    let (Some(cpu), Some(args)) = (cpu_state(cpu), CHARGE_ARGS.get(0)) else {
        return 1;
    };
    let (w, victims) = (&args.window, &args.victims);
    let charge = Charge::new(w.contended, w.busy);
    let covered = cpu
        .runs
        .for_each_run(w.from, w.to, w.with_current != 0, |who, ns| {
            let ns = charge.of(ns);
            if ns == 0 {
                return;
            }
            blame(victims.cgroup, who, ns);
            if victims.process != NO_SELECTION {
                blame(VICTIM_SELECTION | victims.process as u64, who, ns);
            }
            if victims.thread != NO_SELECTION {
                blame(VICTIM_SELECTION | victims.thread as u64, who, ns);
            }
        });
    i32::from(covered)
}

#[inline(never)]
fn blame(victim: u64, who: &Occupant, ns: u64) {
    if ns == 0 {
        return;
    }
    let key = BlameKey {
        victim,
        occupant_cgroup: who.cgroup_id,
        occupant_tgid: who.tgid,
        _pad: 0,
    };
    if add_blame(&key, ns) {
        return;
    }
    let value = BlameValue { ns, comm: who.comm };
    if BLAME.insert(key, value, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Created by another CPU meanwhile, or full.
    if !add_blame(&key, ns) {
        count(Counter::BlameMapFull);
    }
}

#[inline(always)]
fn add_blame(key: &BlameKey, ns: u64) -> bool {
    match BLAME.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: a map value, aligned, alive while the program runs.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).ns, ns)
            };
            true
        }
        None => false,
    }
}

/// Reports the throttle episode that a wait's throttled time came from, once per
/// episode of a cfs_rq (several of its tasks may have waited through it).
#[inline(never)]
fn report_episode(state: &TaskWait, cfs_rq: *const u8, throttled: u64, now: u64, cgroup_id: u64) {
    let key = cfs_rq as u64;
    if let Some(total) = throttle_total(cfs_rq) {
        if unsafe { EPISODE_SEEN.get(key) }.is_some_and(|seen| *seen == total) {
            return;
        }
        let _ = EPISODE_SEEN.insert(key, total, 0);
    }
    send_episode(state.cpu, cgroup_id, state.throttled_by, throttled, now);
}

/// Sends one throttle episode record to userspace.
#[inline(never)]
pub(crate) fn send_episode(
    cpu: u32,
    cgroup_id: u64,
    throttled_by: u64,
    duration_ns: u64,
    seen_at: u64,
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
    }
    entry.submit(0);
}

/// Ends the wait of `next`, just switched in on `cpu`, whose cgroup is the
/// CPU's current occupant.
#[inline(always)]
fn end_wait(next: *mut Task, pid: u32, now: u64, cpu: u32, cs: &CpuState, stats: *mut CgroupStats) {
    let Some(state) = (unsafe { store::wait_of(next) }) else {
        return;
    };
    let state = unsafe { &mut *state };
    if state.queued_at == 0 {
        return;
    }
    let task: *const u8 = next.cast();
    let cfs_rq = task_cfs_rq(task).unwrap_or(core::ptr::null());
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
    let Split {
        throttled,
        contended,
        other,
    } = parts;
    record_wait(stats, total, throttled, contended, other);
    count(Counter::WaitRecorded);
    for selection in [victims.process, victims.thread] {
        if selection == NO_SELECTION {
            continue;
        }
        match selection_stats(selection) {
            Some(stats) => record_wait(stats, total, throttled, contended, other),
            None => count(Counter::SelectionMapFull),
        }
    }
}

#[inline(always)]
fn record_wait(stats: *mut CgroupStats, total: u64, throttled: u64, contended: u64, other: u64) {
    let stats = unsafe { &mut *stats };
    stats.runnable_wait.record(total);
    stats.throttled_ns += throttled;
    stats.contended_ns += contended;
    stats.other_ns += other;
    if throttled > 0 {
        stats.throttled_waits += 1;
    }
}

#[inline(never)]
fn selection_stats(selection: u32) -> Option<*mut CgroupStats> {
    match SELECTION_STATS.get_ptr_mut(selection) {
        Some(stats) => Some(stats),
        None => create_entry(&SELECTION_STATS, selection).map(|(stats, _)| stats),
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

/// A woken task starts waiting on the run queue it was put on, which may be
/// another CPU's.
#[inline(always)]
fn mark_queued(task: *mut Task) {
    let now = now();
    let Some(cpu) = task_cfs_rq(task.cast()).and_then(cfs_rq_cpu) else {
        count(Counter::ReadFail);
        return;
    };
    let busy = cpu_state(cpu).map_or(0, |cs| cs.runs.busy_at(now));
    begin_wait(task, now, cpu, busy);
}

/// A waiting task moves to another CPU: the segment on the old CPU ends (split and
/// charged there), a new one starts on `dest_cpu`'s cfs_rq.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, int dest_cpu)
    let task: *mut Task = ctx.arg(0);
    let dest_cpu = ctx.arg::<u64>(1) as u32;
    let Some(state) = (unsafe { store::wait_of(task) }) else {
        return 0;
    };
    let state = unsafe { &mut *state };
    if state.queued_at == 0 {
        // Not waiting: wakeups pick their CPU before the wait begins.
        return 0;
    }
    count(Counter::WaitMigrated);
    let t: *const u8 = task.cast();
    // Still the source cfs_rq: the tracepoint fires before the move.
    let cfs_rq = task_cfs_rq(t).unwrap_or(core::ptr::null());
    let now = now();
    if let Some(old) = cpu_state(state.cpu)
        && let Some(cgroup) = task_cgroup_kn(t).and_then(kn_id)
    {
        let victims = victims_of(t, task_pid(t).unwrap_or(0), cgroup);
        let parts = end_segment(state, cfs_rq, now, old, true, victims);
        state.carry(parts);
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

/// Frees a task's storage as soon as it exits rather than when its last
/// reference goes.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p[, bool group_dead])
    count(Counter::Exit);
    unsafe { store::forget(ctx.arg(0)) };
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
