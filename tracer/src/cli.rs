//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use crate::{
    filter::Selector,
    format::parse_duration,
    programs::{StoreChoice, TierChoice},
};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Where did my runnable threads wait? Per-cgroup run-queue wait, from the scheduler's tracepoints."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace until the duration ends or Ctrl-C, then report per cgroup (needs root).
    Record(RecordArgs),
    /// Show a dump written by `record --output`, as text or as a web page (no root needed).
    Report(ReportArgs),
    /// Compare two dumps per cgroup: did the fix work?
    Diff(DiffArgs),
    /// Run continuously and serve Prometheus / OpenMetrics on /metrics (needs root).
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Where to serve /metrics and /health [default: 127.0.0.1:9477, or the
    /// config file's `listen`].
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// A TOML configuration file (keys in the README); flags override it.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How often the kernel's maps are read [default: 5s].
    #[arg(short, long, value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Write rolling dumps here [default: /var/lib/tracer].
    #[arg(long, value_name = "DIR", conflicts_with = "no_dumps")]
    pub dump_dir: Option<PathBuf>,

    /// How often a rolling dump is written [default: 10m].
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with = "no_dumps")]
    pub dump_every: Option<Duration>,

    /// Write no dumps (not on SIGUSR1, not at exit either).
    #[arg(long)]
    pub no_dumps: bool,

    /// The lock that keeps a second agent from starting [default: /run/tracer-agent.lock].
    #[arg(long, value_name = "FILE")]
    pub lock_file: Option<PathBuf>,

    /// TLS and basic authentication for /metrics and /health: a web
    /// configuration file as Prometheus' exporters read (`tls_server_config`,
    /// `basic_auth_users`).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,

    /// The kubelet's pod log directory, whose entries name pods and
    /// containers [default: /var/log/pods, or the config file's `pods_log_dir`].
    #[arg(long, value_name = "DIR")]
    pub pods_log_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The dump (from `tracer record --output FILE`).
    pub file: PathBuf,

    /// Write a self-contained HTML page to OUT instead of printing the report.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,

    /// Cgroups shown in the tables (and described on the page).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,

    /// Print the dump's timeline instead: one line per cgroup that waited in
    /// each interval (the `top` of each), as `record --interval` printed them.
    #[arg(long, conflicts_with = "html")]
    pub intervals: bool,

    /// Add a table of the JVM's stop-the-world pauses in this HotSpot GC log
    /// (-Xlog:gc:file=gc.log:timenanos,uptime,level,tags): how long its GC
    /// threads waited in each, and why (from the dump's --slower waits).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["html", "intervals"])]
    pub gc_log: Option<PathBuf>,

    /// Add a table of these windows (CSV of start,end,label; CLOCK_MONOTONIC
    /// ns or RFC 3339): how long threads waited in each, and why.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["html", "intervals"])]
    pub windows: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The dump from before the change.
    pub before: PathBuf,
    /// The dump from after it.
    pub after: PathBuf,

    /// Cgroups compared in detail.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// How long to trace (e.g. 10s, 500ms, 2m); until Ctrl-C if not given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report only this cgroup and its descendants (path in the cpu controller's
    /// hierarchy, e.g. /kubepods/pod1); repeatable.
    #[arg(short, long = "cgroup", value_name = "PATH", value_parser = parse_cgroup_path)]
    pub cgroups: Vec<String>,

    /// Report only this Kubernetes pod (NAMESPACE/NAME) and its containers;
    /// repeatable. Names come from the kubelet's pod log directory.
    #[arg(long = "pod", value_name = "NS/NAME", value_parser = Selector::pod)]
    pub pods: Vec<Selector>,

    /// Report only the pods of this namespace; repeatable. With --pod or
    /// --container, what all of them name.
    #[arg(long = "namespace", value_name = "NS", value_parser = Selector::namespace)]
    pub namespaces: Vec<Selector>,

    /// Report only containers of this name, in any pod; repeatable.
    #[arg(long = "container", value_name = "NAME", value_parser = Selector::container)]
    pub containers: Vec<Selector>,

    /// The kubelet's pod log directory, whose entries
    /// (<namespace>_<pod>_<uid>/<container>) name pods and containers.
    #[arg(long, value_name = "DIR", default_value = crate::workload::names::PODS_LOG_DIR)]
    pub pods_log_dir: PathBuf,

    /// Also report this process (all its threads) or thread on its own; repeatable.
    #[arg(short, long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Also report threads whose name matches this glob (e.g. 'GC Thread*'), as one
    /// group; repeatable, one group per pattern.
    #[arg(short, long = "threads", value_name = "PATTERN", value_parser = parse_pattern)]
    pub threads: Vec<String>,

    /// Write everything measured to FILE: a dump to attach to a bug report, read
    /// back by `tracer report` and `tracer diff` (JSON; see docs/dump-format.md).
    #[arg(short, long, visible_alias = "json", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace host and cgroup names in the dump with stable placeholders.
    #[arg(long, requires = "output")]
    pub redact: bool,

    /// Rows of the per-cgroup table, and of each interval's lines.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,

    /// Also print, every D, one line per cgroup that waited in it (the `top`
    /// that waited most): when the waits happened, and why. The dump's
    /// timeline takes this resolution [default: 1s, without the lines].
    #[arg(short, long, value_name = "D", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Show each run-queue wait of at least D as it ends, with its split and
    /// who held its CPU meanwhile (a `runqslower` with causes), and keep them
    /// in the dump (`stalls[]`). Waits shorter than D cost nothing more.
    #[arg(long, value_name = "D", value_parser = parse_slower)]
    pub slower: Option<Duration>,
    /// After the report, a table of the JVM's stop-the-world pauses in this
    /// HotSpot GC log (-Xlog:gc:file=gc.log:timenanos,uptime,level,tags): how
    /// long its GC threads waited in each, and why. Every wait of the GC
    /// threads is recorded (they are selected by name, as --threads does).
    #[arg(long, value_name = "FILE")]
    pub gc_log: Option<PathBuf>,
    /// After the report, a table of these windows (CSV of start,end,label;
    /// CLOCK_MONOTONIC ns or RFC 3339): how long threads waited in each.
    /// Needs --slower.
    #[arg(long, value_name = "FILE", requires = "slower")]
    pub windows: Option<PathBuf>,
    /// With --slower: how many of them each CPU may send a second; the rest
    /// are counted (`slow_waits_limited`).
    #[arg(long, value_name = "N", default_value_t = crate::stall::DEFAULT_RATE,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub slower_rate: u64,

    /// The capacity of one of the kernel's maps, as NAME=N (repeatable): BLAME,
    /// SELECTION_STATS, SELECT_PROCESS, SELECT_THREAD, EVENTS (bytes),
    /// TASK_WAIT (before 6.1), THROTTLE_CLOCKS. What a map too small loses is
    /// counted and shown.
    #[arg(long = "map-size", value_name = "NAME=N", value_parser = parse_map_size)]
    pub map_sizes: Vec<(String, u32)>,

    /// Where the programs keep per-task state: `auto` chooses from the
    /// kernel's BTF; `legacy` forces the pre-6.1 object (for testing it on a
    /// newer kernel).
    #[arg(long, value_enum, default_value_t = StoreChoice::Auto, hide = true)]
    pub store: StoreChoice,

    /// Capacity of the kernel's per-cgroup map; waits of cgroups beyond it are
    /// counted as lost.
    #[arg(long, default_value_t = tracer_common::maps::DEFAULT_MAX_CGROUPS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_cgroups: u32,

    /// Which probes to use: `auto` tries fentry on the CFS bandwidth functions
    /// and falls back to the tracepoints alone if the kernel refuses it.
    #[arg(long, value_enum, default_value_t = TierChoice::Auto)]
    pub tier: TierChoice,
}

