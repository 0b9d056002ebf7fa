//! The event counters: one table of what each counts, its name and its kind,
//! which the report, the dump and the metrics iterate. The programs keep one
//! slot of each per CPU, in [`crate::maps::CpuState`].

/// Event counters, one slot each in every CPU's [`crate::maps::CpuState`]. What each one
/// counts, its stable name and its [`CounterKind`] are in [`Counter::info`]:
/// the one table the report, the dump and the metrics iterate.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Switch = 0,
    Wakeup = 1,
    WakeupNew = 2,
    Exit = 3,
    WaitRecorded = 4,
    TaskStorageFail = 5,
    CgroupMapFull = 6,
    RingbufDrop = 7,
    ReadFail = 8,
    SelectionMapFull = 9,
    WaitMigrated = 10,
    CgroupMoved = 11,
    BlameMapFull = 12,
    Episode = 13,
    RingOverrun = 14,
    CgroupSpilled = 15,
    SwitchUnseen = 16,
    WakeupInOwnFree = 17,
    ThrottleClockLost = 18,
    WakeUnseen = 19,
    SlowLimited = 20,
}

/// What a counter tells its reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Something the programs saw happen (events per second, waits recorded).
    Event,
    /// Data the user needed and does not have: shown as LOST in the report and
    /// as `tracer_lost_total{reason}`.
    Loss,
    /// The tracer's own mechanics or a note on precision: nothing is missing
    /// from the figures, but an operator may want to see it. Exported with
    /// the events.
    Internal,
}

/// One row of the counter table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    /// Stable snake_case name: the key in dumps and the metric label.
    pub name: &'static str,
    pub kind: CounterKind,
    /// What it counts, for the metrics' documentation and the reader of a dump.
    pub help: &'static str,
}

impl Counter {
    pub const COUNT: u32 = 21;
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
        Counter::SelectionMapFull,
        Counter::WaitMigrated,
        Counter::CgroupMoved,
        Counter::BlameMapFull,
        Counter::Episode,
        Counter::RingOverrun,
        Counter::CgroupSpilled,
        Counter::SwitchUnseen,
        Counter::WakeupInOwnFree,
        Counter::ThrottleClockLost,
        Counter::WakeUnseen,
        Counter::SlowLimited,
    ];

    /// The counter table.
    pub const fn info(self) -> CounterInfo {
        use CounterKind::{Event, Internal, Loss};
        let (name, kind, help) = match self {
            Counter::Switch => ("sched_switch", Event, "sched_switch calls"),
            Counter::Wakeup => ("sched_wakeup", Event, "sched_wakeup calls"),
            Counter::WakeupNew => ("sched_wakeup_new", Event, "sched_wakeup_new calls"),
            Counter::Exit => ("sched_process_exit", Event, "sched_process_exit calls"),
            Counter::WaitRecorded => (
                "waits_recorded",
                Event,
                "run-queue waits recorded into a histogram",
            ),
            Counter::WaitMigrated => (
                "waits_migrated",
                Event,
                "waits whose task moved to another CPU (split per CPU)",
            ),
            Counter::Episode => ("throttle_episodes", Event, "throttle episode records sent"),
            Counter::TaskStorageFail => (
                "task_storage_failures",
                Loss,
                "per-task state could not be allocated: the wait is lost",
            ),
            Counter::CgroupMapFull => (
                "cgroup_map_full",
                Loss,
                "no per-cgroup entry and no spill slot: the wait or the run on a CPU is lost",
            ),
            Counter::RingbufDrop => (
                "ringbuf_dropped",
                Loss,
                "a ring-buffer record (new cgroup, throttle episode, slow wait) could not be reserved",
            ),
            Counter::ReadFail => (
                "kernel_read_failures",
                Loss,
                "a kernel read failed (a woken task's run queue, a migrating task's cgroup), or a wait ended on another CPU without a migration seen: that wait's split is lost",
            ),
            Counter::SelectionMapFull => (
                "selection_map_full",
                Loss,
                "a selected task's wait found the selection map full",
            ),
            Counter::ThrottleClockLost => (
                "throttle_clocks_lost",
                Loss,
                "wait segments whose throttle clock went back (the fentry tier's map evicted its cfs_rq), or throttles whose clock could not be kept: their throttled time is unknown",
            ),
            Counter::WakeUnseen => (
                "woken_waits_unseen",
                Loss,
                "waits begun by a wakeup whose end the sched_switch tracepoint did not report, where the wakeup programs are left out (6.18+): their start is unknown, and they are not recorded",
            ),
            Counter::SlowLimited => (
                "slow_waits_limited",
                Loss,
                "slow waits (--slower) over the per-CPU rate limit: counted in the figures, but no record of them was sent",
            ),
            Counter::BlameMapFull => (
                "blame_map_full",
                Loss,
                "the blame map was full: that contended time stays unattributed",
            ),
            // Kept in the figures: the wait is recorded, only its throttled
            // part of one segment is unknown and counted as 0.
            Counter::CgroupMoved => (
                "waits_moved_cgroup",
                Internal,
                "waiting tasks moved to another cgroup: that segment's throttled time is counted as 0",
            ),
            // Kept in the figures: the contended time is recorded, and the part
            // that no remembered run covers is shown as unattributed.
            Counter::RingOverrun => (
                "blame_ring_overruns",
                Internal,
                "waits that began before the oldest run the CPU remembers (partly unattributed)",
            ),
            // Recovered: the switch-in is dated from the kernel's own
            // sched_info, and the wait it ended recorded then.
            Counter::SwitchUnseen => (
                "switches_unseen",
                Internal,
                "switches the sched_switch tracepoint did not report, found at the next one; the wait is ended at the kernel's own arrival time",
            ),
            // The tracer's own doing, of a kernel thread: not the user's data.
            Counter::WakeupInOwnFree => (
                "wakeups_in_own_free",
                Internal,
                "wakeups raised while the tracer freed a task's storage (an RCU thread the free itself woke), which the kernel lets no program record",
            ),
            // Nothing is lost: userspace adds the slots to their cgroups.
            Counter::CgroupSpilled => (
                "cgroup_entries_spilled",
                Internal,
                "events kept in a spill slot until the cgroup's entry could be allocated",
            ),
        };
        CounterInfo { name, kind, help }
    }

    /// Stable snake_case name used in the JSON output.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    pub const fn kind(self) -> CounterKind {
        self.info().kind
    }

    /// The counters of one kind, in table order.
    pub fn of_kind(kind: CounterKind) -> impl Iterator<Item = Counter> {
        Self::ALL.into_iter().filter(move |c| c.kind() == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_table_is_whole_and_names_are_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in slot order");
            assert!(!c.info().help.is_empty());
        }
        for a in Counter::ALL {
            let same = Counter::ALL.iter().filter(|b| b.name() == a.name()).count();
            assert_eq!(same, 1, "{} is named once", a.name());
        }
        let kinds = [CounterKind::Event, CounterKind::Loss, CounterKind::Internal];
        let total: usize = kinds.iter().map(|&k| Counter::of_kind(k).count()).sum();
        assert_eq!(total, Counter::ALL.len(), "every counter has one kind");
    }
}
