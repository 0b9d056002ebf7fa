//! The guests' initramfs: busybox, the `tracer` binary, the privileged test
//! binary, the libraries `ldd` lists for them, and an `/init` that mounts what
//! the tests need, runs them with their output on the second serial port and
//! reports the verdict through QEMU's isa-debug-exit port.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

use crate::cmd;

/// Where the static busybox of Debian's busybox-static lives.
const BUSYBOX: &str = "/bin/busybox";
/// Paths of the binaries inside the guest.
pub const GUEST_TRACER: &str = "/tracer";
pub const GUEST_TESTS: &str = "/privileged";

/// Markers `/init` writes on the results port, one per line, for the host to
/// parse (see `results`).
pub const MARK: &str = "@@vm";

/// What `/init` runs: each entry is one invocation of the test binary with
/// these arguments (after `--test-threads 1 --color never`).
pub struct Plan {
    pub invocations: Vec<Vec<String>>,
    /// Seconds after which the guest kills one invocation.
    pub timeout_s: u64,
}

/// Writes the initramfs `image` (e.g. `initramfs.cpio.gz`) into `dir`
/// (rebuilt every run: the binaries change).
pub fn build(
    dir: &Path,
    image: &str,
    tracer: &Path,
    tests: &Path,
    plan: &Plan,
) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    copy_into(&root, Path::new(BUSYBOX), BUSYBOX)?;
    for (binary, guest) in [(tracer, GUEST_TRACER), (tests, GUEST_TESTS)] {
        copy_stripped(binary, &root.join(guest.trim_start_matches('/')))?;
        for lib in libraries(binary)? {
            copy_into(&root, &lib, &lib.to_string_lossy())?;
        }
    }
    // Some tests run `tracer` as nobody, which must have a name.
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let init = root.join("init");
    std::fs::write(&init, init_script(plan))?;
    set_mode(&init, 0o755)?;

    let image = dir.join(image);
    // gzip -1: the guest decompresses it under emulation; larger levels gain
    // little on binaries and cost host time.
    let script = "find . -print0 | cpio --quiet -o -0 -H newc -R 0:0 | gzip -1 > \"$1\"";
    cmd::run(
        Command::new("sh")
            .current_dir(&root)
            .args(["-c", script, "sh"])
            .arg(&image),
    )
    .context("packing the initramfs (cpio, gzip)")?;
    Ok(image)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Copies `from` to `guest_path` below `root` (following symlinks: the guest
/// gets the file under the name the loader asks for).
fn copy_into(root: &Path, from: &Path, guest_path: &str) -> anyhow::Result<()> {
    let to = root.join(guest_path.trim_start_matches('/'));
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &to)
        .with_context(|| format!("copying {} into the initramfs", from.display()))?;
    Ok(())
}

/// The debug builds carry ~70 MB of debug info each that the guest would have
/// to decompress under emulation and hold in memory; symbols stay for backtraces.
fn copy_stripped(from: &Path, to: &Path) -> anyhow::Result<()> {
    cmd::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(from)
            .arg(to),
    )?;
    set_mode(to, 0o755)
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`.
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = cmd::checked_output(Command::new("ldd").arg(binary).stdin(Stdio::null()))?;
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout))?;
    if libs.is_empty() {
        return Err(anyhow!("ldd lists no libraries for {}", binary.display()));
    }
    Ok(libs)
}

/// Paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the
/// loader as `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
pub fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Single quotes for the guest's shell.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// `/init`: mounts, runs each invocation under a guest-side timeout with its
/// output on ttyS1, then writes the verdict to isa-debug-exit (port 0xf4: QEMU
/// exits with status byte*2+1, so 0 gives 1 for pass and 1 gives 3 for fail).
/// If that port cannot be written it powers off, which the host counts as a
/// guest that did not report.
pub fn init_script(plan: &Plan) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root RUST_BACKTRACE=1 TRACER_BIN=/tracer TRACER_TEST_EMULATED=1
out=/dev/ttyS1

fail() {
    echo "@@vm setup-failed $*" > $out
    echo "vm init: $*"
    finish 1
}

finish() {
    echo "@@vm done $1" > $out
    # The whole kernel log (the console is quiet) for the post-mortem.
    echo "vm init: kernel log follows"
    dmesg
    if [ -e /dev/port ]; then
        if [ "$1" = 0 ]; then printf '\000'; else printf '\001'; fi |
            dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    fi
    echo "vm init: isa-debug-exit did not end the VM (no /dev/port?); powering off"
    poweroff -f
}

mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
[ -c $out ] || fail "no $out for the results"
mount -t tmpfs tmpfs /tmp || fail "mount tmpfs on /tmp"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo +cpu > /sys/fs/cgroup/cgroup.subtree_control || fail "enable the cpu controller"
mount -t tracefs tracefs /sys/kernel/tracing || fail "mount tracefs"
mount -t debugfs debugfs /sys/kernel/debug || fail "mount debugfs"
mount -t bpf bpf /sys/fs/bpf || fail "mount bpffs"
[ -e /dev/port ] || fail "no /dev/port for isa-debug-exit"
# The agent's tests talk HTTP to it on 127.0.0.1.
ip link set lo up || fail "bring up the loopback interface"
# Raw output: no CR added to each LF, no echo of what the tests write.
stty -F $out raw -echo 2>/dev/null
echo "@@vm uname $(uname -r)" > $out
echo "@@vm cgroup $(awk '$2 == "/sys/fs/cgroup" { print $3 }' /proc/mounts)" > $out
echo "@@vm cpus $(nproc)" > $out
status=0
run() {
    echo "@@vm run $*" > $out
"#,
    );
    let _ = writeln!(
        s,
        "    timeout -s KILL {} {GUEST_TESTS} --test-threads 1 --color never \"$@\" > $out 2>&1",
        plan.timeout_s
    );
    s.push_str(
        r#"    rc=$?
    echo "@@vm exit $rc" > $out
    [ $rc = 0 ] || status=1
}
"#,
    );
    for args in &plan.invocations {
        let quoted: Vec<String> = args.iter().map(|a| quote(a)).collect();
        let _ = writeln!(s, "run {}", quoted.join(" "));
    }
    s.push_str("finish $status\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_include_the_loader_and_skip_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007f80a7ec6000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f80a7e95000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f80a701e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f80a7ec8000)
";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn init_runs_each_invocation_quoted() {
        let plan = Plan {
            invocations: vec![vec!["--exact".into(), "a_test".into()], vec!["it's".into()]],
            timeout_s: 300,
        };
        let s = init_script(&plan);
        assert!(s.contains("run '--exact' 'a_test'\n"));
        assert!(s.contains(r"run 'it'\''s'"));
        assert!(s.contains("timeout -s KILL 300 /privileged --test-threads 1"));
        assert!(s.trim_end().ends_with("finish $status"));
    }
}
