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
//! - **Hypercalls**, with Xen 4.17.5's errnos (the rules below; `pvops-xen-conformance` provokes
//!   Xen's refusals through raw calls on any [`Hypervisor`]): `mmu_update` (NORMAL_PT_UPDATE,
//!   PT_UPDATE_PRESERVE_AD, MACHPHYS_UPDATE), `mmuext_op`, `update_va_mapping`, `multicall`
//!   (arguments are guest virtual addresses, read through the live table),
//!   `memory_op(XENMEM_machphys_mapping)`. A batch stops at the first failing entry and
//!   `done` counts the entries that succeeded. A multicall runs every entry and stores each
//!   result, whatever the ones before returned (Xen's `do_multicall`); the backend's
//!   `mmu_then_mmuext` (page-table updates and their invlpgs) is one such multicall, as on
//!   the real guest. [`XenModel::fail_hypercall`] makes the k-th hypercall fail instead,
//!   [`XenModel::fail_multicall_entry`] one entry of a multicall.
//! - **dom0**: [`XenModel::set_privileged`] gives the domain dom0's I/O rights over the low
//!   1 MiB (what `cargo xtask difftest --on xen-dom0` compares with).
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

use crate::frames::FrameStore;
use backend_xen::abi::{
    mmuext, nr, Errno, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, StartInfo,
};
use backend_xen::abi::{DOMID_SELF, HYPERVISOR_VIRT_START_PAE, START_INFO_MAGIC, VIRT_BASE};
use backend_xen::start_info::{validate, StartInfoError, XenBootFacts};
use backend_xen::{BackendLog, Hypervisor, MixedResult, XenCounters, XenError, XenMmu, XenOptions};
use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::boot::{BootError, BootErrorKind, BootReport, BootState, Stage};
use pvops_core::ioremap::IoremapError;
use pvops_core::mapper::MapError;
use pvops_core::ops::PageFault;
use pvops_core::options::BootOptions;
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
    /// Refused in a present L1e of a domU without I/O rights: the cache attributes. (Bit 62,
    /// `_PAGE_GNTTAB` in mm.c's `L1_DISALLOW_MASK`, is 0 in a non-debug build: asm/page.h
    /// `#ifdef NDEBUG #undef _PAGE_GNTTAB`; the differential test saw it accepted.)
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

type R = Result<(), Errno>;

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
    pub start_info: &'static StartInfo,
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

impl XenDomain {
    /// What the guest's entry derives from start_info (`start_info::validate` with the
    /// domain's `esi`, `esp` and image, no M2P cross-check).
    pub fn facts(&self) -> Result<XenBootFacts<'static>, StartInfoError> {
        validate(
            self.start_info,
            self.start_info_va,
            self.esp,
            self.image.end,
            &|_| None,
        )
    }
}

