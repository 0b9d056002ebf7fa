//! Pod and container names for the UIDs and container ids in cgroup paths.
//!
//! The kubelet writes each container's log to
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` and links
//! it as `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`. The
//! directory and link names alone map a pod UID to its namespace and name and a
//! container id to its container's name, with nothing to ask of the API server
//! or the runtime. Namespaces, pods and containers have DNS names, which never
//! hold `_`, so `_` separates the parts unambiguously.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::Path,
};

use anyhow::Context as _;

use super::{
    Kind, Workload,
    ids::{is_container_id, is_dns_name, pod_uid},
};

/// Where the kubelet keeps its pod log directories unless configured
/// otherwise (`podLogsDir`).
pub const PODS_LOG_DIR: &str = "/var/log/pods";

/// At most this many entries are read from one directory, so that a directory
/// someone filled on purpose cannot make a scan unbounded.
const MAX_ENTRIES: usize = 100_000;

/// The names the kubelet's log directories give to pods and containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames {
    /// Pod UID (canonical form, as in [`Workload::pod_uid`]) -> (namespace, pod).
    pods: BTreeMap<String, (String, String)>,
    /// Pod UID -> the names of its containers' log directories.
    containers: BTreeMap<String, BTreeSet<String>>,
    /// Container id -> what its link in `containers` says of it.
    links: BTreeMap<String, Link>,
    /// The (namespace, pod) pairs that have at least one link.
    linked_pods: BTreeSet<(String, String)>,
}

/// One `/var/log/containers` link: `<pod>_<namespace>_<container>-<id>.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    namespace: String,
    pod: String,
    container: String,
}

impl PodNames {
    /// Reads `pods_dir` (normally `/var/log/pods`) and, if present, the
    /// `containers` directory beside it.
    ///
    /// A missing `pods_dir` gives no names: the host is not a Kubernetes node.
    /// A pod directory removed while it is read is skipped. Other I/O errors
    /// are errors naming the path. Names that do not parse are skipped; at most
    /// 100 000 entries are read from each directory.
    pub fn scan(pods_dir: &Path) -> anyhow::Result<PodNames> {
        let Some(pod_dirs) = list(pods_dir, Entries::Directories)? else {
            return Ok(PodNames::default());
        };
        let mut container_dirs = Vec::new();
        for pod_dir in pod_dirs.iter().filter(|name| parse_pod_dir(name).is_some()) {
            let dir = pods_dir.join(pod_dir);
            for container in list(&dir, Entries::Directories)?.unwrap_or_default() {
                container_dirs.push((pod_dir.as_str(), container));
            }
        }
        let links = match pods_dir.parent() {
            Some(parent) => list(&parent.join("containers"), Entries::NotDirectories)?,
            None => None,
        };
        Ok(PodNames::from_entries(
            pod_dirs.iter().map(String::as_str),
            container_dirs.iter().map(|(pod, c)| (*pod, c.as_str())),
            links.iter().flatten().map(String::as_str),
        ))
    }

