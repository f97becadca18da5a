//! A simulated 32-bit PAE machine that implements [`MmuOps`] and [`Platform`], so the one
//! generic boot path ([`pvops_core::boot::boot`]) runs unchanged inside `cargo test`.
//!
//! What is modelled, and how strictly:
//! - **Memory**: machine frames are allocated lazily (zero-filled, 4 KiB aligned, never moved),
//!   so a 2 GiB machine costs only the frames that are touched. Storage is indexed by
//!   *machine* frame; pseudo-physical frames reach it through the p2m ([`P2m`]).
//! - **Paging**: `write_cr3` latches the four PDPT entries (and checks their reserved bits, as
//!   a CPU does with a #GP); the walker uses the latched entries for L3, then the live L2/L1
//!   frames in memory, honours 2 MiB pages, Present, RW (CR0.WP=1) and NX-as-reserved.
//! - **TLB**: translations are cached per page on every `read_virt`/`write_virt` and never
//!   evicted, so any missing `flush_tlb_single`/`flush_tlb_all`/`write_cr3` shows up as stale
//!   data. Global translations survive `write_cr3` and `flush_tlb_all` (as with CR4.PGE).
//! - **Page-table lifetime**: every frame written as a table must have been announced with
//!   `alloc_pt` at that level (or be part of the bootstrap table), entries that link tables
//!   must name announced tables, `alloc_pt` wants a zeroed frame, and `release_pt` refuses a
//!   table still linked from a known table.
//! - **Reachability**: [`Platform::frame_ptr`] answers only for frames the live (latched)
//!   table maps at `page_offset + pa` to that frame's machine frame.
//!
//! Every page-table operation is numbered; [`SimMachine::fail_at`] makes the k-th one fail.

