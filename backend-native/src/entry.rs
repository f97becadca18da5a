//! The multiboot1 header, the entry stub (paging off -> bootstrap PAE table -> higher half)
//! and the Rust entry that hands the machine to the registered kernel.

use crate::multiboot::{self, INFO_LEN};
use crate::serial::Serial;
use crate::{run_native_kernel, BOOTSTRAP_MAPPED, EXIT_FAIL, EXIT_PASS, PAGE_OFFSET};
use core::fmt::Write;
use pvops_core::addr::{FrameRange, PhysAddr, PhysFrame, PAGE_SIZE};
use pvops_core::boot::{current_stage, BootInfo, IoremapProbe};
use pvops_core::cmdline::{CmdlineCopy, CMDLINE_MAX};
use pvops_core::registry::{kernel_tag, set_fatal_handler, Outcome};

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003
    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .bss.pvops_native_boot, "aw", @nobits
    .balign 4096
    .global pvops_native_boot_pdpt
pvops_native_boot_pdpt:
    .skip 4096
    .global pvops_native_boot_pd
pvops_native_boot_pd:
    .skip 4096
    .balign 16
pvops_native_stack_bottom:
    .skip {stack}
pvops_native_stack_top:

    .section .rodata.pvops_native_gdt, "a"
    .balign 8
pvops_native_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
pvops_native_gdt_end:
    .balign 4
pvops_native_gdtr:
    .word pvops_native_gdt_end - pvops_native_gdt - 1
    .long pvops_native_gdt

    .section .bss.pvops_native_fixmap, "aw", @nobits
    .balign 4096
    .global pvops_native_fixmap_l1
pvops_native_fixmap_l1:
    .skip 4096

    .section .text.pvops_native_entry, "ax"
    .global pvops_multiboot_entry
    .code32
pvops_multiboot_entry:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    mov $pvops_native_main, %ebx
    jmp pvops_native_boot

    /* The bootstrap for every entry protocol that starts the native MMU in 32-bit protected
       mode with paging off (multiboot1, PVH). In: edi, esi = the two words for the Rust
       entry, ebx = its (virtual) address. Runs at physical addresses until the far jump. */
    .global pvops_native_boot
pvops_native_boot:
    mov $(pvops_native_boot_pd - {page_offset}), %ecx
    mov %ecx, %eax
    or $1, %eax
    mov %eax, (pvops_native_boot_pdpt - {page_offset})
    movl $0, (pvops_native_boot_pdpt - {page_offset} + 4)
    mov %eax, (pvops_native_boot_pdpt - {page_offset} + 24)
    movl $0, (pvops_native_boot_pdpt - {page_offset} + 28)
    xor %edx, %edx
2:
    mov %edx, %eax
    shl $21, %eax
    or $0x83, %eax
    movl $0, 4(%ecx, %edx, 8)
    mov %eax, (%ecx, %edx, 8)
    inc %edx
    cmp ${large_pages}, %edx
    jb 2b
    mov $(pvops_native_fixmap_l1 - {page_offset}), %eax
    or $3, %eax
    movl $0, 4 + 8 * {fixmap_pd_index}(%ecx)
    mov %eax, 8 * {fixmap_pd_index}(%ecx)
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $(pvops_native_boot_pdpt - {page_offset}), %eax
    mov %eax, %cr3
    mov %cr0, %eax
    or $0x80010000, %eax
    mov %eax, %cr0
    mov $3f, %eax
    jmp *%eax
3:
    lgdt pvops_native_gdtr
    ljmp $0x08, $4f
4:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $pvops_native_stack_top, %esp
    xor %ebp, %ebp
    push %esi
    push %edi
    call *%ebx
5:
    hlt
    jmp 5b
"#,
    page_offset = const PAGE_OFFSET,
    large_pages = const (BOOTSTRAP_MAPPED >> 21),
    fixmap_pd_index = const crate::fixmap::PD_INDEX,
    stack = const 256 * 1024,
    options(att_syntax)
);

unsafe extern "C" {
    static pvops_native_boot_pdpt: u8;
    static __pvops_image_start: u8;
    static __pvops_image_end: u8;
}

fn virt_to_pfn(v: usize) -> PhysFrame {
    PhysFrame::new(((v as u32).wrapping_sub(PAGE_OFFSET) >> 12) as u32)
}

/// The kernel image's frames (`__pvops_image_start .. __pvops_image_end`).
pub fn kernel_image() -> FrameRange {
    // Linker-script symbols: only their addresses are taken.
    let (start, end) = (
        &raw const __pvops_image_start as usize,
        &raw const __pvops_image_end as usize,
    );
    FrameRange {
        start: virt_to_pfn(start),
        end: virt_to_pfn(end + PAGE_SIZE as usize - 1),
    }
}

