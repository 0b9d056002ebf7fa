//! Value types of the maps shared by the eBPF programs and userspace, and the map
//! names userspace looks them up by.

use crate::hist::LatencyHist;

/// Per-cgroup histograms, per CPU: `u64` cgroup id -> [`CgroupStats`].
pub const MAP_CGROUP_STATS: &str = "CGROUP_STATS";
/// Per-process (or per-thread) histograms for `--pid`: `u32` id -> [`CgroupStats`].
pub const MAP_PID_STATS: &str = "PID_STATS";
/// Which ids `--pid` selected: `u32` id -> [`PidSelector`] bits.
pub const MAP_PID_FILTER: &str = "PID_FILTER";
/// Per-CPU event counters indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Rare records for userspace (see [`NewCgroupRecord`]).
pub const MAP_EVENTS: &str = "EVENTS";

/// Name of the read-only global holding the [`crate::layout::KernelLayout`].
pub const GLOBAL_LAYOUT: &str = "LAYOUT";
/// Name of the read-only global that turns the `--pid` lookups on (u32, 0 or 1).
pub const GLOBAL_FILTER_PIDS: &str = "FILTER_PIDS";

/// Default capacity of the per-cgroup map; userspace may override it.
pub const DEFAULT_MAX_CGROUPS: u32 = 4096;
/// Capacity of the `--pid` maps.
pub const MAX_PIDS: u32 = 1024;
/// Ring buffer size in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Per-task state, kept in task local storage so that it dies with the task and
/// cannot be confused with a later task that reuses the pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskWait {
    /// `bpf_ktime_get_ns()` when the task last became runnable without running;
    /// 0 while it runs or sleeps.
    pub queued_at: u64,
}

/// Everything the kernel aggregates for one cgroup (or one selected pid) on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CgroupStats {
    /// Run-queue wait: from becoming runnable (woken, or switched out while still
    /// runnable) to being switched in.
    pub runnable_wait: LatencyHist,
}

impl CgroupStats {
    pub const ZERO: Self = Self {
        runnable_wait: LatencyHist::ZERO,
    };

    pub fn merge(&mut self, other: &Self) {
        let Self { runnable_wait } = self;
        runnable_wait.merge(&other.runnable_wait);
    }
}

/// `PID_FILTER` values: how a selected id is matched.
pub const PID_SELECT_PROCESS: u32 = 1;
pub const PID_SELECT_THREAD: u32 = 2;

/// Event counters, one per-CPU `u64` slot each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `sched_switch` calls.
    Switch = 0,
    /// `sched_wakeup` calls.
    Wakeup = 1,
    /// `sched_wakeup_new` calls.
    WakeupNew = 2,
    /// `sched_process_exit` calls.
    Exit = 3,
    /// Waits recorded into a histogram.
    WaitRecorded = 4,
    /// Task storage could not be allocated (memory pressure): the wait is lost.
    TaskStorageFail = 5,
    /// The per-cgroup map was full: the wait is lost.
    CgroupMapFull = 6,
    /// A ring-buffer record could not be reserved.
    RingbufDrop = 7,
    /// A kernel read failed (a wrong offset would show here).
    ReadFail = 8,
    /// The per-pid map was full.
    PidMapFull = 9,
}

impl Counter {
    pub const COUNT: u32 = 10;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Switch,
        Counter::Wakeup,
        Counter::WakeupNew,
        Counter::Exit,
        Counter::WaitRecorded,
        Counter::TaskStorageFail,
        Counter::CgroupMapFull,
        Counter::RingbufDrop,
        Counter::ReadFail,
        Counter::PidMapFull,
    ];

    /// Stable snake_case name used in the JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Switch => "sched_switch",
            Counter::Wakeup => "sched_wakeup",
            Counter::WakeupNew => "sched_wakeup_new",
            Counter::Exit => "sched_process_exit",
            Counter::WaitRecorded => "waits_recorded",
            Counter::TaskStorageFail => "task_storage_failures",
            Counter::CgroupMapFull => "cgroup_map_full",
            Counter::RingbufDrop => "ringbuf_dropped",
            Counter::ReadFail => "kernel_read_failures",
            Counter::PidMapFull => "pid_map_full",
        }
    }
}

/// Kind tag at the start of every ring-buffer record.
pub const RECORD_NEW_CGROUP: u32 = 1;

/// Bytes of a cgroup's directory name carried in [`NewCgroupRecord`].
pub const CGROUP_NAME_LEN: usize = 64;

/// Sent the first time a cgroup gets a histogram, so userspace can resolve its
/// path while it still exists (short-lived cgroups vanish before the session ends).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NewCgroupRecord {
    pub kind: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// NUL-terminated leaf name (`kernfs_node.name`), truncated.
    pub name: [u8; CGROUP_NAME_LEN],
}

const _: () = assert!(core::mem::size_of::<NewCgroupRecord>() == 80);
const _: () = assert!(core::mem::size_of::<CgroupStats>().is_multiple_of(8));
