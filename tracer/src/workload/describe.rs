//! How a workload is told in reports and metrics, and who a path is on
//! this node: the parts of `crate::workload` the rest of the tracer calls.

use super::{Kind, Workload, names::PodNames};

impl Kind {
    /// As in the dump and the `kind` label of `tracer_cgroup_info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
            Self::QosClass => "qos_class",
            Self::RuntimeMonitor => "runtime_monitor",
            Self::Service => "service",
            Self::Session => "session",
            Self::Host => "host",
            Self::Other => "other",
        }
    }
}

impl Workload {
    /// One line of what the path and the names say beyond the name, for a
    /// container, a pod or a runtime's monitor: `container of pod
    /// shop/api-7f9c (uid 1b2c3d4e-...), burstable QoS, containerd
    /// 0123456789ab`. None for the rest, whose path says it all.
    pub fn facts(&self) -> Option<String> {
        let what = match self.kind {
            Kind::Container => "container",
            Kind::Pod => "pod",
            Kind::RuntimeMonitor => "the container runtime's monitor",
            _ => return None,
        };
        let mut parts = vec![what.to_owned()];
        if self.kind != Kind::Pod
            && let Some(uid) = &self.pod_uid
        {
            let pod = match (&self.namespace, &self.pod) {
                (Some(ns), Some(pod)) => format!("of pod {ns}/{pod} (uid {uid})"),
                _ => format!(
                    "of pod uid {uid} (not named: no such pod in the kubelet's log directory)"
                ),
            };
            parts[0] = format!("{what} {pod}");
        } else if let Some(uid) = &self.pod_uid {
            parts[0] = format!("{what} uid {uid}");
        }
        if let Some(qos) = &self.qos {
            parts.push(format!("{qos} QoS"));
        }
        match (&self.runtime, &self.container_id) {
            (Some(rt), Some(id)) => parts.push(format!("{rt} {}", id.get(..12).unwrap_or(id))),
            (Some(rt), None) => parts.push(rt.clone()),
            (None, Some(id)) => parts.push(format!("id {}", id.get(..12).unwrap_or(id))),
            (None, None) => {}
        }
        Some(parts.join(", "))
    }
}

impl PodNames {
    /// Who the cgroup at `path` is: what the path tells, with the names of
    /// its pod and container where the kubelet's directories have them.
    pub fn identify(&self, path: &str) -> Workload {
        let mut w = Workload::from_path(path);
        self.resolve(&mut w);
        w
    }
}
