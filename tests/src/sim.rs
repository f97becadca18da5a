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

use pvops_core::addr::{FrameRange, MachineFrame, PhysAddr, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::boot::{BootInfo, IoremapProbe};
use pvops_core::mem::{MemoryMap, RegionKind};
use pvops_core::ops::{MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::paging::{
    EntrySlot, Level, PageTableEntry, PteFlags, ADDRESS_MASK, ENTRIES, KERNEL_RW, PDPT_ENTRIES,
    PDPT_FLAGS, TABLE_FLAGS,
};
use pvops_core::registry::{BackendDescriptor, BACKENDS};
use std::alloc::{alloc_zeroed, dealloc, Layout};
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
    page_offset: VirtAddr(PAGE_OFFSET),
    lowmem_limit: LOWMEM_LIMIT,
    ioremap_window: VirtAddr(IOREMAP_WINDOW),
    scratch_area: VirtAddr(SCRATCH_AREA),
    lowmem_formula: "Linux 32-bit lowmem: 4 GiB - 0xC0000000 - 128 MiB vmalloc reserve",
};
/// How much the bootstrap table maps (from pa 0, identity and at `page_offset`).
pub const BOOTSTRAP_MAP_BYTES: u64 = 64 * MIB;
/// End of usable low memory in QEMU's multiboot map (start of the EBDA).
pub const LOW_USABLE_END: u64 = 0x9_fc00;
/// Start of usable high memory.
pub const HIGH_USABLE_START: u64 = MIB;
/// The default fake kernel image: pfn 0x100..0x180 (1 MiB .. 1.5 MiB).
pub const DEFAULT_KERNEL_IMAGE: FrameRange = FrameRange {
    start: PhysFrame(0x100),
    end: PhysFrame(0x180),
};
/// Where the fake multiboot info block sits.
pub const MULTIBOOT_INFO_ADDR: PhysAddr = PhysAddr(0x9000);
/// Length of the fake multiboot info block (what early_ioremap compares).
pub const MULTIBOOT_INFO_LEN: usize = 64;
/// The recognisable tag inside the multiboot info block (bytes 28..44, the symbol-table
/// words, unused since flags bits 4 and 5 are clear).
pub const MULTIBOOT_TAG: &[u8; 16] = b"PVOPS-SIM MBI v1";
/// Where the multiboot memory map sits.
pub const MULTIBOOT_MMAP_ADDR: PhysAddr = PhysAddr(0x9100);
/// Where the NUL-terminated command line sits.
pub const MULTIBOOT_CMDLINE_ADDR: PhysAddr = PhysAddr(0x9400);
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
static SIM_BACKEND: BackendDescriptor = BackendDescriptor {
    name: "sim",
    entry: "host test, simulated PAE machine",
};

/// How pseudo-physical frames map to machine frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2m {
    /// mfn = pfn (bare metal).
    Identity,
    /// mfn = pfn ^ mask. Permutes frames inside 2 MiB chunks when the mask has bits below 9,
    /// so it needs [`BootstrapStyle::Small4K`].
    Xor(u32),
    /// mfn = pfn + offset (offset a multiple of 512 keeps 2 MiB pages possible).
    Offset(u32),
}

impl P2m {
    /// The machine frame of `pfn` (no range check).
    pub const fn to_machine(self, pfn: u32) -> u32 {
        match self {
            P2m::Identity => pfn,
            P2m::Xor(m) => pfn ^ m,
            P2m::Offset(o) => pfn.wrapping_add(o),
        }
    }
    /// The pseudo-physical frame of `mfn` (no range check), `None` when no pfn maps there.
    pub const fn to_phys(self, mfn: u32) -> Option<u32> {
        match self {
            P2m::Identity => Some(mfn),
            P2m::Xor(m) => Some(mfn ^ m),
            P2m::Offset(o) => mfn.checked_sub(o),
        }
    }
}

/// How the sim's bootstrap table maps the first 64 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapStyle {
    /// PDPT + one page directory of 2 MiB pages (the native multiboot stub).
    Huge2M,
    /// PDPT + one page directory + 32 L1 tables of 4 KiB pages (what Xen hands a PV guest).
    Small4K,
}

/// The machine to build.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// RAM size in MiB (at least 8).
    pub ram_mib: u32,
    /// The p2m.
    pub p2m: P2m,
    /// How the bootstrap table is built.
    pub bootstrap: BootstrapStyle,
    /// Reserved ranges `(start, len)` carved out of usable RAM above 1 MiB (page aligned).
    pub holes: Vec<(u64, u64)>,
    /// The kernel image's frames.
    pub kernel_image: FrameRange,
    /// The layout the sim reports.
    pub layout: MemoryLayout,
    /// The command line in the boot info.
    pub cmdline: &'static str,
    /// `frame_ptr` answers only for frames the live table maps in the direct map.
    pub strict_reach: bool,
    /// EFER.NXE: when off, bit 63 in an entry is a reserved-bit fault.
    pub nx: bool,
}

