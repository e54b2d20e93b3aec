//! Links `corral` with packed relative relocations (`DT_RELR`, glibc ≥ 2.36): every `corral vmm`
//! process starts from this binary, and its ~29,000 relative relocations as plain `RELA`
//! entries are ~0.7 MiB the dynamic loader reads (and keeps resident) in each one before
//! `main`; packed, they take a few KiB. The binary stays position-independent (ASLR).

fn main() {
    println!("cargo:rustc-link-arg-bin=corral=-Wl,-z,pack-relative-relocs");
}
