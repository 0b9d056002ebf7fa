use super::*;

const SEC: u64 = 1_000_000_000;

fn facts() -> Facts {
    Facts {
        duration_ns: 10 * SEC,
        p99_ns: 4_000_000,
        slice_ns: DEFAULT_SLICE_NS,
        ..Facts::default()
    }
}

#[test]
fn short_waits_are_healthy_however_often_they_come() {
    // A pgbench client alone on its CPU: many tiny waits, a tenth of its
    // runnable time, p99 15 µs.
    let v = judge(&Facts {
        wait_ns: SEC,
        run_ns: 9 * SEC,
        p99_ns: 15_000,
        causes: Causes {
            contended_ns: SEC / 2,
            other_ns: SEC / 2,
            ..Causes::ZERO
        },
        self_charged_ns: SEC / 2,
        ..facts()
    });
    assert_eq!(v.kind, Kind::Healthy, "{}", v.text);
    assert!(
        v.text
            .contains("p99 wait 15.0 µs (half a scheduling slice is 1.50 ms)"),
        "{}",
        v.text
    );
    assert!(
        v.text.contains("(waited: contended 500 ms, other 500 ms)"),
        "{}",
        v.text
    );
    // At the threshold the same waits are a problem.
    let v = judge(&Facts {
        p99_ns: 1_500_000,
        ..Facts {
            wait_ns: SEC,
            run_ns: 9 * SEC,
            causes: Causes {
                contended_ns: SEC,
                ..Causes::ZERO
            },
            self_charged_ns: SEC,
            ..facts()
        }
    });
    assert_eq!(v.kind, Kind::SelfContention, "{}", v.text);
}

#[test]
fn short_waits_adding_up_to_a_thread_always_waiting_are_felt() {
    let crowded = |wait_ns| Facts {
        wait_ns,
        run_ns: 10 * SEC,
        p99_ns: 1_280_000,
        causes: Causes {
            contended_ns: wait_ns,
            ..Causes::ZERO
        },
        self_charged_ns: wait_ns,
        ..facts()
    };
    // 24 connections on one CPU: 21.6 threads' worth, each wait short.
    let v = judge(&crowded(216 * SEC));
    assert_eq!(v.kind, Kind::SelfContention, "{}", v.text);
    // At one thread's worth, still felt; just under it, as short, not.
    assert_eq!(judge(&crowded(10 * SEC)).kind, Kind::SelfContention);
    assert_eq!(judge(&crowded(10 * SEC - 1)).kind, Kind::Healthy);
}

#[test]
fn a_healthy_verdict_still_shows_a_little_throttling() {
    let v = judge(&Facts {
        wait_ns: SEC / 50,
        run_ns: 5 * SEC,
        causes: Causes {
            throttled_ns: SEC / 50,
            throttled_waits: 3,
            ..Causes::ZERO
        },
        quota: Some(QuotaFacts {
            owner: "/svc".into(),
            cpus: 2.0,
            nr_periods: 100,
            nr_throttled: 3,
            used_cpus: 1.9,
            burst_us: 0,
            nr_bursts: None,
            burst_ns: None,
        }),
        ..facts()
    });
    assert_eq!(v.kind, Kind::Healthy);
    assert!(
        v.text.contains("throttled 20.0 ms")
            && v.text.contains("/svc's quota of 2.00 CPUs in 3 of 100"),
        "{}",
        v.text
    );
}

#[test]
fn the_root_cgroup_waiting_behind_itself_is_a_busy_host() {
    let v = judge(&Facts {
        wait_ns: 3 * SEC,
        run_ns: 10 * SEC,
        causes: Causes {
            contended_ns: 3 * SEC,
            ..Causes::ZERO
        },
        self_charged_ns: 3 * SEC,
        shared: true,
        ..facts()
    });
    assert_eq!(v.kind, Kind::HostBusy);
    assert!(
        v.text.starts_with("host busy: waited 30.0 % of the time"),
        "{}",
        v.text
    );
    assert!(v.text.contains("the host is busy"), "{}", v.text);
}

#[test]
fn many_threads_waiting_are_counted_in_threads() {
    // 24 PostgreSQL backends on one CPU.
    let v = judge(&Facts {
        wait_ns: 225 * SEC,
        run_ns: 10 * SEC,
        causes: Causes {
            contended_ns: 225 * SEC,
            ..Causes::ZERO
        },
        self_charged_ns: 225 * SEC,
        ..facts()
    });
    assert_eq!(v.kind, Kind::SelfContention);
    assert!(
        v.text
            .starts_with("self contention: on average 22.5 threads waited behind its own threads"),
        "{}",
        v.text
    );
    assert!(!v.text.contains("2250"), "{}", v.text);
}

#[test]
fn a_quiet_service_is_healthy() {
    // Incident 3 and 5: lots of activity, little waiting.
    let v = judge(&Facts {
        wait_ns: SEC / 10,
        run_ns: 5 * SEC,
        causes: Causes {
            contended_ns: SEC / 10,
            ..Causes::ZERO
        },
        others_charged_ns: SEC / 10,
        ..facts()
    });
    assert_eq!(v.kind, Kind::Healthy);
    assert!(v.text.contains("no unusual scheduling delay"), "{}", v.text);
    assert!(judge(&facts()).kind == Kind::Healthy);
    // A nearly idle group whose rare wakeups wait a little.
    let v = judge(&Facts {
        wait_ns: SEC / 200,
        run_ns: SEC / 1000,
        causes: Causes {
            other_ns: SEC / 200,
            ..Causes::ZERO
        },
        ..facts()
    });
    assert_eq!(v.kind, Kind::Healthy, "{}", v.text);
}

