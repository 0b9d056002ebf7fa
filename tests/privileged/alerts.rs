//! The shipped Prometheus rules and Grafana dashboard, against promtool and
//! a real Prometheus scraping a real agent.

use std::{path::PathBuf, process::Command, time::Duration};

use libtest_mimic::{Completion, Trial};
use tracer_tests::{
    Load, TestCgroup, Worker,
    services::{Job, Prometheus, http_get, wait_for},
};

use crate::{Scratch, TestResult, bin, check, cpus, measured, or_skip, privileged};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("the_shipped_rules_pass_promtool", promtool),
        privileged(
            "the_quota_alert_fires_for_a_throttled_hog_and_the_dashboard_queries_run",
            in_prometheus,
        ),
    ]
}

const PROMTOOL: &str = "/usr/bin/promtool";

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// `promtool check rules` and the unit tests of `rules_test.yml`: every
/// alert fires for the series it is about, with its annotations, and not
/// for the others.
fn promtool() -> TestResult {
    if !std::path::Path::new(PROMTOOL).exists() {
        return Ok(Completion::ignored_with(
            "no promtool (Debian package prometheus; `cargo xtask test` installs it)",
        ));
    }
    for args in [
        vec!["check", "rules", "rules.yml"],
        vec!["test", "rules", "rules_test.yml"],
    ] {
        let out = Command::new(PROMTOOL)
            .args(&args)
            .current_dir(deploy("prometheus"))
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        measured(format!(
            "promtool {}: {}",
            args.join(" "),
            text.trim().replace('\n', " | ")
        ));
        check(out.status.success(), || {
            format!("promtool {} failed:\n{text}", args.join(" "))
        })?;
    }
    Ok(Completion::Completed)
}

/// The rules with their waits shortened for a test: an alert's `for:` and
/// the rates' 5-minute windows are what a fleet wants, and would keep a test
/// waiting ten minutes.
fn quick_rules(scratch: &Scratch) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(deploy("prometheus/rules.yml"))?;
    let quick = text
        .replace("for: 10m", "for: 3s")
        .replace("for: 15m", "for: 3s")
        .replace("[5m]", "[10s]");
    let path = scratch.0.join("rules.yml");
    std::fs::write(&path, quick)?;
    Ok(path)
}

/// A hog under a 20 % quota and a cgroup that sleeps: the quota alert
/// fires for the hog and for nothing else; every rule evaluates without an
/// error; and every query of the dashboard (its panels and variables) runs.
fn in_prometheus() -> TestResult {
    let tracer = or_skip!(bin());
    or_skip!(crate::prometheus_installed());
    let (quiet, busy) = or_skip!(cpus());
    let scratch = Scratch::new("alerts")?;
    let limited = TestCgroup::create("alert-quota")?;
    limited.set_quota(20_000, 100_000)?;
    let idle = TestCgroup::create("alert-idle")?;
    let _hog = Worker::start(Load::Spin, &limited, busy)?;
    let _sleeper = Worker::start(Load::MostlySleep, &idle, quiet)?;

    let agent = crate::agent(&tracer, &scratch, "1s", &[], true)?;
    let prom = Prometheus::start_with_rules(
        &[Job::plain("tracer", agent.addr)],
        &[quick_rules(&scratch)?],
        &scratch.0,
    )?;
    let firing = |cgroup: &str| {
        format!(
            "ALERTS{{alertname=\"TracerQuotaThrottling\",alertstate=\"firing\",cgroup=\"{cgroup}\"}}"
        )
    };
    let fired = wait_for("the quota alert", Duration::from_secs(60), || {
        prom.query(&firing(&limited.path))
            .ok()
            .filter(|r| !r.is_empty())
    });
    check(fired.is_ok(), || {
        format!(
            "TracerQuotaThrottling did not fire for {}: throttled share {:?}",
            limited.path,
            prom.query(&format!(
                "cgroup:tracer_wait_share:ratio_rate5m{{cgroup=\"{}\"}}",
                limited.path
            ))
        )
    })?;
    let quiet_alerts = prom.query(&format!("ALERTS{{cgroup=\"{}\"}}", idle.path))?;
    check(quiet_alerts.is_empty(), || {
        format!("alerts for the sleeping cgroup: {quiet_alerts:?}")
    })?;

    // Every rule evaluated without an error.
    let (status, body) = http_get(prom.addr, "/api/v1/rules", None)?;
    let rules: serde_json::Value = serde_json::from_str(&body)?;
    check(status == 200, || format!("/api/v1/rules: {status} {body}"))?;
    let mut count = 0;
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            count += 1;
            check(rule["health"] == "ok", || {
                format!(
                    "rule {} is {}: {}",
                    rule["name"], rule["health"], rule["lastError"]
                )
            })?;
        }
    }
    check(count >= 14, || format!("only {count} rules loaded"))?;

    // Every query of the dashboard, its variables at "All".
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/tracer.json"))?)?;
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // label_values(SELECTOR, LABEL) is Grafana's: its selector is PromQL.
        if let Some(q) = v["query"]["query"].as_str()
            && let Some(inner) = q.strip_prefix("label_values(")
            && let Some((selector, _)) = inner.rsplit_once(',')
        {
            queries.push(selector.to_owned());
        }
    }
    check(queries.len() >= 12, || {
        format!("only {} queries found", queries.len())
    })?;
    for q in &queries {
        let promql = q
            .replace("$__rate_interval", "10s")
            .replace("$node", ".*")
            .replace("$namespace", ".*")
            .replace("$pod", ".*");
        if let Err(e) = prom.query(&promql) {
            return Err(format!("the dashboard's query {promql} failed: {e:#}").into());
        }
    }
    measured(format!(
        "{count} rules healthy; {} dashboard queries ran",
        queries.len()
    ));
    limited.lift_quota()?;
    Ok(Completion::Completed)
}
