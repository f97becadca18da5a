//! The frame allocator: the [`FrameAlloc`] trait the mapper, early_ioremap and address
//! spaces take, and [`FrameAllocator`], the boot path's implementation (which also remembers
//! page-table frames).

use crate::addr::{FrameRange, PhysFrame};
use crate::mem::{MemoryMap, MAX_REGIONS};
use core::fmt;

/// Frames the allocator can track (hand out, take back, remember as page tables): 1 GiB of
/// pseudo-physical memory, which covers any 32-bit lowmem. Frames above are never handed out.
pub const TRACKED_FRAMES: usize = 1 << 18;
/// Frames the allocator can remember as page tables (the same 1 GiB).
pub const TABLE_BITMAP_FRAMES: usize = TRACKED_FRAMES;

/// Why the allocator could not hand out or take back a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No free frame below the current reachability limit.
    Exhausted {
        /// The limit (first frame not reachable yet).
        limit: PhysFrame,
    },
    /// The frame is free already (freed twice, or donated while free).
    DoubleFree {
        /// The frame.
        frame: PhysFrame,
    },
    /// The frame was never handed out by this allocator (it is not its to take back; a
    /// kernel gives frames it got elsewhere with [`FrameAllocator::donate`]).
    NotAllocated {
        /// The frame.
        frame: PhysFrame,
    },
    /// The frame is handed out right now: it cannot be donated.
    InUse {
        /// The frame.
        frame: PhysFrame,
    },
    /// A frame beyond what the allocator can track ([`TRACKED_FRAMES`]).
    UntrackableTable {
        /// The frame.
        frame: PhysFrame,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted { limit } => write!(f, "out of frames below pfn {limit}"),
            Self::DoubleFree { frame } => write!(f, "pfn {frame} freed twice"),
            Self::NotAllocated { frame } => {
                write!(f, "pfn {frame} was not handed out by this allocator")
            }
            Self::InUse { frame } => write!(f, "pfn {frame} is handed out, cannot donate it"),
            Self::UntrackableTable { frame } => {
                write!(f, "pfn {frame} is beyond the allocator's bitmap")
            }
        }
    }
}

/// What the mapper, early_ioremap and address spaces need of a frame allocator, so a kernel
/// can bring its own. Frames handed out must be reachable through the backend's
/// [`crate::ops::Platform::frame_ptr`] (the mapper zeroes new tables through it).
pub trait FrameAlloc {
    /// Hands out one frame.
    fn alloc(&mut self) -> Result<PhysFrame, AllocError>;
    /// Hands out one frame that is to become a page table (an allocator may keep a pool
    /// for them, or remember them). The default is [`FrameAlloc::alloc`].
    fn alloc_table(&mut self) -> Result<PhysFrame, AllocError> {
        self.alloc()
    }
    /// Takes back a frame this allocator handed out. Freeing a frame twice, or one it
    /// never handed out, is an error and changes nothing.
    fn free(&mut self, frame: PhysFrame) -> Result<(), AllocError>;
}

/// Most recently freed frames handed out first (a hint list; the bitmap is the truth).
const RECENT: usize = 64;
const WORDS: usize = TRACKED_FRAMES / 64;

/// A frame allocator: a bump allocator over the free usable ranges, plus a bitmap of the
/// frames handed out and one of the frames given back (any number: no free-list cap). The
/// most recently freed frames come back first. It also records which frames are page
/// tables.
pub struct FrameAllocator {
    ranges: [FrameRange; MAX_REGIONS],
    nranges: usize,
    cursor: usize,
    limit: PhysFrame,
    /// Frames handed out now.
    handed: [u64; WORDS],
    /// Frames given back (freed or donated) and not handed out again.
    freed: [u64; WORDS],
    nfreed: u32,
    /// The most recently freed frames, newest last (may name frames handed out since).
    recent: [PhysFrame; RECENT],
    nrecent: usize,
    tables: [u64; WORDS],
    allocated: u32,
    /// The part of the early page-table pool not handed out yet (page tables only).
    pool: FrameRange,
}

