//! Links guest-demo with pvops's linker script, and keeps the two codegen probes (nothing
//! calls them; `cargo xtask test` disassembles them) as roots of the linker's section GC.
fn main() {
    pvops_build::link();
    for probe in ["pvops_probe_set_pte_framework", "pvops_probe_set_pte_raw"] {
        println!("cargo:rustc-link-arg-bins=--undefined={probe}");
    }
}
