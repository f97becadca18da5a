//! The raw environment of a case: the hypercall layer, the allocator and the live L3,
//! with the helpers the cases build their preconditions from.

use super::*;
use pvops_core::paging::{EntrySlot, Level, PageTableEntry};
use pvops_core::walk;

/// What a case works with: the raw hypercall layer of a booted guest (hypercalls, p2m/m2p,
/// the direct map), the boot path's frame allocator and the live L3.
pub struct Env<'a, H: Hypervisor> {
    /// The raw hypercall layer.
    pub hv: &'a mut H,
    alloc: &'a mut FrameAllocator,
    /// The live L3 (pseudo-physical).
    pub cr3: PhysFrame,
    /// Where the hypervisor hole starts (`XENMEM_machphys_mapping`).
    hole: u32,
    calls: u64,
}

impl<'a, H: Hypervisor> Env<'a, H> {
    /// An environment over a booted guest whose live L3 is `cr3`; asks Xen where the
    /// hypervisor hole starts.
    ///
    /// # Safety
    /// The cases issue raw hypercalls behind the backend's back: nothing else may use the
    /// hypercall layer or `alloc` while the environment lives, `cr3` must be the live L3,
    /// and every frame `alloc` hands out must be direct-mapped and writable. The caller also
    /// vouches for every request made through the environment ([`Env::mmu1`], [`Env::ext1`],
    /// [`Env::uvm`], [`Env::multicall`]): each is one Xen must refuse, or one that changes
    /// only the case's own frames and is undone by the case (the case list is written so).
    pub unsafe fn new(
        hv: &'a mut H,
        alloc: &'a mut FrameAllocator,
        cr3: PhysFrame,
    ) -> Result<Self, Verdict> {
        let mut mm = MachphysMapping::default();
        ok0(
            "memory_op(XENMEM_machphys_mapping)",
            hv.machphys_mapping(&mut mm),
        )?;
        Ok(Env {
            hv,
            alloc,
            cr3,
            hole: mm.v_start,
            calls: 0,
        })
    }
    /// Raw hypercalls issued so far.
    pub fn hypercalls(&self) -> u64 {
        self.calls
    }
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, Verdict> {
        self.hv
            .p2m(pfn)
            .ok_or_else(|| Verdict::broken("p2m lookup", format_args!("pfn {pfn} has no mfn")))
    }
    pub(crate) fn ptr(&self, t: PhysFrame) -> Result<*mut u64, Verdict> {
        // Frames the cases touch are the allocator's and the live tables': all direct-mapped.
        self.mfn(t)?;
        Ok(self.hv.frame_ptr(t) as *mut u64)
    }
    /// Entry `i` of table `t`, read through the direct map.
    pub fn entry(&self, t: PhysFrame, i: usize) -> Result<u64, Verdict> {
        let i = index(i)?;
        let p = self.ptr(t)?;
        // SAFETY: frame_ptr gives 4096 readable bytes of a direct-mapped frame; i < 512.
        Ok(unsafe { p.add(i.get()).read_volatile() })
    }
    /// Writes entry `i` of `t` directly (only for the case's own writable, untyped frames;
    /// the model reports any other direct write as a violation).
    pub fn poke(&mut self, t: PhysFrame, i: usize, v: u64) -> Result<(), Verdict> {
        let i = index(i)?;
        let p = self.ptr(t)?;
        // SAFETY: as `entry`; the frame is the case's own and mapped writable.
        unsafe { p.add(i.get()).write_volatile(v) };
        Ok(())
    }
    fn zero(&mut self, t: PhysFrame) -> Result<(), Verdict> {
        let p = self.ptr(t)? as *mut u8;
        // SAFETY: the case's own frame, mapped writable; 4096 bytes.
        unsafe { core::ptr::write_bytes(p, 0, PAGE_SIZE as usize) };
        Ok(())
    }
    /// The guest frame a present entry names (M2P cross-checked against the p2m).
    pub fn table_of(&self, e: u64) -> Result<PhysFrame, Verdict> {
        let m = frame_of(e);
        if e & P == 0 {
            return Err(Verdict::broken(
                "follow an entry",
                format_args!("not present"),
            ));
        }
        self.hv
            .m2p(m)
            .filter(|p| self.hv.p2m(*p) == Some(m))
            .ok_or_else(|| Verdict::broken("follow an entry", format_args!("mfn {m} not ours")))
    }
    /// The live slot-3 L2.
    pub fn live_l2(&self) -> Result<PhysFrame, Verdict> {
        self.table_of(self.entry(self.cr3, 3)?)
    }
    /// First Xen-private slot of the slot-3 L2: the hypervisor hole's.
    pub fn first_xen_slot(&self) -> usize {
        (self.hole.wrapping_sub(VIRT_BASE) >> 21) as usize
    }
    /// Machine address of the live L1 entry that maps `pfn` in the direct map.
    pub fn pte_ma(&self, pfn: PhysFrame) -> Result<u64, Verdict> {
        let (l1, i) = self.live_l1(direct_va(pfn))?;
        Ok(self.mfn(l1)?.start().as_u64() + i as u64 * 8)
    }
    /// The live L1 that maps `va` and the index of its entry (4 KiB pages only), found by
    /// pvops-core's one walker.
    pub fn live_l1(&self, va: VirtAddr) -> Result<(PhysFrame, usize), Verdict> {
        let w = walk::walk_down_to(&EnvTables(self), self.cr3, va, Level::L2)?;
        if w.level != Level::L2 {
            return Err(Verdict::broken(
                "find a 4 KiB mapping",
                format_args!("no PDPT entry for {va}"),
            ));
        }
        if w.is_huge() {
            return Err(Verdict::broken(
                "find a 4 KiB mapping",
                format_args!("{va} is in a 2 MiB page"),
            ));
        }
        Ok((self.table_of(w.entry.bits())?, va.l1_index().get()))
    }
    /// One `mmu_update` request.
    pub fn mmu1(&mut self, ptr: u64, val: u64) -> i32 {
        let mut done = 0;
        self.calls += 1;
        // SAFETY: Env::new's contract: the request is refused by Xen or touches only the
        // case's own frames.
        unsafe { self.hv.mmu_update(&[MmuUpdate { ptr, val }], &mut done) }
    }
    /// One `mmuext_op`.
    pub fn ext1(&mut self, cmd: u32, arg1: u32) -> i32 {
        let mut done = 0;
        self.calls += 1;
        // SAFETY: as `mmu1`.
        unsafe {
            self.hv
                .mmuext_op(&[MmuextOp { cmd, arg1, arg2: 0 }], &mut done)
        }
    }
    /// `update_va_mapping(va, val, UVMF_INVLPG)`.
    pub fn uvm(&mut self, va: VirtAddr, val: u64) -> i32 {
        self.calls += 1;
        // SAFETY: as `mmu1`.
        unsafe { self.hv.update_va_mapping(va, val, UVMF_INVLPG) }
    }
    /// `multicall`.
    pub fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
        self.calls += 1;
        // SAFETY: as `mmu1`, for each call of the batch; `calls` names live buffers.
        unsafe { self.hv.multicall(calls) }
    }
    /// Remaps `pfn` in the direct map read-only or writable (one raw `mmu_update`, then an
    /// invlpg when it succeeded). Returns the `mmu_update` result.
    pub fn map(&mut self, pfn: PhysFrame, writable: bool) -> Result<i32, Verdict> {
        let ma = self.pte_ma(pfn)?;
        let m = self.mfn(pfn)?;
        let flags = if writable { RW_FLAGS } else { RO_FLAGS };
        let ret = self.mmu1(ma, m.start().as_u64() | flags);
        if ret == 0 {
            ok0(
                "INVLPG_LOCAL after a remap",
                self.ext1(mmuext::INVLPG_LOCAL, direct_va(pfn).as_u32()),
            )?;
        }
        Ok(ret)
    }
    /// A fresh, zeroed, writable frame.
    pub fn fresh(&mut self) -> Result<PhysFrame, Verdict> {
        let f = self
            .alloc
            .alloc()
            .map_err(|e| Verdict::broken("allocate a frame", format_args!("{e}")))?;
        if let Err(v) = self.zero(f) {
            let _ = self.alloc.free(f);
            return Err(v);
        }
        Ok(f)
    }
    /// A fresh frame mapped read-only (ready to become a table).
    pub fn fresh_ro(&mut self) -> Result<PhysFrame, Verdict> {
        let f = self.fresh()?;
        match self.map(f, false) {
            Ok(0) => Ok(f),
            Ok(ret) => {
                let _ = self.alloc.free(f);
                Err(Verdict::broken(
                    "make a fresh frame read-only",
                    format_args!("{}", Ret(ret)),
                ))
            }
            Err(v) => {
                let _ = self.alloc.free(f);
                Err(v)
            }
        }
    }
    /// Maps `pfn` writable again, zeroes it and gives it back to the allocator.
    pub fn give_back(&mut self, pfn: PhysFrame) -> Result<(), Verdict> {
        match self.give_back_unless_held(pfn)? {
            true => Ok(()),
            false => ok0("make the frame writable again", -Errno::EBUSY.0),
        }
    }
    /// [`give_back`](Env::give_back), except for a frame Xen refuses to map writable with
    /// EBUSY because it still holds a page-table type reference on it that no operation can
    /// drop (the shared slot-3 L2 of a refused L3, docs/DIFFTEST.md #10): that frame stays
    /// read-only and out of the allocator (a writable mapping of it is impossible, so it
    /// must not be handed out again), `Ok(false)`.
    pub fn give_back_unless_held(&mut self, pfn: PhysFrame) -> Result<bool, Verdict> {
        let ret = self.map(pfn, true)?;
        if Errno::from_ret(ret) == Some(Errno::EBUSY) {
            return Ok(false);
        }
        ok0("make the frame writable again", ret)?;
        self.zero(pfn)?;
        self.alloc
            .free(pfn)
            .map_err(|e| Verdict::broken("free the frame", format_args!("{e}")))?;
        Ok(true)
    }
    /// The highest guest slot of the live slot-3 L2 that is empty (the scratch area's, after
    /// a boot: it maps nothing).
    pub fn free_l2_slot(&self) -> Result<usize, Verdict> {
        let l2 = self.live_l2()?;
        for i in (0..self.first_xen_slot()).rev() {
            if self.entry(l2, i)? & P == 0 {
                return Ok(i);
            }
        }
        Err(Verdict::broken(
            "find an empty L2 slot",
            format_args!("none below the hole"),
        ))
    }
    /// A frame Xen owns: the first frame of the read-only M2P that Xen maps in the first
    /// private slot of the live slot-3 L2 (a 2 MiB page), and whether that is a superpage
    /// (then the frame holds `m2p[0..1024]`).
    pub fn xen_frame(&self) -> Result<(MachineFrame, bool), Verdict> {
        let e = self.entry(self.live_l2()?, self.first_xen_slot())?;
        if e & P == 0 {
            return Err(Verdict::broken(
                "read Xen's first private L2 slot",
                format_args!("empty"),
            ));
        }
        let superpage = e & PSE != 0;
        let m = frame_of(e).number();
        Ok((
            MachineFrame::new(if superpage { m & !0x1FF } else { m }),
            superpage,
        ))
    }
}

/// Entry index `i`, checked (< 512): a case never reads or writes outside a table frame.
fn index(i: usize) -> Result<EntryIndex, Verdict> {
    EntryIndex::new(i)
        .ok_or_else(|| Verdict::broken("index a table", format_args!("entry {i} >= 512")))
}

/// The live tables as the walker reads them: through the direct map, links checked
/// against the p2m.
struct EnvTables<'e, 'a, H: Hypervisor>(&'e Env<'a, H>);

impl<H: Hypervisor> walk::TableRead for EnvTables<'_, '_, H> {
    type Error = Verdict;
    fn entry(&self, slot: EntrySlot) -> Result<PageTableEntry, Verdict> {
        Ok(PageTableEntry::from_bits(
            self.0.entry(slot.table(), slot.index().get())?,
        ))
    }
    fn table(&self, e: PageTableEntry) -> Result<PhysFrame, Verdict> {
        self.0.table_of(e.bits())
    }
}
