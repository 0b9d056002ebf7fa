//! Kernel struct offsets handed to the eBPF programs at load time.
//!
//! Rust eBPF cannot emit CO-RE relocations, so userspace reads these offsets from
//! the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and writes them into the
//! programs' read-only data before loading. The verifier then sees them as
//! constants, and prunes the code of features the kernel does not have.

/// Marks a field the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// `sched_switch` passes `prev_state` as its fourth argument (5.18+). Before that
/// the programs read the state from the task.
pub const FEATURE_SWITCH_PREV_STATE: u32 = 1 << 0;
/// `task_group.autogroup` exists (CONFIG_SCHED_AUTOGROUP).
pub const FEATURE_AUTOGROUP: u32 = 1 << 1;
/// Task-based CFS throttling (6.18+): a throttled task leaves the CPU with
/// `task_struct.throttled` set and comes back without a wakeup.
pub const FEATURE_TASK_THROTTLE: u32 = 1 << 2;

/// The fentry programs are attached (the fentry tier): they report throttle
/// episodes, so the tracepoint programs do not.
pub const FEATURE_FENTRY: u32 = 1 << 3;

/// `sched_process_exit` passes `group_dead` (newer kernels; found in BTF):
/// whether the exiting thread is its process's last.
pub const FEATURE_EXIT_GROUP_DEAD: u32 = 1 << 4;

/// A wait begun by a wakeup is dated at the switch-in, from the kernel's own
/// enqueue stamp (`sched_info.last_queued`), and the wakeup tracepoints are
/// left alone: where tasks are throttled (6.18+), such a wait is never
/// throttled (see `crate::wake_stamp`).
pub const FEATURE_WAKE_STAMP: u32 = 1 << 5;

