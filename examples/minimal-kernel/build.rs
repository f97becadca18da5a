//! Links the kernel with pvops's linker script (and checks the target and toolchain).
fn main() {
    pvops_build::link();
}
