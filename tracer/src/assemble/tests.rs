//! The transform from samples to a recording, on samples built by hand: what
//! only the privileged tests could reach while it lived inside the session.

use tracer_common::{causes::Causes, hist::LatencyHist};

use super::*;
use crate::{
    cpustat::Quota,
    filter::Selector,
    psi::{Pressure, PsiWindow},
    sample::SparseHist,
    verdict::Kind,
    workload::{Kind as WorkloadKind, names::PodNames},
};

const SEC: u64 = 1_000_000_000;

fn header() -> Header {
    Header {
        host: "h".into(),
        kernel: "6.18".into(),
        cpus: 2,
        cgroup_mode: Mode::V2,
        cpu_hierarchy: "/sys/fs/cgroup".into(),
        throttle_method: "self".into(),
        tier: "tracepoints".into(),
        state: "task local storage".into(),
        started_unix_ns: 1_000,
        started_monotonic_ns: 500,
        probes: Vec::new(),
        slice_ns: crate::verdict::DEFAULT_SLICE_NS,
    }
}

/// Totals of `waits` waits of `each` ns split as given, and `ran` ns on a CPU.
fn totals(waits: u64, each: u64, causes: Causes, ran: u64) -> Totals {
    let mut wait = LatencyHist::ZERO;
    for _ in 0..waits {
        wait.record(each);
    }
    let mut on_cpu = LatencyHist::ZERO;
    if ran > 0 {
        on_cpu.record(ran);
    }
    Totals {
        wait: SparseHist::from_hist(&wait),
        on_cpu: SparseHist::from_hist(&on_cpu),
        causes,
    }
}

fn contended(ns: u64) -> Causes {
    Causes {
        contended_ns: ns,
        ..Causes::ZERO
    }
}

fn throttled(ns: u64) -> Causes {
    Causes {
        throttled_ns: ns,
        throttled_waits: 1,
        ..Causes::ZERO
    }
}

fn pair(victim: u64, occupant_cgroup: u64, occupant_tgid: u32) -> BlamePair {
    BlamePair {
        victim,
        occupant_cgroup,
        occupant_tgid,
    }
}

struct Fixture {
    header: Header,
    paths: HashMap<u64, String>,
    quotas: BTreeMap<String, QuotaInfo>,
    selections: Vec<Selection>,
    filter: CgroupFilter,
    start_stats: BTreeMap<String, CpuStat>,
    shared: HashSet<String>,
    pods: PodNames,
    weights: HashMap<String, Weight>,
    start_psi: BTreeMap<String, Pressure>,
}

impl Fixture {
    fn new(paths: &[(u64, &str)]) -> Self {
        Self {
            header: header(),
            paths: paths.iter().map(|&(id, p)| (id, p.to_owned())).collect(),
            quotas: BTreeMap::new(),
            selections: Vec::new(),
            filter: CgroupFilter::default(),
            start_stats: BTreeMap::new(),
            shared: HashSet::new(),
            pods: PodNames::default(),
            weights: HashMap::new(),
            start_psi: BTreeMap::new(),
        }
    }

    fn record(&self, now: &Sample, since: Option<&Sample>) -> Recording {
        let window = Window::new(now, since, &self.start_stats, &self.start_psi);
        recording(
            &window,
            &Context {
                header: &self.header,
                paths: &self.paths,
                quotas: &self.quotas,
                selections: &self.selections,
                filter: &self.filter,
                shared: &self.shared,
                pods: &self.pods,
                weights: &self.weights,
            },
        )
    }
}

