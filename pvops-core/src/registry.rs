//! Link-time registry (linkme): which backends are linked, and which kernel they start.
//!
//! Each backend crate adds a [`BackendDescriptor`] to [`BACKENDS`]; a kernel adds one
//! [`KernelDescriptor`] to [`KERNELS`] and registers its generic main with each backend's own
//! entry slice ([`crate::register_kernel_for!`], called by `pvops::register_kernel!`), so the
//! boot path stays statically dispatched: the registry decides what runs, not a vtable on the hot path.

use linkme::distributed_slice;

pub use crate::handoff::{Handoff, Outcome};

/// A linked backend.
#[derive(Debug)]
pub struct BackendDescriptor {
    /// Short name (`native`, `xen`).
    pub name: &'static str,
}

/// The kernel that runs on whichever backend booted.
#[derive(Debug)]
pub struct KernelDescriptor {
    /// The tag of its result lines, e.g. `PVOPS-DEMO` in `PVOPS-DEMO: PASS backend=native`.
    pub tag: &'static str,
}

/// Registers the kernel's result-line tag: `pvops_core::kernel_tag!("MY-KERNEL");` makes the
/// backends' fault and panic lines read `MY-KERNEL: FAIL backend=...`.
#[macro_export]
macro_rules! kernel_tag {
    ($tag:expr) => {
        #[$crate::linkme::distributed_slice($crate::registry::KERNELS)]
        #[linkme(crate = $crate::linkme)]
        static _PVOPS_KERNEL_TAG: $crate::registry::KernelDescriptor =
            $crate::registry::KernelDescriptor { tag: $tag };
    };
}

/// Registers a kernel main with ONE backend's entry slice: the one implementation behind
/// `pvops::register_kernel!` (which calls it for every backend the `pvops` crate links), for
/// a backend of your own (see docs/PORTING.md) or a kernel that names its backends itself.
///
/// `pvops_core::register_kernel_for!(my_main, backend_native::NATIVE_KERNEL, backend_native::Native);`
/// instantiates `fn my_main<P: Platform>(h: Handoff<'_, P>) -> Outcome` for the backend's
/// platform type and adds it to the slice the backend's entry runs (statically dispatched).
#[macro_export]
macro_rules! register_kernel_for {
    ($main:path, $slice:path, $platform:ty) => {
        const _: () = {
            #[$crate::linkme::distributed_slice($slice)]
            #[linkme(crate = $crate::linkme)]
            static KERNEL_ENTRY: fn(
                $crate::registry::Handoff<'_, $platform>,
            ) -> $crate::registry::Outcome = {
                fn entry(h: $crate::registry::Handoff<'_, $platform>) -> $crate::registry::Outcome {
                    $main(h)
                }
                entry
            };
        };
    };
}

/// Every linked backend.
#[distributed_slice]
pub static BACKENDS: [BackendDescriptor];

/// The registered kernel (one expected).
#[distributed_slice]
pub static KERNELS: [KernelDescriptor];

/// The tag of the registered kernel's result lines (`PVOPS` when none is registered).
pub fn kernel_tag() -> &'static str {
    // Miri cannot read the linker's section-boundary symbols behind a linkme slice
    // ("extern static `__start_linkme_KERNELS` is not supported"): under Miri (the host
    // tests' simulated boots, `cargo xtask miri --full`) no kernel is registered.
    #[cfg(miri)]
    {
        "PVOPS"
    }
    #[cfg(not(miri))]
    {
        KERNELS.first().map_or("PVOPS", |k| k.tag)
    }
}

/// Writes the names of the linked backends, space-separated (under Miri, which cannot read
/// a linkme slice, `(not listed under Miri)`).
pub fn write_backend_names(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    #[cfg(miri)]
    {
        w.write_str("(not listed under Miri)")
    }
    #[cfg(not(miri))]
    {
        for (i, b) in BACKENDS.iter().enumerate() {
            if i > 0 {
                w.write_str(" ")?;
            }
            w.write_str(b.name)?;
        }
        Ok(())
    }
}

static FATAL_HANDLER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Installs the running backend's last-resort handler: it prints
/// `<TAG>: FAIL backend=<name> stage=<stage>: <message>` and ends the run as a failure.
pub fn set_fatal_handler(handler: fn(core::fmt::Arguments<'_>) -> !) {
    FATAL_HANDLER.store(handler as *mut (), core::sync::atomic::Ordering::Release);
}

/// Ends the run through the backend's fatal handler (e.g. from a panic handler). Spins if no
/// backend installed one (only possible before any backend entry ran).
pub fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    let h = FATAL_HANDLER.load(core::sync::atomic::Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: the only non-null value ever stored is a `fn(Arguments) -> !` cast to a
        // pointer by `set_fatal_handler`; function and data pointers have one size here.
        let f: fn(core::fmt::Arguments<'_>) -> ! = unsafe { core::mem::transmute(h) };
        f(args)
    }
    loop {
        core::hint::spin_loop();
    }
}
