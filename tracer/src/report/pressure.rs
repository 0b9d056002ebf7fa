//! The host's CPU pressure (PSI) beside the traced split, for the terminal
//! report and the HTML page.

use std::fmt::Write as _;

use crate::{
    format::fmt_ns,
    recording::{CgroupEntry, Recording},
};

/// The host's CPU pressure beside the split of the traced waits: PSI says
/// how much the host's tasks stalled, the trace why. PSI is wall time, the
/// trace thread time, and so they are given apart.
pub fn psi_line(rec: &Recording) -> Option<String> {
    let psi = rec.host_psi?;
    let mut line = format!(
        "host CPU pressure (PSI, wall time): some {:.1} % of the {}",
        psi.some_share(rec.duration_ns) * 100.0,
        fmt_ns(rec.duration_ns)
    );
    let sum = |f: fn(&CgroupEntry) -> u64| -> u64 { rec.cgroups.iter().map(f).sum() };
    let (throttled, contended, other) = (
        sum(|c| c.wait.causes.throttled_ns),
        sum(|c| c.wait.causes.contended_ns),
        sum(|c| c.wait.causes.other_ns),
    );
    let waited = throttled + contended + other;
    if waited > 0 {
        let share = |ns: u64| ns as f64 * 100.0 / waited as f64;
        let _ = write!(
            line,
            "; the reported cgroups' waits (thread time, {}): throttled {:.0} %, contended {:.0} %, \
             other {:.0} %",
            fmt_ns(waited),
            share(throttled),
            share(contended),
            share(other)
        );
    }
    Some(line)
}