/// How the programs read a cfs_rq's cumulative throttled time `S` (see
/// [`KernelLayout::throttle_method`]). `S` grows while the cfs_rq or one of its
/// ancestors is throttled on that CPU; a wait's throttled part is `ΔS` over the
/// wait.
pub mod method {
    /// No usable counter: a wait counts as throttled when the task's hierarchy
    /// was throttled at its start or end (approximate).
    pub const STATE: u32 = 0;
    /// 6.6+: `throttled_clock_self_time`, plus `rq.clock - throttled_clock_self`
    /// while `throttled_clock_self != 0`. The kernel's own per-(cgroup, CPU) counter
    /// behind `cpu.stat.local`.
    pub const SELF_TIME: u32 = 1;
    /// Up to 5.18: `throttled_clock_task_time`, plus
    /// `rq.clock_task - throttled_clock_task` while `throttle_count > 0`
    /// (task clock: irq and steal time excluded).
    pub const TASK_CLOCK: u32 = 2;
    /// 5.19 to 6.5: `throttled_clock_pelt_time`, plus
    /// `rq.clock_pelt - throttled_clock_pelt` while `throttle_count > 0`. The PELT
    /// clock is scaled by CPU capacity and frequency: approximate.
    pub const PELT_CLOCK: u32 = 3;
    /// The fentry tier's own clock (see `ThrottleClock`): time from
    /// `tg_throttle_down` to `tg_unthrottle_up` per cfs_rq, on
    /// `bpf_ktime_get_ns()`. Used where the kernel's counter is approximate
    /// or missing (before 6.6).
    pub const FENTRY: u32 = 4;
}

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
    /// `task_struct.se.cfs_rq`: the cfs_rq the task is queued on.
    pub task_cfs_rq: u32,
    /// `task_struct.throttled` (bool, 6.18+), or [`ABSENT`].
    pub task_throttled: u32,
    /// `task_struct.group_leader`.
    pub task_group_leader: u32,
    /// `task_struct.comm` (16 bytes).
    pub task_comm: u32,
    /// `task_group.css.cgroup` (`struct cgroup *`).
    pub tg_css_cgroup: u32,
    /// `task_group.autogroup`, or [`ABSENT`].
    pub tg_autogroup: u32,
    /// `task_group.parent`.
    pub tg_parent: u32,
    /// `task_group.cfs_rq` (`struct cfs_rq **`, one per CPU).
    pub tg_cfs_rq: u32,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (u64; the cgroup directory's inode number).
    pub kn_id: u32,
    /// `kernfs_node.name` (`const char *`).
    pub kn_name: u32,
    /// `cfs_rq.rq`.
    pub cfs_rq_rq: u32,
    /// `cfs_rq.tg`.
    pub cfs_rq_tg: u32,
    /// `cfs_rq.load.weight` (unsigned long): non-zero while entities are queued.
    pub cfs_rq_load_weight: u32,
    /// `cfs_rq.throttle_count` (int): > 0 while this level or an ancestor is
    /// throttled on the cfs_rq's CPU.
    pub cfs_rq_throttle_count: u32,
    /// The byte holding `cfs_rq.throttled` (a bitfield since 6.18, an int before).
    pub cfs_rq_throttled: u32,
    /// Mask of `throttled` within that byte.
    pub cfs_rq_throttled_mask: u32,
    /// Cumulative throttled time of the cfs_rq, per [`Self::throttle_method`].
    pub cfs_rq_throttle_time: u32,
    /// Start of the throttled interval in progress, per [`Self::throttle_method`].
    pub cfs_rq_throttle_start: u32,
    /// The `rq` clock the two fields above are in (`clock`, `clock_task` or
    /// `clock_pelt`).
    pub rq_throttle_clock: u32,
    /// `rq.cpu`.
    pub rq_cpu: u32,
    /// `rq.clock`: the clock `sched_info` stamps a task's arrival with.
    pub rq_clock: u32,
    /// `task_struct.sched_info.last_arrival` (`CONFIG_SCHED_INFO`), or
    /// [`ABSENT`]: when the task last got a CPU, on its run queue's clock. It
    /// dates a switch-in the `sched_switch` tracepoint did not report.
    pub task_last_arrival: u32,
    /// `task_struct.sched_info.last_queued` (`CONFIG_SCHED_INFO`), or
    /// [`ABSENT`]: when the task was last queued without running since, on
    /// its run queue's clock; 0 while it runs or sleeps.
    pub task_last_queued: u32,
    /// `task_struct.sched_info.run_delay` (`CONFIG_SCHED_INFO`), or
    /// [`ABSENT`]: the task's time queued without running, summed by the
    /// kernel at each arrival.
    pub task_run_delay: u32,
    /// `task_struct.sched_info.pcount` (`CONFIG_SCHED_INFO`), or [`ABSENT`]:
    /// how many times the task got a CPU. On its first run its run delay is
    /// the one wait that run ended (see `wake_stamp::unseen_wait`).
    pub task_pcount: u32,
    /// One of [`method`].
    pub throttle_method: u32,
    /// `FEATURE_*` bits.
    pub features: u32,
}

impl KernelLayout {
    /// Every offset absent: the programs refuse to do anything with it.
    pub const UNSET: Self = Self {
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_state: ABSENT,
        task_sched_task_group: ABSENT,
        task_cfs_rq: ABSENT,
        task_throttled: ABSENT,
        task_group_leader: ABSENT,
        task_comm: ABSENT,
        tg_css_cgroup: ABSENT,
        tg_autogroup: ABSENT,
        tg_parent: ABSENT,
        tg_cfs_rq: ABSENT,
        cgroup_kn: ABSENT,
        kn_id: ABSENT,
        kn_name: ABSENT,
        cfs_rq_rq: ABSENT,
        cfs_rq_tg: ABSENT,
        cfs_rq_load_weight: ABSENT,
        cfs_rq_throttle_count: ABSENT,
        cfs_rq_throttled: ABSENT,
        cfs_rq_throttled_mask: 0,
        cfs_rq_throttle_time: ABSENT,
        cfs_rq_throttle_start: ABSENT,
        rq_throttle_clock: ABSENT,
        rq_cpu: ABSENT,
        rq_clock: ABSENT,
        task_last_arrival: ABSENT,
        task_last_queued: ABSENT,
        task_run_delay: ABSENT,
        task_pcount: ABSENT,
        throttle_method: method::STATE,
        features: 0,
    };

    pub const fn has(&self, feature: u32) -> bool {
        self.features & feature != 0
    }
}

const _: () = assert!(core::mem::size_of::<KernelLayout>() == 32 * 4);