fn entry<'a>(rec: &'a Recording, path: &str) -> &'a CgroupEntry {
    rec.cgroups
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[test]
fn blame_is_grouped_by_cgroup_largest_first_and_trimmed() {
    // Victim 1 waited behind ten cgroups (ids 10..20) of five processes each;
    // cgroup 10 + k was charged (k + 1) ms per process.
    let mut now = Sample {
        elapsed_ns: 10 * SEC,
        ..Sample::default()
    };
    let mut charged = 0;
    for k in 0..10u64 {
        for p in 0..5u32 {
            let ns = (k + 1) * 1_000_000 + u64::from(p);
            charged += ns;
            now.blame
                .insert(pair(1, 10 + k, 100 * k as u32 + p), (format!("p{p}"), ns));
        }
    }
    now.cgroups.insert(
        1,
        totals(100, 10_000_000, contended(charged + 5_000), 5 * SEC),
    );
    // Another victim's rows must not leak into victim 1's blame.
    now.blame.insert(pair(2, 10, 1), ("other".into(), SEC));
    let paths: Vec<(u64, String)> = (0..20).map(|id| (id, format!("/c{id}"))).collect();
    let paths: Vec<(u64, &str)> = paths.iter().map(|(id, p)| (*id, p.as_str())).collect();
    let rec = Fixture::new(&paths).record(&now, None);
    let w = &entry(&rec, "/c1").wait;

    assert_eq!(
        w.blame.len(),
        BLAME_CGROUPS,
        "trimmed to {BLAME_CGROUPS} cgroups"
    );
    assert_eq!(w.blame[0].path, "/c19", "the largest first");
    assert!(w.blame.windows(2).all(|b| b[0].ns >= b[1].ns));
    let top = &w.blame[0];
    assert_eq!(top.processes.len(), BLAME_PROCESSES);
    assert_eq!(
        top.ns,
        5 * 10_000_000 + (0..5).sum::<u64>(),
        "a cgroup's time sums all its processes, the trimmed ones too"
    );
    assert_eq!(top.processes[0].ns, 10_000_004, "processes largest first");
    assert_eq!(top.processes[0].comm, "p4");
    assert_eq!(
        w.unattributed_ns, 5_000,
        "what no occupant was charged, over all ten cgroups before trimming"
    );
}

#[test]
fn blame_carries_the_occupants_run_and_weight_into_the_verdict() {
    // /svc waited 2 s behind /batch, which ran 18 s in 10: 1.8 CPUs.
    let mut now = Sample {
        elapsed_ns: 10 * SEC,
        ..Sample::default()
    };
    now.cgroups
        .insert(1, totals(200, 10_000_000, contended(2 * SEC), 3 * SEC));
    now.cgroups
        .insert(2, totals(10, 1_000_000, Causes::ZERO, 18 * SEC));
    now.blame.insert(pair(1, 2, 77), ("stress".into(), 2 * SEC));
    let mut fx = Fixture::new(&[(1, "/svc"), (2, "/batch")]);
    let weight = |value, guaranteed_mcpu| Weight {
        file: "cpu.shares".into(),
        value,
        guaranteed_mcpu,
    };
    fx.weights.insert("/batch".into(), weight(256, 400));
    fx.weights.insert("/svc".into(), weight(1024, 1_600));
    let rec = fx.record(&now, None);
    let svc = entry(&rec, "/svc");
    assert_eq!(svc.weight, Some(weight(1024, 1_600)));
    let batch = &svc.wait.blame[0];
    assert_eq!(
        batch.ran_ns,
        18 * SEC,
        "the occupant's whole run, not its blamed part"
    );
    assert_eq!(batch.weight, Some(weight(256, 400)));
    assert_eq!(svc.verdict.kind, Kind::HostContention);
    let text = &svc.verdict.text;
    assert!(
        text.contains("behind /batch (stress pid 77), which ran 1.80 CPUs, 4.5× the 0.40 guaranteed by its cpu.shares of 256"),
        "{text}"
    );
    assert!(
        text.contains(
            "this group ran 0.30 CPUs, within the 1.60 guaranteed by its cpu.shares of 1024"
        ),
        "{text}"
    );
    // An occupant whose weight is unknown (gone, or an old dump) is named
    // without it.
    fx.weights.clear();
    let rec = fx.record(&now, None);
    let text = &entry(&rec, "/svc").verdict.text;
    assert!(text.ends_with("behind /batch (stress pid 77)"), "{text}");
}

#[test]
fn a_cgroups_psi_is_the_difference_of_its_readings_at_the_window_ends() {
    let reading = |some_us, full_us| Pressure {
        some_us,
        full_us: Some(full_us),
    };
    let sample = |elapsed_s: u64, a: Pressure| {
        let mut s = Sample {
            elapsed_ns: elapsed_s * SEC,
            ..Sample::default()
        };
        // Waits keep coming: the cgroup is active in every window.
        s.cgroups.insert(
            1,
            totals(elapsed_s, 1_000_000, contended(elapsed_s * 1_000_000), SEC),
        );
        s.cgroup_psi.insert("/a".into(), a);
        s
    };
    let mut fx = Fixture::new(&[(1, "/a"), (2, "/b")]);
    fx.start_psi
        .insert("/a".into(), reading(1_000_000, 500_000));
    let (earlier, now) = (
        sample(4, reading(3_000_000, 600_000)),
        sample(10, reading(4_500_000, 700_000)),
    );
    // The session: from the first reading.
    let a = entry(&fx.record(&now, None), "/a").psi;
    assert_eq!(
        a,
        Some(PsiWindow {
            some_ns: 3_500 * 1_000_000,
            full_ns: Some(200 * 1_000_000),
        })
    );
    // A window: from the earlier sample's reading.
    let a = entry(&fx.record(&now, Some(&earlier)), "/a").psi;
    assert_eq!(a.map(|w| w.some_ns), Some(1_500 * 1_000_000));
    // A cgroup never read (v1, or no PSI) has none.
    let mut now = now;
    now.cgroups
        .insert(2, totals(10, 1_000_000, contended(10_000_000), SEC));
    assert_eq!(entry(&fx.record(&now, None), "/b").psi, None);
}

