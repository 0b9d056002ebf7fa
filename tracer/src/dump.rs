//! Dumps: a [`Recording`] written to a file to attach to a bug report, and read
//! back by `tracer report` and `tracer diff` anywhere, without privileges.
//!
//! The format is JSON, documented with its version rules in
//! `docs/dump-format.md`. Reading never trusts the file: a file that is not a
//! dump, is truncated, is corrupted or comes from a newer tracer gets an error
//! that says which, never a panic.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::Value;

use crate::{hdr, recording::Recording};

/// The `format` key of every dump.
pub const FORMAT: &str = "tracer-dump";
/// The version this tracer writes, and the newest it reads.
pub const VERSION: u32 = 1;
/// Dumps larger than this are refused before parsing.
const MAX_BYTES: u64 = 256 << 20;

/// The dump as written: compact JSON (a dump of 200 cgroups stays well under
/// 1 MiB; `jq .` makes it readable).
pub fn to_json(rec: &Recording) -> anyhow::Result<String> {
    let mut rec = rec.clone();
    rec.format = FORMAT.into();
    rec.format_version = VERSION;
    Ok(serde_json::to_string(&rec)? + "\n")
}

/// Writes `rec` to `path` (through a temporary file, so that an interrupted
/// write never leaves half a dump under the final name).
pub fn write(path: &Path, rec: &Recording) -> anyhow::Result<()> {
    let json = to_json(rec)?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("json")
    ));
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Reads a dump file.
pub fn read(path: &Path) -> anyhow::Result<Recording> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        meta.len() <= MAX_BYTES,
        "{} is {} bytes: too large to be a tracer dump",
        path.display(),
        meta.len()
    );
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses, upgrades and checks a dump.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Recording> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("not a tracer dump: not text (a dump is JSON)"))?;
    if !text.trim_start().starts_with('{') {
        bail!("not a tracer dump: it does not start with a JSON object");
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
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
    })?;
    let version = version_of(&value)?;
    let mut rec: Recording = serde_json::from_value(value)
        .map_err(|e| anyhow!("corrupted: not a valid version {version} dump: {e}"))?;
    upgrade(&mut rec, version)?;
    validate(&mut rec)?;
    Ok(rec)
}

