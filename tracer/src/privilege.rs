//! Checks, before anything is loaded, that this process may load tracing programs.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set from `/proc/self/status`.
fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// `None` when tracing programs can be loaded, otherwise why not.
fn missing_privilege(caps: u64) -> Option<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        None
    } else {
        Some("loading eBPF tracing programs needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)")
    }
}

/// Why this process cannot trace, if it cannot.
pub fn check() -> Option<String> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "cannot read /proc/self/status ({e}) to check privileges"
            ));
        }
    };
    let Some(caps) = effective_caps(&status) else {
        return Some("no CapEff line in /proc/self/status".into());
    };
    missing_privilege(caps).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        // Root in this VM: everything but CAP_SYS_RESOURCE.
        assert_eq!(missing_privilege(0x1fffeffffff), None);
        assert_eq!(missing_privilege(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing_privilege((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        assert!(missing_privilege(1 << CAP_BPF).is_some());
        assert!(missing_privilege(0).is_some());
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_caps(status), Some(0x1fffeffffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}
