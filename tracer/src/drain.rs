//! Reads and deletes every entry of a BPF hash map, atomically per entry, in
//! a few system calls: `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (Linux 5.6+), which
//! aya does not wrap. A program adding to an entry after it was taken creates
//! a new one, so nothing is counted twice or lost; the map then only has to
//! hold what accumulates between two drains.
//!
//! Where the kernel lacks batch operations, [`drain`] falls back to one
//! lookup and one delete per key: what a program adds in between is lost (a
//! few microseconds' worth, per entry and drain).

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap as BpfHashMap, Map};

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries taken per system call.
const CHUNK: usize = 1024;

/// Takes every entry out of a hash map.
pub fn drain<K: aya::Pod, V: aya::Pod>(map: &mut Map) -> anyhow::Result<Vec<(K, V)>> {
    let fd = match &*map {
        Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
        _ => bail!("only hash maps can be drained"),
    };
    match drain_batched::<K, V>(fd) {
        Ok(entries) => Ok(entries),
        // No batch operations (before 5.6): one key at a time.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
            let mut map: BpfHashMap<_, K, V> = BpfHashMap::try_from(map)?;
            let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                if let Ok(value) = map.get(&key, 0) {
                    out.push((key, value));
                }
                let _ = map.remove(&key);
            }
            Ok(out)
        }
        Err(e) => Err(e).context("BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
    }
}

fn drain_batched<K: aya::Pod, V: aya::Pod>(fd: i32) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * size_of::<K>()];
        let mut values = vec![0u8; chunk * size_of::<V>()];
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers sized for `count` entries
        // and at `token` / `next`, all alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        if matches!(&err, Some(e) if e.raw_os_error() == Some(libc::ENOSPC)) {
            // A hash bucket holds more entries than a chunk: retry with room.
            chunk *= 4;
            continue;
        }
        // Entries come back even with ENOENT (the last chunk).
        let n = (attr.count as usize).min(chunk);
        for i in 0..n {
            // SAFETY: the kernel wrote `n` keys and values of these sizes; the
            // types are plain data.
            let (k, v) = unsafe {
                (
                    std::ptr::read_unaligned(keys.as_ptr().add(i * size_of::<K>()).cast::<K>()),
                    std::ptr::read_unaligned(values.as_ptr().add(i * size_of::<V>()).cast::<V>()),
                )
            };
            out.push((k, v));
        }
        match err {
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
            None => {
                token = next;
                first = false;
            }
        }
    }
}
