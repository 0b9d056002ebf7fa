//! Why runnable threads waited: the one type for the wait causes, from the
//! kernel's per-cgroup statistics through samples and recordings to reports
//! and metrics.
//!
//! `account` splits each wait; the kernel side adds each finished wait's
//! [`Split`] with [`Causes::add`];
//! userspace merges per-CPU copies, subtracts samples and shows the parts by
//! iterating [`Cause::ALL`], so that a new cause or a new figure about waits is
//! a change here and in the places that show it, not in every layer between.

/// The parts of a wait (or of one segment of it, on one CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// The task's cfs_rq hierarchy was throttled (its quota, or an ancestor's, ran out).
    pub throttled: u64,
    /// Runnable and not throttled while other tasks ran on the CPU.
    pub contended: u64,
    /// Runnable, not throttled, CPU idle: wake-up latency.
    pub other: u64,
}

/// A cause of run-queue wait, as reports and metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The cfs_rq hierarchy was throttled: its CPU quota (or an ancestor's) ran out.
    Throttled,
    /// Runnable and not throttled while other tasks held the CPU.
    Contended,
    /// Runnable, not throttled, on an idle CPU: wake-up latency.
    Other,
}

impl Cause {
    /// In the order reports list and stack them.
    pub const ALL: [Cause; 3] = [Cause::Throttled, Cause::Contended, Cause::Other];

    /// Stable name: the metric label value and the HTML class.
    pub const fn name(self) -> &'static str {
        match self {
            Cause::Throttled => "throttled",
            Cause::Contended => "contended",
            Cause::Other => "other",
        }
    }

    /// What it means, in a few words.
    pub const fn meaning(self) -> &'static str {
        match self {
            Cause::Throttled => "CFS quota",
            Cause::Contended => "other tasks held the CPU",
            Cause::Other => "idle CPU",
        }
    }
}

/// Run-queue wait by cause, summed over waits. In the kernel's per-cgroup
/// statistics with this layout; in JSON flattened into its owner, so the keys
/// are `throttled_ns`, `contended_ns`, `other_ns` and `throttled_waits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Causes {
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    /// Waits with some throttled time.
    pub throttled_waits: u64,
}

impl Causes {
    pub const ZERO: Self = Self {
        throttled_ns: 0,
        contended_ns: 0,
        other_ns: 0,
        throttled_waits: 0,
    };

    /// Adds one finished wait.
    #[inline(always)]
    pub fn add(&mut self, wait: Split) {
        self.throttled_ns = self.throttled_ns.wrapping_add(wait.throttled);
        self.contended_ns = self.contended_ns.wrapping_add(wait.contended);
        self.other_ns = self.other_ns.wrapping_add(wait.other);
        if wait.throttled > 0 {
            self.throttled_waits = self.throttled_waits.wrapping_add(1);
        }
    }

    /// Adds another sum (another CPU's, or another group's). Every field is
    /// named, so that a new one cannot be forgotten here.
    pub fn merge(&mut self, other: &Self) {
        let Self {
            throttled_ns,
            contended_ns,
            other_ns,
            throttled_waits,
        } = self;
        *throttled_ns = throttled_ns.wrapping_add(other.throttled_ns);
        *contended_ns = contended_ns.wrapping_add(other.contended_ns);
        *other_ns = other_ns.wrapping_add(other.other_ns);
        *throttled_waits = throttled_waits.wrapping_add(other.throttled_waits);
    }

    /// What was added since `earlier`, a reading of the same sums.
    pub fn since(&self, earlier: &Self) -> Self {
        let Self {
            throttled_ns,
            contended_ns,
            other_ns,
            throttled_waits,
        } = *self;
        Self {
            throttled_ns: throttled_ns.saturating_sub(earlier.throttled_ns),
            contended_ns: contended_ns.saturating_sub(earlier.contended_ns),
            other_ns: other_ns.saturating_sub(earlier.other_ns),
            throttled_waits: throttled_waits.saturating_sub(earlier.throttled_waits),
        }
    }

    /// The time of one cause.
    pub const fn ns(&self, cause: Cause) -> u64 {
        match cause {
            Cause::Throttled => self.throttled_ns,
            Cause::Contended => self.contended_ns,
            Cause::Other => self.other_ns,
        }
    }

    /// Each cause's time as a share of `whole_ns` (0 when `whole_ns` is 0), in
    /// the order of [`Cause::ALL`].
    #[cfg(feature = "user")]
    pub fn shares(&self, whole_ns: u64) -> [(Cause, f64); 3] {
        Cause::ALL.map(|c| {
            let share = if whole_ns == 0 {
                0.0
            } else {
                self.ns(c) as f64 / whole_ns as f64
            };
            (c, share)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(throttled: u64, contended: u64, other: u64) -> Split {
        Split {
            throttled,
            contended,
            other,
        }
    }

    #[test]
    fn waits_add_and_count_the_throttled_ones() {
        let mut c = Causes::ZERO;
        c.add(split(10, 5, 1));
        c.add(split(0, 7, 0));
        assert_eq!(
            c,
            Causes {
                throttled_ns: 10,
                contended_ns: 12,
                other_ns: 1,
                throttled_waits: 1
            }
        );
        assert_eq!(
            Cause::ALL.map(|k| c.ns(k)),
            [10, 12, 1],
            "ns() follows ALL's order"
        );
    }

    #[test]
    fn merge_and_since_are_inverse() {
        let mut a = Causes::ZERO;
        a.add(split(3, 4, 5));
        let mut b = a;
        let mut more = Causes::ZERO;
        more.add(split(1, 0, 2));
        b.merge(&more);
        assert_eq!(b.since(&a), more);
        // A counter that went backwards (a cgroup evicted and seen again) does
        // not wrap.
        assert_eq!(a.since(&b).throttled_ns, 0);
    }
}
