//! The PVH entry: the `XEN_ELFNOTE_PHYS32_ENTRY` note, a five-instruction shim into
//! backend-native's bootstrap stub, and the Rust entry that sets up Xen's platform services
//! (hypercall page, console ring, shutdown) around the native MMU and runs the kernel main
//! registered for the native backend.

use crate::start_info::{self, PvhStartInfo, INFO_LEN};
use crate::PLATFORM_XEN_PVH;
use backend_native::{fixmap, run_native_kernel, TrapPlatform, BOOTSTRAP_MAPPED, PAGE_OFFSET};
use backend_xen::abi::{self, XenconsInterface};
use backend_xen::console::{self, Console};
use backend_xen::hypercall;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use pvops_core::addr::{FrameRange, PhysAddr, PhysFrame, PAGE_SIZE};
use pvops_core::boot::{current_stage, BootInfo, BootModule, IoremapProbe};
use pvops_core::registry::{kernel_tag, set_fatal_handler, Outcome};

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, {phys32_entry}
    .asciz "Xen"
    .long pvops_pvh_entry - {page_offset}

    .section .text.pvops_pvh_entry, "ax"
    .global pvops_pvh_entry
    .code32
pvops_pvh_entry:
    cli
    cld
    mov %ebx, %edi
    xor %esi, %esi
    mov $pvops_pvh_main, %ebx
    jmp pvops_native_boot
"#,
    phys32_entry = const crate::XEN_ELFNOTE_PHYS32_ENTRY,
    page_offset = const PAGE_OFFSET,
    options(att_syntax)
);

/// The fixmap slot of the console ring.
const CONSOLE_FIXMAP_SLOT: usize = 0;

/// Set once the hypercall page works (the console ring can be drained).
static HYPERCALLS: AtomicBool = AtomicBool::new(false);

/// How this vCPU enters Xen, known as soon as Xen's CPUID leaves are found (before the
/// hypercall page): [`NO_XEN`], [`VMCALL`] or [`VMMCALL`].
static XEN_CALL: AtomicU8 = AtomicU8::new(NO_XEN);
/// No Xen CPUID leaves (yet): no way to end the domain but to halt.
const NO_XEN: u8 = 0;
/// Intel (and any vendor but AMD and Hygon): Xen's stubs hold `vmcall`.
const VMCALL: u8 = 1;
/// AMD and Hygon: `vmmcall`.
const VMMCALL: u8 = 2;

/// Why the hypercall page could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallPageError {
    /// No CPUID leaf from 0x40000000 to 0x40010000 carries "XenVMMXenVMM".
    NotXen,
    /// Xen's base leaf does not reach base + 2 (the hypercall leaf).
    NoHypercallLeaf {
        /// The base leaf.
        base: u32,
        /// Its largest leaf.
        max: u32,
    },
    /// Xen offers no hypercall page.
    NoPages {
        /// The base leaf.
        base: u32,
    },
    /// The page still holds its fill after the MSR write: Xen did not write the stubs.
    NotFilled {
        /// The MSR written.
        msr: u32,
    },
}

impl fmt::Display for HypercallPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotXen => write!(
                f,
                "no Xen CPUID leaves (XenVMMXenVMM) at 0x40000000..0x40010000"
            ),
            Self::NoHypercallLeaf { base, max } => {
                write!(
                    f,
                    "Xen CPUID base {base:#x} ends at leaf {max:#x}, before the hypercall leaf"
                )
            }
            Self::NoPages { base } => {
                write!(f, "Xen CPUID leaf {:#x} offers no hypercall page", base + 2)
            }
            Self::NotFilled { msr } => {
                write!(
                    f,
                    "Xen did not fill the hypercall page after wrmsr({msr:#x})"
                )
            }
        }
    }
}

/// What the hypercall-page setup found.
struct XenCpuid {
    base: u32,
    version: u32,
    msr: u32,
}

