//! Value types of the maps shared by the eBPF programs and userspace, and the map
//! names userspace looks them up by.

// The counters index `CpuState::counters`; the contract re-exports them here.
pub use crate::counters::{Counter, CounterInfo, CounterKind};
pub use crate::stats::CgroupStats;

/// Per-cgroup statistics, one entry per cgroup shared by every CPU (updated
/// with atomic adds): `u64` cgroup id -> [`CgroupStats`]. Per-CPU entries
/// would cost `CPUs × 8.5 KiB` per cgroup, 1.6 GB for 1,000 cgroups on 192
/// CPUs, in the kernel and in every read.
pub const MAP_CGROUP_STATS: &str = "CGROUP_STATS";
/// Statistics of busy cgroups in fixed slots, beside [`MAP_CGROUP_STATS`]:
/// `u32` slot -> [`TaggedStats`]. Slot [`hot_slot`] of a cgroup is an array
/// index the programs compute, where a hash lookup costs them about 50 ns
/// per context switch. Userspace alone tags slots (a free slot, for a cgroup
/// whose figures moved) and frees them (the cgroup is gone); the programs
/// write a slot only while it is tagged with their cgroup, and the cgroup's
/// entry in the hash map otherwise. Its figures are the sum of both.
pub const MAP_HOT_STATS: &str = "HOT_STATS";
/// Slots of [`MAP_HOT_STATS`]: 2.2 MB whatever the CPU count.
pub const HOT_SLOTS: u32 = 256;