impl SimConfig {
    /// A QEMU-like multiboot machine with `ram_mib` MiB of RAM, identity p2m, native
    /// bootstrap table and layout.
    pub fn new(ram_mib: u32) -> SimConfig {
        SimConfig {
            ram_mib,
            p2m: P2m::Identity,
            bootstrap: BootstrapStyle::Huge2M,
            holes: Vec::new(),
            kernel_image: DEFAULT_KERNEL_IMAGE,
            layout: NATIVE_LAYOUT,
            cmdline: "/kernel console=ttyS0",
            strict_reach: true,
            nx: false,
        }
    }
    /// Sets the p2m.
    pub fn p2m(mut self, p2m: P2m) -> Self {
        self.p2m = p2m;
        self
    }
    /// Sets the bootstrap table style.
    pub fn bootstrap(mut self, style: BootstrapStyle) -> Self {
        self.bootstrap = style;
        self
    }
    /// Adds a reserved hole `[start, start + len)` in high memory.
    pub fn hole(mut self, start: u64, len: u64) -> Self {
        self.holes.push((start, len));
        self
    }
    /// Sets the command line.
    pub fn cmdline(mut self, cmdline: &'static str) -> Self {
        self.cmdline = cmdline;
        self
    }
    /// Sets the reported layout.
    pub fn layout(mut self, layout: MemoryLayout) -> Self {
        self.layout = layout;
        self
    }
    /// Builds the machine.
    pub fn build(self) -> SimMachine {
        SimMachine::new(self)
    }
}

/// Errors of the simulated backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// A failure injected with [`SimMachine::fail_at`] at page-table operation `n`.
    Injected {
        /// The operation's number (1-based).
        n: u64,
        /// Which operation.
        op: &'static str,
    },
    /// The pseudo-physical frame is outside RAM.
    NoSuchFrame(PhysFrame),
    /// A write to a frame that is not a table of the level the operation needs.
    NotATable {
        /// The operation.
        op: &'static str,
        /// The frame written.
        table: PhysFrame,
        /// The level the operation needs.
        want: Level,
        /// What the frame is (`None`: ordinary memory).
        is: Option<Level>,
    },
    /// A PDPT index of 4 or more.
    BadIndex {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: EntrySlot,
    },
    /// A present entry links a frame that is not an announced table of the next level.
    BadLink {
        /// The operation.
        op: &'static str,
        /// The slot written.
        slot: EntrySlot,
        /// The entry.
        entry: PageTableEntry,
    },
    /// `write_cr3` of a PDPT with reserved bits set in a present entry (#GP on hardware).
    PdpteReserved {
        /// The PDPT index.
        index: usize,
        /// The entry's bits.
        bits: u64,
    },
    /// `alloc_pt` of a frame that is already a table.
    AlreadyTable {
        /// The frame.
        frame: PhysFrame,
        /// Its current level.
        level: Level,
    },
    /// `alloc_pt` of a frame that is not zeroed.
    NotZeroed(PhysFrame),
    /// `release_pt` of a frame that is still linked from a table.
    StillLinked {
        /// The frame released.
        frame: PhysFrame,
        /// The table that still links it.
        from: PhysFrame,
        /// The index there.
        index: usize,
    },
    /// `pagetable_setup_done` while the given root is not the live one.
    NotLive {
        /// The root passed.
        root: PhysFrame,
        /// The live root.
        live: PhysFrame,
    },
    /// `pagetable_setup_done` twice.
    AlreadyRetired,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lvl = |l: Option<Level>| l.map_or("ordinary memory", Level::name);
        match self {
            Self::Injected { n, op } => {
                write!(f, "sim: injected failure of page-table op #{n} ({op})")
            }
            Self::NoSuchFrame(p) => write!(f, "sim: pfn {p} is outside RAM"),
            Self::NotATable {
                op,
                table,
                want,
                is,
            } => write!(
                f,
                "sim: {op} into pfn {table}, which is {} (needs {})",
                lvl(*is),
                want.name()
            ),
            Self::BadIndex { op, slot } => {
                write!(f, "sim: {op} at index {} of pfn {}", slot.index, slot.table)
            }
            Self::BadLink { op, slot, entry } => write!(
                f,
                "sim: {op} pfn {}[{}] = {entry:?} links no announced table",
                slot.table, slot.index
            ),
            Self::PdpteReserved { index, bits } => {
                write!(
                    f,
                    "sim: #GP on cr3 load: PDPTE {index} = {bits:#x} has reserved bits"
                )
            }
            Self::AlreadyTable { frame, level } => {
                write!(
                    f,
                    "sim: alloc_pt of pfn {frame}, already an {} table",
                    level.name()
                )
            }
            Self::NotZeroed(p) => write!(f, "sim: alloc_pt of pfn {p}, which is not zeroed"),
            Self::StillLinked { frame, from, index } => {
                write!(
                    f,
                    "sim: release_pt of pfn {frame}, still linked from pfn {from}[{index}]"
                )
            }
            Self::NotLive { root, live } => {
                write!(
                    f,
                    "sim: pagetable_setup_done({root}) while pfn {live} is live"
                )
            }
            Self::AlreadyRetired => write!(f, "sim: bootstrap table retired twice"),
        }
    }
}

