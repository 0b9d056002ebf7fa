//! The examples in `deploy/` stay valid as the agent changes: their
//! configuration parses, their command lines parse.

use clap::Parser as _;
use tracer::{
    agent::config::Config,
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
    assert_eq!(c.listen.to_string(), "0.0.0.0:9477");
    assert!(c.dumps.is_some());
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
    let args_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("args:"))
        .unwrap();
    let args: Vec<String> = args_line
        .split_once('[')
        .unwrap()
        .1
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("tracer".to_owned()).chain(args)).unwrap();
    assert!(matches!(cli.command, Command::Agent(_)));
}
