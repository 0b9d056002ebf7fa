//! The examples in `deploy/` stay valid as the agent changes: their
//! configuration parses, their command lines parse, and what protects the
//! port (the web configuration, the NetworkPolicy) fits the rest.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use tracer::{
    agent::{config::Config, http::web_config::WebConfig},
    cli::{Cli, Command},
};

fn deploy(path: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn the_example_configuration_parses() {
    let c = Config::parse(&deploy("agent.toml")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9477");
    assert!(c.dumps.is_some());
}

/// The example's recorder section, commented out, parses once uncommented.
#[test]
fn the_example_recorder_parses() {
    let example = deploy("agent.toml");
    let (head, recorder) = example
        .split_once("# [recorder]")
        .expect("agent.toml shows a [recorder] section");
    // Its lines, uncommented up to their own comments.
    let text: String = std::iter::once(head.to_owned())
        .chain(std::iter::once("[recorder]\n".to_owned()))
        .chain(
            recorder
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .map(|l| format!("{l}\n")),
        )
        .collect();
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    c.validate().unwrap();
    let r = c.recorder.expect("a [recorder] section");
    assert_eq!(r.span.as_secs(), 600);
    assert_eq!(r.triggers.len(), 1);
    assert_eq!(r.triggers[0].describe(), "throttled above 50 % for 10.0 s");
}

/// Listening on every interface, the systemd example serves over TLS to a
/// password's holder only.
#[test]
fn the_example_web_configuration_turns_on_tls_and_a_password() {
    let c = Config::parse(&deploy("agent.toml")).unwrap();
    let path = c.web_config.expect("agent.toml names a web configuration");
    let web = WebConfig::parse(&deploy("web.yml"), path.parent().unwrap()).unwrap();
    let (cert, key) = web.tls.expect("TLS on");
    assert_eq!(
        (cert, key),
        (
            PathBuf::from("/etc/tracer/tls/agent.crt"),
            PathBuf::from("/etc/tracer/tls/agent.key")
        )
    );
    assert_eq!(web.users.keys().collect::<Vec<_>>(), ["prometheus"]);
    // The shipped hash matches no password anyone would guess.
    for guess in ["", "prometheus", "password", "changeme", "tracer"] {
        assert!(
            !bcrypt_matches(guess, &web.users["prometheus"]),
            "{guess:?}"
        );
    }
    // The unit's install steps put each file where the configuration says.
    let unit = deploy("tracer-agent.service");
    for file in [
        &path,
        Path::new("/etc/tracer/tls/agent.crt"),
        Path::new("/etc/tracer/tls/agent.key"),
    ] {
        assert!(
            unit.lines()
                .any(|l| l.starts_with("#   install") && l.contains(file.to_str().unwrap())),
            "the unit's install steps do not put anything at {}",
            file.display()
        );
    }
}

fn bcrypt_matches(password: &str, hash: &str) -> bool {
    use tracer::agent::http::auth::Users;
    let users = Users::new([("u".to_owned(), hash.to_owned())].into());
    users.verify("u", password)
}

#[test]
fn the_systemd_unit_runs_a_valid_command() {
    let unit = deploy("tracer-agent.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let cli = Cli::try_parse_from(&argv).unwrap();
    let Command::Agent(args) = cli.command else {
        panic!("ExecStart does not run the agent: {exec}");
    };
    assert_eq!(
        args.config.unwrap().to_str(),
        Some("/etc/tracer/agent.toml")
    );
    // What the unit lets it write: the dump directory and the lock's.
    let c = Config::parse(&deploy("agent.toml")).unwrap();
    let writable = unit
        .lines()
        .find_map(|l| l.strip_prefix("ReadWritePaths="))
        .unwrap();
    for dir in [
        c.dumps.unwrap().dir,
        c.lock_file.parent().unwrap().to_owned(),
    ] {
        assert!(
            writable.split_whitespace().any(|w| dir.starts_with(w)),
            "{} is not writable under the unit",
            dir.display()
        );
    }
}

/// The container's `args: [...]` in the DaemonSet.
fn daemonset_args(yaml: &str) -> Vec<String> {
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("args:"))
        .expect("the DaemonSet's container has args");
    line.split_once('[')
        .expect("args are a flow list")
        .1
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn the_daemonset_runs_a_valid_command_with_its_config_map() {
    let yaml = deploy("kubernetes/daemonset.yaml");
    // The ConfigMap's agent.toml: the indented block after `agent.toml: |`.
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("agent.toml: |"));
    let header = lines.next().expect("an agent.toml entry");
    let indent = header.len() - header.trim_start().len();
    let toml: String = lines
        .take_while(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let c = Config::parse(&toml).unwrap();
    assert_eq!(c.listen.port(), 9477);
    assert!(yaml.contains(&format!("containerPort: {}", c.listen.port())));
    assert!(yaml.contains(&format!("prometheus.io/port: \"{}\"", c.listen.port())));
    // The lock and dumps live on host paths, so that a second pod on the node
    // sees the first one's lock.
    let lock_dir = c.lock_file.parent().unwrap().to_str().unwrap().to_owned();
    assert!(yaml.contains(&format!("mountPath: {lock_dir}")));
    // The kubelet's log directories, which name pods and containers, are the
    // host's, read-only, where the configuration looks for them.
    let pods = c.pods_log_dir.to_str().unwrap().to_owned();
    let links = c.pods_log_dir.parent().unwrap().join("containers");
    for dir in [pods.as_str(), links.to_str().unwrap()] {
        let mount = format!("mountPath: {dir}");
        let at = yaml.find(&mount).unwrap_or_else(|| panic!("no {mount}"));
        assert!(
            yaml[at..]
                .lines()
                .nth(1)
                .unwrap()
                .contains("readOnly: true"),
            "{dir} is mounted read-only"
        );
        assert!(
            yaml.contains(&format!("path: {dir}\n")),
            "{dir} is a hostPath"
        );
    }
    let cli =
        Cli::try_parse_from(std::iter::once("tracer".to_owned()).chain(daemonset_args(&yaml)))
            .unwrap();
    assert!(matches!(cli.command, Command::Agent(_)));
}

/// The DaemonSet's port is closed to all but Prometheus' pods: the
/// NetworkPolicy selects the agent's pods and opens its metrics port only.
#[test]
fn the_daemonset_is_reachable_by_prometheus_only() {
    use serde::Deserialize as _;
    let yaml = deploy("kubernetes/daemonset.yaml");
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&yaml)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in daemonset.yaml"))
    };
    let labels = &kind("DaemonSet")["spec"]["template"]["metadata"]["labels"];
    let policy = &kind("NetworkPolicy")["spec"];
    assert_eq!(&policy["podSelector"]["matchLabels"], labels);
    assert_eq!(policy["policyTypes"][0].as_str(), Some("Ingress"));
    let ingress = policy["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 1, "one rule: from Prometheus");
    let toml = kind("ConfigMap")["data"]["agent.toml"].as_str().unwrap();
    let c = Config::parse(toml).unwrap();
    assert_eq!(
        ingress[0]["ports"][0]["port"].as_u64(),
        Some(u64::from(c.listen.port()))
    );
    assert!(
        !ingress[0]["from"][0]["podSelector"].is_null(),
        "open to a whole namespace"
    );
    // Plain HTTP behind the policy: no web configuration to mount.
    assert_eq!(c.web_config, None);
}

/// The Containerfile's image runs the binary the DaemonSet expects: its
/// entrypoint is the tracer, its default command parses and reads the
/// configuration where the DaemonSet mounts the ConfigMap, and it builds the
/// way the README does (`cargo xtask setup`, then a release build).
#[test]
fn the_containerfile_agrees_with_the_daemonset() {
    let file = deploy("Containerfile");
    let yaml = deploy("kubernetes/daemonset.yaml");
    assert!(
        yaml.contains("deploy/Containerfile"),
        "the DaemonSet names it"
    );
    let json_list = |key: &str| -> Vec<String> {
        let line = file
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        serde_json::from_str(line.trim_start_matches(key).trim()).unwrap()
    };
    let entrypoint = json_list("ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/tracer"]);
    assert!(file.contains("COPY --from=build /src/target/release/tracer /usr/local/bin/tracer"));
    assert!(file.contains("RUN cargo xtask setup && cargo build --release -p tracer"));
    // Its default command is the DaemonSet's: an agent reading the mounted
    // configuration.
    let cmd = json_list("CMD");
    let cli = Cli::try_parse_from(std::iter::once("tracer".to_owned()).chain(cmd.clone())).unwrap();
    let Command::Agent(args) = cli.command else {
        panic!("CMD runs {cmd:?}, not the agent")
    };
    let config = args.config.expect("CMD names a configuration");
    let mount = config.parent().unwrap().to_str().unwrap().to_owned();
    assert!(
        yaml.contains(&format!("mountPath: {mount}")),
        "{mount} is mounted"
    );
    let args = daemonset_args(&yaml);
    assert_eq!(args, cmd, "the DaemonSet's args are the image's CMD");
}
