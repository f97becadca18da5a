//! The one generic boot path: from the bootstrap table to the kernel's own direct map.
//!
//! Stages, in order, each printed as `stage <name> ok cycles=<n> <counters>`: banner,
//! early_ioremap, pagetable_setup_start, build_direct_map, write_cr3, pagetable_setup_done.
//! The same code runs on bare metal, under Xen, and on the host's simulated machine. What a
//! kernel does after it is its own: it names its stages ([`KernelStage`]) so that a fault
//! there says where it happened, and times them with [`measure`] like the boot path's.

mod report;
mod stage;

pub use crate::handoff::{
    BootInfo, BootInfoError, BootModule, BootRange, IoremapProbe, PlatformInfo,
};
pub use report::{take_boot_state, BootError, BootErrorKind, BootReport, BootState};
pub use stage::{current_stage, set_stage, KernelStage, Stage, BOOT_STAGES};

use crate::addr::{FrameRange, PhysFrame, PAGE_SIZE};
use crate::ioremap::{EarlyIoremap, TableSource};
use crate::mapper::{self, MapError};
use crate::ops::{Counters, Platform};
use crate::options::{BootOptions, IoremapWalk};
use crate::paging::{Level, KERNEL_RW};
use core::fmt;
use core::fmt::Write;

type Res<T, E> = Result<T, BootErrorKind<E>>;

const MIB: u64 = 1024 * 1024;
/// Most bytes the early_ioremap probe compares.
const PROBE_MAX: usize = 64;

/// What one stage cost: cycles and the backend's counters. Prints as
/// `cycles=<n> <counters>`, the tail of a `stage <name> ok` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageFigures<C> {
    /// Cycles (the backend's counter: compare within one backend only).
    pub cycles: u64,
    /// What the backend issued (its own [`Counters`]: hypercalls under Xen, none on bare metal).
    pub counters: C,
    /// Nanoseconds of the stage during which the CPU did not run the kernel (the
    /// hypervisor's runstate; 0 where the platform cannot tell, see
    /// [`Platform::not_running_ns`]). Included in `cycles`.
    pub notrun_ns: u64,
}

impl<C: Counters> fmt::Display for StageFigures<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycles={} {}", self.cycles, self.counters)
    }
}

/// Runs `f` as stage `stage`: sets it as the current stage (a fault inside names it) and
/// measures it. The boot path runs each of its stages through this; a kernel runs its own
/// the same way and prints `stage <name> ok {figures}`.
pub fn measure<P: Platform, T>(
    p: &mut P,
    stage: Stage,
    f: impl FnOnce(&mut P) -> T,
) -> (T, StageFigures<P::Counters>) {
    set_stage(stage);
    let start = Stopwatch::start(p);
    let out = f(p);
    (out, start.figures(p))
}

/// Cycles, counters and not-running time when a stage started.
struct Stopwatch<C> {
    cycles: u64,
    counters: C,
    notrun_ns: Option<u64>,
}

impl<C: Counters> Stopwatch<C> {
    fn start<P: Platform<Counters = C>>(p: &P) -> Self {
        Stopwatch {
            counters: p.counters(),
            notrun_ns: p.not_running_ns(),
            cycles: p.cycles(),
        }
    }
    fn figures<P: Platform<Counters = C>>(&self, p: &P) -> StageFigures<C> {
        let cycles = p.cycles().wrapping_sub(self.cycles);
        let notrun_ns = match (self.notrun_ns, p.not_running_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        StageFigures {
            cycles,
            counters: p.counters().since(&self.counters),
            notrun_ns,
        }
    }
}

/// The boot path. Generic over the backend, so each page-table write is a direct call.
pub struct Boot<'a, P: Platform> {
    p: &'a mut P,
    info: &'a BootInfo<'a>,
    opts: BootOptions,
    state: &'a mut BootState,
    log: &'a mut dyn Write,
    report: BootReport<P::Counters>,
    /// The L1 early_ioremap linked into the bootstrap table for its window, if it made one.
    early_window_l1: Option<PhysFrame>,
}

/// Runs every stage of the boot path, up to `pagetable_setup_done`; returns the report or
/// the first error.
pub fn boot<P: Platform>(
    p: &mut P,
    info: &BootInfo<'_>,
    opts: BootOptions,
    state: &mut BootState,
    log: &mut dyn Write,
) -> Result<BootReport<P::Counters>, BootError<P::Error>> {
    boot_until(p, info, opts, state, log, Stage::PagetableSetupDone)
}

