//! What reports call each kind of workload, and how selectors match them.

use super::*;

#[test]
fn unnamed_workloads_are_named_from_their_ids() {
    let id12 = &ID[..12];
    let name = |path: String| Workload::from_path(&path).name();
    let burstable = format!("/kubepods/burstable/pod{UID}");
    assert_eq!(
        name(format!("{burstable}/{ID}")).as_deref(),
        Some(format!("pod 1b2c3d4e/{id12}").as_str())
    );
    assert_eq!(name(burstable.clone()).as_deref(), Some("pod 1b2c3d4e"));
    assert_eq!(
        name(format!("{burstable}/crio-conmon-{ID}")),
        Some(format!("conmon {id12}"))
    );
    assert_eq!(
        name(format!("/system.slice/docker-{ID}.scope")),
        Some(format!("docker {id12}"))
    );
    assert_eq!(
        name(format!("/machine.slice/libpod-{ID}.scope/container")),
        Some(format!("podman {id12}"))
    );
    assert_eq!(
        name(format!("/machine.slice/libpod-conmon-{ID}.scope")),
        Some(format!("conmon {id12}"))
    );
    assert_eq!(
        name("/system.slice/cron.service".into()).as_deref(),
        Some("cron.service")
    );
    assert_eq!(
        name("/user.slice/user-1000.slice/session-3.scope".into()).as_deref(),
        Some("session-3.scope")
    );
    assert_eq!(
        name("/kubepods/burstable".into()).as_deref(),
        Some("kubepods burstable")
    );
    assert_eq!(name("/kubepods.slice".into()).as_deref(), Some("kubepods"));
    assert_eq!(name("/".into()), None);
    assert_eq!(name("/system.slice".into()), None);
    assert_eq!(Workload::from_path("/").display("/"), "/");
    assert_eq!(Workload::from_path("?/gone").display("?/gone"), "?/gone");
}

#[test]
fn named_workloads_show_namespace_pod_and_container() {
    let path = format!("/kubepods/burstable/pod{UID}/{ID}");
    let mut container = Workload::from_path(&path);
    container.namespace = Some("shop".into());
    container.pod = Some("api-7f9c".into());
    assert_eq!(
        container.display(&path),
        format!("shop/api-7f9c/{}", &ID[..12]),
        "a sandbox"
    );
    container.container = Some("app".into());
    assert_eq!(container.display(&path), "shop/api-7f9c/app");
    let pod = Workload {
        namespace: Some("shop".into()),
        pod: Some("api-7f9c".into()),
        ..pod("burstable")
    };
    assert_eq!(pod.name().as_deref(), Some("shop/api-7f9c"));
    let conmon = Workload {
        kind: Kind::RuntimeMonitor,
        runtime: Some("cri-o".into()),
        container_id: Some(ID.into()),
        ..pod.clone()
    };
    assert_eq!(conmon.name().as_deref(), Some("shop/api-7f9c (conmon)"));
}

#[test]
fn selectors_match_names() {
    let named = Workload {
        namespace: Some("shop".into()),
        pod: Some("api".into()),
        container: Some("app".into()),
        ..in_pod(Kind::Container, Some("containerd"), "burstable")
    };
    assert!(named.in_namespace("shop") && !named.in_namespace("api"));
    assert!(
        named.in_pod("shop", "api")
            && !named.in_pod("other", "api")
            && !named.in_pod("shop", "app")
    );
    assert!(named.is_container("app") && !named.is_container("api"));
    let monitor = Workload {
        kind: Kind::RuntimeMonitor,
        ..named.clone()
    };
    assert!(monitor.in_pod("shop", "api") && !monitor.is_container("app"));
    let unnamed = Workload::from_path(&format!("/kubepods/pod{UID}/{ID}"));
    assert!(!unnamed.in_namespace("") && !unnamed.in_pod("", "") && !unnamed.is_container(""));
}
