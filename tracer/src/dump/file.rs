//! Dump files on disk: read only when regular and bounded in size.

use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail, ensure};

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
    read_open(path, OpenOptions::new().read(true))
}

/// Opens `path` with `options` (never blocking: the file may have been
/// replaced by a FIFO since it was looked at), checks again what was opened,
/// and reads at most [`MAX_BYTES`] of it.
fn read_open(path: &Path, options: &mut OpenOptions) -> anyhow::Result<Vec<u8>> {
    let file: File = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
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

/// Writes `rec` to `path` (through a temporary file, so that an interrupted
/// write never leaves half a dump under the final name).
pub fn write(path: &Path, rec: &crate::recording::Recording) -> anyhow::Result<()> {
    let json = super::to_json(rec)?;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("json")
    ));
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
