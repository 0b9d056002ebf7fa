// Rebuild the eBPF object when the linker changes: a new bpf-linker can change the
// emitted BTF and code even when no source file did.
fn main() {
    let linker = which::which("bpf-linker");
    if let Ok(path) = linker {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
