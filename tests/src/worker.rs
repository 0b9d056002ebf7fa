//! Pinned workloads for the tests: this test binary re-executed in
//! "worker" mode, placed in its cgroup and pinned before it reports ready,
//! and the loads it runs.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};

use crate::{TestCgroup, runnable_ns};

const WORKER_ENV: &str = "TRACER_TEST_WORKER";
/// The name (`comm`) a worker gives itself, if not its program's.
const WORKER_COMM_ENV: &str = "TRACER_TEST_WORKER_COMM";

/// Starts `program args` already inside `cgroup`: the child moves itself
/// there between fork and exec, so even a process that lives a millisecond
/// runs only in the cgroup.
pub fn spawn_in(cgroup: &TestCgroup, program: &str, args: &[&str]) -> anyhow::Result<Child> {
    use std::os::fd::AsRawFd as _;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.procs_file())
        .with_context(|| format!("opening {}", cgroup.procs_file().display()))?;
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: only write(2) runs between fork and exec (async-signal-safe); the
    // fd is open in the parent until spawn returns and closes on exec.
    unsafe {
        cmd.pre_exec(move || {
            // "0": the writing process itself.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting a process in a test cgroup")?;
    drop(procs);
    Ok(child)
}

/// What a worker does.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Burns CPU without ever sleeping.
    Spin,
    /// Sleeps 20 ms, then runs for about 100 µs, again and again.
    MostlySleep,
    /// Every `every` ms, burns CPU for `spin` ms, then sleeps until the next one.
    Burst { every: u64, spin: u64 },
    /// A light service: computes `work_us`, sleeps `sleep_us`, again and again.
    Service { work_us: u64, sleep_us: u64 },
    /// `early` threads asleep from the start; once the FIFO [`Load::go_file`]
    /// of `tag` (which the test makes) is opened for writing, each in turn is
    /// woken, every `step_ms`, then `late` new threads are started, every
    /// `step_ms`. Each runs once for 50 µs and sleeps for good. Then
    /// [`Load::done_file`] is created. Until then every thread sleeps: the
    /// main one in the FIFO's open.
    WakeOnce {
        early: u32,
        late: u32,
        step_ms: u64,
        tag: u32,
    },
}

impl Load {
    /// The FIFO whose opening sets a [`Load::WakeOnce`] worker going.
    pub fn go_file(tag: u32) -> PathBuf {
        std::env::temp_dir().join(format!("tracer-test-{}-{tag}.go", std::process::id()))
    }

    /// The file a [`Load::WakeOnce`] worker creates once its last thread ran.
    pub fn done_file(tag: u32) -> PathBuf {
        std::env::temp_dir().join(format!("tracer-test-{}-{tag}.done", std::process::id()))
    }
}

/// A workload process in a test cgroup, pinned to one CPU; killed on drop.
pub struct Worker {
    child: Child,
    pub pid: u32,
}

impl Worker {
    /// A worker pinned to `cpu`.
    pub fn start(load: Load, cgroup: &TestCgroup, cpu: usize) -> anyhow::Result<Self> {
        Self::spawn(load, cgroup, &cpu.to_string())
    }

    /// A worker the scheduler may move between CPUs.
    pub fn start_anywhere(load: Load, cgroup: &TestCgroup) -> anyhow::Result<Self> {
        Self::spawn(load, cgroup, "any")
    }

    /// A worker pinned to `cpu` that names itself `comm` (at most 15 bytes,
    /// any but NUL) before it reports ready.
    pub fn start_named(
        load: Load,
        cgroup: &TestCgroup,
        cpu: usize,
        comm: &str,
    ) -> anyhow::Result<Self> {
        ensure!(comm.len() <= 15, "{comm:?} is longer than a thread name");
        Self::spawn_with(load, cgroup, &cpu.to_string(), Some(comm))
    }

    fn spawn(load: Load, cgroup: &TestCgroup, cpu: &str) -> anyhow::Result<Self> {
        Self::spawn_with(load, cgroup, cpu, None)
    }

    fn spawn_with(
        load: Load,
        cgroup: &TestCgroup,
        cpu: &str,
        comm: Option<&str>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let kind = match load {
            Load::Spin => "spin".to_owned(),
            Load::MostlySleep => "sleep".to_owned(),
            Load::Burst { every, spin } => format!("burst:{every}:{spin}"),
            Load::Service { work_us, sleep_us } => format!("service:{work_us}:{sleep_us}"),
            Load::WakeOnce {
                early,
                late,
                step_ms,
                tag,
            } => format!(
                "wake-once:{early}:{late}:{step_ms}:{}:{}",
                Load::go_file(tag).display(),
                Load::done_file(tag).display()
            ),
        };
        let mut cmd = Command::new(exe);
        if let Some(comm) = comm {
            cmd.env(WORKER_COMM_ENV, comm);
        }
        let mut child = cmd
            .env(
                WORKER_ENV,
                format!("{kind} {cpu} {}", cgroup.procs_file().display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker")?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no worker stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let worker = Self { child, pid };
        ensure!(
            line.trim() == "ready",
            "worker {pid} did not start: {line:?}"
        );
        Ok(worker)
    }
}

impl Worker {
    /// Kills the worker and waits until it is gone.
    pub fn stop(mut self) {
        self.reap();
    }

    /// Kills the worker and returns the time the kernel counted it runnable
    /// ([`runnable_ns`]) over its whole life, exit included: read from the
    /// zombie, before it is reaped. A hog killed while throttled waits for
    /// the unthrottle and then runs its exit, which a tracer sees; a read
    /// before the kill would miss it (tenths of a second on a busy host).
    pub fn stop_counting_runnable(mut self) -> anyhow::Result<u64> {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
            // The state follows the parenthesised command name.
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if state == Some('Z') {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "worker {} did not exit within 10 s of SIGKILL",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let runnable = runnable_ns(self.pid);
        self.reap();
        runnable
    }

    fn reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.reap();
    }
}

/// In worker mode (the environment says so), runs the workload and never returns.
/// Call first thing in the test binary's `main`.
pub fn run_worker_if_requested() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    if let Err(e) = worker(&spec) {
        eprintln!("worker failed: {e:#}");
        std::process::exit(1);
    }
    unreachable!("workers run until killed");
}

fn worker(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.splitn(3, ' ');
    let (kind, cpu, procs) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // Die with the test process, even if it is killed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    std::fs::write(procs, std::process::id().to_string())
        .with_context(|| format!("joining {procs}"))?;
    if cpu != "any" {
        pin_to_cpu(cpu.parse()?)?;
    }
    if let Some(comm) = std::env::var_os(WORKER_COMM_ENV) {
        use std::os::unix::ffi::OsStrExt as _;
        let mut name = comm.as_bytes().to_vec();
        name.push(0);
        // SAFETY: a NUL-terminated buffer the kernel copies at most 16 bytes of.
        if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
            bail!("PR_SET_NAME: {}", std::io::Error::last_os_error());
        }
    }
    println!("ready");
    let mut kind = kind.split(':');
    match kind.next().unwrap_or_default() {
        "spin" => loop {
            std::hint::black_box(spin_for(Duration::from_millis(100)));
        },
        "sleep" => loop {
            std::thread::sleep(Duration::from_millis(20));
            std::hint::black_box(spin_for(Duration::from_micros(100)));
        },
        "burst" => {
            let every = Duration::from_millis(kind.next().unwrap_or_default().parse()?);
            let spin = Duration::from_millis(kind.next().unwrap_or_default().parse()?);
            let mut next = Instant::now();
            loop {
                // CPU time, not wall time: a throttled burst still does its work.
                let start = cpu_time();
                while cpu_time() - start < spin {
                    std::hint::black_box(spin_for(Duration::from_micros(50)));
                }
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        "service" => {
            let work = Duration::from_micros(kind.next().unwrap_or_default().parse()?);
            let sleep = Duration::from_micros(kind.next().unwrap_or_default().parse()?);
            loop {
                std::hint::black_box(spin_for(work));
                std::thread::sleep(sleep);
            }
        }
        "wake-once" => {
            let mut number =
                || -> anyhow::Result<u64> { Ok(kind.next().unwrap_or_default().parse()?) };
            let (early, late, step) = (number()?, number()?, Duration::from_millis(number()?));
            let go = PathBuf::from(kind.next().unwrap_or_default());
            let done = PathBuf::from(kind.next().unwrap_or_default());
            wake_once(early, late, step, &go, &done)
        }
        other => bail!("unknown worker kind {other}"),
    }
}

/// [`Load::WakeOnce`]: the ready line is printed before, with the early
/// threads already asleep.
fn wake_once(early: u64, late: u64, step: Duration, go: &Path, done: &Path) -> ! {
    let once = || {
        std::hint::black_box(spin_for(Duration::from_micros(50)));
        loop {
            std::thread::park();
        }
    };
    let wakers: Vec<std::sync::mpsc::Sender<()>> = (0..early)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _ = rx.recv();
                once()
            });
            tx
        })
        .collect();
    // Blocks until the test opens it for writing.
    let _ = std::fs::File::open(go);
    for tx in wakers.iter() {
        let _ = tx.send(());
        std::thread::sleep(step);
    }
    for _ in 0..late {
        std::thread::spawn(once);
        std::thread::sleep(step);
    }
    let _ = std::fs::write(done, "");
    loop {
        std::thread::park();
    }
}

/// CPU time this thread has used.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn spin_for(d: Duration) -> u64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        n = n.wrapping_add(1);
    }
    n
}

pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