impl std::error::Error for SimError {}

/// One page-table entry written through the ops (the bootstrap stub's writes are not logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtWrite {
    /// The page-table operation's number (shared with [`SimEvent`]s).
    pub seq: u64,
    /// The level of the table written (`pte_clear` logs [`Level::L1`] and an empty entry).
    pub level: Level,
    /// Where.
    pub slot: EntrySlot,
    /// What.
    pub value: PageTableEntry,
}

/// The page-table operations other than entry writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimEvent {
    /// `write_cr3(root)`.
    Cr3 {
        /// Operation number.
        seq: u64,
        /// The new root.
        root: PhysFrame,
    },
    /// `alloc_pt`.
    AllocPt {
        /// Operation number.
        seq: u64,
        /// The frame.
        frame: PhysFrame,
        /// Its level.
        level: Level,
    },
    /// `release_pt`.
    ReleasePt {
        /// Operation number.
        seq: u64,
        /// The frame.
        frame: PhysFrame,
        /// Its level.
        level: Level,
    },
    /// `pagetable_setup_start`.
    SetupStart {
        /// Operation number.
        seq: u64,
        /// The kernel root.
        root: PhysFrame,
    },
    /// `pagetable_setup_done`.
    SetupDone {
        /// Operation number.
        seq: u64,
        /// The kernel root.
        root: PhysFrame,
        /// The frames handed back.
        released: FrameRange,
    },
    /// `flush_tlb_single`.
    FlushSingle {
        /// Operation number.
        seq: u64,
        /// The page.
        va: VirtAddr,
    },
    /// `flush_tlb_all`.
    FlushAll {
        /// Operation number.
        seq: u64,
    },
}

impl SimEvent {
    /// The operation number.
    pub fn seq(&self) -> u64 {
        match *self {
            SimEvent::Cr3 { seq, .. }
            | SimEvent::AllocPt { seq, .. }
            | SimEvent::ReleasePt { seq, .. }
            | SimEvent::SetupStart { seq, .. }
            | SimEvent::SetupDone { seq, .. }
            | SimEvent::FlushSingle { seq, .. }
            | SimEvent::FlushAll { seq } => seq,
        }
    }
}

/// Entry writes by operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// `set_pte`.
    pub pte: u64,
    /// `set_pmd`.
    pub pmd: u64,
    /// `set_pud`.
    pub pud: u64,
    /// `pte_clear`.
    pub clear: u64,
}

/// A memory access kind for the walker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// The result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The machine frame of the page.
    pub mfn: MachineFrame,
    /// The pseudo-physical frame, when the machine frame belongs to the guest.
    pub pfn: Option<PhysFrame>,
    /// Writes allowed (RW in the L2 and the L1 entry).
    pub writable: bool,
    /// Mapped by a 2 MiB page.
    pub huge: bool,
    /// Global.
    pub global: bool,
    /// The leaf entry (the L2 entry for a 2 MiB page).
    pub leaf: PageTableEntry,
}

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
    /// Host storage per machine frame, null until touched.
    store: Vec<Cell<*mut u8>>,
    touched: Cell<usize>,
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

impl Drop for SimMachine {
    fn drop(&mut self) {
        for c in &self.store {
            let p = c.get();
            if !p.is_null() {
                // SAFETY: allocated in `mframe` with `frame_layout()` and never freed before.
                unsafe { dealloc(p, frame_layout()) };
            }
        }
    }
}

fn frame_layout() -> Layout {
    Layout::from_size_align(FRAME_BYTES, FRAME_BYTES).expect("4 KiB layout")
}

impl fmt::Debug for SimMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMachine")
            .field("ram_mib", &self.cfg.ram_mib)
            .field("p2m", &self.cfg.p2m)
            .field("cr3", &self.cr3)
            .field("pt_ops", &self.pt_ops)
            .field("touched_frames", &self.touched.get())
            .finish_non_exhaustive()
    }
}

