//! pvops-selftest: the self-tests a kernel may run after pvops's boot path, kept out of the
//! libraries (a kernel that does not depend on this crate carries none of it).
//!
//! - [`exercise`]: the bootstrap table's frames are reused, a scratch mapping is made and
//!   torn down, and early_ioremap is checked again on the kernel's own table.
//! - [`misuse`]: bad operations on the live table that must be refused with pvops's own
//!   typed errors (early_ioremap, the mapper), and pvops's argument and bookkeeping checks
//!   (the frame allocator, the memory map, the command line) for the host unit tests.
//! - [`verdict`]: what a case expected and got, shared with the Xen conformance cases
//!   (`tests/xen-conformance`).
//!
//! `no_std`, no heap: it runs inside guest-demo on bare QEMU and under Xen, and in the host
//! tests on the simulated machine and the Xen model.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod exercise;
pub mod misuse;
pub mod verdict;

pub use verdict::{CaseResult, Status, Tally, Text, Verdict};