/// The slot of [`MAP_HOT_STATS`] a cgroup may have (Fibonacci hashing, as
/// [`stamp_slot`]).
#[inline(always)]
pub fn hot_slot(cgroup_id: u64) -> u32 {
    (cgroup_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u32 % HOT_SLOTS
}

/// Per-selection statistics (`--pid`, `--threads`), shared like the
/// cgroups': `u32` selection -> [`CgroupStats`].
pub const MAP_SELECTION_STATS: &str = "SELECTION_STATS";
/// When each group of cgroups last got figures: one [`Stamps`] value, slot
/// [`stamp_slot`] of a cgroup holding [`stamp_at`] of its last update, so
/// that userspace reads only the entries that changed (one value rather than
/// an entry per slot: one read).
pub const MAP_CGROUP_STAMPS: &str = "CGROUP_STAMPS";
/// Processes selected by `--pid`: `u32` tgid -> `u32` selection.
pub const MAP_SELECT_PROCESS: &str = "SELECT_PROCESS";
/// Threads selected by `--pid` (a thread id) or `--threads`: `u32` tid -> `u32` selection.
pub const MAP_SELECT_THREAD: &str = "SELECT_THREAD";
/// Who held the CPU while others waited: [`BlameKey`] -> [`BlameValue`].
pub const MAP_BLAME: &str = "BLAME";
/// Each CPU's cache of blame rows in front of [`MAP_BLAME`]: a per-CPU array
/// of one [`crate::blame_cache::BlameCache`], read once the programs are
/// detached.
pub const MAP_BLAME_CACHE: &str = "BLAME_CACHE";
/// Per-CPU scheduling state shared across CPUs: `u32` CPU -> [`CpuState`].
pub const MAP_CPU_STATE: &str = "CPU_STATE";
/// Array of [`TaggedStats`]s, [`SPILL_PER_CPU`] per possible CPU.
pub const MAP_SPILL: &str = "SPILL";
/// Rare records for userspace ([`NewCgroupRecord`], [`EpisodeRecord`]).
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-task wait state: task local storage, or on kernels before 6.1 a hash
/// map of [`MAX_TASKS`] entries keyed by thread id.
pub const MAP_TASK_WAIT: &str = "TASK_WAIT";
/// cfs_rq -> [`ThrottleClock`], kept by the fentry programs.
pub const MAP_THROTTLE_CLOCKS: &str = "THROTTLE_CLOCKS";

/// Maps whose capacity `--map-size NAME=N` may change, and what a too-small
/// one costs (counted: nothing is lost silently). The per-cgroup map has its
/// own flag, `--max-cgroups`.
pub const RESIZABLE_MAPS: [(&str, &str); 7] = [
    (
        MAP_BLAME,
        "victim and occupant pairs of one drain interval (blame_map_full)",
    ),
    (
        MAP_SELECTION_STATS,
        "--pid / --threads selections with figures (selection_map_full)",
    ),
    (MAP_SELECT_PROCESS, "processes selected by --pid"),
    (
        MAP_SELECT_THREAD,
        "threads selected by --pid or --threads (untraced threads)",
    ),
    (
        MAP_EVENTS,
        "bytes of the ring buffer, a power of two of at least 4096 (ringbuf_dropped)",
    ),
    (
        MAP_TASK_WAIT,
        "threads with wait state, before 6.1 (task_storage_failures)",
    ),
    (
        MAP_THROTTLE_CLOCKS,
        "throttled cfs_rqs the fentry tier follows (throttle_clocks_lost)",
    ),
];

/// Slots of [`MAP_CGROUP_STAMPS`]: cgroups share a slot when their ids hash
/// alike, and then are read together.
pub const STAMP_SLOTS: u32 = 4096;
/// The value of [`MAP_CGROUP_STAMPS`].
pub type Stamps = [u32; STAMP_SLOTS as usize];

/// A stamp counts `2^STAMP_SHIFT` ns (16.8 ms): a slot is written at most
/// once per stamp and CPU, so that a busy cgroup's slot stays in every CPU's
/// cache rather than bouncing between them, and a `u32` of them lasts 2.3
/// years of uptime.
pub const STAMP_SHIFT: u32 = 24;

/// The slot of a cgroup's stamp (Fibonacci hashing: cgroup ids are inode
/// numbers, often consecutive, which this spreads).
#[inline(always)]
pub fn stamp_slot(cgroup_id: u64) -> u32 {
    (cgroup_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as u32 % STAMP_SLOTS
}

/// The stamp of a time on the programs' clock (`bpf_ktime_get_ns`,
/// `CLOCK_MONOTONIC`).
#[inline(always)]
pub fn stamp_at(ns: u64) -> u32 {
    (ns >> STAMP_SHIFT) as u32
}

/// Name of the read-only global holding the [`crate::layout::KernelLayout`].
pub const GLOBAL_LAYOUT: &str = "LAYOUT";
/// Name of the read-only global that turns the selection lookups on (u32, 0 or 1).
pub const GLOBAL_SELECTIONS: &str = "SELECTIONS";

/// Name of the read-only global holding the slow-wait threshold in ns (u64;
/// 0, the default, sends none).
pub const GLOBAL_SLOWER: &str = "SLOWER";
/// Name of the read-only global that, non-zero, sends every wait of a
/// `--threads`-selected thread as a slow-wait record (u64; `--gc-log`).
pub const GLOBAL_SLOW_SELECTED: &str = "SLOW_SELECTED";
/// Name of the read-only global holding how many slow-wait records each CPU
/// may send a second (u64).
pub const GLOBAL_SLOW_RATE: &str = "SLOW_RATE";

/// Default capacity of the per-cgroup map; userspace may override it.
pub const DEFAULT_MAX_CGROUPS: u32 = 4096;
/// Capacity of the selection maps (selected processes and threads).
pub const MAX_SELECTED_TASKS: u32 = 16384;
/// Threads with wait state at once, where that state is a hash map (before 6.1).
pub const MAX_TASKS: u32 = 65536;
/// cfs_rqs (cgroups × CPUs) whose throttling the fentry programs follow.
pub const MAX_THROTTLE_CFS_RQS: u32 = 16384;
/// At most this many `--pid` and `--threads` selections.
pub const MAX_SELECTIONS: u32 = 64;
/// Capacity of the blame map (victim x occupant process pairs).
pub const MAX_BLAME: u32 = 16384;
/// Ring buffer size in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Run intervals each CPU remembers for blame (a power of two).
pub const RING: usize = 32;
/// Bytes of a task name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Per-task state, kept in task local storage so that it dies with the task and
/// cannot be confused with a later task that reuses the pid.
///
/// A wait is split into segments at migrations: each segment is on one CPU and
/// one cfs_rq, so its throttled and busy clocks are read on the same counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskWait {
    /// When the task last became runnable without running (programs' clock);
    /// 0 while it runs or sleeps.
    pub queued_at: u64,
    /// Start of the current segment.
    pub segment_start: u64,
    /// The cfs_rq of the current segment (a kernel address, compared only).
    pub cfs_rq: u64,
    /// The cfs_rq's throttled-time counter at the segment start.
    pub throttle0: u64,
    /// The CPU's busy clock ([`CpuState::busy_at`]) at the segment start.
    pub busy0: u64,
    /// Throttled and contended time of the finished segments.
    pub throttled_acc: u64,
    pub contended_acc: u64,
    /// The cgroup whose quota ran out, if the wait began with a throttle.
    pub throttled_by: u64,
    /// The kernel's run delay (`sched_info.run_delay`) with the wait ended by
    /// the last switch-in seen counted in it; 0 if none was seen. Where the
    /// wakeup programs are left out, a wait whose switch-in went unreported is
    /// what the run delay grew by since (see `crate::wake_stamp`).
    pub delay_seen: u64,
    /// CPU of the current segment.
    pub cpu: u32,
    /// `WAIT_*` bits.
    pub flags: u32,
}

/// `throttle0` was read.
pub const WAIT_THROTTLE_CLOCK: u32 = 1 << 0;
/// The task's hierarchy was throttled when the wait (segment) began.
pub const WAIT_STARTED_THROTTLED: u32 = 1 << 1;

/// Who ran on a CPU: enough to charge them for others' waits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupant {
    pub cgroup_id: u64,
    pub tgid: u32,
    pub _pad: u32,
    /// Process name (the thread group leader's `comm`), NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// One finished run of a task on a CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    pub start: u64,
    pub end: u64,
    pub who: Occupant,
}