/// Runs the stages up to and including `last` (e.g. [`Stage::BuildDirectMap`] to stop
/// before the switch; a stage that is not the boot path's runs them all); returns the report
/// or the first error.
pub fn boot_until<P: Platform>(
    p: &mut P,
    info: &BootInfo<'_>,
    opts: BootOptions,
    state: &mut BootState,
    log: &mut dyn Write,
    last: Stage,
) -> Result<BootReport<P::Counters>, BootError<P::Error>> {
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
    fn run(&mut self, last: Stage) -> Result<BootReport<P::Counters>, BootError<P::Error>> {
        for stage in BOOT_STAGES {
            let f: fn(&mut Self) -> Res<(), P::Error> = match stage {
                Stage::Banner => Self::banner,
                Stage::EarlyIoremap => Self::early_ioremap_stage,
                Stage::PagetableSetupStart => Self::setup_start,
                Stage::BuildDirectMap => Self::build_direct_map,
                Stage::WriteCr3 => Self::write_cr3,
                Stage::PagetableSetupDone => Self::setup_done,
                Stage::Entry | Stage::Kernel(_) => continue,
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
        let start = Stopwatch::start(self.p);
        f(self).map_err(|kind| BootError { stage, kind })?;
        let figures = start.figures(self.p);
        if let Some(i) = stage.position() {
            self.report.stages[i] = figures;
        }
        let _ = writeln!(self.log, "stage {} ok {figures}", stage.name());
        Ok(())
    }

    fn banner(&mut self) -> Res<(), P::Error> {
        let _ = write!(self.log, "pvops: backends linked: ");
        let _ = crate::registry::write_backend_names(self.log);
        let _ = writeln!(
            self.log,
            "; running on: {}; platform: {}; entry: {}",
            P::NAME,
            self.info.platform.name,
            self.info.platform.entry
        );
        for r in self.info.memory.regions() {
            let kind = r.kind.name();
            let _ = writeln!(
                self.log,
                "pvops: mem {:#011x}-{:#011x} {}",
                r.start.as_u64(),
                r.end(),
                kind
            );
        }
        let _ = writeln!(self.log, "pvops: cmdline: \"{}\"", self.info.cmdline);
        for r in self.info.reserved.iter() {
            let _ = writeln!(
                self.log,
                "mem: reserved {} pa={:#x}-{:#x}",
                r.what,
                r.start.as_u64(),
                r.end
            );
        }
        // The ranges below decide which frames are handed out and freed: check them first.
        self.info.validate()?;
        let (boot_root, bootstrap) = (self.p.read_cr3(), self.info.bootstrap_tables);
        if !bootstrap.is_empty() && !bootstrap.contains(boot_root) {
            return Err(BootInfoError::RootOutsideBootstrap {
                root: boot_root,
                bootstrap,
            }
            .into());
        }
        let free = self
            .info
            .memory
            .without(&self.info.reserved)
            .map_err(BootErrorKind::Memory)?;
        let a = &mut self.state.alloc;
        a.reset(
            &free,
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
            #[cfg(feature = "bug-early-ioremap-swapper")]
            IoremapWalk::Swapper => TableSource::KernelTable(self.report.root),
        }
    }

    fn ioremap_check(&mut self) -> Res<(), P::Error> {
        let source = self.ioremap_source();
        check_probe(self.p, &mut self.state.alloc, self.info, source, self.log)
    }

    fn early_ioremap_stage(&mut self) -> Res<(), P::Error> {
        self.ioremap_check()?;
        // Remember the L1 early_ioremap linked into the bootstrap table for its window: it
        // is retired with that table after the switch.
        let (window, boot_root) = (self.p.layout().ioremap_window, self.p.read_cr3());
        if let Ok(slot) = mapper::l1_slot(self.p, &mut self.state.alloc, boot_root, window, false) {
            let ours = self.state.alloc.is_table(slot.table())
                && !self.info.bootstrap_tables.contains(slot.table());
            self.early_window_l1 = ours.then_some(slot.table());
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
        let mapped = mem.ram_bytes_below(limit);
        let ram: u64 = mem.ram().map(|r| r.len).sum();
        let not_mapped = ram - mapped;
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

        // The direct map: RAM below the limit (boot data included), plus any part of the kernel image
        // outside it. The window's L1 is made first, then map_linear allocates every L1
        // before it maps any page (Xen: a page-table frame must never be mapped writable).
        let mut ranges = [FrameRange::EMPTY; crate::mem::MAX_REGIONS + 2];
        let mut n = 0;
        for r in mem.ram_frames_below(limit) {
            ranges[n] = r;
            n += 1;
        }
        let in_usable = |f: PhysFrame| ranges[..n].iter().any(|r| r.contains(f));
        let image = self.info.kernel_image;
        let mut extra = image
            .iter()
            .filter(|f| !in_usable(*f) && f.start().as_u64() < limit);
        if let Some(first) = extra.next() {
            let last = extra.next_back().unwrap_or(first);
            ranges[n] = FrameRange {
                start: first,
                end: PhysFrame::new(last.number() + 1),
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
        .table();
        // A backend with read-only page tables (Xen) maps the page-table frames among these
        // read-only itself: that is its invariant (`alloc_pt`), not this loop's.
        let ro = P::READ_ONLY_PAGE_TABLES;
        let done = mapper::map_linear(
            self.p,
            &mut self.state.alloc,
            root,
            layout.page_offset,
            &ranges[..n],
            KERNEL_RW,
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
        // Pinned once, here, for the kernel's whole life (Xen: read-only, then PIN_L3_TABLE);
        // every later switch to it is write_cr3 alone.
        self.p.pin_root(root).map_err(BootErrorKind::Backend)?;
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
        self.state
            .alloc
            .set_limit(PhysFrame::new(lowmem_end as u32));
        let _ = writeln!(
            self.log,
            "write_cr3: live root pfn={now} (was pfn={before})"
        );
        Ok(())
    }

    fn setup_done(&mut self) -> Res<(), P::Error> {
        // The early window's L1 hangs off the bootstrap table, which is no longer live: it is
        // retired (unlinked, flushed, released, freed) before the backend retires that table.
        if self.early_window_l1.take().is_some() {
            let window = self.p.layout().ioremap_window;
            let retired = mapper::retire_table(
                self.p,
                &mut self.state.alloc,
                self.report.bootstrap_root,
                window,
                Level::L1,
            )?;
            let _ = writeln!(
                self.log,
                "pagetable_setup_done: early_ioremap's l1 pfn {retired} in the bootstrap table retired"
            );
        }
        let released = self
            .p
            .pagetable_setup_done(self.report.root)
            .map_err(BootErrorKind::Backend)?;
        for f in released.iter() {
            self.state.alloc.donate(f)?;
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
}

/// Maps `info`'s probe through early_ioremap (walking the table `source` names), reads it
/// through the window and compares it with the direct view, then unmaps it. The boot path's
/// `early_ioremap` stage runs it on the bootstrap table; a kernel may run it again later.
pub fn check_probe<P: Platform>(
    p: &mut P,
    alloc: &mut (impl crate::frame_alloc::FrameAlloc + ?Sized),
    info: &BootInfo<'_>,
    source: TableSource,
    log: &mut dyn Write,
) -> Res<(), P::Error> {
    let Some(probe) = info.probe else {
        let _ = writeln!(log, "early_ioremap: no probe on this backend");
        return Ok(());
    };
    let pfn = probe
        .addr
        .frame()
        .ok_or(BootErrorKind::ProbeOutOfRange { addr: probe.addr })?;
    let mfn = p
        .phys_to_machine(pfn)
        .ok_or(MapError::NoMachineFrame(pfn))?;
    let ma = crate::addr::MachineAddr::new(mfn.start().as_u64() + probe.addr.frame_offset());
    let len = probe.len.min(PROBE_MAX as u64) as usize;
    let mut io = EarlyIoremap::new(p.layout().ioremap_window, source);
    let root = io.root(p);
    let m = io.map(p, alloc, ma, len as u64)?;
    let _ = writeln!(
        log,
        "early_ioremap: {} pa={} ma={} -> va={} (walked root pfn={}, live cr3 pfn={})",
        probe.what,
        probe.addr,
        ma,
        m.addr(),
        root,
        p.read_cr3()
    );
    let mut through_window = [0u8; PROBE_MAX];
    // SAFETY: the window slot was just mapped to the probe's bytes; reading them is harmless.
    unsafe { p.read_virt(m.addr(), &mut through_window[..len]) }.map_err(BootErrorKind::Fault)?;
    let direct = p.frame_ptr(pfn).ok_or(MapError::Unreachable(pfn))?;
    for (i, got) in through_window[..len].iter().enumerate() {
        // SAFETY: frame_ptr gives 4096 readable bytes; offset + len stays in the frame
        // or the next one, which the probe guarantees is mapped contiguously.
        let want =
            unsafe { core::ptr::read_volatile(direct.add(probe.addr.frame_offset() as usize + i)) };
        if want != *got {
            return Err(BootErrorKind::Mismatch {
                what: probe.what,
                offset: i,
                expected: want,
                found: *got,
            });
        }
    }
    let _ = writeln!(log, "early_ioremap: {len} bytes match through the window");
    io.unmap(p, alloc, m)?;
    Ok(())
}
