//! One boot of one kernel under QEMU, bounded by a hard timeout, with the
//! results port echoed live to the host's console.

use std::{
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// How a boot ended, as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// isa-debug-exit with byte 0: the guest says every invocation passed.
    Passed,
    /// isa-debug-exit with byte 1: the guest says something failed.
    Failed,
    /// Any other status: the guest powered off, panicked or QEMU failed.
    Other(Option<i32>),
    /// Killed by the host after this long.
    TimedOut(Duration),
}

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Where console.log and results.log go.
    pub dir: &'a Path,
    pub timeout: Duration,
    pub cpus: Cpus,
}

/// A guest's vCPUs.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// Online (`-smp N`): 2 unless `--online` says otherwise.
    pub online: u32,
    /// Possible CPUs beyond the online ones (`-smp N,maxcpus=M`): what the
    /// kernel sizes per-CPU maps by.
    pub possible: Option<u32>,
}

impl Cpus {
    /// How a guest of these CPUs is named: its directory and its row.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if self.online != 2 {
            s.push_str(&format!(" {}cpu", self.online));
        }
        if let Some(n) = self.possible {
            s.push_str(&format!(" x{n}"));
        }
        s
    }
}

pub struct Outcome {
    pub exit: Exit,
    pub elapsed: Duration,
    pub console: PathBuf,
    pub results: PathBuf,
}

/// Nested KVM is a software layer here that cannot boot these kernels (see the
/// research notes), so the guests are emulated: multi-threaded TCG, which is
/// fast enough for functional tests but not for timing.
pub const ACCELERATOR: &str = "tcg,thread=multi";

pub fn run(boot: &Boot) -> anyhow::Result<Outcome> {
    let console = boot.dir.join("console.log");
    let results = boot.dir.join("results.log");
    for f in [&console, &results] {
        // QEMU appends to nothing: a stale log must not be read as this run's.
        let _ = std::fs::remove_file(f);
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        ACCELERATOR,
        "-cpu",
        "max",
        "-m",
        "2G",
        "-smp",
        &match boot.cpus.possible {
            Some(n) => format!("{},maxcpus={n}", boot.cpus.online),
            None => boot.cpus.online.to_string(),
        },
    ])
    .args(["-nodefaults", "-display", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(boot.kernel)
    .arg("-initrd")
    .arg(boot.initrd)
    .arg("-append")
    .arg(command_line(boot.cpus.possible))
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", results.display()))
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", crate::cmd::describe(&cmd)))?;
    let mut echo = Echo::default();
    let exit = loop {
        echo.forward(&results);
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break match status.code() {
                Some(1) => Exit::Passed,
                Some(3) => Exit::Failed,
                code => Exit::Other(code),
            };
        }
        if started.elapsed() > boot.timeout {
            // QEMU pauses rather than exits on some internal errors: kill it.
            let _ = child.kill();
            let _ = child.wait();
            break Exit::TimedOut(boot.timeout);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    echo.forward(&results);
    echo.finish();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if !stderr.trim().is_empty() {
        println!("vm: qemu said: {}", stderr.trim());
    }
    Ok(Outcome {
        exit,
        elapsed: started.elapsed(),
        console,
        results,
    })
}

/// The guest kernel's command line. tsc=reliable: the emulated vCPUs' TSCs
/// fail the kernel's synchronisation check, and the HPET it falls back to is
/// slow to read under emulation and skews the tests' timing (two hogs sharing
/// a CPU measured 59 % instead of 50 % on 6.1); the emulated TSC follows the
/// host's clock. With `maxcpus`, `possible_cpus` too: 6.12 counted none of
/// QEMU's disabled ACPI processor entries as hotpluggable ("Allowing 2
/// present CPUs plus 0 hotplug CPUs"), and before 6.9 `possible_cpus` sets
/// the possible CPUs whatever the tables say (from 6.9 it only lowers them).
/// psi=1: Debian builds its kernels with PSI off unless asked
/// (`CONFIG_PSI_DEFAULT_DISABLED`), and the cgroups' own `cpu.pressure` is
/// what the guests test.
fn command_line(maxcpus: Option<u32>) -> String {
    let mut line = "console=ttyS0 panic=-1 quiet tsc=reliable psi=1".to_owned();
    if let Some(n) = maxcpus {
        line.push_str(&format!(" possible_cpus={n}"));
    }
    line
}

/// Prints the results log's complete lines as they arrive, indented.
#[derive(Default)]
struct Echo {
    offset: u64,
    partial: String,
}

impl Echo {
    fn forward(&mut self, path: &Path) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial
            .push_str(&String::from_utf8_lossy(&buf).replace('\r', ""));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            println!("  | {}", line.trim_end());
        }
        let _ = std::io::stdout().flush();
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            println!("  | {}", self.partial.trim_end());
            self.partial.clear();
        }
    }
}

/// The last `n` lines of a log, CRs stripped.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_guest_is_told_its_possible_cpus() {
        assert_eq!(
            command_line(None),
            "console=ttyS0 panic=-1 quiet tsc=reliable psi=1"
        );
        assert!(command_line(Some(192)).ends_with(" possible_cpus=192"));
    }
}
