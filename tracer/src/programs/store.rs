//! Where the programs keep their state, and the object built for each way.

use crate::btf::Btf;

/// The objects built from `tracer-ebpf` by build.rs: the same programs with
/// their state kept two ways (see [`Store`]).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
static OBJECT_LEGACY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-legacy"));

/// Where the programs keep their state, by what the kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// Task local storage, and statistics entries allocated when a cgroup is
    /// first seen (6.1+: `bpf_mem_alloc` makes that safe from the scheduler).
    TaskStorage,
    /// A hash map keyed by thread id, and preallocated statistics maps
    /// (before 6.1; task storage for tracing programs needs 5.12).
    Legacy,
}

impl Store {
    /// Chosen from the kernel's BTF: `bpf_mem_alloc` came in 6.1, after task
    /// storage for tracing programs (5.12).
    pub fn for_kernel(btf: &Btf) -> Self {
        if btf.has_struct("bpf_mem_alloc") {
            Self::TaskStorage
        } else {
            Self::Legacy
        }
    }

    pub(super) fn object(self) -> &'static [u8] {
        match self {
            Self::TaskStorage => OBJECT,
            Self::Legacy => OBJECT_LEGACY,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::TaskStorage => "task local storage",
            Self::Legacy => {
                "a hash map by thread id and preallocated statistics (kernel before 6.1)"
            }
        }
    }
}

/// Memory the preallocated per-cgroup statistics may take on kernels before
/// 6.1: it bounds the cgroups traced there (7,800 entries; the default
/// `--max-cgroups`, 4,096, takes 35 MB).
pub(super) const LEGACY_STATS_BUDGET: usize = 64 << 20;

/// Where the programs keep their state (`--store`, for testing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    /// From the kernel's BTF ([`Store::for_kernel`]).
    #[default]
    Auto,
    /// The pre-6.1 object, whatever the kernel.
    Legacy,
}

impl StoreChoice {
    pub fn resolve(self, btf: &Btf) -> Store {
        match self {
            Self::Auto => Store::for_kernel(btf),
            Self::Legacy => Store::Legacy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::tests::kernel;

    #[test]
    fn the_state_store_follows_the_allocator() {
        assert_eq!(Store::for_kernel(&kernel(&[], true)), Store::TaskStorage);
        assert_eq!(Store::for_kernel(&kernel(&[], false)), Store::Legacy);
    }
}
