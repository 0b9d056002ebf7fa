//! Loading the embedded eBPF object and attaching its programs.
//!
//! Which programs exist, where they attach and whether the tracer can work
//! without them is data ([`PROBES`]), so that the report can say exactly what
//! ran.

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, ProgramError},
};
use serde::{Deserialize, Serialize};
use tracer_common::{
    layout::KernelLayout,
    maps::{
        GLOBAL_LAYOUT, GLOBAL_SELECTIONS, MAP_CGROUP_STATS, MAP_CPU_STATE, MAP_SPILL, SPILL_PER_CPU,
    },
};

/// The object built from `tracer-ebpf` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// One program of the object and the hook it needs.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Program (function) name in the object.
    pub program: &'static str,
    /// BTF-enabled tracepoint it attaches to.
    pub tracepoint: &'static str,
    /// Without a required probe the measurement would be wrong, so the tracer stops.
    pub required: bool,
    /// What it is for, in the words of an error message.
    pub role: &'static str,
}

pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_switch",
        tracepoint: "sched_switch",
        required: true,
        role: "ends waits at switch-in and starts them when a runnable task is switched out",
    },
    Probe {
        program: "sched_wakeup",
        tracepoint: "sched_wakeup",
        required: true,
        role: "starts a wait when a sleeping task is woken",
    },
    Probe {
        program: "sched_wakeup_new",
        tracepoint: "sched_wakeup_new",
        required: true,
        role: "starts a wait when a new task is first queued",
    },
    Probe {
        program: "sched_migrate_task",
        tracepoint: "sched_migrate_task",
        required: true,
        role: "splits a wait whose task moves to another CPU, so each part is measured on its own CPU",
    },
    Probe {
        program: "sched_process_exit",
        tracepoint: "sched_process_exit",
        required: false,
        role: "frees per-task state when a task exits (the kernel frees it later otherwise)",
    },
];

/// What happened to one probe, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: String,
    pub attached: bool,
    /// Instructions the verifier processed to accept the program: how close it
    /// is to the kernel's limit of one million.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Options the programs are built with.
pub struct LoadOptions {
    pub layout: KernelLayout,
    pub max_cgroups: u32,
    /// Whether any `--pid` / `--threads` selection exists.
    pub selections: bool,
}

/// The last lines of a verifier log, which hold the reason.
fn verifier_tail(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { verifier_log, .. } => log_tail(&verifier_log.to_string()),
        _ => String::new(),
    }
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nverifier log (last lines):\n  {}", tail.join("\n  "))
    }
}

/// Loads the object with the kernel layout filled in and attaches every probe.
/// Fails on the first required probe the kernel refuses, naming it.
pub fn load_and_attach(options: &LoadOptions) -> anyhow::Result<(Ebpf, Vec<ProbeStatus>)> {
    let btf = aya::Btf::from_sys_fs().context(
        "cannot read the kernel's BTF at /sys/kernel/btf/vmlinux; \
         the tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )?;
    let selections = u32::from(options.selections);
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, e)| anyhow!("cannot count the possible CPUs ({what}): {e}"))?
        as u32;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        // Task storage has no userspace API in aya; only the programs use it.
        .allow_unsupported_maps()
        .override_global(GLOBAL_LAYOUT, &options.layout, true)
        .override_global(GLOBAL_SELECTIONS, &selections, true)
        .map_max_entries(MAP_CGROUP_STATS, options.max_cgroups)
        .map_max_entries(MAP_CPU_STATE, cpus)
        .map_max_entries(MAP_SPILL, cpus * SPILL_PER_CPU)
        .load(OBJECT)
        .map_err(|e| {
            anyhow!(
                "the kernel refused the tracer's eBPF object: {e} (the tracer needs Linux 5.12 \
                 or later, for task local storage in tracing programs)"
            )
        })?;

    let mut statuses = Vec::new();
    for probe in PROBES {
        let result = attach_one(&mut ebpf, probe, &btf);
        let verified_insns = ebpf
            .program(probe.program)
            .and_then(|p| p.info().ok())
            .and_then(|info| info.verified_instruction_count());
        let error = match result {
            Ok(()) => None,
            Err(e) if probe.required => {
                return Err(e.context(format!(
                    "the tracer cannot work without tp_btf/{} ({})",
                    probe.tracepoint, probe.role
                )));
            }
            Err(e) => Some(format!("{e:#}")),
        };
        statuses.push(ProbeStatus {
            name: probe.tracepoint.to_owned(),
            kind: "tp_btf".to_owned(),
            attached: error.is_none(),
            verified_insns,
            error,
        });
    }
    Ok((ebpf, statuses))
}

fn attach_one(ebpf: &mut Ebpf, probe: &Probe, btf: &aya::Btf) -> anyhow::Result<()> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(probe.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", probe.program))?
        .try_into()?;
    program.load(probe.tracepoint, btf).map_err(|e| {
        let tail = verifier_tail(&e);
        anyhow!(
            "the kernel refused program {} (tp_btf/{}): {e}{tail}",
            probe.program,
            probe.tracepoint
        )
    })?;
    program.attach().map_err(|e| {
        anyhow!(
            "attaching {} to tp_btf/{} failed: {e}",
            probe.program,
            probe.tracepoint
        )
    })?;
    Ok(())
}

/// Detaches and unloads every program; the maps stay readable.
pub fn detach_all(ebpf: &mut Ebpf) {
    for probe in PROBES {
        if let Some(program) = ebpf.program_mut(probe.program)
            && let Ok(tp) = <&mut BtfTracePoint>::try_from(program)
        {
            // An unloaded (never attached) program reports an error here; nothing to do.
            let _ = tp.unload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
