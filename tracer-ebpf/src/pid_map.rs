//! Where the programs keep their state on kernels before 6.1 (the same
//! interface as `task_storage.rs`).
//!
//! Task local storage is not available to tracing programs before 5.12, so each
//! task's wait lives in a preallocated hash map keyed by its thread id, freed
//! when the task exits. And before 6.1 a map element allocated on demand comes
//! from the slab allocator with the run-queue lock held, which can wake kswapd
//! and so take a run-queue lock again: the statistics maps are preallocated
//! instead (userspace sizes them to a memory budget).

use aya_ebpf::{bindings::BPF_NOEXIST, btf_maps::HashMap, macros::btf_map};
use tracer_common::maps::{MAX_TASKS, TaskWait};

use crate::kernel::task_pid;

/// Opaque `struct task_struct`.
pub type Task = aya_ebpf::bindings::task_struct;

/// Preallocated (no `BPF_F_NO_PREALLOC`).
pub const STATS_FLAGS: usize = 0;

#[btf_map]
static TASK_WAIT: HashMap<u32, TaskWait, { MAX_TASKS as usize }> = HashMap::new();

/// The thread id the state is kept under; the idle tasks (0) have none.
#[inline(always)]
fn key(task: *mut Task) -> Option<u32> {
    task_pid(task.cast()).filter(|&pid| pid != 0)
}

/// The task's wait state, if it has one.
///
/// # Safety
/// `task` must be a trusted task pointer (a tracepoint argument).
#[inline(always)]
pub unsafe fn wait_of(task: *mut Task) -> Option<*mut TaskWait> {
    TASK_WAIT.get_ptr_mut(key(task)?)
}

/// The task's wait state, zeroed on first use; `None` when the map is full.
///
/// # Safety
/// As for [`wait_of`].
#[inline(always)]
pub unsafe fn wait_or_new(task: *mut Task) -> Option<*mut TaskWait> {
    let pid = key(task)?;
    if let Some(state) = TASK_WAIT.get_ptr_mut(pid) {
        return Some(state);
    }
    let _ = TASK_WAIT.insert(pid, TaskWait::default(), BPF_NOEXIST as u64);
    TASK_WAIT.get_ptr_mut(pid)
}

/// Drops the task's wait state (it exits).
///
/// # Safety
/// As for [`wait_of`].
#[inline(always)]
pub unsafe fn forget(task: *mut Task) {
    if let Some(pid) = key(task) {
        let _ = TASK_WAIT.remove(pid);
    }
}
