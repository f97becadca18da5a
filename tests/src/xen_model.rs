//! A host-side model of Xen 4.17.5's page-table rules for a 32-bit PAE PV domU
//! (`xen-3.0-x86_32p`), implementing [`backend_xen::Hypervisor`] so the real [`XenMmu`] and
//! the real generic boot path ([`pvops_core::boot::boot`]) run in `cargo test` against them.
//!
//! # What is modelled
//! - **Machine memory**: 4 KiB machine frames, allocated lazily in host memory (zeroed,
//!   never moved). The domain's RAM sits at machine frames `base..base + nr_pages` behind a
//!   p2m that is never the identity (shuffled by default), so a pseudo-physical frame written
//!   where a machine frame belongs lands on another owner's frame and is refused.
//!   Machine frames below 0x100 are the low 1 MiB (`dom_io`), 0x100..0x1000 and
//!   0x3F000..`base` are Xen's (0x3F000..0x40000 back the read-only M2P), 0x1000..0x3F000
//!   belong to dom0, the 0x1000 frames after the domain's RAM to another domU, everything
//!   beyond is MMIO. shared_info (mfn 0xFFF) is a Xen page shared with the domain: owned by
//!   it, with an invalid M2P entry.
//! - **The domain builder** (xg_dom_x86.c, notes §7.4): image at pfn 0, then the p2m list,
//!   start_info, xenstore ring, console ring, the bootstrap tables (L3, the slot-3 L2, L1s
//!   mapping `[VIRT_BASE, end)` with 4 KiB pages, `end` rounded up to 4 MiB with >= 512 KiB
//!   of padding, the table frames read-only) and the boot stack. It pins the L3 and loads it
//!   as cr3, through the model's own rules.
//! - **Page types** (mm.c, notes §8): one type per frame (none / writable / L1 / L2 / L3, plus
//!   the `pae_xen_l2` flag of a slot-3 L2) with a type count; a type changes only at count 0.
//!   A writable L1 entry in a validated L1 holds a writable ref on its target, a present
//!   L2e/L3e an L1/L2 ref. A frame taking a page-table type is validated (refs taken
//!   recursively, undone on failure); at count 0 it is devalidated (refs dropped recursively).
//!   Pins and the cr3 hold one ref each.
//! - **Hypercalls**, with Xen 4.17.5's errnos (the rules below; [`rule_cases`] provokes each
//!   through raw calls on any [`Hypervisor`]): `mmu_update` (NORMAL_PT_UPDATE,
//!   PT_UPDATE_PRESERVE_AD, MACHPHYS_UPDATE), `mmuext_op`, `update_va_mapping`, `multicall`
//!   (arguments are guest virtual addresses, read through the live table),
//!   `memory_op(XENMEM_machphys_mapping)`. A batch stops at the first failing entry and
//!   `done` counts the entries that succeeded. [`XenModel::fail_hypercall`] makes the k-th
//!   hypercall fail instead.
//! - **Guest memory access**: `read_virt`/`write_virt` walk the live (cr3) table and fault on
//!   a non-present or read-only page. Raw pointers from `frame_ptr` cannot be trapped, so the
//!   model snapshots every frame that has no writable mapping in any validated table (every
//!   page table, every frame made read-only) and reports any change not made by Xen as a
//!   [violation](XenModel::violations): on the real Xen that write would have faulted.
//!
//! # The rules and their errnos
//! | rule | errno |
//! |---|---|
//! | present writable L1e naming a page-table frame (any frame whose writable type cannot be taken) | EBUSY |
//! | L1e naming another domain's RAM or a Xen frame | EBUSY |
//! | L1e naming the low 1 MiB or MMIO (`dom_io`, no I/O rights) | EPERM |
//! | L1e with PWT/PCD/PAT; L2e with PWT/PCD/PSE/G; L3e with PWT/PCD/PS/G/NX/high bits | EINVAL |
//! | L2e/L3e naming a frame that is not the domain's | EINVAL |
//! | a page-table type wanted while the frame has another type (count > 0): pin of a writable or differently typed frame, L2e to a non-L1, ... | EINVAL |
//! | validation of a new table fails on an entry | that entry's errno |
//! | L3 without slot 3, or whose slot-3 L2 is already some L3's slot-3 L2 | EINVAL |
//! | mmu_update of slot >= 3 of a live (typed) L3 | EINVAL |
//! | mmu_update of slot >= 428 of a slot-3 (`pae_xen_l2`) L2 | EPERM |
//! | mmu_update into a frame with no page-table type | 0 (unchecked write) |
//! | mmu_update `ptr` in a frame the domain does not own | EINVAL |
//! | PIN of a pinned frame; UNPIN of an unpinned frame; pin/unpin/NEW_BASEPTR of a foreign frame | EINVAL |
//! | PIN_L4_TABLE (32-bit guest) | 0, no effect |
//! | NEW_BASEPTR: validates the L3 on the spot (no pin needed), drops the old cr3's ref | validation's errno |
//! | update_va_mapping of an address without a guest L1 | EINVAL; otherwise as an L1 mmu_update |
//! | unknown mmu_update sub-command / mmuext command / multicall op | ENOSYS |
//!
//! Xen's own writes: validating an L3 clears entries 4..511 and ORs RW|US into present
//! entries 0..3; validating a `pae_xen_l2` L2 writes slots 428..511 (the read-only M2P as
//! 2 MiB pages, the rest empty).
//!
//! Not modelled: TLBs, A/D updates by the CPU, linear page tables, superpages, grant tables,
//! preemption, other vCPUs.

use backend_xen::abi::{
    mmuext, nr, Errno, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, StartInfo,
};
use backend_xen::abi::{
    DOMID_SELF, HYPERVISOR_VIRT_START_PAE, START_INFO_MAGIC, UVMF_INVLPG, VIRT_BASE,
};
use backend_xen::start_info::{validate, StartInfoError};
use backend_xen::{Hypervisor, XenError, XenMmu};
use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::boot::{boot, BootError, BootErrorKind, BootReport, BootState, Stage};
use pvops_core::ioremap::IoremapError;
use pvops_core::mapper::MapError;
use pvops_core::mem::FrameAllocator;
use pvops_core::ops::PageFault;
use pvops_core::options::BootOptions;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Bytes in a frame.
const FB: usize = PAGE_SIZE as usize;
/// Start of the hypervisor hole of a 32-bit domU = start of the M2P (`XENMEM_machphys_mapping`).
pub const HOLE_START: u32 = HYPERVISOR_VIRT_START_PAE;
/// End of the compat M2P (`MACH2PHYS_COMPAT_VIRT_END`).
pub const M2P_END: u32 = 0xFFE0_0000;
/// First Xen-private slot of a `pae_xen_l2` L2: `(HOLE_START - 0xC0000000) >> 21` = 428.
pub const FIRST_XEN_L2_SLOT: usize = ((HOLE_START - 0xC000_0000) >> 21) as usize;
/// Machine frames of the low 1 MiB (`dom_io` for a domU).
pub const LOW_IO_MFNS: u32 = 0x100;
/// dom0's RAM, `[start, end)` machine frames.
pub const DOM0_MFNS: (u32, u32) = (0x1000, 0x3_F000);
/// Xen frames backing the read-only M2P (16 MiB).
pub const M2P_BACKING_MFN: u32 = 0x3_F000;
/// shared_info: a Xen page shared with the domain (owned by it, no valid M2P entry).
pub const SHARED_INFO_MFN: u32 = 0xFFF;
/// Frames of another domU right after this domain's RAM.
pub const OTHER_DOMU_FRAMES: u32 = 0x1000;
/// Lowest machine frame the domain's RAM may start at.
pub const MIN_RAM_BASE: u32 = 0x4_0000;
/// The domain id of the modelled domU.
pub const DOMID: u16 = 5;
/// dom0's id.
pub const DOM0: u16 = 0;
/// The other domU's id.
pub const OTHER_DOMU: u16 = 7;
/// `MMUEXT_PIN_L4_TABLE` (a no-op for a 32-bit guest).
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `MMU_MACHPHYS_UPDATE`.
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// `MMU_PT_UPDATE_PRESERVE_AD`.
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// Invalid M2P entry.
pub const INVALID_M2P: u32 = u32::MAX;

/// Page-table entry bits and Xen's masks for a 32-bit PV guest.
pub mod pte {
    /// Present.
    pub const P: u64 = 1;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User.
    pub const US: u64 = 1 << 2;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty.
    pub const D: u64 = 1 << 6;
    /// PSE in an L2e, PAT in an L1e.
    pub const PSE: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// Software bits 9-11.
    pub const AVAIL: u64 = 0xE00;
    /// Software bits 52-62.
    pub const AVAIL_HIGH: u64 = 0x7FF << 52;
    /// No-execute.
    pub const NX: u64 = 1 << 63;
    /// Machine-address bits.
    pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    /// Refused in a present L1e of a domU without I/O rights: the cache attributes.
    pub const L1_DISALLOW: u64 = PWT | PCD | PSE;
    /// Refused in a present L2e (`base_disallow_mask`: no superpages, no global).
    pub const L2_DISALLOW: u64 = PWT | PCD | PSE | G;
    /// Refused in a present L3e of a 32-bit guest (`0xFFFFF198`: PWT, PCD, PS, G and every
    /// high bit including NX).
    pub const L3_DISALLOW: u64 = PWT | PCD | PSE | G | 0xFFF0_0000_0000_0000;
    /// Flags whose change takes Xen's fast path (no reference change).
    pub const FASTPATH_WHITELIST: u64 = NX | AVAIL_HIGH | AVAIL | G | D | A | US;
}
use pte::*;

fn frame_of(e: u64) -> u32 {
    ((e & ADDR) >> 12) as u32
}

fn errno_name(e: i32) -> String {
    if e == 0 {
        "0".to_string()
    } else {
        Errno(-e).to_string()
    }
}

type R = Result<(), Errno>;

/// Who owns a machine frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The modelled domU.
    Domain,
    /// Another domain's RAM.
    Foreign(u16),
    /// Xen's own memory (heap, M2P).
    Xen,
    /// The low 1 MiB / MMIO (`dom_io`).
    Io,
}

/// A frame's type (`PGT_*`); `None` whenever the type count is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PageType {
    /// No type (count 0).
    #[default]
    None,
    /// `PGT_writable_page`: mapped writable somewhere.
    Writable,
    /// `PGT_l1_page_table`.
    L1,
    /// `PGT_l2_page_table`.
    L2,
    /// `PGT_l3_page_table`.
    L3,
}

impl PageType {
    /// True for L1/L2/L3.
    pub fn is_table(self) -> bool {
        matches!(self, PageType::L1 | PageType::L2 | PageType::L3)
    }
    fn name(self) -> &'static str {
        match self {
            PageType::None => "none",
            PageType::Writable => "writable",
            PageType::L1 => "l1",
            PageType::L2 => "l2",
            PageType::L3 => "l3",
        }
    }
}

/// The model's bookkeeping of one machine frame (Xen's `page_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameState {
    /// Owner.
    pub owner: Owner,
    /// Current type (`None` at count 0).
    pub ty: PageType,
    /// `PGT_pae_xen_l2`: the L2 in slot 3 of an L3, holding Xen's private slots.
    pub pae_xen_l2: bool,
    /// Type count.
    pub count: u32,
    /// `PGT_pinned`.
    pub pinned: bool,
    /// `PGT_validated`.
    pub validated: bool,
}

impl FrameState {
    const fn owned_by(owner: Owner) -> FrameState {
        FrameState {
            owner,
            ty: PageType::None,
            pae_xen_l2: false,
            count: 0,
            pinned: false,
            validated: false,
        }
    }
}

