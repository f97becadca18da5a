//! The `address_spaces` stage: what a kernel with processes does with pvops's MMU layer,
//! on the real machine.
//!
//! 1. A second address space ([`AddressSpaces::create`]) with a private page, and a
//!    copy-on-write duplicate of it ([`AddressSpaces::duplicate`], Linux's fork: the page
//!    read-only in both, the same frame); the copy-on-write break a write fault would make
//!    (the duplicate's page remapped to its own copy, [`AddressSpaces::remap_page`], the
//!    source's made writable again, [`AddressSpaces::protect_range`]); 10 round trips
//!    kernel root -> space -> duplicate -> kernel root, each page read back in its space
//!    (and absent from the kernel's root); both destroyed.
//! 2. 50 rounds of a 1 MiB buffer (256 fresh frames) mapped in one lazy section
//!    ([`AddressSpaces::map_kernel_range`]), written and read back through the mapping,
//!    unmapped with its TLB flush in one lazy section, the frames freed; the L1 it needed
//!    retired at the end.
//! 3. Every frame back: the allocator's free frames before and after are equal.

use core::fmt;
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::boot::KernelStage;
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::{AllocError, FrameAllocator};
use pvops_core::paging::{Level, PteFlags, KERNEL_RW};
use pvops_core::space::{AddressSpaces, Duplicate, SpaceError, Target};
use pvops_core::walk;
use pvops_core::{LazyMmu, PageFault, Platform};

/// The stage's name in `stage address_spaces ok ...` and in `stage=address_spaces`.
pub static STAGE: KernelStage = KernelStage::new("address_spaces");

/// Round trips between the kernel's root and the second space.
pub const ROUND_TRIPS: u32 = 10;
/// Rounds of map / write / read / unmap of the buffer.
pub const MAP_ROUNDS: u32 = 50;
/// Pages of the buffer (1 MiB).
pub const BUFFER_PAGES: usize = 256;
/// The second space's private page (below the kernel half).
const PRIVATE_VA: VirtAddr = VirtAddr::new(0x4000_0000);
/// Bytes compared per page.
const CHECK: usize = 16;

/// What the stage did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    /// Most address spaces alive at once, the kernel's root included.
    pub spaces: usize,
    /// Round trips made.
    pub round_trips: u32,
    /// Buffer rounds made.
    pub map_rounds: u32,
    /// Frames the allocator had free before minus after.
    pub frames_leaked: i64,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spaces={} round_trips={} map_rounds={} frames_leaked={}",
            self.spaces, self.round_trips, self.map_rounds, self.frames_leaked
        )
    }
}

/// Why the stage failed.
pub enum StageError<E> {
    /// An address-space operation.
    Space(SpaceError<E>),
    /// The allocator.
    Alloc(AllocError),
    /// A page fault reading or writing a mapping.
    Fault(PageFault),
    /// A byte read back differs.
    Mismatch {
        /// Where.
        what: &'static str,
        /// Which round.
        round: u32,
        /// Byte offset (page * 4096 + offset in the page for the buffer).
        offset: usize,
    },
    /// The private page is mapped in the kernel's root.
    Leaks(VirtAddr),
    /// After a copy-on-write duplicate the page is writable, or names another frame, in
    /// one of the two spaces.
    NotCopyOnWrite(VirtAddr),
    /// Frames not given back.
    Leaked(i64),
}

impl<E: fmt::Display> fmt::Display for StageError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Space(e) => write!(f, "{e}"),
            Self::Alloc(e) => write!(f, "{e}"),
            Self::Fault(pf) => write!(f, "{pf}"),
            Self::Mismatch {
                what,
                round,
                offset,
            } => write!(f, "{what}: round {round}: byte {offset} differs"),
            Self::Leaks(va) => write!(f, "the second space's {va} is mapped in the kernel's root"),
            Self::NotCopyOnWrite(va) => write!(
                f,
                "{va} is writable or names another frame after a copy-on-write duplicate"
            ),
            Self::Leaked(n) => write!(f, "{n} frames not given back"),
        }
    }
}

