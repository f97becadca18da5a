//! The one generic boot path: from the bootstrap table to the kernel's own direct map.
//!
//! Stages, in order, each printed as `stage <name> ok cycles=<n>`: banner, early_ioremap,
//! pagetable_setup_start, build_direct_map, write_cr3, pagetable_setup_done, exercise.
//! The same code runs on bare metal, under Xen, and on the host's simulated machine.

mod report;
mod stage;

pub use crate::handoff::{BootInfo, IoremapProbe};
pub use report::{take_boot_state, BootError, BootErrorKind, BootReport, BootState};
pub use stage::{current_stage, set_stage, Stage, BOOT_STAGES};

use crate::addr::{FrameRange, PhysFrame, VirtAddr, PAGE_SIZE};
use crate::ioremap::{EarlyIoremap, TableSource};
use crate::mapper::{self, read_entry, MapError};
use crate::mem::RegionKind;
use crate::ops::Platform;
use crate::options::{BootOptions, IoremapWalk};
use crate::paging::{EntrySlot, Level, PageTableEntry, KERNEL_RO, KERNEL_RW};
use core::fmt::Write;

type Res<T, E> = Result<T, BootErrorKind<E>>;

const MIB: u64 = 1024 * 1024;
const PATTERN_LEN: usize = 64;

/// The boot path. Generic over the backend, so each page-table write is a direct call.
pub struct Boot<'a, P: Platform> {
    p: &'a mut P,
    info: &'a BootInfo<'a>,
    opts: BootOptions,
    state: &'a mut BootState,
    log: &'a mut dyn Write,
    report: BootReport,
    /// The L1 early_ioremap linked into the bootstrap table for its window, if it made one.
    early_window_l1: Option<PhysFrame>,
}

/// Runs every stage; returns the report or the first error.
pub fn boot<P: Platform>(
    p: &mut P,
    info: &BootInfo<'_>,
    opts: BootOptions,
    state: &mut BootState,
    log: &mut dyn Write,
) -> Result<BootReport, BootError<P::Error>> {
    boot_until(p, info, opts, state, log, Stage::Exercise)
}

/// Runs the stages up to and including `last` (e.g. [`Stage::PagetableSetupDone`] to skip
/// the self-test of the `exercise` stage); returns the report or the first error.
pub fn boot_until<P: Platform>(
    p: &mut P,
    info: &BootInfo<'_>,
    opts: BootOptions,
    state: &mut BootState,
    log: &mut dyn Write,
    last: Stage,
) -> Result<BootReport, BootError<P::Error>> {
    let mut b = Boot {
        p,
        info,
        opts,
        state,
        log,
        report: BootReport::default(),
        early_window_l1: None,
    };
    b.run(last)
}

impl<'a, P: Platform> Boot<'a, P> {
    fn run(&mut self, last: Stage) -> Result<BootReport, BootError<P::Error>> {
        for stage in BOOT_STAGES {
            let f: fn(&mut Self) -> Res<(), P::Error> = match stage {
                Stage::Banner => Self::banner,
                Stage::EarlyIoremap => Self::early_ioremap_stage,
                Stage::PagetableSetupStart => Self::setup_start,
                Stage::BuildDirectMap => Self::build_direct_map,
                Stage::WriteCr3 => Self::write_cr3,
                Stage::PagetableSetupDone => Self::setup_done,
                _ => Self::exercise,
            };
            self.stage(stage, f)?;
            if stage == last {
                break;
            }
        }
        Ok(self.report)
    }

    fn stage(
        &mut self,
        stage: Stage,
        f: fn(&mut Self) -> Res<(), P::Error>,
    ) -> Result<(), BootError<P::Error>> {
        set_stage(stage);
        let c0 = self.p.counters();
        let t0 = self.p.cycles();
        f(self).map_err(|kind| BootError { stage, kind })?;
        let dt = self.p.cycles().wrapping_sub(t0);
        let dc = self.p.counters().since(&c0);
        self.report.cycles[stage as usize] = dt;
        self.report.counters[stage as usize] = dc;
        let _ = writeln!(self.log, "stage {} ok cycles={} {}", stage.name(), dt, dc);
        Ok(())
    }