/// How the domain's pseudo-physical frames map to machine frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mLayout {
    /// mfn = base + pfn.
    Offset(u32),
    /// mfn = base + nr_pages - 1 - pfn.
    Reversed(u32),
    /// A deterministic random permutation of `base..base + nr_pages`.
    Shuffled {
        /// First machine frame.
        base: u32,
        /// Permutation seed.
        seed: u64,
    },
}

impl P2mLayout {
    fn base(self) -> u32 {
        match self {
            P2mLayout::Offset(b) | P2mLayout::Reversed(b) | P2mLayout::Shuffled { base: b, .. } => {
                b
            }
        }
    }
    fn build(self, nr: u32) -> Vec<u32> {
        match self {
            P2mLayout::Offset(b) => (0..nr).map(|p| b + p).collect(),
            P2mLayout::Reversed(b) => (0..nr).map(|p| b + nr - 1 - p).collect(),
            P2mLayout::Shuffled { base, seed } => {
                let mut v: Vec<u32> = (0..nr).map(|p| base + p).collect();
                let mut s = seed | 1;
                for i in (1..v.len()).rev() {
                    s = s
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let j = ((s >> 33) % (i as u64 + 1)) as usize;
                    v.swap(i, j);
                }
                v
            }
        }
    }
}

/// The hypercall kinds the model counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcKind {
    /// `mmu_update`.
    MmuUpdate,
    /// `mmuext_op`.
    MmuextOp,
    /// `update_va_mapping`.
    UpdateVaMapping,
    /// `multicall`.
    Multicall,
    /// `memory_op(XENMEM_machphys_mapping)`.
    MachphysMapping,
}

/// Hypercalls the guest made (top-level traps; a multicall counts once, its entries apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvCounters {
    /// Every hypercall.
    pub total: u64,
    /// `mmu_update` calls.
    pub mmu_update_calls: u64,
    /// Requests they carried.
    pub mmu_update_entries: u64,
    /// `mmuext_op` calls.
    pub mmuext_calls: u64,
    /// Operations they carried.
    pub mmuext_ops: u64,
    /// `update_va_mapping` calls.
    pub update_va_mapping_calls: u64,
    /// `multicall` calls.
    pub multicall_calls: u64,
    /// Entries they carried.
    pub multicall_entries: u64,
    /// `memory_op(XENMEM_machphys_mapping)` calls.
    pub machphys_mapping_calls: u64,
    /// Calls that returned an error (injected ones excluded).
    pub failed: u64,
}

impl HvCounters {
    /// `self - earlier`, field by field.
    pub fn since(&self, e: &HvCounters) -> HvCounters {
        HvCounters {
            total: self.total - e.total,
            mmu_update_calls: self.mmu_update_calls - e.mmu_update_calls,
            mmu_update_entries: self.mmu_update_entries - e.mmu_update_entries,
            mmuext_calls: self.mmuext_calls - e.mmuext_calls,
            mmuext_ops: self.mmuext_ops - e.mmuext_ops,
            update_va_mapping_calls: self.update_va_mapping_calls - e.update_va_mapping_calls,
            multicall_calls: self.multicall_calls - e.multicall_calls,
            multicall_entries: self.multicall_entries - e.multicall_entries,
            machphys_mapping_calls: self.machphys_mapping_calls - e.machphys_mapping_calls,
            failed: self.failed - e.failed,
        }
    }
}

/// A hypercall the model failed on purpose ([`XenModel::fail_hypercall`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Its number (1-based, over all hypercalls).
    pub seq: u64,
    /// Its kind.
    pub kind: HcKind,
    /// The errno returned.
    pub errno: Errno,
}

/// A hypercall that Xen's rules refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvFailure {
    /// Its number.
    pub seq: u64,
    /// Its kind.
    pub kind: HcKind,
    /// Index of the failing entry (= `done`).
    pub index: u32,
    /// The errno.
    pub errno: Errno,
    /// Why (the message a debug Xen would print).
    pub reason: String,
}

/// A translation through the live table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The machine frame mapped.
    pub mfn: MachineFrame,
    /// Writable at every level.
    pub writable: bool,
    /// The L1 (machine frame, index) holding the leaf, `None` for a Xen superpage.
    pub l1: Option<(MachineFrame, usize)>,
    /// The leaf entry.
    pub entry: u64,
}

/// Where the builder put everything (pseudo-physical frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuilderLayout {
    /// The kernel image.
    pub image: FrameRange,
    /// The p2m list (`start_info.mfn_list`).
    pub p2m_list: FrameRange,
    /// start_info.
    pub start_info: PhysFrame,
    /// The xenstore ring.
    pub xenstore: PhysFrame,
    /// The console ring.
    pub console: PhysFrame,
    /// All bootstrap table frames (`pt_base`, `nr_pt_frames`).
    pub page_tables: FrameRange,
    /// The bootstrap L3 (`pt_base`).
    pub l3: PhysFrame,
    /// Its slot-3 L2.
    pub l2: PhysFrame,
    /// The L1s.
    pub l1s: FrameRange,
    /// The boot stack page (esp is at its top).
    pub boot_stack: PhysFrame,
    /// End of the mapped region (virtual, 4 MiB aligned).
    pub region_end: u32,
}

/// A domain to build.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// Pages of RAM.
    pub nr_pages: u32,
    /// The command line.
    pub cmdline: String,
    /// Pages of the kernel image (at pfn 0).
    pub image_pages: u32,
    /// Pages of the early page-table pool at the end of the image (0: no pool), like the
    /// real image's `backend_xen::pool::EARLY_TABLE_POOL` in its `.bss`.
    pub pool_pages: u32,
    /// The p2m.
    pub p2m: P2mLayout,
}

impl DomainConfig {
    /// A domU of `mib` MiB: a 3 MiB image (1 MiB of code and data, then the early table
    /// pool) and a shuffled p2m at machine frame 0x40000.
    pub fn new(mib: u32) -> DomainConfig {
        DomainConfig::with_pages(mib * 256)
    }
    /// A domU of `nr_pages` pages (see [`DomainConfig::new`]).
    pub fn with_pages(nr_pages: u32) -> DomainConfig {
        DomainConfig {
            nr_pages,
            cmdline: "/guest.elf console=hvc0".to_string(),
            image_pages: 0x300,
            pool_pages: backend_xen::pool::EARLY_TABLE_FRAMES as u32,
            p2m: P2mLayout::Shuffled {
                base: MIN_RAM_BASE,
                seed: 0x5EED_0F0E,
            },
        }
    }
    /// Sets the size of the early table pool at the end of the image (0: none).
    pub fn pool_pages(mut self, n: u32) -> Self {
        self.pool_pages = n;
        self
    }
    /// Sets the command line.
    pub fn cmdline(mut self, s: &str) -> Self {
        self.cmdline = s.to_string();
        self
    }
    /// Sets the p2m.
    pub fn p2m(mut self, l: P2mLayout) -> Self {
        self.p2m = l;
        self
    }
    /// Sets the image size.
    pub fn image_pages(mut self, n: u32) -> Self {
        self.image_pages = n;
        self
    }
    /// Runs the domain builder.
    pub fn build(&self) -> XenDomain {
        build_domain(self)
    }
}

/// What a guest's entry point sees, plus the model behind it.
pub struct XenDomain {
    /// The hypervisor.
    pub model: XenModel,
    /// start_info as read at `esi` through the bootstrap table.
    pub start_info: Box<StartInfo>,
    /// `esi`: the virtual address of start_info.
    pub start_info_va: u32,
    /// `esp`: top of the boot stack page.
    pub esp: u32,
    /// The kernel image's frames.
    pub image: FrameRange,
    /// The early table pool inside the image (what the real entry takes from
    /// `EARLY_TABLE_POOL.frames(VIRT_BASE)`).
    pub table_pool: FrameRange,
    /// The builder's layout.
    pub layout: BuilderLayout,
}

/// The model of Xen and of the machine under the domU.
pub struct XenModel {
    nr_pages: u32,
    ram_base: u32,
    p2m: Vec<u32>,
    m2p: Vec<u32>,
    frames: Vec<FrameState>,
    mem: Vec<Cell<*mut u8>>,
    snaps: HashMap<u32, Box<[u8; FB]>>,
    cr3: u32,
    layout: Option<BuilderLayout>,
    counters: Rc<Cell<HvCounters>>,
    fail_at: Option<(u64, Errno)>,
    injected: Option<InjectedFault>,
    failures: Vec<HvFailure>,
    reason: Option<String>,
    log: Vec<String>,
    violations: Vec<String>,
    clock: Cell<u64>,
}

impl Drop for XenModel {
    fn drop(&mut self) {
        for c in &self.mem {
            let p = c.get();
            if !p.is_null() {
                // SAFETY: allocated in `host` with `frame_layout()`, freed only here.
                unsafe { dealloc(p, frame_layout()) };
            }
        }
    }
}

fn frame_layout() -> Layout {
    Layout::from_size_align(FB, FB).expect("4 KiB layout")
}

impl fmt::Debug for XenModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenModel")
            .field("nr_pages", &self.nr_pages)
            .field("cr3", &format_args!("{:#x}", self.cr3))
            .field("counters", &self.counters.get())
            .finish_non_exhaustive()
    }
}

impl XenModel {
    fn empty(nr_pages: u32, p2m_layout: P2mLayout) -> XenModel {
        let base = p2m_layout.base();
        assert!(
            base >= MIN_RAM_BASE,
            "the domain's RAM must start at or above mfn {MIN_RAM_BASE:#x}"
        );
        let p2m = p2m_layout.build(nr_pages);
        let total = (base + nr_pages + OTHER_DOMU_FRAMES) as usize;
        let mut frames = vec![FrameState::owned_by(Owner::Xen); total];
        let mut m2p = vec![INVALID_M2P; total];
        for (mfn, st) in frames.iter_mut().enumerate() {
            let mfn = mfn as u32;
            st.owner = if mfn < LOW_IO_MFNS {
                Owner::Io
            } else if (DOM0_MFNS.0..DOM0_MFNS.1).contains(&mfn) {
                m2p[mfn as usize] = mfn - DOM0_MFNS.0;
                Owner::Foreign(DOM0)
            } else if mfn >= base + nr_pages {
                m2p[mfn as usize] = mfn - (base + nr_pages);
                Owner::Foreign(OTHER_DOMU)
            } else if mfn >= base {
                Owner::Domain
            } else {
                Owner::Xen
            };
        }
        frames[SHARED_INFO_MFN as usize].owner = Owner::Domain;
        for (pfn, mfn) in p2m.iter().enumerate() {
            m2p[*mfn as usize] = pfn as u32;
        }
        XenModel {
            nr_pages,
            ram_base: base,
            p2m,
            m2p,
            frames,
            mem: (0..total)
                .map(|_| Cell::new(core::ptr::null_mut()))
                .collect(),
            snaps: HashMap::new(),
            cr3: 0,
            layout: None,
            counters: Rc::new(Cell::new(HvCounters::default())),
            fail_at: None,
            injected: None,
            failures: Vec::new(),
            reason: None,
            log: Vec::new(),
            violations: Vec::new(),
            clock: Cell::new(0),
        }
    }

    // ----- introspection -----

