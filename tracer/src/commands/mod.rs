//! The subcommands, one module each.

pub mod agent;
pub mod diff;
pub mod record;
pub mod report;
