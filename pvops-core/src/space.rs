//! Address spaces: roots that map the kernel half as the kernel's own root does, plus
//! private mappings of their own; duplicating one (fork), switching between them and the
//! kernel's root in any order, and destroying them with every table frame given back.
//!
//! # The kernel half
//! Each space has its own L2 for every kernel slot of the PDPT (from
//! [`MemoryLayout::page_offset`] up): under Xen the slot-3 L2 cannot be shared between two
//! L3s (it carries Xen's private mappings; Xen refuses a second L3 with "PAE L3 3rd slot is
//! shared"), so Linux PAE under Xen keeps one per pgd too (`SHARED_KERNEL_PMD = 0`). These
//! L2s link the kernel's own L1 tables, so a change of a kernel PTE is seen in every space
//! at once. A change of a kernel L2 entry (an L1 linked or retired) is copied into every
//! space by [`AddressSpaces::sync_kernel`]: [`AddressSpaces::map_kernel_range`],
//! [`AddressSpaces::unmap_kernel_range`] and [`AddressSpaces::retire_kernel_table`] call it,
//! and so does [`AddressSpaces::switch_to`] for the space it switches to. A kernel that
//! changes the kernel half through [`crate::mapper`] on the kernel root directly calls
//! `sync_kernel` itself before the change is needed in another space.
//!
//! # Fork
//! [`AddressSpaces::duplicate`] is Linux's `dup_mmap`: the copy gets its own L1s for the
//! private half, mapping the same frames, shared or copy-on-write ([`Duplicate`]).
//!
//! # Pinning
//! A space's root is pinned ([`crate::ops::MmuOps::pin_root`]) when it is first switched to and
//! unpinned when it is destroyed; a switch is [`crate::ops::MmuOps::write_cr3`] only. The kernel's root
//! is the boot path's (pinned there).

use crate::addr::{EntryIndex, MachineFrame, PdptIndex, PhysFrame, VirtAddr};
use crate::frame_alloc::FrameAlloc;
use crate::mapper::{self, MapError, TlbFlush, TlbFlushAll, TlbFlushRange};
use crate::ops::{LazyMmu, MemoryLayout, Platform};
use crate::paging::{EntrySlot, Level, PageTableEntry, PteFlags, ENTRIES, PDPT_ENTRIES};
use core::fmt;

/// Most address spaces (besides the kernel's root) that exist at once.
pub const MAX_SPACES: usize = 16;

/// An address space made by [`AddressSpaces::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceId {
    index: u8,
    generation: u32,
}

impl SpaceId {
    /// The slot the space occupies (0..[`MAX_SPACES`]).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Which root [`AddressSpaces::switch_to`] makes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The kernel's own root (the boot path's).
    Kernel,
    /// A space.
    Space(SpaceId),
}

/// What [`AddressSpaces::duplicate`] does with the source's writable private mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicate {
    /// The copy maps the same frames with the same flags: the two spaces share the memory.
    Shared,
    /// As Linux's fork (`dup_mmap`, `copy_pte_range`): every writable private entry becomes
    /// read-only in the source and in the copy, so the first write in either faults and the
    /// kernel's fault handler can give the writer its own copy of the page.
    CopyOnWrite,
}

/// Why an address-space operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError<E> {
    /// [`MAX_SPACES`] spaces exist already.
    TooMany,
    /// The id names no space (destroyed, or never made by this set).
    Unknown(SpaceId),
    /// The space's root is live: switch away before destroying it.
    Live(SpaceId),
    /// A private mapping asked for in the kernel half (which every space shares).
    KernelHalf(VirtAddr),
    /// A kernel mapping asked for below the kernel half.
    UserHalf(VirtAddr),
    /// Walking or changing a table failed.
    Map(MapError<E>),
    /// The backend refused (pin, unpin, switch).
    Backend(E),
}

impl<E: fmt::Display> fmt::Display for SpaceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany => write!(f, "address spaces: all {MAX_SPACES} in use"),
            Self::Unknown(id) => write!(f, "address space {} does not exist", id.index),
            Self::Live(id) => write!(f, "address space {} is live", id.index),
            Self::KernelHalf(va) => write!(f, "{va} is in the kernel half"),
            Self::UserHalf(va) => write!(f, "{va} is below the kernel half"),
            Self::Map(e) => write!(f, "{e}"),
            Self::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl<E> From<MapError<E>> for SpaceError<E> {
    fn from(e: MapError<E>) -> Self {
        SpaceError::Map(e)
    }
}