use crate::frames::FrameStore;
use pvops_core::addr::{
    EntryIndex, FrameRange, MachineFrame, PhysAddr, PhysFrame, VirtAddr, PAGE_SIZE,
};
use pvops_core::boot::{BootInfo, IoremapProbe};
use pvops_core::mem::{MemoryMap, RegionKind};
use pvops_core::ops::{MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::paging::{
    EntrySlot, Level, PageTableEntry, PteFlags, ADDRESS_MASK, ENTRIES, KERNEL_RW, PDPT_ENTRIES,
    PDPT_FLAGS, TABLE_FLAGS,
};
use pvops_core::registry::{BackendDescriptor, BACKENDS};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Bytes in a frame, as a `usize`.
pub const FRAME_BYTES: usize = PAGE_SIZE as usize;
/// Native kernel layout: start of the direct map.
pub const PAGE_OFFSET: u32 = 0xC000_0000;
/// Native kernel layout: lowmem limit.
pub const LOWMEM_LIMIT: u64 = 896 * MIB;
/// Native kernel layout: early_ioremap window (2 MiB).
pub const IOREMAP_WINDOW: u32 = 0xFF80_0000;
/// Native kernel layout: scratch area (2 MiB).
pub const SCRATCH_AREA: u32 = 0xF880_0000;
/// The layout the native backend uses, which the sim reports by default.
pub const NATIVE_LAYOUT: MemoryLayout = MemoryLayout {
    page_offset: VirtAddr::new(PAGE_OFFSET),
    lowmem_limit: LOWMEM_LIMIT,
    ioremap_window: VirtAddr::new(IOREMAP_WINDOW),
    scratch_area: VirtAddr::new(SCRATCH_AREA),
    lowmem_formula: "Linux 32-bit lowmem: 4 GiB - 0xC0000000 - 128 MiB vmalloc reserve",
    hypervisor_start: None,
};
/// How much the bootstrap table maps (from pa 0, identity and at `page_offset`).
pub const BOOTSTRAP_MAP_BYTES: u64 = 64 * MIB;
/// End of usable low memory in QEMU's multiboot map (start of the EBDA).
pub const LOW_USABLE_END: u64 = 0x9_fc00;
/// Start of usable high memory.
pub const HIGH_USABLE_START: u64 = MIB;
/// The default fake kernel image: pfn 0x100..0x180 (1 MiB .. 1.5 MiB).
pub const DEFAULT_KERNEL_IMAGE: FrameRange = FrameRange {
    start: PhysFrame::new(0x100),
    end: PhysFrame::new(0x180),
};
/// Where the fake multiboot info block sits.
pub const MULTIBOOT_INFO_ADDR: PhysAddr = PhysAddr::new(0x9000);
/// Length of the fake multiboot info block (what early_ioremap compares).
pub const MULTIBOOT_INFO_LEN: usize = 64;
/// The recognisable tag inside the multiboot info block (bytes 28..44, the symbol-table
/// words, unused since flags bits 4 and 5 are clear).
pub const MULTIBOOT_TAG: &[u8; 16] = b"PVOPS-SIM MBI v1";
/// Where the multiboot memory map sits.
pub const MULTIBOOT_MMAP_ADDR: PhysAddr = PhysAddr::new(0x9100);
/// Where the NUL-terminated command line sits.
pub const MULTIBOOT_CMDLINE_ADDR: PhysAddr = PhysAddr::new(0x9400);
/// The value a multiboot1 loader leaves in eax.
pub const MULTIBOOT_MAGIC: u32 = 0x2BAD_B002;

/// Reserved bits of a present PAE PDPT entry: 1-2, 5-8 and 52-63 (MAXPHYADDR = 52).
pub const PDPTE_RESERVED: u64 = 0x1e6 | (0xfff << 52);
/// Reserved bits 13..20 of a 2 MiB L2 entry (bit 12 is PAT).
const HUGE_RESERVED: u64 = 0x1f_e000;
/// Page-fault error code bits.
pub const PF_PRESENT: u32 = 1 << 0;
/// Write access.
pub const PF_WRITE: u32 = 1 << 1;
/// A reserved bit was set in an entry.
pub const PF_RSVD: u32 = 1 << 3;

#[pvops_core::linkme::distributed_slice(BACKENDS)]
#[linkme(crate = pvops_core::linkme)]
static SIM_BACKEND: BackendDescriptor = BackendDescriptor { name: "sim" };

mod bookkeeping;
mod config;
mod events;
mod memory;
mod ops;
mod paging;

pub use config::*;
pub use events::*;

#[derive(Clone, Copy, Debug)]
struct TlbEntry {
    mfn: u32,
    writable: bool,
    global: bool,
}

struct Watch {
    frames: FrameRange,
    versions: Vec<Vec<Box<[u8]>>>,
    ticks_left: u32,
}

/// Ticks during which retired bootstrap frames are watched (bounds the cost after the boot).
const WATCH_TICKS: u32 = 20_000;

/// The simulated machine.
pub struct SimMachine {
    cfg: SimConfig,
    memory: MemoryMap,
    ram_frames: u32,
    /// Host storage per machine frame, allocated when touched.
    store: FrameStore,
    /// Table level per pseudo-physical frame.
    tables: Vec<Option<Level>>,
    bootstrap: FrameRange,
    first_free: PhysFrame,
    cr3: MachineFrame,
    latched: [u64; PDPT_ENTRIES],
    tlb: RefCell<HashMap<u32, TlbEntry>>,
    clock: Cell<u64>,
    pt_ops: u64,
    fail_at: Option<u64>,
    writes: Vec<PtWrite>,
    counts: WriteCounts,
    events: Vec<SimEvent>,
    cr3_history: Vec<PhysFrame>,
    retired: Option<FrameRange>,
    watch: RefCell<Option<Watch>>,
}

impl fmt::Debug for SimMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMachine")
            .field("ram_mib", &self.cfg.ram_mib)
            .field("p2m", &self.cfg.p2m)
            .field("cr3", &self.cr3)
            .field("pt_ops", &self.pt_ops)
            .field("touched_frames", &self.store.touched())
            .finish_non_exhaustive()
    }
}

/// Builds a QEMU-like multiboot memory map: usable `[0, 0x9fc00)`, reserved
/// `[0x9fc00, 1 MiB)`, usable `[1 MiB, ram)` minus the `holes`, which are reserved.
pub fn qemu_memory_map(ram_bytes: u64, holes: &[(u64, u64)]) -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(PhysAddr::new(0), LOW_USABLE_END, RegionKind::Usable)
        .expect("low memory");
    m.add(
        PhysAddr::new(LOW_USABLE_END),
        HIGH_USABLE_START - LOW_USABLE_END,
        RegionKind::Reserved,
    )
    .expect("EBDA/BIOS");
    let mut holes: Vec<(u64, u64)> = holes.to_vec();
    holes.sort_unstable();
    let mut at = HIGH_USABLE_START;
    for &(start, len) in &holes {
        assert!(
            start >= at && start + len <= ram_bytes,
            "hole {start:#x}+{len:#x} out of order or range"
        );
        if start > at {
            m.add(PhysAddr::new(at), start - at, RegionKind::Usable)
                .expect("usable");
        }
        m.add(PhysAddr::new(start), len, RegionKind::Reserved)
            .expect("hole");
        at = start + len;
    }
    if ram_bytes > at {
        m.add(PhysAddr::new(at), ram_bytes - at, RegionKind::Usable)
            .expect("usable");
    }
    m
}

