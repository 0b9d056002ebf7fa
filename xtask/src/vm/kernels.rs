//! Debian kernel images for the VMs, fetched without installing them and without
//! touching the host's apt configuration: a private sources list with private
//! package lists and cache under `target/vm/apt/`, `apt-get download` of the
//! newest matching `linux-image-*` package, and its `/boot/vmlinuz-*` extracted
//! into `target/vm/kernels/<package>/`. A kernel extracted once is not fetched
//! again.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

use crate::{apt::PrivateApt, cmd};

/// A kernel series the matrix boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// What `--kernel` calls it.
    pub name: &'static str,
    /// `apt-cache search --names-only` pattern of its image packages (the plain
    /// amd64 flavour: no cloud, rt or debug variants).
    pattern: &'static str,
    /// Where it comes from, for the report.
    pub suite: &'static str,
}

/// Debian's kernels around the 5.12 boundary of task local storage for tracing
/// programs and before the 6.6 throttle clocks: bullseye's 5.10, bookworm's 6.1
/// and bookworm's backported 6.12.
pub const SERIES: [Series; 3] = [
    Series {
        name: "5.10",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-amd64$",
        suite: "bullseye(-security)",
    },
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        suite: "bookworm(-security)",
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64$",
        suite: "bookworm(-security)",
    },
];

/// bullseye for 5.10, bookworm (and its security updates) for 6.1 and 6.12.
/// The archive keyring of bookworm also holds bullseye's keys.
const SOURCES: &str = "\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bullseye-security bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
/// Those lists, for the log.
const LISTS: &str = "bullseye and bookworm";

/// A kernel image ready to boot.
pub struct Kernel {
    pub series: Series,
    /// The Debian package it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// The newest package whose name matches `pattern`.
fn newest(apt: &PrivateApt, pattern: &str) -> anyhow::Result<Option<String>> {
    let out =
        cmd::checked_output(
            apt.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(newest_package(
        text.lines().filter_map(|l| l.split_whitespace().next()),
    ))
}

/// The package with the highest version among names that differ only in their
/// numbers (`linux-image-6.12.9+deb12-amd64` < `linux-image-6.12.117+deb12-amd64`).
pub fn newest_package<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    names.max_by_key(|n| numbers(n)).map(str::to_owned)
}

fn numbers(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Fetches (or finds in the cache) the newest image of each series.
pub fn fetch(vm_dir: &Path, series: &[Series]) -> anyhow::Result<Vec<Kernel>> {
    let mut apt = PrivateApt::new(vm_dir.join("apt"), SOURCES)?;
    apt.update(false, LISTS)?;
    series
        .iter()
        .map(|&s| {
            let (package, vmlinuz) = image(&mut apt, &vm_dir.join("kernels"), s)?;
            Ok(Kernel {
                series: s,
                package,
                vmlinuz,
            })
        })
        .collect()
}

/// The newest package of `series` and its image under `kernels`, downloaded
/// unless already there.
fn image(apt: &mut PrivateApt, kernels: &Path, s: Series) -> anyhow::Result<(String, PathBuf)> {
    if let Some(p) = newest(apt, s.pattern)?
        && let Some(vmlinuz) = cached_image(&kernels.join(&p))
    {
        println!("vm: kernel {}: {p} (cached)", s.name);
        return Ok((p, vmlinuz));
    }
    // Not cached: the lists may name a package the mirror no longer has.
    apt.update(true, LISTS)?;
    let package = newest(apt, s.pattern)?.ok_or_else(|| {
        anyhow!(
            "no package matching {} in {} (deb.debian.org)",
            s.pattern,
            s.suite
        )
    })?;
    let vmlinuz = download(apt, &kernels.join(&package), &package)?;
    println!("vm: kernel {}: {package}", s.name);
    Ok((package, vmlinuz))
}

fn cached_image(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// `apt-get download`s `package` into `dir` and extracts its kernel image there.
fn download(apt: &PrivateApt, dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("vm: downloading {package} (apt-get download, not installed)");
    cmd::checked_output(
        apt.command("apt-get")
            .current_dir(dir)
            .args(["-q", "download", package]),
    )?;
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dir.display()))?;
    // Only the image and its config: the modules are not needed (everything the
    // tests use is built in), and the initramfs is ours.
    let script =
        "dpkg-deb --fsys-tarfile \"$1\" | tar -x --wildcards './boot/vmlinuz-*' './boot/config-*'";
    cmd::run(
        Command::new("sh")
            .current_dir(dir)
            .args(["-c", script, "sh"])
            .arg(&deb),
    )
    .with_context(|| format!("extracting the kernel image from {}", deb.display()))?;
    // The image is what the cache is checked by; the .deb is not kept.
    std::fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    cached_image(dir).ok_or_else(|| anyhow!("{} holds no /boot/vmlinuz-*", deb.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_compares_numbers_not_text() {
        let names = [
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.101+deb12-amd64",
        ];
        assert_eq!(
            newest_package(names.into_iter()).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        let names = ["linux-image-5.10.0-9-amd64", "linux-image-5.10.0-46-amd64"];
        assert_eq!(
            newest_package(names.into_iter()).as_deref(),
            Some("linux-image-5.10.0-46-amd64")
        );
        assert_eq!(newest_package(std::iter::empty()), None);
    }

    #[test]
    fn patterns_leave_out_other_flavours() {
        let re = |p: &str, name: &str| {
            // The patterns are anchored regexes of digits and literals only.
            Command::new("grep")
                .args(["-Eqx", p.trim_start_matches('^').trim_end_matches('$')])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write as _;
                    c.stdin.take().unwrap().write_all(name.as_bytes())?;
                    c.wait()
                })
                .is_ok_and(|s| s.success())
        };
        let p612 = SERIES[2].pattern;
        assert!(re(p612, "linux-image-6.12.117+deb12-amd64"));
        assert!(!re(p612, "linux-image-6.12.117+deb12-cloud-amd64"));
        assert!(!re(p612, "linux-image-6.12.117+deb12-rt-amd64"));
        assert!(re(SERIES[1].pattern, "linux-image-6.1.0-56-amd64"));
        assert!(!re(SERIES[1].pattern, "linux-image-6.1.0-56-amd64-dbg"));
    }
}