#[derive(Clone, Copy, Debug)]
struct Space {
    root: PhysFrame,
    pinned: bool,
    generation: u32,
}

/// The address spaces of a kernel: its own root and up to [`MAX_SPACES`] more.
#[derive(Debug)]
pub struct AddressSpaces {
    kernel: PhysFrame,
    first_kernel_slot: usize,
    hypervisor_start: Option<VirtAddr>,
    spaces: [Option<Space>; MAX_SPACES],
    generation: u32,
    created: u32,
}

type Res<T, E> = Result<T, SpaceError<E>>;

impl AddressSpaces {
    /// The spaces of a kernel whose root is `kernel_root` (live, pinned by the boot path),
    /// laid out as `layout` says.
    pub fn new(kernel_root: PhysFrame, layout: &MemoryLayout) -> AddressSpaces {
        AddressSpaces {
            kernel: kernel_root,
            first_kernel_slot: layout.page_offset.l3_index().get(),
            hypervisor_start: layout.hypervisor_start,
            spaces: [None; MAX_SPACES],
            generation: 0,
            created: 0,
        }
    }

    /// The kernel's root.
    pub fn kernel_root(&self) -> PhysFrame {
        self.kernel
    }

    /// Spaces that exist now (the kernel's root not counted).
    pub fn count(&self) -> usize {
        self.spaces.iter().filter(|s| s.is_some()).count()
    }

    /// Spaces created so far (destroyed ones included).
    pub fn created(&self) -> u32 {
        self.created
    }

    fn space(&self, id: SpaceId) -> Option<&Space> {
        self.spaces
            .get(id.index as usize)?
            .as_ref()
            .filter(|s| s.generation == id.generation)
    }

    /// The root table of `target`.
    pub fn root<E>(&self, target: Target) -> Res<PhysFrame, E> {
        match target {
            Target::Kernel => Ok(self.kernel),
            Target::Space(id) => self
                .space(id)
                .map(|s| s.root)
                .ok_or(SpaceError::Unknown(id)),
        }
    }

    /// The L2 entries of PDPT slot `l3` the kernel owns (Xen's start at the hypervisor hole).
    fn guest_entries(&self, l3: PdptIndex) -> usize {
        match self.hypervisor_start {
            Some(h) if h.l3_index() == l3 => h.l2_index().get(),
            Some(h) if h.l3_index().get() < l3.get() => 0,
            _ => ENTRIES,
        }
    }

    fn l2_of<P: Platform>(
        p: &P,
        root: PhysFrame,
        l3: PdptIndex,
    ) -> Result<PhysFrame, MapError<P::Error>> {
        let e = mapper::read_entry(p, root, l3)?;
        if !e.is_present() {
            return Err(MapError::NotMapped(VirtAddr::new((l3.get() as u32) << 30)));
        }
        mapper::next_table(p, e)
    }

    /// Creates a space: a new root whose kernel half maps what the kernel's root maps (its
    /// own copies of the kernel's L2s, linking the kernel's L1s) and whose lower half is
    /// empty. Not live, not pinned yet.
    pub fn create<P: Platform, A: FrameAlloc + ?Sized>(
        &mut self,
        p: &mut P,
        alloc: &mut A,
    ) -> Res<SpaceId, P::Error> {
        let index = self
            .spaces
            .iter()
            .position(|s| s.is_none())
            .ok_or(SpaceError::TooMany)?;
        let mut made = [None::<(PhysFrame, Level)>; 1 + PDPT_ENTRIES];
        let built = self.build(p, alloc, &mut made);
        let root = match built {
            Ok(root) => root,
            Err(e) => {
                // Give back what was made (children first), nothing of it is live.
                for (f, level) in made.iter().rev().flatten() {
                    let _ = p.release_pt(*f, *level);
                    let _ = alloc.free(*f);
                }
                return Err(e);
            }
        };
        self.generation = self.generation.wrapping_add(1);
        self.created += 1;
        self.spaces[index] = Some(Space {
            root,
            pinned: false,
            generation: self.generation,
        });
        Ok(SpaceId {
            index: index as u8,
            generation: self.generation,
        })
    }

