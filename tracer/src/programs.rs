//! Loading the embedded eBPF object and attaching its programs.
//!
//! Which programs exist, where they attach and whether the tracer can work
//! without them is data ([`PROBES`]), so that the report can say exactly what
//! ran.

use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, Program, ProgramError},
};
use tracer_common::{
    layout::{FEATURE_FENTRY, KernelLayout, method},
    maps::{
        CgroupStats, GLOBAL_LAYOUT, GLOBAL_SELECTIONS, MAP_CGROUP_STATS, MAP_CPU_STATE,
        MAP_SELECTION_STATS, MAP_SPILL, MAP_TASK_WAIT, SPILL_PER_CPU,
    },
};

use crate::{btf::Btf, recording::ProbeStatus};

/// The objects built from `tracer-ebpf` by build.rs: the same programs with
/// their state kept two ways (see [`Store`]).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
static OBJECT_LEGACY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-legacy"));

/// Where the programs keep their state, by what the kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// Task local storage, and statistics entries allocated when a cgroup is
    /// first seen (6.1+: `bpf_mem_alloc` makes that safe from the scheduler).
    TaskStorage,
    /// A hash map keyed by thread id, and preallocated statistics maps
    /// (before 6.1; task storage for tracing programs needs 5.12).
    Legacy,
}

impl Store {
    /// Chosen from the kernel's BTF: `bpf_mem_alloc` came in 6.1, after task
    /// storage for tracing programs (5.12).
    pub fn for_kernel(btf: &Btf) -> Self {
        if btf.has_struct("bpf_mem_alloc") {
            Self::TaskStorage
        } else {
            Self::Legacy
        }
    }

    fn object(self) -> &'static [u8] {
        match self {
            Self::TaskStorage => OBJECT,
            Self::Legacy => OBJECT_LEGACY,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::TaskStorage => "task local storage",
            Self::Legacy => {
                "a hash map by thread id and preallocated statistics (kernel before 6.1)"
            }
        }
    }
}

/// Memory the preallocated per-cgroup statistics may take on kernels before
/// 6.1, over all CPUs: it bounds the cgroups traced there.
const LEGACY_STATS_BUDGET: usize = 64 << 20;

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
}

/// The tracepoint tier: complete on its own, on every kernel. In the order
/// they are attached: the programs that only follow a wait (exit, migration)
/// and begin one (wakeups) before `sched_switch`, which ends waits: the
/// measurement runs from its attach to its detach, which comes first (see
/// [`detach_all`]), so that no wait is counted outside it and none begins
/// with its migration unseen.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_process_exit",
        target: "sched_process_exit",
        hook: Hook::TpBtf,
        required: false,
        role: "frees per-task state when a task exits (the kernel frees it later otherwise)",
    },
    Probe {
        program: "sched_migrate_task",
        target: "sched_migrate_task",
        hook: Hook::TpBtf,
        required: true,
        role: "splits a wait whose task moves to another CPU, so each part is measured on its own CPU",
    },
    Probe {
        program: "sched_wakeup",
        target: "sched_wakeup",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a sleeping task is woken",
    },
    Probe {
        program: "sched_wakeup_new",
        target: "sched_wakeup_new",
        hook: Hook::TpBtf,
        required: true,
        role: "starts a wait when a new task is first queued",
    },
    Probe {
        program: "sched_switch",
        target: "sched_switch",
        hook: Hook::TpBtf,
        required: true,
        role: "ends waits at switch-in and starts them when a runnable task is switched out",
    },
];

/// The program that ends waits: the measurement runs while it is attached.
const ENDS_WAITS: &str = "sched_switch";

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
    },
    Probe {
        program: "tg_throttle_down",
        target: "tg_throttle_down",
        hook: Hook::FEntry,
        required: true,
        role: "starts the throttle of each cgroup level below it",
    },
    Probe {
        program: "tg_unthrottle_up",
        target: "tg_unthrottle_up",
        hook: Hook::FEntry,
        required: true,
        role: "ends it: reports the episode and advances the throttle clock",
    },
];

/// Where the programs keep their state (`--store`, for testing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    /// From the kernel's BTF ([`Store::for_kernel`]).
    #[default]
    Auto,
    /// The pre-6.1 object, whatever the kernel.
    Legacy,
}

impl StoreChoice {
    pub fn resolve(self, btf: &Btf) -> Store {
        match self {
            Self::Auto => Store::for_kernel(btf),
            Self::Legacy => Store::Legacy,
        }
    }
}

/// Which probes to use (`--tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TierChoice {
    /// fentry where the kernel allows it, the tracepoints alone otherwise.
    #[default]
    Auto,
    /// The tracepoints alone.
    Tracepoints,
    /// fentry, or fail.
    Fentry,
}

