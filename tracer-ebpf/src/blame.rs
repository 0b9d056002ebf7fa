//! Blame: a wait segment's contended time charged to the tasks that ran on its
//! CPU during it, in proportion to how long they ran, for every victim; added
//! to this CPU's cache of rows, which moves them to the shared `BLAME` map
//! (see `tracer_common::blame_cache`).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{bindings::BPF_NOEXIST, btf_maps::PerCpuArray, macros::btf_map};
use tracer_common::{
    account::Charge,
    blame_cache::BlameCache,
    maps::{BlameKey, BlameValue, Counter, Occupant, Runs, VICTIM_SELECTION},
};

use crate::maps::{BLAME, BLAME_CACHE, count, cpu_state};
use crate::stats::{NO_SELECTION, Victims, selecting};

/// The part of a wait segment to charge to the CPU's runs (see
/// [`tracer_charge_runs`]).
#[repr(C)]
pub struct Window {
    from: u64,
    to: u64,
    contended: u64,
    busy: u64,
    /// 1 to include the run in progress (a segment ended by a migration).
    with_current: u64,
}

/// The arguments of [`tracer_charge_runs`], passed through this CPU's slot:
/// before 5.12 a global function takes scalars only.
#[repr(C)]
pub struct ChargeArgs {
    window: Window,
    victims: Victims,
}

/// Here rather than in `maps.rs`: only [`charge`] and [`tracer_charge_runs`]
/// use it, and its value type is this module's.
#[btf_map]
static CHARGE_ARGS: PerCpuArray<ChargeArgs, 1> = PerCpuArray::new();

/// Charges `contended` ns of the wait segment `[from, now)` on `cpu` (whose
/// runs are `runs`), out of `busy` ns the CPU was busy during it, to those
/// runs, for `victims`; `with_current` includes the run in progress. Counts
/// a [`Counter::RingOverrun`] if the CPU no longer remembers all the runs.
///
/// The figures are passed rather than the `Segment`: reading them from it
/// here gave `sched_migrate_task` of the legacy object a worse register
/// allocation and more verified instructions.
#[inline(always)]
pub(crate) fn charge(
    from: u64,
    cpu: u32,
    runs: &Runs,
    now: u64,
    contended: u64,
    busy: u64,
    with_current: bool,
    victims: Victims,
) {
    // Most waits lie within the newest run of their CPU (a ping-pong's, a
    // wakeup's behind one task): all of the contended time is that run's,
    // and a walk would find it alone. Not with `--pid` or `--threads`,
    // whose rows would add the selections' code to `sched_switch`.
    if !with_current
        && !selecting()
        && let Some(who) = runs.sole_run(from)
        && let Some(cache) = BLAME_CACHE.get_ptr_mut(0)
    {
        // SAFETY: this CPU's cache; preemption is off in a tracepoint.
        add_row(unsafe { &mut *cache }, victims.cgroup, who, contended, now);
        return;
    }
    let window = Window {
        from,
        to: now,
        contended,
        busy,
        with_current: u64::from(with_current),
    };
    let charged = match CHARGE_ARGS.get_ptr_mut(0) {
        Some(args) => {
            // SAFETY: this CPU's slot; preemption is off in a tracepoint.
            unsafe {
                (*args).window = window;
                (*args).victims = victims;
                tracer_charge_runs(cpu)
            }
        }
        None => 0,
    };
    if charged == 0 {
        count(Counter::RingOverrun);
    }
}

