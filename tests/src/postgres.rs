//! A private PostgreSQL server for the verdict tests: a real database whose
//! backends are real threads of work, started in a test cgroup on a pinned
//! CPU, on a Unix socket in a scratch folder, removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};

use crate::{TestCgroup, services::wait_for};

/// Where Debian installs PostgreSQL's server binaries (the newest version).
pub fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// The `postgres` system user (uid, gid): the server refuses to run as root.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("no postgres user")?;
    let fields: Vec<&str> = line.split(':').collect();
    Ok((fields[2].parse()?, fields[3].parse()?))
}

/// A command run as the postgres user, with `setpriv` (which execs, so the
/// process stays where it was put: its cgroup and CPU).
fn as_postgres(program: &Path) -> anyhow::Result<Command> {
    let (uid, gid) = postgres_user()?;
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--init-groups",
    ])
    .arg(program);
    Ok(cmd)
}

pub struct Postgres {
    server: Child,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// A new cluster in `dir` (which it creates), its server in `cgroup`,
    /// pinned to `cpu`.
    pub fn start(dir: &Path, cgroup: &TestCgroup, cpu: usize) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = server_bin().context("no PostgreSQL server installed")?;
        let (uid, gid) = postgres_user()?;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        check(
            as_postgres(&bin.join("initdb"))?
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&data)
                .output()?,
            "initdb",
        )?;
        let port = crate::services::free_port()?;
        // Join the cgroup and the CPU first, then become postgres and exec:
        // every backend the server forks inherits both.
        let script = format!(
            "echo $$ > {} && exec taskset -c {cpu} setpriv --reuid={uid} --regid={gid} --init-groups \
             {} -D {} -k {} -p {port} -c listen_addresses= -c fsync=off -c max_connections=60",
            cgroup.dir.join("cgroup.procs").display(),
            bin.join("postgres").display(),
            data.display(),
            dir.display(),
        );
        let server = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .spawn()
            .context("starting postgres")?;
        let pg = Self {
            server,
            dir: dir.to_owned(),
            port,
        };
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                Command::new("pg_isready")
                    .args(["-q", "-h"])
                    .arg(&pg.dir)
                    .args(["-p", &port.to_string()])
                    .status()
                    .ok()?
                    .success()
                    .then_some(())
            },
        )?;
        Ok(pg)
    }

    /// `pgbench`'s arguments to reach this server's `postgres` database.
    pub fn pgbench_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.dir.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn pgbench(&self) -> Command {
        let mut cmd = Command::new("pgbench");
        cmd.args(self.pgbench_args());
        cmd
    }

    /// Creates pgbench's tables (scale 1).
    pub fn init_pgbench(&self) -> anyhow::Result<()> {
        check(
            self.pgbench()
                .args(["-i", "-q", "-s", "1", "--no-vacuum", "postgres"])
                .output()?,
            "pgbench -i",
        )
    }

    /// What the server wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown: the postmaster ends its backends, then itself.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGINT) };
        for _ in 0..100 {
            if self.server.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn check(out: Output, what: &str) -> anyhow::Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Why the PostgreSQL tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    if server_bin().is_none() {
        return Some(
            "no PostgreSQL server (apt-get install postgresql; `cargo xtask test` does)".into(),
        );
    }
    for tool in ["pgbench", "pg_isready", "setpriv"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("no {tool}"));
        }
    }
    if postgres_user().is_err() {
        return Some("no postgres user".into());
    }
    None
}
