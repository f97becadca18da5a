//! The Xen ELF notes, the hypercall page, the ring-1 entry (`esi` = start_info), the trap
//! table, and the Rust entry that hands the domain to the registered kernel.

use crate::abi::{self, MachphysMapping, StartInfo, TrapInfo, FLAT_KERNEL_CS, VIRT_BASE};
use crate::console::{self, Console};
use crate::hypercall;
use crate::real::{self, RealXen};
use crate::{boot_info, XenMmu, XEN_KERNEL};
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use pvops_core::addr::{FrameRange, PhysFrame, PAGE_SIZE};
use pvops_core::boot::current_stage;
use pvops_core::registry::{kernel_tag, set_fatal_handler, Handoff, Outcome};
use pvops_core::trap::TrapFrame;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 2f - 1f, 6
    .asciz "Xen"
1:  .asciz "pvops"
2:  .balign 4
    .long 4, 2f - 1f, 5
    .asciz "Xen"
1:  .asciz "xen-3.0"
2:  .balign 4
    .long 4, 2f - 1f, 8
    .asciz "Xen"
1:  .asciz "generic"
2:  .balign 4
    .long 4, 2f - 1f, 9
    .asciz "Xen"
1:  .asciz "yes"
2:  .balign 4
    .long 4, 4, 3
    .asciz "Xen"
    .long {virt_base}
    .long 4, 4, 1
    .asciz "Xen"
    .long pvops_xen_entry
    .long 4, 4, 2
    .asciz "Xen"
    .long pvops_hypercall_page

    .section .xen_hypercall_page, "ax"
    .balign 4096
    .global pvops_hypercall_page
pvops_hypercall_page:
    .fill 4096, 1, 0xcc

    .section .bss.pvops_xen_stack, "aw", @nobits
    .balign 16
pvops_xen_stack_bottom:
    .skip {stack}
pvops_xen_stack_top:

    .section .text.pvops_xen_entry, "ax"
    .global pvops_xen_entry
pvops_xen_entry:
    cld
    mov %esp, %eax
    mov $pvops_xen_stack_top, %esp
    push %eax
    push %esi
    call pvops_xen_main
3:
    jmp 3b
"#,
    virt_base = const VIRT_BASE,
    stack = const 256 * 1024,
    options(att_syntax)
);

const TRAP_VECTORS: usize = 20;

pvops_core::trap_stubs!(pvops_xen_trap_stubs, 20, pvops_xen_trap);

unsafe extern "C" {
    static __pvops_image_start: u8;
    static __pvops_image_end: u8;
}

static DOM0: AtomicBool = AtomicBool::new(false);

/// The domain's one `XenMmu` (about 90 KiB, in the image), handed out once by [`take_mmu`]
/// and set up in place: never on the 256 KiB boot stack, where an unoptimised build's copies
/// of a by-value `XenMmu` did not fit.
struct MmuCell(UnsafeCell<XenMmu<RealXen>>, AtomicBool);
// SAFETY: one vCPU, and `take_mmu` hands out the only reference, once.
unsafe impl Sync for MmuCell {}
static MMU: MmuCell = MmuCell(
    UnsafeCell::new(XenMmu::empty(RealXen::unset())),
    AtomicBool::new(false),
);

/// The domain's `XenMmu` ([`XenMmu::empty`] until set up); `None` after the first call.
fn take_mmu() -> Option<&'static mut XenMmu<RealXen>> {
    if MMU.1.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the flag makes this the only reference ever made to MMU's content.
    Some(unsafe { &mut *MMU.0.get() })
}

/// Ends the domain: drains the console, then (dom0) writes QEMU's debug-exit port with I/O
/// privilege from PHYSDEVOP_set_iopl, or (domU) SCHEDOP_shutdown poweroff/crash.
fn exit(pass: bool) -> ! {
    console::drain();
    // Under QEMU (the `qemu-debug-exit` feature) dom0 ends the whole machine with a status.
    #[cfg(feature = "qemu-debug-exit")]
    // SAFETY: the only port used with the privilege is QEMU's debug-exit port below.
    if DOM0.load(Ordering::Acquire) && unsafe { hypercall::set_iopl(1) } == 0 {
        let code = if pass { 0x10 } else { 0x11 };
        // SAFETY: with IOPL 1 a ring-1 dom0 may use port 0xf4 (QEMU's isa-debug-exit).
        unsafe { x86::io::outb(0xf4, code) };
    }
    hypercall::shutdown(pass)
}

fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(
        Console,
        "{}: FAIL backend=xen platform={} stage={}: {}",
        kernel_tag(),
        crate::PLATFORM_XEN_PV.name,
        current_stage().name(),
        args
    );
    exit(false)
}

extern "C" fn pvops_xen_trap(f: &TrapFrame) -> ! {
    if real::is_m2p_load(f.eip) {
        // SAFETY: `f` is the live frame of a fault at the M2P load.
        unsafe { real::resume_at_m2p_fixup(f as *const TrapFrame as *const u32) }
    }
    if f.vector == 14 {
        let cr2: u32;
        // SAFETY: Xen emulates `mov %cr2` for a PV guest (the address of the last #PF).
        unsafe {
            core::arch::asm!("mov %cr2, {0}", out(reg) cr2, options(att_syntax, nomem, nostack))
        };
        fatal(format_args!(
            "page fault cr2={:#010x} eip={:#010x} error={:#x}",
            cr2, f.eip, f.error
        ))
    }
    fatal(format_args!(
        "exception vector={} error={:#x} eip={:#010x} cs={:#x}",
        f.vector, f.error, f.eip, f.cs
    ))
}

fn install_traps() -> i32 {
    let mut table = [TrapInfo::default(); TRAP_VECTORS + 1];
    // SAFETY: the stub table is emitted by `trap_stubs!` above.
    let stubs = unsafe { &pvops_xen_trap_stubs };
    for (i, (t, stub)) in table.iter_mut().zip(stubs).enumerate() {
        *t = TrapInfo {
            vector: i as u8,
            flags: 0,
            cs: FLAT_KERNEL_CS,
            address: *stub,
        };
    }
    // SAFETY: the table has TRAP_VECTORS handlers (the stubs of `trap_stubs!`, one per
    // vector) and ends with the all-zero entry left by `default()`.
    unsafe { hypercall::set_trap_table(&table) }
}

fn virt_to_pfn(v: usize) -> PhysFrame {
    PhysFrame::new((v as u32).wrapping_sub(VIRT_BASE) >> 12)
}