/// `NAME=N` for `--map-size`: a map `RESIZABLE_MAPS` names and a capacity.
fn parse_map_size(text: &str) -> Result<(String, u32), String> {
    use tracer_common::maps::{MAP_EVENTS, RESIZABLE_MAPS};
    let names = || {
        RESIZABLE_MAPS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, n) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=N (maps: {})", names()))?;
    if !RESIZABLE_MAPS.iter().any(|(m, _)| *m == name) {
        return Err(format!("no map {name:?} to size; maps: {}", names()));
    }
    let n: u32 = n
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{n:?} is not a capacity above 0"))?;
    if name == MAP_EVENTS && (n < 4096 || !n.is_power_of_two()) {
        return Err(format!(
            "{MAP_EVENTS} is a ring buffer: its size is a power of two of at least 4096 bytes"
        ));
    }
    Ok((name.to_owned(), n))
}

/// The shortest `--interval`: each one reads the kernel's maps.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "{text:?} is too short for an interval: at least {}ms (each one reads the kernel's maps)",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(d)
}

/// A `--slower` threshold: at least 1 µs (every wait would be a record below
/// that, and the rate limit would drop most of them).
fn parse_slower(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_micros(1) {
        return Err(format!(
            "{text:?} is too short for --slower: at least 1us; e.g. 10ms"
        ));
    }
    Ok(d)
}

