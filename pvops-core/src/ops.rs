//! The paravirt MMU operations table (`pv_mmu_ops`) and the machine access a boot path needs.
//!
//! A backend implements [`MmuOps`] (page-table writes, cr3, flushes, page-table lifetime hooks,
//! address translation, lazy batching) and [`Platform`] (memory access, a cycle counter). The
//! boot path is generic over them, so every call is statically dispatched: on bare metal
//! `set_pte` inlines to two plain stores.

use crate::addr::{FrameRange, MachineFrame, PhysAddr, PhysFrame, VirtAddr};
use crate::paging::{EntrySlot, Level, PageTableEntry};
use core::fmt;

/// Where things sit in the kernel's virtual address space. Supplied by the backend, because
/// under Xen everything must stay below the hypervisor hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Virtual address of pseudo-physical address 0 (start of the direct map).
    pub page_offset: VirtAddr,
    /// Bytes of pseudo-physical memory the direct map may cover ("lowmem"); RAM above is not
    /// mapped and is reported.
    pub lowmem_limit: u64,
    /// Base of the early_ioremap window: 2 MiB aligned, covered by one L1 table.
    pub ioremap_window: VirtAddr,
    /// Base of a 2 MiB area for runtime mappings outside the direct map (vmalloc-like).
    pub scratch_area: VirtAddr,
    /// How `lowmem_limit` was derived, for the `lowmem:` log line.
    pub lowmem_formula: &'static str,
    /// Where the hypervisor's part of the address space starts (Xen PV: the hole at
    /// `XENMEM_machphys_mapping`'s `v_start`; the kernel owns nothing from there up), or
    /// `None` when the kernel owns everything up to 4 GiB.
    pub hypervisor_start: Option<VirtAddr>,
}

impl MemoryLayout {
    /// Kernel virtual address of a pseudo-physical address in the direct map.
    pub const fn phys_to_virt(&self, pa: PhysAddr) -> VirtAddr {
        VirtAddr::new(self.page_offset.as_u32().wrapping_add(pa.as_u64() as u32))
    }
}

/// A page fault seen by a simulated machine, or described by a trap handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting address (cr2).
    pub addr: VirtAddr,
    /// The x86 page-fault error code (bit 0 present, bit 1 write).
    pub error: u32,
}

impl fmt::Display for PageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page fault cr2={:#010x} error={:#x}",
            self.addr.as_u32(),
            self.error
        )
    }
}

/// What a backend counts of its calls into the hypervisor: the backend's own type
/// ([`MmuOps::Counters`]; Xen counts hypercalls by kind, bare metal makes none). The boot path
/// takes one reading before and one after each stage and prints the difference in the stage's
/// `stage <name> ok cycles=<n> <counters>` line.
pub trait Counters: Copy + Default + fmt::Debug + fmt::Display {
    /// What happened between `earlier` and `self`.
    fn since(&self, earlier: &Self) -> Self;
    /// Traps into the hypervisor (a batch or a multicall counts once); 0 on bare metal.
    fn hypercalls(&self) -> u64;
    /// The counts of stage `stage` as flat JSON members, each `,"<stage>_<name>":<n>`.
    fn write_json(&self, stage: &str, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// Defines a struct of `u64` counters (`Clone, Copy, Debug, Default, PartialEq, Eq`) with a
/// field-by-field `since(&self, earlier) -> Self`: the one implementation of that
/// subtraction for the backends' counters and the host models' own.
///
/// ```
/// pvops_core::counters! {
///     /// Calls of some hypervisor.
///     pub struct MyCounters {
///         /// Page-table updates.
///         updates,
///     }
/// }
/// let a = MyCounters { updates: 5 };
/// assert_eq!(a.since(&MyCounters { updates: 2 }).updates, 3);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fm:meta])* $field:ident ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $( $(#[$fm])* pub $field: u64, )*
        }

