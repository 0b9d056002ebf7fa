//! The kernel's pressure stall information for CPU (`/proc/pressure/cpu`),
//! read beside the trace.
//!
//! PSI is what many fleets already watch, and it cannot tell a quota from a
//! neighbour: `some` is the wall time during which at least one runnable
//! task waited for a CPU, for whatever reason. The trace splits the same
//! waits by cause. Shown side by side, PSI says how much, and the trace why.
//! The two measure differently: PSI is wall time (one stalled task or ten
//! count alike), the trace sums thread time.

use serde::{Deserialize, Serialize};

/// The host's CPU pressure file.
pub const HOST: &str = "/proc/pressure/cpu";

/// A PSI file's cumulative stall totals, in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Some runnable task waited.
    pub some_us: u64,
    /// Every runnable task waited (non-idle CPUs); the host's file has it
    /// since 5.13, always 0 at the system level.
    pub full_us: Option<u64>,
}

/// Stall time over a window, in ns of wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiWindow {
    pub some_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_ns: Option<u64>,
}

impl Pressure {
    /// Parses `some avg10=... total=N` and `full ... total=N` lines.
    pub fn parse(text: &str) -> Option<Self> {
        let total = |kind: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(kind))?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("total="))?
                .parse()
                .ok()
        };
        Some(Self {
            some_us: total("some")?,
            full_us: total("full"),
        })
    }

    /// The host's, if PSI is on (`psi=1`, or built in by default).
    pub fn host() -> Option<Self> {
        Self::parse(&std::fs::read_to_string(HOST).ok()?)
    }

    /// A cgroup v2 cgroup's own (`cpu.pressure` in its directory): the
    /// stall of its tasks only, its descendants' included.
    pub fn of_cgroup(dir: &std::path::Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(dir.join("cpu.pressure")).ok()?)
    }

    /// What stalled from `self` to `later`.
    pub fn until(&self, later: &Self) -> PsiWindow {
        PsiWindow {
            some_ns: later.some_us.saturating_sub(self.some_us) * 1_000,
            full_ns: match (self.full_us, later.full_us) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) * 1_000),
                _ => None,
            },
        }
    }
}

impl PsiWindow {
    /// Its `some` stall as a share of `duration_ns` of wall time.
    pub fn some_share(&self, duration_ns: u64) -> f64 {
        if duration_ns == 0 {
            0.0
        } else {
            self.some_ns as f64 / duration_ns as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_and_subtracted() {
        let a = Pressure::parse(
            "some avg10=1.50 avg60=0.40 avg300=0.10 total=1000\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(
            a,
            Pressure {
                some_us: 1_000,
                full_us: Some(0)
            }
        );
        let b = Pressure::parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=401000\n").unwrap();
        assert_eq!(
            b.full_us, None,
            "before 5.13 the host's file has no full line"
        );
        let w = a.until(&b);
        assert_eq!(
            w,
            PsiWindow {
                some_ns: 400_000_000,
                full_ns: None
            }
        );
        assert_eq!(w.some_share(1_000_000_000), 0.4);
        assert_eq!(Pressure::parse("garbage"), None);
        assert_eq!(Pressure::parse("some avg10=x total=-1\n"), None);
    }
}
