//! Long-running processes the agent tests talk to over HTTP: the agent itself
//! and a real Prometheus server scraping it (over HTTPS with basic
//! authentication if asked). Both are killed by pid on drop.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};

/// A TCP port on 127.0.0.1 nobody listens on (at the moment of asking).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` over HTTP/1.0: status and body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `limit`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `tracer agent`.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    stderr: PathBuf,
}

impl Agent {
    /// Starts `bin agent --listen <free port> <args>` and waits until its
    /// `/metrics` answers with data.
    pub fn start(bin: &Path, args: &[&str], scratch: &Path) -> anyhow::Result<Self> {
        let mut agent = Self::spawn(bin, args, scratch)?;
        agent.wait_ready(|addr| matches!(http_get(addr, "/metrics", None), Ok((200, _))))?;
        Ok(agent)
    }

    /// Waits until `answers` says the agent serves data, or it exits.
    pub fn wait_ready(&mut self, answers: impl Fn(SocketAddr) -> bool) -> anyhow::Result<()> {
        let addr = self.addr;
        // Loading the programs takes 20 to 30 s of a debug build in the
        // kernel matrix's emulated guests (the verifier's time, mostly); the
        // agent answers 503 meanwhile, so this limit is all the wait there is.
        let ready = wait_for(
            "the agent's first snapshot",
            Duration::from_secs(60),
            || {
                if self.exited() {
                    return Some(false);
                }
                answers(addr).then_some(true)
            },
        )
        .with_context(|| format!("the agent's log: {}", self.log()))?;
        ensure!(ready, "the agent exited at start: {}", self.log());
        Ok(())
    }

    /// Starts `bin agent --listen <free port> <args>` without waiting for it.
    pub fn spawn(bin: &Path, args: &[&str], scratch: &Path) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let stderr = scratch.join(format!("agent-{}.log", addr.port()));
        let child = Command::new(bin)
            .arg("agent")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting the agent")?;
        Ok(Self {
            pid: child.id(),
            child: Some(child),
            addr,
            stderr,
        })
    }

    /// Whether it has exited (it is then reaped, and [`Agent::wait`] says how).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(self.addr, "/metrics", None)?;
        ensure!(status == 200, "/metrics answered {status}: {body}");
        Ok(body)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child, by pid.
        unsafe { libc::kill(self.pid as i32, signal) };
    }

    /// Sends SIGTERM and waits (up to `limit`) for the agent to exit: its
    /// exit status and everything it wrote to stderr.
    pub fn terminate(self, limit: Duration) -> anyhow::Result<(ExitStatus, String)> {
        self.signal(libc::SIGTERM);
        self.wait(limit)
    }

    /// Waits (up to `limit`, then kills it) for the agent to exit: its exit
    /// status and everything it wrote to stderr.
    pub fn wait(mut self, limit: Duration) -> anyhow::Result<(ExitStatus, String)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        let status = wait_for("the agent to exit", limit, || {
            child.try_wait().ok().flatten()
        });
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok((status?, self.log()))
    }

    /// Resident memory, from `/proc/<pid>/status`.
    pub fn resident_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))?;
        Ok(kb * 1024)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the sample `name{labels}` in a Prometheus text page, the
/// labels given in the order the page writes them.
pub fn sample_value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut key = name.to_owned();
    if !labels.is_empty() {
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        key = format!("{key}{{{}}}", inner.join(","));
    }
    page.lines()
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.parse().ok())
}

/// Sample lines (not comments) in a metrics page: the number of series.
pub fn series_count(page: &str) -> usize {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A Prometheus server on 127.0.0.1 scraping its jobs every second.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// Where Debian's package puts the server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// One scrape job: a target, and how to reach it.
pub struct Job {
    pub name: String,
    pub target: SocketAddr,
    /// Scrape over HTTPS, trusting this authority's certificate.
    pub ca_file: Option<PathBuf>,
    /// Send these as HTTP basic authentication.
    pub basic_auth: Option<(String, String)>,
}

impl Job {
    pub fn plain(name: &str, target: SocketAddr) -> Self {
        Self {
            name: name.into(),
            target,
            ca_file: None,
            basic_auth: None,
        }
    }

    /// The job's entry under `scrape_configs`.
    fn yaml(&self) -> String {
        let mut job = format!(
            "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
            self.name, self.target
        );
        if let Some(ca) = &self.ca_file {
            job += &format!(
                "    scheme: https\n    tls_config:\n      ca_file: '{}'\n",
                ca.display()
            );
        }
        if let Some((user, password)) = &self.basic_auth {
            job += &format!(
                "    basic_auth:\n      username: '{user}'\n      password: '{password}'\n"
            );
        }
        job
    }
}

impl Prometheus {
    /// Scrapes `target` over plain HTTP as job `tracer`.
    pub fn start(target: SocketAddr, dir: &Path) -> anyhow::Result<Self> {
        Self::start_jobs(&[Job::plain("tracer", target)], dir)
    }

    pub fn start_jobs(jobs: &[Job], dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_rules(jobs, &[], dir)
    }

    /// Scrapes `jobs`, evaluating the rule files `rules` every second.
    pub fn start_with_rules(jobs: &[Job], rules: &[PathBuf], dir: &Path) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let jobs: String = jobs.iter().map(Job::yaml).collect();
        let rule_files: String = rules
            .iter()
            .map(|r| format!("  - '{}'\n", r.display()))
            .collect();
        let rule_files = if rule_files.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rule_files}")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}scrape_configs:\n{jobs}"
            ),
        )?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .context("starting prometheus")?;
        let p = Self { child, addr, dir };
        wait_for("prometheus to be ready", Duration::from_secs(30), || {
            matches!(http_get(addr, "/-/ready", None), Ok((200, _))).then_some(())
        })
        .with_context(|| p.log())?;
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(expr)),
            None,
        )?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("query {expr}: {body}"))?;
        ensure!(
            status == 200 && json["status"] == "success",
            "query {expr}: {status} {body}"
        );
        let results = json["data"]["result"]
            .as_array()
            .ok_or_else(|| anyhow!("query {expr}: no result vector: {body}"))?;
        results
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow!("query {expr}: no value in {r}"))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The single value of `expr`, which must select exactly one series.
    pub fn value(&self, expr: &str) -> anyhow::Result<f64> {
        let r = self.query(expr)?;
        ensure!(r.len() == 1, "query {expr} gave {} series: {r:?}", r.len());
        Ok(r[0].1)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
