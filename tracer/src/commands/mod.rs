//! The subcommands, one module each.

pub mod diff;
pub mod record;
pub mod report;