    /// Pages of the domain.
    pub fn nr_pages(&self) -> u32 {
        self.nr_pages
    }
    /// First machine frame of the domain's RAM.
    pub fn ram_base(&self) -> MachineFrame {
        MachineFrame(self.ram_base)
    }
    /// The builder's layout.
    pub fn layout(&self) -> BuilderLayout {
        self.layout.expect("built domain")
    }
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> MachineFrame {
        MachineFrame(self.p2m[pfn.0 as usize])
    }
    /// The domain's pfn of `mfn`, if it is the domain's RAM.
    pub fn pfn(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        let raw = *self.m2p.get(mfn.0 as usize)?;
        (raw < self.nr_pages && self.p2m[raw as usize] == mfn.0).then_some(PhysFrame(raw))
    }
    /// State of a machine frame (MMIO beyond memory reads as an `Io` frame).
    pub fn state_mfn(&self, mfn: MachineFrame) -> FrameState {
        self.frames
            .get(mfn.0 as usize)
            .copied()
            .unwrap_or(FrameState::owned_by(Owner::Io))
    }
    /// State of the machine frame behind `pfn`.
    pub fn state(&self, pfn: PhysFrame) -> FrameState {
        self.state_mfn(self.mfn(pfn))
    }
    /// Changes a frame's owner (to stage foreign frames in tests).
    pub fn set_owner(&mut self, mfn: MachineFrame, owner: Owner) {
        self.frames[mfn.0 as usize].owner = owner;
    }
    /// The live L3 (machine frame).
    pub fn cr3(&self) -> MachineFrame {
        MachineFrame(self.cr3)
    }
    /// The live L3 as a pfn.
    pub fn cr3_pfn(&self) -> Option<PhysFrame> {
        self.pfn(self.cr3())
    }
    /// Hypercall counters.
    pub fn counters(&self) -> HvCounters {
        self.counters.get()
    }
    /// A handle on the counters that stays readable while the model is borrowed elsewhere.
    pub fn counters_handle(&self) -> Rc<Cell<HvCounters>> {
        Rc::clone(&self.counters)
    }
    /// The backend's log lines.
    pub fn log_lines(&self) -> &[String] {
        &self.log
    }
    /// Every hypercall the rules refused, in order.
    pub fn failures(&self) -> &[HvFailure] {
        &self.failures
    }
    /// The injected fault, once it fired.
    pub fn injected(&self) -> Option<InjectedFault> {
        self.injected
    }
    /// Makes the `k`-th hypercall (1-based, counting every kind) return `-errno` without
    /// doing anything.
    pub fn fail_hypercall(&mut self, k: u64, errno: Errno) {
        self.fail_at = Some((k, errno));
    }
    /// Changes made to frames without a writable mapping, found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
    /// Entry `index` of machine frame `mfn`.
    pub fn entry_mfn(&self, mfn: MachineFrame, index: usize) -> u64 {
        self.pte(mfn.0, index)
    }
    /// Entry `index` of the frame behind `pfn`.
    pub fn entry(&self, pfn: PhysFrame, index: usize) -> u64 {
        self.pte(self.p2m[pfn.0 as usize], index)
    }
    /// Machine frames of every validated page table.
    pub fn tables(&self) -> Vec<(MachineFrame, PageType)> {
        (0..self.frames.len())
            .filter(|m| self.frames[*m].ty.is_table() && self.frames[*m].count > 0)
            .map(|m| (MachineFrame(m as u32), self.frames[m].ty))
            .collect()
    }
    /// Every writable entry of a validated L1 naming a page-table frame: `(l1, index,
    /// target)`. Xen's rules make this empty; the scan checks the model itself.
    pub fn writable_pagetable_mappings(&self) -> Vec<(MachineFrame, usize, MachineFrame)> {
        let mut out = Vec::new();
        for (l1, ty) in self.tables() {
            if ty != PageType::L1 {
                continue;
            }
            for i in 0..512 {
                let e = self.pte(l1.0, i);
                if e & (P | RW) == (P | RW)
                    && self.state_mfn(MachineFrame(frame_of(e))).ty.is_table()
                {
                    out.push((l1, i, MachineFrame(frame_of(e))));
                }
            }
        }
        out
    }

    /// Translates `va` through the live table (no access check).
    pub fn translate(&self, va: VirtAddr) -> Option<Mapping> {
        let va = va.0;
        let l3e = self.pte(self.cr3, (va >> 30) as usize);
        if l3e & P == 0 {
            return None;
        }
        let l2e = self.pte(frame_of(l3e), ((va >> 21) & 511) as usize);
        if l2e & P == 0 {
            return None;
        }
        if l2e & PSE != 0 {
            let mfn = frame_of(l2e) + ((va >> 12) & 511);
            return Some(Mapping {
                mfn: MachineFrame(mfn),
                writable: l3e & l2e & RW != 0,
                l1: None,
                entry: l2e,
            });
        }
        let l1 = frame_of(l2e);
        let idx = ((va >> 12) & 511) as usize;
        let l1e = self.pte(l1, idx);
        if l1e & P == 0 {
            return None;
        }
        Some(Mapping {
            mfn: MachineFrame(frame_of(l1e)),
            writable: l3e & l2e & l1e & RW != 0,
            l1: Some((MachineFrame(l1), idx)),
            entry: l1e,
        })
    }

    /// A guest access to `va` as the CPU does it (ring 1, CR0.WP set).
    pub fn access(&self, va: VirtAddr, write: bool) -> Result<Mapping, PageFault> {
        let w = if write { 2 } else { 0 };
        match self.translate(va) {
            None => Err(PageFault { addr: va, error: w }),
            Some(m) if write && !m.writable => Err(PageFault {
                addr: va,
                error: 1 | w,
            }),
            Some(m) => Ok(m),
        }
    }

    /// Checks the model's own invariants and the guest's conduct; returns every problem
    /// (the recorded [violations](XenModel::violations) included):
    /// - every type count equals the references the validated tables, pins and cr3 hold,
    ///   and each reference names a frame of the right type;
    /// - no frame without a writable mapping changed outside Xen;
    /// - the p2m list in guest memory still matches the p2m.
    pub fn audit(&mut self) -> Vec<String> {
        let snaps: Vec<u32> = self.snaps.keys().copied().collect();
        for mfn in snaps {
            self.snap_check(mfn, "audit");
        }
        let mut out = self.violations.clone();
        let mut exp: HashMap<u32, (u32, PageType, bool)> = HashMap::new();
        let mut add = |out: &mut Vec<String>, t: u32, ty: PageType, pae: bool, from: String| {
            let e = exp.entry(t).or_insert((0, ty, pae));
            if e.1 != ty || e.2 != pae {
                out.push(format!(
                    "mfn {t:#x} is referenced as {} and as {} ({from})",
                    e.1.name(),
                    ty.name()
                ));
            }
            e.0 += 1;
        };
        for (m, ty) in self.tables() {
            let st = self.frames[m.0 as usize];
            if !st.validated {
                out.push(format!(
                    "mfn {:#x} has type {} but is not validated",
                    m.0,
                    ty.name()
                ));
            }
            for i in 0..512 {
                let e = self.pte(m.0, i);
                if e & P == 0 {
                    continue;
                }
                let t = frame_of(e);
                match ty {
                    PageType::L1 if e & RW != 0 && self.owned(t) => add(
                        &mut out,
                        t,
                        PageType::Writable,
                        false,
                        format!("l1 {:#x}[{i}]", m.0),
                    ),
                    PageType::L2 if !(st.pae_xen_l2 && i >= FIRST_XEN_L2_SLOT) => add(
                        &mut out,
                        t,
                        PageType::L1,
                        false,
                        format!("l2 {:#x}[{i}]", m.0),
                    ),
                    PageType::L3 if i < 4 => add(
                        &mut out,
                        t,
                        PageType::L2,
                        i == 3,
                        format!("l3 {:#x}[{i}]", m.0),
                    ),
                    PageType::L3 => out.push(format!("l3 {:#x} has entry {i} present", m.0)),
                    _ => {}
                }
            }
        }
        for (m, st) in self.frames.iter().enumerate() {
            if st.pinned {
                add(&mut out, m as u32, st.ty, st.pae_xen_l2, "pin".into());
            }
        }
        add(&mut out, self.cr3, PageType::L3, false, "cr3".into());
        for (m, st) in self.frames.iter().enumerate() {
            let (n, ty, pae) = exp
                .get(&(m as u32))
                .copied()
                .unwrap_or((0, PageType::None, false));
            if st.count != n
                || (n > 0 && (st.ty != ty || st.pae_xen_l2 != pae))
                || (n == 0 && st.ty != PageType::None)
            {
                out.push(format!(
                    "mfn {m:#x}: type {} (pae {}) count {} but {n} refs of type {} (pae {pae}) exist",
                    st.ty.name(),
                    st.pae_xen_l2,
                    st.count,
                    ty.name()
                ));
            }
        }
        if let Some(l) = self.layout {
            for pfn in 0..self.nr_pages {
                let at = l.p2m_list.start.0 + pfn / 1024;
                let v = self.read_u32(self.p2m[at as usize], (pfn % 1024) as usize * 4);
                if v != self.p2m[pfn as usize] {
                    out.push(format!(
                        "p2m list entry {pfn:#x} = {v:#x}, p2m says {:#x}",
                        self.p2m[pfn as usize]
                    ));
                    break;
                }
            }
        }
        out
    }

    // ----- memory -----

    fn owned(&self, mfn: u32) -> bool {
        self.frames
            .get(mfn as usize)
            .is_some_and(|s| s.owner == Owner::Domain)
    }

    fn host(&self, mfn: u32) -> *mut u8 {
        let c = &self.mem[mfn as usize];
        if c.get().is_null() {
            // SAFETY: a non-zero-sized layout.
            let p = unsafe { alloc_zeroed(frame_layout()) };
            assert!(!p.is_null(), "out of host memory");
            c.set(p);
        }
        c.get()
    }

    fn bytes(&self, mfn: u32) -> Option<&[u8; FB]> {
        let p = self.mem.get(mfn as usize)?.get();
        // SAFETY: an allocated frame of FB bytes; the model is single-threaded and the guest
        // does not write through frame_ptr while a model method runs.
        (!p.is_null()).then(|| unsafe { &*(p as *const [u8; FB]) })
    }

    fn pte(&self, mfn: u32, index: usize) -> u64 {
        match self.bytes(mfn) {
            Some(b) => u64::from_le_bytes(b[index * 8..index * 8 + 8].try_into().expect("8 bytes")),
            None => 0,
        }
    }

    fn read_u32(&self, mfn: u32, off: usize) -> u32 {
        match self.bytes(mfn) {
            Some(b) => u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes")),
            None => 0,
        }
    }

