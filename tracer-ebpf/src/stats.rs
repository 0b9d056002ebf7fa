//! Statistics entries: each cgroup's (created and announced on first use, or
//! kept in a spill slot meanwhile) and each selection's, whose entries a wait
//! goes to ([`Victims`]), and the recording of runs and waits into them.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::HashMap,
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel_str_bytes},
};
use tracer_common::maps::{
    CGROUP_NAME_LEN, CgroupStats, Counter, NewCgroupRecord, RECORD_NEW_CGROUP, SPILL_PER_CPU,
    hot_slot,
};

use crate::kernel::{kn_name, task_pid, task_tgid};
use crate::maps::{
    CGROUP_STATS, EVENTS, HOT_STATS, SELECT_PROCESS, SELECT_THREAD, SELECTION_STATS, SELECTIONS,
    SPILL, ZERO_STATS, count,
};
use crate::record::{record_run, stamp};
use crate::store::STATS_FLAGS;

/// Adds a finished run of `task` to its selections' on-CPU histograms.
#[inline(always)]
pub(crate) fn record_selected_run(task: *const u8, ran: u64) {
    let victims = victims_of(task, task_pid(task).unwrap_or(0), 0);
    for selection in [victims.process, victims.thread] {
        if selection != NO_SELECTION
            && let Some(stats) = selection_stats(selection)
        {
            record_run(stats, ran);
        }
    }
}

/// The statistics entry of a cgroup, created (and announced) on first use,
/// stamped as written at `now`.
#[inline(always)]
pub(crate) fn cgroup_stats(cgroup_id: u64, kn: *const u8, now: u64) -> Option<*mut CgroupStats> {
    if let Some(stats) = cgroup_entry(cgroup_id, now) {
        return Some(stats);
    }
    if let Some(stats) = insert_cgroup(cgroup_id, kn) {
        stamp(cgroup_id, now);
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

/// The existing statistics entry of a cgroup, stamped as written at `now`:
/// its hot slot if userspace gave it one (an inlined array lookup), else its
/// hash map entry.
#[inline(always)]
pub(crate) fn cgroup_entry(cgroup_id: u64, now: u64) -> Option<*mut CgroupStats> {
    let stats = match hot_stats(cgroup_id) {
        Some(stats) => stats,
        None => CGROUP_STATS.get_ptr_mut(cgroup_id)?,
    };
    stamp(cgroup_id, now);
    Some(stats)
}

/// The cgroup's slot of `HOT_STATS`, if it is tagged with the cgroup.
///
/// Not with `--pid` or `--threads`: the two kinds of entry are pointers
/// into two maps, which the verifier follows apart through the rest of
/// `sched_switch`, and with the selections' code that passes its limit of a
/// million instructions. Those sessions keep the hash lookup.
#[inline(always)]
fn hot_stats(cgroup_id: u64) -> Option<*mut CgroupStats> {
    if selecting() {
        return None;
    }
    let slot = HOT_STATS.get_ptr_mut(hot_slot(cgroup_id))?;
    // SAFETY: a map value, alive while the program runs. Userspace tags a
    // slot only while it is free (0, never a cgroup id), so a slot tagged
    // with this cgroup holds its figures alone.
    unsafe { (cgroup_id != 0 && (*slot).cgroup_id == cgroup_id).then_some(&raw mut (*slot).stats) }
}

/// The spill slot of a cgroup without an entry, for figures of a task already
/// running (its cgroup was announced when it was switched in); counted as
/// lost if none is free.
#[inline(never)]
pub(crate) fn spilled_stats(cgroup_id: u64) -> Option<*mut CgroupStats> {
    let slot = spill_slot(cgroup_id);
    count(if slot.is_some() {
        Counter::CgroupSpilled
    } else {
        Counter::CgroupMapFull
    });
    slot
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
    map: &HashMap<K, CgroupStats, N, STATS_FLAGS>,
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

/// Whether `--pid` or `--threads` selected tasks (a read-only global, so
/// the verifier prunes the paths of the other case). The volatile read stops
/// the compiler from folding the placeholder value into the code.
#[inline(always)]
pub(crate) fn selecting() -> bool {
    (unsafe { core::ptr::read_volatile(&raw const SELECTIONS) }) != 0
}

/// No selection (see [`Victims`]).
pub(crate) const NO_SELECTION: u32 = u32::MAX;

/// Whose statistics a waiting task's time goes to: its cgroup, and the
/// `--pid` / `--threads` selections it belongs to as a process and as a thread
/// ([`NO_SELECTION`] for none). Plain integers rather than `Option`s: the
/// programs copy this around, and an `Option`'s unused payload is uninitialised
/// memory, which the verifier refuses to see read.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Victims {
    pub(crate) cgroup: u64,
    pub(crate) process: u32,
    pub(crate) thread: u32,
}

impl Victims {
    /// A wait's cgroup alone: the victims of every wait when no task is
    /// selected.
    #[inline(always)]
    pub(crate) fn of_cgroup(cgroup: u64) -> Self {
        Self {
            cgroup,
            process: NO_SELECTION,
            thread: NO_SELECTION,
        }
    }
}

/// The victims of a wait of `task` (thread id `pid`) in `cgroup`.
#[inline(always)]
pub(crate) fn victims_of(task: *const u8, pid: u32, cgroup: u64) -> Victims {
    let mut found = Victims::of_cgroup(cgroup);
    if !selecting() {
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

/// Drops an exiting task from the selection maps: its thread id, and its
/// process id if it is the process's last thread (`group_dead`), may be
/// reused by an unrelated task.
#[inline(always)]
pub(crate) fn forget_selected(task: *const u8, group_dead: bool) {
    if !selecting() {
        return;
    }
    if let Some(pid) = task_pid(task) {
        let _ = SELECT_THREAD.remove(pid);
    }
    if group_dead && let Some(tgid) = task_tgid(task) {
        let _ = SELECT_PROCESS.remove(tgid);
    }
}

#[inline(never)]
pub(crate) fn selection_stats(selection: u32) -> Option<*mut CgroupStats> {
    match SELECTION_STATS.get_ptr_mut(selection) {
        Some(stats) => Some(stats),
        None => create_entry(&SELECTION_STATS, selection).map(|(stats, _)| stats),
    }
}