/// Finds Xen's CPUID leaves and gives Xen the hypercall page's physical address through the
/// MSR they name; Xen writes the stubs (`vmcall`/`vmmcall`, 32 bytes per hypercall) into it.
fn setup_hypercall_page() -> Result<XenCpuid, HypercallPageError> {
    use core::arch::x86::__cpuid;
    let mut found = None;
    let mut base = abi::CPUID_XEN_FIRST_BASE;
    while base <= abi::CPUID_XEN_LAST_BASE {
        // cpuid has no side effects; hypervisor leaves answer for any value.
        let r = __cpuid(base);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        if &sig == abi::CPUID_XEN_SIGNATURE {
            found = Some((base, r.eax));
            break;
        }
        base += 0x100;
    }
    let (base, max) = found.ok_or(HypercallPageError::NotXen)?;
    // Leaf 0's vendor picks the instruction Xen's stubs use, as Linux's
    // xen_hypercall_setfunc does; exit() can use it before the page is filled.
    let v = __cpuid(0);
    let amd = matches!(
        (v.ebx, v.edx, v.ecx),
        (0x6874_7541, 0x6974_6e65, 0x444d_4163) | (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
    );
    XEN_CALL.store(if amd { VMMCALL } else { VMCALL }, Ordering::Release);
    if max < base + 2 {
        return Err(HypercallPageError::NoHypercallLeaf { base, max });
    }
    // Leaf base+1 is the version, base+2 the hypercall-page leaf.
    let (version, hc) = (__cpuid(base + 1).eax, __cpuid(base + 2));
    if hc.eax == 0 {
        return Err(HypercallPageError::NoPages { base });
    }
    let page = hypercall::hypercall_page();
    let pa = (page as u32 - PAGE_OFFSET) as u64;
    // SAFETY: the MSR Xen named takes the guest-physical address of a page (bits 0-11: page
    // index 0) and makes Xen write hypercall stubs there; the page is the image's own
    // `.xen_hypercall_page`, used for nothing else.
    unsafe { x86::msr::wrmsr(hc.ebx, pa) };
    // SAFETY: the page is in the image, mapped; Xen has just written it.
    let first = unsafe { core::ptr::read_volatile(page as *const u8) };
    if first == 0xcc {
        return Err(HypercallPageError::NotFilled { msr: hc.ebx });
    }
    Ok(XenCpuid {
        base,
        version,
        msr: hc.ebx,
    })
}

/// Ends the domain: drains the console ring (once there is one), then [`shutdown`].
fn exit(pass: bool) -> ! {
    drain();
    shutdown(pass)
}

/// Waits (bounded) until xenconsoled has read the console ring, once there is one.
fn drain() {
    if HYPERCALLS.load(Ordering::Acquire) {
        console::drain();
    }
}

/// `SCHEDOP_shutdown` poweroff (PASS) or crash (FAIL) issued with the instruction Xen's
/// hypercall stubs use, so that a failure before the hypercall page works (no Xen CPUID
/// leaves, an MSR Xen did not honour) also ends the domain rather than leaving it to a
/// timeout. Reads one static and writes only its own stack: it also ends a run whose
/// console faulted.
/// Without Xen's CPUID leaves it says so on port 0xe9 and halts.
fn shutdown(pass: bool) -> ! {
    let mut reason = if pass {
        abi::SHUTDOWN_POWEROFF
    } else {
        abi::SHUTDOWN_CRASH
    };
    let reason_ptr = &raw mut reason as u32;
    match XEN_CALL.load(Ordering::Acquire) {
        // SAFETY: `sched_op(SCHEDOP_shutdown, &reason)` (eax = 29, ebx = 2, ecx = a live
        // `struct sched_shutdown`), what the page's stub for hypercall 29 executes; it does not
        // return for this domain's only vCPU.
        VMCALL => unsafe {
            core::arch::asm!(
                "vmcall",
                inout("eax") abi::nr::SCHED_OP as u32 => _,
                in("ebx") abi::SCHEDOP_SHUTDOWN,
                in("ecx") reason_ptr,
            )
        },
        // SAFETY: as above, with AMD's instruction.
        VMMCALL => unsafe {
            core::arch::asm!(
                "vmmcall",
                inout("eax") abi::nr::SCHED_OP as u32 => _,
                in("ebx") abi::SCHEDOP_SHUTDOWN,
                in("ecx") reason_ptr,
            )
        },
        _ => {
            let _ = writeln!(
                Console,
                "xen-pvh: no Xen CPUID leaves, no hypercall to end the domain: halting"
            );
        }
    }
    loop {
        // SAFETY: halting with interrupts off parks the vCPU. Under Xen this is not reached
        // (the shutdown does not return); without Xen, only the harness's timeout ends it.
        // (Xen itself would take `cli; hlt` on its only vCPU for a poweroff: hvm_hlt ->
        // hvm_vcpu_down, "All CPUs offline -- powering off", i.e. a PASS.)
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

fn fatal(args: fmt::Arguments<'_>) -> ! {
    let _ = writeln!(
        Console,
        "{}: FAIL backend=native platform={} stage={}: {}",
        kernel_tag(),
        PLATFORM_XEN_PVH.name,
        current_stage().name(),
        args
    );
    exit(false)
}

/// The console ring: its pfn and event channel from `HVMOP_get_param`, mapped at a fixmap
/// address that stays valid on the kernel's own table.
fn setup_console_ring() -> Result<(u64, u32, usize), &'static str> {
    let pfn = hypercall::hvm_get_param(abi::HVM_PARAM_CONSOLE_PFN)
        .map_err(|_| "hvm_op(HVMOP_get_param, HVM_PARAM_CONSOLE_PFN) failed")?;
    let evtchn = hypercall::hvm_get_param(abi::HVM_PARAM_CONSOLE_EVTCHN)
        .map_err(|_| "hvm_op(HVMOP_get_param, HVM_PARAM_CONSOLE_EVTCHN) failed")?;
    if pfn == 0 || evtchn > u32::MAX as u64 {
        return Err("Xen gave no console ring (pfn 0 or no event channel)");
    }
    // SAFETY: the console page is the domain's own RAM page that xenconsoled shares; nothing
    // else in the kernel uses it.
    let va = unsafe { fixmap::set(CONSOLE_FIXMAP_SLOT, PhysAddr::new(pfn << 12)) }
        .map_err(|_| "the console ring's pfn does not fit the fixmap")?;
    // SAFETY: the fixmap maps the ring at `va` on the bootstrap table and, from
    // pagetable_setup_start on, on the kernel's table.
    unsafe { console::use_ring(va.as_usize() as *mut XenconsInterface, evtchn as u32) };
    Ok((pfn, evtchn as u32, va.as_usize()))
}

/// Rust entry, called by backend-native's bootstrap stub on the bootstrap table with the
/// physical address of `hvm_start_info` (the `ebx` Xen passed).
#[unsafe(no_mangle)]
extern "C" fn pvops_pvh_main(start_info_pa: u32, _unused: u32) -> ! {
    console::use_debug_port();
    set_fatal_handler(fatal);
    // The IDT and the double-fault task, as on bare metal (a triple fault would end the
    // domain with Xen's triple-fault action, a reboot, and no word). No 8259 set-up: a PVH
    // domU has none (see backend_native::pic).
    backend_native::install_traps(TrapPlatform {
        name: PLATFORM_XEN_PVH.name,
        last_words: |args| {
            let _ = Console.write_fmt(args);
            drain();
        },
        fail: || shutdown(false),
    });
    let _ = writeln!(
        Console,
        "xen-pvh: entered at XEN_ELFNOTE_PHYS32_ENTRY (paging off), hvm_start_info pa={start_info_pa:#x}; native bootstrap table on; earliest console: port 0xe9"
    );
    let cpuid = match setup_hypercall_page() {
        Ok(c) => c,
        Err(e) => fatal(format_args!("{e}")),
    };
    HYPERCALLS.store(true, Ordering::Release);
    let (ring_pfn, evtchn, ring_va) = match setup_console_ring() {
        Ok(r) => r,
        Err(e) => fatal(format_args!("{e}")),
    };
    let image = backend_native::kernel_image();
    let _ = writeln!(
        Console,
        "xen-pvh: Xen {}.{} (CPUID base {:#x}); hypercall page pa={:#x} via MSR {:#x}; console ring pfn {ring_pfn:#x} at {ring_va:#x} (fixmap), evtchn {evtchn}; hvm_start_info pa={start_info_pa:#x}; image pfn {}..{}",
        cpuid.version >> 16,
        cpuid.version & 0xffff,
        cpuid.base,
        hypercall::hypercall_page() as u32 - PAGE_OFFSET,
        cpuid.msr,
        image.start,
        image.end
    );
    let read = |addr: u64, len: usize| -> Option<&'static [u8]> {
        let end = addr.checked_add(len as u64)?;
        // SAFETY: the bootstrap table maps [0, BOOTSTRAP_MAPPED) at PAGE_OFFSET; Xen's boot
        // structures there are not written while the kernel parses them (they are reserved
        // before the allocator runs).
        (end <= BOOTSTRAP_MAPPED).then(|| unsafe {
            core::slice::from_raw_parts((PAGE_OFFSET as u64 + addr) as usize as *const u8, len)
        })
    };
    // `dump-boot-input` (off by default): every range the parser reads, as hex, for
    // `cargo xtask fuzz --capture` (seeds made of what this Xen really handed over).
    #[cfg(feature = "dump-boot-input")]
    let read = |addr: u64, len: usize| {
        pvops_core::boot_input::logged(
            &mut Console,
            format_args!("hvm_start_info start_info={start_info_pa:#x}"),
            addr as usize,
            read(addr, len),
        )
    };
    let si: PvhStartInfo<'static> = match start_info::parse(start_info_pa as u64, &read) {
        Ok(s) => s,
        Err(e) => fatal(format_args!("{e}")),
    };
    let _ = writeln!(
        Console,
        "xen-pvh: hvm_start_info version={} flags={:#x} memmap entries={} modules={} rsdp={:#x} cmdline \"{}\"",
        si.version,
        si.flags,
        si.memmap_entries,
        si.modules().len(),
        si.rsdp,
        si.cmdline
    );
    for (addr, size, kind) in si.memmap() {
        let _ = writeln!(
            Console,
            "xen-pvh: memmap {addr:#011x}+{size:#x} type {kind}{}",
            if kind == start_info::MEMMAP_TYPE_RAM {
                " (RAM)"
            } else {
                ""
            }
        );
    }
    let mut modules = [BootModule {
        start: PhysAddr::new(0),
        len: 0,
    }; start_info::MAX_MODULES];
    for (slot, m) in modules.iter_mut().zip(si.modules()) {
        *slot = BootModule {
            start: PhysAddr::new(m.addr),
            len: m.size,
        };
    }
    let bootstrap_tables = backend_native::bootstrap_tables();
    let reach = PhysFrame::new((BOOTSTRAP_MAPPED / PAGE_SIZE) as u32);
    let info = BootInfo {
        platform: PLATFORM_XEN_PVH,
        memory: si.memory.clone(),
        cmdline: si.cmdline,
        first_free: image.end,
        bootstrap_reach: reach,
        bootstrap_tables,
        kernel_image: image,
        // The native bootstrap table reaches 64 MiB: room for every page table.
        table_pool: FrameRange::EMPTY,
        probe: Some(IoremapProbe {
            addr: PhysAddr::new(start_info_pa as u64),
            len: INFO_LEN as u64,
            what: "hvm_start_info",
        }),
        // The loader's structures and modules: the banner prints them as `mem: reserved`
        // lines, and the allocator never hands them out.
        reserved: *si.reservations(),
        modules: &modules[..si.modules().len()],
    };
    let Some(outcome) = run_native_kernel(reach, bootstrap_tables, &info, &mut Console) else {
        fatal(format_args!("no kernel registered for the native backend"))
    };
    exit(outcome == Outcome::Pass)
}
