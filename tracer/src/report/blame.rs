//! Who held the CPU while a group waited: its top occupants with their top
//! processes, and how what each ran compares with its CPU weight.

use std::fmt::Write as _;

use crate::{
    format::{fmt_ns, visible},
    recording::WaitSplit,
    weight::compared,
};

/// Who held the CPU, top occupants with their top processes.
pub(super) fn blame_lines(out: &mut String, w: &WaitSplit, duration_ns: u64) {
    if w.causes.contended_ns == 0 {
        return;
    }
    let mut line = String::from("  waited behind:");
    for (i, b) in w.blame.iter().take(3).enumerate() {
        let processes: Vec<String> = b
            .processes
            .iter()
            .take(2)
            .map(|p| match p.pid() {
                None => format!("{} {}", visible(&p.comm), fmt_ns(p.ns)),
                Some(pid) => format!("{} {pid} {}", visible(&p.comm), fmt_ns(p.ns)),
            })
            .collect();
        let _ = write!(
            line,
            "{} {} {} ({})",
            if i == 0 { "" } else { ";" },
            visible(&b.name()),
            fmt_ns(b.ns),
            processes.join(", ")
        );
    }
    if w.unattributed_ns > w.causes.contended_ns / 100 {
        let _ = write!(line, "; not attributed {}", fmt_ns(w.unattributed_ns));
    }
    let _ = writeln!(out, "{line}");
    // Whether they took more than their weights' share.
    let weights: Vec<String> = w
        .blame
        .iter()
        .take(3)
        .filter_map(|b| {
            let weight = b.weight.as_ref()?;
            Some(format!(
                "{} {}",
                visible(&b.name()),
                compared(b.ran_ns, duration_ns, weight)
            ))
        })
        .collect();
    if !weights.is_empty() {
        let _ = writeln!(out, "  their weights: {}", weights.join("; "));
    }
}
