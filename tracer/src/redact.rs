//! `--redact`: host and cgroup names replaced by placeholders before a dump
//! leaves the machine.
//!
//! Placeholders are stable: the same name always becomes the same placeholder
//! (a hash of it), on any host and in any session, so that redacted dumps of a
//! before and an after still line up in `tracer diff`. The hierarchy stays
//! visible (`/c-1f2e3d4c/c-5a6b7c8d`); the root stays `/`. Process names are kept:
//! they say what ran, which is the point of a report.

use std::collections::BTreeMap;

use crate::{recording::Recording, workload::Workload};

/// FNV-1a, 32 bits: stable across Rust releases, unlike the std hasher.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn placeholder(prefix: &str, name: &str) -> String {
    format!("{prefix}-{:08x}", fnv1a(name))
}

/// A cgroup path with every component replaced; `?/name` (a cgroup that was
/// gone before it could be located) keeps its `?/`.
pub fn redact_path(path: &str) -> String {
    let (lead, rest) = match path.strip_prefix("?/") {
        Some(rest) => ("?", rest),
        None => ("", path.trim_start_matches('/')),
    };
    if rest.is_empty() {
        return if lead.is_empty() {
            "/".into()
        } else {
            "?/".into()
        };
    }
    let parts: Vec<String> = rest.split('/').map(|c| placeholder("c", c)).collect();
    format!("{lead}/{}", parts.join("/"))
}

/// A workload's names and ids replaced, its kind, runtime and QoS class
/// kept: they say what kind of thing waited, not which.
pub fn redact_workload(w: &mut Workload) {
    for (prefix, field) in [
        ("ns", &mut w.namespace),
        ("pod", &mut w.pod),
        ("ctr", &mut w.container),
        ("id", &mut w.container_id),
        ("uid", &mut w.pod_uid),
        ("unit", &mut w.unit),
    ] {
        if let Some(v) = field {
            *v = placeholder(prefix, v);
        }
    }
}