/// What a CPU has been doing: its busy clock and its last runs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    /// Time non-idle tasks ran on this CPU, up to `since`.
    pub busy_ns: u64,
    /// When the current task was switched in (0: not seen yet).
    pub since: u64,
    /// The current task's address, as the last switch seen here said (0: none
    /// seen yet): a switch whose `prev` is another task is one the tracepoint
    /// did not report.
    pub task: u64,
    /// The current task, unless `idle`.
    pub current: Occupant,
    /// 1 while the idle task runs (or before the first switch is seen).
    pub idle: u32,
    /// Total intervals pushed; the newest is at `(head - 1) % RING`.
    pub head: u32,
    pub ring: [Interval; RING],
}

impl Default for Runs {
    fn default() -> Self {
        Self {
            busy_ns: 0,
            since: 0,
            task: 0,
            current: Occupant::default(),
            idle: 1,
            head: 0,
            ring: [Interval::default(); RING],
        }
    }
}

/// A CPU's scheduling state, in an array indexed by CPU (not a per-CPU map) so
/// that a migration, handled on another CPU, can read the source CPU's runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuState {
    pub runs: Runs,
    /// Non-zero while a program on this CPU frees a task's storage: a wakeup
    /// the kernel raises meanwhile (of an RCU thread, from the free itself)
    /// cannot have storage of its own, and is the tracer's own doing.
    pub freeing: u64,
    /// This CPU's run-queue clock on the programs' clock, for wakeups that
    /// date a wait without reading the time themselves.
    pub clock: crate::clock::ClockOffset,
    /// The first switch the programs saw here (0: none yet): a wait dated
    /// earlier began before the tracer could see it (see
    /// `crate::wake_stamp`).
    pub first_switch: u64,
    /// Event counters ([`Counter`]) of the programs that ran on this CPU. Here
    /// rather than in a per-CPU map: the entry is looked up anyway, and an array
    /// lookup is inlined where a per-CPU map lookup is a helper call.
    pub counters: [u64; Counter::COUNT as usize],
    /// The slow wait being reported from this CPU (`--slower`), and its rate
    /// limit. Here rather than in a map of its own: the wait's end has this
    /// entry at hand, and a lookup there would add a path to every wait's
    /// end, which the verifier checks on every path of `sched_switch`. Last,
    /// after the fields every switch touches, so that it moves none of them.
    pub slow: SlowWait,
}

impl CpuState {
    #[inline(always)]
    pub fn count(&mut self, counter: Counter) {
        if let Some(n) = self.counters.get_mut(counter as usize) {
            *n = n.wrapping_add(1);
        }
    }
}

/// A slow wait to report, and the CPU's rate limit (see [`CpuState::slow`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SlowWait {
    /// The task (an address, read with `bpf_probe_read_kernel`).
    pub task: u64,
    pub cgroup_id: u64,
    pub throttled_by: u64,
    pub end: u64,
    pub total: u64,
    pub throttled: u64,
    pub contended: u64,
    pub other: u64,
    /// The second the CPU's count is of, and the count.
    pub window: u64,
    pub sent: u64,
    /// 1 from the wait's noting to its report.
    pub noted: u64,
    /// Its thread's `--threads` selection (`u32::MAX`: none).
    pub thread: u64,
}

