//! An IDT for the 32 CPU exceptions: each one prints vector, error code, cr2 and eip as a
//! FAIL line and ends the run (no triple fault). Vector 8 (double fault) is a task gate to
//! its own stack (see `tss`); a fault while a fault is being reported ends the run at once.

use crate::serial::Serial;
use core::fmt::Write;
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

/// Fills and loads the IDT: each of the 32 CPU exceptions ends the run through
/// `pvops_core::registry::fatal` (the running entry's fatal handler) with a FAIL line naming
/// the vector, cr2 for a page fault, and eip. For any entry that runs the native MMU in ring 0;
/// `platform` is the `platform=` of the one line a fault inside the fault printer gets.
pub fn install(platform: &'static str) {
    // SAFETY: written once here, before anything can trap; read only by `report`.
    unsafe { *PLATFORM.0.get() = platform };
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

/// The `platform=` of the line a nested fault prints (the entry's, given to `install`).
struct PlatformName(core::cell::UnsafeCell<&'static str>);
// SAFETY: single CPU; written once by `install` before any trap can read it.
unsafe impl Sync for PlatformName {}
static PLATFORM: PlatformName = PlatformName(core::cell::UnsafeCell::new("bare"));

/// How many fault reports have started (0 = none).
static REPORTS: AtomicU8 = AtomicU8::new(0);

/// Ends the run with a fault's report. The first report goes through the kernel's fatal
/// handler; a fault inside that printer gets one line straight to COM1 (integers only), and
/// a fault in that line ends the run without a word: never a recursion.
pub(crate) fn report(args: core::fmt::Arguments<'_>) -> ! {
    match REPORTS.fetch_add(1, Ordering::AcqRel) {
        0 => fatal(args),
        1 => {
            let _ = writeln!(
                Serial,
                "{}: FAIL backend=native platform={} stage={}: fault inside the fault printer: {}",
                kernel_tag(),
                // SAFETY: written once by `install`, before the first trap.
                unsafe { *PLATFORM.0.get() },
                current_stage().name(),
                args
            );
            crate::entry::exit(crate::EXIT_FAIL)
        }
        _ => crate::entry::exit(crate::EXIT_FAIL),
    }
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
