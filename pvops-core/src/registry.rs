//! Link-time registry (linkme): which backends are linked, and which kernel they start.
//!
//! Each backend crate adds a [`BackendDescriptor`] to [`BACKENDS`]; a kernel adds one
//! [`KernelDescriptor`] to [`KERNELS`] and registers its generic main with each backend's own
//! entry slice (see the backends' `register_kernel!`), so the boot path stays statically
//! dispatched: the registry decides what runs, not a vtable on the hot path.

use linkme::distributed_slice;

/// A linked backend.
#[derive(Debug)]
pub struct BackendDescriptor {
    /// Short name (`native`, `xen`).
    pub name: &'static str,
    /// How the backend is entered (e.g. "multiboot1, protected mode").
    pub entry: &'static str,
}

/// The kernel that runs on whichever backend booted.
#[derive(Debug)]
pub struct KernelDescriptor {
    /// The tag of its result lines, e.g. `PVOPS-DEMO` in `PVOPS-DEMO: PASS backend=native`.
    pub tag: &'static str,
}

/// Every linked backend.
#[distributed_slice]
pub static BACKENDS: [BackendDescriptor];

/// The registered kernel (one expected).
#[distributed_slice]
pub static KERNELS: [KernelDescriptor];

/// The tag of the registered kernel's result lines (`PVOPS` when none is registered).
pub fn kernel_tag() -> &'static str {
    KERNELS.first().map_or("PVOPS", |k| k.tag)
}

/// Writes the names of the linked backends, space-separated.
pub fn write_backend_names(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    for (i, b) in BACKENDS.iter().enumerate() {
        if i > 0 {
            w.write_str(" ")?;
        }
        w.write_str(b.name)?;
    }
    Ok(())
}