/// One cfs_rq's throttled time as the fentry programs see it: a throttle
/// clock for kernels whose own counter is approximate (before 6.6), and the
/// episode in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleClock {
    /// `bpf_ktime_get_ns()` when the cfs_rq's hierarchy was throttled on its
    /// CPU (`tg_throttle_down` with `throttle_count` 0); 0 while it is not.
    pub start: u64,
    /// Throttled time of the finished episodes.
    pub total: u64,
    /// The cgroup whose quota ran out (this one or an ancestor).
    pub throttled_by: u64,
    /// 1 if the cfs_rq had queued entities when it was throttled: only those
    /// episodes delayed anyone and are reported.
    pub queued: u32,
    pub _pad: u32,
}

/// Slots per CPU in [`MAP_SPILL`].
pub const SPILL_PER_CPU: u32 = 4;

/// A cgroup's statistics in a slot of an array, tagged with the cgroup: a
/// slot of [`MAP_SPILL`] or of [`MAP_HOT_STATS`].
///
/// Spill slots are where a cgroup's statistics go on one CPU while its entry
/// in the per-cgroup map cannot be allocated: the kernel's allocator keeps
/// only one to three entries of this size ready per CPU and refills them
/// asynchronously, so a burst of new cgroups on one CPU finds it empty.
/// Preallocated; userspace adds the slots to their cgroups' figures and frees
/// them when the cgroup is gone. Only its own CPU writes a slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaggedStats {
    /// 0: free.
    pub cgroup_id: u64,
    pub stats: CgroupStats,
}

impl TaggedStats {
    pub const ZERO: Self = Self {
        cgroup_id: 0,
        stats: CgroupStats::ZERO,
    };
}

/// Blame victims that are selections rather than cgroups have this bit set.
pub const VICTIM_SELECTION: u64 = 1 << 63;

/// Who (occupant cgroup and process) held the CPU while tasks of `victim` waited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlameKey {
    /// Cgroup id, or `VICTIM_SELECTION | selection`.
    pub victim: u64,
    pub occupant_cgroup: u64,
    pub occupant_tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlameValue {
    /// Contended time charged, weighted by how long the occupant ran.
    pub ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// Kind tag at the start of every ring-buffer record.
pub const RECORD_NEW_CGROUP: u32 = 1;
pub const RECORD_EPISODE: u32 = 2;

pub const RECORD_STALL: u32 = 3;

/// Bytes of a cgroup's directory name carried in [`NewCgroupRecord`].
pub const CGROUP_NAME_LEN: usize = 64;

/// Sent the first time a cgroup gets statistics, so userspace can resolve its
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

/// One throttle episode of a cgroup on a CPU, seen when its first task runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpisodeRecord {
    pub kind: u32,
    pub cpu: u32,
    /// The cgroup whose tasks were throttled.
    pub cgroup_id: u64,
    /// The cgroup whose quota ran out (itself or an ancestor); 0 if unknown.
    pub throttled_by: u64,
    /// How long the cfs_rq was throttled (kernel clock, see the layout's method).
    pub duration_ns: u64,
    /// `bpf_ktime_get_ns()` when the episode was seen to end.
    pub seen_at: u64,
    /// The cfs_rq's cumulative throttled time once this episode ended: the
    /// episode's identity on its cgroup and CPU, by which userspace drops a
    /// repeat (the kernel's dedup map is only a filter, and may forget).
    /// [`EPISODE_END_UNKNOWN`] where the kernel keeps no such clock: every
    /// record then counts.
    pub episode_end: u64,
}

/// [`EpisodeRecord::episode_end`] of a cfs_rq without a throttle clock.
pub const EPISODE_END_UNKNOWN: u64 = u64::MAX;

/// Occupants named in a [`StallRecord`].
pub const STALL_OCCUPANTS: usize = 4;

/// Who ran on a slow wait's CPU during it, and for how long.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallOccupant {
    pub cgroup_id: u64,
    pub tgid: u32,
    pub _pad: u32,
    pub ns: u64,
    /// The process's name (its leader's `comm`), NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// [`StallRecord::flags`]: the CPU no longer remembered all the runs during