/// The tier in use, and why not the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    Fentry,
    Tracepoints { why_not_fentry: String },
}

impl Tier {
    /// `fentry` or `tracepoints`, for labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Tracepoints { .. } => "tracepoints",
        }
    }

    /// One line for reports: which tier and why.
    pub fn describe(&self) -> String {
        match self {
            Self::Fentry => "fentry (throttle episodes from throttle_cfs_rq, tg_throttle_down \
                             and tg_unthrottle_up) with the tracepoints"
                .to_owned(),
            Self::Tracepoints { why_not_fentry } => {
                format!("tracepoints only ({why_not_fentry})")
            }
        }
    }
}

/// Options the programs are built with.
pub struct LoadOptions {
    pub layout: KernelLayout,
    pub store: Store,
    pub tier: TierChoice,
    pub max_cgroups: u32,
    /// `--map-size` capacities, applied over the defaults.
    pub map_sizes: Vec<(String, u32)>,
    /// Whether any `--pid` / `--threads` selection exists.
    pub selections: bool,
}

/// Programs loaded and attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeStatus>,
    /// The layout the programs run with (the tier may change the throttle
    /// method).
    pub layout: KernelLayout,
    pub tier: Tier,
    /// When the programs were attached: the start of the measurement.
    pub attached_at: Instant,
}

/// The last lines of a verifier log, which hold the reason.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nverifier log (last lines):\n  {}", tail.join("\n  "))
    }
}

/// The fentry tier's layout: episodes from fentry, and its own throttle
/// clock where the kernel's is not exact.
pub fn fentry_layout(layout: &KernelLayout) -> KernelLayout {
    let mut layout = *layout;
    layout.features |= FEATURE_FENTRY;
    if layout.throttle_method != method::SELF_TIME {
        layout.throttle_method = method::FENTRY;
    }
    layout
}

/// Why the fentry tier cannot be tried on this kernel, if it cannot.
pub fn fentry_unavailable(btf: &Btf) -> Option<String> {
    let missing: Vec<&str> = FENTRY_PROBES
        .iter()
        .map(|p| p.target)
        .filter(|f| !btf.has_function(f))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the kernel's BTF has no function {} (inlined or renamed)",
            missing.join(", ")
        )
    })
}

/// Loads the object that suits the kernel and attaches the probes: the fentry
/// tier first where it may work (trying it is the only reliable test: a kernel
/// can refuse it by policy), then the tracepoints.
pub fn load_and_attach(options: &LoadOptions, btf: &Btf) -> anyhow::Result<Loaded> {
    let aya_btf = aya::Btf::from_sys_fs().context(
        "cannot read the kernel's BTF at /sys/kernel/btf/vmlinux; \
         the tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )?;
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, e)| anyhow!("cannot count the possible CPUs ({what}): {e}"))?
        as u32;
    let max_cgroups = match options.store {
        Store::TaskStorage => options.max_cgroups,
        Store::Legacy => {
            let per_entry = size_of::<CgroupStats>() * cpus as usize;
            options
                .max_cgroups
                .min((LEGACY_STATS_BUDGET / per_entry.max(1)) as u32)
                .max(16)
        }
    };
    let load = |layout: &KernelLayout, probes: &[&Probe]| {
        let mut ebpf = load_object(options, layout, &aya_btf, cpus, max_cgroups)?;
        let mut statuses = load_all(&mut ebpf, probes, &aya_btf)?;
        let attached_at = attach_all(&mut ebpf, probes, &mut statuses)?;
        anyhow::Ok((ebpf, statuses, attached_at))
    };

    let why_not_fentry = match (options.tier, fentry_unavailable(btf)) {
        (TierChoice::Tracepoints, _) => "tracepoints chosen with --tier".to_owned(),
        (TierChoice::Fentry, Some(why)) => bail!("the fentry tier is not available: {why}"),
        (TierChoice::Auto, Some(why)) => why,
        (TierChoice::Auto | TierChoice::Fentry, None) => {
            let layout = fentry_layout(&options.layout);
            let probes: Vec<&Probe> = FENTRY_PROBES.iter().chain(PROBES).collect();
            match load(&layout, &probes) {
                Ok((ebpf, probes, attached_at)) => {
                    return Ok(Loaded {
                        ebpf,
                        probes,
                        layout,
                        tier: Tier::Fentry,
                        attached_at,
                    });
                }
                Err(e) if options.tier == TierChoice::Fentry => {
                    return Err(e.context("the fentry tier was asked for (--tier fentry)"));
                }
                // The object is dropped, which detaches whatever was attached.
                Err(e) => format!("fentry refused: {}", short_reason(&e)),
            }
        }
    };
    let probes: Vec<&Probe> = PROBES.iter().collect();
    let (ebpf, probes, attached_at) = load(&options.layout, &probes)?;
    Ok(Loaded {
        ebpf,
        probes,
        layout: options.layout,
        tier: Tier::Tracepoints { why_not_fentry },
        attached_at,
    })
}

