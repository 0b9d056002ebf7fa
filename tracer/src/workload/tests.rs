//! Cgroup paths as each runtime and cgroup driver writes them, and the names
//! reports show for them.

use super::*;

mod hostile;
mod naming;

const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
const UID_: &str = "1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d";
/// A static pod's UID: the kubelet's md5 of the manifest.
const STATIC_UID: &str = "5f3c1d0e0a8b6c2e9f3e3f1b2a4c5d6e";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A kind node's own container.
const NODE: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn pod(qos: &str) -> Workload {
    Workload {
        kind: Kind::Pod,
        pod_uid: Some(UID.into()),
        qos: Some(qos.into()),
        ..Workload::default()
    }
}

fn in_pod(kind: Kind, runtime: Option<&str>, qos: &str) -> Workload {
    Workload {
        kind,
        runtime: runtime.map(Into::into),
        container_id: Some(ID.into()),
        ..pod(qos)
    }
}

fn plain(kind: Kind, runtime: &str, id: &str) -> Workload {
    Workload {
        kind,
        runtime: Some(runtime.into()),
        container_id: Some(id.into()),
        ..Workload::default()
    }
}

fn qos_class(qos: Option<&str>) -> Workload {
    Workload {
        kind: Kind::QosClass,
        qos: qos.map(Into::into),
        ..Workload::default()
    }
}

fn unit(kind: Kind, name: &str) -> Workload {
    Workload {
        kind,
        unit: Some(name.into()),
        ..Workload::default()
    }
}

fn kind(kind: Kind) -> Workload {
    Workload {
        kind,
        ..Workload::default()
    }
}

fn other() -> Workload {
    Workload::default()
}