/// the wait; the occupants are those of its end.
pub const STALL_RUNS_PARTIAL: u32 = 1 << 0;

/// One wait of at least the `--slower` threshold, sent as its task gets the
/// CPU: a `runqslower` line with its causes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallRecord {
    pub kind: u32,
    /// The CPU it ended on (a wait that moved began elsewhere).
    pub cpu: u32,
    pub tid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at its end; it began `wait_ns` before.
    pub end: u64,
    pub wait_ns: u64,
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    /// The cgroup whose quota ran out, if it began throttled; 0 otherwise.
    pub throttled_by: u64,
    /// Busy time of the CPU during the wait not in `occupants` (the runs of
    /// others beyond the first four seen).
    pub others_ns: u64,
    /// `STALL_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// The thread's name.
    pub comm: [u8; COMM_LEN],
    /// Its process's name.
    pub process: [u8; COMM_LEN],
    /// The longest runs of others on its CPU during the wait, by process.
    pub occupants: [StallOccupant; STALL_OCCUPANTS],
}

impl StallOccupant {
    /// Adds `ns` of `who`'s to the slots: to its own, or a free one, or in
    /// place of the shortest if longer; what no slot keeps goes to `others`.
    #[inline(always)]
    pub fn add(
        slots: &mut [StallOccupant; STALL_OCCUPANTS],
        others: &mut u64,
        who: &Occupant,
        ns: u64,
    ) {
        let mut shortest = 0;
        let mut shortest_ns = u64::MAX;
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.ns == 0 || (slot.cgroup_id == who.cgroup_id && slot.tgid == who.tgid) {
                slot.cgroup_id = who.cgroup_id;
                slot.tgid = who.tgid;
                slot.comm = who.comm;
                slot.ns = slot.ns.wrapping_add(ns);
                return;
            }
            if slot.ns < shortest_ns {
                shortest = i;
                shortest_ns = slot.ns;
            }
        }
        if ns <= shortest_ns {
            *others = others.wrapping_add(ns);
            return;
        }
        if let Some(slot) = slots.get_mut(shortest) {
            *others = others.wrapping_add(slot.ns);
            *slot = StallOccupant {
                cgroup_id: who.cgroup_id,
                tgid: who.tgid,
                _pad: 0,
                ns,
                comm: who.comm,
            };
        }
    }
}

const _: () = assert!(core::mem::size_of::<NewCgroupRecord>() == 80);
const _: () = assert!(core::mem::size_of::<EpisodeRecord>() == 48);
const _: () = assert!(core::mem::size_of::<StallRecord>() == 120 + 4 * 40);
const _: () = assert!(core::mem::size_of::<ThrottleClock>() == 32);
const _: () = assert!(core::mem::size_of::<Interval>() == 48);
const _: () = assert!(core::mem::size_of::<TaskWait>() == 80);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    use crate::account::tests::who;

    #[test]
    fn a_stall_keeps_its_four_longest_occupants_and_the_rest_as_others() {
        let mut slots = [StallOccupant::default(); STALL_OCCUPANTS];
        let mut others = 0;
        for (cgroup, tgid, ns) in [
            (1, 10, 100),
            (2, 20, 50),
            (1, 10, 100),
            (3, 30, 40),
            (4, 40, 30),
        ] {
            StallOccupant::add(&mut slots, &mut others, &who(cgroup, tgid), ns);
        }
        let kept: Vec<(u64, u64)> = slots.iter().map(|s| (s.cgroup_id, s.ns)).collect();
        assert_eq!(
            kept,
            [(1, 200), (2, 50), (3, 40), (4, 30)],
            "merged by process"
        );
        // Shorter than every slot: counted apart.
        StallOccupant::add(&mut slots, &mut others, &who(5, 50), 20);
        assert_eq!(others, 20);
        // Longer than the shortest: takes its place, which goes to the others.
        StallOccupant::add(&mut slots, &mut others, &who(6, 60), 45);
        let kept: Vec<(u64, u64)> = slots.iter().map(|s| (s.cgroup_id, s.ns)).collect();
        assert_eq!(kept, [(1, 200), (2, 50), (3, 40), (6, 45)]);
        assert_eq!(others, 50);
        let total: u64 = slots.iter().map(|s| s.ns).sum::<u64>() + others;
        assert_eq!(total, 100 + 50 + 100 + 40 + 30 + 20 + 45, "nothing lost");
    }
}
