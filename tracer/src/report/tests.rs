use std::collections::BTreeMap;

use tracer_common::{causes::Causes, hist::LatencyHist};

use super::*;
use crate::{
    cgroup::Mode,
    cpustat::{CpuStat, Quota},
    process::PidKind,
    recording::{
        Blame, BlamedProcess, Episodes, Events, PidEntry, ProbeStatus, QuotaInfo, ThreadsEntry,
    },
    selection::MatchedThread,
    verdict::{Facts, judge},
    weight::Weight,
};

fn hist(values: &[u64]) -> WaitHistogram {
    let mut h = LatencyHist::ZERO;
    for &v in values {
        h.record(v);
    }
    WaitHistogram::from_hist(&h)
}

fn split(values: &[u64], throttled: u64, contended: u64) -> WaitSplit {
    let runnable_wait = hist(values);
    let other = runnable_wait.summary.total_ns - throttled - contended;
    WaitSplit {
        runnable_wait,
        causes: Causes {
            throttled_ns: throttled,
            contended_ns: contended,
            other_ns: other,
            ..Causes::ZERO
        },
        ..WaitSplit::default()
    }
}

fn busy_weight() -> Weight {
    Weight {
        file: "cpu.shares".into(),
        value: 1024,
        guaranteed_mcpu: 1_000,
    }
}

fn recording() -> Recording {
    let mut events = Events::default();
    events.set(Counter::Switch, 123_456);
    events.set(Counter::WaitRecorded, 1_000);
    let mut busy = split(&[500_000_000, 500_000_000], 0, 1_000_000_000);
    busy.blame = vec![Blame {
        path: "/neighbour".into(),
        id: 9,
        ns: 1_000_000_000,
        workload: None,
        ran_ns: 1_800_000_000,
        weight: Some(Weight {
            file: "cpu.shares".into(),
            value: 512,
            guaranteed_mcpu: 500,
        }),
        processes: vec![BlamedProcess {
            tgid: 4242,
            comm: "apt-get".into(),
            ns: 1_000_000_000,
        }],
    }];
    let busy_verdict = judge(&Facts {
        duration_ns: 2_000_000_000,
        wait_ns: 1_000_000_000,
        run_ns: 1_000_000_000,
        causes: Causes {
            contended_ns: 1_000_000_000,
            ..Causes::ZERO
        },
        others_charged_ns: 1_000_000_000,
        top_other: Some(("/neighbour".into(), 1.0, "apt-get pid 4242".into())),
        top_other_weight: Some((1_800_000_000, busy.blame[0].weight.clone().unwrap())),
        weight: Some(busy_weight()),
        ..Facts::default()
    });
    let limited = split(&[80_000_000; 20], 1_590_000_000, 0);
    let limited_verdict = judge(&Facts {
        duration_ns: 2_000_000_000,
        wait_ns: 1_600_000_000,
        run_ns: 400_000_000,
        causes: Causes {
            throttled_ns: 1_590_000_000,
            ..Causes::ZERO
        },
        ..Facts::default()
    });
    Recording {
        format: crate::dump::FORMAT.into(),
        format_version: crate::dump::VERSION,
        tool: "tracer".into(),
        tool_version: "0.1.0".into(),
        host: "test-host".into(),
        kernel: "6.18.0".into(),
        cpus: 2,
        cgroup_mode: Mode::Hybrid,
        cpu_hierarchy: "/sys/fs/cgroup/cpu".into(),
        throttle_method: "cfs_rq.throttled_clock_self_time".into(),
        tier: String::new(),
        state: String::new(),
        started_unix_ns: 0,
        started_monotonic_ns: None,
        duration_ns: 2_000_000_000,
        probes: vec![
            ProbeStatus {
                name: "sched_switch".into(),
                kind: "tp_btf".into(),
                attached: true,
                verified_insns: Some(1234),
                error: None,
                not_needed: None,
            },
            ProbeStatus {
                name: "sched_process_exit".into(),
                kind: "tp_btf".into(),
                attached: false,
                verified_insns: None,
                error: Some("refused".into()),
                not_needed: None,
            },
        ],
        sched_slice_ns: 0,
        events,
        cgroups: vec![
            CgroupEntry {
                path: "/limited".into(),
                id: 43,
                wait: limited,
                on_cpu: hist(&[20_000_000; 20]),
                quota: Some(QuotaInfo {
                    quota: Quota {
                        quota_us: 20_000,
                        period_us: 100_000,
                        burst_us: 0,
                    },
                    owner: "/limited".into(),
                }),
                cpu_stat: Some(CpuStat {
                    nr_periods: 20,
                    nr_throttled: 20,
                    throttled_ns: 1_600_000_000,
                    local_throttled_ns: Some(1_600_000_000),
                    ..CpuStat::default()
                }),
                throttle_episodes: Some(Episodes {
                    count: 20,
                    total_ns: 1_600_000_000,
                    durations: hist(&[80_000_000; 20]),
                    per_cpu: vec![[1, 20, 1_600_000_000]],
                    throttled_by: BTreeMap::from([("/limited".into(), 20)]),
                }),
                verdict: limited_verdict,
                workload: None,
                weight: None,
                psi: Some(crate::psi::PsiWindow {
                    some_ns: 1_600_000_000,
                    full_ns: Some(1_500_000_000),
                }),
            },
            CgroupEntry {
                path: "/busy".into(),
                id: 42,
                wait: busy,
                on_cpu: hist(&[4_000_000; 250]),
                quota: None,
                cpu_stat: None,
                throttle_episodes: None,
                verdict: busy_verdict,
                workload: None,
                weight: Some(busy_weight()),
                psi: None,
            },
        ],
        pids: vec![PidEntry {
            pid: 77,
            kind: PidKind::Thread,
            comm: "GC Thread#0".into(),
            cgroup: Some("/busy".into()),
            wait: split(&[3_000_000], 0, 3_000_000),
            on_cpu: hist(&[1_000_000]),
            verdict: judge(&Facts::default()),
        }],
        threads: vec![ThreadsEntry {
            pattern: "GC Thread*".into(),
            matched: vec![MatchedThread {
                tid: 77,
                tgid: 70,
                comm: "GC Thread#0".into(),
            }],
            untraced: 0,
            wait: split(&[3_000_000], 0, 3_000_000),
            on_cpu: hist(&[1_000_000]),
            verdict: judge(&Facts::default()),
        }],
        intervals: Vec::new(),
        trigger: None,
        slower_ns: 0,
        stalls_of_selected: false,
        stalls: Vec::new(),
        stalls_omitted: 0,
        gc_pauses: Vec::new(),
        host_psi: None,
    }
}

