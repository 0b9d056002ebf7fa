//! The subcommands, one module each.

pub mod agent;
pub mod diff;
pub mod record;
pub mod report;

use std::io::Write as _;

use anyhow::Context as _;

/// Writes a line to stderr, whatever became of stderr (`2>&1 | head -1`
/// closes it): a progress note must not end a session that can still write
/// its dump.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

/// Prints a report on stdout. A reader that stopped reading (`| head -1`)
/// ends it quietly: it has what it wanted, and nothing else depends on the
/// rest (`record` writes its dump first).
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the report to stdout"),
    }
}
