//! The two tiers of probes: the tracepoints, complete on every kernel, and
//! fentry on the throttle functions where the kernel allows it.

use tracer_common::layout::{FEATURE_FENTRY, KernelLayout, method};

use super::probes::FENTRY_PROBES;
use crate::btf::Btf;

/// Which probes to use (`--tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TierChoice {
    /// fentry where the kernel allows it, the tracepoints alone otherwise.
    #[default]
    Auto,
    /// The tracepoints alone.
    Tracepoints,
    /// fentry, or fail.
    Fentry,
}

/// The tier in use, and why not the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    Fentry,
    Tracepoints { why_not_fentry: String },
}

impl Tier {
    /// `fentry` or `tracepoints`, for labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Tracepoints { .. } => "tracepoints",
        }
    }

    /// One line for reports: which tier and why.
    pub fn describe(&self) -> String {
        match self {
            Self::Fentry => "fentry (throttle episodes from throttle_cfs_rq, tg_throttle_down \
                             and tg_unthrottle_up) with the tracepoints"
                .to_owned(),
            Self::Tracepoints { why_not_fentry } => {
                format!("tracepoints only ({why_not_fentry})")
            }
        }
    }
}

/// The fentry tier's layout: episodes from fentry, and its own throttle
/// clock where the kernel's is not exact.
pub fn fentry_layout(layout: &KernelLayout) -> KernelLayout {
    let mut layout = *layout;
    layout.features |= FEATURE_FENTRY;
    if layout.throttle_method != method::SELF_TIME {
        layout.throttle_method = method::FENTRY;
    }
    layout
}

/// Why the fentry tier cannot be tried on this kernel, if it cannot.
pub fn fentry_unavailable(btf: &Btf) -> Option<String> {
    let missing: Vec<&str> = FENTRY_PROBES
        .iter()
        .map(|p| p.target)
        .filter(|f| !btf.has_function(f))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the kernel's BTF has no function {} (inlined or renamed)",
            missing.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::tests::kernel;

    #[test]
    fn fentry_needs_all_three_functions() {
        let all = ["throttle_cfs_rq", "tg_throttle_down", "tg_unthrottle_up"];
        assert_eq!(fentry_unavailable(&kernel(&all, true)), None);
        let why = fentry_unavailable(&kernel(&all[..2], true)).unwrap();
        assert!(why.contains("tg_unthrottle_up"), "{why}");
        assert!(!why.contains("tg_throttle_down"), "{why}");
    }

    #[test]
    fn the_fentry_tier_keeps_an_exact_kernel_clock_and_replaces_the_others() {
        for (kernel_method, expected) in [
            (method::SELF_TIME, method::SELF_TIME),
            (method::PELT_CLOCK, method::FENTRY),
            (method::TASK_CLOCK, method::FENTRY),
            (method::STATE, method::FENTRY),
        ] {
            let layout = KernelLayout {
                throttle_method: kernel_method,
                ..KernelLayout::UNSET
            };
            let tier = fentry_layout(&layout);
            assert_eq!(tier.throttle_method, expected);
            assert!(tier.has(FEATURE_FENTRY));
            assert!(!layout.has(FEATURE_FENTRY));
        }
    }
}