impl<E> From<SpaceError<E>> for StageError<E> {
    fn from(e: SpaceError<E>) -> Self {
        StageError::Space(e)
    }
}
impl<E> From<MapError<E>> for StageError<E> {
    fn from(e: MapError<E>) -> Self {
        StageError::Space(SpaceError::Map(e))
    }
}
impl<E> From<AllocError> for StageError<E> {
    fn from(e: AllocError) -> Self {
        StageError::Alloc(e)
    }
}

fn backend<E>(e: E) -> StageError<E> {
    StageError::Space(SpaceError::Backend(e))
}

fn pattern(round: u32, page: usize, i: usize) -> u8 {
    (round as usize * 131 + page * 7 + i * 13 + 1) as u8
}

fn mfn_of<P: Platform>(p: &P, f: PhysFrame) -> Result<MachineFrame, StageError<P::Error>> {
    p.phys_to_machine(f)
        .ok_or(StageError::from(MapError::NoMachineFrame(f)))
}

/// Runs the stage on the booted kernel (its live root is the boot path's).
pub fn run<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
) -> Result<Done, StageError<P::Error>> {
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
    let mut done = Done::default();
    round_trips(p, alloc, &mut spaces, &mut done)?;
    buffer_rounds(p, alloc, &spaces, &mut done)?;
    done.frames_leaked = before as i64 - alloc.available() as i64;
    if done.frames_leaked != 0 {
        return Err(StageError::Leaked(done.frames_leaked));
    }
    Ok(done)
}

/// A fresh frame holding `pattern(version, 0, ..)`, and its machine frame.
fn filled_frame<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    version: u32,
) -> Result<(PhysFrame, MachineFrame), StageError<P::Error>> {
    let frame = alloc.alloc()?;
    let Some(ptr) = p.frame_ptr(frame) else {
        alloc.free(frame)?;
        return Err(StageError::from(MapError::Unreachable(frame)));
    };
    for i in 0..PAGE_SIZE as usize {
        // SAFETY: our fresh frame, reachable through the direct map.
        unsafe { ptr.add(i).write_volatile(pattern(version, 0, i)) };
    }
    Ok((frame, mfn_of(p, frame)?))
}

fn round_trips<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    spaces: &mut AddressSpaces,
    done: &mut Done,
) -> Result<(), StageError<P::Error>> {
    let id = spaces.create(p, alloc)?;
    let (frame, mfn) = filled_frame(p, alloc, 0)?;
    // SAFETY: the space is new; PRIVATE_VA is its own. Not live: the switch loads cr3.
    unsafe { spaces.map_page(p, alloc, id, PRIVATE_VA, mfn, KERNEL_RW) }?.ignore();
    // SAFETY: the frame is freed below only after both spaces unmapped it.
    let (child, flush) = unsafe { spaces.duplicate(p, alloc, id, Duplicate::CopyOnWrite) }?;
    flush.flush(p).map_err(backend)?;
    done.spaces = 1 + spaces.count();
    for t in [id, child] {
        let e = spaces.translate(p, Target::Space(t), PRIVATE_VA)?;
        if e.flags().contains(PteFlags::WRITABLE) || e.frame() != Some(mfn) {
            return Err(StageError::NotCopyOnWrite(PRIVATE_VA));
        }
    }
    // The copy-on-write break a fault handler makes for a write in the duplicate: its own
    // copy of the page (here with other bytes), mapped writable in its place; the source,
    // the page's only user again, gets its write right back. Both spaces have run (pinned:
    // under Xen each change is a checked update, not a store into a private table), and
    // the source is live.
    spaces.switch_to(p, Target::Space(child))?;
    spaces.switch_to(p, Target::Space(id))?;
    let (copy, copy_mfn) = filled_frame(p, alloc, 1)?;
    // SAFETY: the duplicate is not live (a cr3 load flushes); its page maps its own copy.
    unsafe { spaces.remap_page(p, child, PRIVATE_VA, copy_mfn, KERNEL_RW) }?
        .1
        .ignore();
    // SAFETY: the source is the only user of `frame` again.
    unsafe { spaces.protect_range(p, id, PRIVATE_VA, 1, KERNEL_RW) }?
        .flush(p)
        .map_err(backend)?;
    spaces.switch_to(p, Target::Kernel)?;
    for round in 0..ROUND_TRIPS {
        for (t, version, what) in [
            (id, 0, "private page of the second space"),
            (
                child,
                1,
                "private page of its duplicate after the copy-on-write break",
            ),
        ] {
            spaces.switch_to(p, Target::Space(t))?;
            let mut got = [0u8; CHECK];
            // SAFETY: the live space maps PRIVATE_VA to a frame of ours.
            unsafe { p.read_virt(PRIVATE_VA, &mut got) }.map_err(StageError::Fault)?;
            if let Some(offset) = (0..CHECK).find(|i| got[*i] != pattern(version, 0, *i)) {
                spaces.switch_to(p, Target::Kernel)?;
                return Err(StageError::Mismatch {
                    what,
                    round,
                    offset,
                });
            }
        }
        spaces.switch_to(p, Target::Kernel)?;
        if mapper::translate(p, spaces.kernel_root(), PRIVATE_VA).is_ok() {
            return Err(StageError::Leaks(PRIVATE_VA));
        }
        done.round_trips += 1;
    }
    for t in [id, child] {
        // SAFETY: the space is not live; nothing uses its private page.
        unsafe { spaces.unmap_page(p, t, PRIVATE_VA) }?.1.ignore();
        spaces.destroy(p, alloc, t)?;
    }
    alloc.free(frame)?;
    alloc.free(copy)?;
    Ok(())
}