/// The bootstrap table the stub built (its PDPT and page directory, in .bss): what
/// `Native::pagetable_setup_done` retires. The fixmap's L1 is not part of it: it stays.
pub fn bootstrap_tables() -> FrameRange {
    let pdpt = virt_to_pfn(&raw const pvops_native_boot_pdpt as usize);
    FrameRange {
        start: pdpt,
        end: PhysFrame::new(pdpt.number() + 2),
    }
}

/// Ends the run: with the `qemu-debug-exit` feature, writes `code` to QEMU's isa-debug-exit
/// port (QEMU exits with `(code << 1) | 1`); then halts.
pub(crate) fn exit(code: u8) -> ! {
    #[cfg(feature = "qemu-debug-exit")]
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device; on other machines it is unused.
    unsafe {
        x86::io::outb(0xf4, code)
    };
    #[cfg(not(feature = "qemu-debug-exit"))]
    let _ = code;
    loop {
        // SAFETY: halting with interrupts off ends the run on hardware without the device.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(
        Serial,
        "{}: FAIL backend=native platform={} stage={}: {}",
        kernel_tag(),
        crate::PLATFORM_BARE.name,
        current_stage().name(),
        args
    );
    exit(EXIT_FAIL)
}

/// Rust entry, called by the stub on the bootstrap table with the multiboot registers.
#[unsafe(no_mangle)]
extern "C" fn pvops_native_main(magic: u32, mbi: u32) -> ! {
    // Before anything can enable interrupts: the BIOS's 8259 setup sends IRQ0 to vector 8.
    crate::pic::remap_and_mask();
    Serial::init();
    set_fatal_handler(fatal);
    crate::install_traps(crate::TrapPlatform {
        name: crate::PLATFORM_BARE.name,
        last_words: |args| {
            let _ = Serial.write_fmt(args);
        },
        fail: || exit(EXIT_FAIL),
    });
    let read = |addr: u32, len: usize| -> Option<&'static [u8]> {
        // What the bootstrap mapping holds from `addr` on, at most `len` bytes.
        let len = (len as u64).min(BOOTSTRAP_MAPPED.checked_sub(addr as u64)?) as usize;
        // SAFETY: the bootstrap table maps [0, BOOTSTRAP_MAPPED) at PAGE_OFFSET; the loader's
        // structures there are not written while the kernel parses them.
        (len > 0)
            .then(|| unsafe { core::slice::from_raw_parts((PAGE_OFFSET + addr) as *const u8, len) })
    };
    // `dump-boot-input` (off by default): every range the parser reads, as hex, for
    // `cargo xtask fuzz --capture` (seeds made of what this loader really handed over).
    #[cfg(feature = "dump-boot-input")]
    let read = |addr: u32, len: usize| {
        pvops_core::boot_input::logged(
            &mut Serial,
            format_args!("multiboot mbi={mbi:#x}"),
            addr as usize,
            read(addr, len),
        )
    };
    // The command line is copied here, into the boot stack (kernel .bss): this frame lives
    // for the whole run, and the loader's copy may be handed out by the allocator.
    let mut cmdline = CmdlineCopy::empty();
    let mb = match multiboot::parse(magic, mbi, &read, &mut cmdline) {
        Ok(m) => m,
        Err(e) => fatal(format_args!("{e}")),
    };
    if let Some(len) = cmdline.truncated_from() {
        let _ = writeln!(
            Serial,
            "native: warning: multiboot command line is {len} bytes, truncated to {CMDLINE_MAX}"
        );
    }
    let (kernel_image, bootstrap_tables) = (kernel_image(), bootstrap_tables());
    let reach = PhysFrame::new((BOOTSTRAP_MAPPED / PAGE_SIZE) as u32);
    let info = BootInfo {
        platform: crate::PLATFORM_BARE,
        memory: mb.memory.clone(),
        cmdline: cmdline.as_str(),
        first_free: kernel_image.end,
        bootstrap_reach: reach,
        bootstrap_tables,
        kernel_image,
        // The bootstrap table reaches 64 MiB: room for every page table of the direct map.
        table_pool: FrameRange::EMPTY,
        probe: Some(IoremapProbe {
            addr: PhysAddr::new(mbi as u64),
            len: INFO_LEN as u64,
            what: "multiboot info",
        }),
        reserved: mb.reserved,
        modules: mb.modules(),
    };
    let _ = writeln!(
        Serial,
        "native: multiboot magic={magic:#x} info={mbi:#x} flags={:#x}; image pfn {}..{}; bootstrap table pfn {}..{} (2 MiB pages over {} MiB)",
        mb.flags,
        kernel_image.start,
        kernel_image.end,
        bootstrap_tables.start,
        bootstrap_tables.end,
        BOOTSTRAP_MAPPED >> 20
    );
    let Some(outcome) = run_native_kernel(reach, bootstrap_tables, &info, &mut Serial) else {
        fatal(format_args!("no kernel registered for the native backend"))
    };
    exit(if outcome == Outcome::Pass {
        EXIT_PASS
    } else {
        EXIT_FAIL
    })
}