    fn write_raw(&self, mfn: u32, off: usize, data: &[u8]) {
        assert!(off + data.len() <= FB);
        // SAFETY: host frame of FB bytes, in bounds.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.host(mfn).add(off), data.len())
        };
    }

    /// A write by Xen (or the builder): memory and, if the frame has one, its snapshot.
    fn xen_write(&mut self, mfn: u32, index: usize, val: u64) {
        self.write_raw(mfn, index * 8, &val.to_le_bytes());
        if let Some(s) = self.snaps.get_mut(&mfn) {
            s[index * 8..index * 8 + 8].copy_from_slice(&val.to_le_bytes());
        }
    }

    fn snap_take(&mut self, mfn: u32) {
        if !self.owned(mfn) {
            return;
        }
        let mut b = Box::new([0u8; FB]);
        if let Some(src) = self.bytes(mfn) {
            b.copy_from_slice(src);
        }
        self.snaps.insert(mfn, b);
    }

    fn snap_check(&mut self, mfn: u32, when: &str) {
        let Some(s) = self.snaps.get(&mfn) else {
            return;
        };
        let zero = [0u8; FB];
        let cur = self.bytes(mfn).unwrap_or(&zero);
        if let Some(off) = (0..FB).find(|i| s[*i] != cur[*i]) {
            let st = self.frames[mfn as usize];
            let msg = format!(
                "mfn {mfn:#x} (pfn {:?}, type {} count {}) changed at byte {off:#x} while it had no writable mapping (seen at {when}): \
                 {:#x} -> {:#x}; on Xen that write faults",
                self.pfn(MachineFrame(mfn)),
                st.ty.name(),
                st.count,
                s[off],
                cur[off]
            );
            let copy: Box<[u8; FB]> = Box::new(*cur);
            self.violations.push(msg);
            self.snaps.insert(mfn, copy);
        }
    }

    fn why(&mut self, errno: Errno, f: impl FnOnce() -> String) -> Errno {
        if self.reason.is_none() {
            self.reason = Some(f());
        }
        errno
    }

    // ----- types -----

    fn get_type(&mut self, mfn: u32, ty: PageType, pae: bool) -> R {
        let s = self.frames[mfn as usize];
        if s.count == 0 {
            if ty == PageType::Writable {
                self.snap_check(mfn, "the frame gained a writable mapping");
                self.snaps.remove(&mfn);
                let f = &mut self.frames[mfn as usize];
                (f.ty, f.pae_xen_l2, f.count, f.validated) = (ty, false, 1, true);
                return Ok(());
            }
            self.snap_check(mfn, "the frame became a page table");
            let f = &mut self.frames[mfn as usize];
            (f.ty, f.pae_xen_l2, f.count, f.validated) = (ty, pae, 1, false);
            match self.validate(mfn, ty, pae) {
                Ok(()) => {
                    self.frames[mfn as usize].validated = true;
                    self.snap_take(mfn);
                    Ok(())
                }
                Err(e) => {
                    let f = &mut self.frames[mfn as usize];
                    (f.ty, f.pae_xen_l2, f.count, f.validated) = (PageType::None, false, 0, false);
                    Err(e)
                }
            }
        } else if s.ty == ty && s.pae_xen_l2 == pae {
            self.frames[mfn as usize].count += 1;
            Ok(())
        } else {
            Err(self.why(Errno::EINVAL, || {
                format!(
                    "Bad type (saw {}{} count {} != exp {}{}) mfn {mfn:#x}",
                    s.ty.name(),
                    if s.pae_xen_l2 { "+pae_xen_l2" } else { "" },
                    s.count,
                    ty.name(),
                    if pae { "+pae_xen_l2" } else { "" }
                )
            }))
        }
    }

    fn put_type(&mut self, mfn: u32) {
        let s = self.frames[mfn as usize];
        if s.count == 0 {
            self.violations
                .push(format!("model bug: put_type of untyped mfn {mfn:#x}"));
            return;
        }
        self.frames[mfn as usize].count -= 1;
        if s.count == 1 {
            let f = &mut self.frames[mfn as usize];
            (f.ty, f.pae_xen_l2, f.validated) = (PageType::None, false, false);
            match s.ty {
                PageType::Writable => self.snap_take(mfn),
                t if t.is_table() && s.validated => self.devalidate(mfn, t, s.pae_xen_l2),
                _ => {}
            }
        }
    }

    fn validate(&mut self, mfn: u32, ty: PageType, pae: bool) -> R {
        match ty {
            PageType::L1 => {
                for i in 0..512 {
                    let e = self.pte(mfn, i);
                    if e & P == 0 {
                        continue;
                    }
                    if let Err(x) = self.get_l1e(e) {
                        let _ = self.why(x, || {
                            format!("Failure in alloc_l1_table: mfn {mfn:#x} slot {i}")
                        });
                        for j in 0..i {
                            self.put_l1e(self.pte(mfn, j));
                        }
                        return Err(x);
                    }
                }
                Ok(())
            }
            PageType::L2 => {
                let mut taken = Vec::new();
                for i in 0..512 {
                    if pae && i >= FIRST_XEN_L2_SLOT {
                        break;
                    }
                    let e = self.pte(mfn, i);
                    if e & P == 0 {
                        continue;
                    }
                    let t = frame_of(e);
                    let r = if e & L2_DISALLOW != 0 {
                        Err(self.why(Errno::EINVAL, || {
                            format!("Bad L2 flags {:#x}", e & L2_DISALLOW)
                        }))
                    } else if !self.owned(t) {
                        Err(self.why(Errno::EINVAL, || {
                            format!("L2 entry names mfn {t:#x}, not the domain's")
                        }))
                    } else {
                        self.get_type(t, PageType::L1, false)
                    };
                    if let Err(x) = r {
                        let _ = self.why(x, || {
                            format!("Failure in alloc_l2_table: mfn {mfn:#x} slot {i}")
                        });
                        for t in taken {
                            self.put_type(t);
                        }
                        return Err(x);
                    }
                    taken.push(t);
                }
                if pae {
                    self.write_xen_slots(mfn);
                }
                Ok(())
            }
            PageType::L3 => self.validate_l3(mfn),
            _ => Ok(()),
        }
    }

    fn validate_l3(&mut self, mfn: u32) -> R {
        // "the full page is visible to the MMU": Xen clears entries 4..511.
        for i in 4..512 {
            if self.pte(mfn, i) != 0 {
                self.xen_write(mfn, i, 0);
            }
        }
        let mut taken = Vec::new();
        let mut rc = Ok(());
        for i in 0..4 {
            let e = self.pte(mfn, i);
            if i == 3 && e & P == 0 {
                rc = Err(self.why(Errno::EINVAL, || "PAE L3 3rd slot is empty".into()));
                break;
            }
            if e & P == 0 {
                continue;
            }
            let t = frame_of(e);
            if e & L3_DISALLOW != 0 {
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("Bad L3 flags {:#x}", e & L3_DISALLOW)
                }));
                break;
            }
            if !self.owned(t) {
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("L3 entry names mfn {t:#x}, not the domain's")
                }));
                break;
            }
            if let Err(x) = self.get_type(t, PageType::L2, i == 3) {
                rc = Err(x);
                break;
            }
            taken.push(t);
            self.xen_write(mfn, i, e | RW | US);
        }
        if rc.is_ok() {
            let l2 = frame_of(self.pte(mfn, 3));
            if self.frames[l2 as usize].count != 1 {
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("PAE L3 3rd slot is shared (l2 mfn {l2:#x})")
                }));
            }
        }
        if rc.is_err() {
            for t in taken {
                self.put_type(t);
            }
        }
        rc
    }

    /// Xen's private slots of a slot-3 L2: the read-only M2P as 2 MiB pages, the rest empty.
    fn write_xen_slots(&mut self, mfn: u32) {
        for (k, i) in (FIRST_XEN_L2_SLOT..512).enumerate() {
            let m2p_slots = ((M2P_END - HOLE_START) >> 21) as usize;
            let v = if k < 8.min(m2p_slots) {
                (((M2P_BACKING_MFN + k as u32 * 512) as u64) << 12) | P | US | A | PSE
            } else {
                0
            };
            self.xen_write(mfn, i, v);
        }
    }

    fn devalidate(&mut self, mfn: u32, ty: PageType, pae: bool) {
        match ty {
            PageType::L1 => {
                for i in 0..512 {
                    self.put_l1e(self.pte(mfn, i));
                }
            }
            PageType::L2 => {
                for i in 0..512 {
                    if pae && i >= FIRST_XEN_L2_SLOT {
                        break;
                    }
                    let e = self.pte(mfn, i);
                    if e & P != 0 && self.owned(frame_of(e)) {
                        self.put_type(frame_of(e));
                    }
                }
            }
            PageType::L3 => {
                for i in 0..4 {
                    let e = self.pte(mfn, i);
                    if e & P != 0 && self.owned(frame_of(e)) {
                        self.put_type(frame_of(e));
                    }
                }
            }
            _ => {}
        }
    }

    /// `get_page_from_l1e`.
    fn get_l1e(&mut self, e: u64) -> R {
        if e & L1_DISALLOW != 0 {
            return Err(self.why(Errno::EINVAL, || {
                format!("Bad L1 flags {:#x}", e & L1_DISALLOW)
            }));
        }
        let t = frame_of(e);
        match self.frames.get(t as usize).map(|s| s.owner) {
            None | Some(Owner::Io) => {
                return Err(self.why(Errno::EPERM, || {
                    format!("d{DOMID} non-privileged attempt to map I/O space mfn {t:#x}")
                }))
            }
            Some(Owner::Domain) => {}
            Some(o) => {
                return Err(self.why(Errno::EBUSY, || {
                    format!(
                    "pg_owner d{DOMID} l1e_owner d{DOMID}, but real_pg_owner {o:?} (mfn {t:#x})"
                )
                }))
            }
        }
        if e & RW != 0 && self.get_type(t, PageType::Writable, false).is_err() {
            return Err(self.why(Errno::EBUSY, || {
                format!("Could not get page type PGT_writable_page for mfn {t:#x}")
            }));
        }
        Ok(())
    }

    /// `put_page_from_l1e`.
    fn put_l1e(&mut self, e: u64) {
        if e & (P | RW) == (P | RW) && self.owned(frame_of(e)) {
            self.put_type(frame_of(e));
        }
    }

    fn mod_l1(&mut self, mfn: u32, idx: usize, new: u64) -> R {
        let old = self.pte(mfn, idx);
        if new & P != 0 {
            if new & L1_DISALLOW != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L1 flags {:#x}", new & L1_DISALLOW)
                }));
            }
            if (old ^ new) & !FASTPATH_WHITELIST == 0 {
                self.xen_write(mfn, idx, new);
                return Ok(());
            }
            self.get_l1e(new)?;
        }
        self.xen_write(mfn, idx, new);
        self.put_l1e(old);
        Ok(())
    }

    fn mod_l2(&mut self, mfn: u32, idx: usize, new: u64, pae: bool) -> R {
        if pae && idx >= FIRST_XEN_L2_SLOT {
            return Err(self.why(Errno::EPERM, || {
                format!("Illegal L2 update attempt in Xen-private area (slot {idx})")
            }));
        }
        let old = self.pte(mfn, idx);
        if new & P != 0 {
            if new & L2_DISALLOW != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L2 flags {:#x}", new & L2_DISALLOW)
                }));
            }
            if (old ^ new) & !FASTPATH_WHITELIST == 0 {
                self.xen_write(mfn, idx, new);
                return Ok(());
            }
            let t = frame_of(new);
            if !self.owned(t) {
                return Err(self.why(Errno::EINVAL, || {
                    format!("L2 entry names mfn {t:#x}, not the domain's")
                }));
            }
            self.get_type(t, PageType::L1, false)?;
        }
        self.xen_write(mfn, idx, new);
        if old & P != 0 && self.owned(frame_of(old)) {
            self.put_type(frame_of(old));
        }
        Ok(())
    }

    fn mod_l3(&mut self, mfn: u32, idx: usize, new: u64) -> R {
        if idx >= 3 {
            return Err(self.why(Errno::EINVAL, || {
                format!("L3 slot {idx} of a 32-bit guest's live L3 cannot be updated")
            }));
        }
        let old = self.pte(mfn, idx);
        let mut new = new;
        if new & P != 0 {
            if new & L3_DISALLOW != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L3 flags {:#x}", new & L3_DISALLOW)
                }));
            }
            let t = frame_of(new);
            if !self.owned(t) {
                return Err(self.why(Errno::EINVAL, || {
                    format!("L3 entry names mfn {t:#x}, not the domain's")
                }));
            }
            self.get_type(t, PageType::L2, false)?;
            new |= RW | US;
        }
        self.xen_write(mfn, idx, new);
        if old & P != 0 && self.owned(frame_of(old)) {
            self.put_type(frame_of(old));
        }
        Ok(())
    }

    // ----- hypercall bodies -----

    fn enter(&mut self, kind: HcKind, entries: usize) -> Option<i32> {
        let mut c = self.counters.get();
        c.total += 1;
        let n = entries as u64;
        match kind {
            HcKind::MmuUpdate => {
                (c.mmu_update_calls, c.mmu_update_entries) =
                    (c.mmu_update_calls + 1, c.mmu_update_entries + n)
            }
            HcKind::MmuextOp => {
                (c.mmuext_calls, c.mmuext_ops) = (c.mmuext_calls + 1, c.mmuext_ops + n)
            }
            HcKind::UpdateVaMapping => c.update_va_mapping_calls += 1,
            HcKind::Multicall => {
                (c.multicall_calls, c.multicall_entries) =
                    (c.multicall_calls + 1, c.multicall_entries + n)
            }
            HcKind::MachphysMapping => c.machphys_mapping_calls += 1,
        }
        self.counters.set(c);
        self.clock.set(self.clock.get() + 200 + 4 * n);
        self.reason = None;
        if let Some((k, errno)) = self.fail_at {
            if k == c.total {
                self.fail_at = None;
                self.injected = Some(InjectedFault {
                    seq: k,
                    kind,
                    errno,
                });
                self.log.push(format!(
                    "model: injected {errno} into hypercall #{k} ({kind:?})"
                ));
                return Some(-errno.0);
            }
        }
        None
    }

    fn finish(&mut self, kind: HcKind, index: u32, rc: R) -> i32 {
        match rc {
            Ok(()) => 0,
            Err(errno) => {
                let mut c = self.counters.get();
                c.failed += 1;
                self.counters.set(c);
                let reason = self.reason.take().unwrap_or_default();
                self.failures.push(HvFailure {
                    seq: c.total,
                    kind,
                    index,
                    errno,
                    reason,
                });
                -errno.0
            }
        }
    }

    fn do_mmu_update(&mut self, reqs: &[MmuUpdate]) -> (u32, R) {
        for (i, r) in reqs.iter().enumerate() {
            let ma = r.ptr & !7;
            let rc = match r.ptr & 7 {
                0 => self.pt_update(ma, r.val, false),
                MMU_PT_UPDATE_PRESERVE_AD => self.pt_update(ma, r.val, true),
                MMU_MACHPHYS_UPDATE => {
                    let mfn = (ma >> 12) as u32;
                    if self.owned(mfn) {
                        self.m2p[mfn as usize] = r.val as u32;
                        Ok(())
                    } else {
                        Err(self.why(Errno::EINVAL, || {
                            format!("Could not get page for mach->phys update (mfn {mfn:#x})")
                        }))
                    }
                }
                _ => Err(self.why(Errno::ENOSYS, || {
                    format!("Invalid page update command {:#x}", r.ptr & 7)
                })),
            };
            if let Err(e) = rc {
                return (i as u32, Err(e));
            }
        }
        (reqs.len() as u32, Ok(()))
    }

    fn pt_update(&mut self, ma: u64, val: u64, preserve_ad: bool) -> R {
        let mfn = (ma >> 12) as u32;
        let idx = ((ma & 0xFFF) >> 3) as usize;
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("Could not get page for normal update (ptr {ma:#x})")
            }));
        }
        let val = if preserve_ad {
            val | (self.pte(mfn, idx) & (A | D))
        } else {
            val
        };
        let s = self.frames[mfn as usize];
        if s.count > 0 && s.ty.is_table() {
            self.snap_check(mfn, "a checked update of the table");
            match s.ty {
                PageType::L1 => self.mod_l1(mfn, idx, val),
                PageType::L2 => self.mod_l2(mfn, idx, val, s.pae_xen_l2),
                _ => self.mod_l3(mfn, idx, val),
            }
        } else {
            // Not a page table now: an unchecked write.
            self.xen_write(mfn, idx, val);
            Ok(())
        }
    }

    fn do_mmuext(&mut self, ops: &[MmuextOp]) -> (u32, R) {
        for (i, op) in ops.iter().enumerate() {
            let m = op.arg1;
            let rc = match op.cmd {
                mmuext::PIN_L1_TABLE => self.pin(m, PageType::L1),
                mmuext::PIN_L2_TABLE => self.pin(m, PageType::L2),
                mmuext::PIN_L3_TABLE => self.pin(m, PageType::L3),
                MMUEXT_PIN_L4_TABLE => Ok(()),
                mmuext::UNPIN_TABLE => self.unpin(m),
                mmuext::NEW_BASEPTR => self.new_baseptr(m),
                mmuext::TLB_FLUSH_LOCAL | mmuext::INVLPG_LOCAL | 8..=11 => Ok(()),
                c => Err(self.why(Errno::ENOSYS, || {
                    format!("Invalid extended pt command {c:#x}")
                })),
            };
            if let Err(e) = rc {
                return (i as u32, Err(e));
            }
        }
        (ops.len() as u32, Ok(()))
    }

    fn pin(&mut self, mfn: u32, ty: PageType) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("pin: mfn {mfn:#x} is not the domain's")
            }));
        }
        self.get_type(mfn, ty, false)?;
        if self.frames[mfn as usize].pinned {
            self.put_type(mfn);
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} already pinned")));
        }
        self.frames[mfn as usize].pinned = true;
        Ok(())
    }

    fn unpin(&mut self, mfn: u32) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} bad domain")));
        }
        if !self.frames[mfn as usize].pinned {
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} not pinned")));
        }
        self.frames[mfn as usize].pinned = false;
        self.put_type(mfn);
        Ok(())
    }

    fn new_baseptr(&mut self, mfn: u32) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("NEW_BASEPTR: mfn {mfn:#x} is not the domain's")
            }));
        }
        self.get_type(mfn, PageType::L3, false)?;
        let old = self.cr3;
        self.cr3 = mfn;
        self.put_type(old);
        Ok(())
    }

    fn do_update_va_mapping(&mut self, va: u32, val: u64) -> R {
        let l3e = self.pte(self.cr3, (va >> 30) as usize);
        let l2e = if l3e & P != 0 {
            self.pte(frame_of(l3e), ((va >> 21) & 511) as usize)
        } else {
            0
        };
        let l1 = frame_of(l2e);
        let s = self.state_mfn(MachineFrame(l1));
        if l2e & P == 0
            || l2e & PSE != 0
            || s.owner != Owner::Domain
            || s.ty != PageType::L1
            || s.count == 0
        {
            return Err(self.why(Errno::EINVAL, || {
                format!("update_va_mapping {va:#x}: no guest L1 maps it")
            }));
        }
        self.snap_check(l1, "update_va_mapping");
        self.mod_l1(l1, ((va >> 12) & 511) as usize, val)
    }

    fn read_guest(&self, va: u32, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        // SAFETY: the model reads its own frames.
        unsafe { self.read_virt(VirtAddr(va), &mut buf) }.ok()?;
        Some(buf)
    }

    fn write_guest(&mut self, va: u32, data: &[u8]) -> bool {
        // SAFETY: the model writes its own frames.
        unsafe { self.write_virt(VirtAddr(va), data) }.is_ok()
    }

    fn multicall_entry(&mut self, c: &MulticallEntry) -> i32 {
        let a = c.args;
        let self_dom = |d: u32| d as u16 == DOMID_SELF || d as u16 == DOMID;
        match c.op as usize {
            nr::MMU_UPDATE | nr::MMUEXT_OP => {
                if !self_dom(a[3]) {
                    return -Errno::EPERM.0;
                }
                let is_mmu = c.op as usize == nr::MMU_UPDATE;
                let size = if is_mmu { 16 } else { 12 };
                let Some(raw) = self.read_guest(a[0], a[1] as usize * size) else {
                    return -Errno::EFAULT.0;
                };
                let word = |b: &[u8], o: usize| {
                    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
                };
                let (done, rc) = if is_mmu {
                    let reqs: Vec<MmuUpdate> = raw
                        .chunks(16)
                        .map(|b| MmuUpdate {
                            ptr: word(b, 0) as u64 | (word(b, 4) as u64) << 32,
                            val: word(b, 8) as u64 | (word(b, 12) as u64) << 32,
                        })
                        .collect();
                    self.do_mmu_update(&reqs)
                } else {
                    let ops: Vec<MmuextOp> = raw
                        .chunks(12)
                        .map(|b| MmuextOp {
                            cmd: word(b, 0),
                            arg1: word(b, 4),
                            arg2: word(b, 8),
                        })
                        .collect();
                    self.do_mmuext(&ops)
                };
                if a[2] != 0 && !self.write_guest(a[2], &done.to_le_bytes()) {
                    return -Errno::EFAULT.0;
                }
                rc.err().map_or(0, |e| -e.0)
            }
            nr::UPDATE_VA_MAPPING => self
                .do_update_va_mapping(a[0], a[1] as u64 | (a[2] as u64) << 32)
                .err()
                .map_or(0, |e| -e.0),
            _ => -Errno::ENOSYS.0,
        }
    }
}