/// Charges a wait segment's contended time to the runs of `cpu` during it, in
/// proportion to their lengths, for every victim (the segment and the victims
/// are in this CPU's [`CHARGE_ARGS`]). Returns 0 if the runs the CPU remembers
/// do not cover the window.
///
/// A global function: the verifier checks it once, on its own, instead of at
/// every call in every state of `sched_switch`, whose verification would
/// otherwise grow with each of the `RING` iterations times the map updates in
/// each.
///
/// # Safety
/// Called from a tracepoint program, with preemption off.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_charge_runs(cpu: u32) -> i32 {
    let (Some(cpu), Some(args), Some(cache)) = (
        cpu_state(cpu),
        CHARGE_ARGS.get(0),
        BLAME_CACHE.get_ptr_mut(0),
    ) else {
        return 1;
    };
    // SAFETY: this CPU's cache; preemption is off in a tracepoint.
    let cache = unsafe { &mut *cache };
    let (w, victims) = (&args.window, &args.victims);
    let charge = Charge::new(w.contended, w.busy);
    let covered = cpu
        .runs
        .for_each_run(w.from, w.to, w.with_current != 0, |who, ns| {
            let ns = charge.of(ns);
            if ns == 0 {
                return;
            }
            // Inlined but in the object for kernels before 6.1, whose
            // `sched_switch` frame leaves no room for the larger frame (see
            // `blame`).
            if crate::LEGACY {
                blame(cache, victims.cgroup, who, ns, w.to);
            } else {
                add_row(cache, victims.cgroup, who, ns, w.to);
            }
            if victims.process != NO_SELECTION {
                blame(
                    cache,
                    VICTIM_SELECTION | victims.process as u64,
                    who,
                    ns,
                    w.to,
                );
            }
            if victims.thread != NO_SELECTION {
                blame(
                    cache,
                    VICTIM_SELECTION | victims.thread as u64,
                    who,
                    ns,
                    w.to,
                );
            }
        });
    i32::from(covered)
}

/// Moves this CPU's cached blame rows to the shared map (see
/// `tracer_common::blame_cache`): called by `sched_switch` when the cache is
/// due.
///
/// A global function, verified once, like [`tracer_charge_runs`].
///
/// # Safety
/// Called from a tracepoint program, with preemption off.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn tracer_flush_blame() -> i32 {
    if let Some(cache) = BLAME_CACHE.get_ptr_mut(0) {
        // SAFETY: as in `tracer_charge_runs`.
        unsafe { (*cache).flush(put) };
    }
    0
}

/// Whether this CPU's blame cache is due for a flush at `now` (see
/// `BlameCache::due`).
#[inline(always)]
pub(crate) fn blame_due(now: u64, idle: bool) -> bool {
    BLAME_CACHE.get(0).is_some_and(|cache| cache.due(now, idle))
}

/// Adds `ns` to the row of `victim` and occupant `who` in this CPU's cache,
/// for the walk over a CPU's runs: its selections' rows, and in the object
/// for kernels before 6.1 every row. Out of line: its key on the stack
/// would count in the frame of every caller, and the verifier limits the
/// frames of a chain of calls to 512 bytes (with every row inlined in the
/// walk, that object's chain of five calls took 544).
#[inline(never)]
fn blame(cache: &mut BlameCache, victim: u64, who: &Occupant, ns: u64, now: u64) {
    add_row(cache, victim, who, ns, now);
}

/// [`blame`], inlined for a wait's cgroup: a call and its return cost more
/// than the row's update where returns go through a return thunk (as with
/// the SRSO mitigation on AMD).
#[inline(always)]
fn add_row(cache: &mut BlameCache, victim: u64, who: &Occupant, ns: u64, now: u64) {
    if ns == 0 {
        return;
    }
    let key = BlameKey {
        victim,
        occupant_cgroup: who.cgroup_id,
        occupant_tgid: who.tgid,
        _pad: 0,
    };
    cache.add(&key, &who.comm, ns, now, put);
}

/// Adds a row to the shared map.
#[inline(never)]
fn put(key: &BlameKey, value: &BlameValue) {
    if add_blame(key, value.ns) {
        return;
    }
    if BLAME.insert(key, value, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Created by another CPU meanwhile, or full.
    if !add_blame(key, value.ns) {
        count(Counter::BlameMapFull);
    }
}

#[inline(always)]
fn add_blame(key: &BlameKey, ns: u64) -> bool {
    match BLAME.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: a map value, aligned, alive while the program runs.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).ns, ns)
            };
            true
        }
        None => false,
    }
}
