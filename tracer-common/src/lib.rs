//! Types and pure functions shared by the tracer's eBPF programs and its userspace.
//!
//! Everything here is `no_std`, `repr(C)` with explicit padding, and free of
//! panics on the paths the kernel side uses.
#![no_std]

pub mod account;
pub mod blame_cache;
pub mod causes;
pub mod clock;
pub mod counters;
pub mod hist;
pub mod layout;
pub mod maps;
pub mod stats;
pub mod wake_stamp;

#[cfg(feature = "user")]
mod user {
    use crate::{layout::KernelLayout, maps};

    // SAFETY: all of these are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for KernelLayout {}
    unsafe impl aya::Pod for maps::CgroupStats {}
    unsafe impl aya::Pod for maps::TaggedStats {}
    unsafe impl aya::Pod for maps::TaskWait {}
    unsafe impl aya::Pod for maps::CpuState {}
    unsafe impl aya::Pod for maps::BlameKey {}
    unsafe impl aya::Pod for maps::BlameValue {}
    unsafe impl aya::Pod for crate::blame_cache::BlameCache {}
    unsafe impl aya::Pod for maps::NewCgroupRecord {}
    unsafe impl aya::Pod for maps::EpisodeRecord {}
}
