//! Dumps: a [`Recording`] written to a file to attach to a bug report, and read
//! back by `tracer report` and `tracer diff` anywhere, without privileges.
//!
//! The format is JSON, documented with its version rules in
//! `docs/dump-format.md`. Reading never trusts the file: a file that is not a
//! dump, is truncated, is corrupted or comes from a newer tracer gets an error
//! that says which, never a panic.

mod file;
mod head;

use std::path::Path;

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::Value;

pub use self::file::{MAX_BYTES, check_writable, write};
use self::head::{Head, IsArray};
use crate::{hdr, recording::Recording};

/// The `format` key of every dump.
pub const FORMAT: &str = "tracer-dump";
/// The version this tracer writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// The dump as written: compact JSON (a dump of 200 cgroups stays well under
/// 1 MiB; `jq .` makes it readable).
pub fn to_json(rec: &Recording) -> anyhow::Result<String> {
    let mut rec = rec.clone();
    rec.format = FORMAT.into();
    rec.format_version = VERSION;
    Ok(serde_json::to_string(&rec)? + "\n")
}

/// Reads a dump file: a regular file of at most [`MAX_BYTES`].
pub fn read(path: &Path) -> anyhow::Result<Recording> {
    let bytes = file::read_bounded(path)?;
    parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses, upgrades and checks a dump.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Recording> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("not a tracer dump: not text (a dump is JSON)"))?;
    let version = version_of(&head(text)?)?;
    // Typed, straight from the text: no tree of the whole document in memory.
    let mut rec: Recording = serde_json::from_str(text)
        .map_err(|e| anyhow!("corrupted: not a valid version {version} dump: {e}"))?;
    upgrade(&mut rec, version)?;
    validate(&mut rec)?;
    Ok(rec)
}

/// The keys that say what `text` is, its JSON checked.
fn head(text: &str) -> anyhow::Result<Head> {
    if !text.trim_start().starts_with('{') {
        bail!("not a tracer dump: it does not start with a JSON object");
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            anyhow!(
                "truncated: the dump ends early (line {}, column {})",
                e.line(),
                e.column()
            )
        } else {
            anyhow!(
                "corrupted: not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            )
        }
    })
}

/// The format version of a dump, refusing what is not a dump or is newer
/// than this tracer.
fn version_of(head: &Head) -> anyhow::Result<u32> {
    match &head.format {
        Some(Value::String(f)) if f == FORMAT => {}
        Some(other) => bail!("not a tracer dump: its format is {other}, not \"{FORMAT}\""),
        // Record JSON from before the dump format: version 0.
        None if head.tool.as_ref().and_then(Value::as_str) == Some("tracer")
            && matches!(head.cgroups, Some(IsArray(true))) =>
        {
            return Ok(0);
        }
        None => bail!("not a tracer dump: it has no \"format\": \"{FORMAT}\" key"),
    }
    let version = head
        .format_version
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("corrupted: no format_version"))?;
    if version > u64::from(VERSION) {
        bail!(
            "written by a newer tracer (dump format version {version}; this tracer reads versions \
             up to {VERSION}): read it with a newer tracer"
        );
    }
    Ok(version as u32)
}

/// When a dump's window ended (`started_unix_ns + duration_ns`), read from its
/// identifying keys only; `None` for what is not a tracer dump. The agent
/// orders its dumps by it. The file is not followed if it is a symbolic link.
pub fn window_end(path: &Path) -> Option<u64> {
    let bytes = file::read_bounded_nofollow(path).ok()?;
    let head = head(std::str::from_utf8(&bytes).ok()?).ok()?;
    version_of(&head).ok()?;
    let started = head.started_unix_ns.as_ref()?.as_u64()?;
    started.checked_add(head.duration_ns.as_ref()?.as_u64()?)
}

/// Brings an older dump up to [`VERSION`].
fn upgrade(rec: &mut Recording, from: u32) -> anyhow::Result<()> {
    if from == 0 {
        // Version 0 carried the tracer's buckets but no HdrHistogram.
        for (at, h) in rec.histograms_mut() {
            if h.hdr.is_empty() {
                hdr::check_buckets(&h.buckets).with_context(|| format!("corrupted: {at}"))?;
                // The exact maximum lies in the last bucket.
                ensure!(
                    h.buckets.last().is_none_or(|b| b[0] <= h.summary.max_ns),
                    "corrupted: {at} max_ns {} is below its largest bucket",
                    h.summary.max_ns
                );
                h.hdr = hdr::encode(&h.buckets, h.summary.max_ns).with_context(|| at)?;
            }
        }
        if rec.host.is_empty() {
            rec.host = "unknown".into();
        }
    }
    rec.format = FORMAT.into();
    rec.format_version = VERSION;
    Ok(())
}

/// Checks what the report relies on, and rebuilds the buckets from the
/// HdrHistograms.
fn validate(rec: &mut Recording) -> anyhow::Result<()> {
    for (at, h) in rec.histograms_mut() {
        let buckets = hdr::buckets(&h.hdr).with_context(|| format!("corrupted: {at}.hdr"))?;
        let total = hdr::check_buckets(&buckets).with_context(|| format!("corrupted: {at}"))?;
        let s = &h.summary;
        ensure!(
            total == s.count,
            "corrupted: {at} holds {total} values but says count {}",
            s.count
        );
        ensure!(
            s.p50_ns <= s.p90_ns
                && s.p90_ns <= s.p99_ns
                && s.p99_ns <= s.p999_ns
                && s.p999_ns <= s.max_ns,
            "corrupted: {at} percentiles out of order"
        );
        h.buckets = buckets;
    }
    crate::timeline::validate(&mut rec.intervals)?;
    for (i, p) in rec.gc_pauses.iter().enumerate() {
        p.check()
            .with_context(|| format!("corrupted: gc_pauses[{i}] ({})", p.kind))?;
    }
    for (i, s) in rec.stalls.iter().enumerate() {
        s.check()
            .with_context(|| format!("corrupted: stalls[{i}] ({})", s.cgroup))?;
    }
    for (i, c) in rec.cgroups.iter().enumerate() {
        ensure!(
            c.path.starts_with('/') || c.path.starts_with("?/"),
            "corrupted: cgroups[{i}] path {:?}",
            c.path
        );
    }
    Ok(())
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
pub(crate) mod tests;
