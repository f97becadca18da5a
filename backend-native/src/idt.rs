//! An IDT for the 32 CPU exceptions: each one prints vector, error code, cr2 and eip as a
//! FAIL line and ends the run (no triple fault). Vector 8 (double fault) is a task gate to
//! its own stack (see `tss`); a fault while a fault is being reported ends the run at once,
//! through the entry's own console and exit ([`TrapPlatform`]).

use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::boot::current_stage;
use pvops_core::registry::{fatal, kernel_tag};
use pvops_core::trap::TrapFrame;

pvops_core::trap_stubs!(pvops_native_trap_stubs, 32, pvops_native_trap);

const KERNEL_CS: u32 = 0x08;
const INTERRUPT_GATE: u32 = 0x8E00;

struct Idt(core::cell::UnsafeCell<[u64; 32]>);
// SAFETY: written once by `install` on the only CPU, before interrupts can occur.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(core::cell::UnsafeCell::new([0; 32]));

/// What the trap handling needs from the entry that runs the native MMU in ring 0 (bare
/// metal, Xen PVH) for the one case it cannot hand to the kernel's fatal handler: a fault
/// inside the fault printer.
#[derive(Clone, Copy)]
pub struct TrapPlatform {
    /// The `platform=` of that case's FAIL line.
    pub name: &'static str,
    /// Writes that line to the entry's plainest console (and waits until it is out, where
    /// the console needs a reader).
    pub last_words: fn(core::fmt::Arguments<'_>),
    /// Ends the run as a FAIL through the entry's exit protocol. It must not fault: it also
    /// ends a run whose last line faulted.
    pub fail: fn() -> !,
}

/// Fills and loads the IDT: each of the 32 CPU exceptions ends the run through
/// `pvops_core::registry::fatal` (the running entry's fatal handler) with a FAIL line naming
/// the vector, cr2 for a page fault, and eip; a fault inside that handler ends it through
/// `platform`.
pub(crate) fn install(platform: TrapPlatform) {
    // SAFETY: written once here, before anything can trap; read only by `report`.
    unsafe { *PLATFORM.0.get() = Some(platform) };
    // SAFETY: the stub table is 32 addresses emitted by `trap_stubs!` above.
    let stubs = unsafe { &pvops_native_trap_stubs };
    // SAFETY: single CPU, called once before anything can trap through the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for (gate, stub) in idt.iter_mut().zip(stubs) {
        let low = (stub & 0xFFFF) | (KERNEL_CS << 16);
        let high = (stub & 0xFFFF_0000) | INTERRUPT_GATE;
        *gate = low as u64 | (high as u64) << 32;
    }
    let mut idtr = [0u16; 3];
    idtr[0] = (core::mem::size_of::<[u64; 32]>() - 1) as u16;
    let base = idt.as_ptr() as u32;
    idtr[1] = base as u16;
    idtr[2] = (base >> 16) as u16;
    // SAFETY: idtr describes the static IDT, which lives for the whole run.
    unsafe { core::arch::asm!("lidt ({0})", in(reg) idtr.as_ptr(), options(att_syntax, nostack)) };
}

/// Replaces the gate of `vector` (the double-fault task gate).
pub(crate) fn set_gate(vector: usize, gate: u64) {
    // SAFETY: single CPU; the IDT entry is written whole before anything can use it.
    unsafe { core::ptr::write_volatile(&raw mut (*IDT.0.get())[vector], gate) };
}

/// The entry's [`TrapPlatform`], given to `install`.
struct PlatformCell(core::cell::UnsafeCell<Option<TrapPlatform>>);
// SAFETY: single CPU; written once by `install` before any trap can read it.
unsafe impl Sync for PlatformCell {}
static PLATFORM: PlatformCell = PlatformCell(core::cell::UnsafeCell::new(None));

/// How many fault reports have started (0 = none).
static REPORTS: AtomicU8 = AtomicU8::new(0);

/// Ends the run with a fault's report. The first report goes through the kernel's fatal
/// handler; a fault inside that printer gets one line through the entry's `last_words`
/// (integers only) and its `fail`, and a fault in that line ends the run through `fail`
/// without a word: never a recursion.
pub(crate) fn report(args: core::fmt::Arguments<'_>) -> ! {
    let n = REPORTS.fetch_add(1, Ordering::AcqRel);
    if n == 0 {
        fatal(args)
    }
    // SAFETY: written once by `install`, before the first trap.
    let Some(platform) = (unsafe { *PLATFORM.0.get() }) else {
        // No entry installed the IDT: nothing can have trapped through it.
        crate::entry::exit(crate::EXIT_FAIL)
    };
    if n == 1 {
        (platform.last_words)(format_args!(
            "{}: FAIL backend=native platform={} stage={}: fault inside the fault printer: {}\n",
            kernel_tag(),
            platform.name,
            current_stage().name(),
            args
        ));
    }
    (platform.fail)()
}

extern "C" fn pvops_native_trap(f: &TrapFrame) -> ! {
    if f.vector == 14 {
        // SAFETY: reading cr2 in ring 0.
        let cr2 = unsafe { x86::controlregs::cr2() };
        report(format_args!(
            "page fault cr2={:#010x} eip={:#010x} error={:#x}",
            cr2, f.eip, f.error
        ))
    }
    report(format_args!(
        "exception vector={} error={:#x} eip={:#010x} cs={:#x} eflags={:#x}",
        f.vector, f.error, f.eip, f.cs, f.eflags
    ))
}
