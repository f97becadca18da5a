//! A task for the double fault: vector 8 is a task gate, so a double fault (typically a fault
//! whose frame cannot be pushed, e.g. on a broken stack) switches to its own task-state
//! segment, stack and cr3 and prints, instead of pushing onto the broken stack and ending in
//! a triple fault (a silent reset).
//!
//! The GDT built here replaces the entry stub's (same code and data selectors) and adds the
//! two 32-bit TSS descriptors: the running task's (the CPU saves the faulting state there:
//! it is what the report prints) and the double-fault task's.

use core::cell::UnsafeCell;
use static_assertions::const_assert_eq;

/// GDT selectors.
const KERNEL_CS: u16 = 0x08;
const KERNEL_DS: u16 = 0x10;
const MAIN_TSS_SEL: u16 = 0x18;
const DF_TSS_SEL: u16 = 0x20;
/// Bytes of the double-fault task's stack.
const DF_STACK: usize = 16 * 1024;

/// The 32-bit task-state segment (Intel SDM vol. 3, 8.2.1).
#[repr(C)]
#[derive(Clone, Copy)]
struct Tss {
    link: u32,
    esp0: u32,
    ss0: u32,
    esp1: u32,
    ss1: u32,
    esp2: u32,
    ss2: u32,
    cr3: u32,
    eip: u32,
    eflags: u32,
    eax: u32,
    ecx: u32,
    edx: u32,
    ebx: u32,
    esp: u32,
    ebp: u32,
    esi: u32,
    edi: u32,
    es: u32,
    cs: u32,
    ss: u32,
    ds: u32,
    fs: u32,
    gs: u32,
    ldt: u32,
    trap: u16,
    iomap_base: u16,
}
const_assert_eq!(core::mem::size_of::<Tss>(), 104);

impl Tss {
    const ZERO: Tss = Tss {
        link: 0,
        esp0: 0,
        ss0: 0,
        esp1: 0,
        ss1: 0,
        esp2: 0,
        ss2: 0,
        cr3: 0,
        eip: 0,
        eflags: 0,
        eax: 0,
        ecx: 0,
        edx: 0,
        ebx: 0,
        esp: 0,
        ebp: 0,
        esi: 0,
        edi: 0,
        es: 0,
        cs: 0,
        ss: 0,
        ds: 0,
        fs: 0,
        gs: 0,
        ldt: 0,
        trap: 0,
        // No I/O bitmap: the base lies past the limit.
        iomap_base: 104,
    };
}

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 5],
    main: Tss,
    df: Tss,
    df_stack: [u8; DF_STACK],
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: one CPU; written by `install` (interrupts off) and `set_cr3`, read by the CPU and
// by the double-fault report.
unsafe impl Sync for TablesCell {}
static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [0; 5],
    main: Tss::ZERO,
    df: Tss::ZERO,
    df_stack: [0; DF_STACK],
}));

core::arch::global_asm!(
    r#"
    .section .text.pvops_native_df, "ax"
    .global pvops_native_df_task
pvops_native_df_task:
    /* The CPU pushed the error code (0) on this task's stack: it is the argument. */
    call pvops_native_double_fault
7:
    hlt
    jmp 7b
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn pvops_native_df_task();
}

/// A present 32-bit available TSS descriptor (type 9) for `base`, limit 103.
fn tss_descriptor(base: u32) -> u64 {
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    let base = base as u64;
    (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | 0x89 << 40
        | (limit >> 16 & 0xF) << 48
        | (base >> 24 & 0xFF) << 56
}

/// A present task gate (type 5) to the TSS at `selector`.
fn task_gate(selector: u16) -> u64 {
    (selector as u64) << 16 | 0x85 << 40
}

/// Loads the GDT with both TSS descriptors, makes the running code task `MAIN_TSS_SEL` and
/// points vector 8 at the double-fault task (its cr3 is the live one: see [`set_cr3`]).
pub(crate) fn install() {
    let t = TABLES.0.get();
    // SAFETY: called once at entry, interrupts off, before anything uses the tables.
    unsafe {
        let df_top = (&raw mut (*t).df_stack) as u32 + DF_STACK as u32;
        (*t).df = Tss {
            cr3: x86::controlregs::cr3() as u32,
            eip: pvops_native_df_task as *const () as u32,
            eflags: 0x2,
            esp: df_top & !0xF,
            es: KERNEL_DS as u32,
            cs: KERNEL_CS as u32,
            ss: KERNEL_DS as u32,
            ds: KERNEL_DS as u32,
            fs: KERNEL_DS as u32,
            gs: KERNEL_DS as u32,
            ..Tss::ZERO
        };
        (*t).gdt = [
            0,
            0x00CF_9A00_0000_FFFF,
            0x00CF_9200_0000_FFFF,
            tss_descriptor((&raw const (*t).main) as u32),
            tss_descriptor((&raw const (*t).df) as u32),
        ];
        let base = (&raw const (*t).gdt) as u32;
        let gdtr: [u16; 3] = [(5 * 8 - 1) as u16, base as u16, (base >> 16) as u16];
        core::arch::asm!(
            "lgdt ({0})",
            "ltr {1:x}",
            in(reg) gdtr.as_ptr(),
            in(reg) MAIN_TSS_SEL as u32,
            options(att_syntax, nostack)
        );
    }
    crate::idt::set_gate(8, task_gate(DF_TSS_SEL));
}

/// The double-fault task switches to `root` (call on every cr3 load: the task must find the
/// kernel image mapped, and the bootstrap table it started with is freed later).
pub(crate) fn set_cr3(root: u32) {
    // SAFETY: a plain store the CPU reads only at the next task switch.
    unsafe { core::ptr::write_volatile(&raw mut (*TABLES.0.get()).df.cr3, root) };
}

/// Entered through the task gate, on the double-fault task's own stack.
#[unsafe(no_mangle)]
extern "C" fn pvops_native_double_fault(error: u32) -> ! {
    // SAFETY: the CPU saved the faulting task's registers into the main TSS at the switch.
    let (eip, esp) = unsafe {
        let main = &raw const (*TABLES.0.get()).main;
        (
            core::ptr::read_volatile(&raw const (*main).eip),
            core::ptr::read_volatile(&raw const (*main).esp),
        )
    };
    crate::idt::report(format_args!(
        "double fault (on its own stack) error={error:#x} eip={eip:#010x} esp={esp:#010x}"
    ))
}