#[test]
fn report_shows_tables_causes_and_details() {
    let text = render(&recording(), TextOptions::default());
    assert!(text.contains("kernel 6.18.0 | 2 CPUs"), "{text}");
    assert!(text.contains("probes: tp_btf/sched_switch\n"), "{text}");
    assert!(text.contains("probe not attached: tp_btf/sched_process_exit: refused"));
    assert!(text.contains("throttled time from: cfs_rq.throttled_clock_self_time"));
    assert!(text.contains("123,456 sched_switch"));
    assert!(text.contains("nothing lost"));
    let busy = text.lines().find(|l| l.starts_with("/busy ")).unwrap();
    // Two waits of 500 ms in 2 s: 50 % of the time.
    assert!(busy.contains("1.00 s") && busy.contains("50.0 %"), "{busy}");
    let causes = text
        .lines()
        .filter(|l| l.starts_with("/limited "))
        .nth(1)
        .unwrap();
    assert!(
        causes.contains("79.5 %") && causes.ends_with("quota expiry"),
        "{causes}"
    );
    assert!(
        text.contains("quota: 20.0 ms per 100 ms (0.20 CPUs)"),
        "{text}"
    );
    assert!(
        text.contains(
            "throttled time: traced 1.59 s in 0 waits | cpu.stat 1.60 s | cpu.stat.local 1.60 s (20 of 20 periods throttled)"
        ),
        "{text}"
    );
    assert!(
        text.contains("waited 1.60 s in 20 waits: throttled 1.59 s, contended 0 ns, other 10.0 ms"),
        "{text}"
    );
    assert!(
        text.contains("ran 400 ms in 20 slices: median 20.0 ms"),
        "{text}"
    );
    assert!(
        text.contains("throttle episodes: 20 totalling 1.60 s on 1 CPUs"),
        "{text}"
    );
    assert!(
        text.contains("waited behind: /neighbour 1.00 s (apt-get 4242 1.00 s)"),
        "{text}"
    );
    assert!(text.contains("verdict: host contention"), "{text}");
    assert!(text.contains("thread 77 GC Thread#0 in /busy"), "{text}");
    assert!(
        text.contains("threads 'GC Thread*': 1 matched in 1 processes"),
        "{text}"
    );
}

#[test]
fn losses_are_loud() {
    let mut rec = recording();
    rec.events.set(Counter::CgroupMapFull, 3);
    let text = render(&rec, TextOptions::default());
    assert!(text.contains("LOST: 3 cgroup_map_full"), "{text}");
}

#[test]
fn wakeup_programs_left_out_are_said_once_and_not_counted() {
    let mut rec = recording();
    rec.events.set(Counter::Switch, 10);
    let text = render(&rec, TextOptions::default());
    assert!(
        text.contains("events: 10 sched_switch, 0 sched_wakeup, 0 sched_wakeup_new; "),
        "{text}"
    );
    let why = "not needed: wakeups are dated at the switch-in";
    for name in ["sched_wakeup", "sched_wakeup_new"] {
        rec.probes.push(ProbeStatus {
            name: name.into(),
            kind: "tp_btf".into(),
            attached: false,
            verified_insns: None,
            error: None,
            not_needed: Some(why.into()),
        });
    }
    let text = render(&rec, TextOptions::default());
    assert!(
        text.contains(&format!(
            "probes left out: tp_btf/sched_wakeup, tp_btf/sched_wakeup_new: {why}\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("probe not attached: tp_btf/sched_wakeup"),
        "{text}"
    );
    assert!(text.contains("probe not attached: tp_btf/sched_process_exit: refused"));
    assert!(text.contains("events: 10 sched_switch; "), "{text}");
}

#[test]
fn top_limits_the_tables() {
    let text = render(&recording(), TextOptions { top: 1, details: 0 });
    assert!(text.contains("... and 1 more cgroups"));
    assert!(!text.lines().any(|l| l.starts_with("/busy")), "{text}");
    assert!(!text.contains("/limited\n  verdict"), "{text}");
}

#[test]
fn long_paths_keep_their_end() {
    assert_eq!(fit("/short", 10), "/short");
    assert_eq!(fit("/a/very/long/path", 8), "…ng/path");
}

#[test]
fn a_trigger_dump_says_what_met_it_first() {
    let mut rec = recording();
    rec.started_unix_ns = 3_600_000_000_000;
    rec.trigger = Some(crate::timeline::recorder::Fired {
        rule: "throttled above 50 % for 5.00 s".into(),
        cgroup: "/limited".into(),
        at_ns: 62_500_000_000,
    });
    let text = render(&rec, TextOptions::default());
    assert!(
        text.lines().nth(1).unwrap().starts_with(
            "written by the agent's flight recorder: throttled above 50 % for 5.00 s was met by \
             /limited at 01:01:02 (+62.5s)"
        ),
        "{text}"
    );
}