    fn build<P: Platform, A: FrameAlloc + ?Sized>(
        &self,
        p: &mut P,
        alloc: &mut A,
        made: &mut [Option<(PhysFrame, Level)>; 1 + PDPT_ENTRIES],
    ) -> Res<PhysFrame, P::Error> {
        let mut lazy = LazyMmu::enter(p);
        let (root, _) = mapper::new_table(&mut *lazy, alloc, Level::L3)?;
        made[0] = Some((root, Level::L3));
        for i in PdptIndex::all() {
            let (l2, link) = mapper::new_table(&mut *lazy, alloc, Level::L2)?;
            made[1 + i.get()] = Some((l2, Level::L2));
            if i.get() >= self.first_kernel_slot {
                let kl2 = Self::l2_of(&*lazy, self.kernel, i)?;
                for j in EntryIndex::all().take(self.guest_entries(i)) {
                    let e = mapper::read_entry(&*lazy, kl2, j)?;
                    if e.is_present() {
                        let slot = EntrySlot::new(l2, j);
                        // SAFETY: a private, not yet linked L2 gets the kernel's link.
                        unsafe { lazy.set_pmd(slot, e) }.map_err(MapError::Backend)?;
                    }
                }
            }
            let slot = EntrySlot::pdpt(root, i);
            // SAFETY: the root is not live; this links its own fresh L2.
            unsafe { lazy.set_pud(slot, link) }.map_err(MapError::Backend)?;
        }
        lazy.finish().map_err(MapError::Backend)?;
        Ok(root)
    }

    /// Duplicates space `src` (Linux's `dup_mmap` at fork): a new space whose private half
    /// maps every page `src` maps privately, to the same frames, through its own L1 tables
    /// (each filled while private, then linked: under Xen the whole copy is a few batched
    /// `mmu_update`s). With [`Duplicate::CopyOnWrite`] the writable entries become read-only
    /// in both; the returned flush is owed when `src` is live or a changed entry is global
    /// (flush it before anything relies on the read-only entries). The copy is not live and not pinned yet, like
    /// [`AddressSpaces::create`]'s.
    ///
    /// On an error the copy is destroyed; with [`Duplicate::CopyOnWrite`] the entries of
    /// `src` already write-protected stay read-only (the flush is then done here).
    ///
    /// # Safety
    /// Every frame `src` maps privately is mapped in both spaces afterwards: the caller
    /// accounts for that (a frame may go back to an allocator only when no space maps it).
    pub unsafe fn duplicate<P: Platform, A: FrameAlloc + ?Sized>(
        &mut self,
        p: &mut P,
        alloc: &mut A,
        src: SpaceId,
        mode: Duplicate,
    ) -> Res<(SpaceId, TlbFlushAll), P::Error> {
        let src_root = self.root(Target::Space(src))?;
        let copy = self.create(p, alloc)?;
        let dst_root = self.root(Target::Space(copy))?;
        let mut stale = false;
        let r = self.copy_private_half(p, alloc, src_root, dst_root, mode, &mut stale);
        let flush = TlbFlushAll::new(stale);
        match r {
            Ok(()) => Ok((copy, flush)),
            Err(e) => {
                let _ = flush.flush(p);
                let _ = self.destroy(p, alloc, copy);
                Err(e)
            }
        }
    }