#[test]
fn quota_expiry_names_the_quota_and_cpu_stat() {
    let v = judge(&Facts {
        wait_ns: 8 * SEC,
        run_ns: 2 * SEC,
        causes: Causes {
            throttled_ns: 79 * SEC / 10,
            other_ns: SEC / 10,
            ..Causes::ZERO
        },
        quota: Some(QuotaFacts {
            owner: "/svc".into(),
            cpus: 0.2,
            nr_periods: 100,
            nr_throttled: 100,
            used_cpus: 0.2,
            burst_us: 0,
            nr_bursts: None,
            burst_ns: None,
        }),
        ..facts()
    });
    assert_eq!(v.kind, Kind::QuotaExpiry);
    assert!(
        v.text
            .starts_with("quota expiry: throttled 79.0 % of the time"),
        "{}",
        v.text
    );
    assert!(
        v.text
            .contains("/svc's quota of 0.20 CPUs; cpu.stat: 100 of 100 periods")
    );
    assert!(v.notes.is_empty(), "used all of its quota: {:?}", v.notes);
}

#[test]
fn host_contention_names_the_neighbour() {
    let v = judge(&Facts {
        wait_ns: 5 * SEC,
        run_ns: 5 * SEC,
        causes: Causes {
            contended_ns: 5 * SEC,
            ..Causes::ZERO
        },
        others_charged_ns: 5 * SEC,
        top_other: Some(("/cron".into(), 0.97, "apt-get pid 4242".into())),
        ..facts()
    });
    assert_eq!(v.kind, Kind::HostContention);
    assert!(
        v.text
            .contains("97 % of it behind /cron (apt-get pid 4242)"),
        "{}",
        v.text
    );
}

#[test]
fn own_threads_are_self_contention() {
    // Incident 4: concurrency inside one cgroup.
    let v = judge(&Facts {
        wait_ns: 30 * SEC,
        run_ns: 20 * SEC,
        causes: Causes {
            contended_ns: 30 * SEC,
            ..Causes::ZERO
        },
        self_charged_ns: 27 * SEC,
        others_charged_ns: 3 * SEC,
        ..facts()
    });
    assert_eq!(v.kind, Kind::SelfContention);
    assert!(
        !v.text.contains("host contention"),
        "10 % is not significant: {}",
        v.text
    );
}

#[test]
fn overlapping_causes_are_both_named() {
    // Incident 2: quota and neighbours at once.
    let v = judge(&Facts {
        wait_ns: 6 * SEC,
        run_ns: 2 * SEC,
        causes: Causes {
            throttled_ns: 3 * SEC,
            contended_ns: 3 * SEC,
            ..Causes::ZERO
        },
        others_charged_ns: 3 * SEC,
        ..facts()
    });
    assert!(matches!(v.kind, Kind::QuotaExpiry | Kind::HostContention));
    assert!(
        v.text.contains("quota expiry") && v.text.contains("host contention"),
        "{}",
        v.text
    );
}

#[test]
fn throttled_below_quota_is_flagged() {
    let v = judge(&Facts {
        wait_ns: SEC,
        run_ns: 3 * SEC,
        causes: Causes {
            throttled_ns: SEC,
            ..Causes::ZERO
        },
        quota: Some(QuotaFacts {
            owner: "/jvm".into(),
            cpus: 8.0,
            nr_periods: 100,
            nr_throttled: 60,
            used_cpus: 4.8,
            burst_us: 0,
            nr_bursts: None,
            burst_ns: None,
        }),
        ..facts()
    });
    assert_eq!(v.kind, Kind::QuotaExpiry);
    assert_eq!(v.notes.len(), 1);
    assert!(
        v.notes[0].contains("4.80 CPUs on average over them, below its quota of 8.00"),
        "{:?}",
        v.notes
    );
    assert!(v.notes[0].contains("de53fd7aedb1"));
}

#[test]
fn wakeup_latency() {
    let v = judge(&Facts {
        wait_ns: SEC,
        run_ns: SEC,
        causes: Causes {
            other_ns: SEC,
            ..Causes::ZERO
        },
        ..facts()
    });
    assert_eq!(v.kind, Kind::WakeupLatency);
}

/// A quota with a burst: the verdict says the burst was allowed, and how
/// much of it `cpu.stat` saw used, so that "raise the burst" is not the
/// first answer to a steady excess.
#[test]
fn quota_expiry_names_the_burst_it_was_allowed() {
    let v = judge(&Facts {
        wait_ns: 4 * SEC,
        run_ns: 2 * SEC,
        causes: Causes {
            throttled_ns: 4 * SEC,
            throttled_waits: 40,
            ..Causes::ZERO
        },
        quota: Some(QuotaFacts {
            owner: "/svc".into(),
            cpus: 0.2,
            nr_periods: 100,
            nr_throttled: 90,
            used_cpus: 0.2,
            burst_us: 20_000,
            nr_bursts: Some(12),
            burst_ns: Some(240_000_000),
        }),
        ..facts()
    });
    assert_eq!(v.kind, Kind::QuotaExpiry);
    assert!(
        v.text
            .contains("although a burst of 20.0 ms is allowed (12 periods used 240 ms of it)"),
        "{}",
        v.text
    );
}