#[test]
fn a_quota_owner_sums_its_whole_subtree() {
    let mut fx = Fixture::new(&[(1, "/k"), (2, "/k/a"), (3, "/k/b"), (4, "/kb")]);
    let quota = QuotaInfo {
        quota: Quota {
            quota_us: 100_000,
            period_us: 100_000,
            burst_us: 0,
        },
        owner: "/k".into(),
    };
    for p in ["/k", "/k/a", "/k/b"] {
        fx.quotas.insert(p.into(), quota.clone());
    }
    let run_by_path: Vec<(String, u64)> = [("/k", 1), ("/k/a", 2), ("/k/b", 3), ("/kb", 100)]
        .map(|(p, s)| (p.to_owned(), s * SEC))
        .to_vec();
    let owner_stat = CpuStat {
        nr_periods: 100,
        nr_throttled: 40,
        ..CpuStat::default()
    };
    let f = quota_facts(&quota, owner_stat, &run_by_path, 10 * SEC);
    assert_eq!(
        f.used_cpus, 0.6,
        "/k, /k/a and /k/b ran 6 s in 10 s; /kb is not below /k"
    );
    assert_eq!((f.nr_periods, f.nr_throttled, f.cpus), (100, 40, 1.0));
    // The quota was in force for 40 periods (4 s) of the 10: the group ran
    // only then, at 1.5 CPUs on average. No cpu.stat: the whole recording.
    let part = CpuStat {
        nr_periods: 40,
        ..owner_stat
    };
    assert_eq!(
        quota_facts(&quota, part, &run_by_path, 10 * SEC).used_cpus,
        1.5
    );
    let none = CpuStat::default();
    assert_eq!(
        quota_facts(&quota, none, &run_by_path, 10 * SEC).used_cpus,
        0.6
    );

    // Through a recording: /k/a throttled under /k's quota, which its subtree
    // used to 60 % only: the verdict notes it.
    let mut now = Sample {
        elapsed_ns: 10 * SEC,
        ..Sample::default()
    };
    now.cgroups
        .insert(2, totals(40, 100_000_000, throttled(4 * SEC), 2 * SEC));
    now.cgroups.insert(1, totals(1, 1_000, Causes::ZERO, SEC));
    now.cgroups
        .insert(3, totals(1, 1_000, Causes::ZERO, 3 * SEC));
    fx.start_stats.insert("/k".into(), CpuStat::default());
    now.cpu_stats.insert("/k".into(), owner_stat);
    let rec = fx.record(&now, None);
    let a = entry(&rec, "/k/a");
    assert_eq!(a.verdict.kind, Kind::QuotaExpiry, "{}", a.verdict.text);
    assert!(
        a.verdict.text.contains("/k's quota of 1.00 CPUs"),
        "{}",
        a.verdict.text
    );
    assert!(
        a.verdict
            .notes
            .iter()
            .any(|n| n.contains("/k used 0.60 CPUs")),
        "{:?}",
        a.verdict.notes
    );
    assert_eq!(a.quota.as_ref().map(|q| q.owner.as_str()), Some("/k"));
    assert_eq!(
        a.cpu_stat, None,
        "cpu.stat is shown on the owner, read for it only"
    );
    assert_eq!(entry(&rec, "/k").cpu_stat.map(|s| s.nr_throttled), Some(40));
}

