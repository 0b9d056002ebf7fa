//! CPU pressure (PSI), the host's and a cgroup's own, beside the traced
//! split, for the terminal report and the HTML page.

use std::fmt::Write as _;

use tracer_common::causes::Causes;

use crate::{
    format::{fmt_ns, percent},
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
    let causes = Causes {
        throttled_ns: sum(|c| c.wait.causes.throttled_ns),
        contended_ns: sum(|c| c.wait.causes.contended_ns),
        other_ns: sum(|c| c.wait.causes.other_ns),
        ..Causes::ZERO
    };
    split(&mut line, "the reported cgroups' waits", &causes);
    Some(line)
}

/// A cgroup's own CPU pressure (cgroup v2) beside its traced split.
pub fn cgroup_psi_line(c: &CgroupEntry, duration_ns: u64) -> Option<String> {
    let psi = c.psi?;
    let mut line = format!(
        "CPU pressure (PSI, wall time): some {:.1} %",
        percent(psi.some_ns, duration_ns)
    );
    if let Some(full) = psi.full_ns {
        let _ = write!(line, ", full {:.1} %", percent(full, duration_ns));
    }
    let _ = write!(line, " of the {}", fmt_ns(duration_ns));
    split(&mut line, "its traced waits", &c.wait.causes);
    Some(line)
}

/// `; <whose> (thread time, 1.84 s): throttled 88 %, contended 12 %, other 0 %`:
/// what PSI cannot say, the causes.
fn split(line: &mut String, whose: &str, causes: &Causes) {
    let (throttled, contended, other) = (causes.throttled_ns, causes.contended_ns, causes.other_ns);
    let waited = throttled + contended + other;
    if waited > 0 {
        let share = |ns: u64| ns as f64 * 100.0 / waited as f64;
        let _ = write!(
            line,
            "; {whose} (thread time, {}): throttled {:.0} %, contended {:.0} %, other {:.0} %",
            fmt_ns(waited),
            share(throttled),
            share(contended),
            share(other)
        );
    }
}