        impl $name {
            /// All counts zero, as a constant (for a value built in a `const`).
            pub const ZERO: Self = Self { $( $field: 0, )* };
            /// What happened between `earlier` and `self`, field by field.
            pub fn since(&self, earlier: &Self) -> Self {
                Self {
                    $( $field: self.$field.wrapping_sub(earlier.$field), )*
                }
            }
        }
    };
}

/// The [`MmuOps`] hooks of a backend that writes page tables itself, without a hypervisor
/// (bare metal, a simulator): nothing to pin, nothing ever queued, no flush that can fail
/// (so no error to keep). Expands inside `impl MmuOps for ...`:
///
/// ```ignore
/// impl MmuOps for MyBackend {
///     pvops_core::direct_mmu_hooks!();
///     // ... the rest
/// }
/// ```
#[macro_export]
macro_rules! direct_mmu_hooks {
    () => {
        fn pin_root(&mut self, _root: $crate::addr::PhysFrame) -> Result<(), Self::Error> {
            Ok(())
        }
        fn unpin_root(&mut self, _root: $crate::addr::PhysFrame) -> Result<(), Self::Error> {
            Ok(())
        }
        fn is_lazy(&self) -> bool {
            false
        }
        fn queued_entry(
            &self,
            _slot: $crate::paging::EntrySlot,
        ) -> Option<$crate::paging::PageTableEntry> {
            None
        }
        fn defer_error(&mut self, _e: Self::Error) {}
    };
}

/// The paravirt MMU operations (Linux `pv_mmu_ops`).
///
/// # What `read_cr3` returns
/// [`MmuOps::read_cr3`] returns the **pseudo-physical frame of the live top-level table** (the
/// PDPT): the table the CPU really walks. Native reads cr3. Under Xen, `mov %cr3` traps and
/// yields a machine frame, so the Xen backend keeps a pseudo-physical shadow (as Linux does),
/// which at boot is the Xen-provided table at `start_info.pt_base`, not the kernel's own.
///
/// # Safety of the write operations
/// The `set_*`/`*_clear`/`write_cr3` operations change the address space the caller runs in;
/// the caller guarantees the new entries keep the kernel's code, data and stack mapped as it
/// relies on.
///
/// # The PAE write primitives (Linux `arch/x86/include/asm/pgtable-3level.h`)
/// A PAE entry is 64 bits wide; a 32-bit CPU stores it as two halves unless it uses
/// `cmpxchg8b`, and a page walker may read it between them (see [`crate::pae`]). The rules:
///
/// | operation | target | store |
/// |---|---|---|
/// | [`MmuOps::set_pte`] | an L1 entry that is **not present** | high half, then the low half (Present) |
/// | [`MmuOps::set_pte_atomic`] | any L1 entry (replacing a mapping) | one 64-bit store (`cmpxchg8b`) |
/// | [`MmuOps::set_pmd`], [`MmuOps::set_pud`] | any L2 / L3 entry | one 64-bit store (`cmpxchg8b`) |
/// | [`MmuOps::pte_clear`], [`MmuOps::pmd_clear`] | an L1 / L2 entry | the low half (Present) first, then the high half |
/// | [`MmuOps::pud_clear`] | an L3 entry | low half first; on the live PDPT bare metal reloads cr3 |
///
/// The native backend does exactly these stores (`cargo xtask test` checks its i686 code);
/// the Xen backend issues each as an `mmu_update` (Xen writes the entry whole, and refuses
/// an invalid one), or as the same store into a table that is not live yet. The host
/// simulator records the two halves of every store and fails an operation whose order lets a
/// walker see a present entry that is neither the old nor the new one, and a `set_pte` over
/// a present entry.
pub trait MmuOps {
    /// The backend's error (Xen: a failed hypercall; native: [`core::convert::Infallible`]).
    type Error: fmt::Debug + fmt::Display;
    /// What this backend counts of its calls into the hypervisor (see [`Counters`]).
    type Counters: Counters;
    /// Short backend name (`native`, `xen`).
    const NAME: &'static str;
    /// True when page-table frames must never be mapped writable (Xen PV).
    const READ_ONLY_PAGE_TABLES: bool;