    fn copy_private_half<P: Platform, A: FrameAlloc + ?Sized>(
        &self,
        p: &mut P,
        alloc: &mut A,
        src_root: PhysFrame,
        dst_root: PhysFrame,
        mode: Duplicate,
        stale: &mut bool,
    ) -> Res<(), P::Error> {
        let live = p.read_cr3() == src_root;
        let mut lazy = LazyMmu::enter(p);
        for i in PdptIndex::all().take(self.first_kernel_slot) {
            let src_l2 = Self::l2_of(&*lazy, src_root, i)?;
            let dst_l2 = Self::l2_of(&*lazy, dst_root, i)?;
            for j in EntryIndex::all() {
                let e = mapper::read_entry(&*lazy, src_l2, j)?;
                if !e.is_present() {
                    continue;
                }
                let src_l1 = mapper::next_table(&*lazy, e)?;
                let (l1, link) = mapper::new_table(&mut *lazy, alloc, Level::L1)?;
                let filled = (|| {
                    for k in EntryIndex::all() {
                        let pte = mapper::read_entry(&*lazy, src_l1, k)?;
                        if !pte.is_present() {
                            continue;
                        }
                        let mut flags = pte.flags();
                        if mode == Duplicate::CopyOnWrite && flags.contains(PteFlags::WRITABLE) {
                            flags.remove(PteFlags::WRITABLE);
                            let slot = EntrySlot::new(src_l1, k);
                            // SAFETY: the same frame with fewer rights (a write now faults);
                            // the flush is owed to the caller.
                            unsafe { lazy.set_pte_atomic(slot, pte.with_flags(flags)) }
                                .map_err(MapError::Backend)?;
                            // The TLB may hold the old entry: src is live, or the entry
                            // is global (a cr3 load does not flush those).
                            *stale |= live || flags.contains(PteFlags::GLOBAL);
                        }
                        // SAFETY: a private, announced L1 not linked anywhere yet; entry k
                        // is empty (fresh table).
                        unsafe { lazy.set_pte(EntrySlot::new(l1, k), pte.with_flags(flags)) }
                            .map_err(MapError::Backend)?;
                    }
                    Ok::<(), MapError<P::Error>>(())
                })();
                if let Err(e) = filled {
                    let _ = lazy.release_pt(l1, Level::L1);
                    let _ = alloc.free(l1);
                    return Err(e.into());
                }
                // SAFETY: links the L1 just filled where the fresh copy maps nothing.
                unsafe { lazy.set_pmd(EntrySlot::new(dst_l2, j), link) }
                    .map_err(SpaceError::Backend)?;
            }
        }
        lazy.finish().map_err(SpaceError::Backend)
    }

    /// Copies the kernel root's kernel-half L2 entries into `root`'s where they differ.
    fn sync_one<P: Platform>(&self, p: &mut P, root: PhysFrame) -> Res<(), P::Error> {
        for i in PdptIndex::all().skip(self.first_kernel_slot) {
            let kl2 = Self::l2_of(&*p, self.kernel, i)?;
            let l2 = Self::l2_of(&*p, root, i)?;
            for j in EntryIndex::all().take(self.guest_entries(i)) {
                let want = mapper::read_entry(&*p, kl2, j)?;
                if mapper::read_entry(&*p, l2, j)? != want {
                    let slot = EntrySlot::new(l2, j);
                    // SAFETY: the space's kernel half becomes what the kernel's is.
                    let r = unsafe {
                        match want.is_present() {
                            true => p.set_pmd(slot, want),
                            false => p.pmd_clear(slot),
                        }
                    };
                    r.map_err(MapError::Backend)?;
                }
            }
        }
        Ok(())
    }

    /// Copies every change of the kernel root's kernel-half L2 entries (L1s linked or
    /// unlinked) into every space, in one lazy section.
    pub fn sync_kernel<P: Platform>(&self, p: &mut P) -> Res<(), P::Error> {
        let mut lazy = LazyMmu::enter(p);
        for s in self.spaces.iter().flatten() {
            self.sync_one(&mut *lazy, s.root)?;
        }
        lazy.finish().map_err(SpaceError::Backend)
    }

    /// Makes `target` live: its kernel half brought up to date, pinned when first used
    /// (once), then the switch ([`crate::ops::MmuOps::write_cr3`]). Any order, any number of times.
    pub fn switch_to<P: Platform>(&mut self, p: &mut P, target: Target) -> Res<(), P::Error> {
        let root = self.root(target)?;
        if let Target::Space(id) = target {
            self.sync_one(p, root)?;
            let s = self.spaces[id.index as usize]
                .as_mut()
                .ok_or(SpaceError::Unknown(id))?;
            if !s.pinned {
                p.pin_root(root).map_err(SpaceError::Backend)?;
                s.pinned = true;
            }
        }
        // SAFETY: every root here maps the kernel half (code, data, stack, direct map) as the
        // kernel's root does: its L2s link the kernel's L1s, brought up to date just above.
        unsafe { p.write_cr3(root) }.map_err(SpaceError::Backend)
    }