fn bit(words: &[u64; WORDS], f: PhysFrame) -> bool {
    let i = f.number() as usize;
    i < TRACKED_FRAMES && words[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(words: &mut [u64; WORDS], f: PhysFrame, on: bool) {
    let i = f.number() as usize;
    if i < TRACKED_FRAMES {
        if on {
            words[i / 64] |= 1 << (i % 64);
        } else {
            words[i / 64] &= !(1 << (i % 64));
        }
    }
}

impl FrameAllocator {
    /// An allocator with no frames (fill it with [`FrameAllocator::reset`]); `const`, so it
    /// can live in a static.
    pub const fn empty() -> FrameAllocator {
        FrameAllocator {
            ranges: [FrameRange::EMPTY; MAX_REGIONS],
            nranges: 0,
            cursor: 0,
            limit: PhysFrame::new(0),
            handed: [0; WORDS],
            freed: [0; WORDS],
            nfreed: 0,
            recent: [PhysFrame::new(0); RECENT],
            nrecent: 0,
            tables: [0; WORDS],
            allocated: 0,
            pool: FrameRange::EMPTY,
        }
    }

    /// An allocator handing out the usable frames of `map` at or above `first_free`, only
    /// frames below `limit` (reachable now) and below [`TRACKED_FRAMES`]. `pool` (frames
    /// reserved for early page tables, e.g. backend-xen's early table pool; may be empty)
    /// serves [`FrameAllocator::alloc_table`] only, before any other frame: data never takes
    /// a page table's reserved frame.
    pub fn new(
        map: &MemoryMap,
        first_free: PhysFrame,
        limit: PhysFrame,
        pool: FrameRange,
    ) -> FrameAllocator {
        let mut a = FrameAllocator::empty();
        a.reset(map, first_free, limit, pool);
        a
    }

    /// Forgets everything and starts over (in place: the allocator is large). See
    /// [`FrameAllocator::new`].
    pub fn reset(
        &mut self,
        map: &MemoryMap,
        first_free: PhysFrame,
        limit: PhysFrame,
        pool: FrameRange,
    ) {
        self.nranges = 0;
        self.cursor = 0;
        self.limit = limit;
        self.handed.fill(0);
        self.freed.fill(0);
        self.nfreed = 0;
        self.nrecent = 0;
        self.tables.fill(0);
        self.allocated = 0;
        self.pool = pool;
        for r in map.usable_frames_below(u64::MAX) {
            if self.nranges == MAX_REGIONS {
                break;
            }
            let start = PhysFrame::new(r.start.number().max(first_free.number()));
            if start < r.end {
                self.ranges[self.nranges] = FrameRange { start, end: r.end };
                self.nranges += 1;
            }
        }
    }

    /// Raises (or lowers) the reachability limit, e.g. once the direct map is live.
    pub fn set_limit(&mut self, limit: PhysFrame) {
        self.limit = limit;
    }

    /// The current reachability limit.
    pub fn limit(&self) -> PhysFrame {
        self.limit
    }

    fn cap(&self) -> u32 {
        self.limit.number().min(TRACKED_FRAMES as u32)
    }

    /// Frames handed out so far (minus those taken back).
    pub fn allocated(&self) -> u32 {
        self.allocated
    }

    /// True when `frame` is handed out right now.
    pub fn is_allocated(&self, frame: PhysFrame) -> bool {
        bit(&self.handed, frame)
    }

    /// Free frames left below the limit (bump part, frames given back, table pool).
    pub fn available(&self) -> u32 {
        let cap = self.cap();
        let bump: u32 = self.ranges[self.cursor.min(self.nranges)..self.nranges]
            .iter()
            .map(|r| r.end.number().min(cap).saturating_sub(r.start.number()))
            .sum();
        bump + self.freed_below(cap) + self.pool.len()
    }

    fn freed_below(&self, cap: u32) -> u32 {
        if self.nfreed == 0 {
            return 0;
        }
        let full = (cap / 64) as usize;
        let mut n: u32 = self.freed[..full].iter().map(|w| w.count_ones()).sum();
        if full < WORDS && cap % 64 != 0 {
            n += (self.freed[full] & ((1u64 << (cap % 64)) - 1)).count_ones();
        }
        n
    }

    fn hand_out(&mut self, f: PhysFrame) -> PhysFrame {
        set_bit(&mut self.handed, f, true);
        self.allocated += 1;
        f
    }

    fn take_freed(&mut self, f: PhysFrame) -> PhysFrame {
        set_bit(&mut self.freed, f, false);
        self.nfreed -= 1;
        self.hand_out(f)
    }

    /// Hands out one frame: a recently given-back one first, then any given-back one, then
    /// the next frame of the free ranges.
    pub fn alloc(&mut self) -> Result<PhysFrame, AllocError> {
        let cap = self.cap();
        let mut i = self.nrecent;
        while i > 0 {
            i -= 1;
            let f = self.recent[i];
            let stale = !bit(&self.freed, f);
            if stale || f.number() < cap {
                self.recent.copy_within(i + 1..self.nrecent, i);
                self.nrecent -= 1;
                if !stale {
                    return Ok(self.take_freed(f));
                }
            }
        }
        if self.nfreed > 0 {
            let words = (cap as usize).div_ceil(64).min(WORDS);
            for w in 0..words {
                let word = self.freed[w];
                if word != 0 {
                    let f = PhysFrame::new((w * 64) as u32 + word.trailing_zeros());
                    if f.number() < cap {
                        return Ok(self.take_freed(f));
                    }
                }
            }
        }
        while self.cursor < self.nranges {
            let r = &mut self.ranges[self.cursor];
            if r.start < r.end && r.start.number() < cap {
                let f = r.start;
                r.start = PhysFrame::new(f.number() + 1);
                return Ok(self.hand_out(f));
            }
            if r.start >= r.end {
                self.cursor += 1;
            } else {
                break; // the rest is beyond the limit for now
            }
        }
        Err(AllocError::Exhausted { limit: self.limit })
    }

    /// Hands out one frame and records it as a page table: from the early table pool while
    /// it lasts, then as [`FrameAllocator::alloc`].
    pub fn alloc_table(&mut self) -> Result<PhysFrame, AllocError> {
        let f = match self.pool.is_empty() {
            false if (self.pool.start.number() as usize) < TRACKED_FRAMES => {
                let f = self.pool.start;
                self.pool.start = PhysFrame::new(f.number() + 1);
                self.hand_out(f)
            }
            _ => self.alloc()?,
        };
        set_bit(&mut self.tables, f, true);
        Ok(f)
    }

    /// Takes back a frame this allocator handed out (it is no longer a page table). A frame
    /// freed twice is [`AllocError::DoubleFree`], one never handed out
    /// [`AllocError::NotAllocated`]; either way nothing changes.
    pub fn free(&mut self, frame: PhysFrame) -> Result<(), AllocError> {
        if bit(&self.freed, frame) {
            return Err(AllocError::DoubleFree { frame });
        }
        if !bit(&self.handed, frame) {
            return Err(AllocError::NotAllocated { frame });
        }
        set_bit(&mut self.handed, frame, false);
        self.allocated -= 1;
        self.give_back(frame);
        Ok(())
    }

    fn give_back(&mut self, frame: PhysFrame) {
        set_bit(&mut self.tables, frame, false);
        set_bit(&mut self.freed, frame, true);
        self.nfreed += 1;
        if self.nrecent == RECENT {
            self.recent.copy_within(1.., 0);
            self.nrecent -= 1;
        }
        self.recent[self.nrecent] = frame;
        self.nrecent += 1;
    }

    /// Gives the allocator a frame it never handed out (e.g. the bootstrap table's frames
    /// once the backend retired it); from now on it is the allocator's like any other.
    /// Refuses a frame that is free already, handed out, or beyond [`TRACKED_FRAMES`].
    pub fn donate(&mut self, frame: PhysFrame) -> Result<(), AllocError> {
        if frame.number() as usize >= TRACKED_FRAMES {
            return Err(AllocError::UntrackableTable { frame });
        }
        if bit(&self.freed, frame) || self.is_unallocated_range_frame(frame) {
            return Err(AllocError::DoubleFree { frame });
        }
        if bit(&self.handed, frame) {
            return Err(AllocError::InUse { frame });
        }
        self.give_back(frame);
        Ok(())
    }

    /// True when `frame` is still in a free range (the bump part) or the table pool.
    fn is_unallocated_range_frame(&self, frame: PhysFrame) -> bool {
        self.pool.contains(frame)
            || self.ranges[self.cursor.min(self.nranges)..self.nranges]
                .iter()
                .any(|r| r.contains(frame))
    }

    /// Records `frame` as a page table (or not).
    pub fn mark_table(&mut self, frame: PhysFrame, is_table: bool) -> Result<(), AllocError> {
        if frame.number() as usize >= TABLE_BITMAP_FRAMES {
            return Err(AllocError::UntrackableTable { frame });
        }
        set_bit(&mut self.tables, frame, is_table);
        Ok(())
    }

    /// True when `frame` is recorded as a page table.
    pub fn is_table(&self, frame: PhysFrame) -> bool {
        bit(&self.tables, frame)
    }
}

impl FrameAlloc for FrameAllocator {
    fn alloc(&mut self) -> Result<PhysFrame, AllocError> {
        FrameAllocator::alloc(self)
    }
    fn alloc_table(&mut self) -> Result<PhysFrame, AllocError> {
        FrameAllocator::alloc_table(self)
    }
    fn free(&mut self, frame: PhysFrame) -> Result<(), AllocError> {
        FrameAllocator::free(self, frame)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::addr::PhysAddr;
    use crate::mem::tests::map;
    use crate::mem::{RawRegion, RegionKind};

    #[test]
    fn allocator_bump_limit_and_lifo() {
        let m = map();
        let mut a = FrameAllocator::new(
            &m,
            PhysFrame::new(0x200),
            PhysFrame::new(0x202),
            FrameRange::EMPTY,
        );
        assert_eq!(a.alloc(), Ok(PhysFrame::new(0x200)));
        assert_eq!(a.alloc_table(), Ok(PhysFrame::new(0x201)));
        assert!(a.is_table(PhysFrame::new(0x201)));
        assert_eq!(
            a.alloc(),
            Err(AllocError::Exhausted {
                limit: PhysFrame::new(0x202)
            })
        );
        a.set_limit(PhysFrame::new(0x800));
        let (x, y) = (a.alloc().unwrap(), a.alloc().unwrap());
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert_eq!(a.free(y), Err(AllocError::DoubleFree { frame: y }));
        assert_eq!(a.alloc(), Ok(y));
        assert_eq!(a.alloc(), Ok(x));
        a.free(PhysFrame::new(0x201)).unwrap();
        assert!(!a.is_table(PhysFrame::new(0x201)));
    }

    /// Issue 10 item 5: the old allocator refused the 64th free (`FreeListFull`), took
    /// frames it never handed out and saw a double free only against its short list.
    #[test]
    fn allocator_takes_back_every_frame() {
        let m = map();
        let mut a = FrameAllocator::new(
            &m,
            PhysFrame::new(0x100),
            PhysFrame::new(0x800),
            FrameRange::EMPTY,
        );
        let before = a.available();
        let frames: std::vec::Vec<PhysFrame> = (0..1000).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.available(), before - 1000);
        for f in &frames {
            a.free(*f).unwrap();
        }
        assert_eq!(a.available(), before);
        assert_eq!(a.allocated(), 0);
        for f in &frames {
            assert_eq!(a.free(*f), Err(AllocError::DoubleFree { frame: *f }));
        }
        // Never handed out: below first_free, and still in the free range.
        for f in [PhysFrame::new(0x5), PhysFrame::new(0x7ff)] {
            assert_eq!(a.free(f), Err(AllocError::NotAllocated { frame: f }));
        }
        assert_eq!(a.available(), before);
        // Every frame comes back exactly once.
        let mut again: std::vec::Vec<PhysFrame> = (0..1000).map(|_| a.alloc().unwrap()).collect();
        again.sort();
        let mut want = frames.clone();
        want.sort();
        assert_eq!(again, want);
    }

    #[test]
    fn donate_takes_foreign_frames_once() {
        let m = map();
        let mut a = FrameAllocator::new(
            &m,
            PhysFrame::new(0x100),
            PhysFrame::new(0x800),
            FrameRange::EMPTY,
        );
        let before = a.available();
        a.donate(PhysFrame::new(0x10)).unwrap();
        assert_eq!(a.available(), before + 1);
        assert_eq!(
            a.donate(PhysFrame::new(0x10)),
            Err(AllocError::DoubleFree {
                frame: PhysFrame::new(0x10)
            })
        );
        assert_eq!(
            a.donate(PhysFrame::new(0x300)),
            Err(AllocError::DoubleFree {
                frame: PhysFrame::new(0x300)
            })
        );
        assert_eq!(a.alloc(), Ok(PhysFrame::new(0x10)));
        assert_eq!(
            a.donate(PhysFrame::new(0x10)),
            Err(AllocError::InUse {
                frame: PhysFrame::new(0x10)
            })
        );
        a.free(PhysFrame::new(0x10)).unwrap();
    }

    /// Found by `cargo xtask fuzz` (memory_map): a usable region above 16 TiB had its frame
    /// numbers truncated to 32 bits, so the allocator handed out frames 0.. of low memory.
    /// Frames beyond what the allocator tracks are not handed out at all.
    #[test]
    fn frames_beyond_tracking_are_left_out() {
        let mut m = MemoryMap::new();
        m.add(PhysAddr::new(1 << 44), 0x4000, RegionKind::Usable)
            .unwrap();
        let mut a = FrameAllocator::new(
            &m,
            PhysFrame::new(0),
            PhysFrame::new(u32::MAX),
            FrameRange::EMPTY,
        );
        assert_eq!(
            a.alloc(),
            Err(AllocError::Exhausted {
                limit: PhysFrame::new(u32::MAX)
            })
        );
    }

    #[test]
    fn pool_serves_page_tables_only() {
        let m = map();
        let pool = FrameRange {
            start: PhysFrame::new(0x150),
            end: PhysFrame::new(0x152),
        };
        let mut a = FrameAllocator::new(&m, PhysFrame::new(0x200), PhysFrame::new(0x800), pool);
        // Data never comes from the pool, page tables do first.
        assert_eq!(a.alloc(), Ok(PhysFrame::new(0x200)));
        assert_eq!(a.alloc_table(), Ok(PhysFrame::new(0x150)));
        assert_eq!(a.alloc(), Ok(PhysFrame::new(0x201)));
        assert_eq!(a.alloc_table(), Ok(PhysFrame::new(0x151)));
        assert!(a.is_table(PhysFrame::new(0x151)));
        assert_eq!(a.alloc_table(), Ok(PhysFrame::new(0x202)));
        // Pool frames come back like any other.
        a.free(PhysFrame::new(0x150)).unwrap();
        assert_eq!(a.alloc(), Ok(PhysFrame::new(0x150)));
    }

    #[test]
    fn more_than_32_regions() {
        // 100 separate usable regions: all kept (the old limit of 32 truncated or refused).
        let entries: std::vec::Vec<RawRegion> = (0..100u64)
            .map(|i| RawRegion {
                start: i * 0x2000,
                len: 0x1000,
                kind: RegionKind::Usable,
            })
            .collect();
        let m = MemoryMap::sanitized(&entries).unwrap();
        let mut a = FrameAllocator::new(
            &m,
            PhysFrame::new(0),
            PhysFrame::new(0x1000),
            FrameRange::EMPTY,
        );
        assert_eq!(a.available(), 100);
        for i in 0..100 {
            assert_eq!(a.alloc(), Ok(PhysFrame::new(i * 2)));
        }
    }
}