    /// The virtual layout limits of this backend.
    fn layout(&self) -> MemoryLayout;
    /// pseudo-physical -> machine frame (identity on native; p2m under Xen).
    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame>;
    /// machine -> pseudo-physical frame (identity on native; checked m2p under Xen). `None`
    /// for a frame the guest does not own (e.g. Xen's shared_info).
    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame>;

    /// The pseudo-physical frame of the live top-level table (see the trait docs).
    fn read_cr3(&self) -> PhysFrame;
    /// Makes `root` (a PDPT) the live table. Native: loads cr3, which latches the four PDPT
    /// entries. Xen: makes every frame of the table read-only and installs it with
    /// `MMUEXT_NEW_BASEPTR` only (Xen validates it on the spot; pinning is
    /// [`MmuOps::pin_root`], done once per root, as Linux pins a pgd when an mm is first
    /// used). The first switch away from Xen's bootstrap table also unpins it.
    ///
    /// # Safety
    /// `root` must map the running kernel (code, data, stack) at the same virtual addresses.
    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), Self::Error>;

    /// Pins `root` as a top-level table (Xen: its frames go read-only, then
    /// `MMUEXT_PIN_L3_TABLE`, so switching to it never re-validates it). Once per root:
    /// pinning a pinned root is an error (Xen's `-EINVAL`; the Xen backend refuses it with a
    /// typed error before asking). Bare metal has nothing to pin.
    /// (Required, like every hook below that a wrapper must forward: a default would let a
    /// forwarding wrapper drop it silently.)
    fn pin_root(&mut self, root: PhysFrame) -> Result<(), Self::Error>;
    /// Unpins `root` (not the live one) when it dies, so its frames can become ordinary
    /// memory again ([`MmuOps::release_pt`]). Unpinning a root that is not pinned is an error.
    fn unpin_root(&mut self, root: PhysFrame) -> Result<(), Self::Error>;

    /// Writes an L1 entry that is **not present** now (maps a 4 KiB page): Linux `set_pte`. A
    /// split store is allowed, high half first, then the low half holding Present. To
    /// replace a present entry use [`MmuOps::set_pte_atomic`].
    ///
    /// # Safety
    /// `slot.table()` must be an L1 table frame whose entry at `slot` is not present; see the
    /// trait docs.
    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry)
        -> Result<(), Self::Error>;
    /// Writes an L1 entry whatever it holds now (e.g. replaces a present mapping): Linux
    /// `set_pte_atomic`, one 64-bit store. The caller flushes the TLB when a present entry
    /// changed.
    ///
    /// # Safety
    /// `slot.table()` must be an L1 table frame; see the trait docs.
    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), Self::Error>;
    /// Writes an L2 entry (links an L1 table): one 64-bit store.
    ///
    /// # Safety
    /// `slot.table()` must be an L2 table frame; a present entry must name an L1 table frame
    /// announced with [`MmuOps::alloc_pt`].
    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry)
        -> Result<(), Self::Error>;
    /// Writes an L3 (PDPT) entry: one 64-bit store. On bare hardware the CPU sees a change to
    /// the live PDPT only after a cr3 reload (it latched the four entries).
    ///
    /// # Safety
    /// `slot.table()` must be a PDPT frame and `slot.index()` below 4; a present entry must
    /// name an announced L2 frame.
    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry)
        -> Result<(), Self::Error>;
    /// Clears an L1 entry: the low half (holding Present) first. Linux `pte_clear`.
    ///
    /// # Safety
    /// As [`MmuOps::set_pte_atomic`]; the caller flushes the TLB afterwards.
    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), Self::Error>;
    /// Clears an L2 entry: the low half (holding Present) first. Linux `pmd_clear`.
    ///
    /// # Safety
    /// `slot.table()` must be an L2 table frame; the caller flushes the TLB afterwards.
    unsafe fn pmd_clear(&mut self, slot: EntrySlot) -> Result<(), Self::Error>;
    /// Clears an L3 (PDPT) entry: the low half first. When `slot.table()` is the live root,
    /// bare metal reloads cr3 (the CPU latched the old entry); Xen flushes the TLB. Linux
    /// `pud_clear`.
    ///
    /// # Safety
    /// `slot.table()` must be a PDPT frame and `slot.index()` below 4; nothing may use the
    /// 1 GiB the entry covered.
    unsafe fn pud_clear(&mut self, slot: EntrySlot) -> Result<(), Self::Error>;

    /// Flushes one page's TLB entry.
    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), Self::Error>;
    /// Flushes the whole (non-global) TLB.
    fn flush_tlb_all(&mut self) -> Result<(), Self::Error>;

    /// Called once the kernel's own (not yet live) root table `root` exists, before the
    /// direct map is built into it.
    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), Self::Error>;
    /// Called after `write_cr3(root)`. Retires the bootstrap table (Xen: unpins
    /// `start_info.pt_base` and makes its frames writable) and returns its frames, which are
    /// now free for the frame allocator.
    fn pagetable_setup_done(&mut self, root: PhysFrame) -> Result<FrameRange, Self::Error>;
    /// `frame` (zeroed by the caller) is about to become a page table of `level`. Xen keeps it
    /// writable while no live table reaches it (writes into it are plain stores) and makes it
    /// read-only when it goes live: linked into a live table, or installed by `write_cr3`.
    fn alloc_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), Self::Error>;
    /// `frame` is no longer linked into any table and becomes ordinary memory again. Xen
    /// makes it writable again if it had gone live.
    fn release_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), Self::Error>;

    /// Applies the backend's own command-line switch `pvops.<key>[=<value>]` (e.g. Xen's
    /// `batch`); [`crate::options::BootOptions::parse`] hands over every `pvops.*` word the
    /// core does not know. The default knows none.
    fn set_option(
        &mut self,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), crate::options::OptionErrorKind> {
        let _ = (key, value);
        Err(crate::options::OptionErrorKind::Unknown)
    }

    /// What the backend has issued so far (see [`Counters`]).
    fn counters(&self) -> Self::Counters;

    /// Enters lazy (batched) mode: page-table updates may be queued until a flush. Use
    /// [`LazyMmu`], which nests; this is the backend's hook.
    fn enter_lazy_mmu(&mut self) {}
    /// True while in lazy mode.
    fn is_lazy(&self) -> bool;
    /// Issues every queued update. The error names the failing update; see
    /// [`LazyMmu`] for the state a failed flush leaves.
    fn flush_lazy_mmu(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Flushes and leaves lazy mode.
    fn leave_lazy_mmu(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The value `slot` will hold once the writes queued in lazy mode are issued, if a
    /// queued write targets it (the newest one wins); `None` when nothing queued touches it.
    /// Every core routine that reads a page table asks this first, so lazy mode reads its
    /// own writes (Linux flushes before such reads instead: `arch_flush_lazy_mmu_mode`).
    fn queued_entry(&self, slot: EntrySlot) -> Option<PageTableEntry>;
    /// Keeps an error of a flush that had no caller to report to (a [`LazyMmu`] dropped on
    /// an early return); the backend reports it from its next operation. A backend whose
    /// flush can fail must keep it: an error is never dropped silently.
    fn defer_error(&mut self, e: Self::Error);
}

/// Memory access and timing a boot path needs besides [`MmuOps`].
pub trait Platform: MmuOps {
    /// A pointer to the 4096 bytes of `frame` through a mapping that is valid right now
    /// (the bootstrap table's mapping before the switch, the direct map after), or `None`
    /// when the frame is not reachable yet.
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8>;
    /// Reads `buf.len()` bytes at `va` in the live address space.
    ///
    /// # Safety
    /// On real hardware an unmapped `va` faults (the trap handler ends the run); the caller
    /// must not read memory another owner is changing.
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault>;
    /// Writes `data` at `va` in the live address space.
    ///
    /// # Safety
    /// As [`Platform::read_virt`]; `va` must not hold anything the kernel relies on.
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault>;
    /// A monotonic cycle counter (rdtsc on hardware).
    fn cycles(&self) -> u64;
    /// Nanoseconds this CPU has so far spent NOT running the kernel (a hypervisor ran
    /// something else: Xen's runstate `runnable + blocked + offline`), or `None` where the
    /// platform cannot tell (bare metal: the kernel owns the CPU). Stage figures report the
    /// difference across a stage, so cycles lost to others can be told from the kernel's.
    fn not_running_ns(&self) -> Option<u64> {
        None
    }
}

/// Reads `buf.len()` bytes at `va` of the live address space with volatile byte loads: the
/// `Platform::read_virt` of a backend that runs on the hardware it describes.
///
/// # Safety
/// `va..va + buf.len()` must be readable (an unmapped page faults to the trap handler).
pub unsafe fn hardware_read_virt(va: VirtAddr, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: forwarded contract.
        *b = unsafe { core::ptr::read_volatile((va.as_usize() + i) as *const u8) };
    }
}