/// The innermost reason of a refused probe, on one line.
fn short_reason(e: &anyhow::Error) -> String {
    let cause = e.root_cause().to_string();
    cause.lines().next().unwrap_or_default().to_owned()
}

/// Creates the maps and reads the programs of the object for `options.store`,
/// with `layout` in its read-only data. Nothing is attached yet.
fn load_object(
    options: &LoadOptions,
    layout: &KernelLayout,
    btf: &aya::Btf,
    cpus: u32,
    max_cgroups: u32,
) -> anyhow::Result<Ebpf> {
    let selections = u32::from(options.selections);
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(btf))
        // Task storage has no userspace API in aya; only the programs use it.
        .allow_unsupported_maps()
        .override_global(GLOBAL_LAYOUT, layout, true)
        .override_global(GLOBAL_SELECTIONS, &selections, true)
        .map_max_entries(MAP_CGROUP_STATS, max_cgroups)
        .map_max_entries(MAP_CPU_STATE, cpus)
        .map_max_entries(MAP_SPILL, cpus * SPILL_PER_CPU);
    if options.store == Store::Legacy && !options.selections {
        // Preallocated: no selections, no memory for them.
        loader.map_max_entries(MAP_SELECTION_STATS, 1);
    }
    for (name, entries) in &options.map_sizes {
        if name == MAP_TASK_WAIT && options.store != Store::Legacy {
            bail!("--map-size {name}: task local storage has no capacity; it applies before 6.1");
        }
        loader.map_max_entries(name, *entries);
    }
    loader.load(options.store.object()).map_err(|e| {
        anyhow!(
            "the kernel refused the tracer's eBPF object ({} variant): {e}",
            options.store.describe()
        )
    })
}

/// Loads `probes` into the kernel (the verifier checks them; this is the slow
/// part); fails on the first required one the kernel refuses, naming it.
/// Optional ones that fail are reported in their status.
fn load_all(
    ebpf: &mut Ebpf,
    probes: &[&Probe],
    btf: &aya::Btf,
) -> anyhow::Result<Vec<ProbeStatus>> {
    let mut statuses = Vec::new();
    for &probe in probes {
        let result = load_one(ebpf, probe, btf);
        let verified_insns = ebpf
            .program(probe.program)
            .and_then(|p| p.info().ok())
            .and_then(|info| info.verified_instruction_count());
        let error = match result {
            Ok(()) => None,
            Err(e) if probe.required => return Err(needed(e, probe)),
            Err(e) => Some(format!("{e:#}")),
        };
        statuses.push(ProbeStatus {
            name: probe.target.to_owned(),
            kind: probe.hook.name().to_owned(),
            attached: false,
            verified_insns,
            error,
        });
    }
    Ok(statuses)
}

fn needed(e: anyhow::Error, probe: &Probe) -> anyhow::Error {
    e.context(format!(
        "the tracer cannot work without {}/{} ({})",
        probe.hook.name(),
        probe.target,
        probe.role
    ))
}

/// Attaches the loaded `probes` one right after the other, so that the
/// measurement starts at one moment however long loading took (seconds under
/// emulation): returns that moment.
fn attach_all(
    ebpf: &mut Ebpf,
    probes: &[&Probe],
    statuses: &mut [ProbeStatus],
) -> anyhow::Result<Instant> {
    let mut attached_at = Instant::now();
    for (&probe, status) in probes.iter().zip(statuses) {
        if status.error.is_some() {
            continue;
        }
        if probe.program == ENDS_WAITS {
            attached_at = Instant::now();
        }
        match attach_one(ebpf, probe) {
            Ok(()) => status.attached = true,
            Err(e) if probe.required => return Err(needed(e, probe)),
            Err(e) => status.error = Some(format!("{e:#}")),
        }
    }
    Ok(attached_at)
}

/// The object's program for `probe`.
fn program_of<'a>(ebpf: &'a mut Ebpf, probe: &Probe) -> anyhow::Result<&'a mut Program> {
    ebpf.program_mut(probe.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", probe.program))
}

fn load_one(ebpf: &mut Ebpf, probe: &Probe, btf: &aya::Btf) -> anyhow::Result<()> {
    let what = format!("{} ({}/{})", probe.program, probe.hook.name(), probe.target);
    let program = program_of(ebpf, probe)?;
    let refused = |e: ProgramError| match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let tail = log_tail(&verifier_log.to_string());
            anyhow!("the kernel refused program {what}: {io_error}{tail}")
        }
        _ => anyhow!("the kernel refused program {what}: {e}"),
    };
    match probe.hook {
        Hook::TpBtf => <&mut BtfTracePoint>::try_from(program)?
            .load(probe.target, btf)
            .map_err(refused),
        Hook::FEntry => <&mut FEntry>::try_from(program)?
            .load(probe.target, btf)
            .map_err(refused),
    }
}