    fn banner(&mut self) -> Res<(), P::Error> {
        let _ = write!(self.log, "pvops: backends linked: ");
        let _ = crate::registry::write_backend_names(self.log);
        let _ = writeln!(self.log, "; running on: {}", P::NAME);
        for r in self.info.memory.regions() {
            let kind = if r.kind == RegionKind::Usable {
                "usable"
            } else {
                "reserved"
            };
            let _ = writeln!(
                self.log,
                "pvops: mem {:#011x}-{:#011x} {}",
                r.start.0,
                r.end(),
                kind
            );
        }
        let _ = writeln!(self.log, "pvops: cmdline: \"{}\"", self.info.cmdline);
        let a = &mut self.state.alloc;
        a.reset(
            &self.info.memory,
            self.info.first_free,
            self.info.bootstrap_reach,
            self.info.table_pool,
        );
        for f in self.info.bootstrap_tables.iter() {
            a.mark_table(f, true)?;
        }
        // The kernel's root table (Linux's swapper_pg_dir) exists from the start, with all four
        // L2s present (as Linux PAE does): a PDPT entry of a live table cannot change without
        // a cr3 reload on bare hardware, so the root never needs one after the switch.
        let root = mapper::new_root(self.p, &mut self.state.alloc)?;
        self.report.root = root;
        self.report.bootstrap_root = self.p.read_cr3();
        let _ = writeln!(
            self.log,
            "pvops: bootstrap root pfn={} kernel root pfn={} first free pfn={} reach pfn={}",
            self.report.bootstrap_root, root, self.info.first_free, self.info.bootstrap_reach
        );
        Ok(())
    }

    fn ioremap_source(&self) -> TableSource {
        match self.opts.early_ioremap {
            IoremapWalk::Cr3 => TableSource::LiveCr3,
            IoremapWalk::Swapper => TableSource::KernelTable(self.report.root),
        }
    }

    /// Maps the probe through early_ioremap and compares it with the direct view.
    fn ioremap_check(&mut self) -> Res<(), P::Error> {
        let Some(probe) = self.info.probe else {
            let _ = writeln!(self.log, "early_ioremap: no probe on this backend");
            return Ok(());
        };
        let pfn = probe.addr.frame();
        let mfn = self
            .p
            .phys_to_machine(pfn)
            .ok_or(MapError::NoMachineFrame(pfn))?;
        let ma = crate::addr::MachineAddr(mfn.start().0 + probe.addr.frame_offset());
        let len = probe.len.min(PATTERN_LEN as u64) as usize;
        let mut io = EarlyIoremap::new(self.p.layout().ioremap_window, self.ioremap_source());
        let root = io.root(self.p);
        let m = io.map(self.p, &mut self.state.alloc, ma, len as u64)?;
        let _ = writeln!(
            self.log,
            "early_ioremap: {} pa={} ma={} -> va={} (walked root pfn={}, live cr3 pfn={})",
            probe.what,
            probe.addr,
            ma,
            m.addr(),
            root,
            self.p.read_cr3()
        );
        let mut through_window = [0u8; PATTERN_LEN];
        // SAFETY: the window slot was just mapped to the probe's bytes; reading them is harmless.
        unsafe { self.p.read_virt(m.addr(), &mut through_window[..len]) }
            .map_err(BootErrorKind::Fault)?;
        let direct = self.p.frame_ptr(pfn).ok_or(MapError::Unreachable(pfn))?;
        for (i, got) in through_window[..len].iter().enumerate() {
            // SAFETY: frame_ptr gives 4096 readable bytes; offset + len stays in the frame
            // or the next one, which the probe guarantees is mapped contiguously.
            let want = unsafe {
                core::ptr::read_volatile(direct.add(probe.addr.frame_offset() as usize + i))
            };
            if want != *got {
                return Err(BootErrorKind::Mismatch {
                    what: probe.what,
                    offset: i,
                    expected: want,
                    found: *got,
                });
            }
        }
        let _ = writeln!(
            self.log,
            "early_ioremap: {len} bytes match through the window"
        );
        io.unmap(self.p, &mut self.state.alloc, m)?;
        Ok(())
    }

    fn early_ioremap_stage(&mut self) -> Res<(), P::Error> {
        self.ioremap_check()?;
        // Remember the L1 early_ioremap linked into the bootstrap table for its window: it
        // is retired with that table after the switch.
        let (window, boot_root) = (self.p.layout().ioremap_window, self.p.read_cr3());
        if let Ok(slot) = mapper::l1_slot(self.p, &mut self.state.alloc, boot_root, window, false) {
            let ours = self.state.alloc.is_table(slot.table)
                && !self.info.bootstrap_tables.contains(slot.table);
            self.early_window_l1 = ours.then_some(slot.table);
        }
        Ok(())
    }

    fn setup_start(&mut self) -> Res<(), P::Error> {
        let root = self.report.root;
        self.p
            .pagetable_setup_start(root)
            .map_err(BootErrorKind::Backend)?;
        let _ = writeln!(
            self.log,
            "pagetable_setup_start: kernel root pfn={} (live cr3 pfn={})",
            root,
            self.p.read_cr3()
        );
        Ok(())
    }