    /// The names from the entries' names alone: pod directory names
    /// (`<namespace>_<pod>_<uid>`), (pod directory, container directory) pairs
    /// and container link file names (`<pod>_<namespace>_<container>-<id>.log`).
    /// Names that do not parse are skipped.
    pub fn from_entries<'a>(
        pod_dirs: impl IntoIterator<Item = &'a str>,
        container_dirs: impl IntoIterator<Item = (&'a str, &'a str)>,
        container_links: impl IntoIterator<Item = &'a str>,
    ) -> PodNames {
        let mut names = PodNames::default();
        for dir in pod_dirs {
            if let Some(pod) = parse_pod_dir(dir) {
                names.pods.insert(pod.uid, (pod.namespace, pod.name));
            }
        }
        for (dir, container) in container_dirs {
            if let Some(pod) = parse_pod_dir(dir)
                && is_dns_name(container)
            {
                names
                    .containers
                    .entry(pod.uid.clone())
                    .or_default()
                    .insert(container.to_owned());
                names
                    .pods
                    .entry(pod.uid)
                    .or_insert((pod.namespace, pod.name));
            }
        }
        for file in container_links {
            if let Some((id, link)) = parse_link(file) {
                names
                    .linked_pods
                    .insert((link.namespace.clone(), link.pod.clone()));
                names.links.insert(id, link);
            }
        }
        names
    }

    /// Fills in the namespace, pod and container names of a workload with a
    /// pod UID, where they are known; never clears a name.
    ///
    /// The namespace and pod come from the UID's directory, or else from the
    /// container id's link. A container's name comes from its id's link; a
    /// container without one is named after its pod's only container directory
    /// if the pod has exactly one and none of the pod's containers has a link
    /// (the links are missing altogether): where links exist, a container
    /// without one is the pod's sandbox, which has no name. A runtime monitor
    /// belongs to its pod but is no container of it.
    pub fn resolve(&self, workload: &mut Workload) {
        let Some(uid) = workload.pod_uid.as_deref() else {
            return;
        };
        let link = workload
            .container_id
            .as_deref()
            .and_then(|id| self.links.get(id));
        let pod = self
            .pods
            .get(uid)
            .map(|(namespace, pod)| (namespace.as_str(), pod.as_str()));
        let Some((namespace, pod)) =
            pod.or_else(|| link.map(|l| (l.namespace.as_str(), l.pod.as_str())))
        else {
            return;
        };
        let container = match (workload.kind, link) {
            (Kind::Container, Some(link)) => Some(link.container.as_str()),
            (Kind::Container, None) => self.only_container(uid, namespace, pod),
            _ => None,
        };
        workload.namespace = Some(namespace.to_owned());
        workload.pod = Some(pod.to_owned());
        if let Some(container) = container {
            workload.container = Some(container.to_owned());
        }
    }

    /// Whether no names were found.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.containers.is_empty() && self.links.is_empty()
    }

    /// The pod's one container directory, when links cannot tell better.
    fn only_container(&self, uid: &str, namespace: &str, pod: &str) -> Option<&str> {
        let linked = self
            .linked_pods
            .contains(&(namespace.to_owned(), pod.to_owned()));
        match self.containers.get(uid) {
            Some(names) if names.len() == 1 && !linked => names.first().map(String::as_str),
            _ => None,
        }
    }
}

/// A pod directory's name, parsed.
struct PodDir {
    namespace: String,
    name: String,
    uid: String,
}

/// `<namespace>_<pod>_<uid>`.
fn parse_pod_dir(dir: &str) -> Option<PodDir> {
    let mut parts = dir.split('_');
    let (Some(namespace), Some(name), Some(uid), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !is_dns_name(namespace) || !is_dns_name(name) {
        return None;
    }
    Some(PodDir {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: pod_uid(uid, b'-')?,
    })
}

/// `<pod>_<namespace>_<container>-<id>.log`, as (id, link).
fn parse_link(file: &str) -> Option<(String, Link)> {
    let mut parts = file.strip_suffix(".log")?.split('_');
    let (Some(pod), Some(namespace), Some(rest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (container, id) = rest.rsplit_once('-')?;
    let valid = is_dns_name(pod) && is_dns_name(namespace) && is_dns_name(container);
    (valid && is_container_id(id)).then(|| {
        let link = Link {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
        };
        (id.to_owned(), link)
    })
}

/// Which entries of a directory [`list`] keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entries {
    Directories,
    /// Files and symbolic links.
    NotDirectories,
}

/// The UTF-8 names of the `wanted` entries of `dir`, from its first
/// [`MAX_ENTRIES`] entries; `None` if `dir` does not exist.
fn list(dir: &Path, wanted: Entries) -> anyhow::Result<Option<Vec<String>>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in read.take(MAX_ENTRIES) {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        // The entry's own type: a link to a directory is not a directory here.
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", entry.path().display()));
            }
        };
        if file_type.is_dir() != (wanted == Entries::Directories) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests;