/// Replaces the host name, every cgroup path and every workload's names in
/// `rec`, in the free text of the verdicts too.
pub fn redact(rec: &mut Recording) {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    // A workload's name as the verdicts wrote it, and what it becomes.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut name = |workload: &mut Option<Workload>, path: &str| {
        if let Some(w) = workload {
            let before = w.name();
            redact_workload(w);
            if let (Some(before), Some(after)) = (before, w.name()) {
                names.insert(before, after);
            }
        }
        // A dump from before workloads were written: what its path told.
        if let Some(before) = Workload::from_path(path).name() {
            names.insert(before, redact_path(path));
        }
    };
    for c in &mut rec.cgroups {
        name(&mut c.workload, &c.path);
        for b in &mut c.wait.blame {
            name(&mut b.workload, &b.path);
        }
    }
    for b in rec
        .pids
        .iter_mut()
        .flat_map(|p| &mut p.wait.blame)
        .chain(rec.threads.iter_mut().flat_map(|t| &mut t.wait.blame))
    {
        name(&mut b.workload, &b.path);
    }
    let mut map = |p: &mut String| {
        let redacted = redact_path(p);
        paths.insert(p.clone(), redacted.clone());
        *p = redacted;
    };
    for c in &mut rec.cgroups {
        map(&mut c.path);
        if let Some(q) = &mut c.quota {
            map(&mut q.owner);
        }
        for b in &mut c.wait.blame {
            map(&mut b.path);
        }
        if let Some(e) = &mut c.throttle_episodes {
            let by = std::mem::take(&mut e.throttled_by);
            for (mut path, n) in by {
                if path.starts_with('/') || path.starts_with("?/") {
                    map(&mut path);
                }
                *e.throttled_by.entry(path).or_default() += n;
            }
        }
    }
    for p in &mut rec.pids {
        if let Some(c) = &mut p.cgroup {
            map(c);
        }
        for b in &mut p.wait.blame {
            map(&mut b.path);
        }
    }
    for t in &mut rec.threads {
        for b in &mut t.wait.blame {
            map(&mut b.path);
        }
    }
    for c in rec.intervals.iter_mut().flat_map(|i| &mut i.cgroups) {
        map(&mut c.path);
        if let Some(o) = &mut c.top_occupant {
            map(&mut o.cgroup);
        }
    }
    if let Some(t) = &mut rec.trigger {
        map(&mut t.cgroup);
    }
    for p in &mut rec.gc_pauses {
        for c in p.throttled_by.iter_mut().chain(p.cgroup.iter_mut()) {
            map(c);
        }
        if let Some(o) = &mut p.top_occupant {
            map(&mut o.cgroup);
        }
    }
    for s in &mut rec.stalls {
        map(&mut s.cgroup);
        if let Some(by) = &mut s.throttled_by {
            map(by);
        }
        for o in &mut s.occupants {
            map(&mut o.cgroup);
        }
    }

    let host = placeholder("host", &rec.host);
    // Longest first, so that /a/b is replaced before /a.
    let mut replacements: Vec<(String, String)> = paths
        .into_iter()
        .chain(names)
        .filter(|(from, _)| from != "/")
        .collect();
    replacements.push((rec.host.clone(), host.clone()));
    replacements.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let scrub = |text: &mut String| {
        for (from, to) in &replacements {
            if !from.is_empty() && text.contains(from.as_str()) {
                *text = text.replace(from.as_str(), to);
            }
        }
    };
    for v in rec
        .cgroups
        .iter_mut()
        .map(|c| &mut c.verdict)
        .chain(rec.pids.iter_mut().map(|p| &mut p.verdict))
        .chain(rec.threads.iter_mut().map(|t| &mut t.verdict))
    {
        scrub(&mut v.text);
        v.notes.iter_mut().for_each(&scrub);
    }
    rec.host = host;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump;

    /// A dump of two named pods: no namespace, pod, container, id or UID
    /// is left, in the workloads, the blame rows or the verdicts; the kinds
    /// and QoS classes stay, and the names still line up.
    #[test]
    fn a_redacted_dump_names_no_pod() {
        let mut rec = dump::parse(include_bytes!("../tests/fixtures/dump-pods.json")).unwrap();
        let before = dump::to_json(&rec).unwrap();
        let secrets = [
            "shop",
            "api-7f9c4",
            "nightly-report-x2k",
            // (not "worker" alone: process names, kept, include kworker)
            "\"container\":\"worker\"",
            "1b2c3d4e",
            "9a8b7c6d",
            "4f1e9a0b2c3d",
            "7c6d5e4f3a2b",
        ];
        for secret in secrets {
            assert!(before.contains(secret), "the fixture names {secret}");
        }
        redact(&mut rec);
        let after = dump::to_json(&rec).unwrap();
        for secret in secrets {
            assert!(
                !after.contains(secret),
                "{secret} left in the redacted dump"
            );
        }
        let back = dump::parse(after.as_bytes()).unwrap();
        let shop = back
            .cgroups
            .iter()
            .find(|c| c.verdict.kind == crate::verdict::Kind::HostContention)
            .expect("the waiting pod");
        let w = shop.workload.as_ref().unwrap();
        assert_eq!(w.kind, crate::workload::Kind::Container);
        assert_eq!(w.qos.as_deref(), Some("burstable"));
        assert!(shop.name().starts_with("ns-"), "{}", shop.name());
        // Its verdict names its neighbour as its blame row does.
        assert!(
            shop.verdict.text.contains(&shop.wait.blame[0].name()),
            "{} / {}",
            shop.verdict.text,
            shop.wait.blame[0].name()
        );
    }

    #[test]
    fn paths_keep_their_shape() {
        assert_eq!(redact_path("/"), "/");
        let a = redact_path("/kubepods/pod1/abc");
        assert_eq!(a.matches('/').count(), 3);
        assert!(a.starts_with("/c-") && !a.contains("kubepods"), "{a}");
        // Stable, and a shared prefix stays shared.
        assert_eq!(redact_path("/kubepods/pod1/abc"), a);
        assert!(redact_path("/kubepods/pod2").starts_with(&a[..12]));
        assert!(redact_path("?/gone").starts_with("?/c-"));
        assert_ne!(redact_path("/a"), redact_path("/b"));
    }

    #[test]
    fn a_redacted_dump_names_no_cgroup_or_host() {
        let mut rec = dump::parse(include_bytes!("../tests/fixtures/record-v0.json")).unwrap();
        rec.host = "db-prod-17.example.com".into();
        // A timeline naming them too, and a recorder's trigger.
        rec.intervals = crate::timeline::tests::timeline_of(&rec, 2);
        rec.intervals[1].cgroups[0].top_occupant = Some(crate::timeline::Occupant {
            cgroup: "/neighbour".into(),
            comm: "hog".into(),
            ..Default::default()
        });
        rec.trigger = Some(crate::timeline::recorder::Fired {
            rule: "throttled above 50 % for 2.00 s".into(),
            cgroup: "/svc".into(),
            at_ns: 1,
        });
        // And a slow wait.
        rec.stalls = vec![crate::stall::Stall {
            cgroup: "/svc".into(),
            throttled_by: Some("/svc".into()),
            occupants: vec![crate::stall::StallOccupant {
                cgroup: "/batch-neighbour".into(),
                comm: "hog".into(),
                ..Default::default()
            }],
            ..crate::stall::tests::stall(0, 30_000_000)
        }];
        let before = dump::to_json(&rec).unwrap();
        assert!(before.contains("/svc") && before.contains("/neighbour"));
        redact(&mut rec);
        let after = dump::to_json(&rec).unwrap();
        rec.gc_pauses = vec![crate::windows::GcPause {
            throttled_by: Some("/svc".into()),
            cgroup: Some("/svc".into()),
            top_occupant: Some(crate::windows::PauseOccupant {
                cgroup: "/gc-neighbour".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        for secret in [
            "/svc",
            "/neighbour",
            "/batch-neighbour",
            "/gc-neighbour",
            "db-prod-17",
        ] {
            assert!(
                !after.contains(secret),
                "{secret} left in the redacted dump"
            );
        }
        assert!(rec.host.starts_with("host-"));
        // Still a dump, and the verdicts still read.
        let back = dump::parse(after.as_bytes()).unwrap();
        let svc = back
            .cgroups
            .iter()
            .find(|c| c.path == redact_path("/svc"))
            .unwrap();
        assert!(
            svc.verdict.text.contains(&redact_path("/svc")),
            "{}",
            svc.verdict.text
        );
    }
}