fn attach_one(ebpf: &mut Ebpf, probe: &Probe) -> anyhow::Result<()> {
    let failed = |e: ProgramError| {
        anyhow!(
            "attaching {} to {}/{} failed: {e}",
            probe.program,
            probe.hook.name(),
            probe.target
        )
    };
    let program = program_of(ebpf, probe)?;
    match probe.hook {
        Hook::TpBtf => {
            <&mut BtfTracePoint>::try_from(program)?
                .attach()
                .map_err(failed)?;
        }
        Hook::FEntry => {
            <&mut FEntry>::try_from(program)?.attach().map_err(failed)?;
        }
    }
    Ok(())
}

/// Detaches and unloads every program; the maps stay readable. Returns when
/// the first was detached: the end of the measurement, however long the rest
/// takes.
pub fn detach_all(ebpf: &mut Ebpf) -> Instant {
    let detached_at = Instant::now();
    // The reverse of the attach order: `sched_switch` first, which ends the
    // measurement at once (detaching takes a while, seconds under emulation,
    // and no wait must end uncounted in the recording's time).
    for probe in FENTRY_PROBES.iter().chain(PROBES).rev() {
        let Some(program) = ebpf.program_mut(probe.program) else {
            continue;
        };
        // An unloaded (never attached) program reports an error here; nothing to do.
        let _ = match probe.hook {
            Hook::TpBtf => <&mut BtfTracePoint>::try_from(program).map(|p| p.unload()),
            Hook::FEntry => <&mut FEntry>::try_from(program).map(|p| p.unload()),
        };
    }
    detached_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::tests::Builder;

    /// A kernel's BTF with these functions and, if `mem_alloc`, the
    /// allocator struct that came in 6.1.
    fn kernel(functions: &[&str], mem_alloc: bool) -> Btf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let proto = b.func_proto(int, &[]);
        for f in functions {
            b.func(f, proto);
        }
        if mem_alloc {
            b.composite(false, "bpf_mem_alloc", 64, &[("cache", int, 0, 0)]);
        }
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn the_state_store_follows_the_allocator() {
        assert_eq!(Store::for_kernel(&kernel(&[], true)), Store::TaskStorage);
        assert_eq!(Store::for_kernel(&kernel(&[], false)), Store::Legacy);
    }

    #[test]
    fn fentry_needs_all_three_functions() {
        let all = ["throttle_cfs_rq", "tg_throttle_down", "tg_unthrottle_up"];
        assert_eq!(fentry_unavailable(&kernel(&all, true)), None);
        let why = fentry_unavailable(&kernel(&all[..2], true)).unwrap();
        assert!(why.contains("tg_unthrottle_up"), "{why}");
        assert!(!why.contains("tg_throttle_down"), "{why}");
    }

    #[test]
    fn the_fentry_tier_keeps_an_exact_kernel_clock_and_replaces_the_others() {
        for (kernel_method, expected) in [
            (method::SELF_TIME, method::SELF_TIME),
            (method::PELT_CLOCK, method::FENTRY),
            (method::TASK_CLOCK, method::FENTRY),
            (method::STATE, method::FENTRY),
        ] {
            let layout = KernelLayout {
                throttle_method: kernel_method,
                ..KernelLayout::UNSET
            };
            let tier = fentry_layout(&layout);
            assert_eq!(tier.throttle_method, expected);
            assert!(tier.has(FEATURE_FENTRY));
            assert!(!layout.has(FEATURE_FENTRY));
        }
    }

    #[test]
    fn a_refusal_is_told_by_its_innermost_reason() {
        let e = anyhow!("the kernel refused program x (fentry/x): Operation not permitted")
            .context("the tracer cannot work without fentry/x");
        assert_eq!(
            short_reason(&e),
            "the kernel refused program x (fentry/x): Operation not permitted"
        );
        assert_eq!(
            Tier::Tracepoints {
                why_not_fentry: "fentry refused: EPERM".into()
            }
            .describe(),
            "tracepoints only (fentry refused: EPERM)"
        );
        assert_eq!(Tier::Fentry.name(), "fentry");
    }

    #[test]
    fn verifier_log_tail() {
        assert_eq!(log_tail(""), "");
        let log: String = (1..=10).map(|i| format!("line {i}\n\n")).collect();
        let tail = log_tail(&log);
        assert!(
            tail.starts_with("\nverifier log (last lines):\n  line 5\n"),
            "{tail}"
        );
        assert!(tail.ends_with("line 10"));
        assert!(!tail.contains("line 4\n"));
    }
}