    /// Destroys a space that is not live: unpinned (if it was pinned), every table it owns
    /// (root, L2s, the L1s of its private mappings) given back to the backend (Xen: mapped
    /// writable again, with the flush that needs) and to the allocator. The kernel's L1s it
    /// linked stay. The frames its private mappings named are the caller's.
    pub fn destroy<P: Platform, A: FrameAlloc + ?Sized>(
        &mut self,
        p: &mut P,
        alloc: &mut A,
        id: SpaceId,
    ) -> Res<(), P::Error> {
        let s = *self.space(id).ok_or(SpaceError::Unknown(id))?;
        if p.read_cr3() == s.root {
            return Err(SpaceError::Live(id));
        }
        if s.pinned {
            p.unpin_root(s.root).map_err(SpaceError::Backend)?;
            if let Some(s) = self.spaces[id.index as usize].as_mut() {
                s.pinned = false;
            }
        }
        let mut lazy = LazyMmu::enter(p);
        for i in PdptIndex::all() {
            let l3 = EntrySlot::pdpt(s.root, i);
            let e = mapper::read_entry(&*lazy, s.root, i)?;
            if !e.is_present() {
                continue;
            }
            let l2 = mapper::next_table(&*lazy, e)?;
            if i.get() < self.first_kernel_slot {
                for j in EntryIndex::all() {
                    let e = mapper::read_entry(&*lazy, l2, j)?;
                    if !e.is_present() {
                        continue;
                    }
                    let l1 = mapper::next_table(&*lazy, e)?;
                    let slot = EntrySlot::new(l2, j);
                    // SAFETY: the space is dead (not live, unpinned): nothing walks it.
                    unsafe { lazy.pmd_clear(slot) }.map_err(SpaceError::Backend)?;
                    lazy.release_pt(l1, Level::L1)
                        .map_err(SpaceError::Backend)?;
                    alloc.free(l1).map_err(MapError::Alloc)?;
                }
            }
            // SAFETY: as above.
            unsafe { lazy.pud_clear(l3) }.map_err(SpaceError::Backend)?;
            lazy.release_pt(l2, Level::L2)
                .map_err(SpaceError::Backend)?;
            alloc.free(l2).map_err(MapError::Alloc)?;
        }
        lazy.release_pt(s.root, Level::L3)
            .map_err(SpaceError::Backend)?;
        alloc.free(s.root).map_err(MapError::Alloc)?;
        lazy.finish().map_err(SpaceError::Backend)?;
        self.spaces[id.index as usize] = None;
        Ok(())
    }

    fn user_va<E>(&self, va: VirtAddr) -> Res<(), E> {
        if va.l3_index().get() >= self.first_kernel_slot {
            return Err(SpaceError::KernelHalf(va));
        }
        Ok(())
    }

    /// The last page of `pages` pages from `va` (wraps past 4 GiB: the callers check).
    fn last_page(va: VirtAddr, pages: usize) -> VirtAddr {
        va.wrapping_add((pages.max(1) as u32 - 1) << 12)
    }

    fn kernel_va<E>(&self, va: VirtAddr, pages: usize) -> Res<(), E> {
        let last = Self::last_page(va, pages);
        if va.l3_index().get() < self.first_kernel_slot || last.as_u32() < va.as_u32() {
            return Err(SpaceError::UserHalf(va));
        }
        Ok(())
    }

    /// Maps a private page of space `id` (below the kernel half).
    ///
    /// # Safety
    /// `va` must not be in use in that space.
    pub unsafe fn map_page<P: Platform, A: FrameAlloc + ?Sized>(
        &self,
        p: &mut P,
        alloc: &mut A,
        id: SpaceId,
        va: VirtAddr,
        frame: MachineFrame,
        flags: PteFlags,
    ) -> Res<TlbFlush, P::Error> {
        self.user_va(va)?;
        let root = self.root(Target::Space(id))?;
        // SAFETY: forwarded.
        Ok(unsafe { mapper::map_page(p, alloc, root, va, frame, flags) }?)
    }

    /// Unmaps a private page of space `id`, returning the frame it mapped.
    ///
    /// # Safety
    /// Nothing may use `va` in that space any more.
    pub unsafe fn unmap_page<P: Platform>(
        &self,
        p: &mut P,
        id: SpaceId,
        va: VirtAddr,
    ) -> Res<(MachineFrame, TlbFlush), P::Error> {
        self.user_va(va)?;
        let root = self.root(Target::Space(id))?;
        // SAFETY: forwarded.
        Ok(unsafe { mapper::unmap_page(p, root, va) }?)
    }