/// Rust entry: `si` from esi, `esp` as the domain builder left it (in the boot stack page).
#[unsafe(no_mangle)]
extern "C" fn pvops_xen_main(si: *const StartInfo, esp: u32) -> ! {
    // SAFETY: Xen passes the virtual address of start_info in esi; it is mapped.
    let si_ref = unsafe { &*si };
    set_fatal_handler(fatal);
    // The trap table first: the M2P reads below rely on its fixup.
    let trap_ret = install_traps();
    if trap_ret != 0 {
        fatal(format_args!(
            "xen {}: set_trap_table",
            abi::Errno(-trap_ret)
        ));
    }
    let mut machphys = MachphysMapping::default();
    let mm_ret = hypercall::machphys_mapping(&mut machphys);
    let (start, end) = (
        &raw const __pvops_image_start as usize,
        &raw const __pvops_image_end as usize,
    );
    let kernel_image = FrameRange {
        start: virt_to_pfn(start),
        end: virt_to_pfn(end + PAGE_SIZE as usize - 1),
    };
    // The pfn of a machine frame the domain owns: the M2P entry (read only up to max_mfn,
    // where Xen maps the M2P), cross-checked with the p2m list. Called by `validate` only
    // after it checked mfn_list and nr_pages.
    let owned_pfn = |mfn: u32| -> Option<PhysFrame> {
        if mm_ret != 0 {
            return None;
        }
        // An unmapped M2P entry (a frame beyond RAM) reads as None, not as a fault.
        let pfn = real::read_m2p(
            machphys.v_start as *const u32,
            machphys.max_mfn.saturating_add(1),
            mfn,
        )?;
        // SAFETY: validate checked that the p2m list's nr_pages entries lie in our region.
        let back = (pfn < si_ref.nr_pages).then(|| unsafe {
            core::ptr::read_volatile((si_ref.mfn_list as *const u32).add(pfn as usize))
        });
        (back == Some(mfn)).then_some(PhysFrame::new(pfn))
    };
    // Nothing of start_info is used before this check (the console is not set up yet: a
    // refusal goes out through console_io, which a domU's Xen prints in debug builds).
    let facts =
        match crate::start_info::validate(si_ref, si as u32, esp, kernel_image.end, &owned_pfn) {
            Ok(f) => f,
            Err(e) => fatal(format_args!("{e}")),
        };
    let dom0 = facts.is_dom0();
    DOM0.store(dom0, Ordering::Release);
    if dom0 {
        console::use_console_io();
    } else if let Some(pfn) = facts.console {
        // SAFETY: the ring page is in the builder's region, inside lowmem: the direct map
        // keeps it at this address after the switch.
        unsafe {
            console::use_ring(
                (VIRT_BASE + pfn.number() * PAGE_SIZE as u32) as *mut abi::XenconsInterface,
                si_ref.console_evtchn,
            )
        };
    }
    let _ = writeln!(
        Console,
        "xen: entered in ring 1, start_info at {:#x}, esp={esp:#x}",
        si as usize
    );
    // `dump-boot-input` (off by default): start_info as Xen wrote it, as hex, for
    // `cargo xtask fuzz --capture` (seeds made of what this Xen really handed over).
    #[cfg(feature = "dump-boot-input")]
    {
        let image_end = virt_to_pfn(&raw const __pvops_image_end as usize + PAGE_SIZE as usize - 1);
        // SAFETY: Xen mapped start_info (one page) at `si`.
        let bytes = unsafe { core::slice::from_raw_parts(si as *const u8, abi::StartInfo::SIZE) };
        pvops_core::boot_input::write_hex_lines(
            &mut Console,
            format_args!(
                "start_info si_va={:#x} esp={esp:#x} image_end={:#x}",
                si as usize, image_end.0
            ),
            "off",
            0,
            bytes,
        );
    }
    if mm_ret != 0 {
        fatal(format_args!(
            "xen {}: memory_op(XENMEM_machphys_mapping)",
            abi::Errno(-mm_ret)
        ));
    }
    let magic_len = si_ref.magic.iter().position(|b| *b == 0).unwrap_or(32);
    let _ = writeln!(
        Console,
        "xen: start_info magic={} nr_pages={:#x} ({} MiB) flags={:#x} pt_base={:#x} nr_pt_frames={} mfn_list={:#x} shared_info={:#x} store_mfn={:#x} console_mfn={:#x} console_evtchn={} first_free_pfn={}",
        core::str::from_utf8(&si_ref.magic[..magic_len]).unwrap_or("?"),
        si_ref.nr_pages,
        si_ref.nr_pages >> 8,
        si_ref.flags,
        si_ref.pt_base,
        si_ref.nr_pt_frames,
        si_ref.mfn_list,
        si_ref.shared_info,
        si_ref.store_mfn,
        si_ref.console_mfn,
        si_ref.console_evtchn,
        facts.first_free
    );
    let _ = writeln!(
        Console,
        "xen: {} domain, hypervisor hole at {:#x} (XENMEM_machphys_mapping, max_mfn={:#x}), trap table installed",
        if dom0 { "initial (dom0)" } else { "unprivileged (domU)" },
        machphys.v_start,
        machphys.max_mfn
    );
    // SAFETY: mfn_list is start_info's p2m list (validated to lie in our region).
    let hv = unsafe { RealXen::new(si_ref.mfn_list, si_ref.nr_pages, &machphys) };
    let Some(mmu) = take_mmu() else {
        fatal(format_args!("the Xen entry ran twice"))
    };
    if let Err(e) = mmu.init(hv, &facts, &crate::XenOptions::DEFAULT) {
        fatal(format_args!("{e}"));
    }
    let pool = crate::pool::EARLY_TABLE_POOL.frames(VIRT_BASE as usize);
    let info = boot_info(mmu, &facts, kernel_image, pool);
    let _ = writeln!(
        Console,
        "xen: Xen's bootstrap table maps pfn 0..{} ({} KiB); lowmem limit {} MiB",
        mmu.reach(),
        mmu.reach().number() * 4,
        pvops_core::MmuOps::layout(mmu).lowmem_limit >> 20,
    );
    let Some(main) = XEN_KERNEL.first() else {
        fatal(format_args!("no kernel registered for the Xen backend"))
    };
    let outcome = main(Handoff {
        platform: &mut *mmu,
        info: &info,
        console: &mut Console,
    });
    let s = mmu.stats();
    let _ = writeln!(
        Console,
        "xen: hypercalls: mmu_update {} ({} entries), mmuext_op {} ({} ops), multicall {}",
        s.mmu_update_calls, s.mmu_update_entries, s.mmuext_calls, s.mmuext_ops, s.multicall_calls
    );
    exit(outcome == Outcome::Pass)
}
