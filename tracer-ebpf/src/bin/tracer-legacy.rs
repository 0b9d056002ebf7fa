//! The tracer's kernel side for kernels before 6.1: the programs of `main.rs`,
//! with per-task state in a hash map keyed by thread id and preallocated
//! statistics maps (see `pid_map.rs`).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

#[path = "../blame.rs"]
mod blame;
#[path = "../fentry.rs"]
mod fentry;
#[path = "../kernel.rs"]
mod kernel;
#[path = "../maps.rs"]
mod maps;
#[path = "../migrate.rs"]
mod migrate;
#[path = "../pid_map.rs"]
mod pid_map;
#[path = "../programs.rs"]
mod programs;
#[path = "../record.rs"]
mod record;
#[path = "../resync.rs"]
mod resync;
#[path = "../slow.rs"]
mod slow;
#[path = "../stats.rs"]
mod stats;
#[path = "../throttle.rs"]
mod throttle;

use pid_map as store;

/// This is the object for kernels before 6.1 (see `main.rs`).
pub(crate) const LEGACY: bool = true;
