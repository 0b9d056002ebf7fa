//! Reads of kernel structs at offsets userspace found in BTF.
//!
//! The task pointers the tracepoints pass are BTF-typed, so the programs load
//! fields directly instead of calling `bpf_probe_read_kernel`: the verifier
//! checks each load against the kernel's BTF (a wrong offset or size is refused
//! at load time, not read silently) and turns loads through the pointers found on
//! the way into fault-tolerant ones. On the `sched_switch` hot path this saves a
//! helper call per field.

use tracer_common::layout::{ABSENT, FEATURE_AUTOGROUP, KernelLayout};

/// Filled in by userspace before load (see `tracer::layout`); read-only to the
/// programs, so the verifier knows every offset as a constant and prunes branches
/// on the feature bits.
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

/// Loads a `T` at `base + off`; `None` if the field is absent or `base` is null.
/// `base` must be a BTF-typed kernel pointer (a tracepoint argument, or a pointer
/// loaded from one), so that the verifier can check the access.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if off == ABSENT || base.is_null() {
        return None;
    }
    Some(unsafe { core::ptr::read_volatile(base.wrapping_add(off as usize).cast::<T>()) })
}

/// The kernfs node of the cpu controller's cgroup of `task`:
/// `task->sched_task_group->css.cgroup->kn`. An autogroup (a session's implicit
/// group, not a cgroup) counts as its parent, the root.
#[inline(always)]
pub fn task_cgroup_kn(task: *const u8) -> Option<*const u8> {
    let mut tg: *const u8 = read(task, layout!(task_sched_task_group))?;
    if has_feature(FEATURE_AUTOGROUP) {
        let autogroup: u64 = read(tg, layout!(tg_autogroup))?;
        if autogroup != 0 {
            tg = read(tg, layout!(tg_parent))?;
        }
    }
    let cgroup: *const u8 = read(tg, layout!(tg_css_cgroup))?;
    read(cgroup, layout!(cgroup_kn))
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