impl SimMachine {
    /// Builds the machine: memory map, bootstrap table (live, cr3 latched), multiboot info.
    ///
    /// # Panics
    /// On a configuration the sim cannot build (too little RAM, a 2 MiB bootstrap with a p2m
    /// that is not contiguous per 2 MiB, holes overlapping the image).
    pub fn new(cfg: SimConfig) -> SimMachine {
        assert!(cfg.ram_mib >= 8, "the sim needs at least 8 MiB");
        let ram_bytes = cfg.ram_mib as u64 * MIB;
        let ram_frames = (ram_bytes / PAGE_SIZE) as u32;
        for &(s, l) in &cfg.holes {
            assert!(
                (s | l) & (PAGE_SIZE - 1) == 0 && l > 0,
                "holes are page aligned"
            );
            let r = FrameRange {
                start: PhysAddr::new(s).frame().expect("frame below 16 TiB"),
                end: PhysAddr::new(s + l).frame().expect("frame below 16 TiB"),
            };
            assert!(
                r.end <= cfg.kernel_image.start || r.start >= cfg.kernel_image.end,
                "hole overlaps the kernel image (which holds the bootstrap table)"
            );
        }
        if cfg.bootstrap == BootstrapStyle::Huge2M {
            for chunk in 0..(BOOTSTRAP_MAP_BYTES / (2 * MIB)) as u32 {
                let base = chunk * 512;
                assert!(
                    (0..512).all(|i| cfg.p2m.to_machine(base + i) == cfg.p2m.to_machine(base) + i)
                        && cfg.p2m.to_machine(base) & 511 == 0,
                    "a 2 MiB bootstrap table needs a p2m contiguous per 2 MiB; use Small4K"
                );
            }
        }
        let memory = qemu_memory_map(ram_bytes, &cfg.holes);
        let max_mfn = match cfg.p2m {
            P2m::Identity => ram_frames - 1,
            P2m::Offset(o) => ram_frames - 1 + o,
            P2m::Xor(m) => {
                ram_frames
                    .next_power_of_two()
                    .max(m.next_power_of_two() * 2)
                    - 1
            }
        };
        let store = FrameStore::new(max_mfn as usize + 1);
        let l1s = match cfg.bootstrap {
            BootstrapStyle::Huge2M => 0,
            BootstrapStyle::Small4K => (BOOTSTRAP_MAP_BYTES / (2 * MIB)) as u32,
        };
        // Like the native stub's .bss: the bootstrap table sits at the end of the image.
        assert!(
            cfg.kernel_image.len() > 2 + l1s,
            "the image must hold the bootstrap table"
        );
        let bt_end = cfg.kernel_image.end;
        let bootstrap = FrameRange {
            start: PhysFrame::new(bt_end.number() - 2 - l1s),
            end: bt_end,
        };
        let mut sim = SimMachine {
            memory,
            ram_frames,
            store,
            tables: vec![None; ram_frames as usize],
            bootstrap,
            first_free: bt_end,
            cr3: MachineFrame::new(0),
            latched: [0; PDPT_ENTRIES],
            tlb: RefCell::new(HashMap::new()),
            clock: Cell::new(0),
            pt_ops: 0,
            fail_at: None,
            writes: Vec::new(),
            counts: WriteCounts::default(),
            events: Vec::new(),
            cr3_history: Vec::new(),
            retired: None,
            watch: RefCell::new(None),
            cfg,
        };
        sim.build_bootstrap(l1s);
        sim.write_multiboot();
        sim
    }

