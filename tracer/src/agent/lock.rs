//! One agent per host: an exclusive `flock` on a lock file, held for the
//! agent's life (the kernel releases it when the process dies, however it dies).

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
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
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
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
}
