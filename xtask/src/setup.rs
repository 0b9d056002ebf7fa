//! Installs, idempotently and saying each step, what building the eBPF programs
//! needs: LLVM 22 (for bpf-linker), the nightly toolchain with `rust-src` (for
//! `-Z build-std=core`), and bpf-linker 0.13 built against that LLVM.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    apt::{self, PrivateApt},
    cmd::{self, stdout_of},
};

/// Debian packages the build and the tests need: LLVM for bpf-linker, bpftool to
/// cross-check the tracer's BTF reader.
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "bpftool"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER: &str = "0.13";
/// aya-build compiles the eBPF crate with this rustup toolchain.
const NIGHTLY: &str = "nightly";

pub fn run() -> anyhow::Result<()> {
    ensure()?;
    println!("setup: everything is in place");
    Ok(())
}

/// Installs whatever is missing.
pub fn ensure() -> anyhow::Result<()> {
    apt_packages(BUILD_PACKAGES, "to build the eBPF programs")?;
    nightly()?;
    bpf_linker()?;
    Ok(())
}

fn installed(package: &str) -> bool {
    stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s == "install ok installed")
}

fn has_candidate(package: &str) -> bool {
    stdout_of(Command::new("apt-cache").args(["policy", package])).is_some_and(|s| {
        s.lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .is_some_and(|c| c.trim() != "(none)")
    })
}

/// Installs the Debian packages that are not installed yet, never removing or
/// downgrading one. An install is simulated first. If the release's version
/// of a package would take something away (a package the machine has from
/// the release's backports, say, that the older version conflicts with),
/// the backports' version is tried, through a private package list that
/// leaves the host's apt configuration alone. If that would take something
/// away too, nothing is installed and the error says what and why.
pub fn apt_packages(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("setup: {} installed", packages.join(", "));
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "{} must be installed {why}; as root: apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    if missing.iter().any(|p| !has_candidate(p)) {
        println!("setup: refreshing the apt package lists (apt-get update)");
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    let harm = apt::simulate(&mut Command::new("apt-get"), &[], &missing)?;
    if harm.is_none() {
        println!(
            "setup: installing {} {why} (apt-get install)",
            missing.join(", ")
        );
        return install(Command::new("apt-get"), &[], &missing);
    }
    let Some(codename) = apt::codename() else {
        bail!(refusal(&missing, &harm, None));
    };
    let backports = format!("{codename}-backports");
    let mut private = PrivateApt::new(
        cmd::workspace_root().join("target/apt-backports"),
        &apt::sources_with_backports(&codename),
    )?;
    private.update(false, &format!("{codename} with backports"))?;
    let options = ["-t".to_owned(), backports.clone()];
    let harm_backports = apt::simulate(&mut private.command("apt-get"), &options, &missing)?;
    if !harm_backports.is_none() {
        bail!(refusal(
            &missing,
            &harm,
            Some((&backports, &harm_backports))
        ));
    }
    println!(
        "setup: installing {} {why} from {backports} (apt-get install -t {backports}): \
         {codename}'s version would change what is installed: {}",
        missing.join(", "),
        harm.describe()
    );
    install(private.command("apt-get"), &options, &missing)
}

/// `apt-get install`, refusing on its own part too to remove anything.
fn install(mut apt: Command, options: &[String], packages: &[&str]) -> anyhow::Result<()> {
    cmd::run(
        apt.env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--no-remove",
            ])
            .args(options)
            .args(packages),
    )
}

/// Why nothing was installed, and what the user can do.
fn refusal(missing: &[&str], harm: &apt::Harm, backports: Option<(&str, &apt::Harm)>) -> String {
    let mut text = format!(
        "installing {} would change what this machine has installed: {}",
        missing.join(", "),
        harm.describe()
    );
    if let Some((suite, harm)) = backports {
        text.push_str(&format!("; from {suite} too: {}", harm.describe()));
    }
    text.push_str(
        ". This project never removes or downgrades a package: install the packages \
         yourself in a way that keeps the others (e.g. from the suite the conflicting \
         package came from, apt-get install -t <suite> ...), or remove what conflicts if \
         it is not needed, then run this again",
    );
    text
}

fn nightly() -> anyhow::Result<()> {
    let version = stdout_of(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-vV"]));
    let version = match version {
        Some(v) => v,
        None => {
            println!("setup: installing the {NIGHTLY} toolchain with rust-src (rustup)");
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            stdout_of(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-vV"]))
                .context("the nightly toolchain does not run after installing it")?
        }
    };
    // bpf-linker reads the bitcode rustc writes: its LLVM must not be older.
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    if let Some(major) = llvm
        && major > LLVM_MAJOR
    {
        bail!(
            "the {NIGHTLY} toolchain uses LLVM {major}, newer than the LLVM {LLVM_MAJOR} bpf-linker \
             is built against; install a nightly from before LLVM {} (e.g. nightly-2026-05-19)",
            LLVM_MAJOR + 1
        );
    }
    let components = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .unwrap_or_default();
    if components.lines().any(|c| c.starts_with("rust-src")) {
        println!("setup: {NIGHTLY} toolchain with rust-src installed");
        return Ok(());
    }
    println!("setup: adding rust-src to the {NIGHTLY} toolchain (rustup component add)");
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = stdout_of(Command::new("bpf-linker").arg("--version"));
    if let Some(v) = &current
        && v.split_whitespace()
            .nth(1)
            .is_some_and(|v| v.starts_with(&format!("{BPF_LINKER}.")))
    {
        println!("setup: {} installed", v.trim());
        return Ok(());
    }
    match &current {
        Some(v) => println!("setup: replacing {} with bpf-linker {BPF_LINKER}", v.trim()),
        None => println!(
            "setup: building bpf-linker {BPF_LINKER} against LLVM {LLVM_MAJOR} (cargo install; a few minutes)"
        ),
    }
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            // llvm-sys looks for llvm-config; Debian keeps LLVM 22's under this prefix.
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--version",
                &format!("~{BPF_LINKER}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
                "--force",
            ]),
    )?;
    if stdout_of(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
    }
    Ok(())
}
