//! Reads of kernel structs at offsets userspace found in BTF.
//!
//! The task pointers the tracepoints pass are BTF-typed, so the programs load
//! fields directly instead of calling `bpf_probe_read_kernel`: the verifier
//! checks each load against the kernel's BTF (a wrong offset or size is refused
//! at load time, not read silently) and turns loads through the pointers found on
//! the way into fault-tolerant ones. On the `sched_switch` hot path this saves a
//! helper call per field. Pointers that come out of an array indexed at run time
//! (`task_group.cfs_rq[cpu]`) are not typed; those are read with the helper
//! ([`Probe`]).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::{
    layout::{ABSENT, FEATURE_AUTOGROUP, KernelLayout},
    maps::{COMM_LEN, Occupant},
};

/// Filled in by userspace before load (see `tracer::layout`); read-only to the
/// programs, so the verifier knows every offset as a constant and prunes branches
/// on the feature bits. Here rather than in `maps.rs` with the other load-time
/// global: it is this module's table of offsets, read only through `layout!`,
/// and keeping it here leaves this module importing nothing of the crate.
#[unsafe(no_mangle)]
pub(crate) static LAYOUT: KernelLayout = KernelLayout::UNSET;

/// Reads one layout field. The volatile read stops the compiler from folding the
/// placeholder value into the code.
macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::kernel::LAYOUT.$field) }
    };
}
pub(crate) use layout;

#[inline(always)]
pub fn has_feature(feature: u32) -> bool {
    layout!(features) & feature != 0
}

/// How a kernel pointer is dereferenced.
pub trait Reader {
    /// A `T` at `base + off`; `None` if the field is absent, `base` is null or
    /// the read faults.
    fn read<T>(base: *const u8, off: u32) -> Option<T>;
}

/// Direct loads through BTF-typed pointers (tracepoint arguments and pointers
/// loaded from them).
pub struct Direct;

impl Reader for Direct {
    #[inline(always)]
    fn read<T>(base: *const u8, off: u32) -> Option<T> {
        if off == ABSENT || base.is_null() {
            return None;
        }
        Some(unsafe { core::ptr::read_volatile(base.wrapping_add(off as usize).cast::<T>()) })
    }
}

/// `bpf_probe_read_kernel`, for pointers the verifier knows no type of.
pub struct Probe;

impl Reader for Probe {
    #[inline(always)]
    fn read<T>(base: *const u8, off: u32) -> Option<T> {
        if off == ABSENT || base.is_null() {
            return None;
        }
        unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }.ok()
    }
}

/// Direct load (see [`Direct`]).
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    Direct::read(base, off)
}

/// The kernfs node of a task group's cgroup (`tg->css.cgroup->kn`). An autogroup
/// (a session's implicit group, not a cgroup) counts as its parent, the root.
#[inline(always)]
fn tg_kn(tg: *const u8) -> Option<*const u8> {
    let mut tg = tg;
    if has_feature(FEATURE_AUTOGROUP) {
        let autogroup: u64 = read(tg, layout!(tg_autogroup))?;
        if autogroup != 0 {
            tg = read(tg, layout!(tg_parent))?;
        }
    }
    let cgroup: *const u8 = read(tg, layout!(tg_css_cgroup))?;
    read(cgroup, layout!(cgroup_kn))
}

/// The cgroup id of task group `tg` (BTF-typed).
#[inline(always)]
pub fn tg_cgroup_id(tg: *const u8) -> Option<u64> {
    tg_kn(tg).and_then(kn_id)
}

/// The cgroup id of the task group of `cfs_rq` (BTF-typed).
#[inline(always)]
pub fn cfs_rq_cgroup_id(cfs_rq: *const u8) -> Option<u64> {
    tg_cgroup_id(read(cfs_rq, layout!(cfs_rq_tg))?)
}

/// The kernfs node of the cpu controller's cgroup of `task`:
/// `task->sched_task_group->css.cgroup->kn`.
#[inline(always)]
pub fn task_cgroup_kn(task: *const u8) -> Option<*const u8> {
    tg_kn(read(task, layout!(task_sched_task_group))?)
}

/// `kernfs_node.id`: the cgroup directory's inode number, which userspace maps to
/// a path.
#[inline(always)]
pub fn kn_id(kn: *const u8) -> Option<u64> {
    read(kn, layout!(kn_id))
}

/// `kernfs_node.name`: the cgroup directory's name.
#[inline(always)]
pub fn kn_name(kn: *const u8) -> Option<*const u8> {
    read(kn, layout!(kn_name))
}

#[inline(always)]
pub fn task_pid(task: *const u8) -> Option<u32> {
    read(task, layout!(task_pid))
}

#[inline(always)]
pub fn task_tgid(task: *const u8) -> Option<u32> {
    read(task, layout!(task_tgid))
}

/// The cfs_rq the task is queued on (`task->se.cfs_rq`).
#[inline(always)]
pub fn task_cfs_rq(task: *const u8) -> Option<*const u8> {
    read(task, layout!(task_cfs_rq))
}

/// Fills `who` (in place: it lives in a map) with who `task` is, for blame: its
/// cgroup, process and process name. Returns the cgroup's kernfs node, for
/// announcing a new cgroup.
#[inline(always)]
pub fn fill_occupant(task: *const u8, who: &mut Occupant) -> Option<*const u8> {
    let kn = task_cgroup_kn(task)?;
    who.cgroup_id = kn_id(kn)?;
    who.tgid = task_tgid(task).unwrap_or(0);
    who._pad = 0;
    who.comm = read::<*const u8>(task, layout!(task_group_leader))
        .and_then(|leader| read::<[u8; COMM_LEN]>(leader, layout!(task_comm)))
        .unwrap_or([0; COMM_LEN]);
    Some(kn)
}

/// The cfs_rq of task group `tg` on `cpu` (`tg->cfs_rq[cpu]`); not BTF-typed.
#[inline(always)]
pub fn tg_cfs_rq_on(tg: *const u8, cpu: u32) -> Option<*const u8> {
    let per_cpu: *const u8 = read(tg, layout!(tg_cfs_rq))?;
    if per_cpu.is_null() || cpu >= 8192 {
        return None;
    }
    Probe::read(per_cpu, cpu * 8)
}

/// `cfs_rq->rq`: the run queue of a cfs_rq (BTF-typed).
#[inline(always)]
pub fn cfs_rq_rq(cfs_rq: *const u8) -> Option<*const u8> {
    read(cfs_rq, layout!(cfs_rq_rq))
}

/// `rq->clock`: the run queue's `sched_clock`, as of its last update.
#[inline(always)]
pub fn rq_clock(rq: *const u8) -> Option<u64> {
    read(rq, layout!(rq_clock))
}

/// The clock of the run queue `task` is on (`task->se.cfs_rq->rq->clock`).
#[inline(always)]
pub fn task_rq_clock(task: *const u8) -> Option<u64> {
    task_cfs_rq(task).and_then(cfs_rq_rq).and_then(rq_clock)
}

/// `rq->cpu`: the run queue's CPU.
#[inline(always)]
pub fn rq_cpu(rq: *const u8) -> Option<u32> {
    read(rq, layout!(rq_cpu))
}

/// `cfs_rq->rq->cpu`: the CPU a task is queued on.
#[inline(always)]
pub fn cfs_rq_cpu(cfs_rq: *const u8) -> Option<u32> {
    cfs_rq_rq(cfs_rq).and_then(rq_cpu)
}
