//! backend-xen: pvops as a 32-bit PAE Xen PV guest (work in progress).
#![no_std]

/// Registers a kernel main for the Xen backend (not linked yet).
#[macro_export]
macro_rules! register_kernel {
    ($main:ident) => {};
}
