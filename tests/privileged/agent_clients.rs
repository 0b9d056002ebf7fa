//! `tracer agent` and its HTTP clients: a flood of connections that never
//! send, heads dribbled a byte at a time, the agent out of descriptors; and
//! scrapes by a real Prometheus over TLS with basic authentication.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libtest_mimic::{Completion, Failed, Trial};
use tracer::agent::http::Limits;
use tracer_tests::{
    Load, TestCgroup, Worker, inspect,
    services::{self, Agent, Job, Prometheus, wait_for},
    tls::TestTls,
};

use crate::{
    Scratch, TestResult, agent, bin, check, cpus, measured, or_skip, privileged,
    prometheus_installed,
};

pub fn tests() -> Vec<Trial> {
    vec![
        privileged("agent_serves_a_scraper_through_a_connection_flood", flood),
        privileged(
            "agent_scraped_by_prometheus_over_tls_with_basic_auth",
            prometheus_tls,
        ),
    ]
}

const FLOOD: usize = 500;
const DRIBBLERS: usize = 20;

/// Connections that send a head one byte every 100 ms that never ends, and
/// reconnect when the agent closes them, until `stop` (or 60 s).
fn dribble(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let connect = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
        let mut conns: Vec<Option<TcpStream>> = (0..DRIBBLERS).map(|_| connect()).collect();
        let mut reconnects = 0;
        let until = Instant::now() + Duration::from_secs(60);
        let mut sent = 0usize;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let byte: &[u8] = if sent == 0 { b"G" } else { b"a" };
            for c in &mut conns {
                if c.as_mut().is_none_or(|s| s.write_all(byte).is_err()) {
                    *c = connect();
                    reconnects += 1;
                }
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        reconnects
    })
}

/// What one round of the well-behaved scraper saw: how old the snapshot
/// was, or why it failed.
fn scrape(addr: SocketAddr) -> Result<f64, String> {
    match services::http_get(addr, "/metrics", None) {
        Ok((200, body)) if body.contains("tracer_build_info") => {}
        Ok((status, _)) => return Err(format!("/metrics: {status}")),
        Err(e) => return Err(format!("/metrics: {e:#}")),
    }
    match services::http_get(addr, "/health", None) {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|h| h["seconds_since_refresh"].as_f64())
            .ok_or_else(|| format!("/health: {body}")),
        Ok((status, body)) => Err(format!("/health: {status} {body}")),
        Err(e) => Err(format!("/health: {e:#}")),
    }
}

/// What the agent did through one siege.
struct Siege {
    connected: usize,
    reconnects: usize,
    served: usize,
    failures: Vec<String>,
    oldest_refresh: f64,
    cpu: f64,
    peak_rss: u64,
    peak_sockets: usize,
    /// Events the programs lost meanwhile (host-wide: reported, not checked).
    lost: f64,
}

