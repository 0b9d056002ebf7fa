//! The agent's configuration: a TOML file (`--config`), with command-line
//! flags on top.
//!
//! ```toml
//! listen = "0.0.0.0:9477"     # where /metrics and /health are served
//! web_config = "/etc/tracer/web.yml"  # TLS and basic auth (exporter-toolkit format); default: none
//! interval = "5s"             # how often the kernel's maps are read
//! export_limit = 200          # cgroups with series of their own; the rest are summed
//! include = ["/kubepods"]     # export only these cgroups (default: all): path prefixes,
//!                             # or namespace:NS, pod:NS/NAME, container:NAME
//! exclude = ["/kubepods/besteffort", "namespace:kube-system"]
//! pods_log_dir = "/var/log/pods"  # the kubelet's, whose entries name pods and containers
//! labels = []                 # also on every series: namespace, pod, container, qos, kind
//! top_occupants = 3           # occupants named per cgroup
//! program_stats = true        # sample the programs' own cost (kernel BPF statistics)
//!
//! lock_file = "/run/tracer-agent.lock"
//!
//! [dumps]                     # rolling dumps (and one on SIGUSR1, one at exit)
//! dir = "/var/lib/tracer"
//! every = "10m"
//! keep = 24                   # at most ~1 MB each with 200 cgroups
//! enabled = true
//!
//! [recorder]                  # the flight recorder: off unless this section is here
//! minutes = 10                # the last minutes kept, at `resolution`
//! resolution = "1s"           # each a read of the maps
//! after = "1m"                # a trigger's dump is written this long after it
//! [[recorder.trigger]]        # any number; each writes a `-trigger` dump
//! on = "throttled"            # throttled | contended | wait (shares) | p99
//! above = 0.5                 # share of one thread's time; for p99 a duration ("20ms")
//! for = "5s"                  # in a row
//! include = ["/kubepods"]     # the cgroups it watches (default: all)
//! ```
//!
//! The values shown are the defaults, except `include`, `exclude` and the
//! trigger.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::{
    agent::metrics::WORKLOAD_LABELS,
    filter::{CgroupFilter, Selector},
    format::parse_duration,
    timeline::recorder::{Trigger, Watched},
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub export_limit: usize,
    /// `include` / `exclude`: which cgroups are exported.
    pub filter: CgroupFilter,
    pub top_occupants: usize,
    pub program_stats: bool,
    pub dumps: Option<Dumps>,
    /// Where the single-instance lock lives.
    pub lock_file: PathBuf,
    /// The web configuration file: TLS and basic authentication.
    pub web_config: Option<PathBuf>,
    /// The flight recorder, when configured.
    pub recorder: Option<Recorder>,
    /// The kubelet's pod log directory (see [`crate::workload::names`]).
    pub pods_log_dir: PathBuf,
    /// Workload labels put on every per-cgroup series (`labels`).
    pub labels: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Recorder {
    /// How much of the timeline it keeps.
    pub span: Duration,
    pub resolution: Duration,
    /// How long after a trigger its dump is written.
    pub after: Duration,
    pub triggers: Vec<Trigger>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            span: Duration::from_secs(600),
            resolution: Duration::from_secs(1),
            after: Duration::from_secs(60),
            triggers: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dumps {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
}

impl Default for Dumps {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/tracer"),
            every: Duration::from_secs(600),
            keep: 24,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            interval: Duration::from_secs(5),
            export_limit: 200,
            filter: CgroupFilter::default(),
            top_occupants: 3,
            program_stats: true,
            dumps: Some(Dumps::default()),
            lock_file: PathBuf::from("/run/tracer-agent.lock"),
            web_config: None,
            recorder: None,
            pods_log_dir: PathBuf::from(crate::workload::names::PODS_LOG_DIR),
            labels: Vec::new(),
        }
    }
}

/// The file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    interval: Option<String>,
    export_limit: Option<usize>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    top_occupants: Option<usize>,
    program_stats: Option<bool>,
    lock_file: Option<PathBuf>,
    web_config: Option<PathBuf>,
    pods_log_dir: Option<PathBuf>,
    labels: Option<Vec<String>>,
    dumps: Option<DumpsFile>,
    recorder: Option<RecorderFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecorderFile {
    minutes: Option<f64>,
    resolution: Option<String>,
    after: Option<String>,
    #[serde(default)]
    trigger: Vec<TriggerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerFile {
    on: Watched,
    above: Level,
    #[serde(rename = "for")]
    for_: String,
    include: Option<Vec<String>>,
}

/// A share (`0.5`) or a duration (`"20ms"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Level {
    Share(f64),
    Duration(String),
}

