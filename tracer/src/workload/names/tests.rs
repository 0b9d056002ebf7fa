//! Names from the kubelet's log directory names, built by hand and read from a
//! directory tree.

use std::path::PathBuf;

use super::*;

const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
const UID_: &str = "1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d";
const OTHER_UID: &str = "2b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
const STATIC_UID: &str = "5f3c1d0e0a8b6c2e9f3e3f1b2a4c5d6e";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ID2: &str = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A pod's sandbox: no log, so no directory and no link.
const SANDBOX: &str = "2123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The workload of the cgroup at `path`, named from `names`.
fn identify(names: &PodNames, path: &str) -> Workload {
    let mut workload = Workload::from_path(path);
    names.resolve(&mut workload);
    workload
}

fn container_path(uid: &str, id: &str) -> String {
    format!("/kubepods/burstable/pod{uid}/{id}")
}

fn pod_dir(uid: &str) -> String {
    format!("shop_api-7f9c_{uid}")
}

fn link(container: &str, id: &str) -> String {
    format!("api-7f9c_shop_{container}-{id}.log")
}

#[test]
fn a_pods_only_container_is_named_by_its_directory() {
    let dir = pod_dir(UID);
    let names = PodNames::from_entries([dir.as_str()], [(dir.as_str(), "app")], []);
    assert!(!names.is_empty());
    let container = identify(&names, &container_path(UID, ID));
    assert_eq!(container.name().as_deref(), Some("shop/api-7f9c/app"));
    assert!(container.in_pod("shop", "api-7f9c") && container.is_container("app"));
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
    );
    assert_eq!(
        identify(&names, &systemd).name().as_deref(),
        Some("shop/api-7f9c/app")
    );
    let pod = identify(&names, &format!("/kubepods/burstable/pod{UID}"));
    assert_eq!((pod.kind, pod.container.as_deref()), (Kind::Pod, None));
    assert_eq!(pod.name().as_deref(), Some("shop/api-7f9c"));
    let conmon = identify(
        &names,
        &format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
    );
    assert_eq!(conmon.container, None, "a monitor is no container");
    assert_eq!(conmon.name().as_deref(), Some("shop/api-7f9c (conmon)"));
}

#[test]
fn a_pods_containers_are_named_by_their_links() {
    let dir = pod_dir(UID);
    let links = [link("app", ID), link("sidecar", ID2)];
    let names = PodNames::from_entries(
        [dir.as_str()],
        [(dir.as_str(), "app"), (dir.as_str(), "sidecar")],
        links.iter().map(String::as_str),
    );
    let name = |id| identify(&names, &container_path(UID, id)).name();
    assert_eq!(name(ID).as_deref(), Some("shop/api-7f9c/app"));
    assert_eq!(name(ID2).as_deref(), Some("shop/api-7f9c/sidecar"));
    assert_eq!(
        name(SANDBOX),
        Some(format!("shop/api-7f9c/{}", &SANDBOX[..12]))
    );
    let conmon = identify(
        &names,
        &format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
    );
    assert_eq!(conmon.container, None);
}

/// Where the links exist, a container without one is the sandbox: the pod's
/// only container directory belongs to another container.
#[test]
fn with_links_the_sandbox_does_not_take_the_only_containers_name() {
    let dir = pod_dir(UID);
    let app = link("app", ID);
    let names = PodNames::from_entries([dir.as_str()], [(dir.as_str(), "app")], [app.as_str()]);
    assert_eq!(
        identify(&names, &container_path(UID, ID))
            .container
            .as_deref(),
        Some("app")
    );
    let sandbox = identify(&names, &container_path(UID, SANDBOX));
    assert_eq!(sandbox.container, None);
    assert_eq!(
        sandbox.name(),
        Some(format!("shop/api-7f9c/{}", &SANDBOX[..12]))
    );
}

#[test]
fn an_unknown_pod_stays_unresolved() {
    let dir = pod_dir(OTHER_UID);
    let names = PodNames::from_entries([dir.as_str()], [(dir.as_str(), "app")], []);
    let path = container_path(UID, ID);
    let workload = identify(&names, &path);
    assert_eq!(workload, Workload::from_path(&path));
    assert_eq!(workload.name(), Some(format!("pod 1b2c3d4e/{}", &ID[..12])));
    assert_eq!(
        identify(&names, &format!("/kubepods/burstable/pod{UID}"))
            .name()
            .as_deref(),
        Some("pod 1b2c3d4e")
    );
}

/// A pod whose directory is gone (or unreadable) while its link remains is
/// named from the link: container ids are unique.
#[test]
fn a_link_alone_names_the_pod_and_container() {
    let app = link("app", ID);
    let names = PodNames::from_entries([], [], [app.as_str()]);
    let workload = identify(&names, &container_path(UID, ID));
    assert_eq!(workload.name().as_deref(), Some("shop/api-7f9c/app"));
}

#[test]
fn static_pods_have_undashed_uids() {
    let dir = format!("kube-system_etcd-node-1_{STATIC_UID}");
    let names = PodNames::from_entries([dir.as_str()], [(dir.as_str(), "etcd")], []);
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/\
         cri-containerd-{ID}.scope"
    );
    assert_eq!(
        identify(&names, &path).name().as_deref(),
        Some("kube-system/etcd-node-1/etcd")
    );
}

