//! The legacy 8259 interrupt controllers: remapped off the CPU exception vectors and fully
//! masked before anything can enable interrupts.
//!
//! As the BIOS (and GRUB, and QEMU's multiboot loader) leave them, the master 8259 delivers
//! IRQ0-7 at vectors 8-15: the PIT's IRQ0 arrives as vector 8 the first time a kernel runs
//! `sti`, and looks like a double fault. Like Linux's `init_8259A`, the pair is moved to
//! vectors 0x20-0x2F and every line is masked; a kernel that wants an interrupt unmasks it
//! (and installs its gate) itself.
//!
//! Bare metal only: a Xen PVH domU has no 8259 and no PIT (`xl` gives it only an emulated
//! local APIC, `XEN_X86_EMU_LAPIC`, whose interrupt lines start masked); Xen drops its
//! writes to these ports, so the PVH entry does not program them.

use x86::io::outb;

/// Vector of IRQ0 after the remap (IRQ8 is at `PIC_VECTOR_BASE + 8`).
pub const PIC_VECTOR_BASE: u8 = 0x20;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;

/// Reinitialises both 8259s at [`PIC_VECTOR_BASE`] and masks all 16 lines.
pub(crate) fn remap_and_mask() {
    let steps: [(u16, u8); 10] = [
        (MASTER_CMD, 0x11),                // ICW1: initialise, ICW4 follows
        (SLAVE_CMD, 0x11),                 //
        (MASTER_DATA, PIC_VECTOR_BASE),    // ICW2: vector base
        (SLAVE_DATA, PIC_VECTOR_BASE + 8), //
        (MASTER_DATA, 1 << 2),             // ICW3: the slave hangs off IRQ2
        (SLAVE_DATA, 2),                   //       and knows its cascade identity
        (MASTER_DATA, 0x01),               // ICW4: 8086 mode
        (SLAVE_DATA, 0x01),                //
        (MASTER_DATA, 0xFF),               // OCW1: every line masked
        (SLAVE_DATA, 0xFF),                //
    ];
    for (port, value) in steps {
        // SAFETY: 0x20/0x21/0xA0/0xA1 are the 8259 pair on every PC-compatible machine, and
        // 0x80 (the POST code port) is the customary I/O delay between their writes.
        unsafe {
            outb(port, value);
            outb(0x80, 0);
        }
    }
}