/// Builds a QEMU-like multiboot memory map: usable `[0, 0x9fc00)`, reserved
/// `[0x9fc00, 1 MiB)`, usable `[1 MiB, ram)` minus the `holes`, which are reserved.
pub fn qemu_memory_map(ram_bytes: u64, holes: &[(u64, u64)]) -> MemoryMap {
    let mut m = MemoryMap::new();
    m.add(PhysAddr(0), LOW_USABLE_END, RegionKind::Usable)
        .expect("low memory");
    m.add(
        PhysAddr(LOW_USABLE_END),
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
            m.add(PhysAddr(at), start - at, RegionKind::Usable)
                .expect("usable");
        }
        m.add(PhysAddr(start), len, RegionKind::Reserved)
            .expect("hole");
        at = start + len;
    }
    if ram_bytes > at {
        m.add(PhysAddr(at), ram_bytes - at, RegionKind::Usable)
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
                start: PhysAddr(s).frame(),
                end: PhysAddr(s + l).frame(),
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
        let store = vec![Cell::new(std::ptr::null_mut()); max_mfn as usize + 1];
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
            start: PhysFrame(bt_end.0 - 2 - l1s),
            end: bt_end,
        };
        let mut sim = SimMachine {
            memory,
            ram_frames,
            store,
            touched: Cell::new(0),
            tables: vec![None; ram_frames as usize],
            bootstrap,
            first_free: bt_end,
            cr3: MachineFrame(0),
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
        let pd = PhysFrame(pdpt.0 + 1);
        let m = |s: &Self, f: PhysFrame| MachineFrame(s.cfg.p2m.to_machine(f.0));
        for (i, f) in self.bootstrap.iter().enumerate() {
            let level = match i {
                0 => Level::L3,
                1 => Level::L2,
                _ => Level::L1,
            };
            self.tables[f.0 as usize] = Some(level);
        }
        let pd_link = PageTableEntry::new(m(self, pd), PDPT_FLAGS);
        self.store_entry(m(self, pdpt), 0, pd_link.bits());
        self.store_entry(m(self, pdpt), 3, pd_link.bits());
        let chunks = (BOOTSTRAP_MAP_BYTES / (2 * MIB)) as usize;
        for c in 0..chunks {
            let e = if l1s == 0 {
                let base = MachineFrame(self.cfg.p2m.to_machine(c as u32 * 512));
                // What the native stub writes: Present | RW | PS (0x83).
                PageTableEntry::new(
                    base,
                    PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE,
                )
            } else {
                let l1 = PhysFrame(pd.0 + 1 + c as u32);
                for i in 0..ENTRIES {
                    let pfn = (c * ENTRIES + i) as u32;
                    if pfn < self.ram_frames {
                        let e = PageTableEntry::new(m(self, PhysFrame(pfn)), KERNEL_RW);
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
        PhysFrame(self.bootstrap.start.0 + 1)
    }
    /// The first frame after the image and the bootstrap table.
    pub fn first_free(&self) -> PhysFrame {
        self.first_free
    }
    /// Frames below this are mapped by the bootstrap table (and exist).
    pub fn bootstrap_reach(&self) -> PhysFrame {
        PhysFrame(((BOOTSTRAP_MAP_BYTES / PAGE_SIZE) as u32).min(self.ram_frames))
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
        put(&mut b, 16, MULTIBOOT_CMDLINE_ADDR.0 as u32);
        b[28..44].copy_from_slice(MULTIBOOT_TAG);
        put(&mut b, 44, (self.memory.regions().len() * 24) as u32);
        put(&mut b, 48, MULTIBOOT_MMAP_ADDR.0 as u32);
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
            mmap.extend_from_slice(&r.start.0.to_le_bytes());
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
        self.tables.get(frame.0 as usize).copied().flatten()
    }
    /// The bootstrap frames returned by `pagetable_setup_done`, once it ran.
    pub fn retired(&self) -> Option<FrameRange> {
        self.retired
    }
    /// Frames of host memory allocated so far.
    pub fn touched_frames(&self) -> usize {
        self.touched.get()
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
        w.versions[(frame.0 - w.frames.start.0) as usize]
            .iter()
            .map(|v| v.to_vec())
            .collect()
    }

    // ----- memory -----

    fn backed(&self, mfn: u32) -> bool {
        (mfn as usize) < self.store.len()
            && self
                .cfg
                .p2m
                .to_phys(mfn)
                .is_some_and(|p| p < self.ram_frames)
    }

    /// Host storage of a machine frame (allocated and zeroed on first touch).
    fn mframe(&self, mfn: u32) -> Option<*mut u8> {
        let cell = self.store.get(mfn as usize)?;
        let p = cell.get();
        if !p.is_null() {
            return Some(p); // only backed frames are ever allocated
        }
        if !self.backed(mfn) {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(frame_layout()) };
        assert!(!p.is_null(), "host out of memory");
        cell.set(p);
        self.touched.set(self.touched.get() + 1);
        Some(p)
    }

    fn load_entry(&self, mfn: u32, index: usize) -> Option<u64> {
        let p = self.mframe(mfn)?;
        // SAFETY: `p` is a live 4096-byte, 4096-aligned allocation; index < 512.
        Some(unsafe { (p as *const u64).add(index % ENTRIES).read_volatile() })
    }

    fn store_entry(&self, mfn: MachineFrame, index: usize, bits: u64) {
        let p = self.mframe(mfn.0).expect("table frame is backed");
        // SAFETY: as in `load_entry`.
        unsafe { (p as *mut u64).add(index % ENTRIES).write_volatile(bits) };
    }

    fn pfn_to_mfn(&self, pfn: PhysFrame) -> Option<u32> {
        (pfn.0 < self.ram_frames).then(|| self.cfg.p2m.to_machine(pfn.0))
    }
    fn mfn_to_pfn(&self, mfn: u32) -> Option<PhysFrame> {
        self.cfg
            .p2m
            .to_phys(mfn)
            .filter(|p| *p < self.ram_frames)
            .map(PhysFrame)
    }

    /// Reads the raw entry `index` of pseudo-physical table `table` (no reachability check,
    /// no clock tick).
    pub fn entry(&self, table: PhysFrame, index: usize) -> PageTableEntry {
        let mfn = self.pfn_to_mfn(table).expect("table inside RAM");
        PageTableEntry::from_bits(self.load_entry(mfn, index).unwrap_or(0))
    }

    /// Reads pseudo-physical memory (through the p2m, bypassing paging).
    pub fn read_phys(&self, pa: PhysAddr, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = pa.0 + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (FRAME_BYTES - off).min(buf.len() - done);
            let p = self
                .pfn_to_mfn(PhysAddr(a).frame())
                .and_then(|m| self.mframe(m))
                .expect("pa inside RAM");
            // SAFETY: `p` is 4096 bytes; off + n <= 4096.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), buf[done..].as_mut_ptr(), n) };
            done += n;
        }
    }

    /// Writes pseudo-physical memory (through the p2m, bypassing paging).
    pub fn write_phys(&mut self, pa: PhysAddr, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = pa.0 + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (FRAME_BYTES - off).min(data.len() - done);
            let p = self
                .pfn_to_mfn(PhysAddr(a).frame())
                .and_then(|m| self.mframe(m))
                .expect("pa inside RAM");
            // SAFETY: as in `read_phys`.
            unsafe { std::ptr::copy_nonoverlapping(data[done..].as_ptr(), p.add(off), n) };
            done += n;
        }
    }

    /// The 4096 bytes of a pseudo-physical frame.
    pub fn frame_bytes(&self, frame: PhysFrame) -> Vec<u8> {
        let mut v = vec![0u8; FRAME_BYTES];
        self.read_phys(frame.start(), &mut v);
        v
    }

    // ----- paging -----

    /// The PDPT entries latched by the last cr3 load.
    pub fn latched_pdptes(&self) -> [PageTableEntry; PDPT_ENTRIES] {
        self.latched.map(PageTableEntry::from_bits)
    }

    /// The machine frame in cr3.
    pub fn cr3_mfn(&self) -> MachineFrame {
        self.cr3
    }

    fn latch(&mut self) -> Result<(), SimError> {
        let mut l = [0u64; PDPT_ENTRIES];
        for (i, e) in l.iter_mut().enumerate() {
            *e = self.load_entry(self.cr3.0, i).unwrap_or(u64::MAX);
            if *e & 1 != 0 && *e & PDPTE_RESERVED != 0 {
                return Err(SimError::PdpteReserved { index: i, bits: *e });
            }
        }
        self.latched = l;
        Ok(())
    }

    /// Walks the live address space like the MMU, without the TLB: latched PDPTEs, then the
    /// L2 and L1 frames in memory.
    pub fn walk(&self, va: VirtAddr, access: Access) -> Result<Translation, PageFault> {
        self.walk_from(&self.latched, va, access)
    }

    /// Walks the table rooted at `root` as a CPU would right after loading it into cr3 (its
    /// PDPT entries read from memory now), without the TLB.
    pub fn walk_root(
        &self,
        root: PhysFrame,
        va: VirtAddr,
        access: Access,
    ) -> Result<Translation, PageFault> {
        let mfn = self.pfn_to_mfn(root).expect("root inside RAM");
        let mut l = [0u64; PDPT_ENTRIES];
        for (i, e) in l.iter_mut().enumerate() {
            *e = self.load_entry(mfn, i).unwrap_or(0);
        }
        self.walk_from(&l, va, access)
    }

    fn walk_from(
        &self,
        pdptes: &[u64; PDPT_ENTRIES],
        va: VirtAddr,
        access: Access,
    ) -> Result<Translation, PageFault> {
        let w = if access == Access::Write { PF_WRITE } else { 0 };
        let fault = |error: u32| PageFault { addr: va, error };
        let nx_rsvd = if self.cfg.nx {
            0
        } else {
            PteFlags::NO_EXECUTE.bits()
        };
        let l3e = pdptes[va.l3_index()];
        if l3e & 1 == 0 {
            return Err(fault(w));
        }
        let l2 = ((l3e & ADDRESS_MASK) / PAGE_SIZE) as u32;
        let l2e = self
            .load_entry(l2, va.l2_index())
            .ok_or(fault(w | PF_RSVD))?;
        if l2e & 1 == 0 {
            return Err(fault(w));
        }
        let huge = l2e & PteFlags::HUGE.bits() != 0;
        if l2e & nx_rsvd != 0 || (huge && l2e & HUGE_RESERVED != 0) {
            return Err(fault(w | PF_PRESENT | PF_RSVD));
        }
        let mut writable = l2e & PteFlags::WRITABLE.bits() != 0;
        let (mfn, leaf) = if huge {
            let base = ((l2e & ADDRESS_MASK & !(2 * MIB - 1)) / PAGE_SIZE) as u32;
            (base + va.l1_index() as u32, l2e)
        } else {
            let l1 = ((l2e & ADDRESS_MASK) / PAGE_SIZE) as u32;
            let l1e = self
                .load_entry(l1, va.l1_index())
                .ok_or(fault(w | PF_RSVD))?;
            if l1e & 1 == 0 {
                return Err(fault(w));
            }
            if l1e & nx_rsvd != 0 {
                return Err(fault(w | PF_PRESENT | PF_RSVD));
            }
            writable &= l1e & PteFlags::WRITABLE.bits() != 0;
            (((l1e & ADDRESS_MASK) / PAGE_SIZE) as u32, l1e)
        };
        if access == Access::Write && !writable {
            return Err(fault(w | PF_PRESENT));
        }
        Ok(Translation {
            mfn: MachineFrame(mfn),
            pfn: self.mfn_to_pfn(mfn),
            writable,
            huge,
            global: leaf & PteFlags::GLOBAL.bits() != 0,
            leaf: PageTableEntry::from_bits(leaf),
        })
    }

    /// Translates through the TLB, filling it from a walk on a miss (or when the cached
    /// entry does not allow the access: the CPU re-walks before faulting).
    fn tlb_translate(&self, va: VirtAddr, access: Access) -> Result<u32, PageFault> {
        let vpn = va.0 >> 12;
        if let Some(e) = self.tlb.borrow().get(&vpn) {
            if access == Access::Read || e.writable {
                return Ok(e.mfn);
            }
        }
        self.tlb.borrow_mut().remove(&vpn);
        let t = self.walk(va, access)?;
        self.tlb.borrow_mut().insert(
            vpn,
            TlbEntry {
                mfn: t.mfn.0,
                writable: t.writable,
                global: t.global,
            },
        );
        Ok(t.mfn.0)
    }

    /// True when the TLB holds a translation for `va`'s page.
    pub fn tlb_has(&self, va: VirtAddr) -> bool {
        self.tlb.borrow().contains_key(&(va.0 >> 12))
    }
    /// Translations in the TLB.
    pub fn tlb_len(&self) -> usize {
        self.tlb.borrow().len()
    }

    fn access_virt(
        &self,
        va: VirtAddr,
        len: usize,
        access: Access,
        mut f: impl FnMut(Option<*mut u8>, usize, usize),
    ) -> Result<(), PageFault> {
        let mut done = 0usize;
        while done < len {
            let a = VirtAddr(va.0.wrapping_add(done as u32));
            let off = a.page_offset() as usize;
            let n = (FRAME_BYTES - off).min(len - done);
            let mfn = self.tlb_translate(a, access)?;
            f(self.mframe(mfn).map(|p| p.wrapping_add(off)), done, n);
            done += n;
        }
        Ok(())
    }

    // ----- bookkeeping of page-table operations -----

    fn tick(&self) -> u64 {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        let mut w = self.watch.borrow_mut();
        if let Some(w) = w.as_mut().filter(|w| w.ticks_left > 0) {
            w.ticks_left -= 1;
            for (i, f) in w.frames.iter().enumerate() {
                let Some(p) = self.pfn_to_mfn(f).and_then(|m| self.mframe(m)) else {
                    continue;
                };
                // SAFETY: 4096 readable bytes.
                let now = unsafe { std::slice::from_raw_parts(p as *const u8, FRAME_BYTES) };
                if w.versions[i].last().is_none_or(|v| **v != *now) {
                    w.versions[i].push(now.into());
                }
            }
        }
        now
    }

    /// Counts a page-table operation and fails it when injection says so.
    fn pt_op(&mut self, op: &'static str) -> Result<u64, SimError> {
        self.tick();
        self.pt_ops += 1;
        let n = self.pt_ops;
        if self.fail_at == Some(n) {
            return Err(SimError::Injected { n, op });
        }
        Ok(n)
    }

    fn need_table(&self, op: &'static str, slot: EntrySlot, want: Level) -> Result<u32, SimError> {
        let is = self.table_level(slot.table);
        if is != Some(want) {
            return Err(SimError::NotATable {
                op,
                table: slot.table,
                want,
                is,
            });
        }
        if want == Level::L3 && slot.index as usize >= PDPT_ENTRIES
            || slot.index as usize >= ENTRIES
        {
            return Err(SimError::BadIndex { op, slot });
        }
        self.pfn_to_mfn(slot.table)
            .ok_or(SimError::NoSuchFrame(slot.table))
    }

    fn check_link(
        &self,
        op: &'static str,
        slot: EntrySlot,
        entry: PageTableEntry,
        want: Level,
    ) -> Result<(), SimError> {
        if !entry.is_present() || (want == Level::L1 && entry.flags().contains(PteFlags::HUGE)) {
            return Ok(());
        }
        let target = self.mfn_to_pfn(entry.frame().0);
        if target.and_then(|t| self.table_level(t)) != Some(want) {
            return Err(SimError::BadLink { op, slot, entry });
        }
        Ok(())
    }

    fn log_write(
        &mut self,
        seq: u64,
        level: Level,
        slot: EntrySlot,
        value: PageTableEntry,
        clear: bool,
    ) {
        self.writes.push(PtWrite {
            seq,
            level,
            slot,
            value,
        });
        match (level, clear) {
            (_, true) => self.counts.clear += 1,
            (Level::L1, false) => self.counts.pte += 1,
            (Level::L2, false) => self.counts.pmd += 1,
            (Level::L3, false) => self.counts.pud += 1,
        }
    }

    fn linked_from(&self, frame: PhysFrame) -> Option<(PhysFrame, usize)> {
        let mfn = self.pfn_to_mfn(frame)?;
        self.tables.iter().enumerate().find_map(|(pfn, l)| {
            let n = match l {
                Some(Level::L3) => PDPT_ENTRIES,
                Some(Level::L2) => ENTRIES,
                _ => return None,
            };
            let tm = self.cfg.p2m.to_machine(pfn as u32);
            (0..n).find_map(|i| {
                let e = PageTableEntry::from_bits(self.load_entry(tm, i).unwrap_or(0));
                let huge = *l == Some(Level::L2) && e.flags().contains(PteFlags::HUGE);
                (e.is_present() && !huge && e.frame().0 == mfn)
                    .then_some((PhysFrame(pfn as u32), i))
            })
        })
    }
}

impl MmuOps for SimMachine {
    type Error = SimError;
    const NAME: &'static str = "sim";
    const READ_ONLY_PAGE_TABLES: bool = false;

    fn layout(&self) -> MemoryLayout {
        self.tick();
        self.cfg.layout
    }

    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        self.tick();
        self.pfn_to_mfn(frame).map(MachineFrame)
    }

    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        self.tick();
        self.mfn_to_pfn(frame.0)
    }

    fn read_cr3(&self) -> PhysFrame {
        self.tick();
        self.mfn_to_pfn(self.cr3.0).expect("cr3 names guest memory")
    }

    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), SimError> {
        let seq = self.pt_op("write_cr3")?;
        let mfn = self.pfn_to_mfn(root).ok_or(SimError::NoSuchFrame(root))?;
        let old = (self.cr3, self.latched);
        self.cr3 = MachineFrame(mfn);
        if let Err(e) = self.latch() {
            (self.cr3, self.latched) = old;
            return Err(e);
        }
        self.tlb.borrow_mut().retain(|_, e| e.global);
        self.cr3_history.push(root);
        self.events.push(SimEvent::Cr3 { seq, root });
        Ok(())
    }

    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pte")?;
        let mfn = self.need_table("set_pte", slot, Level::L1)?;
        self.store_entry(MachineFrame(mfn), slot.index as usize, entry.bits());
        self.log_write(seq, Level::L1, slot, entry, false);
        Ok(())
    }

    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pmd")?;
        let mfn = self.need_table("set_pmd", slot, Level::L2)?;
        self.check_link("set_pmd", slot, entry, Level::L1)?;
        self.store_entry(MachineFrame(mfn), slot.index as usize, entry.bits());
        self.log_write(seq, Level::L2, slot, entry, false);
        Ok(())
    }

    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pud")?;
        let mfn = self.need_table("set_pud", slot, Level::L3)?;
        self.check_link("set_pud", slot, entry, Level::L2)?;
        self.store_entry(MachineFrame(mfn), slot.index as usize, entry.bits());
        self.log_write(seq, Level::L3, slot, entry, false);
        Ok(())
    }

    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), SimError> {
        let seq = self.pt_op("pte_clear")?;
        let mfn = self.need_table("pte_clear", slot, Level::L1)?;
        self.store_entry(MachineFrame(mfn), slot.index as usize, 0);
        self.log_write(seq, Level::L1, slot, PageTableEntry::EMPTY, true);
        Ok(())
    }

    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), SimError> {
        let seq = self.pt_op("flush_tlb_single")?;
        self.tlb.borrow_mut().remove(&(va.0 >> 12));
        self.events.push(SimEvent::FlushSingle { seq, va });
        Ok(())
    }

    fn flush_tlb_all(&mut self) -> Result<(), SimError> {
        let seq = self.pt_op("flush_tlb_all")?;
        self.tlb.borrow_mut().retain(|_, e| e.global);
        self.events.push(SimEvent::FlushAll { seq });
        Ok(())
    }

    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), SimError> {
        let seq = self.pt_op("pagetable_setup_start")?;
        let slot = EntrySlot {
            table: root,
            index: 0,
        };
        self.need_table("pagetable_setup_start", slot, Level::L3)?;
        self.events.push(SimEvent::SetupStart { seq, root });
        Ok(())
    }

    fn pagetable_setup_done(&mut self, root: PhysFrame) -> Result<FrameRange, SimError> {
        let seq = self.pt_op("pagetable_setup_done")?;
        let live = self.mfn_to_pfn(self.cr3.0).expect("cr3 names guest memory");
        if live != root {
            return Err(SimError::NotLive { root, live });
        }
        if self.retired.is_some() {
            return Err(SimError::AlreadyRetired);
        }
        for f in self.bootstrap.iter() {
            self.tables[f.0 as usize] = None;
        }
        let released = self.bootstrap;
        self.retired = Some(released);
        self.events.push(SimEvent::SetupDone {
            seq,
            root,
            released,
        });
        *self.watch.borrow_mut() = Some(Watch {
            frames: released,
            versions: vec![Vec::new(); released.len() as usize],
            ticks_left: WATCH_TICKS,
        });
        self.tick(); // records the content at retirement
        Ok(released)
    }

    fn alloc_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), SimError> {
        let seq = self.pt_op("alloc_pt")?;
        let mfn = self.pfn_to_mfn(frame).ok_or(SimError::NoSuchFrame(frame))?;
        if let Some(l) = self.table_level(frame) {
            return Err(SimError::AlreadyTable { frame, level: l });
        }
        if (0..ENTRIES).any(|i| self.load_entry(mfn, i) != Some(0)) {
            return Err(SimError::NotZeroed(frame));
        }
        self.tables[frame.0 as usize] = Some(level);
        self.events.push(SimEvent::AllocPt { seq, frame, level });
        Ok(())
    }

    fn release_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), SimError> {
        let seq = self.pt_op("release_pt")?;
        let slot = EntrySlot {
            table: frame,
            index: 0,
        };
        self.need_table("release_pt", slot, level)?;
        if let Some((from, index)) = self.linked_from(frame) {
            return Err(SimError::StillLinked { frame, from, index });
        }
        self.tables[frame.0 as usize] = None;
        self.events.push(SimEvent::ReleasePt { seq, frame, level });
        Ok(())
    }
}

impl Platform for SimMachine {
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8> {
        self.tick();
        let mfn = self.pfn_to_mfn(frame)?;
        if self.cfg.strict_reach {
            let va = self.cfg.layout.phys_to_virt(frame.start());
            let reach = frame.start().0 < (1u64 << 32) - self.cfg.layout.page_offset.0 as u64
                && self.walk(va, Access::Read).is_ok_and(|t| t.mfn.0 == mfn);
            if !reach {
                return None;
            }
        }
        self.mframe(mfn)
    }

    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        self.tick();
        self.access_virt(va, buf.len(), Access::Read, |p, at, n| match p {
            // SAFETY: `p` points into a 4096-byte frame with at least `n` bytes left.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, buf[at..].as_mut_ptr(), n) },
            None => buf[at..at + n].fill(0xff), // no RAM there: open bus
        })
    }

    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        self.tick();
        self.access_virt(va, data.len(), Access::Write, |p, at, n| {
            if let Some(p) = p {
                // SAFETY: as in `read_virt`.
                unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), p, n) };
            }
        })
    }

    fn cycles(&self) -> u64 {
        self.tick()
    }
}