fn parse_pattern(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("an empty --threads pattern matches nothing; e.g. 'GC Thread*'".into());
    }
    if text.chars().count() > 15 && !text.contains('*') {
        return Err(format!(
            "{text:?} is longer than a thread name can be (15 characters); end it with * to match \
             the truncated names"
        ));
    }
    Ok(text.to_owned())
}

fn parse_cgroup_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "cgroup {text:?} must be a path from the cpu controller's root, starting with / \
             (e.g. /system.slice/cron.service)"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn record(args: &[&str]) -> Result<RecordArgs, clap::Error> {
        let mut argv = vec!["tracer", "record"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Record(r) => r,
            other => panic!("not record: {other:?}"),
        })
    }

    #[test]
    fn report_prints_the_timeline_or_a_page_not_both() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["tracer", "report", "d.json"].iter().chain(args)).map(|c| match c
                .command
            {
                Command::Report(r) => r.intervals,
                other => panic!("not report: {other:?}"),
            })
        };
        assert!(parse(&["--intervals"]).unwrap());
        assert!(!parse(&[]).unwrap());
        assert!(parse(&["--intervals", "--html", "p.html"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn record_flags() {
        let r = record(&[
            "--duration",
            "3s",
            "--cgroup",
            "/a/",
            "-c",
            "/b",
            "--pid",
            "42",
            "-p",
            "7",
            "--json",
            "out.json",
            "--threads",
            "GC Thread*",
        ])
        .unwrap();
        assert_eq!(r.duration, Some(Duration::from_secs(3)));
        assert_eq!(r.cgroups, ["/a", "/b"]);
        assert_eq!(r.pids, [42, 7]);
        assert_eq!(r.output.as_deref(), Some(std::path::Path::new("out.json")));
        assert_eq!(r.top, 20);
        assert_eq!(r.threads, ["GC Thread*"]);

        let r = record(&[]).unwrap();
        assert_eq!(r.duration, None);
        assert!(r.cgroups.is_empty() && r.pids.is_empty() && r.output.is_none());
        assert!(!r.redact);
    }

    #[test]
    fn report_and_diff() {
        let cli = Cli::try_parse_from(["tracer", "report", "d.json", "--html", "d.html"]).unwrap();
        match cli.command {
            Command::Report(r) => {
                assert_eq!(r.file, std::path::Path::new("d.json"));
                assert_eq!(r.html.as_deref(), Some(std::path::Path::new("d.html")));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["tracer", "diff", "a.json", "b.json"]).unwrap();
        assert!(
            matches!(cli.command, Command::Diff(d) if d.after == std::path::Path::new("b.json"))
        );
        assert!(Cli::try_parse_from(["tracer", "diff", "a.json"]).is_err());
        let r = record(&["--output", "o.json", "--redact"]).unwrap();
        assert!(r.redact);
    }

    #[test]
    fn map_sizes_name_a_map_and_a_capacity() {
        let r = record(&["--map-size", "BLAME=65536", "--map-size", "EVENTS=8192"]).unwrap();
        assert_eq!(
            r.map_sizes,
            [("BLAME".to_owned(), 65536), ("EVENTS".to_owned(), 8192)]
        );
        let msg = |args: &[&str]| record(args).unwrap_err().to_string();
        assert!(msg(&["--map-size", "BLAME"]).contains("NAME=N"));
        assert!(msg(&["--map-size", "NOPE=1"]).contains("maps: BLAME"));
        assert!(msg(&["--map-size", "BLAME=0"]).contains("above 0"));
        assert!(msg(&["--map-size", "EVENTS=5000"]).contains("power of two"));
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let msg = |args: &[&str]| record(args).unwrap_err().to_string();
        assert!(msg(&["--duration", "soon"]).contains("use e.g. 10s"));
        assert!(msg(&["--cgroup", "kubepods"]).contains("starting with /"));
        assert!(msg(&["--pid", "0"]).contains("0"));
        assert!(msg(&["--pid", "abc"]).contains("abc"));
        assert!(msg(&["--frobnicate"]).contains("--frobnicate"));
        assert_eq!(record(&["--cgroup", "/"]).unwrap().cgroups, ["/"]);
        assert!(msg(&["--threads", ""]).contains("matches nothing"));
        assert!(msg(&["--threads", "VM Periodic Task Thread"]).contains("15 characters"));
        assert!(
            msg(&["--redact"]).contains("--output"),
            "--redact without a file"
        );
    }
}
