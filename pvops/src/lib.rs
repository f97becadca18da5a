//! pvops for kernel authors: one dependency that links the backends you enable (cargo features
//! `native`, `xen` and `pvh` (Xen PVH domUs: the native MMU on Xen's platform), all on by
//! default) and [`kernel!`], which replaces the boot boilerplate
//! every pvops kernel would otherwise repeat.
//!
//! A complete kernel (`src/main.rs`; its `build.rs` is `pvops_build::link()`, see the README's
//! "Use pvops in your kernel"):
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! use core::fmt::Write;
//! use pvops::{Kernel, Platform};
//!
//! pvops::kernel!(tag = "MY-KERNEL", main = my_main);
//!
//! /// Runs after the generic boot path: the kernel's own page table is live, the bootstrap
//! /// table is retired, the frame allocator is `k.state.alloc`.
//! fn my_main<P: Platform>(k: Kernel<'_, P>) -> Result<&'static str, &'static str> {
//!     let _ = writeln!(k.console, "hello from {} with {} MiB mapped", P::NAME, k.report.lowmem_mapped >> 20);
//!     Ok("greeted=1")
//! }
//! ```
//!
//! That kernel boots on bare QEMU (multiboot1) and as a Xen PV guest from one ELF and prints
//! `MY-KERNEL: PASS backend=<native|xen> platform=<bare|xen-pv|..> greeted=1`, or
//! `MY-KERNEL: FAIL backend=<name> platform=<platform> stage=<stage>: <reason>` when the boot path or `my_main` fails, and the backend ends the run
//! with the matching exit (QEMU's debug-exit status, a Xen poweroff or crash).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

use core::fmt::{Display, Write};

#[cfg(feature = "native")]
pub use backend_native;
#[cfg(feature = "xen")]
pub use backend_xen;
/// Linked with feature `pvh`: its entry runs the main registered for the native backend.
#[cfg(feature = "pvh")]
pub use platform_pvh;
pub use pvops_core;

pub use pvops_core::boot::{set_stage, BootInfo, BootReport, BootState, KernelStage, Stage};
pub use pvops_core::options::BootOptions;
pub use pvops_core::registry::{fatal, Handoff, Outcome};
pub use pvops_core::Platform;

/// What the kernel's main gets once the generic boot path is done.
pub struct Kernel<'a, P: Platform> {
    /// The backend (MMU operations and machine access).
    pub platform: &'a mut P,
    /// What the backend's entry learned: memory map, command line, image and table frames.
    pub info: &'a BootInfo<'a>,
    /// The console (serial on bare metal, the console ring or console_io under Xen).
    pub console: &'a mut dyn Write,
    /// The boot state: the frame allocator (`state.alloc`) and the early page-table pool.
    pub state: &'static mut BootState,
    /// What the boot path did (root table, lowmem mapped, per-stage cycles and hypercalls).
    pub report: BootReport<P::Counters>,
    /// The `pvops.*` options parsed from the command line.
    pub options: BootOptions,
}

/// The stage a fault in the kernel's main reports unless the kernel names its own
/// (`set_stage(Stage::Kernel(&MINE))`).
pub static KERNEL_MAIN: KernelStage = KernelStage::new("kernel_main");