impl Hypervisor for XenModel {
    fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32 {
        if let Some(r) = self.enter(HcKind::MmuUpdate, reqs.len()) {
            *done = 0;
            return r;
        }
        let (n, rc) = self.do_mmu_update(reqs);
        *done = n;
        self.finish(HcKind::MmuUpdate, n, rc)
    }
    fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32 {
        if let Some(r) = self.enter(HcKind::MmuextOp, ops.len()) {
            *done = 0;
            return r;
        }
        let (n, rc) = self.do_mmuext(ops);
        *done = n;
        self.finish(HcKind::MmuextOp, n, rc)
    }
    fn update_va_mapping(&mut self, va: VirtAddr, val: u64, _flags: u32) -> i32 {
        if let Some(r) = self.enter(HcKind::UpdateVaMapping, 1) {
            return r;
        }
        let rc = self.do_update_va_mapping(va.0, val);
        self.finish(HcKind::UpdateVaMapping, 0, rc)
    }
    fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
        if let Some(r) = self.enter(HcKind::Multicall, calls.len()) {
            return r;
        }
        let seq = self.counters.get().total;
        for (i, c) in calls.iter_mut().enumerate() {
            self.reason = None;
            let ret = self.multicall_entry(c);
            c.result = ret as u32;
            if ret < 0 {
                let reason = format!(
                    "entry op {}: {}",
                    c.op,
                    self.reason.take().unwrap_or_default()
                );
                self.failures.push(HvFailure {
                    seq,
                    kind: HcKind::Multicall,
                    index: i as u32,
                    errno: Errno(-ret),
                    reason,
                });
            }
        }
        0
    }
    fn machphys_mapping(&mut self, out: &mut MachphysMapping) -> i32 {
        if let Some(r) = self.enter(HcKind::MachphysMapping, 0) {
            return r;
        }
        *out = MachphysMapping {
            v_start: HOLE_START,
            v_end: M2P_END,
            max_mfn: (M2P_END - HOLE_START) / 4 - 1,
        };
        0
    }
    fn p2m(&self, pfn: PhysFrame) -> Option<MachineFrame> {
        self.p2m.get(pfn.0 as usize).map(|m| MachineFrame(*m))
    }
    fn m2p(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        (mfn.0 < (M2P_END - HOLE_START) / 4)
            .then(|| PhysFrame(self.m2p.get(mfn.0 as usize).copied().unwrap_or(INVALID_M2P)))
    }
    fn frame_ptr(&self, pfn: PhysFrame) -> *mut u8 {
        let mfn = *self
            .p2m
            .get(pfn.0 as usize)
            .unwrap_or_else(|| panic!("frame_ptr of pfn {pfn} beyond nr_pages"));
        self.host(mfn)
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        let mut done = 0;
        while done < buf.len() {
            let cur = va.0.wrapping_add(done as u32);
            let m = self.access(VirtAddr(cur), false)?;
            let off = (cur & 0xFFF) as usize;
            let n = (FB - off).min(buf.len() - done);
            let mfn = m.mfn.0;
            if (M2P_BACKING_MFN..M2P_BACKING_MFN + 4096).contains(&mfn) {
                // The read-only M2P, synthesised from the model's table.
                for (k, b) in buf[done..done + n].iter_mut().enumerate() {
                    let byte = (mfn - M2P_BACKING_MFN) as usize * FB + off + k;
                    let e = self.m2p.get(byte / 4).copied().unwrap_or(INVALID_M2P);
                    *b = e.to_le_bytes()[byte % 4];
                }
            } else if let Some(src) = self.bytes(mfn) {
                buf[done..done + n].copy_from_slice(&src[off..off + n]);
            } else {
                buf[done..done + n].fill(0);
            }
            done += n;
        }
        Ok(())
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        let mut done = 0;
        while done < data.len() {
            let cur = va.0.wrapping_add(done as u32);
            let m = self.access(VirtAddr(cur), true)?;
            let off = (cur & 0xFFF) as usize;
            let n = (FB - off).min(data.len() - done);
            self.write_raw(m.mfn.0, off, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    fn cycles(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }
    fn log(&mut self, args: fmt::Arguments<'_>) {
        self.log.push(args.to_string());
    }
}

// ----- the domain builder -----

fn build_domain(cfg: &DomainConfig) -> XenDomain {
    let nr = cfg.nr_pages;
    assert!(
        (1024..=(1 << 18)).contains(&nr),
        "nr_pages {nr:#x} outside 4 MiB..1 GiB"
    );
    let mut m = XenModel::empty(nr, cfg.p2m);
    let image = FrameRange {
        start: PhysFrame(0),
        end: PhysFrame(cfg.image_pages),
    };
    assert!(
        cfg.pool_pages <= cfg.image_pages,
        "the table pool lies inside the image"
    );
    let table_pool = FrameRange {
        start: PhysFrame(cfg.image_pages - cfg.pool_pages),
        end: image.end,
    };
    let p2m_pages = (nr * 4).div_ceil(PAGE_SIZE as u32);
    let p2m_list = FrameRange {
        start: image.end,
        end: PhysFrame(image.end.0 + p2m_pages),
    };
    let start_info = p2m_list.end;
    let xenstore = PhysFrame(start_info.0 + 1);
    let console = PhysFrame(start_info.0 + 2);
    let pt_start = start_info.0 + 3;
    // alloc_pgtables_pv: 512 KiB of padding plus the boot stack, the mapped region grown in
    // 4 MiB steps until it holds its own tables.
    let extra = 1 + (512 * 1024) / PAGE_SIZE as u32;
    let mut end = (pt_start + extra).next_multiple_of(1024);
    let l1_count = loop {
        let l1s = end / 512;
        if pt_start + 2 + l1s + extra <= end {
            break l1s;
        }
        end += 1024;
    };
    assert!(
        end <= nr,
        "a {nr:#x}-page domain cannot hold the builder's {end:#x}-page region"
    );
    let tables = 2 + l1_count;
    let page_tables = FrameRange {
        start: PhysFrame(pt_start),
        end: PhysFrame(pt_start + tables),
    };
    let l3 = PhysFrame(pt_start);
    let l2 = PhysFrame(pt_start + 1);
    let l1s = FrameRange {
        start: PhysFrame(pt_start + 2),
        end: page_tables.end,
    };
    let boot_stack = page_tables.end;
    let layout = BuilderLayout {
        image,
        p2m_list,
        start_info,
        xenstore,
        console,
        page_tables,
        l3,
        l2,
        l1s,
        boot_stack,
        region_end: VIRT_BASE + end * PAGE_SIZE as u32,
    };
    let p2m = m.p2m.clone();
    let mfn = |p: u32| p2m[p as usize];
    let upper = P | RW | US | A | D;
    // The tables, written before Xen sees them (the builder maps guest memory directly).
    let (l3m, l2m) = (mfn(l3.0), mfn(l2.0));
    m.xen_write(l3m, 3, ((l2m as u64) << 12) | upper);
    for c in 0..l1_count {
        let l1m = mfn(l1s.start.0 + c);
        m.xen_write(l2m, c as usize, ((l1m as u64) << 12) | upper);
    }
    for pfn in 0..end {
        let flags = if page_tables.contains(PhysFrame(pfn)) {
            P | A
        } else {
            P | RW | A
        };
        let l1m = mfn(l1s.start.0 + pfn / 512);
        m.xen_write(l1m, (pfn % 512) as usize, ((mfn(pfn) as u64) << 12) | flags);
    }
    for pfn in 0..nr {
        let at = mfn(p2m_list.start.0 + pfn / 1024);
        m.write_raw(at, (pfn % 1024) as usize * 4, &mfn(pfn).to_le_bytes());
    }
    let mut si = StartInfo {
        magic: [0; 32],
        nr_pages: nr,
        shared_info: SHARED_INFO_MFN << 12,
        flags: 0,
        store_mfn: mfn(xenstore.0),
        store_evtchn: 1,
        console_mfn: mfn(console.0),
        console_evtchn: 2,
        pt_base: VIRT_BASE + l3.0 * PAGE_SIZE as u32,
        nr_pt_frames: tables,
        mfn_list: VIRT_BASE + p2m_list.start.0 * PAGE_SIZE as u32,
        mod_start: 0,
        mod_len: 0,
        cmd_line: [0; 1024],
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    };
    si.magic[..START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    let cl = cfg.cmdline.as_bytes();
    assert!(cl.len() < 1024, "command line too long");
    si.cmd_line[..cl.len()].copy_from_slice(cl);
    // SAFETY: StartInfo is plain old data without padding (checked by its const asserts).
    let raw = unsafe {
        core::slice::from_raw_parts(
            &si as *const StartInfo as *const u8,
            core::mem::size_of::<StartInfo>(),
        )
    };
    m.write_raw(mfn(start_info.0), 0, raw);
    m.layout = Some(layout);
    // bootlate_pv: pin the L3; the vCPU's cr3 holds another type reference.
    if let Err(e) = m.pin(l3m, PageType::L3) {
        panic!(
            "the builder's bootstrap table was refused: {e} ({:?})",
            m.reason
        );
    }
    m.get_type(l3m, PageType::L3, false)
        .expect("cr3 ref on a pinned L3");
    m.cr3 = l3m;
    let si_va = VIRT_BASE + start_info.0 * PAGE_SIZE as u32;
    let mut back = vec![0u8; core::mem::size_of::<StartInfo>()];
    // SAFETY: reads start_info through the bootstrap table, as the guest's entry does.
    unsafe { m.read_virt(VirtAddr(si_va), &mut back) }.expect("start_info is mapped");
    // SAFETY: `back` holds size_of::<StartInfo>() bytes of a StartInfo (plain old data).
    let start_info_copy =
        Box::new(unsafe { core::ptr::read_unaligned(back.as_ptr() as *const StartInfo) });
    XenDomain {
        model: m,
        start_info: start_info_copy,
        start_info_va: si_va,
        esp: VIRT_BASE + (boot_stack.0 + 1) * PAGE_SIZE as u32,
        image,
        table_pool,
        layout,
    }
}

// ----- running the generic boot path on the model -----

/// Why a boot on the model failed.
#[derive(Debug)]
pub enum XenBootFailure {
    /// `start_info::validate` refused start_info.
    StartInfo(StartInfoError),
    /// `XenMmu::new` failed (its hypercall).
    Setup(XenError),
    /// The boot path failed.
    Boot(BootError<XenError>),
}

/// The Xen error inside a boot error, if its cause is one.
pub fn xen_error_of(kind: &BootErrorKind<XenError>) -> Option<XenError> {
    match kind {
        BootErrorKind::Backend(e)
        | BootErrorKind::Map(MapError::Backend(e))
        | BootErrorKind::Ioremap(IoremapError::Map(MapError::Backend(e))) => Some(*e),
        _ => None,
    }
}

impl XenBootFailure {
    /// The stage that failed ([`Stage::Entry`] before the boot path).
    pub fn stage(&self) -> Stage {
        match self {
            XenBootFailure::Boot(e) => e.stage,
            _ => Stage::Entry,
        }
    }
    /// The Xen error, if a hypercall failed.
    pub fn xen_error(&self) -> Option<XenError> {
        match self {
            XenBootFailure::StartInfo(_) => None,
            XenBootFailure::Setup(e) => Some(*e),
            XenBootFailure::Boot(e) => xen_error_of(&e.kind),
        }
    }
    /// The errno of the failed hypercall.
    pub fn errno(&self) -> Option<Errno> {
        match self.xen_error()? {
            XenError::Hypercall { errno, .. } => Some(errno),
            _ => None,
        }
    }
    /// The page fault, if the boot path faulted.
    pub fn fault(&self) -> Option<PageFault> {
        match self {
            XenBootFailure::Boot(BootError {
                kind: BootErrorKind::Fault(pf),
                ..
            }) => Some(*pf),
            _ => None,
        }
    }
}

impl fmt::Display for XenBootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenBootFailure::StartInfo(e) => write!(f, "stage=entry: {e}"),
            XenBootFailure::Setup(e) => write!(f, "stage=entry: XenMmu::new: {e}"),
            XenBootFailure::Boot(e) => write!(f, "{e}"),
        }
    }
}