    fn build_direct_map(&mut self) -> Res<(), P::Error> {
        let layout = self.p.layout();
        let mem = &self.info.memory;
        let limit = layout.lowmem_limit;
        let mapped = mem.usable_bytes_below(limit);
        let not_mapped = mem.usable_bytes() - mapped;
        if mapped == 0 {
            return Err(BootErrorKind::NoLowmem);
        }
        self.report.lowmem_mapped = mapped;
        self.report.lowmem_not_mapped = not_mapped;
        let _ = writeln!(
            self.log,
            "lowmem: mapped {} MiB, not mapped {} MiB (limit {} MiB = {})",
            mapped / MIB,
            not_mapped / MIB,
            limit / MIB,
            layout.lowmem_formula
        );

        // The direct map: usable RAM below the limit, plus any part of the kernel image
        // outside it. The window's L1 is made first, then map_linear allocates every L1
        // before it maps any page (Xen: a page-table frame must never be mapped writable).
        let mut ranges = [FrameRange::EMPTY; crate::mem::MAX_REGIONS + 2];
        let mut n = 0;
        for r in mem.usable_frames_below(limit) {
            ranges[n] = r;
            n += 1;
        }
        let in_usable = |f: PhysFrame| ranges[..n].iter().any(|r| r.contains(f));
        let image = self.info.kernel_image;
        let mut extra = image
            .iter()
            .filter(|f| !in_usable(*f) && f.start().0 < limit);
        if let Some(first) = extra.next() {
            let last = extra.next_back().unwrap_or(first);
            ranges[n] = FrameRange {
                start: first,
                end: PhysFrame(last.0 + 1),
            };
            n += 1;
        }
        let root = self.report.root;
        let window = mapper::l1_slot(
            self.p,
            &mut self.state.alloc,
            root,
            layout.ioremap_window,
            true,
        )?
        .table;
        let ro = P::READ_ONLY_PAGE_TABLES;
        let done = mapper::map_linear(
            self.p,
            &mut self.state.alloc,
            root,
            layout.page_offset,
            &ranges[..n],
            |f, alloc| {
                if ro && alloc.is_table(f) {
                    KERNEL_RO
                } else {
                    KERNEL_RW
                }
            },
        )?;
        let (ptes, tables) = (done.ptes, done.tables + 1);
        self.report.direct_map_ptes = ptes;
        self.report.direct_map_tables = tables;
        let _ = writeln!(
            self.log,
            "build_direct_map: {} ptes in {} l1 tables, window l1 pfn={}, page-table frames mapped {}",
            ptes,
            tables,
            window,
            if ro { "read-only" } else { "read-write" }
        );
        Ok(())
    }

    fn write_cr3(&mut self) -> Res<(), P::Error> {
        let root = self.report.root;
        let before = self.p.read_cr3();
        // SAFETY: the kernel's table maps the kernel image and all lowmem at the same
        // virtual addresses as the bootstrap table.
        unsafe { self.p.write_cr3(root) }.map_err(BootErrorKind::Backend)?;
        let now = self.p.read_cr3();
        if now != root {
            return Err(BootErrorKind::Cr3Mismatch {
                expected: root,
                got: now,
            });
        }
        let lowmem_end = self
            .p
            .layout()
            .lowmem_limit
            .min(u32::MAX as u64 * PAGE_SIZE)
            / PAGE_SIZE;
        self.state.alloc.set_limit(PhysFrame(lowmem_end as u32));
        let _ = writeln!(
            self.log,
            "write_cr3: live root pfn={now} (was pfn={before})"
        );
        Ok(())
    }

    fn setup_done(&mut self) -> Res<(), P::Error> {
        let released = self
            .p
            .pagetable_setup_done(self.report.root)
            .map_err(BootErrorKind::Backend)?;
        // The early window's L1 hung off the bootstrap table and goes with it (freed first, so
        // the bootstrap frames stay on top of the allocator's free list).
        if let Some(l1) = self.early_window_l1.take() {
            self.p
                .release_pt(l1, Level::L1)
                .map_err(BootErrorKind::Backend)?;
            self.state.alloc.free(l1)?;
            let _ = writeln!(
                self.log,
                "pagetable_setup_done: early_ioremap's l1 pfn {l1} in the bootstrap table freed"
            );
        }
        for f in released.iter() {
            self.state.alloc.free(f)?;
        }
        self.report.reused = released;
        let _ = writeln!(
            self.log,
            "pagetable_setup_done: bootstrap table retired, frames pfn {}..{} ({}) given to the allocator",
            released.start,
            released.end,
            released.len()
        );
        Ok(())
    }

    fn exercise(&mut self) -> Res<(), P::Error> {
        self.exercise_reuse()?;
        self.exercise_map()?;
        self.ioremap_check()
    }

