//! The report's slow waits (`record --slower`): the longest, one line each,
//! and what they add up to.

use std::fmt::Write as _;

use tracer_common::maps::Counter;

use crate::{
    format::{fmt_ns, group_digits},
    recording::Recording,
    stall,
};

/// Slow waits the report lists: the longest.
pub(super) const LISTED: usize = 10;

/// The section, or nothing if the session sent no slow-wait record.
pub(super) fn section(out: &mut String, rec: &Recording) {
    let limited = rec.events.get(Counter::SlowLimited);
    if rec.stalls.is_empty() && limited == 0 {
        return;
    }
    let total = (rec.stalls.len() as u64).saturating_add(rec.stalls_omitted);
    // Saturating: a crafted dump's figures may add up past u64.
    let sum =
        |f: fn(&stall::Stall) -> u64| rec.stalls.iter().map(f).fold(0u64, u64::saturating_add);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Slow waits{}: {} recorded, {} kept; {} waiting, of which {} throttled, {} contended, {} other",
        if rec.slower_ns > 0 {
            format!(" (at least {})", fmt_ns(rec.slower_ns))
        } else {
            String::new()
        },
        group_digits(total),
        group_digits(rec.stalls.len() as u64),
        fmt_ns(sum(|s| s.wait_ns)),
        fmt_ns(sum(|s| s.throttled_ns)),
        fmt_ns(sum(|s| s.contended_ns)),
        fmt_ns(sum(|s| s.other_ns)),
    );
    if limited > 0 {
        let _ = writeln!(
            out,
            "  {} more were over the rate limit (--slower-rate) and not recorded",
            group_digits(limited)
        );
    }
    let mut longest: Vec<&stall::Stall> = rec.stalls.iter().collect();
    longest.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.at_ns.cmp(&b.at_ns)));
    if longest.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "The {} longest (AT: seconds from the start):",
        longest.len().min(LISTED)
    );
    out.push_str(&stall::header());
    let names = rec.names();
    for s in longest.into_iter().take(LISTED) {
        out.push_str(&stall::line(s, &|path: &str| names.of(path)));
    }
}