/// The format version of a parsed dump, refusing what is not a dump or is newer
/// than this tracer.
fn version_of(value: &Value) -> anyhow::Result<u32> {
    let obj = value
        .as_object()
        .ok_or_else(|| anyhow!("not a tracer dump: not a JSON object"))?;
    match obj.get("format") {
        Some(Value::String(f)) if f == FORMAT => {}
        Some(other) => bail!("not a tracer dump: its format is {other}, not \"{FORMAT}\""),
        // Record JSON from before the dump format: version 0.
        None if obj.get("tool") == Some(&Value::String("tracer".into()))
            && obj.get("cgroups").is_some_and(Value::is_array) =>
        {
            return Ok(0);
        }
        None => bail!("not a tracer dump: it has no \"format\": \"{FORMAT}\" key"),
    }
    let version = obj
        .get("format_version")
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

/// Brings an older dump up to [`VERSION`].
fn upgrade(rec: &mut Recording, from: u32) -> anyhow::Result<()> {
    if from == 0 {
        // Version 0 carried the tracer's buckets but no HdrHistogram.
        for (at, h) in rec.histograms_mut() {
            if h.hdr.is_empty() {
                hdr::check_buckets(&h.buckets).with_context(|| at.clone())?;
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
mod tests {
    use super::*;
    use crate::report::{TextOptions, render};

    const V0: &str = include_str!("../tests/fixtures/record-v0.json");

    fn v1() -> String {
        to_json(&parse(V0.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn older_record_json_reads_as_version_0() {
        let rec = parse(V0.as_bytes()).unwrap();
        assert_eq!(rec.format, FORMAT);
        assert_eq!(rec.format_version, VERSION);
        assert_eq!(rec.host, "unknown");
        let svc = rec.cgroups.iter().find(|c| c.path == "/svc").unwrap();
        assert!(svc.wait.causes.throttled_ns > 0);
        assert!(svc.wait.runnable_wait.hdr.starts_with("HISTF"));
        assert!(!svc.wait.runnable_wait.buckets.is_empty());
    }

    #[test]
    fn write_read_round_trip_renders_the_same() {
        let first = parse(V0.as_bytes()).unwrap();
        let again = parse(to_json(&first).unwrap().as_bytes()).unwrap();
        assert_eq!(again, first);
        assert_eq!(
            render(&again, TextOptions::default()),
            render(&first, TextOptions::default())
        );
    }

    #[test]
    fn not_a_dump() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "does not start with a JSON object"),
            (b"\x89PNG\r\n\x1a\n", "not text"),
            (b"[1, 2, 3]", "does not start with a JSON object"),
            (
                br#"{"format": "something-else", "format_version": 1}"#,
                "its format is",
            ),
            (br#"{"hello": "world"}"#, "no \"format\""),
            (br#"{"format": "tracer-dump"}"#, "no format_version"),
        ];
        for (bytes, want) in cases {
            let err = format!("{:#}", parse(bytes).unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn newer_versions_are_refused_with_advice() {
        let newer = v1().replacen(
            &format!("\"format_version\":{VERSION}"),
            &format!("\"format_version\":{}", VERSION + 1),
            1,
        );
        let err = format!("{:#}", parse(newer.as_bytes()).unwrap_err());
        assert!(
            err.contains("newer tracer") && err.contains(&format!("version {}", VERSION + 1)),
            "{err}"
        );
    }

    #[test]
    fn truncation_and_corruption_are_named() {
        let good = v1();
        let err = format!(
            "{:#}",
            parse(&good.as_bytes()[..good.len() / 2]).unwrap_err()
        );
        assert!(err.contains("truncated"), "{err}");
        // A count that disagrees with the histogram.
        let tampered = good.replacen("\"count\":", "\"count\":1", 1);
        let err = format!("{:#}", parse(tampered.as_bytes()).unwrap_err());
        assert!(err.contains("corrupted"), "{err}");
        // A damaged HdrHistogram.
        let tampered = good.replacen("\"hdr\":\"HISTF", "\"hdr\":\"HISTX", 1);
        let err = format!("{:#}", parse(tampered.as_bytes()).unwrap_err());
        assert!(err.contains("corrupted") && err.contains(".hdr"), "{err}");
    }

    /// A host with 200 busy cgroups: long Kubernetes paths, wide histograms,
    /// blame lists as long as the tracer keeps them (8 cgroups, 3 processes
    /// each). The dump stays under 1 MiB.
    #[test]
    fn two_hundred_cgroups_fit_in_a_mebibyte() {
        use tracer_common::hist::LatencyHist;

        use crate::recording::{Blame, BlamedProcess, WaitHistogram};

        let mut rec = parse(V0.as_bytes()).unwrap();
        let template = rec.cgroups[0].clone();
        let mut wide = LatencyHist::ZERO;
        for i in 0..5_000u64 {
            // 1 µs to about 2 s, spread over every bucket in between.
            wide.record(1_000 + (i * i * i) % 2_000_000_000);
        }
        let hist = WaitHistogram::from_hist(&wide);
        assert!(hist.buckets.len() > 200, "{} buckets", hist.buckets.len());
        let blame: Vec<Blame> = (0..8)
            .map(|i| Blame {
                path: format!("/kubepods/burstable/pod{i:032x}/{:064x}", i * 7919),
                id: 1_000 + i,
                ns: 1_000_000 * (i + 1),
                processes: (0..3)
                    .map(|p| BlamedProcess {
                        tgid: 100_000 + p,
                        comm: "java-worker-pool".into(),
                        ns: 100_000 * u64::from(p + 1),
                    })
                    .collect(),
            })
            .collect();
        rec.cgroups = (0..200u64)
            .map(|i| {
                let mut c = template.clone();
                c.path = format!("/kubepods/burstable/pod{i:032x}/{:064x}", i * 104_729);
                c.id = 10_000 + i;
                c.wait.runnable_wait = hist.clone();
                c.on_cpu = hist.clone();
                c.wait.blame = blame.clone();
                c
            })
            .collect();
        let json = to_json(&rec).unwrap();
        eprintln!("a dump of 200 cgroups: {} bytes", json.len());
        assert!(json.len() < 1 << 20, "{} bytes", json.len());
        assert_eq!(parse(json.as_bytes()).unwrap().cgroups.len(), 200);
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Whatever the bytes, the reader answers with a dump or an error.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = parse(&bytes);
            }

            /// A real dump with bytes flipped, dropped or cut off: same.
            #[test]
            fn damaged_dumps_never_panic(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut bytes = v1().into_bytes();
                for (at, byte, kind) in edits {
                    let i = at.index(bytes.len());
                    match kind {
                        0 => bytes[i] = byte,
                        1 => { bytes.remove(i); }
                        _ => bytes.insert(i, byte),
                    }
                }
                let keep = cut.index(bytes.len() + 1);
                let _ = parse(&bytes[..keep]);
            }

            /// Structurally valid JSON with wrong values in the right places.
            #[test]
            fn wrong_values_never_panic(
                count in any::<u64>(), max in any::<u64>(), version in any::<u32>(),
                hdr in "[A-Za-z0-9+/=]{0,64}",
            ) {
                let dump = v1()
                    .replacen("\"count\":", &format!("\"count\":{count},\"x\":"), 1)
                    .replacen("\"max_ns\":", &format!("\"max_ns\":{max},\"y\":"), 1)
                    .replacen("\"hdr\":\"", &format!("\"hdr\":\"{hdr}"), 1)
                    .replacen(&format!("\"format_version\":{VERSION}"), &format!("\"format_version\":{version}"), 1);
                let _ = parse(dump.as_bytes());
            }
        }
    }
}
