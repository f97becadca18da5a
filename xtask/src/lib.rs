//! The pvops harness as a library: building kernels, booting any kernel ELF on bare QEMU or
//! under Xen ([`harness`]), and the Xen + dom0 builder behind it ([`xen`]).
//!
//! Used by the `xtask` binary (`cargo xtask build | demo | run | test | bench | miri`) and by the
//! `pvops-run` binary, the cargo runner for kernels outside this repository.

pub mod harness;
pub mod kernel;
pub mod native;
pub mod util;
pub mod xen;
