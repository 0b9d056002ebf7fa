//! Builds the eBPF object (the `tracer-ebpf` crate, for the bpf target, with the
//! nightly toolchain and bpf-linker) and leaves it in OUT_DIR, from where
//! `src/programs/store.rs` embeds it in the binary.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("no parent of {manifest_dir}"))?
        .join("tracer-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; `cargo xtask setup` installs what they need \
         (nightly with rust-src, bpf-linker, LLVM 22)",
    )
}