fn buffer_rounds<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    spaces: &AddressSpaces,
    done: &mut Done,
) -> Result<(), StageError<P::Error>> {
    // The upper half of the scratch area: one L1, made by the first round if missing.
    let va =
        VirtAddr::new(p.layout().scratch_area.as_u32() + (BUFFER_PAGES as u32) * PAGE_SIZE as u32);
    let root = spaces.kernel_root();
    let had_l1 = walk::walk_down_to(&mapper::Tables(&*p), root, va, Level::L2)
        .map(|w| w.level == Level::L2 && w.entry.is_present())?;
    let mut frames = [PhysFrame::new(0); BUFFER_PAGES];
    let mut mfns = [MachineFrame::new(0); BUFFER_PAGES];
    for round in 0..MAP_ROUNDS {
        for (f, m) in frames.iter_mut().zip(mfns.iter_mut()) {
            *f = alloc.alloc()?;
            *m = mfn_of(p, *f)?;
        }
        {
            let mut lazy = LazyMmu::enter(&mut *p);
            // SAFETY: the upper scratch half is this stage's.
            unsafe {
                spaces.map_kernel_range(&mut *lazy, alloc, va, BUFFER_PAGES, KERNEL_RW, |i| mfns[i])
            }?;
            lazy.finish().map_err(backend)?;
        }
        for (page, frame) in frames.iter().enumerate() {
            let at = VirtAddr::new(va.as_u32() + (page as u32) * PAGE_SIZE as u32);
            let mut data = [0u8; CHECK];
            for (i, d) in data.iter_mut().enumerate() {
                *d = pattern(round, page, i);
            }
            // SAFETY: `at` maps our fresh frame (just mapped, not present before).
            unsafe { p.write_virt(at, &data) }.map_err(StageError::Fault)?;
            let direct = p
                .frame_ptr(*frame)
                .ok_or(StageError::from(MapError::Unreachable(*frame)))?;
            for (i, want) in data.iter().enumerate() {
                // SAFETY: frame_ptr gives 4096 readable bytes of our frame.
                if unsafe { direct.add(i).read_volatile() } != *want {
                    return Err(StageError::Mismatch {
                        what: "1 MiB buffer",
                        round,
                        offset: page * PAGE_SIZE as usize + i,
                    });
                }
            }
        }
        {
            let mut lazy = LazyMmu::enter(&mut *p);
            // SAFETY: nothing uses the buffer any more.
            let flush =
                unsafe { spaces.unmap_kernel_range(&mut *lazy, va, BUFFER_PAGES, |_, _| {}) }?;
            flush.flush(&mut *lazy).map_err(backend)?;
            lazy.finish().map_err(backend)?;
        }
        for f in frames {
            alloc.free(f)?;
        }
        done.map_rounds += 1;
    }
    if !had_l1 {
        spaces.retire_kernel_table(p, alloc, va)?;
    }
    Ok(())
}
