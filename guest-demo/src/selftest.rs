//! `demo.selftest=<name>`: re-creates, after the boot path, what a real kernel does to the
//! trap handling of the native backend in ring 0 (bare metal and Xen PVH; under Xen PV the
//! line says it was skipped):
//!
//! - `irq`: runs with interrupts enabled for about 400 M cycles (several PIT ticks on bare
//!   metal). The 8259s must be masked: the BIOS leaves IRQ0 at vector 8, where it looked like
//!   a double fault. (A PVH domU has no 8259 and no PIT: nothing may arrive either.) Prints
//!   `selftest irq: ...` and the run goes on.
//! - `double_fault`: a push with esp in unmapped memory: the page fault cannot be delivered
//!   on that stack, so the CPU raises a double fault, which must run on its own stack and
//!   print (`double fault` in the FAIL line) instead of resetting the machine.
//! - `fault_in_printer`: the fault printer itself faults (a fatal handler that reads
//!   unmapped memory): the run must end with `fault inside the fault printer` through the
//!   entry's own exit, not recurse (nor, under PVH, halt: Xen powers a halted domain off).

use core::fmt::Write;

/// A self-test named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Interrupts enabled for a while.
    Irq,
    /// A double fault.
    DoubleFault,
    /// A fault inside the fault printer.
    FaultInPrinter,
}

/// The self-test `demo.selftest=<name>` asks for, if any (an unknown name is ignored).
pub fn requested(cmdline: &str) -> Option<SelfTest> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|w| match w.strip_prefix("demo.selftest=")? {
            "irq" => Some(SelfTest::Irq),
            "double_fault" => Some(SelfTest::DoubleFault),
            "fault_in_printer" => Some(SelfTest::FaultInPrinter),
            _ => None,
        })
}

/// Cycles with interrupts enabled (several 55 ms PIT periods under QEMU TCG).
const IRQ_WINDOW_CYCLES: u64 = 400_000_000;
/// An address the kernel's table does not map (the direct map starts at 0xC0000000).
const UNMAPPED: usize = 0x0000_0ff0;

/// Runs `test` on the backend named `backend`; the fault tests do not return.
pub fn run(test: SelfTest, backend: &str, console: &mut dyn Write) {
    if backend != "native" {
        let _ = writeln!(
            console,
            "selftest {test:?}: native only, skipped on {backend}"
        );
        return;
    }
    match test {
        SelfTest::Irq => {
            // SAFETY: rdtsc has no side effects; sti/cli only let pending interrupts in,
            // which the backend masked at the 8259s (and a stray one would be reported).
            let cycles = unsafe {
                let t0 = core::arch::x86::_rdtsc();
                core::arch::asm!("sti", options(nomem, nostack));
                while core::arch::x86::_rdtsc().wrapping_sub(t0) < IRQ_WINDOW_CYCLES {
                    core::hint::spin_loop();
                }
                core::arch::asm!("cli", options(nomem, nostack));
                core::arch::x86::_rdtsc().wrapping_sub(t0)
            };
            let _ = writeln!(
                console,
                "selftest irq: interrupts enabled for {cycles} cycles, none delivered"
            );
        }
        SelfTest::DoubleFault => {
            // SAFETY: deliberately fatal: the push faults and the fault cannot be pushed;
            // the double-fault task ends the run.
            unsafe {
                core::arch::asm!(
                    "mov {0}, %esp",
                    "push %eax",
                    in(reg) UNMAPPED,
                    options(att_syntax, noreturn)
                )
            }
        }
        SelfTest::FaultInPrinter => {
            pvops_core::registry::set_fatal_handler(faulting_printer);
            // SAFETY: deliberately fatal: reading unmapped memory raises a page fault.
            unsafe { core::ptr::read_volatile(UNMAPPED as *const u32) };
        }
    }
}

/// A fatal handler that faults before it prints anything.
fn faulting_printer(_: core::fmt::Arguments<'_>) -> ! {
    // SAFETY: deliberately faults (see `run`).
    unsafe { core::ptr::read_volatile((UNMAPPED + 4) as *const u32) };
    loop {
        core::hint::spin_loop();
    }
}