/// Runs a kernel: parses the options, takes the boot state, runs the generic boot path, then
/// `main`, and prints the result line `<TAG>: PASS backend=<name> platform=<platform> <summary>`
/// or `<TAG>: FAIL backend=<name> platform=<platform> stage=<stage>: <reason>`. What [`kernel!`] expands to; call it
/// yourself from a main registered with [`register_kernel!`] if you need the [`Handoff`] first.
pub fn run_kernel<P: Platform, S: Display, E: Display>(
    h: Handoff<'_, P>,
    main: impl FnOnce(Kernel<'_, P>) -> Result<S, E>,
) -> Outcome {
    let Handoff {
        platform,
        info,
        console,
    } = h;
    let tag = pvops_core::registry::kernel_tag();
    let platform_name = info.platform.name;
    let fail = |console: &mut dyn Write, stage: Stage, reason: &dyn Display| {
        let _ = writeln!(
            console,
            "{tag}: FAIL backend={} platform={platform_name} stage={}: {reason}",
            P::NAME,
            stage.name()
        );
        Outcome::Fail
    };
    let options = match BootOptions::parse(info.cmdline, platform) {
        Ok(o) => o,
        Err(e) => return fail(console, Stage::Banner, &e),
    };
    let Some(state) = pvops_core::boot::take_boot_state() else {
        return fail(console, Stage::Entry, &"kernel main entered twice");
    };
    let report = match pvops_core::boot::boot(platform, info, options, state, console) {
        Ok(r) => r,
        Err(e) => {
            // A BootError prints as `stage=<stage>: <reason>`.
            let _ = writeln!(
                console,
                "{tag}: FAIL backend={} platform={platform_name} {e}",
                P::NAME
            );
            return Outcome::Fail;
        }
    };
    set_stage(Stage::Kernel(&KERNEL_MAIN));
    let result = main(Kernel {
        platform,
        info,
        console: &mut *console,
        state,
        report,
        options,
    });
    match result {
        Ok(summary) => {
            let _ = writeln!(
                console,
                "{tag}: PASS backend={} platform={platform_name} {summary}",
                P::NAME
            );
            Outcome::Pass
        }
        Err(e) => fail(console, pvops_core::boot::current_stage(), &e),
    }
}

/// Registers a kernel main, generic over the platform, with every backend this crate links
/// (features `native`, `xen`): `pvops::register_kernel!(my_main);` where
/// `fn my_main<P: pvops::Platform>(h: pvops::Handoff<'_, P>) -> pvops::Outcome`.
/// Adding or removing a backend is a feature of this crate; the kernel's code does not change.
/// Each registration is [`pvops_core::register_kernel_for!`], the one implementation.
#[macro_export]
macro_rules! register_kernel {
    ($main:path) => {
        $crate::__for_native! {
            #[cfg(all(target_arch = "x86", target_os = "none"))]
            $crate::pvops_core::register_kernel_for!(
                $main,
                $crate::backend_native::NATIVE_KERNEL,
                $crate::backend_native::Native
            );
        }
        $crate::__for_xen! {
            #[cfg(all(target_arch = "x86", target_os = "none"))]
            $crate::pvops_core::register_kernel_for!(
                $main,
                $crate::backend_xen::XEN_KERNEL,
                $crate::backend_xen::XenMmu<$crate::backend_xen::RealXen>
            );
        }
    };
}

/// Everything a pvops kernel's crate root needs besides its own code: the result-line tag, a
/// main registered with every linked backend that runs the boot path first ([`run_kernel`]),
/// and the panic handler (which prints `<TAG>: FAIL ... stage=<stage>: <panic message>` and
/// ends the run as a failure through the backend).
///
/// `pvops::kernel!(tag = "MY-KERNEL", main = my_main);` where
/// `fn my_main<P: pvops::Platform>(k: pvops::Kernel<'_, P>) -> Result<S, E>` with `S` (the
/// PASS line's summary) and `E` (the FAIL reason) both `Display`. See the crate docs for a
/// complete kernel.
#[macro_export]
macro_rules! kernel {
    (tag = $tag:expr, main = $main:path $(,)?) => {
        $crate::pvops_core::kernel_tag!($tag);

        fn __pvops_kernel_main<P: $crate::Platform>(h: $crate::Handoff<'_, P>) -> $crate::Outcome {
            $crate::run_kernel(h, $main)
        }
        $crate::register_kernel!(__pvops_kernel_main);

        #[cfg(all(target_arch = "x86", target_os = "none"))]
        #[panic_handler]
        fn __pvops_panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::fatal(::core::format_args!("{info}"))
        }
    };
}

#[cfg(feature = "native")]
#[doc(hidden)]
#[macro_export]
macro_rules! __for_native {
    ($($t:tt)*) => { $($t)* };
}
#[cfg(not(feature = "native"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __for_native {
    ($($t:tt)*) => {};
}
#[cfg(feature = "xen")]
#[doc(hidden)]
#[macro_export]
macro_rules! __for_xen {
    ($($t:tt)*) => { $($t)* };
}
#[cfg(not(feature = "xen"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __for_xen {
    ($($t:tt)*) => {};
}