/// The model of Xen and of the machine under the domU.
pub struct XenModel {
    nr_pages: u32,
    ram_base: u32,
    p2m: Vec<u32>,
    m2p: Vec<u32>,
    frames: Vec<FrameState>,
    mem: FrameStore,
    snaps: HashMap<u32, Box<[u8; FB]>>,
    cr3: u32,
    layout: Option<BuilderLayout>,
    counters: Rc<Cell<HvCounters>>,
    fail_at: Option<(u64, Option<u32>, Errno)>,
    /// An injected failure of one entry of the multicall now running: (entry, errno).
    entry_fault: Option<(u32, Errno)>,
    /// A failure to inject at request `.0` of the current `mmu_update`/`mmuext_op` batch.
    request_fault: Option<(u32, Errno)>,
    /// (hypercall, request, errno) asked for by `fail_batch_request`, not fired yet.
    fail_request_at: Option<(u64, u32, Errno)>,
    injected: Option<InjectedFault>,
    privileged: bool,
    /// Where the last L2 validation failed (the entry's index), if it did.
    l2_failed_at: Option<usize>,
    failures: Vec<HvFailure>,
    reason: Option<String>,
    log: Vec<String>,
    violations: Vec<String>,
    clock: Cell<u64>,
    /// M2P lookups the guest made (`Hypervisor::m2p`).
    m2p_lookups: Cell<u64>,
    /// Not-running time charged per hypercall (`steal_per_hypercall`), and the total so far.
    steal_ns: Option<u64>,
    stolen_ns: Cell<u64>,
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
            mem: FrameStore::new(total),
            snaps: HashMap::new(),
            cr3: 0,
            layout: None,
            counters: Rc::new(Cell::new(HvCounters::default())),
            fail_at: None,
            entry_fault: None,
            request_fault: None,
            fail_request_at: None,
            injected: None,
            privileged: false,
            l2_failed_at: None,
            failures: Vec::new(),
            reason: None,
            log: Vec::new(),
            violations: Vec::new(),
            clock: Cell::new(0),
            m2p_lookups: Cell::new(0),
            steal_ns: None,
            stolen_ns: Cell::new(0),
        }
    }

    // ----- introspection -----

    /// Pages of the domain.
    pub fn nr_pages(&self) -> u32 {
        self.nr_pages
    }
    /// First machine frame of the domain's RAM.
    pub fn ram_base(&self) -> MachineFrame {
        MachineFrame::new(self.ram_base)
    }
    /// The builder's layout.
    pub fn layout(&self) -> BuilderLayout {
        self.layout.expect("built domain")
    }
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> MachineFrame {
        MachineFrame::new(self.p2m[pfn.number() as usize])
    }
    /// The domain's pfn of `mfn`, if it is the domain's RAM.
    pub fn pfn(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        let raw = *self.m2p.get(mfn.number() as usize)?;
        (raw < self.nr_pages && self.p2m[raw as usize] == mfn.number())
            .then_some(PhysFrame::new(raw))
    }
    /// State of a machine frame (MMIO beyond memory reads as an `Io` frame).
    pub fn state_mfn(&self, mfn: MachineFrame) -> FrameState {
        self.frames
            .get(mfn.number() as usize)
            .copied()
            .unwrap_or(FrameState::owned_by(Owner::Io))
    }
    /// State of the machine frame behind `pfn`.
    pub fn state(&self, pfn: PhysFrame) -> FrameState {
        self.state_mfn(self.mfn(pfn))
    }
    /// Changes a frame's owner (to stage foreign frames in tests).
    pub fn set_owner(&mut self, mfn: MachineFrame, owner: Owner) {
        self.frames[mfn.number() as usize].owner = owner;
    }
    /// The live L3 (machine frame).
    pub fn cr3(&self) -> MachineFrame {
        MachineFrame::new(self.cr3)
    }
    /// The live L3 as a pfn.
    pub fn cr3_pfn(&self) -> Option<PhysFrame> {
        self.pfn(self.cr3())
    }
    /// Hypercall counters.
    pub fn counters(&self) -> HvCounters {
        self.counters.get()
    }
    /// How many M2P lookups the guest has made (each one a load from Xen's read-only M2P
    /// table, with a fault fixup, on the real machine).
    pub fn m2p_lookups(&self) -> u64 {
        self.m2p_lookups.get()
    }
    /// A handle on the counters that stays readable while the model is borrowed elsewhere.
    pub fn counters_handle(&self) -> Rc<Cell<HvCounters>> {
        Rc::clone(&self.counters)
    }
    /// The backend's log lines.
    pub fn log_lines(&self) -> &[String] {
        &self.log
    }
    /// Frames on which Xen holds type references that nothing can drop, with how many: an
    /// L2 refused as the shared slot-3 L2 of an L3 being validated keeps the reference
    /// taken on it (Xen 4.17.5 `promote_l3_table`, see docs/DIFFTEST.md #10). Such a frame
    /// can never be mapped writable again.
    pub fn held_by_xen(&self) -> Vec<(MachineFrame, u32)> {
        self.frames
            .iter()
            .enumerate()
            .filter(|(_, s)| s.leaked > 0)
            .map(|(m, s)| (MachineFrame::new(m as u32), s.leaked))
            .collect()
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
        self.fail_at = Some((k, None, errno));
    }
    /// Cancels a failure asked for by [`XenModel::fail_hypercall`],
    /// [`XenModel::fail_multicall_entry`] or [`XenModel::fail_batch_request`] that has not
    /// fired yet.
    pub fn cancel_failure(&mut self) {
        self.fail_at = None;
        self.fail_request_at = None;
    }
    /// Makes request `request` (0-based) of the `k`-th hypercall, if that is an
    /// `mmu_update` or `mmuext_op` batch, fail with `-errno`: the requests before it are
    /// applied and counted in `done`, it and the ones after it are not, as Xen stops a batch
    /// at its first failing request. Otherwise nothing is injected.
    pub fn fail_batch_request(&mut self, k: u64, request: u32, errno: Errno) {
        self.fail_request_at = Some((k, request, errno));
    }
    /// Makes entry `entry` (0-based) of the `k`-th hypercall, if that is a multicall, return
    /// `-errno` without doing anything; the multicall's other entries run as usual (as on
    /// Xen, where a failing entry does not stop the ones after it). If hypercall `k` is not
    /// a multicall, nothing is injected.
    pub fn fail_multicall_entry(&mut self, k: u64, entry: u32, errno: Errno) {
        self.fail_at = Some((k, Some(entry), errno));
    }
    /// Makes the vCPU lose `ns` nanoseconds to others at every `mmu_update`, `mmuext_op` and
    /// `multicall` (the hypercalls `XenCounters::hypercalls` counts), reported by
    /// `not_running_ns` as Xen's runstate area would; without it the model has no runstate
    /// (`None`), like a guest that registered none.
    pub fn steal_per_hypercall(&mut self, ns: u64) {
        self.steal_ns = Some(ns);
    }
    /// Treats the domain as the privileged dom0 (`SIF_INITDOMAIN`): it may map the low
    /// 1 MiB (`dom_io` frames), which a domU may not.
    pub fn set_privileged(&mut self, privileged: bool) {
        self.privileged = privileged;
    }
    /// True when the domain is treated as dom0 ([`XenModel::set_privileged`]).
    pub fn privileged(&self) -> bool {
        self.privileged
    }
    /// Changes made to frames without a writable mapping, found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
    /// Entry `index` of machine frame `mfn`.
    pub fn entry_mfn(&self, mfn: MachineFrame, index: usize) -> u64 {
        self.pte(mfn.number(), index)
    }
    /// Entry `index` of the frame behind `pfn`.
    pub fn entry(&self, pfn: PhysFrame, index: usize) -> u64 {
        self.pte(self.p2m[pfn.number() as usize], index)
    }
    /// Machine frames of every validated page table.
    pub fn tables(&self) -> Vec<(MachineFrame, PageType)> {
        (0..self.frames.len())
            .filter(|m| self.frames[*m].ty.is_table() && self.frames[*m].count > 0)
            .map(|m| (MachineFrame::new(m as u32), self.frames[m].ty))
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
                let e = self.pte(l1.number(), i);
                if e & (P | RW) == (P | RW)
                    && self.state_mfn(MachineFrame::new(frame_of(e))).ty.is_table()
                {
                    out.push((l1, i, MachineFrame::new(frame_of(e))));
                }
            }
        }
        out
    }
}

mod audit;
mod builder;
mod counters;
mod frame_state;
mod hypercalls;
mod memory;
mod runner;
mod validate;

use builder::build_domain;
pub use counters::*;
pub use frame_state::*;
pub use runner::*;
