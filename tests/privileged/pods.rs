//! Kubernetes pods as the tracer names them: cgroups made at the exact paths
//! three container runtimes use, the kubelet's log directories that name
//! them, and what `record` and the agent make of both.

use std::{path::Path, time::Duration};

use libtest_mimic::{Completion, Trial};
use tracer_tests::{CgroupPath, Load, Worker, services::Prometheus, tracer_command};

use crate::{Scratch, TestResult, bin, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged(
            "synthetic_pods_are_named_blamed_and_selected",
            pods_in_record,
        ),
        privileged(
            "tracer_cgroup_info_names_synthetic_pods_in_prometheus",
            pods_in_prometheus,
        ),
    ]
}

/// Three pods of three runtimes' layouts, their workers pinned to one CPU,
/// named by a log directory like the kubelet's.
struct Pods {
    /// Dropped first: a cgroup with a task in it cannot be removed. The
    /// cgroups follow in the reverse of their making: a cgroup with a child
    /// cannot be removed either.
    _workers: Vec<Worker>,
    /// CRI-O's conmon beside cart's container, in the pod cgroup `cart` made.
    conmon: CgroupPath,
    /// `shop/cart-<tag>/cart`: CRI-O, systemd driver.
    cart: CgroupPath,
    /// `batch/nightly-<tag>/worker`: containerd, systemd driver, BestEffort.
    batch: CgroupPath,
    /// `shop/api-<tag>/app`: containerd, cgroupfs driver, Burstable.
    shop: CgroupPath,
    tag: String,
}

/// A pod uid and a container id unique to this run: the test's cgroups
/// never meet a real node's, or an earlier run's.
fn ids(n: u32) -> (String, String) {
    let seed = (std::process::id() as u64) << 8 | u64::from(n);
    let hex = format!("{seed:012x}");
    let uid = format!("7e57{:04x}-0000-4000-8000-{hex}", n);
    let id = format!("{:0>64}", format!("7e57{hex}"));
    (uid, id)
}

impl Pods {
    fn create(logs: &Path, busy: usize) -> anyhow::Result<Self> {
        let tag = format!("{}", std::process::id());
        let (shop_uid, shop_id) = ids(1);
        let (batch_uid, batch_id) = ids(2);
        let (cart_uid, cart_id) = ids(3);
        let shop = CgroupPath::create(&format!("/kubepods/burstable/pod{shop_uid}/{shop_id}"))?;
        let batch = CgroupPath::create(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
             cri-containerd-{batch_id}.scope",
            batch_uid.replace('-', "_")
        ))?;
        let cart_pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            cart_uid.replace('-', "_")
        );
        let cart = CgroupPath::create(&format!("{cart_pod}/crio-{cart_id}.scope"))?;
        let conmon = CgroupPath::create(&format!("{cart_pod}/crio-conmon-{cart_id}.scope"))?;

        // The kubelet's directories: pods/<ns>_<pod>_<uid>/<container>/, and
        // containers/<pod>_<ns>_<container>-<id>.log linking to a log there.
        let pods = logs.join("pods");
        let links = logs.join("containers");
        std::fs::create_dir_all(&links)?;
        for (ns, pod, uid, container, id) in [
            ("shop", format!("api-{tag}"), &shop_uid, "app", &shop_id),
            (
                "batch",
                format!("nightly-{tag}"),
                &batch_uid,
                "worker",
                &batch_id,
            ),
            ("shop", format!("cart-{tag}"), &cart_uid, "cart", &cart_id),
        ] {
            let dir = pods.join(format!("{ns}_{pod}_{uid}")).join(container);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("0.log"), "")?;
            std::os::unix::fs::symlink(
                dir.join("0.log"),
                links.join(format!("{pod}_{ns}_{container}-{id}.log")),
            )?;
        }
        // The pod beside cart's has a second container, so that only the
        // links can tell which of its containers a cgroup is.
        std::fs::create_dir_all(
            pods.join(format!("shop_cart-{tag}_{cart_uid}"))
                .join("log-shipper"),
        )?;

        // shop's service waits behind batch's hog on one CPU; cart and its
        // conmon wake now and then.
        let workers = vec![
            Worker::start(
                Load::Service {
                    work_us: 300,
                    sleep_us: 1000,
                },
                shop.leaf(),
                busy,
            )?,
            Worker::start(Load::Spin, batch.leaf(), busy)?,
            Worker::start(Load::MostlySleep, cart.leaf(), busy)?,
            Worker::start(Load::MostlySleep, conmon.leaf(), busy)?,
        ];
        Ok(Self {
            shop,
            batch,
            cart,
            conmon,
            tag,
            _workers: workers,
        })
    }
}

/// `tracer record --output` with `args`, its report and its dump.
fn record(
    scratch: &Scratch,
    name: &str,
    args: &[&str],
) -> anyhow::Result<(String, serde_json::Value)> {
    let bin = bin().map_err(|_| anyhow::anyhow!("no tracer binary"))?;
    let out_file = scratch.file(name);
    let mut all = vec!["record", "--duration", "3s", "--output", &out_file];
    all.extend(args);
    let out = tracer_command(&bin, &all, None).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "tracer record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = serde_json::from_str(&std::fs::read_to_string(&out_file)?)?;
    Ok((stdout, dump))
}

/// The dump's cgroup at `path`.
fn cgroup<'a>(dump: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    dump["cgroups"]
        .as_array()?
        .iter()
        .find(|c| c["path"] == path)
}

