//! The tracer's kernel side, for kernels with task local storage in tracing
//! programs and `bpf_mem_alloc` (6.1+); `bin/tracer-legacy.rs` is the same
//! programs for older kernels. Userspace picks one from the kernel's BTF.
//!
//! A task's run-queue wait starts when it becomes runnable without running (a
//! wakeup, or a switch-out while still runnable: preemption, a time-slice end, or
//! on 6.18+ a CFS-bandwidth throttle) and ends when it is switched in. Each wait
//! is split into throttled time (the kernel's own per-cfs_rq throttle clock over
//! the wait), contended time (other tasks ran on the CPU, from a per-CPU busy
//! clock) and the rest; contended time is charged to the tasks that ran, in
//! proportion to how long they ran, from a per-CPU ring of recent runs. All of it
//! is aggregated in the kernel, in one entry per cgroup shared by the CPUs
//! (`record.rs`); the ring buffer carries only new-cgroup and throttle-episode
//! records. Where the kernel allows fentry, `fentry.rs` reports
//! throttle episodes as they happen and keeps a throttle clock of its own.
#![no_std]
#![no_main]
// The bpf target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF's
// atomic add. The eBPF crate is built with nightly anyway (build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod blame;
mod fentry;
mod kernel;
mod maps;
mod migrate;
mod programs;
mod record;
mod resync;
mod slow;
mod stats;
mod task_storage;
mod throttle;

use task_storage as store;

/// Whether this is the object for kernels before 6.1 (`bin/tracer-legacy.rs`),
/// whose `sched_switch` has the larger frame (see `blame.rs`).
pub(crate) const LEGACY: bool = false;
