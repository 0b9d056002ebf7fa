//! Reading a workload from a cgroup path.
//!
//! Three layers are looked for, in this order, and the first found decides:
//!
//! 1. the kubelet's `kubepods` tree (systemd or cgroupfs driver, under any
//!    prefix: a kind node's own container or a `kubelet.slice` is the node's,
//!    the pod below it is the workload);
//! 2. a plain Docker or Podman container anywhere in the path;
//! 3. a systemd service or session scope as the last segment.
//!
//! Everything below a container is that container (cgroups it created itself,
//! Podman's `container` leaf). A tree that starts like `kubepods` but does not
//! continue as the kubelet writes it is [`Kind::Other`], so that look-alike
//! names never become a pod.

use super::{
    Kind, Workload,
    ids::{is_container_id, pod_uid},
};

const GUARANTEED: &str = "guaranteed";
/// The QoS classes with a cgroup of their own; Guaranteed pods sit directly
/// under the top.
const QOS_CLASSES: [&str; 2] = ["burstable", "besteffort"];

/// The container scopes of runtimes under the kubelet, by the prefix before
/// the id (`cri-containerd-<id>.scope`, or `...slice:cri-containerd:<id>`).
const POD_RUNTIMES: [(&str, Kind, &str); 4] = [
    ("cri-containerd", Kind::Container, "containerd"),
    ("crio-conmon", Kind::RuntimeMonitor, "cri-o"),
    ("crio", Kind::Container, "cri-o"),
    ("docker", Kind::Container, "docker"),
];

/// The container scopes of runtimes outside Kubernetes.
const PLAIN_RUNTIMES: [(&str, Kind, &str); 3] = [
    ("docker", Kind::Container, "docker"),
    ("libpod-conmon", Kind::RuntimeMonitor, "podman"),
    ("libpod", Kind::Container, "podman"),
];

/// A container (or runtime monitor) found in a segment.
struct Found<'a> {
    kind: Kind,
    runtime: Option<&'static str>,
    id: &'a str,
}

/// See [`Workload::from_path`]. Empty segments (doubled or trailing slashes)
/// are ignored; a path that is not absolute (`?/gone`: a cgroup removed before
/// it was resolved) or has `.` or `..` segments is [`Kind::Other`].
pub(super) fn parse(path: &str) -> Workload {
    let Some(rest) = path.strip_prefix('/') else {
        return Workload::default();
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| matches!(*s, "." | "..")) {
        return Workload::default();
    }
    if segments.is_empty() {
        return Workload {
            kind: Kind::Host,
            ..Workload::default()
        };
    }
    kubernetes(&segments)
        .or_else(|| plain_container(&segments))
        .or_else(|| segments.last().and_then(|leaf| unit(leaf)))
        .unwrap_or_default()
}

/// The identity from the first `kubepods` segment on, if there is one.
fn kubernetes(segments: &[&str]) -> Option<Workload> {
    for (i, segment) in segments.iter().enumerate() {
        let below = &segments[i + 1..];
        if let Some(prefix) = systemd_top(segment) {
            let workload = tree(
                below,
                |s| systemd_qos(prefix, s),
                |s, qos| pod_slice(s).and_then(|pod| pod.uid_if(prefix, qos)),
                systemd_container,
            );
            return Some(workload.unwrap_or_default());
        }
        if *segment == "kubepods" {
            let workload = tree(
                below,
                |s| QOS_CLASSES.into_iter().find(|class| *class == s),
                |s, _| pod_uid(s.strip_prefix("pod")?, b'-'),
                cgroupfs_container,
            );
            return Some(workload.unwrap_or_default());
        }
        if let Some(workload) = colon_container(segment) {
            return Some(workload);
        }
    }
    None
}

/// Follows a kubepods tree below its top: `[qos class] pod [container ...]`.
/// `pod_of` gives the UID of a pod segment in the given QoS class. `None` if
/// the segments are not that shape.
fn tree(
    below: &[&str],
    qos_of: impl Fn(&str) -> Option<&'static str>,
    pod_of: impl Fn(&str, &str) -> Option<String>,
    container_of: impl Fn(&str) -> Option<Found<'_>>,
) -> Option<Workload> {
    let (qos, rest) = match below.split_first() {
        Some((&first, rest)) => match qos_of(first) {
            Some(class) => (Some(class), rest),
            None => (None, below),
        },
        None => (None, below),
    };
    let Some((&pod_segment, rest)) = rest.split_first() else {
        return Some(Workload {
            kind: Kind::QosClass,
            qos: qos.map(str::to_owned),
            ..Workload::default()
        });
    };
    let qos = qos.unwrap_or(GUARANTEED);
    let mut workload = Workload {
        kind: Kind::Pod,
        pod_uid: Some(pod_of(pod_segment, qos)?),
        qos: Some(qos.to_owned()),
        ..Workload::default()
    };
    if let Some(&container) = rest.first() {
        workload.set_container(container_of(container)?);
    }
    Some(workload)
}

/// The prefix of a systemd `kubepods` top slice: `kubepods` for
/// `kubepods.slice`, `kubelet-kubepods` for kind's `kubelet-kubepods.slice`.
fn systemd_top(segment: &str) -> Option<&str> {
    segment
        .strip_suffix(".slice")
        .filter(|prefix| is_kubepods(prefix))
}

fn is_kubepods(prefix: &str) -> bool {
    prefix == "kubepods" || prefix.ends_with("-kubepods")
}

