//! The agent's own cost: its CPU time and resident memory while the host
//! switches context as fast as it can and a scraper reads `/metrics` every
//! second; then again with a few hundred busy cgroups in the kernel's maps
//! (reading them is the agent's work, and it grows with cgroups x CPUs).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use super::{cgroups::Cgroups, ping_pong};

/// The agent under measurement; SIGTERM and reaped on drop.
struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", out.lines().next().unwrap_or_default());
    }
    Ok(out)
}

fn start_agent(tracer: &Path, scratch: &Path) -> anyhow::Result<Agent> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(tracer)
        .args([
            "agent",
            "--listen",
            &addr.to_string(),
            "--no-dumps",
            "--lock-file",
        ])
        .arg(scratch.join("agent.lock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let agent = Agent { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/metrics").is_err() {
        if Instant::now() > deadline {
            bail!("the agent served no /metrics within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(agent)
}

/// utime + stime of a process, in ns.
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = stat
        .rsplit_once(") ")
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((kb("VmRSS:"), kb("VmHWM:")))
}

/// The sum of a counter's samples in a metrics page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Measured {
    switches_per_s: f64,
    ns_per_switch: f64,
    agent_cpu: f64,
    programs_cpu: f64,
    rss: u64,
    hwm: u64,
    tracked: f64,
    /// Scrapes answered during the run.
    scrapes: u64,
}

/// Runs the ping-pong throughout and the agent beside it, scraped every
/// second; measures the agent over `seconds` once its start-up is over. The
/// ping-pong starts first so that the agent's first sample of its programs'
/// cost (at start-up, see `program_cost` in the agent) sees it running.
fn measure(
    tracer: &Path,
    cpu: u32,
    loops: u64,
    seconds: u64,
    scratch: &Path,
) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<(Instant, f64)>> {
            let mut runs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                runs.push((Instant::now(), ping_pong(cpu, loops, None)?));
            }
            Ok(runs)
        })
    };
    let agent = start_agent(tracer, scratch)?;
    let pid = agent.child.id();
    // Let the start-up (BTF parsing, loading) settle out of the window.
    std::thread::sleep(Duration::from_secs(6));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, scrapes, addr) = (stop.clone(), scrapes.clone(), agent.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if http_get(addr, "/metrics").is_ok() {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let cpu_before = cpu_ns(pid)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = start.elapsed().as_nanos() as f64;
    let agent_cpu = (cpu_ns(pid)? - cpu_before) as f64 / wall;
    let page = http_get(agent.addr, "/metrics")?;
    let (rss, hwm) = memory(pid)?;
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    let runs = pinger
        .join()
        .map_err(|_| anyhow!("the ping-pong thread panicked"))??;
    let in_window: Vec<f64> = runs
        .iter()
        .filter(|(at, _)| *at >= start)
        .map(|&(_, ns)| ns)
        .collect();
    let ns_per_switch = super::median(&in_window);
    Ok(Measured {
        switches_per_s: 1e9 / ns_per_switch,
        ns_per_switch,
        agent_cpu,
        programs_cpu: metric_sum(&page, "tracer_program_cpu_ratio"),
        rss,
        hwm,
        scrapes: scrapes.load(Ordering::Relaxed),
        tracked: page
            .lines()
            .find_map(|l| l.strip_prefix("tracer_cgroups{state=\"tracked\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    })
}

pub fn run(tracer: &Path, cpu: u32, loops: u64, seconds: u64) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    println!();
    println!(
        "agent: `tracer agent` (reads the maps every 5 s), scraped every second, \
         during {seconds} s of ping-pong on CPU {cpu}"
    );
    let mut base = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        base.push(ping_pong(cpu, loops, None)?);
    }
    let base = super::median(&base);
    let quiet = measure(tracer, cpu, loops, seconds, &scratch)?;
    let busy = {
        let _cgroups = Cgroups::sleepers(200)?;
        measure(tracer, cpu, loops, seconds, &scratch)?
    };
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "ping-pong with nothing attached: {base:.1} ns/switch ({:.0} switches/s)",
        1e9 / base
    );
    println!(
        "{:<20} {:>12} {:>10} {:>8} {:>11} {:>14} {:>11} {:>11}",
        "host", "switches/s", "ns/switch", "added", "agent CPU", "programs CPU", "RSS", "peak RSS"
    );
    for (label, m) in [("as is", &quiet), ("+200 busy cgroups", &busy)] {
        println!(
            "{:<20} {:>12.0} {:>10.1} {:>+8.1} {:>10.3}% {:>13.3}% {:>7.1} MiB {:>7.1} MiB   ({} cgroups tracked, {} scrapes)",
            label,
            m.switches_per_s,
            m.ns_per_switch,
            m.ns_per_switch - base,
            m.agent_cpu * 100.0,
            m.programs_cpu * 100.0,
            m.rss as f64 / 1048576.0,
            m.hwm as f64 / 1048576.0,
            m.tracked,
            m.scrapes,
        );
    }
    let worst = quiet.agent_cpu.max(busy.agent_cpu);
    println!();
    println!(
        "agent: {:.3} % of one core at {:.0} switches/s at worst (target: under 1 % at 100,000/s: {})",
        worst * 100.0,
        quiet.switches_per_s.min(busy.switches_per_s),
        if worst < 0.01 { "met" } else { "NOT met" }
    );
    Ok(())
}