/// Every layout the tracer meets, by runtime and cgroup driver.
fn table() -> Vec<(String, Workload)> {
    use Kind::{Container, RuntimeMonitor};
    let burstable =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
    let kind_node = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
    );
    let containerd = || in_pod(Container, Some("containerd"), "burstable");
    let bare = |qos| in_pod(Container, None, qos);
    let crio = in_pod(Container, Some("cri-o"), "burstable");
    let conmon = in_pod(RuntimeMonitor, Some("cri-o"), "burstable");
    let static_pod = Workload {
        pod_uid: Some(STATIC_UID.into()),
        ..containerd()
    };
    vec![
        // containerd, systemd driver.
        (
            format!("{burstable}/cri-containerd-{ID}.scope"),
            containerd(),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            in_pod(Container, Some("containerd"), "guaranteed"),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            in_pod(Container, Some("containerd"), "besteffort"),
        ),
        (burstable.clone(), pod("burstable")),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
            pod("guaranteed"),
        ),
        (
            format!("{burstable}/cri-containerd-{ID}.scope/sub/deeper"),
            containerd(),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{ID}.scope"
            ),
            static_pod.clone(),
        ),
        // containerd, cgroupfs driver (k3s, GKE).
        (
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            bare("burstable"),
        ),
        (format!("/kubepods/pod{UID}/{ID}"), bare("guaranteed")),
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            bare("besteffort"),
        ),
        (format!("/kubepods/burstable/pod{UID}"), pod("burstable")),
        (format!("/kubepods/pod{UID}"), pod("guaranteed")),
        (
            format!("/kubepods/burstable/pod{UID}/{ID}/"),
            bare("burstable"),
        ),
        (
            format!("/kubepods/burstable/pod{STATIC_UID}/{ID}"),
            Workload {
                runtime: None,
                ..static_pod
            },
        ),
        // CRI-O, both drivers.
        (format!("{burstable}/crio-{ID}.scope"), crio.clone()),
        (
            format!("{burstable}/crio-conmon-{ID}.scope"),
            conmon.clone(),
        ),
        (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), crio),
        (
            format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
            conmon,
        ),
        // cri-dockerd, systemd driver.
        (
            format!("{burstable}/docker-{ID}.scope"),
            in_pod(Container, Some("docker"), "burstable"),
        ),
        // kind, or a kubelet in a container: the kubepods part decides.
        (
            kind_node.clone(),
            in_pod(Container, Some("containerd"), "besteffort"),
        ),
        (
            format!("/system.slice/docker-{NODE}.scope{kind_node}"),
            in_pod(Container, Some("containerd"), "besteffort"),
        ),
        (
            format!("/kubelet/kubepods/pod{UID}/{ID}"),
            bare("guaranteed"),
        ),
        (
            format!("/system.slice/docker-{NODE}.scope/kubelet/kubepods/burstable/pod{UID}/{ID}"),
            bare("burstable"),
        ),
        (
            format!("/system.slice/docker-{NODE}.scope/kubelet.slice"),
            plain(Container, "docker", NODE),
        ),
        (
            "/kubelet.slice/kubelet-kubepods.slice".into(),
            qos_class(None),
        ),
        // containerd 1.21's one-segment form.
        (
            format!(
                "/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"
            ),
            in_pod(Container, Some("containerd"), "besteffort"),
        ),
        (
            format!(
                "/system.slice/containerd.service/kubepods-pod{UID_}.slice:cri-containerd:{ID}"
            ),
            in_pod(Container, Some("containerd"), "guaranteed"),
        ),
        // Docker and Podman without Kubernetes.
        (
            format!("/system.slice/docker-{ID}.scope"),
            plain(Container, "docker", ID),
        ),
        (format!("/docker/{ID}"), plain(Container, "docker", ID)),
        (format!("/docker/{ID}/sub"), plain(Container, "docker", ID)),
        (
            format!("/machine.slice/libpod-{ID}.scope"),
            plain(Container, "podman", ID),
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope/container"),
            plain(Container, "podman", ID),
        ),
        (
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            plain(RuntimeMonitor, "podman", ID),
        ),
        (
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            plain(Container, "podman", ID),
        ),
        // systemd units.
        (
            "/system.slice/cron.service".into(),
            unit(Kind::Service, "cron.service"),
        ),
        (
            "/system.slice/containerd.service".into(),
            unit(Kind::Service, "containerd.service"),
        ),
        (
            "/user.slice/user-1000.slice/session-3.scope".into(),
            unit(Kind::Session, "session-3.scope"),
        ),
        (
            "/user.slice/user-1000.slice/session-c1.scope".into(),
            unit(Kind::Session, "session-c1.scope"),
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service".into(),
            unit(Kind::Service, "foo.service"),
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service".into(),
            unit(Kind::Service, "user@1000.service"),
        ),
        (
            "/system.slice/cron.service/".into(),
            unit(Kind::Service, "cron.service"),
        ),
        // The host, QoS classes and the top.
        ("/".into(), kind(Kind::Host)),
        ("//".into(), kind(Kind::Host)),
        ("/kubepods.slice".into(), qos_class(None)),
        ("/kubepods".into(), qos_class(None)),
        (
            "/kubepods.slice/kubepods-burstable.slice".into(),
            qos_class(Some("burstable")),
        ),
        (
            "/kubepods.slice/kubepods-besteffort.slice".into(),
            qos_class(Some("besteffort")),
        ),
        ("/kubepods/burstable".into(), qos_class(Some("burstable"))),
        (
            "/kubepods/besteffort/".into(),
            qos_class(Some("besteffort")),
        ),
        // Other.
        ("/system.slice".into(), other()),
        ("/user.slice".into(), other()),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice".into(),
            other(),
        ),
        ("/init.scope".into(), other()),
        ("/system.slice/cron.service/sub".into(), other()),
        ("/tracer-test-12-left".into(), other()),
        ("?/gone".into(), other()),
        ("?/id-9".into(), other()),
        ("".into(), other()),
        ("relative/path".into(), other()),
    ]
}

#[test]
fn every_layout_is_recognised() {
    for (path, expected) in table() {
        assert_eq!(Workload::from_path(&path), expected, "{path}");
    }
}

#[test]
fn workloads_serialize_without_unknowns() {
    let service = unit(Kind::Service, "cron.service");
    let json = serde_json::to_string(&service).unwrap();
    assert_eq!(json, r#"{"kind":"service","unit":"cron.service"}"#);
    assert_eq!(
        serde_json::to_string(&Kind::QosClass).unwrap(),
        r#""qos_class""#
    );
    assert_eq!(
        serde_json::to_string(&Kind::RuntimeMonitor).unwrap(),
        r#""runtime_monitor""#
    );
    for (path, workload) in table() {
        let json = serde_json::to_string(&workload).unwrap();
        assert_eq!(
            serde_json::from_str::<Workload>(&json).unwrap(),
            workload,
            "{path}"
        );
    }
    let host: Workload = serde_json::from_str(r#"{"kind":"host"}"#).unwrap();
    assert_eq!(host, kind(Kind::Host));
}
