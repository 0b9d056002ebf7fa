//! What held a window up: of its wall time, how long the threads that
//! matter to it (a JVM's GC threads during a pause) were runnable but not
//! running, and why, from the recording's slow waits (`stalls[]`).
//!
//! A wait is known from its record: when it began, how long it lasted and
//! its split. Where a window cuts a wait, its part inside is split like the
//! whole wait (the record does not say where in the wait the throttled part
//! lay). The stalled time is wall time: while two GC threads wait at once,
//! the pause is held up once, so it is at most the window's length. Waits
//! shorter than the recording's `--slower` threshold are not in it: the
//! stalled time is at least what is shown.

use std::collections::BTreeMap;

use super::{GcPause, PauseOccupant, Window};
use crate::stall::Stall;

/// One window and what held it up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explained {
    pub label: String,
    /// From the recording's start (negative: before it).
    pub start_ns: i128,
    pub duration_ns: u64,
    /// Threads that waited in it.
    pub threads: usize,
    /// Wall time in it during which at least one of them waited, split
    /// below in proportion to their waits' parts.
    pub stalled_ns: u64,
    pub throttled_ns: u64,
    pub contended_ns: u64,
    pub other_ns: u64,
    /// The cgroup whose quota throttled them, the one most named.
    pub throttled_by: Option<String>,
    /// Who held their CPUs longest during their waits in it: (cgroup,
    /// process name, ns).
    pub top_occupant: Option<(String, String, u64)>,
    /// The cgroup of the threads that waited in it, the one most named.
    pub cgroup: Option<String>,
}

impl Explained {
    /// As a dump keeps a GC pause; `None` for a window not wholly in the
    /// recording.
    pub fn to_pause(&self) -> Option<GcPause> {
        Some(GcPause {
            at_ns: u64::try_from(self.start_ns).ok()?,
            duration_ns: self.duration_ns,
            kind: self.label.clone(),
            gc_threads: u32::try_from(self.threads).unwrap_or(u32::MAX),
            stalled_ns: self.stalled_ns,
            throttled_ns: self.throttled_ns,
            contended_ns: self.contended_ns,
            other_ns: self.other_ns,
            throttled_by: self.throttled_by.clone(),
            top_occupant: self
                .top_occupant
                .as_ref()
                .map(|(cgroup, comm, ns)| PauseOccupant {
                    cgroup: cgroup.clone(),
                    comm: comm.clone(),
                    ns: *ns,
                }),
            cgroup: self.cgroup.clone(),
        })
    }

    /// A GC pause a dump kept, to render.
    pub fn of_pause(p: &GcPause) -> Self {
        Self {
            label: p.kind.clone(),
            start_ns: i128::from(p.at_ns),
            duration_ns: p.duration_ns,
            threads: p.gc_threads as usize,
            stalled_ns: p.stalled_ns,
            throttled_ns: p.throttled_ns,
            contended_ns: p.contended_ns,
            other_ns: p.other_ns,
            throttled_by: p.throttled_by.clone(),
            top_occupant: p
                .top_occupant
                .as_ref()
                .map(|o| (o.cgroup.clone(), o.comm.clone(), o.ns)),
            cgroup: p.cgroup.clone(),
        }
    }
}

/// Each of `windows` explained by the waits in `stalls` that `matters`.
pub fn explain(
    windows: &[Window],
    stalls: &[Stall],
    matters: impl Fn(&Stall) -> bool,
) -> Vec<Explained> {
    let ours: Vec<&Stall> = stalls.iter().filter(|s| matters(s)).collect();
    windows.iter().map(|w| one(w, &ours)).collect()
}