    /// Gets the released bootstrap frames back, by number, and writes and reads them.
    fn exercise_reuse(&mut self) -> Res<(), P::Error> {
        let released = self.report.reused;
        let _ = write!(self.log, "exercise: reused bootstrap frames:");
        for expected in released.iter().rev() {
            let got = self.state.alloc.alloc()?;
            if got != expected {
                return Err(BootErrorKind::WrongFrame { expected, got });
            }
            let ptr = self.p.frame_ptr(got).ok_or(MapError::Unreachable(got))?;
            for i in 0..PAGE_SIZE as usize {
                // SAFETY: the frame is ours (just allocated) and reachable through the direct map.
                unsafe { ptr.add(i).write_volatile(pattern(got, i)) };
            }
            for i in 0..PAGE_SIZE as usize {
                // SAFETY: as above.
                let v = unsafe { ptr.add(i).read_volatile() };
                if v != pattern(got, i) {
                    return Err(BootErrorKind::Mismatch {
                        what: "reused frame",
                        offset: i,
                        expected: pattern(got, i),
                        found: v,
                    });
                }
            }
            let _ = write!(self.log, " {got}");
        }
        let _ = writeln!(self.log, " ({} written and read back)", released.len());
        for f in released.iter() {
            self.state.alloc.free(f)?;
        }
        Ok(())
    }

    /// Maps a fresh frame in the scratch area, writes through it, reads through the direct
    /// map, unmaps it and retires the L1 table it needed.
    fn exercise_map(&mut self) -> Res<(), P::Error> {
        let layout = self.p.layout();
        let root = self.p.read_cr3();
        let va = VirtAddr(layout.scratch_area.0 + 5 * PAGE_SIZE as u32);
        let frame = self.state.alloc.alloc()?;
        let mfn = self
            .p
            .phys_to_machine(frame)
            .ok_or(MapError::NoMachineFrame(frame))?;
        // SAFETY: the scratch area belongs to the boot path and is empty.
        let flush =
            unsafe { mapper::map_page(self.p, &mut self.state.alloc, root, va, mfn, KERNEL_RW) }?;
        flush.flush(self.p).map_err(BootErrorKind::Backend)?;
        let mut data = [0u8; PATTERN_LEN];
        for (i, d) in data.iter_mut().enumerate() {
            *d = pattern(frame, i) ^ 0x5a;
        }
        // SAFETY: `va` maps our fresh frame.
        unsafe { self.p.write_virt(va, &data) }.map_err(BootErrorKind::Fault)?;
        let direct = self
            .p
            .frame_ptr(frame)
            .ok_or(MapError::Unreachable(frame))?;
        for (i, want) in data.iter().enumerate() {
            // SAFETY: frame_ptr gives 4096 readable bytes.
            let got = unsafe { direct.add(i).read_volatile() };
            if got != *want {
                return Err(BootErrorKind::Mismatch {
                    what: "scratch mapping",
                    offset: i,
                    expected: *want,
                    found: got,
                });
            }
        }
        // SAFETY: nothing uses `va` any more.
        let (unmapped, flush) =
            unsafe { mapper::unmap_page(self.p, &mut self.state.alloc, root, va) }?;
        flush.flush(self.p).map_err(BootErrorKind::Backend)?;
        debug_assert_eq!(unmapped, mfn);
        match mapper::translate(self.p, root, va) {
            Err(MapError::NotMapped(_)) => {}
            Ok(e) => {
                return Err(BootErrorKind::Map(MapError::AlreadyMapped(VirtAddr(
                    e.addr().0 as u32,
                ))))
            }
            Err(e) => return Err(e.into()),
        }
        // Retire the scratch L1: unlink, flush, then give the frame back.
        let l3e = read_entry(self.p, root, va.l3_index())?;
        let l2 = mapper::next_table(self.p, l3e)?;
        let l1 = mapper::next_table(self.p, read_entry(self.p, l2, va.l2_index())?)?;
        // SAFETY: the L1 maps nothing any more.
        unsafe {
            self.p.set_pmd(
                EntrySlot {
                    table: l2,
                    index: va.l2_index() as u16,
                },
                PageTableEntry::EMPTY,
            )
        }
        .map_err(BootErrorKind::Backend)?;
        self.p.flush_tlb_all().map_err(BootErrorKind::Backend)?;
        self.p
            .release_pt(l1, Level::L1)
            .map_err(BootErrorKind::Backend)?;
        self.state.alloc.free(l1)?;
        self.state.alloc.free(frame)?;
        let _ = writeln!(
            self.log,
            "exercise: mapped pfn {frame} at {va} (l1 pfn {l1}), {PATTERN_LEN} bytes written there read back through the direct map, unmapped"
        );
        Ok(())
    }
}

fn pattern(frame: PhysFrame, i: usize) -> u8 {
    (frame.0 as usize)
        .wrapping_mul(31)
        .wrapping_add(i.wrapping_mul(7)) as u8
}