/// Writes `data` at `va` of the live address space with volatile byte stores (the
/// `Platform::write_virt` of a hardware backend).
///
/// # Safety
/// `va..va + data.len()` must be writable memory nothing else relies on.
pub unsafe fn hardware_write_virt(va: VirtAddr, data: &[u8]) {
    for (i, b) in data.iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { core::ptr::write_volatile((va.as_usize() + i) as *mut u8, *b) };
    }
}

/// A guard for lazy (batched) MMU mode: queued updates are issued at [`LazyMmu::finish`],
/// which reports the first failing update.
///
/// # Rules
/// - Guards nest: a guard entered while the backend is already lazy (e.g. on a `LazyMmu`
///   of an outer section) neither enters nor leaves; only the outermost guard flushes.
/// - Reads see queued writes: the core's walks ask [`MmuOps::queued_entry`] first.
/// - A failed flush empties the queue: the updates before the failing one were applied,
///   the failing one and those after it were not (the error names the failing one). The
///   tables then hold a prefix of what was asked; the caller decides whether to retry or
///   undo. Nothing stays queued to be issued later by surprise.
/// - A guard dropped without `finish` (an early return on another error) still issues the
///   queue; an error there goes to [`MmuOps::defer_error`], and the backend reports it from
///   its next operation.
pub struct LazyMmu<'a, B: MmuOps> {
    backend: &'a mut B,
    finished: bool,
    outer: bool,
}