/// The sum of `tracer_lost_total` on the agent's page.
fn lost(agent: &Agent) -> Result<f64, Failed> {
    Ok(agent
        .metrics()?
        .lines()
        .filter(|l| l.starts_with("tracer_lost_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

impl Siege {
    fn describe(&self) -> String {
        format!(
            "{} silent connections, {DRIBBLERS} dribblers ({} reconnects): {} scrapes served, {} failed, \
             refresh at most {:.2} s old, {} events lost; agent CPU {:.1} %, resident peak {:.1} MiB, at most {} sockets",
            self.connected,
            self.reconnects,
            self.served,
            self.failures.len(),
            self.oldest_refresh,
            self.lost,
            self.cpu * 100.0,
            self.peak_rss as f64 / 1048576.0,
            self.peak_sockets
        )
    }
}

/// 500 connections that never send and 20 heads dribbled a byte at a time,
/// while a scraper asks for `/metrics` and `/health` every 500 ms for 10 s
/// (past the agent's 5 s deadline for a request head).
fn siege(agent: &Agent) -> Result<Siege, Failed> {
    let lost_before = lost(agent)?;
    let started = Instant::now();
    let cpu_start = inspect::cpu_seconds(agent.pid)?;
    let flood: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|_| TcpStream::connect_timeout(&agent.addr, Duration::from_secs(1)).ok())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dribbler = dribble(agent.addr, stop.clone());
    let mut s = Siege {
        connected: flood.len(),
        reconnects: 0,
        served: 0,
        failures: Vec::new(),
        oldest_refresh: 0.0,
        cpu: 0.0,
        peak_rss: 0,
        peak_sockets: 0,
        lost: 0.0,
    };
    for _ in 0..20 {
        match scrape(agent.addr) {
            Ok(age) => {
                s.served += 1;
                s.oldest_refresh = s.oldest_refresh.max(age);
            }
            Err(e) => s.failures.push(e),
        }
        s.peak_rss = s.peak_rss.max(agent.resident_bytes()?);
        s.peak_sockets = s.peak_sockets.max(inspect::sockets(agent.pid)?);
        // Each failure waits out a 10 s read timeout.
        if s.failures.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    s.cpu = (inspect::cpu_seconds(agent.pid)? - cpu_start) / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    s.reconnects = dribbler.join().unwrap_or_default();
    drop(flood);
    // Read once the flood is gone: the old agent could not answer during it.
    s.lost = lost(agent).map_or(f64::NAN, |l| l - lost_before);
    Ok(s)
}

/// Two sieges: one as the agent starts, one with its descriptor limit
/// lowered to what it held before the first plus 32, so that accept also
/// fails for lack of descriptors. Through both a scraper's requests all
/// succeed, `/health` stays ok (the reads of the maps keep their cadence),
/// and the agent holds no more sockets than its cap.
fn flood() -> TestResult {
    let bin = or_skip!(bin());
    let scratch = Scratch::new("flood")?;
    let agent = agent(&bin, &scratch, "500ms", &[], true)?;
    let quiet_cpu = inspect::cpu_seconds(agent.pid)?;
    std::thread::sleep(Duration::from_secs(5));
    let quiet_cpu = (inspect::cpu_seconds(agent.pid)? - quiet_cpu) / 5.0;
    let rss_before = agent.resident_bytes()?;
    let fds = inspect::open_fds(agent.pid)?;
    let sockets = inspect::sockets(agent.pid)?;

    let open = siege(&agent)?;
    inspect::set_nofile(agent.pid, fds as u64 + 32)?;
    let scarce = siege(&agent)?;
    measured(format!(
        "quiet: agent CPU {:.1} %, resident {:.1} MiB, {fds} descriptors ({sockets} sockets); flood: {}; \
         descriptors limited to {}: {}",
        quiet_cpu * 100.0,
        rss_before as f64 / 1048576.0,
        open.describe(),
        fds + 32,
        scarce.describe()
    ));
    // The connections on top of the sockets it held before (the listener,
    // the runtimes' signal and wake-up sockets).
    let cap = sockets + Limits::default().connections;
    for (what, s) in [("flood", &open), ("out of descriptors", &scarce)] {
        check(s.failures.is_empty(), || {
            format!(
                "{what}: the scraper failed {} times: {:?}",
                s.failures.len(),
                s.failures
            )
        })?;
        check(s.peak_sockets <= cap, || {
            format!(
                "{what}: the agent held {} sockets, cap {cap}",
                s.peak_sockets
            )
        })?;
    }
    let (status, log) = agent.terminate(Duration::from_secs(10))?;
    check(status.success(), || format!("exit {status}: {log}"))?;
    Ok(Completion::Completed)
}

/// The agent with a web configuration (TLS and one bcrypt user), scraped by
/// a real Prometheus that trusts the test's authority: with the right
/// password `up` is 1 and a series of the test's own cgroup arrives; with a
/// wrong one `up` is 0 and nothing arrives; plain HTTP gets no page.
fn prometheus_tls() -> TestResult {
    let (_, busy) = or_skip!(cpus());
    let bin = or_skip!(bin());
    or_skip!(prometheus_installed());
    let scratch = Scratch::new("prometheus-tls")?;
    let tls = TestTls::generate(&scratch.0)?;
    // Cost 4, the lowest: the check is the same at any cost.
    let hash = bcrypt::hash("scrape-secret", 4)?;
    let web = scratch.file("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            tls.cert.display(),
            tls.key.display()
        ),
    )?;
    let cg = TestCgroup::create("prom-tls")?;
    let _w = Worker::start(Load::MostlySleep, &cg, busy)?;
    // Not waited for over plain HTTP: Prometheus' first scrape says it is up.
    let mut agent = agent(&bin, &scratch, "1s", &["--web-config", &web], false)?;
    let job = |name: &str, password: &str| Job {
        basic_auth: Some(("prometheus".into(), password.into())),
        ca_file: Some(tls.ca.clone()),
        ..Job::plain(name, agent.addr)
    };
    let prom = Prometheus::start_jobs(
        &[job("tracer", "scrape-secret"), job("wrong", "guess")],
        &scratch.0,
    )?;
    let series = format!(
        "tracer_on_cpu_seconds_total{{job=\"tracer\",cgroup=\"{}\"}}",
        cg.path
    );
    let ran = wait_for(
        "the test cgroup's series in Prometheus",
        Duration::from_secs(30),
        || {
            if agent.exited() {
                return Some(None);
            }
            let up = prom.value("up{job=\"tracer\"}").ok()?;
            let ran = prom.value(&series).ok()?;
            (up == 1.0 && ran > 0.0).then_some(Some(ran))
        },
    )
    .map_err(|e| format!("{e}; agent: {}; prometheus: {}", agent.log(), prom.log()))?
    .ok_or_else(|| format!("the agent exited: {}", agent.log()))?;
    // Its first scrape may come a second after the other job's.
    let (wrong_up, wrong_samples) = wait_for(
        "a scrape with the wrong password",
        Duration::from_secs(10),
        || {
            Some((
                prom.value("up{job=\"wrong\"}").ok()?,
                prom.value("scrape_samples_scraped{job=\"wrong\"}").ok()?,
            ))
        },
    )?;
    let plain = services::http_get(agent.addr, "/metrics", None);
    measured(format!(
        "over TLS with basic auth: up 1, {} ran {ran:.3} s; wrong password: up {wrong_up}, {wrong_samples} samples; plain HTTP: {:?}",
        cg.path,
        plain.as_ref().map(|(s, _)| *s).map_err(|e| e.to_string())
    ));
    check(wrong_up == 0.0 && wrong_samples == 0.0, || {
        format!("with a wrong password: up {wrong_up}, {wrong_samples} samples scraped")
    })?;
    check(!matches!(plain, Ok((200, _))), || {
        "the TLS port served a page over plain HTTP".into()
    })?;
    let (status, log) = agent.terminate(Duration::from_secs(10))?;
    check(status.success(), || format!("exit {status}: {log}"))?;
    Ok(Completion::Completed)
}
