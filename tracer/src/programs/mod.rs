//! Loading the embedded eBPF object and attaching its programs.
//!
//! Which programs exist, where they attach and whether the tracer can work
//! without them is data ([`PROBES`]), so that the report can say exactly what
//! ran. Which object ([`Store`]) and which probes ([`Tier`]) suit the kernel
//! is decided from its BTF.

mod probes;
mod store;
mod tier;

use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, Iter, Program, ProgramError},
};
pub use probes::{FENTRY_PROBES, Hook, Need, PROBES, Probe};
pub use store::{Store, StoreChoice};
pub use tier::{Tier, TierChoice, fentry_layout, fentry_unavailable};
use tracer_common::{
    layout::KernelLayout,
    maps::{
        CgroupStats, GLOBAL_LAYOUT, GLOBAL_SELECTIONS, GLOBAL_SLOW_RATE, GLOBAL_SLOW_SELECTED,
        GLOBAL_SLOWER, MAP_CGROUP_STATS, MAP_CPU_STATE, MAP_SELECTION_STATS, MAP_SPILL,
        MAP_TASK_WAIT, SPILL_PER_CPU,
    },
};

use self::{probes::ENDS_WAITS, store::LEGACY_STATS_BUDGET};
use crate::{btf::Btf, recording::ProbeStatus};

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
    /// Probes (by target) loaded but not attached, required or not: the
    /// tests leave one out to provoke the loss its absence causes.
    pub left_out: Vec<String>,
    /// Slow-wait threshold in ns (0: none are sent), and how many each CPU
    /// may send a second.
    pub slower_ns: u64,
    pub slow_rate: u64,
    /// Send every wait of a `--threads`-selected thread too.
    pub slow_selected: bool,
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
            // The budget bounds the preallocation; a smaller `--max-cgroups`
            // stands. An entry is shared by the CPUs: its size does not grow
            // with them.
            let per_entry = size_of::<CgroupStats>();
            let budget = (LEGACY_STATS_BUDGET / per_entry.max(1)) as u32;
            options.max_cgroups.min(budget.max(16))
        }
    };
    let load = |layout: &KernelLayout, probes: &[&Probe]| {
        let (needed, unneeded): (Vec<&Probe>, Vec<&Probe>) =
            probes.iter().partition(|p| p.needed(layout.features));
        let mut ebpf = load_object(options, layout, &aya_btf, cpus, max_cgroups)?;
        let mut statuses = load_all(&mut ebpf, &needed, &aya_btf)?;
        let attached_at = attach_all(&mut ebpf, &needed, &mut statuses, &options.left_out)?;
        statuses.extend(unneeded.iter().map(|p| ProbeStatus {
            name: p.target.to_owned(),
            kind: p.hook.name().to_owned(),
            attached: false,
            verified_insns: None,
            error: None,
            not_needed: Some(p.why_not_needed().to_owned()),
        }));
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
    let slow_selected = u64::from(options.slow_selected);
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(btf))
        // Task storage has no userspace API in aya; only the programs use it.
        .allow_unsupported_maps()
        .override_global(GLOBAL_LAYOUT, layout, true)
        .override_global(GLOBAL_SELECTIONS, &selections, true)
        .override_global(GLOBAL_SLOWER, &options.slower_ns, true)
        .override_global(GLOBAL_SLOW_RATE, &options.slow_rate, true)
        .override_global(GLOBAL_SLOW_SELECTED, &slow_selected, true)
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
            not_needed: None,
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
    left_out: &[String],
) -> anyhow::Result<Instant> {
    let mut attached_at = Instant::now();
    for (&probe, status) in probes.iter().zip(statuses) {
        if status.error.is_some() {
            continue;
        }
        if left_out.iter().any(|t| t == probe.target) {
            status.error = Some("left out on request".to_owned());
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
        Hook::Iter => <&mut Iter>::try_from(program)?
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
        Hook::Iter => run_iterator(<&mut Iter>::try_from(program)?).map_err(|e| {
            anyhow!(
                "running {} over each {} failed: {e:#}",
                probe.program,
                probe.target
            )
        })?,
    }
    Ok(())
}

/// Runs an iterator program once over every object (reading its file to the
/// end does), then unloads it: what it does is done.
fn run_iterator(iter: &mut Iter) -> anyhow::Result<()> {
    let link = iter.attach()?;
    let link = iter.take_link(link)?;
    let mut file = link.into_file()?;
    let ran = std::io::copy(&mut file, &mut std::io::sink());
    drop(file);
    iter.unload()?;
    ran?;
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
            Hook::Iter => <&mut Iter>::try_from(program).map(|p| p.unload()),
        };
    }
    detached_at
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::btf::tests::Builder;

    /// A kernel's BTF with these functions and, if `mem_alloc`, the
    /// allocator struct that came in 6.1.
    pub(crate) fn kernel(functions: &[&str], mem_alloc: bool) -> Btf {
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
