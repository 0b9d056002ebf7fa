//! The tracer's userspace: loads the eBPF programs, reads what they aggregate in
//! the kernel and reports it.
//!
//! Everything that can be tested without root (BTF parsing, cgroup resolution,
//! histogram math, assembling a recording, rendering, CLI parsing) lives in
//! modules that do not touch the kernel; [`session`] and [`programs`] are the
//! privileged part. `docs/architecture.md` draws the pipeline.

pub mod agent;
pub mod assemble;
pub mod btf;
pub mod cgroup;
pub mod cgroupns;
pub mod cli;
pub mod commands;
pub mod cpustat;
pub mod diff;
pub mod drain;
pub mod dump;
pub mod filter;
pub mod format;
pub mod hdr;
pub mod histogram;
pub mod host;
pub mod html;
pub mod layout;
pub mod privilege;
pub mod process;
pub mod programs;
pub mod psi;
pub mod recording;
pub mod redact;
pub mod report;
pub mod sample;
pub mod selection;
pub mod session;
pub mod stall;
pub mod timeline;
pub mod verdict;
pub mod weight;
pub mod windows;
pub mod workload;
