//! Who a cgroup belongs to: a Kubernetes pod or container, a plain Docker or
//! Podman container, a systemd service or login session.
//!
//! The tracer measures cgroups, and a cgroup's path is exact but unreadable: a
//! report that blames `/kubepods.slice/kubepods-burstable.slice/
//! kubepods-burstable-pod1b2c…slice/cri-containerd-9f3a….scope` sends its reader
//! to `crictl` to learn which pod that is. The path does carry the pod's UID and
//! the container's id, and the kubelet's log directories map those to
//! `namespace/pod/container` ([`names`]), so a report can name `shop/api/app`
//! and a selector can pick a namespace, a pod or a container by name.
//!
//! [`Workload::from_path`] reads only the path (so it works on a recording made
//! elsewhere); [`PodNames::resolve`] adds the names where the node's log
//! directories know them.

mod describe;
mod ids;
pub mod names;
mod path;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use names::PodNames;

/// What kind of thing a cgroup is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A container: of a Kubernetes pod (with `pod_uid`) or of Docker or Podman.
    /// Cgroups a container creates below its own are the same container.
    Container,
    /// A Kubernetes pod's cgroup, the parent of its containers'.
    Pod,
    /// One of the kubelet's QoS-class cgroups, or the `kubepods` top above them.
    QosClass,
    /// A container runtime's per-container monitor process (`conmon` of CRI-O
    /// and Podman): it runs beside the container, not inside it.
    RuntimeMonitor,
    /// A systemd service (`cron.service`, `user@1000.service`).
    Service,
    /// A login session's scope (`session-3.scope`).
    Session,
    /// The root cgroup, `/`.
    Host,
    /// Anything else: slices, unknown layouts, paths that did not resolve.
    #[default]
    Other,
}

/// A cgroup's identity, as far as its path (and, once resolved, the kubelet's
/// log directories) tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub kind: Kind,
    /// The container runtime: `containerd`, `cri-o`, `docker` or `podman`; none
    /// where the path does not tell (a bare id under a cgroupfs-driver pod is
    /// written alike by containerd and by Docker's shims).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The container's full id: 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The pod's UID in its dashed form (`1b2c3d4e-5f60-…`), also when the path
    /// wrote it with systemd's underscores; a static pod's UID is 32 hex digits
    /// without dashes (the kubelet makes it from a hash of the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's QoS class, `guaranteed`, `burstable` or `besteffort`, for
    /// cgroups under the kubelet's `kubepods` tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container's name in its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The systemd unit, for a [`Kind::Service`] or [`Kind::Session`] only: a
    /// container's `docker-<id>.scope` is a unit too, but the container is what
    /// a reader wants to see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// How many hex digits of a container id a name shows (as `docker ps` does).
const SHORT_ID: usize = 12;
/// How many characters of a pod UID a name shows.
const SHORT_UID: usize = 8;

impl Workload {
    /// The identity that the cgroup path alone tells: `path` is the cpu
    /// controller's path from its root (`/` is the root itself). Never fails:
    /// what it does not recognise is [`Kind::Other`].
    pub fn from_path(path: &str) -> Workload {
        path::parse(path)
    }

    /// What to call this cgroup in a report, or `None` to show its path.
    ///
    /// A container of a named pod is `namespace/pod/container`; a pod is
    /// `namespace/pod`. Before the names are known, `pod <uid8>` and
    /// `pod <uid8>/<id12>`. A runtime monitor is `namespace/pod (conmon)` or
    /// `conmon <id12>`; a plain container `docker <id12>` or `podman <id12>`;
    /// a service or session its unit; a QoS class `kubepods burstable` (or
    /// `kubepods` for the top). The host and anything else have no name.
    pub fn name(&self) -> Option<String> {
        let id = self.container_id.as_deref().map(|id| short(id, SHORT_ID));
        let pod = self.pod_name();
        match self.kind {
            Kind::Container => self.container_name(pod, id),
            Kind::Pod => pod.or_else(|| {
                let uid = self.pod_uid.as_deref()?;
                Some(format!("pod {}", short(uid, SHORT_UID)))
            }),
            Kind::RuntimeMonitor => match (pod, id) {
                (Some(pod), _) => Some(format!("{pod} (conmon)")),
                (None, Some(id)) => Some(format!("conmon {id}")),
                (None, None) => None,
            },
            Kind::QosClass => Some(match &self.qos {
                Some(qos) => format!("kubepods {qos}"),
                None => "kubepods".to_owned(),
            }),
            Kind::Service | Kind::Session => self.unit.clone(),
            Kind::Host | Kind::Other => None,
        }
    }

    /// [`Self::name`], or else `path`.
    pub fn display(&self, path: &str) -> String {
        self.name().unwrap_or_else(|| path.to_owned())
    }

    /// Whether this is pod `pod` of `namespace`, or in it (its containers and
    /// their runtime monitors).
    pub fn in_pod(&self, namespace: &str, pod: &str) -> bool {
        self.in_namespace(namespace) && self.pod.as_deref() == Some(pod)
    }

    /// Whether this is in Kubernetes namespace `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref() == Some(namespace)
    }

    /// Whether this is a container named `name` (in any pod).
    pub fn is_container(&self, name: &str) -> bool {
        self.kind == Kind::Container && self.container.as_deref() == Some(name)
    }

    /// `namespace/pod` where both are known.
    fn pod_name(&self) -> Option<String> {
        match (&self.namespace, &self.pod) {
            (Some(namespace), Some(pod)) => Some(format!("{namespace}/{pod}")),
            _ => None,
        }
    }

    /// A pod's container is `namespace/pod/container`, with the short id for
    /// a container whose name is unknown (a pod's sandbox has none) and
    /// `pod <uid8>` for a pod whose names are unknown.
    fn container_name(&self, pod: Option<String>, id: Option<&str>) -> Option<String> {
        if let Some(uid) = self.pod_uid.as_deref() {
            let pod = pod.unwrap_or_else(|| format!("pod {}", short(uid, SHORT_UID)));
            return Some(match self.container.as_deref().or(id) {
                Some(container) => format!("{pod}/{container}"),
                None => pod,
            });
        }
        let id = id?;
        Some(format!(
            "{} {id}",
            self.runtime.as_deref().unwrap_or("container")
        ))
    }
}

/// The first `n` characters of `s` (all of it if shorter). Counts characters,
/// not bytes: a deserialized workload may hold anything.
fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}
