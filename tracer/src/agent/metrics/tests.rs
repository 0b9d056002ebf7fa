use tracer_common::{causes::Causes, maps::CounterKind};

use super::*;

fn snapshot() -> Snapshot {
    let mut series = Series {
        wait_count: 3,
        wait_ns: 3_000_000,
        causes: Causes {
            throttled_ns: 2_000_000_000,
            contended_ns: 500_000_000,
            ..Causes::ZERO
        },
        ..Series::default()
    };
    series.wait_buckets[5] = 2;
    series.wait_buckets[7] = 1;
    let mut counters = [0; Counter::COUNT as usize];
    counters[Counter::Switch as usize] = 1234;
    counters[Counter::RingbufDrop as usize] = 2;
    Snapshot {
        cgroups: vec![CgroupSeries {
            path: "/kube\"pods\"/a".into(),
            series: series.clone(),
            cpu_stat: Some(CpuStat {
                nr_periods: 40,
                nr_throttled: 38,
                throttled_ns: 2_500_000_000,
                local_throttled_ns: Some(2_500_000_000),
                ..CpuStat::default()
            }),
            quota_cpus: Some(0.2),
            quota_burst_seconds: Some(0.02),
            guaranteed_cpus: Some(0.25),
            psi: Some(crate::psi::Pressure {
                some_us: 3_000_000,
                full_us: Some(1_250_000),
            }),
            occupants: vec![("/system.slice/cron.service".into(), 400_000_000)],
            workload: crate::workload::Workload::from_path("/kube\"pods\"/a"),
        }],
        other: Some(series),
        counters,
        programs: vec![ProgramCost {
            name: "sched_switch".into(),
            cpu_ratio: 0.02,
            ns_per_run: 200.0,
            runs_per_second: 100_000.0,
        }],
        agent_cpu_ns: 1_500_000_000,
        agent_resident_bytes: 12 << 20,
        agent_heap_bytes: Some(5 << 20),
        tracked_cgroups: 5,
        entries_read: 12,
        departed_cgroups: 0,
        evicted_cgroups: 7,
        exported_cgroups: 1,
        version: "0.1.0".into(),
        kernel: "6.18".into(),
        throttle_method: "self".into(),
        tier: "tracepoints".into(),
        recorder: Some(RecorderStats {
            bytes: 4096,
            triggers: 3,
            dumps: 1,
        }),
        labels: Vec::new(),
        psi: Some(crate::psi::Pressure {
            some_us: 2_500_000,
            full_us: Some(0),
        }),
    }
}

/// A pod's container: `tracer_cgroup_info` names it, and `labels` puts the
/// names asked for on every series of it ("other" gets them empty, so that
/// a family keeps one set of label names).
#[test]
fn workload_labels_name_a_pod() {
    let path = "/kubepods/burstable/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d/\
                0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut s = snapshot();
    let mut w = crate::workload::Workload::from_path(path);
    w.namespace = Some("shop".into());
    w.pod = Some("api".into());
    w.container = Some("app".into());
    s.cgroups[0].path = path.into();
    s.cgroups[0].workload = w;
    let cg = format!("cgroup=\"{path}\"");
    let plain = render(&s, false);
    assert!(
        plain.contains(&format!(
            "tracer_cgroup_info{{{cg},kind=\"container\",namespace=\"shop\",pod=\"api\",\
             container=\"app\",qos=\"burstable\",runtime=\"\",\
             container_id=\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\
             pod_uid=\"1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d\",unit=\"\"}} 1\n"
        )),
        "{plain}"
    );
    assert!(plain.contains(&format!(
        "tracer_wait_seconds_total{{{cg},cause=\"throttled\"}} 2\n"
    )));
    s.labels = vec!["namespace", "pod", "container"];
    let labelled = render(&s, false);
    let ids = format!("{cg},namespace=\"shop\",pod=\"api\",container=\"app\"");
    for line in [
        format!("tracer_wait_seconds_total{{{ids},cause=\"throttled\"}} 2\n"),
        format!("tracer_runnable_wait_seconds_count{{{ids}}} 3\n"),
        format!("tracer_cpu_quota_cpus{{{ids}}} 0.2\n"),
        format!(
            "tracer_contended_by_seconds_total{{{ids},occupant=\"/system.slice/cron.service\"}} 0.4\n"
        ),
        "tracer_wait_seconds_total{cgroup=\"other\",namespace=\"\",pod=\"\",container=\"\",\
         cause=\"contended\"} 0.5\n"
            .to_owned(),
    ] {
        assert!(labelled.contains(&line), "{line}not in\n{labelled}");
    }
}

