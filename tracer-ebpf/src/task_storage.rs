//! Where the programs keep their state on kernels with task local storage for
//! tracing programs (5.12+) and an allocator usable in any context
//! (`bpf_mem_alloc`, 6.1+): each task's wait in task local storage, and each
//! cgroup's statistics entry allocated when the cgroup is first seen.
//! `pid_map.rs` is the same interface for older kernels.
//!
//! The map is a BTF-defined `BPF_MAP_TYPE_TASK_STORAGE`.
//!
//! aya-ebpf 0.2 has cgroup, inode and socket storage maps but no task storage, so
//! this is the same definition shape (`type`, `key`, `value`, `max_entries`,
//! `map_flags` as pointer-typed members that only carry BTF) for task storage.
//! The kernel requires BTF for local-storage maps; legacy map definitions have
//! none, which is why this cannot be a `#[map]`.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_task_storage_delete, bpf_task_storage_get},
    macros::btf_map,
};
use tracer_common::maps::TaskWait;

/// Per-cgroup statistics entries are allocated on first use: the kernel's
/// allocator for BPF maps works from the scheduler's tracepoints here.
pub const STATS_FLAGS: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static TASK_WAIT: TaskStorage<TaskWait> = TaskStorage::new();

/// The task's wait state, if it has one.
///
/// # Safety
/// `task` must be a trusted task pointer (a tracepoint argument).
#[inline(always)]
pub unsafe fn wait_of(task: *mut Task) -> Option<*mut TaskWait> {
    unsafe { TASK_WAIT.get(task) }
}

/// The task's wait state, zeroed on first use; `None` if it cannot be had.
///
/// # Safety
/// As for [`wait_of`].
#[inline(always)]
pub unsafe fn wait_or_new(task: *mut Task) -> Option<*mut TaskWait> {
    unsafe { TASK_WAIT.get_or_create(task) }
}

/// Drops the task's wait state (it exits).
///
/// # Safety
/// As for [`wait_of`].
#[inline(always)]
pub unsafe fn forget(task: *mut Task) {
    unsafe { TASK_WAIT.delete(task) }
}

/// Opaque `struct task_struct`.
pub type Task = aya_ebpf::bindings::task_struct;

#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the members only carry BTF; they are never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// The task's value, if it has one.
    ///
    /// # Safety
    /// `task` must be a trusted task pointer (a tracepoint argument).
    #[inline(always)]
    pub unsafe fn get(&self, task: *mut Task) -> Option<*mut T> {
        let p = unsafe { bpf_task_storage_get(self.as_ptr(), task, ptr::null_mut(), 0) };
        (!p.is_null()).then_some(p.cast())
    }

    /// The task's value, zero-initialised on first use. `None` when the kernel
    /// cannot allocate it (or refuses a recursive call).
    ///
    /// # Safety
    /// As for [`Self::get`].
    #[inline(always)]
    pub unsafe fn get_or_create(&self, task: *mut Task) -> Option<*mut T> {
        let p = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task,
                ptr::null_mut(),
                BPF_LOCAL_STORAGE_GET_F_CREATE as u64,
            )
        };
        (!p.is_null()).then_some(p.cast())
    }

    /// Drops the task's value.
    ///
    /// # Safety
    /// As for [`Self::get`].
    #[inline(always)]
    pub unsafe fn delete(&self, task: *mut Task) {
        let _ = unsafe { bpf_task_storage_delete(self.as_ptr(), task) };
    }
}
