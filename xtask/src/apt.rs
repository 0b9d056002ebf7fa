//! apt, used so that it never takes anything away: installs are simulated
//! first and refused if they would remove or downgrade a package, and package
//! lists of other suites live in a private folder, so that the host's apt
//! configuration is never touched.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;

use crate::cmd;

/// apt with its own sources, lists and cache, so the host's are left alone.
pub struct PrivateApt {
    dir: PathBuf,
    /// Whether the lists were refreshed during this run.
    refreshed: bool,
}

/// Private lists older than this are refreshed.
const LISTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

impl PrivateApt {
    /// A private apt in `dir` with `sources` (deb822 text) as its only sources.
    pub fn new(dir: PathBuf, sources: &str) -> anyhow::Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let file = dir.join("debian.sources");
        std::fs::write(&file, sources).with_context(|| format!("writing {}", file.display()))?;
        Ok(Self {
            dir,
            refreshed: false,
        })
    }

    /// `program` (apt-get, apt-cache) reading only the private sources and lists.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |key: &str, value: &Path| format!("{key}={}", value.display());
        cmd.args([
            "-o",
            &opt("Dir::Etc::sourcelist", &self.dir.join("debian.sources")),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            &opt("Dir::State::Lists", &self.dir.join("lists")),
            "-o",
            &opt("Dir::Cache", &self.dir.join("cache")),
            // Only the package indices: no translations, no AppStream data.
            "-o",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "-o",
            "Acquire::Languages=none",
            // The download folder is root's; apt's sandbox user could not write it.
            "-o",
            "APT::Sandbox::User=root",
        ]);
        cmd
    }

    fn lists_age(&self) -> Option<Duration> {
        std::fs::read_dir(self.dir.join("lists"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with("_InRelease"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .min()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// Refreshes the lists when missing or stale, or when `force` and not yet
    /// done in this run; `what` says which for the log.
    pub fn update(&mut self, force: bool, what: &str) -> anyhow::Result<()> {
        let stale = self.lists_age().is_none_or(|age| age > LISTS_MAX_AGE);
        if self.refreshed || !(force || stale) {
            return Ok(());
        }
        println!("refreshing private apt lists of {what} (deb.debian.org)");
        cmd::checked_output(self.command("apt-get").args(["-q", "update"]))?;
        self.refreshed = true;
        Ok(())
    }
}

/// What an install would take away from the machine, read from
/// `apt-get -s install`'s output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Harm {
    pub removed: Vec<String>,
    /// `(package, installed version, version it would become)`.
    pub downgraded: Vec<(String, String, String)>,
}

impl Harm {
    pub fn is_none(&self) -> bool {
        self.removed.is_empty() && self.downgraded.is_empty()
    }

    /// Reads a simulation: `Remv pkg [version]` lines, and `Inst pkg [old]
    /// (new ...)` lines where `older(new, old)` says the new version is lower.
    pub fn of_simulation(text: &str, older: impl Fn(&str, &str) -> bool) -> Self {
        let mut harm = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("Remv"), Some(package)) => harm.removed.push(package.to_owned()),
                (Some("Inst"), Some(package)) => {
                    let rest: Vec<&str> = words.collect();
                    let installed = rest
                        .first()
                        .and_then(|w| w.strip_prefix('['))
                        .and_then(|w| w.strip_suffix(']'));
                    let new = rest
                        .iter()
                        .find_map(|w| w.strip_prefix('('))
                        .map(|w| w.trim_end_matches(')'));
                    if let (Some(old), Some(new)) = (installed, new)
                        && older(new, old)
                    {
                        harm.downgraded
                            .push((package.to_owned(), old.to_owned(), new.to_owned()));
                    }
                }
                _ => {}
            }
        }
        harm
    }

    /// `qemu-utils (removed), libfoo 2.0 -> 1.0 (downgraded)`.
    pub fn describe(&self) -> String {
        self.removed
            .iter()
            .map(|p| format!("{p} (removed)"))
            .chain(
                self.downgraded
                    .iter()
                    .map(|(p, old, new)| format!("{p} {old} -> {new} (downgraded)")),
            )
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether Debian version `a` is lower than `b` (`dpkg --compare-versions`).
pub fn version_lower(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "lt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// What installing `packages` with `apt` (and `options`, such as a target
/// release) would take away, without installing anything.
pub fn simulate(apt: &mut Command, options: &[String], packages: &[&str]) -> anyhow::Result<Harm> {
    let out = cmd::checked_output(
        apt.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-s", "install", "-q", "--no-install-recommends"])
            .args(options)
            .args(packages),
    )?;
    Ok(Harm::of_simulation(
        &String::from_utf8_lossy(&out.stdout),
        version_lower,
    ))
}

/// The machine's Debian release (`VERSION_CODENAME` in `/etc/os-release`).
pub fn codename() -> Option<String> {
    std::fs::read_to_string("/etc/os-release")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Sources of a release with its updates, security updates and backports.
pub fn sources_with_backports(codename: &str) -> String {
    format!(
        "Types: deb\n\
         URIs: http://deb.debian.org/debian\n\
         Suites: {codename} {codename}-updates {codename}-backports\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
         \n\
         Types: deb\n\
         URIs: http://deb.debian.org/debian-security\n\
         Suites: {codename}-security\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `apt-get -s install qemu-system-x86` printed on a machine whose
    /// qemu-utils came from bookworm-backports.
    const REMOVES: &str = "\
NOTE: This is only a simulation!
The following packages will be REMOVED:
  qemu-utils
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.15/oldstable [all])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b2 Debian:12.15/oldstable [amd64])
Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b2 Debian:12.15/oldstable [amd64])
";

    fn older(a: &str, b: &str) -> bool {
        // Enough of Debian's ordering for these fixtures: compare the numbers.
        let n = |v: &str| -> Vec<u64> {
            v.split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect()
        };
        n(a) < n(b)
    }

    #[test]
    fn removals_are_read_from_a_simulation() {
        let harm = Harm::of_simulation(REMOVES, older);
        assert_eq!(harm.removed, ["qemu-utils"]);
        assert!(harm.downgraded.is_empty(), "new packages are no downgrade");
        assert_eq!(harm.describe(), "qemu-utils (removed)");
    }

    #[test]
    fn downgrades_are_read_and_upgrades_are_not() {
        let text = "\
Inst libfoo [2.1-1] (2.0-3 Debian:12.15/oldstable [amd64])
Inst libbar [1.0-1] (1.2-1 Debian:12.15/oldstable [amd64])
Conf libfoo (2.0-3 Debian:12.15/oldstable [amd64])
";
        let harm = Harm::of_simulation(text, older);
        assert!(harm.removed.is_empty());
        assert_eq!(
            harm.downgraded,
            [("libfoo".into(), "2.1-1".into(), "2.0-3".into())]
        );
        assert!(!harm.is_none());
        assert!(Harm::of_simulation("Inst a (1 x)\n", older).is_none());
    }

    #[test]
    fn backports_sources_name_the_release() {
        let s = sources_with_backports("bookworm");
        assert!(s.contains("Suites: bookworm bookworm-updates bookworm-backports\n"));
        assert!(s.contains("Suites: bookworm-security\n"));
    }

    #[test]
    fn dpkg_orders_debian_versions() {
        if Command::new("dpkg").arg("--version").output().is_err() {
            return; // not a Debian machine
        }
        assert!(version_lower(
            "1:7.2+dfsg-7+deb12u18+b2",
            "1:10.0.2+ds-2+deb13u1~bpo12+1"
        ));
        assert!(!version_lower("1.0", "1.0"));
        assert!(version_lower("1.0~rc1", "1.0"));
    }
}
