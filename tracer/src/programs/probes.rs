//! The programs of the object, where each attaches, and whether the tracer
//! can work without it: data, so that the report can say exactly what ran.

use tracer_common::layout::FEATURE_WAKE_STAMP;

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A BTF-enabled tracepoint (`tp_btf`).
    TpBtf,
    /// fentry on a kernel function.
    FEntry,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::FEntry => "fentry",
        }
    }
}

/// One program of the object and the hook it needs.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Program (function) name in the object.
    pub program: &'static str,
    /// The tracepoint or kernel function it attaches to.
    pub target: &'static str,
    pub hook: Hook,
    /// Without a required probe the measurement (or the tier) would be wrong,
    /// so the tracer stops (or uses the other tier).
    pub required: bool,
    /// What it is for, in the words of an error message.
    pub role: &'static str,
    /// `FEATURE_*` bits of the kernel layout with which it is not needed (0:
    /// always needed), and why, for the report.
    pub unneeded_with: (u32, &'static str),
}

/// Why the wakeup programs are left out with [`FEATURE_WAKE_STAMP`].
const WAKE_STAMP: (u32, &str) = (
    FEATURE_WAKE_STAMP,
    "not needed: the kernel throttles tasks, not run queues, so a wakeup's wait is never throttled, \
     and its enqueue stamp dates the wait at the switch-in",
);

impl Probe {
    /// Whether the programs need it on a kernel with `features`.
    pub fn needed(&self, features: u32) -> bool {
        self.unneeded_with.0 & features == 0
    }
}

/// The tracepoint tier: complete on its own, on every kernel. In the order
/// they are attached: the programs that only follow a wait (exit, migration)
/// and begin one (wakeups) before `sched_switch`, which ends waits: the
/// measurement runs from its attach to its detach, which comes first (see
/// [`super::detach_all`]), so that no wait is counted outside it and none begins
/// with its migration unseen.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_process_exit",
        target: "sched_process_exit",
        hook: Hook::TpBtf,
        required: false,
        role: "frees per-task state when a task exits (the kernel frees it later otherwise)",
        unneeded_with: (0, ""),
    },
    Probe {
        program: "sched_migrate_task",
        target: "sched_migrate_task",
        hook: Hook::TpBtf,
        required: true,
        role: "splits a wait whose task moves to another CPU, so each part is measured on its own CPU",
        unneeded_with: (0, ""),
    },
    Probe {
        program: "sched_wakeup",
        target: "sched_wakeup",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a sleeping task is woken",
        unneeded_with: WAKE_STAMP,
    },
    Probe {
        program: "sched_wakeup_new",
        target: "sched_wakeup_new",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a new task is first queued",
        unneeded_with: WAKE_STAMP,
    },
    Probe {
        program: "sched_switch",
        target: "sched_switch",
        hook: Hook::TpBtf,
        required: true,
        role: "ends waits at switch-in and starts them when a runnable task is switched out",
        unneeded_with: (0, ""),
    },
];

/// The program that ends waits: the measurement runs while it is attached.
pub(super) const ENDS_WAITS: &str = "sched_switch";

/// The fentry tier, added where the kernel allows it: throttle episodes as
/// they happen, and an exact throttle clock on kernels before 6.6. All or
/// nothing.
pub const FENTRY_PROBES: &[Probe] = &[
    Probe {
        program: "throttle_cfs_rq",
        target: "throttle_cfs_rq",
        hook: Hook::FEntry,
        required: true,
        role: "names the cgroup whose quota ran out",
        unneeded_with: (0, ""),
    },
    Probe {
        program: "tg_throttle_down",
        target: "tg_throttle_down",
        hook: Hook::FEntry,
        required: true,
        role: "starts the throttle of each cgroup level below it",
        unneeded_with: (0, ""),
    },
    Probe {
        program: "tg_unthrottle_up",
        target: "tg_unthrottle_up",
        hook: Hook::FEntry,
        required: true,
        role: "ends it: reports the episode and advances the throttle clock",
        unneeded_with: (0, ""),
    },
];