/// A boot-log writer that notes the hypercall counters at every `stage <name> ok` line.
struct StageLog {
    text: String,
    scanned: usize,
    counters: Rc<Cell<HvCounters>>,
    marks: Vec<(String, HvCounters)>,
}

impl fmt::Write for StageLog {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text.push_str(s);
        while let Some(nl) = self.text[self.scanned..].find('\n') {
            let line = &self.text[self.scanned..self.scanned + nl];
            if let Some((name, _)) = line
                .strip_prefix("stage ")
                .and_then(|r| r.split_once(" ok"))
            {
                self.marks.push((name.to_string(), self.counters.get()));
            }
            self.scanned += nl + 1;
        }
        Ok(())
    }
}

/// One boot of the generic boot path on a built domain.
pub struct XenBootRun {
    /// What the boot returned.
    pub result: Result<BootReport, XenBootFailure>,
    /// The boot path's log.
    pub log: String,
    /// The backend with the model inside (`None` if `XenMmu::new` failed).
    pub mmu: Option<XenMmu<XenModel>>,
    /// The boot path's state (its allocator).
    pub state: Box<BootState>,
    /// The builder's layout.
    pub layout: BuilderLayout,
    /// The bootstrap table frames as start_info::validate derived them.
    pub bootstrap_tables: FrameRange,
    /// First free frame as start_info::validate derived it.
    pub first_free: PhysFrame,
    /// Counters when the boot path started (after `XenMmu::new`).
    pub before_boot: HvCounters,
    /// Counters at the end of every stage that passed, in order.
    pub stages: Vec<(String, HvCounters)>,
}

impl XenBootRun {
    /// The model.
    pub fn model(&mut self) -> &mut XenModel {
        self.mmu
            .as_mut()
            .expect("XenMmu::new failed: no model")
            .hypervisor()
    }
    /// Hypercalls made during stage `name` (`None` if it did not pass).
    pub fn stage_counters(&self, name: &str) -> Option<HvCounters> {
        let i = self.stages.iter().position(|(n, _)| n == name)?;
        let prev = if i == 0 {
            self.before_boot
        } else {
            self.stages[i - 1].1
        };
        Some(self.stages[i].1.since(&prev))
    }
    /// Everything the backend logged plus the boot log, for failure messages.
    pub fn full_log(&mut self) -> String {
        let mut s = self.log.clone();
        if let Some(mmu) = self.mmu.as_mut() {
            s.push_str("--- backend/model log ---\n");
            for l in mmu.hypervisor().log_lines() {
                s.push_str(l);
                s.push('\n');
            }
            for f in mmu.hypervisor().failures() {
                s.push_str(&format!(
                    "model: hypercall #{} {:?}[{}] -> {}: {}\n",
                    f.seq, f.kind, f.index, f.errno, f.reason
                ));
            }
        }
        s
    }
    /// The report; panics with the error and the logs otherwise.
    #[track_caller]
    pub fn expect_pass(&mut self) -> BootReport {
        match &self.result {
            Ok(r) => *r,
            Err(e) => {
                let msg = format!("boot failed: {e}");
                panic!("{msg}\n{}", self.full_log())
            }
        }
    }
    /// The failure; panics with the report and the logs if the boot passed.
    #[track_caller]
    pub fn expect_fail(&mut self) -> &XenBootFailure {
        if let Ok(r) = &self.result {
            let msg = format!("boot passed but should have failed: {r:?}");
            panic!("{msg}\n{}", self.full_log());
        }
        self.result.as_ref().expect_err("failed")
    }
}

