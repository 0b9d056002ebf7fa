//! Rolling dumps: the agent writes one per window (and one on SIGUSR1, and a
//! last one when it stops) and keeps only the newest few, by the windows they
//! record rather than by their names.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

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

/// The dumps this agent wrote. They are newer than any other dump in the
/// directory whatever the windows recorded in those say: an earlier agent
/// may have run with a clock that was since set back.
#[derive(Debug, Default)]
pub struct Written(HashSet<PathBuf>);

/// Writes `rec` into `dir` as `tracer-<end time>-<why>.json` (with `-1`,
/// `-2`, ... if a dump of the same second is there) and removes all but the
/// newest `keep` dumps there. Returns the file written.
pub fn write_rolling(
    dir: &Path,
    rec: &Recording,
    why: &str,
    keep: usize,
    written: &mut Written,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let end = rec.started_unix_ns.saturating_add(rec.duration_ns) / 1_000_000_000;
    let base = format!("tracer-{}-{why}", stamp(end));
    let path = (0..1_000)
        .map(|n| match n {
            0 => dir.join(format!("{base}.json")),
            n => dir.join(format!("{base}-{n}.json")),
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .ok_or_else(|| anyhow::anyhow!("1,000 dumps named {base} in {}", dir.display()))?;
    dump::write(&path, rec)?;
    written.0.insert(path.clone());
    prune(dir, keep, written);
    Ok(path)
}

/// Removes all but the newest `keep` dumps in `dir`: this agent's are the
/// newest, then the others by the end of the window each records
/// (`started_unix_ns + duration_ns`, which a clock step during the agent's
/// life does not move). What does not read as a tracer dump (another
/// file, a damaged one, a symbolic link, a directory) is left alone.
fn prune(dir: &Path, keep: usize, written: &mut Written) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dumps: Vec<(bool, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("tracer-") && n.ends_with(".json"))
        })
        .filter_map(|e| {
            let path = e.path();
            let end = dump::window_end(&path)?;
            Some((written.0.contains(&path), end, path))
        })
        .collect();
    // Oldest first.
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep.max(1));
    for (_, _, old) in &dumps[..excess] {
        let _ = std::fs::remove_file(old);
        written.0.remove(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::tests::listing as names;

    #[test]
    fn stamps() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        assert_eq!(stamp(1_795_312_270), "20261122T015110Z");
        assert_eq!(stamp(4_102_444_799), "20991231T235959Z");
    }

    fn fixture() -> Recording {
        dump::parse(include_bytes!("../../tests/fixtures/dump-v1.json")).unwrap()
    }

    /// A dump of the window ending at `end_secs`, as an earlier agent wrote
    /// it, under `name`.
    fn earlier(dir: &Path, name: &str, end_secs: u64) -> PathBuf {
        let mut rec = fixture();
        rec.started_unix_ns = end_secs * 1_000_000_000 - rec.duration_ns;
        let path = dir.join(name);
        dump::write(&path, &rec).unwrap();
        path
    }

    /// This agent's dumps of three windows, ending in 2027, keeping 3.
    fn three_windows(dir: &Path) -> Vec<PathBuf> {
        let mut ours = Written::default();
        let mut rec = fixture();
        (1..=3)
            .map(|i| {
                rec.started_unix_ns = (1_800_000_000 + i * 60) * 1_000_000_000;
                write_rolling(dir, &rec, "periodic", 3, &mut ours).unwrap()
            })
            .collect()
    }

    /// Pruning goes by the window each dump records, not by its name, and
    /// leaves alone what it cannot read as a dump: a foreign file, a broken
    /// dump, a symbolic link, a directory.
    #[test]
    fn prunes_by_the_window_in_the_dump_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Named for 2099, but its window ended in 2027.
        let misnamed = earlier(d, "tracer-20990101T000000Z-periodic.json", 1_800_000_000);
        std::fs::write(d.join("tracer-notes.json"), "not a dump").unwrap();
        std::fs::write(d.join("tracer-00000000T000000Z-exit.json"), "{\"format\":").unwrap();
        std::os::unix::fs::symlink(&misnamed, d.join("tracer-link.json")).unwrap();
        std::fs::create_dir(d.join("tracer-dir.json")).unwrap();
        let written = three_windows(d);
        assert!(!misnamed.exists(), "{:?}", names(d));
        for kept in &written {
            assert!(kept.exists(), "{kept:?} pruned: {:?}", names(d));
        }
        for foreign in [
            "tracer-notes.json",
            "tracer-00000000T000000Z-exit.json",
            "tracer-link.json",
            "tracer-dir.json",
        ] {
            assert!(
                std::fs::symlink_metadata(d.join(foreign)).is_ok(),
                "{foreign} removed: {:?}",
                names(d)
            );
        }
    }

    /// The clock was set back since an earlier agent wrote its dumps: they
    /// claim later windows than this agent's, which must not be pruned for
    /// it. This agent's dumps are the newest, whatever the clock said before.
    #[test]
    fn a_clock_set_back_does_not_prune_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let before: Vec<PathBuf> = (0..3)
            .map(|i| {
                let end = 1_900_000_000 + i * 60;
                earlier(d, &format!("tracer-{}-periodic.json", stamp(end)), end)
            })
            .collect();
        let written = three_windows(d);
        assert!(written.iter().all(|w| w.exists()), "{:?}", names(d));
        assert!(before.iter().all(|b| !b.exists()), "{:?}", names(d));
    }

    /// Two dumps of one second (a signal just after a periodic one, say) are
    /// both kept.
    #[test]
    fn dumps_of_the_same_second_do_not_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut ours = Written::default();
        let rec = fixture();
        let a = write_rolling(dir.path(), &rec, "signal", 5, &mut ours).unwrap();
        let b = write_rolling(dir.path(), &rec, "signal", 5, &mut ours).unwrap();
        assert_ne!(a, b);
        assert!(a.exists() && b.exists(), "{:?}", names(dir.path()));
    }

    #[test]
    fn keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = dump::parse(include_bytes!("../../tests/fixtures/dump-v1.json")).unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        let mut written = Vec::new();
        let mut ours = Written::default();
        for i in 0..5 {
            rec.started_unix_ns = (1_800_000_000 + i * 60) * 1_000_000_000;
            written.push(write_rolling(dir.path(), &rec, "periodic", 3, &mut ours).unwrap());
        }
        let left = names(dir.path());
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(left.contains(&"unrelated.txt".to_owned()));
        for kept in &written[2..] {
            assert!(kept.exists());
            dump::read(kept).unwrap();
        }
        assert!(!written[0].exists() && !written[1].exists());
    }
}