impl RecorderFile {
    fn parse(self) -> anyhow::Result<Recorder> {
        let default = Recorder::default();
        let minutes = self.minutes.unwrap_or(10.0);
        if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
            bail!("recorder.minutes: {minutes} must be above 0 and at most a day");
        }
        let triggers = self
            .trigger
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let at = format!("recorder.trigger[{i}]");
                let above = match (t.on, t.above) {
                    (Watched::P99, Level::Duration(d)) => {
                        duration(&format!("{at}.above"), &d)?.as_nanos() as f64
                    }
                    (Watched::P99, Level::Share(_)) => {
                        bail!("{at}.above: p99 is a duration, e.g. \"20ms\"")
                    }
                    (_, Level::Share(x)) if x.is_finite() && x >= 0.0 => x,
                    (on, _) => bail!(
                        "{at}.above: {} is a share of one thread's time, e.g. 0.5",
                        on.name()
                    ),
                };
                let include = t
                    .include
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| path_prefix(&format!("{at}.include"), p))
                    .collect::<anyhow::Result<_>>()?;
                Ok(Trigger {
                    watched: t.on,
                    above,
                    for_ns: duration(&format!("{at}.for"), &t.for_)?.as_nanos() as u64,
                    cgroups: CgroupFilter::only(include),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Recorder {
            span: Duration::from_secs_f64(minutes * 60.0),
            resolution: match self.resolution {
                Some(r) => duration("recorder.resolution", &r)?,
                None => default.resolution,
            },
            after: match self.after {
                Some(a) => duration("recorder.after", &a)?,
                None => default.after,
            },
            triggers,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpsFile {
    dir: Option<PathBuf>,
    every: Option<String>,
    keep: Option<usize>,
    enabled: Option<bool>,
}

fn duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    parse_duration(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

fn selectors(key: &str, v: Vec<String>) -> anyhow::Result<Vec<Selector>> {
    v.iter()
        .map(|s| Selector::parse(s).map_err(|e| anyhow::anyhow!("{key}: {e}")))
        .collect()
}

fn path_prefix(key: &str, p: String) -> anyhow::Result<String> {
    if !p.starts_with('/') {
        bail!("{key}: {p:?} must be a cgroup path starting with /");
    }
    Ok(p)
}

impl Config {
    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        let mut c = Self::default();
        if let Some(l) = file.listen {
            c.listen = l
                .parse()
                .with_context(|| format!("listen: {l:?} is not an address like 0.0.0.0:9477"))?;
        }
        if let Some(i) = file.interval {
            c.interval = duration("interval", &i)?;
        }
        if let Some(n) = file.export_limit {
            c.export_limit = n;
        }
        if let Some(v) = file.include {
            c.filter.include = selectors("include", v)?;
        }
        if let Some(v) = file.exclude {
            c.filter.exclude = selectors("exclude", v)?;
        }
        if let Some(d) = file.pods_log_dir {
            c.pods_log_dir = d;
        }
        if let Some(v) = file.labels {
            c.labels = v
                .iter()
                .map(|l| {
                    WORKLOAD_LABELS
                        .iter()
                        .find(|&&known| known == l)
                        .copied()
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "labels: {l:?} is not one of {}",
                                WORKLOAD_LABELS.join(", ")
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(n) = file.top_occupants {
            c.top_occupants = n;
        }
        if let Some(b) = file.program_stats {
            c.program_stats = b;
        }
        if let Some(l) = file.lock_file {
            c.lock_file = l;
        }
        c.web_config = file.web_config;
        if let Some(r) = file.recorder {
            c.recorder = Some(r.parse()?);
        }
        if let Some(d) = file.dumps {
            let default = Dumps::default();
            c.dumps = match d.enabled {
                Some(false) => None,
                _ => Some(Dumps {
                    dir: d.dir.unwrap_or(default.dir),
                    every: match d.every {
                        Some(e) => duration("dumps.every", &e)?,
                        None => default.every,
                    },
                    keep: match d.keep {
                        Some(0) => bail!("dumps.keep: keep at least 1 (or set enabled = false)"),
                        Some(n) => n,
                        None => default.keep,
                    },
                }),
            };
        }
        Ok(c)
    }

    /// The shortest `interval`: a read of the maps takes milliseconds, and
    /// tokio's timers refuse a zero period (they panic).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    /// The shortest `dumps.every`: a dump is a file of up to a megabyte.
    pub const MIN_DUMP_EVERY: Duration = Duration::from_secs(1);

    /// Checks what only the whole configuration, file and flags merged, can
    /// tell: a flag may set what the file left out, or the other way round.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.recorder {
            if r.resolution < Self::MIN_INTERVAL {
                bail!(
                    "recorder.resolution: {:?} is too short; at least {:?}",
                    r.resolution,
                    Self::MIN_INTERVAL
                );
            }
            if r.span < r.resolution * 2 {
                bail!("recorder.minutes: keep at least two intervals of recorder.resolution");
            }
            if self.dumps.is_none() {
                bail!(
                    "the recorder writes dumps, which are disabled: remove [recorder] or enable \
                     dumps (--no-dumps, or [dumps] enabled = false)"
                );
            }
        }
        if self.interval < Self::MIN_INTERVAL {
            bail!(
                "interval (--interval or the file's): {:?} is too short; at least {:?}",
                self.interval,
                Self::MIN_INTERVAL
            );
        }
        if let Some(d) = &self.dumps {
            if d.every < Self::MIN_DUMP_EVERY {
                bail!(
                    "dumps.every (--dump-every or the file's): {:?} is too short; at least {:?}",
                    d.every,
                    Self::MIN_DUMP_EVERY
                );
            }
        }
        Ok(())
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
