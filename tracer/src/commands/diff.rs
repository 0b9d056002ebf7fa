//! `tracer diff BEFORE AFTER`: two dumps compared per cgroup.

use crate::{cli::DiffArgs, diff, dump};

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let before = dump::read(&args.before)?;
    let after = dump::read(&args.after)?;
    super::print(&diff::render(&before, &after, args.top))
}