impl<'a, B: MmuOps> LazyMmu<'a, B> {
    /// Enters lazy mode on `backend` (or joins the section already open).
    pub fn enter(backend: &'a mut B) -> Self {
        let outer = backend.is_lazy();
        if !outer {
            backend.enter_lazy_mmu();
        }
        LazyMmu {
            backend,
            finished: false,
            outer,
        }
    }
    /// True when this guard joined an outer lazy section (it will not flush).
    pub fn is_nested(&self) -> bool {
        self.outer
    }
    /// Issues the queued updates and leaves lazy mode (a nested guard: nothing; the
    /// outermost one flushes).
    pub fn finish(mut self) -> Result<(), B::Error> {
        self.finished = true;
        if self.outer {
            return Ok(());
        }
        self.backend.leave_lazy_mmu()
    }
}

impl<B: MmuOps> core::ops::Deref for LazyMmu<'_, B> {
    type Target = B;
    fn deref(&self) -> &B {
        self.backend
    }
}
impl<B: MmuOps> core::ops::DerefMut for LazyMmu<'_, B> {
    fn deref_mut(&mut self) -> &mut B {
        self.backend
    }
}
impl<B: MmuOps> Drop for LazyMmu<'_, B> {
    fn drop(&mut self) {
        if !self.finished && !self.outer {
            if let Err(e) = self.backend.leave_lazy_mmu() {
                self.backend.defer_error(e);
            }
        }
    }
}