    /// What the native multiboot stub does before jumping to Rust: a PDPT whose entries 0 and
    /// 3 name one page directory mapping the first 64 MiB.
    fn build_bootstrap(&mut self, l1s: u32) {
        let pdpt = self.bootstrap.start;
        let pd = PhysFrame::new(pdpt.number() + 1);
        let m = |s: &Self, f: PhysFrame| MachineFrame::new(s.cfg.p2m.to_machine(f.number()));
        for (i, f) in self.bootstrap.iter().enumerate() {
            let level = match i {
                0 => Level::L3,
                1 => Level::L2,
                _ => Level::L1,
            };
            self.tables[f.number() as usize] = Some(level);
        }
        let pd_link = PageTableEntry::new(m(self, pd), PDPT_FLAGS);
        self.store_entry(m(self, pdpt), 0, pd_link.bits());
        self.store_entry(m(self, pdpt), 3, pd_link.bits());
        let chunks = (BOOTSTRAP_MAP_BYTES / (2 * MIB)) as usize;
        for c in 0..chunks {
            let e = if l1s == 0 {
                let base = MachineFrame::new(self.cfg.p2m.to_machine(c as u32 * 512));
                // What the native stub writes: Present | RW | PS (0x83).
                PageTableEntry::new(
                    base,
                    PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE,
                )
            } else {
                let l1 = PhysFrame::new(pd.number() + 1 + c as u32);
                for i in 0..ENTRIES {
                    let pfn = (c * ENTRIES + i) as u32;
                    if pfn < self.ram_frames {
                        let e = PageTableEntry::new(m(self, PhysFrame::new(pfn)), KERNEL_RW);
                        self.store_entry(m(self, l1), i, e.bits());
                    }
                }
                PageTableEntry::new(m(self, l1), TABLE_FLAGS)
            };
            self.store_entry(m(self, pd), c, e.bits());
        }
        self.cr3 = m(self, pdpt);
        self.latch().expect("bootstrap PDPT is valid");
    }

    // ----- configuration and what the boot path gets -----

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    /// The memory map.
    pub fn memory_map(&self) -> &MemoryMap {
        &self.memory
    }
    /// RAM in frames.
    pub fn ram_frames(&self) -> u32 {
        self.ram_frames
    }
    /// The bootstrap table's frames (PDPT first, then the page directory, then any L1s).
    pub fn bootstrap_frames(&self) -> FrameRange {
        self.bootstrap
    }
    /// The bootstrap PDPT.
    pub fn bootstrap_root(&self) -> PhysFrame {
        self.bootstrap.start
    }
    /// The bootstrap page directory.
    pub fn bootstrap_pd(&self) -> PhysFrame {
        PhysFrame::new(self.bootstrap.start.number() + 1)
    }
    /// The first frame after the image and the bootstrap table.
    pub fn first_free(&self) -> PhysFrame {
        self.first_free
    }
    /// Frames below this are mapped by the bootstrap table (and exist).
    pub fn bootstrap_reach(&self) -> PhysFrame {
        PhysFrame::new(((BOOTSTRAP_MAP_BYTES / PAGE_SIZE) as u32).min(self.ram_frames))
    }