/// Runs a guest entry on `dom` (start_info::validate, `XenMmu::new`, `boot_info`) and the
/// generic boot path with `opts`.
pub fn boot_domain(dom: XenDomain, opts: BootOptions) -> XenBootRun {
    let XenDomain {
        model,
        start_info,
        start_info_va,
        esp,
        image,
        table_pool,
        layout,
    } = dom;
    let counters = model.counters_handle();
    let mut run = XenBootRun {
        result: Ok(BootReport::default()),
        log: String::new(),
        mmu: None,
        state: Box::new(BootState::new()),
        layout,
        bootstrap_tables: FrameRange::EMPTY,
        first_free: PhysFrame(0),
        before_boot: HvCounters::default(),
        stages: Vec::new(),
    };
    let facts = match validate(&start_info, start_info_va, esp, image.end, &|_| None) {
        Ok(f) => f,
        Err(e) => {
            run.result = Err(XenBootFailure::StartInfo(e));
            return run;
        }
    };
    run.bootstrap_tables = facts.bootstrap_tables;
    run.first_free = facts.first_free;
    let mut mmu = match XenMmu::new(model, &facts, &opts) {
        Ok(m) => m,
        Err(e) => {
            run.result = Err(XenBootFailure::Setup(e));
            return run;
        }
    };
    let info = backend_xen::boot_info(&mmu, &facts, image, table_pool);
    run.before_boot = counters.get();
    let mut log = StageLog {
        text: String::new(),
        scanned: 0,
        counters,
        marks: Vec::new(),
    };
    let result = boot(&mut mmu, &info, opts, &mut run.state, &mut log);
    run.result = result.map_err(XenBootFailure::Boot);
    run.log = log.text;
    run.stages = log.marks;
    run.mmu = Some(mmu);
    run
}

/// Builds a `mib` MiB domU with the default layout and boots it with `opts`.
pub fn boot_mib(mib: u32, opts: BootOptions) -> XenBootRun {
    boot_domain(DomainConfig::new(mib).build(), opts)
}

// ----- the rules, as cases that run on any Hypervisor -----

/// What a rule case needs: the raw hypercall layer of a booted guest, its frame allocator,
/// its live L3 and two machine frames it does not own. On the model, build it with
/// [`XenBootRun::rule_env`]; on the real Xen, from the booted kernel's state.
pub struct RuleEnv<'a, H: Hypervisor> {
    /// The raw hypercalls.
    pub hv: &'a mut H,
    /// Frames to use (each case frees what it takes, writable and zeroed).
    pub alloc: &'a mut FrameAllocator,
    /// The live L3 (pseudo-physical).
    pub cr3: PhysFrame,
    /// A RAM frame of another domain.
    pub foreign_mfn: MachineFrame,
    /// A frame of the low 1 MiB / MMIO.
    pub io_mfn: MachineFrame,
}

fn ok0(what: &str, ret: i32) -> Result<(), String> {
    if ret == 0 {
        Ok(())
    } else {
        Err(format!("{what} returned {}", errno_name(ret)))
    }
}

fn want(what: &str, ret: i32, expect: i32) -> Result<(), String> {
    if ret == expect {
        Ok(())
    } else {
        Err(format!(
            "{what} returned {} ({ret}), expected {} ({expect})",
            errno_name(ret),
            errno_name(expect)
        ))
    }
}

/// Flags of a kernel read/write data mapping.
pub const KERNEL_RW_FLAGS: u64 = P | RW | A | D;
/// Flags of a kernel read-only mapping.
pub const KERNEL_RO_FLAGS: u64 = P | A | D;

impl<H: Hypervisor> RuleEnv<'_, H> {
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, String> {
        self.hv.p2m(pfn).ok_or(format!("pfn {pfn} has no mfn"))
    }
    /// Entry `i` of table `t`, read through the direct map.
    pub fn entry(&self, t: PhysFrame, i: usize) -> u64 {
        // SAFETY: `t` is a direct-mapped frame of the guest; i < 512.
        unsafe {
            (self.hv.frame_ptr(t) as *const u64)
                .add(i % 512)
                .read_volatile()
        }
    }
    /// Writes entry `i` of `t` directly (only for writable, untyped frames).
    pub fn poke(&mut self, t: PhysFrame, i: usize, v: u64) {
        // SAFETY: as `entry`; the caller owns the frame and it is mapped writable.
        unsafe {
            (self.hv.frame_ptr(t) as *mut u64)
                .add(i % 512)
                .write_volatile(v)
        }
    }
    /// The guest frame an entry names (M2P cross-checked against the p2m).
    pub fn table_of(&self, e: u64) -> Result<PhysFrame, String> {
        let m = MachineFrame(frame_of(e));
        let p = self.hv.m2p(m).ok_or(format!("mfn {m} beyond the M2P"))?;
        (self.hv.p2m(p) == Some(m))
            .then_some(p)
            .ok_or(format!("mfn {m} is not the guest's"))
    }
    /// The live slot-3 L2.
    pub fn live_l2(&self) -> Result<PhysFrame, String> {
        self.table_of(self.entry(self.cr3, 3))
    }
    /// Machine address of the live L1 entry mapping `pfn` in the direct map.
    pub fn pte_ma(&self, pfn: PhysFrame) -> Result<u64, String> {
        let va = VirtAddr(VIRT_BASE + pfn.0 * PAGE_SIZE as u32);
        let l2 = self.table_of(self.entry(self.cr3, va.l3_index()))?;
        let l2e = self.entry(l2, va.l2_index());
        if l2e & P == 0 {
            return Err(format!("{va} has no L1"));
        }
        let l1 = self.table_of(l2e)?;
        Ok(self.mfn(l1)?.start().0 + va.l1_index() as u64 * 8)
    }
    /// A fresh, zeroed, writable frame.
    pub fn fresh(&mut self) -> Result<PhysFrame, String> {
        let f = self.alloc.alloc().map_err(|e| e.to_string())?;
        // SAFETY: a free direct-mapped frame the case now owns.
        unsafe { core::ptr::write_bytes(self.hv.frame_ptr(f), 0, FB) };
        Ok(f)
    }
    /// Maps `pfn` writable again, zeroes it and gives it back.
    pub fn give_back(&mut self, pfn: PhysFrame) -> Result<(), String> {
        let r = self.map(pfn, true);
        ok0("making the frame writable again", r)?;
        // SAFETY: the frame is ours and writable again.
        unsafe { core::ptr::write_bytes(self.hv.frame_ptr(pfn), 0, FB) };
        self.alloc.free(pfn).map_err(|e| e.to_string())
    }
    /// Remaps `pfn` in the direct map read-only or writable (one raw `mmu_update`).
    pub fn map(&mut self, pfn: PhysFrame, writable: bool) -> i32 {
        let (Ok(ma), Ok(m)) = (self.pte_ma(pfn), self.mfn(pfn)) else {
            return -Errno::EFAULT.0;
        };
        let flags = if writable {
            KERNEL_RW_FLAGS
        } else {
            KERNEL_RO_FLAGS
        };
        self.mmu1(ma, m.start().0 | flags)
    }
    /// One `mmu_update` request.
    pub fn mmu1(&mut self, ptr: u64, val: u64) -> i32 {
        let mut done = 0;
        self.hv.mmu_update(&[MmuUpdate { ptr, val }], &mut done)
    }
    /// One `mmuext_op`.
    pub fn ext1(&mut self, cmd: u32, arg1: u32) -> i32 {
        let mut done = 0;
        self.hv
            .mmuext_op(&[MmuextOp { cmd, arg1, arg2: 0 }], &mut done)
    }
    /// A fresh frame made read-only (ready to become a table).
    pub fn fresh_ro(&mut self) -> Result<PhysFrame, String> {
        let f = self.fresh()?;
        let r = self.map(f, false);
        ok0("making a fresh frame read-only", r)?;
        Ok(f)
    }
    /// The highest guest slot (< 428) of the live L2 that is empty.
    pub fn free_l2_slot(&self) -> Result<usize, String> {
        let l2 = self.live_l2()?;
        (0..FIRST_XEN_L2_SLOT)
            .rev()
            .find(|i| self.entry(l2, *i) & P == 0)
            .ok_or("no free L2 slot".into())
    }
}

/// One rule, provoked through raw hypercalls.
pub struct RuleCase<H: Hypervisor> {
    /// Short name.
    pub name: &'static str,
    /// The rule.
    pub rule: &'static str,
    /// What the provoking call must return: 0 or a negated errno.
    pub expect: i32,
    /// Sets up, provokes (returning the provoking call's raw result), checks controls and
    /// cleans up. `Err` when a setup, control or cleanup step misbehaves.
    pub run: fn(&mut RuleEnv<'_, H>) -> Result<i32, String>,
}

impl<H: Hypervisor> RuleCase<H> {
    /// Runs the case and compares with `expect`.
    pub fn check(&self, env: &mut RuleEnv<'_, H>) -> Result<(), String> {
        let ret = (self.run)(env).map_err(|e| format!("{}: {e}", self.name))?;
        want(self.name, ret, self.expect)
    }
}

fn c_writable_pt<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    ok0(
        "PIN_L1_TABLE of an empty read-only frame",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    let ret = env.map(f, true);
    let ro = env.map(f, false);
    ok0("control: a read-only mapping of the pinned L1", ro)?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_unpin_unpinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::UNPIN_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_pinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    ok0("first PIN_L1_TABLE", env.ext1(mmuext::PIN_L1_TABLE, m))?;
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    ok0(
        "UNPIN_TABLE (pinned exactly once)",
        env.ext1(mmuext::UNPIN_TABLE, m),
    )?;
    want(
        "second UNPIN_TABLE",
        env.ext1(mmuext::UNPIN_TABLE, m),
        -Errno::EINVAL.0,
    )?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_writable_l1<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    ok0("control: making it read-only", env.map(f, false))?;
    ok0(
        "control: PIN_L1_TABLE once read-only",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_l3_slot3_absent<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_baseptr_slot3_absent<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::NEW_BASEPTR, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_l3_slot3_shared<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    let l2m = env.mfn(l2)?;
    let f = env.fresh()?;
    env.poke(f, 3, l2m.start().0 | P);
    ok0("making the new L3 read-only", env.map(f, false))?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_new_baseptr_unpinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let live = env.cr3;
    let live_m = env.mfn(live)?.0;
    let old_l2 = env.live_l2()?;
    let (l3, l2) = (env.fresh()?, env.fresh()?);
    for i in 0..FIRST_XEN_L2_SLOT {
        let e = env.entry(old_l2, i);
        env.poke(l2, i, e);
    }
    for i in 0..3 {
        let e = env.entry(live, i);
        env.poke(l3, i, e & !(RW | US));
    }
    let l2m = env.mfn(l2)?;
    env.poke(l3, 3, l2m.start().0 | P);
    ok0("making the copy's L2 read-only", env.map(l2, false))?;
    ok0("making the copy's L3 read-only", env.map(l3, false))?;
    let ret = env.ext1(mmuext::NEW_BASEPTR, env.mfn(l3)?.0);
    ok0(
        "NEW_BASEPTR back to the kernel's table",
        env.ext1(mmuext::NEW_BASEPTR, live_m),
    )?;
    env.give_back(l3)?;
    env.give_back(l2)?;
    Ok(ret)
}

fn c_live_l3_slot3<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let ma = env.mfn(env.cr3)?.start().0 + 3 * 8;
    let cur = env.entry(env.cr3, 3);
    Ok(env.mmu1(ma, cur & !(RW | US)))
}

fn c_xen_private_l2<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    let base = env.mfn(l2)?.start().0;
    let cur = env.entry(l2, FIRST_XEN_L2_SLOT);
    let ret = env.mmu1(base + FIRST_XEN_L2_SLOT as u64 * 8, cur);
    let free = env.free_l2_slot()?;
    ok0(
        "control: rewriting an empty guest slot of the same L2",
        env.mmu1(base + free as u64 * 8, 0),
    )?;
    Ok(ret)
}

