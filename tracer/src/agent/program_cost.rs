//! What the eBPF programs themselves cost, sampled.
//!
//! The kernel counts a program's run time only while BPF statistics are on,
//! and then it reads the clock twice around every run: about 100 ns more per
//! context switch here, 40 % on top of the programs' own cost. So the agent
//! turns them on for one second a minute and reports what that second
//! measured: each program's share of a CPU and its mean run time.

use std::time::Duration;

/// How often, and for how long, the statistics are on.
pub const EVERY: Duration = Duration::from_secs(60);
pub const WINDOW: Duration = Duration::from_secs(1);

/// A reading of one program's kernel statistics: name, run ns, runs.
pub type Reading = (String, u64, u64);

/// An open window: the statistics stay on while `_on` lives.
pub struct Window {
    pub _on: std::os::fd::OwnedFd,
    pub opened: std::time::Instant,
    pub start: Vec<Reading>,
}

/// One program's cost over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgramCost {
    pub name: String,
    /// CPU time over wall time: 0.01 is 1 % of one CPU.
    pub cpu_ratio: f64,
    pub ns_per_run: f64,
    pub runs_per_second: f64,
}

/// The cost of each program between two readings of `(name, run ns, runs)`
/// taken `elapsed` apart. Programs missing from either reading are left out.
pub fn between(start: &[Reading], end: &[Reading], elapsed: Duration) -> Vec<ProgramCost> {
    let wall = elapsed.as_nanos().max(1) as f64;
    end.iter()
        .filter_map(|(name, ns, runs)| {
            let (_, ns0, runs0) = start.iter().find(|(n, _, _)| n == name)?;
            let (ns, runs) = (ns.saturating_sub(*ns0), runs.saturating_sub(*runs0));
            Some(ProgramCost {
                name: name.clone(),
                cpu_ratio: ns as f64 / wall,
                ns_per_run: if runs == 0 {
                    0.0
                } else {
                    ns as f64 / runs as f64
                },
                runs_per_second: runs as f64 * 1e9 / wall,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_over_a_window() {
        let start = vec![
            ("sched_switch".to_owned(), 1_000, 10),
            ("gone".to_owned(), 5, 1),
        ];
        let end = vec![
            ("sched_switch".to_owned(), 1_000 + 20_000_000, 10 + 100_000),
            ("new".to_owned(), 7, 1),
        ];
        let c = between(&start, &end, Duration::from_secs(1));
        assert_eq!(c.len(), 1, "only programs in both readings");
        assert_eq!(c[0].name, "sched_switch");
        assert!((c[0].cpu_ratio - 0.02).abs() < 1e-12, "20 ms in 1 s");
        assert!((c[0].ns_per_run - 200.0).abs() < 1e-9);
        assert!((c[0].runs_per_second - 100_000.0).abs() < 1e-6);
        let idle = between(&end, &end, Duration::from_secs(1));
        assert_eq!((idle[0].cpu_ratio, idle[0].ns_per_run), (0.0, 0.0));
    }
}
