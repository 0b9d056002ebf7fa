//! Look-alike and hostile paths, and workloads read back from files: never a
//! pod or container by mistake, never a panic.

use proptest::prelude::*;

use super::*;

/// Look-alikes and hostile input: never a pod or container, never a panic.
fn malformed() -> Vec<String> {
    let upper = ID.to_uppercase();
    let short = &ID[..63];
    let burstable =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
    vec![
        "/kubepods/burstable/podnotauid/abc".into(),
        "/kubepods/burstable/podnotauid".into(),
        format!("/kubepods/burstable/pod{UID}/abc"),
        format!("/kubepods/burstable/pod{UID}/{upper}"),
        format!("/kubepods/burstable/pod{UID}/{short}"),
        format!("/kubepods/burstable/pod{UID}/{ID}0"),
        format!("/kubepods/guaranteed/pod{UID}/{ID}"),
        format!("/kubepods/burstable/pod{UID_}/{ID}"),
        format!("/kubepods/burstable/{UID}/{ID}"),
        format!("/kubepods/burstable/pod{}/{ID}", UID.to_uppercase()),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID}.slice"),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-pod{UID_}.slice"),
        format!("/kubepods.slice/kubepods-burstable-pod{UID_}.slice"),
        format!("/kubepods.slice/kubelet-kubepods-pod{UID_}.slice"),
        format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}"),
        format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope.x"),
        format!("/kubepods.slice/kubepods-pod{UID_}.slice/containerd-{ID}.scope"),
        format!("{burstable}/crio-{upper}.scope"),
        format!("{burstable}/{ID}"),
        format!("/kubepods/burstable/pod{UID}/../{ID}"),
        format!("/kubepods/burstable/pod{UID}/./{ID}"),
        format!("/system.slice/docker-{ID}.scope/.."),
        format!("/system.slice/docker-{upper}.scope"),
        format!("/system.slice/docker-{short}.scope"),
        "/docker/notanid".into(),
        format!(
            "/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{short}"
        ),
        format!("/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:runc:{ID}"),
        format!(
            "/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}:x"
        ),
        format!("/kubepods/burstable/pod{UID}/é{}", &ID[..62]),
        format!("/kubepods/burstable/pod{}é/{ID}", &UID[..35]),
        "/system.slice/crön.service".into(),
        "/ü".into(),
        "/.service".into(),
        "/session-.scope".into(),
        "/session-ä.scope".into(),
        "/".repeat(100_000) + "x",
        "/a".repeat(50_000),
        format!("/kubepods/burstable/pod{UID}/{}", "0".repeat(100_000)),
        format!("/system.slice/{}.service", "a".repeat(300)),
    ]
}

#[test]
fn look_alikes_and_hostile_paths_are_other() {
    for path in malformed() {
        let workload = Workload::from_path(&path);
        assert_eq!(workload, other(), "{path}");
        assert_eq!(workload.display(&path), path);
    }
}

/// A workload read back from a file may hold anything; naming it must not
/// slice inside a character.
#[test]
fn odd_deserialized_ids_name_without_panicking() {
    let odd = Workload {
        kind: Kind::Container,
        pod_uid: Some("ééééééééé".into()),
        container_id: Some("ü".repeat(20)),
        ..Workload::default()
    };
    assert_eq!(odd.name().as_deref(), Some("pod éééééééé/üüüüüüüüüüüü"));
    let short = Workload {
        kind: Kind::Container,
        runtime: Some("docker".into()),
        container_id: Some("ab".into()),
        ..Workload::default()
    };
    assert_eq!(short.name().as_deref(), Some("docker ab"));
    assert_eq!(kind(Kind::Container).name(), None);
    assert_eq!(kind(Kind::RuntimeMonitor).name(), None);
    assert_eq!(kind(Kind::Pod).name(), None);
    assert_eq!(kind(Kind::Service).name(), None);
}

/// Segments that the parser looks at, for the property test to combine.
fn segments() -> Vec<String> {
    [
        "kubepods",
        "kubepods.slice",
        "kubelet-kubepods.slice",
        "kubepods-burstable.slice",
        "burstable",
        "besteffort",
        "docker",
        "system.slice",
        "cron.service",
        "session-1.scope",
        "..",
        "",
        "é",
        ":",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("pod{UID}"),
        format!("kubepods-burstable-pod{UID_}.slice"),
        format!("kubepods-pod{UID_}.slice"),
        ID.to_owned(),
        format!("cri-containerd-{ID}.scope"),
        format!("crio-conmon-{ID}"),
        format!("docker-{ID}.scope"),
        format!("libpod-{ID}.scope"),
        format!("kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"),
    ])
    .collect()
}

proptest! {
    #[test]
    fn any_string_parses_and_names(path in any::<String>()) {
        let workload = Workload::from_path(&path);
        let _ = workload.display(&path);
    }

    #[test]
    fn any_mix_of_segments_parses_and_names(
        picked in prop::collection::vec(prop::sample::select(segments()), 0..8),
        absolute in any::<bool>(),
    ) {
        let path = format!("{}{}", if absolute { "/" } else { "" }, picked.join("/"));
        let workload = Workload::from_path(&path);
        let _ = workload.display(&path);
        if !path.starts_with('/') {
            prop_assert_eq!(workload, other());
        }
    }
}
