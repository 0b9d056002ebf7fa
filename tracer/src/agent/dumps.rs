//! Rolling dumps: the agent writes one per window (and one on SIGUSR1, and a
//! last one when it stops) and keeps only the newest few.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{dump, recording::Recording};

/// `2026-11-22T01:57:00Z` as `20261122T015700Z`: UTC, sortable, no colons.
pub fn stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes `rec` into `dir` as `tracer-<end time>-<why>.json` and removes all but
/// the newest `keep` dumps there. Returns the file written.
pub fn write_rolling(
    dir: &Path,
    rec: &Recording,
    why: &str,
    keep: usize,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let end = (rec.started_unix_ns + rec.duration_ns) / 1_000_000_000;
    let path = dir.join(format!("tracer-{}-{why}.json", stamp(end)));
    dump::write(&path, rec)?;
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tracer-") && n.ends_with(".json"))
        })
        .collect();
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep.max(1));
    for old in &dumps[..excess] {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        assert_eq!(stamp(1_795_312_270), "20261122T015110Z");
        assert_eq!(stamp(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = dump::parse(include_bytes!("../../tests/fixtures/dump-v1.json")).unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        let mut written = Vec::new();
        for i in 0..5 {
            rec.started_unix_ns = (1_800_000_000 + i * 60) * 1_000_000_000;
            written.push(write_rolling(dir.path(), &rec, "periodic", 3).unwrap());
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(left.contains(&"unrelated.txt".to_owned()));
        for kept in &written[2..] {
            assert!(kept.exists());
            dump::read(kept).unwrap();
        }
        assert!(!written[0].exists() && !written[1].exists());
    }
}