fn one(w: &Window, stalls: &[&Stall]) -> Explained {
    let mut e = Explained {
        label: w.label.clone(),
        start_ns: w.start_ns,
        duration_ns: u64::try_from(w.end_ns - w.start_ns).unwrap_or(0),
        ..Explained::default()
    };
    // Each wait's part in the window, as an interval, with its split.
    let mut parts: Vec<(u64, u64, &Stall)> = Vec::new();
    let mut tids = Vec::new();
    for &s in stalls {
        let end = s.at_ns.saturating_add(s.wait_ns);
        let inside = w.overlap(s.at_ns, end);
        if inside == 0 {
            continue;
        }
        let from = (w.start_ns.max(i128::from(s.at_ns))) as u64;
        parts.push((from, from + inside, s));
        tids.push(s.tid);
    }
    tids.sort_unstable();
    tids.dedup();
    e.threads = tids.len();
    // Wall time covered by at least one of them.
    parts.sort_by_key(|(from, _, _)| *from);
    let (mut covered, mut reach) = (0u64, 0u64);
    for (from, to, _) in &parts {
        let from = (*from).max(reach);
        if *to > from {
            covered += to - from;
            reach = *to;
        }
    }
    e.stalled_ns = covered;
    // The split of the threads' summed waiting, scaled to the wall time.
    let (mut split, mut by, mut occupants) = ([0f64; 3], BTreeMap::new(), BTreeMap::new());
    let mut cgroups = BTreeMap::new();
    for (from, to, s) in &parts {
        let share = (to - from) as f64 / s.wait_ns.max(1) as f64;
        split[0] += s.throttled_ns as f64 * share;
        split[1] += s.contended_ns as f64 * share;
        split[2] += s.other_ns as f64 * share;
        *cgroups.entry(s.cgroup.clone()).or_insert(0u64) += to - from;
        if let Some(b) = &s.throttled_by {
            *by.entry(b.clone()).or_insert(0u64) += to - from;
        }
        for o in &s.occupants {
            *occupants
                .entry((o.cgroup.clone(), o.comm.clone()))
                .or_insert(0f64) += o.ns as f64 * share;
        }
    }
    let summed: f64 = split.iter().sum();
    if summed > 0.0 {
        let scale = covered as f64 / summed;
        e.throttled_ns = (split[0] * scale).round() as u64;
        e.contended_ns = (split[1] * scale).round() as u64;
        e.other_ns = covered.saturating_sub(e.throttled_ns + e.contended_ns);
    }
    e.throttled_by = by.into_iter().max_by_key(|(_, ns)| *ns).map(|(b, _)| b);
    e.cgroup = cgroups
        .into_iter()
        .max_by_key(|(_, ns)| *ns)
        .map(|(c, _)| c);
    e.top_occupant = occupants
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, ns)| *ns >= 1.0)
        .map(|((cgroup, comm), ns)| (cgroup, comm, ns.round() as u64));
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::{StallOccupant, tests::stall};

    fn window(start_ns: i128, end_ns: i128) -> Window {
        Window {
            start_ns,
            end_ns,
            label: "GC(1) Pause Young".into(),
        }
    }

    #[test]
    fn a_pause_is_held_up_while_any_gc_thread_waits() {
        // Two GC threads wait in a pause of [100, 200): one from 50 to 150
        // (throttled), one from 120 to 180 (contended, behind /batch).
        let mut a = stall(50, 100);
        a.tid = 1;
        a.throttled_ns = 100;
        a.other_ns = 0;
        a.throttled_by = Some("/svc".into());
        let mut b = stall(120, 60);
        b.tid = 2;
        b.contended_ns = 60;
        b.other_ns = 0;
        b.occupants = vec![StallOccupant {
            cgroup: "/batch".into(),
            tgid: 9,
            comm: "hog".into(),
            ns: 60,
        }];
        let mut far = stall(500, 100);
        far.tid = 3;
        let e = explain(&[window(100, 200)], &[a, b, far], |_| true);
        let e = &e[0];
        assert_eq!((e.duration_ns, e.threads), (100, 2));
        // [100, 150) and [120, 180): 80 ns of the pause's wall time.
        assert_eq!(e.stalled_ns, 80);
        // 50 ns throttled and 60 ns contended waited, scaled to 80 ns.
        assert_eq!((e.throttled_ns, e.contended_ns, e.other_ns), (36, 44, 0));
        assert_eq!(e.throttled_by.as_deref(), Some("/svc"));
        assert_eq!(e.top_occupant, Some(("/batch".into(), "hog".into(), 60)));
        assert_eq!(e.cgroup.as_deref(), Some("/svc"));
        // As a dump keeps it, and back.
        let kept = e.to_pause().unwrap();
        kept.check().unwrap();
        assert_eq!(Explained::of_pause(&kept), *e);
    }

    #[test]
    fn only_the_threads_that_matter_and_the_waits_inside_count() {
        let mut gc = stall(0, 1_000);
        gc.comm = "GC Thread#0".into();
        let app = stall(0, 1_000);
        let e = explain(&[window(200, 300), window(2_000, 3_000)], &[gc, app], |s| {
            s.comm.starts_with("GC Thread")
        });
        assert_eq!(
            (e[0].threads, e[0].stalled_ns, e[0].other_ns),
            (1, 100, 100)
        );
        assert_eq!((e[1].threads, e[1].stalled_ns), (0, 0), "nothing in it");
        assert_eq!(e[1].top_occupant, None);
    }
}