fn c_l1_foreign<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let ma = env.pte_ma(f)?;
    let ret = env.mmu1(ma, env.foreign_mfn.start().0 | KERNEL_RO_FLAGS);
    env.give_back(f)?;
    Ok(ret)
}

fn c_l1_io<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let ma = env.pte_ma(f)?;
    let ret = env.mmu1(ma, env.io_mfn.start().0 | KERNEL_RW_FLAGS);
    env.give_back(f)?;
    Ok(ret)
}

fn c_unchecked_write<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    // A value an L1 would refuse (another domain's frame, writable): untyped, so unchecked.
    let val = env.foreign_mfn.start().0 | KERNEL_RW_FLAGS;
    let ret = env.mmu1(env.mfn(f)?.start().0 + 5 * 8, val);
    if ret == 0 && env.entry(f, 5) != val {
        return Err(format!(
            "the write did not land: entry 5 = {:#x}",
            env.entry(f, 5)
        ));
    }
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l4<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(MMUEXT_PIN_L4_TABLE, m);
    want(
        "control: UNPIN after PIN_L4 (nothing was pinned)",
        env.ext1(mmuext::UNPIN_TABLE, m),
        -Errno::EINVAL.0,
    )?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_slot3_l2<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    Ok(env.ext1(mmuext::PIN_L2_TABLE, env.mfn(l2)?.0))
}

fn c_l3_pcd<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    // Live L3 slot 0 (user space: empty in the kernel) is replaced by a fresh L2 and restored.
    let old = env.entry(env.cr3, 0);
    if old & P != 0 {
        let l2 = env.table_of(old)?;
        if (0..512).any(|i| env.entry(l2, i) & P != 0) {
            return Err("live L3 slot 0 maps something".into());
        }
    }
    let l2 = env.fresh_ro()?;
    let ma = env.mfn(env.cr3)?.start().0;
    let l2m = env.mfn(l2)?.start().0;
    let ret = env.mmu1(ma, l2m | P | PCD);
    ok0(
        "control: the same L3 entry with Present only",
        env.mmu1(ma, l2m | P),
    )?;
    ok0("restoring live L3 slot 0", env.mmu1(ma, old & !(RW | US)))?;
    env.give_back(l2)?;
    Ok(ret)
}

fn c_l2_pse<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let slot = env.free_l2_slot()?;
    let l2 = env.live_l2()?;
    let ma = env.mfn(l2)?.start().0 + slot as u64 * 8;
    let l1 = env.fresh_ro()?;
    let l1m = env.mfn(l1)?.start().0;
    let ret = env.mmu1(ma, l1m | KERNEL_RW_FLAGS | PSE);
    ok0(
        "control: the same L2 entry without PSE",
        env.mmu1(ma, l1m | KERNEL_RW_FLAGS),
    )?;
    ok0("clearing the L2 entry", env.mmu1(ma, 0))?;
    env.give_back(l1)?;
    Ok(ret)
}

fn c_uvm_pt_writable<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let va = VirtAddr(VIRT_BASE + env.cr3.0 * PAGE_SIZE as u32);
    let m = env.mfn(env.cr3)?.start().0;
    let ret = env
        .hv
        .update_va_mapping(va, m | KERNEL_RW_FLAGS, UVMF_INVLPG);
    ok0(
        "control: the same mapping read-only",
        env.hv
            .update_va_mapping(va, m | KERNEL_RO_FLAGS, UVMF_INVLPG),
    )?;
    Ok(ret)
}

fn c_multicall_uvm<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let va = VIRT_BASE + env.cr3.0 * PAGE_SIZE as u32;
    let m = env.mfn(env.cr3)?.start().0;
    let uvm = |val: u64| MulticallEntry {
        op: nr::UPDATE_VA_MAPPING as u32,
        result: 0x5A5A,
        args: [va, val as u32, (val >> 32) as u32, UVMF_INVLPG, 0, 0],
    };
    let mut calls = [uvm(m | KERNEL_RO_FLAGS), uvm(m | KERNEL_RW_FLAGS)];
    ok0("multicall itself", env.hv.multicall(&mut calls))?;
    ok0(
        "control: the first entry (read-only)",
        calls[0].result as i32,
    )?;
    Ok(calls[1].result as i32)
}

fn c_multicall_mmu_update<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let buf = env.fresh()?;
    let buf_va = VIRT_BASE + buf.0 * PAGE_SIZE as u32;
    let (ok_ma, bad_ma) = (env.pte_ma(buf)?, env.pte_ma(env.cr3)?);
    let (bm, rm) = (env.mfn(buf)?.start().0, env.mfn(env.cr3)?.start().0);
    // Two requests in guest memory: rewrite the buffer's own mapping (fine), then map the
    // live L3 writable (refused); `done` goes at offset 64.
    env.poke(buf, 0, ok_ma);
    env.poke(buf, 1, bm | KERNEL_RW_FLAGS);
    env.poke(buf, 2, bad_ma);
    env.poke(buf, 3, rm | KERNEL_RW_FLAGS);
    env.poke(buf, 8, 0xFFFF_FFFF);
    let mut calls = [MulticallEntry {
        op: nr::MMU_UPDATE as u32,
        result: 0x5A5A,
        args: [buf_va, 2, buf_va + 64, DOMID_SELF as u32, 0, 0],
    }];
    ok0("multicall itself", env.hv.multicall(&mut calls))?;
    let done = env.entry(buf, 8) as u32;
    if done != 1 {
        return Err(format!(
            "done = {done}, expected 1 (the first request succeeded)"
        ));
    }
    env.give_back(buf)?;
    Ok(calls[0].result as i32)
}

/// Every rule of the model as a case runnable on any [`Hypervisor`] (the model or the
/// real Xen), with the result Xen 4.17.5 gives.
pub fn rule_cases<H: Hypervisor>() -> Vec<RuleCase<H>> {
    let (einval, ebusy, eperm) = (-Errno::EINVAL.0, -Errno::EBUSY.0, -Errno::EPERM.0);
    vec![
        RuleCase {
            name: "writable_map_of_pagetable",
            rule: "a present writable L1e naming a page-table frame (a pinned L1)",
            expect: ebusy,
            run: c_writable_pt,
        },
        RuleCase {
            name: "unpin_unpinned",
            rule: "MMUEXT_UNPIN_TABLE of a frame that is not pinned",
            expect: einval,
            run: c_unpin_unpinned,
        },
        RuleCase {
            name: "pin_pinned",
            rule: "MMUEXT_PIN_L1_TABLE of a frame pinned already",
            expect: einval,
            run: c_pin_pinned,
        },
        RuleCase {
            name: "pin_l1_mapped_writable",
            rule: "MMUEXT_PIN_L1_TABLE of a frame still mapped writable (type conflict)",
            expect: einval,
            run: c_pin_writable_l1,
        },
        RuleCase {
            name: "l3_slot3_absent",
            rule: "MMUEXT_PIN_L3_TABLE of an L3 whose slot 3 is empty",
            expect: einval,
            run: c_l3_slot3_absent,
        },
        RuleCase {
            name: "new_baseptr_validates",
            rule: "MMUEXT_NEW_BASEPTR validates on the spot: an L3 without slot 3",
            expect: einval,
            run: c_baseptr_slot3_absent,
        },
        RuleCase {
            name: "l3_slot3_l2_shared",
            rule: "an L3 whose slot-3 L2 is the live L3's (shared)",
            expect: einval,
            run: c_l3_slot3_shared,
        },
        RuleCase {
            name: "new_baseptr_needs_no_pin",
            rule: "MMUEXT_NEW_BASEPTR of an unpinned copy of the kernel table, then back",
            expect: 0,
            run: c_new_baseptr_unpinned,
        },
        RuleCase {
            name: "live_l3_slot3_update",
            rule: "mmu_update of slot 3 of the live L3 (same value)",
            expect: einval,
            run: c_live_l3_slot3,
        },
        RuleCase {
            name: "xen_private_l2_slot",
            rule: "mmu_update of slot 428 of the slot-3 L2 (Xen-private, same value)",
            expect: eperm,
            run: c_xen_private_l2,
        },
        RuleCase {
            name: "l1_foreign_ram",
            rule: "an L1e naming another domain's RAM (read-only)",
            expect: ebusy,
            run: c_l1_foreign,
        },
        RuleCase {
            name: "l1_io_frame",
            rule: "an L1e naming a low-1-MiB (dom_io) frame without I/O rights",
            expect: eperm,
            run: c_l1_io,
        },
        RuleCase {
            name: "unchecked_write_untyped",
            rule: "mmu_update into a frame with no page-table type is an unchecked write",
            expect: 0,
            run: c_unchecked_write,
        },
        RuleCase {
            name: "pin_l4_noop",
            rule: "MMUEXT_PIN_L4_TABLE on a 32-bit guest does nothing and returns 0",
            expect: 0,
            run: c_pin_l4,
        },
        RuleCase {
            name: "pin_slot3_l2",
            rule: "MMUEXT_PIN_L2_TABLE of the live slot-3 (pae_xen_l2) L2",
            expect: einval,
            run: c_pin_slot3_l2,
        },
        RuleCase {
            name: "l3_entry_pcd",
            rule: "an L3e with PCD (live L3 slot 0, then restored)",
            expect: einval,
            run: c_l3_pcd,
        },
        RuleCase {
            name: "l2_entry_pse",
            rule: "an L2e with PSE (no superpages)",
            expect: einval,
            run: c_l2_pse,
        },
        RuleCase {
            name: "update_va_mapping_pt_writable",
            rule: "update_va_mapping mapping the live L3 writable",
            expect: ebusy,
            run: c_uvm_pt_writable,
        },
        RuleCase {
            name: "multicall_update_va_mapping",
            rule: "multicall: each entry's result, the call returns 0",
            expect: ebusy,
            run: c_multicall_uvm,
        },
        RuleCase {
            name: "multicall_mmu_update",
            rule: "multicall of an mmu_update from guest memory: result and done",
            expect: ebusy,
            run: c_multicall_mmu_update,
        },
    ]
}

impl XenBootRun {
    /// A [`RuleEnv`] over this booted guest (dom0 RAM and a VGA frame as the foreign and
    /// I/O frames).
    pub fn rule_env(&mut self) -> RuleEnv<'_, XenModel> {
        let mmu = self.mmu.as_mut().expect("booted");
        let cr3 = pvops_core::MmuOps::read_cr3(mmu);
        RuleEnv {
            hv: mmu.hypervisor(),
            alloc: &mut self.state.alloc,
            cr3,
            foreign_mfn: MachineFrame(DOM0_MFNS.0 + 0x123),
            io_mfn: MachineFrame(0xB8),
        }
    }
}