    /// [`mapper::remap_page`] of a private page of space `id`: the page at `va` maps
    /// `frame` with `flags` instead (e.g. a copy-on-write break), in one store. Returns the
    /// frame it mapped and the flush owed (needed when the space is live).
    ///
    /// # Safety
    /// As [`mapper::remap_page`].
    pub unsafe fn remap_page<P: Platform>(
        &self,
        p: &mut P,
        id: SpaceId,
        va: VirtAddr,
        frame: MachineFrame,
        flags: PteFlags,
    ) -> Res<(MachineFrame, TlbFlush), P::Error> {
        self.user_va(va)?;
        let root = self.root(Target::Space(id))?;
        // SAFETY: forwarded.
        Ok(unsafe { mapper::remap_page(p, root, va, frame, flags) }?)
    }

    /// [`mapper::protect_range`] of private pages of space `id` (mprotect).
    ///
    /// # Safety
    /// As [`mapper::protect_range`].
    pub unsafe fn protect_range<P: Platform>(
        &self,
        p: &mut P,
        id: SpaceId,
        va: VirtAddr,
        pages: usize,
        flags: PteFlags,
    ) -> Res<TlbFlushRange, P::Error> {
        self.user_va(va)?;
        self.user_va(Self::last_page(va, pages))?;
        let root = self.root(Target::Space(id))?;
        // SAFETY: forwarded.
        Ok(unsafe { mapper::protect_range(p, root, va, pages, flags) }?)
    }

    /// Translates `va` in `target` (software walk).
    pub fn translate<P: Platform>(
        &self,
        p: &P,
        target: Target,
        va: VirtAddr,
    ) -> Res<PageTableEntry, P::Error> {
        let root = self.root(target)?;
        Ok(mapper::translate(p, root, va)?)
    }

    /// [`mapper::map_range`] in the kernel half of the kernel's root, then
    /// [`AddressSpaces::sync_kernel`]: every space sees the new pages.
    ///
    /// # Safety
    /// As [`mapper::map_range`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn map_kernel_range<P: Platform, A: FrameAlloc + ?Sized>(
        &self,
        p: &mut P,
        alloc: &mut A,
        va: VirtAddr,
        pages: usize,
        flags: PteFlags,
        frame: impl FnMut(usize) -> MachineFrame,
    ) -> Res<(), P::Error> {
        self.kernel_va(va, pages)?;
        // SAFETY: forwarded.
        unsafe { mapper::map_range(p, alloc, self.kernel, va, pages, flags, frame) }?;
        self.sync_kernel(p)
    }

    /// [`mapper::unmap_range`] in the kernel half of the kernel's root (its L1s stay, so
    /// no space needs an update).
    ///
    /// # Safety
    /// As [`mapper::unmap_range`].
    pub unsafe fn unmap_kernel_range<P: Platform>(
        &self,
        p: &mut P,
        va: VirtAddr,
        pages: usize,
        unmapped: impl FnMut(usize, MachineFrame),
    ) -> Res<TlbFlushRange, P::Error> {
        self.kernel_va(va, pages)?;
        // SAFETY: forwarded.
        Ok(unsafe { mapper::unmap_range(p, self.kernel, va, pages, unmapped) }?)
    }

    /// Retires the kernel's empty L1 for `va`: unlinked from every space first, then
    /// [`mapper::retire_table`] on the kernel's root.
    pub fn retire_kernel_table<P: Platform, A: FrameAlloc + ?Sized>(
        &self,
        p: &mut P,
        alloc: &mut A,
        va: VirtAddr,
    ) -> Res<PhysFrame, P::Error> {
        self.kernel_va(va, 1)?;
        for s in self.spaces.iter().flatten() {
            let l2 = Self::l2_of(&*p, s.root, va.l3_index())?;
            if mapper::read_entry(&*p, l2, va.l2_index())?.is_present() {
                let slot = EntrySlot::new(l2, va.l2_index());
                // SAFETY: the L1 maps nothing (retire_table checks it next; a refusal there
                // leaves the space without an empty L1 it may link again at sync).
                unsafe { p.pmd_clear(slot) }.map_err(SpaceError::Backend)?;
            }
        }
        let r = mapper::retire_table(p, alloc, self.kernel, va, Level::L1);
        if r.is_err() {
            self.sync_kernel(p)?;
        }
        Ok(r?)
    }
}
