//! Kernel struct offsets handed to the eBPF programs at load time.
//!
//! Rust eBPF cannot emit CO-RE relocations, so userspace reads these offsets from
//! the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and writes them into the
//! programs' read-only data before loading. The verifier then sees them as
//! constants.

/// Marks a field the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// `sched_switch` passes `prev_state` as its fourth argument (5.18+). Before that
/// the programs read the state from the task.
pub const FEATURE_SWITCH_PREV_STATE: u32 = 1 << 0;
/// `task_group.autogroup` exists (CONFIG_SCHED_AUTOGROUP).
pub const FEATURE_AUTOGROUP: u32 = 1 << 1;

/// Byte offsets of every kernel field the programs read. All offsets are from the
/// start of the named struct; nested members are flattened by userspace
/// (for example `task_group.css.cgroup` is `tg_css_cgroup`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `task_struct.pid` (u32 thread id, global namespace).
    pub task_pid: u32,
    /// `task_struct.tgid` (u32 process id).
    pub task_tgid: u32,
    /// `task_struct.__state` (or `state` before 5.14); used only without
    /// `FEATURE_SWITCH_PREV_STATE`.
    pub task_state: u32,
    /// `task_struct.sched_task_group` (`struct task_group *`).
    pub task_sched_task_group: u32,
    /// `task_group.css.cgroup` (`struct cgroup *`).
    pub tg_css_cgroup: u32,
    /// `task_group.autogroup`, or [`ABSENT`].
    pub tg_autogroup: u32,
    /// `task_group.parent`.
    pub tg_parent: u32,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (u64; the cgroup directory's inode number).
    pub kn_id: u32,
    /// `kernfs_node.name` (`const char *`).
    pub kn_name: u32,
    /// `FEATURE_*` bits.
    pub features: u32,
    pub _pad: u32,
}

impl KernelLayout {
    /// Every offset absent: the programs refuse to do anything with it.
    pub const UNSET: Self = Self {
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_state: ABSENT,
        task_sched_task_group: ABSENT,
        tg_css_cgroup: ABSENT,
        tg_autogroup: ABSENT,
        tg_parent: ABSENT,
        cgroup_kn: ABSENT,
        kn_id: ABSENT,
        kn_name: ABSENT,
        features: 0,
        _pad: 0,
    };

    pub const fn has(&self, feature: u32) -> bool {
        self.features & feature != 0
    }
}

const _: () = assert!(core::mem::size_of::<KernelLayout>() == 48);
