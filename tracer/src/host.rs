//! Facts about the machine, read once per session: what a recording's header
//! says about where it was made.

/// The host name (`/proc/sys/kernel/hostname`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPUs online now.
pub fn online_cpus() -> usize {
    aya::util::online_cpus().map(|c| c.len()).unwrap_or(0)
}

/// The scheduler's slice, in ns, from debugfs where it is mounted and
/// readable (EEVDF's `base_slice_ns` from 6.6, CFS's `min_granularity_ns`
/// before), else `None`.
pub fn scheduler_slice_ns() -> Option<u64> {
    ["base_slice_ns", "min_granularity_ns"]
        .iter()
        .find_map(|name| {
            std::fs::read_to_string(format!("/sys/kernel/debug/sched/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
                .filter(|&ns: &u64| ns > 0)
        })
}

/// Clock `id` in ns (`clock_gettime`).
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC`, the programs' clock (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}