/// The QoS class of a `<prefix>-burstable.slice` segment.
fn systemd_qos(prefix: &str, segment: &str) -> Option<&'static str> {
    let class = segment
        .strip_suffix(".slice")?
        .strip_prefix(prefix)?
        .strip_prefix('-')?;
    QOS_CLASSES.into_iter().find(|c| *c == class)
}

/// A pod's systemd slice: `<prefix>[-<qos>]-pod<uid_>.slice`.
struct PodSlice<'a> {
    prefix: &'a str,
    qos: &'static str,
    uid: String,
}

impl PodSlice<'_> {
    /// The UID, if the slice is where a pod of class `qos` under `prefix` is.
    fn uid_if(self, prefix: &str, qos: &str) -> Option<String> {
        (self.prefix == prefix && self.qos == qos).then_some(self.uid)
    }
}

fn pod_slice(segment: &str) -> Option<PodSlice<'_>> {
    let (parent, uid) = segment.strip_suffix(".slice")?.rsplit_once("-pod")?;
    let uid = pod_uid(uid, b'_')?;
    let (prefix, qos) = QOS_CLASSES
        .into_iter()
        .find_map(|class| Some((parent.strip_suffix(class)?.strip_suffix('-')?, class)))
        .unwrap_or((parent, GUARANTEED));
    is_kubepods(prefix).then_some(PodSlice { prefix, qos, uid })
}

/// A pod's container scope with the systemd driver: `cri-containerd-<id>.scope`
/// and the like.
fn systemd_container(segment: &str) -> Option<Found<'_>> {
    scope(segment, &POD_RUNTIMES)
}

/// `<prefix>-<id>.scope` for one of `runtimes`.
fn scope<'a>(segment: &'a str, runtimes: &[(&str, Kind, &'static str)]) -> Option<Found<'a>> {
    let name = segment.strip_suffix(".scope")?;
    runtimes.iter().find_map(|&(prefix, kind, runtime)| {
        let id = name.strip_prefix(prefix)?.strip_prefix('-')?;
        is_container_id(id).then_some(Found {
            kind,
            runtime: Some(runtime),
            id,
        })
    })
}

/// A pod's container with the cgroupfs driver: the bare id (containerd, and
/// Docker's shims, alike), or CRI-O's `crio-<id>` and `crio-conmon-<id>`.
fn cgroupfs_container(segment: &str) -> Option<Found<'_>> {
    if is_container_id(segment) {
        return Some(Found {
            kind: Kind::Container,
            runtime: None,
            id: segment,
        });
    }
    [
        ("crio-conmon-", Kind::RuntimeMonitor),
        ("crio-", Kind::Container),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| {
        let id = segment.strip_prefix(prefix)?;
        is_container_id(id).then_some(Found {
            kind,
            runtime: Some("cri-o"),
            id,
        })
    })
}

/// containerd's form when it creates a pod's container cgroup itself with the
/// systemd driver on some cgroup v1 hosts: one segment
/// `kubepods-besteffort-pod<uid_>.slice:cri-containerd:<id>` (under
/// `containerd.service`). `None` if the segment is not a pod slice with
/// colons; [`Kind::Other`] if the rest of it is wrong.
fn colon_container(segment: &str) -> Option<Workload> {
    let mut parts = segment.split(':');
    let (Some(slice), Some(runtime), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let pod = pod_slice(slice)?;
    let found = POD_RUNTIMES
        .into_iter()
        .find(|(prefix, _, _)| *prefix == runtime)
        .filter(|_| is_container_id(id))
        .map(|(_, kind, runtime)| Found {
            kind,
            runtime: Some(runtime),
            id,
        });
    let Some(found) = found else {
        return Some(Workload::default());
    };
    let mut workload = Workload {
        pod_uid: Some(pod.uid),
        qos: Some(pod.qos.to_owned()),
        ..Workload::default()
    };
    workload.set_container(found);
    Some(workload)
}

/// A Docker or Podman container outside Kubernetes: `docker-<id>.scope`,
/// `libpod-<id>.scope`, `libpod-conmon-<id>.scope`, or cgroupfs Docker's
/// `docker/<id>`; the first one in the path.
fn plain_container(segments: &[&str]) -> Option<Workload> {
    let found = segments.iter().enumerate().find_map(|(i, segment)| {
        scope(segment, &PLAIN_RUNTIMES).or_else(|| {
            let id = *segments.get(i + 1).filter(|_| *segment == "docker")?;
            is_container_id(id).then_some(Found {
                kind: Kind::Container,
                runtime: Some("docker"),
                id,
            })
        })
    })?;
    let mut workload = Workload::default();
    workload.set_container(found);
    Some(workload)
}

/// A systemd service or session scope, from the last segment only: a slice,
/// another scope or a cgroup a service made below itself shows as its path.
fn unit(leaf: &str) -> Option<Workload> {
    let valid = leaf.len() <= 255
        && leaf
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    if !valid {
        return None;
    }
    let service = leaf.strip_suffix(".service").is_some_and(|s| !s.is_empty());
    let session = leaf
        .strip_prefix("session-")
        .and_then(|s| s.strip_suffix(".scope"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    let kind = match (service, session) {
        (true, _) => Kind::Service,
        (false, true) => Kind::Session,
        (false, false) => return None,
    };
    Some(Workload {
        kind,
        unit: Some(leaf.to_owned()),
        ..Workload::default()
    })
}

impl Workload {
    fn set_container(&mut self, found: Found<'_>) {
        self.kind = found.kind;
        self.runtime = found.runtime.map(str::to_owned);
        self.container_id = Some(found.id.to_owned());
    }
}
