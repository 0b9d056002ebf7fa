//! Where a JVM's `uptime` starts, for GC logs that carry no other clock
//! (`-Xlog:gc` alone decorates with `uptime,level,tags`): the JVM's process
//! start, from `/proc/<pid>/stat`, on `CLOCK_MONOTONIC`.
//!
//! The kernel keeps a process's start in clock ticks since boot (10 ms at
//! the usual 100 a second), on the boot clock, which runs on through
//! suspend where the monotonic one stops; the difference of the two clocks
//! now converts it. HotSpot counts uptime from its own start a little after
//! the process's, so pauses placed this way are early by that (31 to 55 ms
//! for OpenJDK 17 on a busy 2-CPU host, the same for every pause):
//! `timenanos` places them exactly.

use anyhow::{Context as _, anyhow};

use crate::host::{clock_ns, monotonic_ns};

/// When process `pid` started, in `CLOCK_MONOTONIC` ns.
pub fn start_monotonic_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the JVM (pid {pid}) is gone: its uptime cannot be placed"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let boot_ahead = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(monotonic_ns());
    start_from(&stat, ticks, boot_ahead)
        .ok_or_else(|| anyhow!("cannot read the start of pid {pid} from /proc/{pid}/stat"))
}

/// The start in `stat` (a `/proc/<pid>/stat` line) on the monotonic clock:
/// `ticks` a second, the boot clock `boot_ahead` ns ahead of it.
pub fn start_from(stat: &str, ticks: u64, boot_ahead: u64) -> Option<u64> {
    // The name, in parentheses, may hold anything: count after its end.
    let (_, rest) = stat.rsplit_once(") ")?;
    // Field 22, `starttime`; `rest` starts at field 3.
    let start: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot_ns = start.checked_mul(1_000_000_000)? / ticks.max(1);
    boot_ns.checked_sub(boot_ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_start_is_read_past_any_name() {
        // A name with ") " in it, then fields 3 to 22: starttime 12345 ticks.
        let stat = "4242 (evil) name) S 1 4242 4242 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 18 0 12345 \
                    1000000 100 18446744073709551615";
        // 123.45 s after boot, the boot clock 3 s ahead of the monotonic one.
        assert_eq!(start_from(stat, 100, 3_000_000_000), Some(120_450_000_000));
        assert_eq!(start_from("4242 (x) S 1", 100, 0), None, "short");
        assert_eq!(
            start_from(stat, 100, u64::MAX),
            None,
            "before the clock began"
        );
    }

    #[test]
    fn this_process_started_before_now() {
        let start = start_monotonic_ns(std::process::id()).unwrap();
        assert!(start > 0 && start <= monotonic_ns());
    }
}