/// `record` names each pod's container `namespace/pod/container`, shows
/// CRI-O's conmon as the runtime's monitor, blames the neighbour pod by name,
/// and `--namespace` and `--pod` select them.
fn pods_in_record() -> TestResult {
    let _ = or_skip!(bin());
    let (_, busy) = or_skip!(cpus());
    let scratch = Scratch::new("pods")?;
    let pods = Pods::create(&scratch.0, busy)?;
    let logs = scratch.file("pods");
    let tag = &pods.tag;
    let (report, dump) = record(&scratch, "all.json", &["--pods-log-dir", &logs])?;

    let shop =
        cgroup(&dump, &pods.shop.leaf().path).ok_or("the shop pod's container is missing")?;
    let w = &shop["workload"];
    measured(format!("shop: {w}"));
    check(
        w["kind"] == "container"
            && w["namespace"] == "shop"
            && w["pod"] == format!("api-{tag}").as_str()
            && w["container"] == "app"
            && w["qos"] == "burstable",
        || format!("the shop container's workload: {w}"),
    )?;
    let batch =
        cgroup(&dump, &pods.batch.leaf().path).ok_or("the batch pod's container is missing")?;
    check(
        batch["workload"]["container"] == "worker" && batch["workload"]["qos"] == "besteffort",
        || format!("the batch container's workload: {}", batch["workload"]),
    )?;
    let cart =
        cgroup(&dump, &pods.cart.leaf().path).ok_or("the cart pod's container is missing")?;
    check(
        cart["workload"]["runtime"] == "cri-o" && cart["workload"]["container"] == "cart",
        || format!("the CRI-O container's workload: {}", cart["workload"]),
    )?;
    let conmon = cgroup(&dump, &pods.conmon.leaf().path).ok_or("conmon's cgroup is missing")?;
    check(conmon["workload"]["kind"] == "runtime_monitor", || {
        format!("conmon's workload: {}", conmon["workload"])
    })?;

    // Blame names the neighbour pod, in the dump and in the report.
    let batch_name = format!("batch/nightly-{tag}/worker");
    let shop_name = format!("shop/api-{tag}/app");
    let blame = &shop["blame"][0];
    check(blame["path"] == pods.batch.leaf().path.as_str(), || {
        format!("shop's top occupant: {blame}")
    })?;
    check(
        report.contains(&format!("\n{shop_name}\n"))
            && report
                .lines()
                .any(|l| l.contains("waited behind:") && l.contains(&batch_name)),
        || format!("the report does not name the pods:\n{report}"),
    )?;
    check(
        !report.contains(&format!("\n{}\n", pods.shop.leaf().path)),
        || "the report titles the shop container by its path".to_owned(),
    )?;

    // Selected by namespace: shop's two pods, not batch.
    let (_, by_ns) = record(
        &scratch,
        "shop.json",
        &["--pods-log-dir", &logs, "--namespace", "shop"],
    )?;
    let paths = crate::dump_paths(&by_ns);
    check(
        paths.contains(&pods.shop.leaf().path.as_str())
            && paths.contains(&pods.cart.leaf().path.as_str())
            && !paths.contains(&pods.batch.leaf().path.as_str())
            && !paths
                .iter()
                .any(|p| p.starts_with("/tracer-test") || *p == "/"),
        || format!("--namespace shop reported {paths:?}"),
    )?;
    // And by pod.
    let pod = format!("batch/nightly-{tag}");
    let (_, by_pod) = record(
        &scratch,
        "batch.json",
        &["--pods-log-dir", &logs, "--pod", &pod],
    )?;
    let paths = crate::dump_paths(&by_pod);
    check(paths == [pods.batch.leaf().path.as_str()], || {
        format!("--pod {pod} reported {paths:?}")
    })?;
    Ok(Completion::Completed)
}

/// The agent's `tracer_cgroup_info` carries each pod's names, and the real
/// Prometheus joins a wait series to them.
fn pods_in_prometheus() -> TestResult {
    let bin = or_skip!(bin());
    or_skip!(crate::prometheus_installed());
    let (_, busy) = or_skip!(cpus());
    let scratch = Scratch::new("pods-prom")?;
    let pods = Pods::create(&scratch.0, busy)?;
    let logs = scratch.file("pods");
    let agent = crate::agent(&bin, &scratch, "1s", &["--pods-log-dir", &logs], true)?;
    let prom = Prometheus::start(agent.addr, &scratch.0)?;
    let tag = &pods.tag;
    let info = format!(
        "tracer_cgroup_info{{namespace=\"shop\",pod=\"api-{tag}\",container=\"app\",qos=\"burstable\"}}"
    );
    let series = tracer_tests::services::wait_for(
        "the shop container's info series",
        Duration::from_secs(30),
        || prom.query(&info).ok().filter(|r| !r.is_empty()),
    )?;
    measured(format!("{:?}", series[0].0));
    check(
        series[0].0.get("cgroup") == Some(&pods.shop.leaf().path),
        || format!("{info} is {series:?}"),
    )?;
    // A pod-level join, as a dashboard does it: the shop container's
    // contended wait, named by pod.
    let joined = "sum by (namespace, pod) (tracer_wait_seconds_total{cause=\"contended\"} \
                  * on (cgroup) group_left (namespace, pod) tracer_cgroup_info{namespace=\"shop\"})";
    let rows = prom.query(joined)?;
    check(
        rows.iter().any(|(labels, v)| {
            labels.get("pod").map(String::as_str) == Some(&format!("api-{tag}")) && *v > 0.0
        }),
        || format!("{joined} is {rows:?}"),
    )?;
    let conmon = prom.query(&format!(
        "tracer_cgroup_info{{cgroup=\"{}\"}}",
        pods.conmon.leaf().path
    ))?;
    check(
        conmon
            .first()
            .is_some_and(|(l, _)| l.get("kind").map(String::as_str) == Some("runtime_monitor")),
        || format!("conmon's info: {conmon:?}"),
    )?;
    let _ = (&pods.batch, &pods.cart);
    Ok(Completion::Completed)
}
