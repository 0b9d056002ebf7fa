//! One agent per host: an exclusive `flock` on a lock file, held for the
//! agent's life (the kernel releases it when the process dies, however it dies).

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};

/// Held while the agent runs.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code, reason = "holds the flock until dropped")] File);

pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Root opens it: never through a symbolic link planted at its path,
    // which would truncate the link's target and write a pid into it.
    let mut file = match File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "the lock file {} is a symbolic link: refusing to open it",
            path.display()
        ),
        other => other.with_context(|| format!("cannot open the lock file {}", path.display()))?,
    };
    if !file.metadata()?.is_file() {
        bail!("the lock file {} is not a regular file", path.display());
    }
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        bail!(
            "another tracer agent is running on this host (pid {}, lock {}); stop it first",
            holder.trim(),
            path.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(Lock(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.lock");
        let first = acquire(&path).unwrap();
        let err = acquire(&path).unwrap_err().to_string();
        assert!(err.contains("another tracer agent"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(acquire(&path).is_ok(), "released on drop");
    }

    /// The agent runs as root: a symbolic link planted at the lock's path is
    /// not followed (following it would truncate its target and write a pid
    /// into it).
    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("agent.lock");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = format!("{:#}", acquire(&path).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