#[test]
fn prometheus_text() {
    let text = render(&snapshot(), false);
    let cg = r#"cgroup="/kube\"pods\"/a""#;
    assert!(text.contains("# TYPE tracer_runnable_wait_seconds histogram\n"));
    // Cumulative buckets: 2 by 1.05 ms (2^20 ns), 3 from 16.8 ms on.
    assert!(
        text.contains(&format!(
            "tracer_runnable_wait_seconds_bucket{{{cg},le=\"0.001048576\"}} 2\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "tracer_runnable_wait_seconds_bucket{{{cg},le=\"0.016777216\"}} 3\n"
    )));
    assert!(text.contains(&format!(
        "tracer_runnable_wait_seconds_bucket{{{cg},le=\"+Inf\"}} 3\n"
    )));
    assert!(text.contains(&format!("tracer_runnable_wait_seconds_count{{{cg}}} 3\n")));
    assert!(text.contains("# TYPE tracer_wait_seconds_total counter\n"));
    assert!(text.contains(&format!(
        "tracer_wait_seconds_total{{{cg},cause=\"throttled\"}} 2\n"
    )));
    assert!(text.contains("tracer_wait_seconds_total{cgroup=\"other\",cause=\"contended\"} 0.5\n"));
    assert!(text.contains(&format!(
        "tracer_cpu_stat_throttled_periods_total{{{cg}}} 38\n"
    )));
    assert!(text.contains(&format!("tracer_cpu_quota_cpus{{{cg}}} 0.2\n")));
    assert!(text.contains(&format!("tracer_cpu_quota_burst_seconds{{{cg}}} 0.02\n")));
    assert!(text.contains(&format!("tracer_cpu_weight_guaranteed_cpus{{{cg}}} 0.25\n")));
    assert!(text.contains(&format!(
        "tracer_cgroup_psi_cpu_seconds_total{{{cg},kind=\"some\"}} 3\n"
    )));
    assert!(text.contains(&format!(
        "tracer_cgroup_psi_cpu_seconds_total{{{cg},kind=\"full\"}} 1.25\n"
    )));
    assert!(text.contains(&format!(
        "tracer_contended_by_seconds_total{{{cg},occupant=\"/system.slice/cron.service\"}} 0.4\n"
    )));
    assert!(text.contains("tracer_events_total{event=\"sched_switch\"} 1234\n"));
    assert!(text.contains("tracer_lost_total{reason=\"ringbuf_dropped\"} 2\n"));
    assert!(text.contains("tracer_agent_cpu_seconds_total 1.5\n"));
    assert!(text.contains("tracer_program_cpu_ratio{program=\"sched_switch\"} 0.02\n"));
    assert!(text.contains("tracer_program_run_seconds{program=\"sched_switch\"} 0.0000002\n"));
    assert!(text.contains("tracer_recorder_bytes 4096\n"));
    assert!(text.contains("tracer_psi_cpu_seconds_total{kind=\"some\"} 2.5\n"));
    assert!(text.contains("tracer_psi_cpu_seconds_total{kind=\"full\"} 0\n"));
    assert!(text.contains("tracer_recorder_triggers_total 3\n"));
    assert!(text.contains("tracer_recorder_trigger_dumps_total 1\n"));
    let without = render(
        &Snapshot {
            recorder: None,
            ..snapshot()
        },
        false,
    );
    assert!(
        !without.contains("tracer_recorder"),
        "no recorder, no series"
    );
    assert!(!text.contains("# EOF"));
    // Every sample line is `name{labels} value` with a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn openmetrics_names_counters_without_total_and_ends_with_eof() {
    let text = render(&snapshot(), true);
    assert!(text.contains("# TYPE tracer_wait_seconds counter\n"));
    assert!(text.contains("tracer_wait_seconds_total{cgroup=\"other\",cause=\"other\"} 0\n"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_counter_is_exported_once_by_its_kind() {
    let text = render(&snapshot(), false);
    for c in Counter::ALL {
        let event = format!("tracer_events_total{{event=\"{}\"}} ", c.name());
        let lost = format!("tracer_lost_total{{reason=\"{}\"}} ", c.name());
        let (as_event, as_loss) = (text.contains(&event), text.contains(&lost));
        assert!(as_event != as_loss, "{} exported once", c.name());
        assert_eq!(as_loss, c.kind() == CounterKind::Loss, "{}", c.name());
    }
}
