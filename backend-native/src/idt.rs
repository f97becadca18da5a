//! An IDT for the 32 CPU exceptions: each one prints vector, error code, cr2 and eip as a
//! FAIL line and ends the run (no triple fault).

use pvops_core::registry::fatal;

core::arch::global_asm!(
    r#"
    .macro pvops_stub n, err
    .section .text.pvops_native_traps, "ax"
pvops_native_stub_\n:
    .if \err == 0
    push $0
    .endif
    push $\n
    jmp pvops_native_trap_common
    .section .rodata.pvops_native_traps, "a"
    .long pvops_native_stub_\n
    .endm

    .section .rodata.pvops_native_traps, "a"
    .balign 4
    .global pvops_native_trap_stubs
pvops_native_trap_stubs:
    pvops_stub 0, 0
    pvops_stub 1, 0
    pvops_stub 2, 0
    pvops_stub 3, 0
    pvops_stub 4, 0
    pvops_stub 5, 0
    pvops_stub 6, 0
    pvops_stub 7, 0
    pvops_stub 8, 1
    pvops_stub 9, 0
    pvops_stub 10, 1
    pvops_stub 11, 1
    pvops_stub 12, 1
    pvops_stub 13, 1
    pvops_stub 14, 1
    pvops_stub 15, 0
    pvops_stub 16, 0
    pvops_stub 17, 1
    pvops_stub 18, 0
    pvops_stub 19, 0
    pvops_stub 20, 0
    pvops_stub 21, 1
    pvops_stub 22, 0
    pvops_stub 23, 0
    pvops_stub 24, 0
    pvops_stub 25, 0
    pvops_stub 26, 0
    pvops_stub 27, 0
    pvops_stub 28, 0
    pvops_stub 29, 1
    pvops_stub 30, 1
    pvops_stub 31, 0

    .section .text.pvops_native_traps, "ax"
pvops_native_trap_common:
    push %esp
    call pvops_native_trap
6:
    hlt
    jmp 6b
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static pvops_native_trap_stubs: [u32; 32];
}

/// What the stubs push: vector and error code, then the CPU's eip, cs, eflags.
#[repr(C)]
struct TrapFrame {
    vector: u32,
    error: u32,
    eip: u32,
    cs: u32,
    eflags: u32,
}

const KERNEL_CS: u32 = 0x08;
const INTERRUPT_GATE: u32 = 0x8E00;

struct Idt(core::cell::UnsafeCell<[u64; 32]>);
// SAFETY: written once by `install` on the only CPU, before interrupts can occur.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(core::cell::UnsafeCell::new([0; 32]));

/// Fills and loads the IDT: each of the 32 CPU exceptions ends the run through
/// `pvops_core::registry::fatal` (the running entry's fatal handler) with a FAIL line naming
/// the vector, cr2 for a page fault, and eip. For any entry that runs the native MMU in ring 0.
pub fn install() {
    // SAFETY: the stub table is 32 addresses emitted by the asm above.
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

#[unsafe(no_mangle)]
extern "C" fn pvops_native_trap(f: &TrapFrame) -> ! {
    if f.vector == 14 {
        // SAFETY: reading cr2 in ring 0.
        let cr2 = unsafe { x86::controlregs::cr2() };
        fatal(format_args!(
            "page fault cr2={:#010x} eip={:#010x} error={:#x}",
            cr2, f.eip, f.error
        ))
    }
    fatal(format_args!(
        "exception vector={} error={:#x} eip={:#010x} cs={:#x} eflags={:#x}",
        f.vector, f.error, f.eip, f.cs, f.eflags
    ))
}