#[test]
fn the_filter_keeps_what_was_asked_and_the_selected_tasks_cgroups() {
    let mut fx = Fixture::new(&[(1, "/a"), (2, "/a/x"), (3, "/b"), (4, "/c"), (5, "/ab")]);
    let mut now = Sample {
        elapsed_ns: SEC,
        ..Sample::default()
    };
    for id in 1..=5 {
        now.cgroups
            .insert(id, totals(1, 1_000, Causes::ZERO, 1_000));
    }
    fx.filter = CgroupFilter::only(vec!["/a".into()]);
    fx.selections = vec![Selection {
        target: Target::Pid {
            id: 42,
            kind: crate::process::PidKind::Process,
            comm: "svc".into(),
        },
        cgroup: Some("/b".into()),
        matched: Vec::new(),
        untraced: 0,
        cgroups: Vec::new(),
    }];
    let rec = fx.record(&now, None);
    let mut paths: Vec<&str> = rec.cgroups.iter().map(|c| c.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/a", "/a/x", "/b"]);
    assert_eq!(rec.pids.len(), 1);
    assert_eq!(rec.pids[0].cgroup.as_deref(), Some("/b"));

    fx.filter = CgroupFilter::default();
    fx.selections.clear();
    assert_eq!(fx.record(&now, None).cgroups.len(), 5, "no filter: all");
}

#[test]
fn cgroups_are_sorted_by_total_wait_then_path() {
    let fx = Fixture::new(&[(1, "/z"), (2, "/y"), (3, "/x")]);
    let mut now = Sample {
        elapsed_ns: SEC,
        ..Sample::default()
    };
    now.cgroups.insert(1, totals(1, 1_000, Causes::ZERO, 0));
    now.cgroups.insert(2, totals(1, 5_000, Causes::ZERO, 0));
    now.cgroups.insert(3, totals(1, 1_000, Causes::ZERO, 0));
    let rec = fx.record(&now, None);
    let paths: Vec<&str> = rec.cgroups.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/y", "/x", "/z"]);
}

#[test]
fn a_verdict_gets_its_own_and_others_blame_apart() {
    let fx = Fixture::new(&[(1, "/svc"), (2, "/batch")]);
    let mut now = Sample {
        elapsed_ns: 10 * SEC,
        ..Sample::default()
    };
    // /svc waited 5 s, contended: 4 s behind /batch, 1 s behind itself.
    now.cgroups
        .insert(1, totals(50, 100_000_000, contended(5 * SEC), 5 * SEC));
    now.blame.insert(pair(1, 2, 77), ("batch".into(), 4 * SEC));
    now.blame.insert(pair(1, 1, 10), ("svc".into(), SEC));
    // /batch waited 3 s behind itself only.
    now.cgroups
        .insert(2, totals(30, 100_000_000, contended(3 * SEC), 9 * SEC));
    now.blame.insert(pair(2, 2, 78), ("batch".into(), 3 * SEC));
    let rec = fx.record(&now, None);

    let svc = entry(&rec, "/svc");
    let f = facts(&svc.wait, 5 * SEC, None, 10 * SEC, Some(1), None);
    assert_eq!((f.self_charged_ns, f.others_charged_ns), (SEC, 4 * SEC));
    let (top, share, process) = f.top_other.clone().unwrap();
    assert_eq!(
        (top.as_str(), share, process.as_str()),
        ("/batch", 1.0, "batch pid 77")
    );
    assert_eq!(f.causes, svc.wait.causes);
    assert_eq!(f.p99_ns, svc.wait.runnable_wait.summary.p99_ns);
    assert_eq!(
        (f.wait_ns, f.run_ns, f.duration_ns),
        (5 * SEC, 5 * SEC, 10 * SEC)
    );
    assert_eq!(
        svc.verdict.kind,
        Kind::HostContention,
        "{}",
        svc.verdict.text
    );
    assert!(
        svc.verdict.text.contains("behind /batch (batch pid 77)"),
        "{}",
        svc.verdict.text
    );
    assert_eq!(entry(&rec, "/batch").verdict.kind, Kind::SelfContention);

    // A task selection has no cgroup of its own: all of its blame is others'.
    let f = facts(&svc.wait, 5 * SEC, None, 10 * SEC, None, None);
    assert_eq!((f.self_charged_ns, f.others_charged_ns), (0, 5 * SEC));
}

#[test]
fn a_window_covers_the_time_and_counters_between_two_samples() {
    let fx = Fixture::new(&[(1, "/svc")]);
    let mut earlier = Sample {
        elapsed_ns: 2 * SEC,
        ..Sample::default()
    };
    earlier
        .cgroups
        .insert(1, totals(10, 1_000_000, throttled(SEC), SEC));
    earlier.cpu_stats.insert(
        "/svc".into(),
        CpuStat {
            nr_periods: 20,
            nr_throttled: 10,
            throttled_ns: SEC,
            local_throttled_ns: None,
            ..CpuStat::default()
        },
    );
    earlier.counters[Counter::Switch as usize] = 100;
    let mut now = earlier.clone();
    now.elapsed_ns = 5 * SEC;
    now.cgroups
        .insert(1, totals(30, 1_000_000, throttled(3 * SEC), SEC));
    now.cpu_stats.get_mut("/svc").unwrap().nr_periods = 50;
    now.counters[Counter::Switch as usize] = 160;

    let rec = fx.record(&now, Some(&earlier));
    assert_eq!(rec.duration_ns, 3 * SEC);
    assert_eq!(
        rec.started_unix_ns,
        1_000 + 2 * SEC,
        "the window's own start"
    );
    assert_eq!(rec.events.get(Counter::Switch), 60);
    let svc = entry(&rec, "/svc");
    assert_eq!(svc.wait.runnable_wait.summary.count, 20);
    assert_eq!(svc.wait.causes.throttled_ns, 2 * SEC);
    assert_eq!(svc.cpu_stat.map(|s| s.nr_periods), Some(30));

    // The whole session: cpu.stat from the readings at the start.
    let rec = fx.record(&now, None);
    assert_eq!(rec.duration_ns, 5 * SEC);
    assert_eq!(svc_count(&rec), 30);
    assert_eq!(
        entry(&rec, "/svc").cpu_stat,
        None,
        "no reading at the start"
    );
}

fn svc_count(rec: &Recording) -> u64 {
    entry(rec, "/svc").wait.runnable_wait.summary.count
}

#[test]
fn unresolved_ids_and_unknown_quota_owners_are_named_so() {
    let fx = Fixture::new(&[]);
    let mut now = Sample {
        elapsed_ns: SEC,
        ..Sample::default()
    };
    now.cgroups.insert(9, totals(1, 1_000, Causes::ZERO, 0));
    let mut e = EpisodeTotals::default();
    e.throttled_by.insert(0, 2);
    e.per_cpu.insert(1, (2, 50));
    now.episodes.insert(9, e);
    let rec = fx.record(&now, None);
    let c = entry(&rec, "?/id-9");
    let episodes = c.throttle_episodes.as_ref().unwrap();
    assert_eq!(episodes.throttled_by.get("(unknown)"), Some(&2));
    assert_eq!(episodes.per_cpu, [[1, 2, 50]]);
    let window = Window::new(&now, None, &fx.start_stats, &fx.start_psi);
    let mut ids: Vec<u64> = window.ids_named().collect();
    ids.sort_unstable();
    assert_eq!(ids, [9, 9], "the cgroup and its episodes; never 0");
}

/// A pod's container beside another namespace's: each is named
/// `namespace/pod/container` from the kubelet's log directories, blame names
/// the neighbour pod, and a namespace selector keeps one namespace.
#[test]
fn pods_are_named_blamed_and_selected_by_namespace() {
    const UID_A: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
    const UID_B: &str = "2b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
    let id = |c: char| c.to_string().repeat(64);
    let svc = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
        UID_A.replace('-', "_"),
        id('a')
    );
    let batch = format!("/kubepods/besteffort/pod{UID_B}/{}", id('b'));
    let mut fx = Fixture::new(&[(1, svc.as_str()), (2, batch.as_str())]);
    let (pod_a, pod_b) = (
        format!("shop_api-7f9c_{UID_A}"),
        format!("batch_nightly-report_{UID_B}"),
    );
    fx.pods = PodNames::from_entries(
        [pod_a.as_str(), pod_b.as_str()],
        [(pod_a.as_str(), "app"), (pod_b.as_str(), "worker")],
        [],
    );
    let mut now = Sample {
        elapsed_ns: 10 * SEC,
        ..Sample::default()
    };
    now.cgroups
        .insert(1, totals(50, 100_000_000, contended(5 * SEC), 5 * SEC));
    now.cgroups
        .insert(2, totals(1, 1_000, Causes::ZERO, 9 * SEC));
    now.blame.insert(pair(1, 2, 77), ("report".into(), 5 * SEC));
    let rec = fx.record(&now, None);

    let shop = entry(&rec, &svc);
    assert_eq!(shop.name(), "shop/api-7f9c/app");
    let w = shop.workload.as_ref().unwrap();
    assert_eq!(w.kind, WorkloadKind::Container);
    assert_eq!(w.qos.as_deref(), Some("burstable"));
    assert_eq!(w.pod_uid.as_deref(), Some(UID_A));
    assert_eq!(shop.wait.blame[0].name(), "batch/nightly-report/worker");
    assert!(
        shop.verdict.text.contains("batch/nightly-report/worker"),
        "{}",
        shop.verdict.text
    );
    assert_eq!(entry(&rec, &batch).name(), "batch/nightly-report/worker");

    fx.filter = CgroupFilter {
        include: vec![Selector::Namespace("shop".into())],
        ..CgroupFilter::default()
    };
    let rec = fx.record(&now, None);
    let names: Vec<String> = rec.cgroups.iter().map(CgroupEntry::name).collect();
    assert_eq!(names, ["shop/api-7f9c/app"]);
}
