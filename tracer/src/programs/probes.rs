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
    /// A BPF iterator over kernel objects (`iter/<target>`): run once, as
    /// soon as the tracepoints are attached, and unloaded then.
    Iter,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::FEntry => "fentry",
            Self::Iter => "iter",
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
    /// On which kernels the programs need it.
    pub need: Need,
}

/// On which kernels (by `FEATURE_*` bits of the layout) a probe is needed,
/// and, where it is not, why, for the report.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    Always,
    /// Not with any of these features.
    Without(u32, &'static str),
    /// Only with all of these.
    With(u32, &'static str),
}

/// Why the wakeup programs are left out with [`FEATURE_WAKE_STAMP`].
const WAKE_STAMP: Need = Need::Without(
    FEATURE_WAKE_STAMP,
    "not needed: the kernel throttles tasks, not run queues, so a wakeup's wait is never throttled, \
     and its enqueue stamp dates the wait at the switch-in",
);

impl Probe {
    /// Whether the programs need it on a kernel with `features`.
    pub fn needed(&self, features: u32) -> bool {
        match self.need {
            Need::Always => true,
            Need::Without(bits, _) => bits & features == 0,
            Need::With(bits, _) => bits & features == bits,
        }
    }

    /// Why it is not needed, for the report.
    pub fn why_not_needed(&self) -> &'static str {
        match self.need {
            Need::Always => "",
            Need::Without(_, why) | Need::With(_, why) => why,
        }
    }
}

/// The tracepoint tier: complete on its own, on every kernel. In the order
/// they are attached: the programs that only follow a wait (exit, migration)
/// and begin one (wakeups) before `sched_switch`, which ends waits: the
/// measurement runs from its attach to its detach, which comes first (see
/// [`super::detach_all`]), so that no wait is counted outside it and none begins
/// with its migration unseen. The iterator runs once after it: a task's run
/// delay noted then stays right for its next wait.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_process_exit",
        target: "sched_process_exit",
        hook: Hook::TpBtf,
        required: false,
        role: "frees per-task state when a task exits (the kernel frees it later otherwise)",
        need: Need::Always,
    },
    Probe {
        program: "sched_migrate_task",
        target: "sched_migrate_task",
        hook: Hook::TpBtf,
        required: true,
        role: "splits a wait whose task moves to another CPU, so each part is measured on its own CPU",
        need: Need::Always,
    },
    Probe {
        program: "sched_wakeup",
        target: "sched_wakeup",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a sleeping task is woken",
        need: WAKE_STAMP,
    },
    Probe {
        program: "sched_wakeup_new",
        target: "sched_wakeup_new",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a new task is first queued",
        need: WAKE_STAMP,
    },
    Probe {
        program: "sched_switch",
        target: "sched_switch",
        hook: Hook::TpBtf,
        required: true,
        role: "ends waits at switch-in and starts them when a runnable task is switched out",
        need: Need::Always,
    },
    Probe {
        program: "note_run_delays",
        target: "task",
        hook: Hook::Iter,
        required: false,
        role: "notes every task's run delay as tracing begins, which dates the first wait of a \
               task asleep then if the tracepoint does not report its switch-in",
        need: Need::With(
            FEATURE_WAKE_STAMP,
            "not needed: the wakeup programs date every wait",
        ),
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
        need: Need::Always,
    },
    Probe {
        program: "tg_throttle_down",
        target: "tg_throttle_down",
        hook: Hook::FEntry,
        required: true,
        role: "starts the throttle of each cgroup level below it",
        need: Need::Always,
    },
    Probe {
        program: "tg_unthrottle_up",
        target: "tg_unthrottle_up",
        hook: Hook::FEntry,
        required: true,
        role: "ends it: reports the episode and advances the throttle clock",
        need: Need::Always,
    },
];
