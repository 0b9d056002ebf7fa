//! The agent's own health on `/metrics`: what the programs handled and
//! lost, what they and the agent cost, how many cgroups it tracks, and what
//! it runs on.

use tracer_common::maps::{Counter, CounterKind};

use super::{Snapshot, Writer, seconds};

/// Every family of the agent's own health.
pub(super) fn families(w: &mut Writer, s: &Snapshot) {
    w.family(
        "tracer_events_total",
        "counter",
        "Events the programs handled (rate() gives events per second), and the tracer's own mechanics.",
    );
    for c in Counter::of_kind(CounterKind::Event).chain(Counter::of_kind(CounterKind::Internal)) {
        w.sample(
            "tracer_events_total",
            &[("event", c.name())],
            s.counters[c as usize],
        );
    }
    w.family(
        "tracer_lost_total",
        "counter",
        "What could not be recorded: ring-buffer drops, full maps, failed allocations or reads.",
    );
    for c in Counter::of_kind(CounterKind::Loss) {
        w.sample(
            "tracer_lost_total",
            &[("reason", c.name())],
            s.counters[c as usize],
        );
    }
    w.family(
        "tracer_program_cpu_ratio",
        "gauge",
        "Share of one CPU each eBPF program used, measured in a 1 s window every minute (kernel BPF statistics, off in between).",
    );
    for p in &s.programs {
        w.sample(
            "tracer_program_cpu_ratio",
            &[("program", &p.name)],
            p.cpu_ratio,
        );
    }
    w.family(
        "tracer_program_run_seconds",
        "gauge",
        "Mean run time of each eBPF program in that window.",
    );
    for p in &s.programs {
        w.sample(
            "tracer_program_run_seconds",
            &[("program", &p.name)],
            p.ns_per_run / 1e9,
        );
    }
    w.family(
        "tracer_agent_cpu_seconds_total",
        "counter",
        "CPU time of the agent process (user and system).",
    );
    w.sample(
        "tracer_agent_cpu_seconds_total",
        &[],
        seconds(s.agent_cpu_ns),
    );
    w.family(
        "tracer_agent_resident_bytes",
        "gauge",
        "Resident memory of the agent process.",
    );
    w.sample("tracer_agent_resident_bytes", &[], s.agent_resident_bytes);
    if let Some(heap) = s.agent_heap_bytes {
        w.family(
            "tracer_agent_heap_bytes",
            "gauge",
            "Heap memory the agent holds (allocated and not freed); resident memory also keeps freed memory the allocator has not returned.",
        );
        w.sample("tracer_agent_heap_bytes", &[], heap);
    }
    if let Some(r) = &s.recorder {
        w.family(
            "tracer_recorder_bytes",
            "gauge",
            "Heap memory the flight recorder's intervals hold.",
        );
        w.sample("tracer_recorder_bytes", &[], r.bytes);
        w.family(
            "tracer_recorder_triggers_total",
            "counter",
            "Recorder triggers met, whether or not they had a dump written (one a span).",
        );
        w.sample("tracer_recorder_triggers_total", &[], r.triggers);
        w.family(
            "tracer_recorder_trigger_dumps_total",
            "counter",
            "Trigger dumps the flight recorder wrote.",
        );
        w.sample("tracer_recorder_trigger_dumps_total", &[], r.dumps);
    }
    w.family(
        "tracer_cgroups",
        "gauge",
        "Cgroups in the kernel's maps (tracked), gone but kept for the current dump window (departed), with series of their own (exported).",
    );
    w.sample("tracer_cgroups", &[("state", "tracked")], s.tracked_cgroups);
    w.sample(
        "tracer_cgroups",
        &[("state", "departed")],
        s.departed_cgroups,
    );
    w.sample(
        "tracer_cgroups",
        &[("state", "exported")],
        s.exported_cgroups,
    );
    w.family(
        "tracer_cgroup_entries_read_total",
        "counter",
        "Per-cgroup entries read from the kernel's map: each read reads only those that changed since the previous one.",
    );
    w.sample("tracer_cgroup_entries_read_total", &[], s.entries_read);
    w.family(
        "tracer_cgroups_evicted_total",
        "counter",
        "Cgroups found removed and dropped from the kernel's maps and the exported series.",
    );
    w.sample("tracer_cgroups_evicted_total", &[], s.evicted_cgroups);
    w.family(
        "tracer_build_info",
        "gauge",
        "The tracer and the kernel it runs on.",
    );
    w.sample(
        "tracer_build_info",
        &[
            ("version", &s.version),
            ("kernel", &s.kernel),
            ("throttle_method", &s.throttle_method),
            ("tier", &s.tier),
        ],
        1,
    );
}
