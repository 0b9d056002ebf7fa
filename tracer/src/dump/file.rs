//! Dump files on disk: read only when regular and bounded in size; written
//! atomically, privately, and never through a symbolic link.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail, ensure};

/// Dumps larger than this are refused before anything is read. A dump of 200
/// busy cgroups with wide histograms and full blame lists is about 1 MB (5 KB a
/// cgroup); 64 MiB holds that for 12,000 cgroups, three times the 4,096 the
/// kernel's map holds by default, so that an agent window in which cgroups
/// came and went still reads. The reader's memory is about twice the file's
/// size (measured: see docs/dump-format.md).
pub const MAX_BYTES: u64 = 64 << 20;

/// What a file is, for a message, when it is not a regular file.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a file"
    }
}

fn regular_and_bounded(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    if !meta.is_file() {
        bail!(
            "{} is not a regular file ({}): a tracer dump is a file",
            path.display(),
            kind(meta.file_type())
        );
    }
    ensure!(
        meta.len() <= MAX_BYTES,
        "{} is {} bytes: too large to be a tracer dump (at most {} MiB)",
        path.display(),
        meta.len(),
        MAX_BYTES >> 20
    );
    Ok(())
}

/// The bytes of `path`, a regular file of at most [`MAX_BYTES`]. Anything else
/// (a FIFO, a device, a directory) is refused from its metadata without being
/// opened: opening a FIFO waits for a writer, and a device may never end.
pub(super) fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    regular_and_bounded(path, &meta)?;
    read_open(path, 0)
}

/// [`read_bounded`] for a file in a directory root writes to: a symbolic link
/// is refused, not followed.
pub(super) fn read_bounded_nofollow(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    regular_and_bounded(path, &meta)?;
    read_open(path, libc::O_NOFOLLOW)
}

/// Opens `path` for reading with `extra_flags` (never blocking: the file may
/// have been replaced by a FIFO since it was looked at), checks again what
/// was opened, and reads at most [`MAX_BYTES`] of it.
fn read_open(path: &Path, extra_flags: i32) -> anyhow::Result<Vec<u8>> {
    let mut options = OpenOptions::new();
    options.read(true);
    let file: File = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | extra_flags)
        .open(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file.metadata()?;
    regular_and_bounded(path, &meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        bytes.len() as u64 <= MAX_BYTES,
        "{} grew beyond {} MiB while it was read",
        path.display(),
        MAX_BYTES >> 20
    );
    Ok(bytes)
}

/// Dumps are readable by their owner only: they name processes, cgroups and
/// the host, and whoever runs the tracer is usually root. (0640 would give
/// the file's group, root's own group by default, nothing it lacks.) To hand
/// a dump to someone, copy it or `chmod` it.
const MODE: u32 = 0o600;

/// Refuses a symbolic link or anything but a regular file at `path`: root
/// writes dumps, and must not be made to write through a link planted there.
fn refuse_links(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "{} is a symbolic link: refusing to write a dump through it",
            path.display()
        ),
        Ok(meta) if !meta.is_file() => bail!(
            "{} exists and is not a regular file ({})",
            path.display(),
            kind(meta.file_type())
        ),
        _ => Ok(()),
    }
}

/// A new file beside `path`, hidden, created exclusively (a link or file
/// already there is never opened, only another name tried) and never
/// through a symbolic link, with [`MODE`].
fn create_temporary(path: &Path) -> anyhow::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", path.display()))?
        .to_string_lossy();
    let mut last = None;
    for _ in 0..16 {
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let tmp = path.with_file_name(format!(".{name}.{}-{unique:08x}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
            }
        }
    }
    Err(last.map_or_else(|| anyhow!("no temporary name"), anyhow::Error::from))
        .with_context(|| format!("cannot create a temporary file beside {}", path.display()))
}

/// Removes the temporary file unless the write got to the rename.
struct Temporary(Option<PathBuf>);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Checks, before a session, that a dump can be written to `path` later:
/// its directory takes a new file, and `path` is not a link.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    refuse_links(path)?;
    let (tmp, file) = create_temporary(path)?;
    drop(file);
    drop(Temporary(Some(tmp)));
    Ok(())
}

/// Writes `rec` to `path`: see [`write_with`].
pub fn write(path: &Path, rec: &crate::recording::Recording) -> anyhow::Result<()> {
    let json = super::to_json(rec)?;
    write_with(path, |file| file.write_all(json.as_bytes()))
}

/// Writes a file atomically: `fill` writes a temporary file in the same
/// directory, which is synced to disk and renamed over `path`, and the
/// directory synced, so that `path` holds either what it held or all of the
/// new content, also after a crash. On any error the temporary file is
/// removed. `path` must not be a symbolic link.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    refuse_links(path)?;
    let (tmp, mut file) = create_temporary(path)?;
    let guard = Temporary(Some(tmp.clone()));
    fill(&mut file)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    std::mem::forget(guard);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The rename is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