    /// The 64 bytes of the multiboot1 info block at [`MULTIBOOT_INFO_ADDR`], as a loader
    /// leaves it: flags (mem, cmdline, mmap), mem_lower/mem_upper in KiB, boot device,
    /// cmdline pointer ([`MULTIBOOT_CMDLINE_ADDR`]), no modules, [`MULTIBOOT_TAG`] in the
    /// unused symbol-table words, mmap length and pointer ([`MULTIBOOT_MMAP_ADDR`]), then a
    /// counting pattern.
    pub fn multiboot_info_bytes(&self) -> [u8; MULTIBOOT_INFO_LEN] {
        let mut b = [0u8; MULTIBOOT_INFO_LEN];
        let put =
            |b: &mut [u8], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0, (1 << 0) | (1 << 2) | (1 << 6));
        put(&mut b, 4, (LOW_USABLE_END / 1024) as u32);
        put(&mut b, 8, (self.cfg.ram_mib - 1) * 1024);
        put(&mut b, 12, 0x8000_ffff);
        put(&mut b, 16, MULTIBOOT_CMDLINE_ADDR.as_u64() as u32);
        b[28..44].copy_from_slice(MULTIBOOT_TAG);
        put(&mut b, 44, (self.memory.regions().len() * 24) as u32);
        put(&mut b, 48, MULTIBOOT_MMAP_ADDR.as_u64() as u32);
        for (i, x) in b[52..].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(13).wrapping_add(7);
        }
        b
    }

    /// Writes the multiboot info block, its memory map (24-byte entries, type 1 usable, 2
    /// reserved) and the NUL-terminated command line into low memory.
    fn write_multiboot(&mut self) {
        let mbi = self.multiboot_info_bytes();
        self.write_phys(MULTIBOOT_INFO_ADDR, &mbi);
        let mut mmap = Vec::new();
        for r in self.memory.regions() {
            mmap.extend_from_slice(&20u32.to_le_bytes());
            mmap.extend_from_slice(&r.start.as_u64().to_le_bytes());
            mmap.extend_from_slice(&r.len.to_le_bytes());
            let kind: u32 = if r.kind == RegionKind::Usable { 1 } else { 2 };
            mmap.extend_from_slice(&kind.to_le_bytes());
        }
        self.write_phys(MULTIBOOT_MMAP_ADDR, &mmap);
        let mut cmdline = self.cfg.cmdline.as_bytes().to_vec();
        assert!(
            cmdline.len() < 1024 && !cmdline.contains(&0),
            "command line too long or has NUL"
        );
        cmdline.push(0);
        self.write_phys(MULTIBOOT_CMDLINE_ADDR, &cmdline);
    }

    /// The boot information the sim's "entry code" hands to the boot path.
    pub fn boot_info(&self) -> BootInfo<'static> {
        BootInfo {
            platform: pvops_core::boot::PlatformInfo {
                name: "sim",
                entry: "host simulation (multiboot-like)",
            },
            memory: self.memory.clone(),
            cmdline: self.cfg.cmdline,
            first_free: self.first_free,
            bootstrap_reach: self.bootstrap_reach(),
            bootstrap_tables: self.bootstrap,
            kernel_image: self.cfg.kernel_image,
            table_pool: pvops_core::addr::FrameRange::EMPTY,
            probe: Some(IoremapProbe {
                addr: MULTIBOOT_INFO_ADDR,
                len: MULTIBOOT_INFO_LEN as u64,
                what: "multiboot info",
            }),
            reserved: pvops_core::mem::Reservations::new(),
            modules: &[],
        }
    }

    // ----- fault injection and logs -----

    /// Makes page-table operation number `k` (1-based, counted from machine creation) fail
    /// with [`SimError::Injected`]; `None` disables injection.
    pub fn fail_at(&mut self, k: Option<u64>) {
        self.fail_at = k;
    }
    /// Page-table operations so far (each `MmuOps` method that returns a `Result`).
    pub fn pt_ops(&self) -> u64 {
        self.pt_ops
    }
    /// Every entry written through the ops, in order.
    pub fn writes(&self) -> &[PtWrite] {
        &self.writes
    }
    /// Writes `new` into entry `slot` of a table of `level` in the half order `order`,
    /// checked like every primitive's store (a torn intermediate is refused); logged as op
    /// `raw`. For tests of the order check itself.
    pub fn store_in_order(
        &mut self,
        level: Level,
        slot: EntrySlot,
        new: PageTableEntry,
        order: StoreOrder,
    ) -> Result<(), SimError> {
        let seq = self.pt_op("raw")?;
        self.write_entry(seq, "raw", level, slot, new, order)
    }
    /// Entry writes by operation.
    pub fn write_counts(&self) -> WriteCounts {
        self.counts
    }
    /// The other page-table operations, in order.
    pub fn events(&self) -> &[SimEvent] {
        &self.events
    }
    /// Every root loaded with `write_cr3` (the bootstrap load by the stub is not included).
    pub fn cr3_history(&self) -> &[PhysFrame] {
        &self.cr3_history
    }
    /// The level a frame is known as (announced with `alloc_pt`, or a live bootstrap table).
    pub fn table_level(&self, frame: PhysFrame) -> Option<Level> {
        self.tables.get(frame.number() as usize).copied().flatten()
    }
    /// The bootstrap frames returned by `pagetable_setup_done`, once it ran.
    pub fn retired(&self) -> Option<FrameRange> {
        self.retired
    }
    /// Frames of host memory allocated so far.
    pub fn touched_frames(&self) -> usize {
        self.store.touched()
    }

    /// Stops watching the retired bootstrap frames (the harness calls it once the boot
    /// returned, so later test walks stay cheap).
    pub fn stop_watching(&self) {
        if let Some(w) = self.watch.borrow_mut().as_mut() {
            w.ticks_left = 0;
        }
    }
    /// Every distinct content a retired bootstrap frame had at a sim call after
    /// `pagetable_setup_done` (first its content at retirement).
    pub fn retired_versions(&self, frame: PhysFrame) -> Vec<Vec<u8>> {
        let w = self.watch.borrow();
        let Some(w) = w.as_ref() else {
            return Vec::new();
        };
        if !w.frames.contains(frame) {
            return Vec::new();
        }
        w.versions[(frame.number() - w.frames.start.number()) as usize]
            .iter()
            .map(|v| v.to_vec())
            .collect()
    }
}