#[test]
fn malformed_names_are_skipped() {
    let pods = [
        "nounderscores".to_owned(),
        "a_b".into(),
        format!("shop_api_{UID}_x"),
        format!("Shop_api_{UID}"),
        format!("shop__{UID}"),
        format!("shop_api_{UID_}"),
        format!("shop_api_{}", UID.to_uppercase()),
        "shop_api_notauid".into(),
        format!("shop_api_{UID}é"),
        String::new(),
    ];
    let good = pod_dir(UID);
    let links = [
        "bad.log".to_owned(),
        "api_shop_app.log".into(),
        format!("api_shop_app-{}.log", &ID[..63]),
        format!("api_shop_app-{ID}.txt"),
        format!("api_shop_App-{ID}.log"),
        format!("api_shop_x_app-{ID}.log"),
        format!("api_shop_-{ID}.log"),
        format!("api_shop_app-{ID}"),
    ];
    let names = PodNames::from_entries(
        pods.iter().map(String::as_str),
        pods.iter()
            .map(|p| (p.as_str(), "app"))
            .chain([(good.as_str(), "App"), (good.as_str(), "a_b")]),
        links.iter().map(String::as_str),
    );
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn names_are_filled_in_never_cleared() {
    let names = PodNames::default();
    assert!(names.is_empty());
    let mut workload = Workload {
        namespace: Some("shop".into()),
        pod: Some("api".into()),
        container: Some("app".into()),
        ..Workload::from_path(&container_path(UID, ID))
    };
    let before = workload.clone();
    names.resolve(&mut workload);
    assert_eq!(workload, before);
    let dir = pod_dir(UID);
    let two = PodNames::from_entries(
        [dir.as_str()],
        [(dir.as_str(), "a"), (dir.as_str(), "b")],
        [],
    );
    two.resolve(&mut workload);
    assert_eq!(
        workload.container.as_deref(),
        Some("app"),
        "no container name found"
    );
    assert_eq!(workload.pod.as_deref(), Some("api-7f9c"));
}

#[test]
fn workloads_outside_pods_are_left_alone() {
    let app = link("app", ID);
    let names = PodNames::from_entries([], [], [app.as_str()]);
    for path in [
        format!("/system.slice/docker-{ID}.scope"),
        "/system.slice/cron.service".into(),
    ] {
        assert_eq!(
            identify(&names, &path),
            Workload::from_path(&path),
            "{path}"
        );
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("tracer-workload-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_scan_reads_directories_and_links() {
    let tmp = TempDir::new("scan");
    let (pods, containers) = (tmp.0.join("pods"), tmp.0.join("containers"));
    let one = pods.join(pod_dir(UID));
    let two = pods.join(format!("batch_report_{OTHER_UID}"));
    for dir in [
        one.join("app"),
        two.join("main"),
        two.join("sidecar"),
        pods.join("not-a-pod"),
    ] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(one.join("app/0.log"), "").unwrap();
    fs::write(two.join("main/0.log"), "").unwrap();
    fs::write(pods.join(format!("file_not_{UID}")), "").unwrap();
    fs::create_dir_all(&containers).unwrap();
    std::os::unix::fs::symlink(
        two.join("main/0.log"),
        containers.join(format!("report_batch_main-{ID2}.log")),
    )
    .unwrap();
    fs::write(containers.join("garbage.log"), "").unwrap();

    let names = PodNames::scan(&pods).unwrap();
    let one_name = pod_dir(UID);
    let two_name = format!("batch_report_{OTHER_UID}");
    let expected = PodNames::from_entries(
        [one_name.as_str(), two_name.as_str()],
        [
            (one_name.as_str(), "app"),
            (two_name.as_str(), "main"),
            (two_name.as_str(), "sidecar"),
        ],
        [format!("report_batch_main-{ID2}.log").as_str()],
    );
    assert_eq!(names, expected);
    let name = |uid, id| identify(&names, &container_path(uid, id)).name();
    assert_eq!(name(UID, ID).as_deref(), Some("shop/api-7f9c/app"));
    assert_eq!(name(OTHER_UID, ID2).as_deref(), Some("batch/report/main"));

    fs::remove_dir_all(&containers).unwrap();
    let without_links = PodNames::scan(&pods).unwrap();
    assert_eq!(
        identify(&without_links, &container_path(UID, ID))
            .name()
            .as_deref(),
        Some("shop/api-7f9c/app")
    );
}

#[test]
fn a_missing_directory_has_no_names_and_a_file_is_an_error() {
    let tmp = TempDir::new("missing");
    assert!(PodNames::scan(&tmp.0.join("pods")).unwrap().is_empty());
    let empty = tmp.0.join("node/pods");
    fs::create_dir_all(&empty).unwrap();
    assert!(
        PodNames::scan(&empty).unwrap().is_empty(),
        "an empty directory"
    );
    let file = tmp.0.join("pods-file");
    fs::write(&file, "").unwrap();
    let error = format!("{:#}", PodNames::scan(&file).unwrap_err());
    assert!(error.contains(&file.display().to_string()), "{error}");
}
