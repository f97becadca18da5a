//! The generic boot path (`pvops_core::boot::boot`) on the simulated PAE machine.
//!
//! Expected figures are computed here from the machine's configuration (RAM size, holes, the
//! QEMU-like layout), not with the core's `MemoryMap` helpers, so a wrong formula in the core
//! shows up as a mismatch.
//!
//! One file because it is one cargo test binary: its numbered sections share the fixtures
//! and expected-figure helpers at the top, and each section is a page or two.

use pvops_core::addr::{EntryIndex, MachineAddr, MachineFrame, PhysAddr, PhysFrame, VirtAddr};
use pvops_core::boot::{BootErrorKind, BootReport, Stage};
use pvops_core::ioremap::{EarlyIoremap, IoremapError, TableSource};
use pvops_core::mapper::{self, new_table, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::options::{BootOptions, IoremapWalk};
use pvops_core::paging::{EntrySlot, Level, PageTableEntry, PteFlags, KERNEL_RO, PDPT_FLAGS};
use pvops_core::{MmuOps, Platform};
use pvops_tests::sim::{
    Access, BootstrapStyle, P2m, SimConfig, SimError, SimEvent, SimMachine, IOREMAP_WINDOW,
    LOWMEM_LIMIT, MIB, MULTIBOOT_INFO_ADDR, MULTIBOOT_INFO_LEN, PAGE_OFFSET, PF_PRESENT, PF_WRITE,
    SCRATCH_AREA,
};
use pvops_tests::{assert_run, assert_run_eq, run_boot, BootRun, DEMO_STAGES};
use std::collections::BTreeSet;

/// `Present | RW | Accessed | Dirty`: what a direct-map entry must hold besides the frame.
const DIRECT_MAP_FLAGS: u64 = 0x63;
const FRAME: u64 = 4096;
const WINDOW_SPAN: u32 = 2 * 1024 * 1024;

// ----- independent expectations -----

/// A set of frame numbers (a bitmap: the expected sets hold up to half a million frames).
struct FrameSet(Vec<bool>);

impl FrameSet {
    fn contains(&self, pfn: u32) -> bool {
        self.0.get(pfn as usize).copied().unwrap_or(false)
    }
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(i, _)| i as u32)
    }
    fn len(&self) -> usize {
        self.0.iter().filter(|b| **b).count()
    }
    fn set(&mut self, range: std::ops::Range<u32>, value: bool) {
        for f in range {
            self.0[f as usize] = value;
        }
    }
}

/// Usable pseudo-physical frames of a machine, from its configuration: `[0, 0x9fc00)` and
/// `[1 MiB, RAM)` minus the holes; only whole frames.
fn usable_frames(cfg: &SimConfig) -> FrameSet {
    let ram_frames = (cfg.ram_mib as u64 * MIB / FRAME) as u32;
    let mut s = FrameSet(vec![false; ram_frames as usize]);
    s.set(0..(0x9fc00 / FRAME) as u32, true);
    s.set((MIB / FRAME) as u32..ram_frames, true);
    for &(start, len) in &cfg.holes {
        s.set(
            (start / FRAME) as u32..((start + len) / FRAME) as u32,
            false,
        );
    }
    s
}

/// Usable bytes below and above the lowmem limit, by plain arithmetic on the layout.
fn expected_lowmem(cfg: &SimConfig) -> (u64, u64) {
    let ram = cfg.ram_mib as u64 * MIB;
    let limit = LOWMEM_LIMIT;
    let clip = |s: u64, e: u64, lo: u64, hi: u64| e.min(hi).saturating_sub(s.max(lo));
    let mut below = clip(0, 0x9fc00, 0, limit) + clip(MIB, ram, 0, limit);
    let mut above = clip(MIB, ram, limit, u64::MAX);
    for &(s, l) in &cfg.holes {
        below -= clip(s, s + l, 0, limit);
        above -= clip(s, s + l, limit, u64::MAX);
    }
    (below, above)
}

/// Frames the direct map must map: usable frames below the limit and the kernel image.
fn expected_direct_map(cfg: &SimConfig) -> FrameSet {
    let limit_frames = (LOWMEM_LIMIT / FRAME) as u32;
    let mut s = usable_frames(cfg);
    if s.0.len() > limit_frames as usize {
        s.0.truncate(limit_frames as usize);
    }
    s.set(
        cfg.kernel_image.start.number()..cfg.kernel_image.end.number(),
        true,
    );
    s
}

fn direct_va(pfn: u32) -> VirtAddr {
    VirtAddr::new(PAGE_OFFSET + pfn * FRAME as u32)
}

fn p2m(sim: &SimMachine, pfn: u32) -> u32 {
    sim.config().p2m.to_machine(pfn)
}

fn stage_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.strip_prefix("stage ")
                .and_then(|r| r.split(" ok").next())
                .map(str::to_owned)
        })
        .collect()
}

fn boot_cfg(cfg: SimConfig) -> (SimMachine, BootRun) {
    let mut sim = cfg.build();
    let run = run_boot(&mut sim, BootOptions::default());
    (sim, run)
}

/// Checks, page by page, that the live table after the boot is exactly the direct map the
/// machine needs: every expected frame at `0xC0000000 + pa` with the kernel flags, through
/// the core's software walk and through the sim's TLB-less MMU walk, nothing else in the
/// direct-map range, the window's L1 present and empty, the scratch area empty.
fn check_direct_map(
    sim: &SimMachine,
    run: &BootRun,
    report: &BootReport<backend_native::counters::NoHypercalls>,
) {
    let cfg = sim.config();
    let root = report.root;
    assert_run_eq!(run, sim.read_cr3(), root, "the kernel's table is live");
    assert_run_eq!(run, sim.table_level(root), Some(Level::L3));
    let want = expected_direct_map(cfg);
    let lowmem_frames = ((cfg.ram_mib as u64 * MIB).min(LOWMEM_LIMIT) / FRAME) as u32;
    for pfn in 0..lowmem_frames.max(cfg.kernel_image.end.number()) {
        let va = direct_va(pfn);
        let sw = mapper::translate(sim, root, va);
        let hw = sim.walk(va, Access::Write);
        if want.contains(pfn) {
            let mfn = p2m(sim, pfn) as u64;
            let e =
                sw.unwrap_or_else(|e| panic!("{va} (pfn {pfn:#x}) not mapped: {e}\n{}", run.log));
            assert_run_eq!(
                run,
                e.bits(),
                (mfn << 12) | DIRECT_MAP_FLAGS,
                "entry for pfn {pfn:#x}"
            );
            let t = hw.unwrap_or_else(|pf| panic!("MMU walk of {va}: {pf}\n{}", run.log));
            assert_run!(
                run,
                t.mfn.number() as u64 == mfn
                    && t.pfn == Some(PhysFrame::new(pfn))
                    && t.writable
                    && !t.huge
                    && !t.global,
                "MMU walk of {va}: {t:?}, expected pfn {pfn:#x}"
            );
        } else {
            assert_run!(
                run,
                matches!(sw, Err(MapError::NotMapped(_))),
                "pfn {pfn:#x} must not be mapped: {sw:?}"
            );
            assert_run!(
                run,
                hw.is_err_and(|pf| pf.error & PF_PRESENT == 0),
                "MMU sees pfn {pfn:#x}: {hw:?}"
            );
        }
    }
    // Structure: the kernel root has all four PDPT entries (so none is ever added to the live
    // table); slots 0-2 link empty L2s; slot 3's L2 links the direct-map chunks and the
    // window, nothing else; all PTEs under it are exactly the expected pages.
    for i in 0..3 {
        let e = sim.entry(root, i);
        assert_run_eq!(run, e.flags(), PDPT_FLAGS, "kernel root slot {i} flags");
        let l2 = sim
            .machine_to_phys(e.frame().expect("frame below 16 TiB"))
            .expect("L2 is guest memory");
        assert_run_eq!(run, sim.table_level(l2), Some(Level::L2));
        assert_run!(
            run,
            (0..512).all(|j| !sim.entry(l2, j).is_present()),
            "kernel L2 of slot {i} must be empty"
        );
    }
    let l3 = sim.entry(root, 3);
    assert_run_eq!(run, l3.flags(), PDPT_FLAGS, "PDPT entry flags");
    let l2 = sim
        .machine_to_phys(l3.frame().expect("frame below 16 TiB"))
        .expect("L2 is guest memory");
    assert_run_eq!(run, sim.table_level(l2), Some(Level::L2));
    let chunks: BTreeSet<usize> = want.iter().map(|f| (f / 512) as usize).collect();
    let window_idx = VirtAddr::new(IOREMAP_WINDOW).l2_index().get();
    let mut present_ptes = 0usize;
    for i in 0..512 {
        let e = sim.entry(l2, i);
        let expect = chunks.contains(&i) || i == window_idx;
        assert_run_eq!(run, e.is_present(), expect, "kernel L2[{i:#x}] presence");
        if !e.is_present() {
            continue;
        }
        assert_run!(
            run,
            !e.flags().contains(PteFlags::HUGE),
            "kernel L2[{i:#x}] is a 2 MiB page"
        );
        let l1 = sim
            .machine_to_phys(e.frame().expect("frame below 16 TiB"))
            .expect("L1 is guest memory");
        assert_run_eq!(
            run,
            sim.table_level(l1),
            Some(Level::L1),
            "kernel L2[{i:#x}] links an announced L1"
        );
        let n = (0..512).filter(|j| sim.entry(l1, *j).is_present()).count();
        if i == window_idx {
            assert_run_eq!(run, n, 0, "the window's L1 is empty after early_iounmap");
        }
        present_ptes += n;
    }
    assert_run_eq!(
        run,
        present_ptes,
        want.len(),
        "present PTEs in the kernel table"
    );
    assert_run_eq!(
        run,
        report.direct_map_ptes as usize,
        want.len(),
        "report.direct_map_ptes"
    );
    assert_run_eq!(
        run,
        report.direct_map_tables as usize,
        chunks.len() + 1,
        "report.direct_map_tables"
    );
    // The scratch area is empty again (its L1 retired).
    assert_run!(
        run,
        !sim.entry(l2, VirtAddr::new(SCRATCH_AREA).l2_index().get())
            .is_present(),
        "scratch L1 still linked"
    );
    for p in 0..512u32 {
        let va = VirtAddr::new(SCRATCH_AREA + p * FRAME as u32);
        assert_run!(
            run,
            mapper::translate(sim, root, va).is_err(),
            "{va} in the scratch area is mapped"
        );
        assert_run!(
            run,
            sim.walk(va, Access::Read).is_err(),
            "MMU reaches {va} in the scratch area"
        );
    }
}

// ----- 1. the boot passes on 32..2048 MiB with the right lowmem figures -----

#[test]
fn boot_passes_on_32_128_512_2048_mib() {
    for mib in [32u32, 128, 512, 2048] {
        let cfg = SimConfig::new(mib);
        let (sim, run) = boot_cfg(cfg.clone());
        let report = run.expect_pass();
        assert_run_eq!(
            run,
            stage_lines(&run.log),
            DEMO_STAGES.to_vec(),
            "stages of the {mib} MiB boot"
        );
        assert_run!(
            run,
            run.log.contains("running on: sim"),
            "banner names the backend"
        );
        let (below, above) = expected_lowmem(&cfg);
        assert_run_eq!(run, report.lowmem_mapped, below, "{mib} MiB: lowmem mapped");
        assert_run_eq!(
            run,
            report.lowmem_not_mapped,
            above,
            "{mib} MiB: lowmem not mapped"
        );
        let line = format!(
            "lowmem: mapped {} MiB, not mapped {} MiB",
            below / MIB,
            above / MIB
        );
        assert_run!(run, run.log.contains(&line), "log has `{line}`");
        assert_run_eq!(run, report.bootstrap_root, sim.bootstrap_root());
        assert_run_eq!(run, sim.read_cr3(), report.root);
        assert_run_eq!(
            run,
            sim.cr3_history(),
            &[report.root][..],
            "exactly one cr3 load"
        );
        for s in [
            Stage::Banner,
            Stage::BuildDirectMap,
            Stage::PagetableSetupDone,
        ] {
            assert_run!(
                run,
                report.stage(s).is_some_and(|f| f.cycles > 0),
                "stage {} took no cycles",
                s.name()
            );
        }
        // Host memory stays proportional to the page tables, not to RAM.
        assert_run!(
            run,
            sim.touched_frames() < 1024,
            "{mib} MiB touched {} frames",
            sim.touched_frames()
        );
    }
}

#[test]
fn lowmem_split_on_2048_mib() {
    let (_, run) = boot_cfg(SimConfig::new(2048));
    let r = run.expect_pass();
    // 0x9fc00 bytes below 640 KiB, then 1 MiB .. 896 MiB; the 1152 MiB above are not mapped.
    assert_run_eq!(run, r.lowmem_mapped, 0x9fc00 + (896 - 1) * MIB);
    assert_run_eq!(run, r.lowmem_not_mapped, 1152 * MIB);
    assert_run!(
        run,
        run.log
            .contains("lowmem: mapped 895 MiB, not mapped 1152 MiB (limit 896 MiB")
    );
}

// ----- 2. the direct map, page by page -----

#[test]
fn direct_map_is_exact_on_128_and_2048_mib() {
    for mib in [128u32, 2048] {
        let (sim, run) = boot_cfg(SimConfig::new(mib));
        let report = run.expect_pass();
        check_direct_map(&sim, &run, &report);
    }
}

#[test]
fn direct_map_skips_reserved_holes() {
    // A 3 MiB hole in lowmem and one straddling the lowmem limit.
    let cfg = SimConfig::new(1024)
        .hole(100 * MIB, 3 * MIB)
        .hole(894 * MIB, 4 * MIB);
    let (sim, run) = boot_cfg(cfg.clone());
    let report = run.expect_pass();
    let (below, above) = expected_lowmem(&cfg);
    assert_eq!(below, 0x9fc00 + (895 - 3 - 2) * MIB);
    assert_eq!(above, (1024 - 896 - 2) * MIB);
    assert_run_eq!(
        run,
        (report.lowmem_mapped, report.lowmem_not_mapped),
        (below, above)
    );
    check_direct_map(&sim, &run, &report);
    let in_hole = direct_va((101 * MIB / FRAME) as u32);
    assert_run!(
        run,
        sim.walk(in_hole, Access::Read).is_err(),
        "the hole at 100 MiB is mapped"
    );
}

// ----- 3. early_ioremap before and after the switch -----

/// `(walked root, live cr3)` of each `early_ioremap: multiboot info` log line.
fn ioremap_roots(log: &str) -> Vec<(PhysFrame, PhysFrame)> {
    let num = |l: &str, key: &str| -> PhysFrame {
        let s = &l[l.find(key).unwrap_or_else(|| panic!("no `{key}` in `{l}`")) + key.len()..];
        let hex: String = s
            .trim_start_matches("0x")
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        PhysFrame::new(u32::from_str_radix(&hex, 16).unwrap())
    };
    log.lines()
        .filter(|l| l.starts_with("early_ioremap: multiboot info"))
        .map(|l| (num(l, "walked root pfn="), num(l, "live cr3 pfn=")))
        .collect()
}

#[test]
fn early_ioremap_walks_the_live_table_before_and_after_the_switch() {
    let (sim, run) = boot_cfg(SimConfig::new(128));
    let report = run.expect_pass();
    let boot_root = sim.bootstrap_root();
    assert_run_eq!(
        run,
        ioremap_roots(&run.log),
        vec![(boot_root, boot_root), (report.root, report.root)],
        "early_ioremap lines (walked root, live cr3)"
    );
    assert_run_eq!(
        run,
        run.log
            .matches("early_ioremap: 64 bytes match through the window")
            .count(),
        2
    );
    let ma = MachineAddr::new(p2m(&sim, 9) as u64 * FRAME);
    assert_run!(
        run,
        run.log.contains(&format!(
            "pa={MULTIBOOT_INFO_ADDR} ma={ma} -> va={IOREMAP_WINDOW:#x}"
        ))
    );

    // The sim's own record: the window's L1 links and the probe's PTEs, in order.
    let window = VirtAddr::new(IOREMAP_WINDOW);
    let cr3_seq = sim
        .events()
        .iter()
        .find_map(|e| matches!(e, SimEvent::Cr3 { .. }).then(|| e.seq()))
        .unwrap();
    let links: Vec<_> = sim
        .writes()
        .iter()
        .filter(|w| {
            w.level == Level::L2
                && w.slot.index().get() == window.l2_index().get()
                && w.value.is_present()
        })
        .collect();
    assert_run_eq!(
        run,
        links.len(),
        2,
        "the window's L1 is linked twice: bootstrap PD, kernel L2"
    );
    assert_run_eq!(
        run,
        links[0].slot.table(),
        sim.bootstrap_pd(),
        "first window L1 goes into the bootstrap PD"
    );
    assert!(links[0].seq < cr3_seq && links[1].seq < cr3_seq);
    let kernel_l2 = sim
        .machine_to_phys(
            sim.entry(report.root, 3)
                .frame()
                .expect("frame below 16 TiB"),
        )
        .unwrap();
    assert_run_eq!(
        run,
        links[1].slot.table(),
        kernel_l2,
        "second window L1 goes into the kernel's L2"
    );
    let probe_ptes: Vec<_> = sim
        .writes()
        .iter()
        .filter(|w| {
            w.level == Level::L1
                && w.value.is_present()
                && w.value.frame().map_or(u32::MAX, MachineFrame::number) == p2m(&sim, 9)
        })
        .filter(|w| w.slot.index().get() == window.l1_index().get())
        .collect();
    assert_run_eq!(
        run,
        probe_ptes.len(),
        2,
        "two early_ioremap PTEs for the probe"
    );
    let l1_of = |l: &pvops_tests::PtWrite| {
        sim.machine_to_phys(l.value.frame().expect("frame below 16 TiB"))
            .unwrap()
    };
    assert_run_eq!(run, probe_ptes[0].slot.table(), l1_of(links[0]));
    assert_run!(
        run,
        probe_ptes[0].seq < cr3_seq && probe_ptes[1].seq > cr3_seq
    );
    assert_run_eq!(run, probe_ptes[1].slot.table(), l1_of(links[1]));
    // Each mapping was flushed after being set.
    let flushed: Vec<u64> = sim
        .events()
        .iter()
        .filter_map(|e| match e {
            SimEvent::FlushSingle { seq, va } if *va == window => Some(*seq),
            _ => None,
        })
        .collect();
    for w in &probe_ptes {
        assert_run!(
            run,
            flushed.iter().any(|s| *s > w.seq),
            "window PTE #{} never flushed",
            w.seq
        );
    }
}

// ----- 4. the bootstrap frames come back -----

#[test]
fn bootstrap_frames_are_retired_and_reused() {
    for style in [BootstrapStyle::Huge2M, BootstrapStyle::Small4K] {
        let (sim, run) = boot_cfg(SimConfig::new(64).bootstrap(style));
        let report = run.expect_pass();
        let frames = sim.bootstrap_frames();
        let expect_len = if style == BootstrapStyle::Huge2M {
            2
        } else {
            34
        };
        assert_run_eq!(run, frames.len(), expect_len);
        assert_run_eq!(run, report.reused, frames, "report.reused");
        assert_run_eq!(run, sim.retired(), Some(frames));
        assert_run!(
            run,
            frames.iter().all(|f| sim.table_level(f).is_none()),
            "retired frames are tables again"
        );
        let done = sim
            .events()
            .iter()
            .filter(|e| matches!(e, SimEvent::SetupDone { .. }))
            .count();
        assert_run_eq!(run, done, 1);
        // Each frame was seen holding exactly the boot path's pattern.
        for f in frames.iter() {
            let pattern: Vec<u8> = (0..FRAME as usize)
                .map(|i| (f.number() as usize * 31 + i * 7) as u8)
                .collect();
            let versions = sim.retired_versions(f);
            assert_run!(
                run,
                versions.len() >= 2,
                "pfn {f} seen in {} versions",
                versions.len()
            );
            assert_run!(
                run,
                versions.contains(&pattern),
                "pfn {f} never held the reuse pattern"
            );
            assert_run!(
                run,
                versions[0] != pattern,
                "pfn {f} held the pattern before retirement"
            );
        }
        let line = format!(
            "exercise: reused bootstrap frames: {}",
            frames
                .iter()
                .rev()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_run!(run, run.log.contains(&line), "log has `{line}`");
    }
}

// ----- 5. the 2008 bug and early_ioremap's use of read_cr3 -----

#[test]
fn early_ioremap_on_swapper_faults_in_the_window() {
    let mut sim = SimConfig::new(128).build();
    let opts = BootOptions {
        early_ioremap: IoremapWalk::Swapper,
    };
    let run = run_boot(&mut sim, opts);
    let err = run.expect_fail();
    assert_run_eq!(run, err.stage, Stage::EarlyIoremap);
    let BootErrorKind::Fault(pf) = err.kind else {
        panic!("expected a fault, got {err}\n{}", run.log)
    };
    assert_run!(
        run,
        (IOREMAP_WINDOW..IOREMAP_WINDOW + WINDOW_SPAN).contains(&pf.addr.as_u32()),
        "fault at {} is outside the window",
        pf.addr
    );
    assert_run_eq!(
        run,
        pf.error & (PF_PRESENT | PF_WRITE),
        0,
        "a read of a not-present page"
    );
    assert_run_eq!(run, stage_lines(&run.log), vec!["banner".to_owned()]);
    // The mapping went into the kernel's table, which the CPU does not use yet.
    assert_run!(run, sim.cr3_history().is_empty());
    let kernel_root = sim
        .events()
        .iter()
        .find_map(|e| match *e {
            SimEvent::AllocPt {
                frame,
                level: Level::L3,
                ..
            } => Some(frame),
            _ => None,
        })
        .expect("the banner announced the kernel root");
    assert_run!(
        run,
        mapper::translate(&sim, kernel_root, pf.addr).is_ok(),
        "mapping not in swapper"
    );
    assert_run!(
        run,
        mapper::translate(&sim, sim.bootstrap_root(), pf.addr).is_err()
    );
}

/// Builds table B: a new PDPT and page directory with the bootstrap PD's 2 MiB entries
/// (so it maps the same memory), linked at slots 0 and 3.
fn clone_bootstrap(sim: &mut SimMachine, alloc: &mut FrameAllocator) -> PhysFrame {
    let (b, _) = new_table(sim, alloc, Level::L3).unwrap();
    let (pd, link) = new_table(sim, alloc, Level::L2).unwrap();
    let src = sim.bootstrap_pd();
    for i in 0..512 {
        let e = sim.entry(src, i);
        if e.is_present() {
            // SAFETY: B is not live.
            unsafe {
                sim.set_pmd(
                    EntrySlot::new(pd, EntryIndex::new(i).expect("entry index < 512")),
                    e,
                )
            }
            .unwrap();
        }
    }
    for i in [0u16, 3] {
        // SAFETY: B is not live.
        unsafe {
            sim.set_pud(
                EntrySlot::new(b, EntryIndex::new(i as usize).expect("entry index < 512")),
                link,
            )
        }
        .unwrap();
    }
    b
}

#[test]
fn early_ioremap_follows_cr3_to_another_table() {
    let mut sim = SimConfig::new(64).build();
    let mut alloc = Box::new(FrameAllocator::new(
        sim.memory_map(),
        sim.first_free(),
        sim.bootstrap_reach(),
        pvops_core::addr::FrameRange::EMPTY,
    ));
    let a = sim.bootstrap_root();
    let window = VirtAddr::new(IOREMAP_WINDOW);
    let probe = MachineAddr::new(p2m(&sim, 9) as u64 * FRAME);
    let mbi = sim.multiboot_info_bytes();
    // Created while A is live: a LiveCr3 window must not remember A.
    let mut io = EarlyIoremap::new(window, TableSource::LiveCr3);
    let b = clone_bootstrap(&mut sim, &mut alloc);
    // SAFETY: B maps everything A maps.
    unsafe { sim.write_cr3(b) }.unwrap();
    assert_eq!(io.root(&sim), b);
    let m = io
        .map(&mut sim, &mut *alloc, probe, MULTIBOOT_INFO_LEN as u64)
        .unwrap();
    assert_eq!(m.addr(), window);
    let in_b =
        mapper::translate(&sim, b, window).expect("the mapping lands in the table cr3 names");
    assert_eq!(in_b.frame(), probe.frame());
    assert!(
        matches!(
            mapper::translate(&sim, a, window),
            Err(MapError::NotMapped(_))
        ),
        "nothing lands in A"
    );
    let mut buf = [0u8; MULTIBOOT_INFO_LEN];
    // SAFETY: the window maps the probe.
    unsafe { sim.read_virt(m.addr(), &mut buf) }.unwrap();
    assert_eq!(buf, mbi);
    io.unmap(&mut sim, &mut *alloc, m).unwrap();
    // SAFETY: unmapped and flushed: reading must fault.
    let pf = unsafe { sim.read_virt(window, &mut buf) }.unwrap_err();
    assert_eq!(pf.addr, window);

    // The 2.6.25-rc1 behaviour: a window fixed on A, which is not live, maps nothing visible.
    let mut stale = EarlyIoremap::new(window, TableSource::KernelTable(a));
    let m = stale
        .map(&mut sim, &mut *alloc, probe, MULTIBOOT_INFO_LEN as u64)
        .unwrap();
    assert!(mapper::translate(&sim, a, window).is_ok());
    // SAFETY: the CPU walks B, where the window is empty.
    let pf = unsafe { sim.read_virt(m.addr(), &mut buf) }.unwrap_err();
    assert_eq!((pf.addr, pf.error & PF_PRESENT), (window, 0));

    stale.unmap(&mut sim, &mut *alloc, m).unwrap();

    // Back on A, the same LiveCr3 window follows again.
    // SAFETY: A is the bootstrap table.
    unsafe { sim.write_cr3(a) }.unwrap();
    assert_eq!(io.root(&sim), a);
    let m = io
        .map(
            &mut sim,
            &mut *alloc,
            MachineAddr::new(probe.as_u64() + 0x100),
            16,
        )
        .unwrap();
    assert_eq!(m.addr(), VirtAddr::new(IOREMAP_WINDOW + 0x100));
    assert!(mapper::translate(&sim, a, window).is_ok());
    assert!(matches!(
        mapper::translate(&sim, b, window),
        Err(MapError::NotMapped(_))
    ));
    // SAFETY: mapped in A's window.
    unsafe { sim.read_virt(m.addr(), &mut buf[..16]) }.unwrap();
    let mut want = [0u8; 16];
    sim.read_phys(
        PhysAddr::new(MULTIBOOT_INFO_ADDR.as_u64() + 0x100),
        &mut want,
    );
    assert_eq!(buf[..16], want);
    io.unmap(&mut sim, &mut *alloc, m).unwrap();
}

// ----- 6. PDPT entries are latched by cr3 loads -----

#[test]
fn pdpt_changes_need_a_cr3_reload() {
    let mut sim = SimConfig::new(64).build();
    let root = sim.bootstrap_root();
    let pd = sim.bootstrap_pd();
    let mbi = sim.multiboot_info_bytes();
    let mut buf = [0u8; MULTIBOOT_INFO_LEN];
    // Slot 1 (0x40000000..) is empty in the bootstrap table.
    let va1 = VirtAddr::new(0x4000_0000 + MULTIBOOT_INFO_ADDR.as_u64() as u32);
    // SAFETY: reads only.
    assert!(unsafe { sim.read_virt(va1, &mut buf) }.is_err());
    let link = PageTableEntry::new(sim.phys_to_machine(pd).unwrap(), PDPT_FLAGS);
    // SAFETY: adds a mapping nothing uses.
    unsafe { sim.set_pud(EntrySlot::new(root, EntryIndex::new_const(1)), link) }.unwrap();
    sim.flush_tlb_all().unwrap();
    // Memory says mapped, the CPU does not: its PDPTE 1 was latched empty.
    assert!(mapper::translate(&sim, root, va1).is_ok());
    assert!(sim.walk_root(root, va1, Access::Read).is_ok());
    assert!(!sim.latched_pdptes()[1].is_present());
    // SAFETY: reads only.
    let pf = unsafe { sim.read_virt(va1, &mut buf) }.unwrap_err();
    assert_eq!((pf.addr, pf.error), (va1, 0));
    // SAFETY: the same root again.
    unsafe { sim.write_cr3(root) }.unwrap();
    // SAFETY: reads only.
    unsafe { sim.read_virt(va1, &mut buf) }.unwrap();
    assert_eq!(buf, mbi);

    // The other way: clearing slot 3 is not seen until the next load.
    let va3 = VirtAddr::new(PAGE_OFFSET + MULTIBOOT_INFO_ADDR.as_u64() as u32);
    // SAFETY: the test runs on the host; the sim's kernel keeps running from slot 3 only
    // in the sense of this test.
    unsafe {
        sim.set_pud(
            EntrySlot::new(root, EntryIndex::new_const(3)),
            PageTableEntry::EMPTY,
        )
    }
    .unwrap();
    sim.flush_tlb_all().unwrap();
    // SAFETY: reads only.
    unsafe { sim.read_virt(va3, &mut buf) }.unwrap();
    assert_eq!(buf, mbi);
    // SAFETY: as above.
    unsafe { sim.write_cr3(root) }.unwrap();
    // SAFETY: reads only.
    assert!(unsafe { sim.read_virt(va3, &mut buf) }.is_err());
}

#[test]
fn cr3_load_with_reserved_pdpte_bits_is_refused() {
    let mut sim = SimConfig::new(32).build();
    let root = sim.bootstrap_root();
    let pd = sim.bootstrap_pd();
    // RW in a PDPTE is reserved on bare hardware (#GP on the cr3 load).
    let bad = PageTableEntry::new(
        sim.phys_to_machine(pd).unwrap(),
        PteFlags::PRESENT | PteFlags::WRITABLE,
    );
    // SAFETY: the slot is unused.
    unsafe { sim.set_pud(EntrySlot::new(root, EntryIndex::new_const(2)), bad) }.unwrap();
    let before = sim.latched_pdptes();
    // SAFETY: refused.
    let err = unsafe { sim.write_cr3(root) }.unwrap_err();
    assert_eq!(
        err,
        SimError::PdpteReserved {
            index: 2,
            bits: bad.bits()
        }
    );
    assert_eq!(sim.latched_pdptes(), before);
    assert_eq!(sim.read_cr3(), root);
}

// ----- the TLB -----

#[test]
fn tlb_keeps_stale_translations_until_flushed() {
    let (mut sim, mut run) = boot_cfg(SimConfig::new(64));
    let report = run.expect_pass();
    let root = report.root;
    let (fa, fb) = (
        run.state.alloc.alloc().unwrap(),
        run.state.alloc.alloc().unwrap(),
    );
    sim.write_phys(fa.start(), b"frame A!");
    sim.write_phys(fb.start(), b"frame B!");
    let va = VirtAddr::new(SCRATCH_AREA + 7 * FRAME as u32);
    let (ma, mb) = (
        sim.phys_to_machine(fa).unwrap(),
        sim.phys_to_machine(fb).unwrap(),
    );
    let mut buf = [0u8; 8];
    // SAFETY: the scratch area is unused after the boot.
    let flush = unsafe {
        mapper::map_page(
            &mut sim,
            &mut run.state.alloc,
            root,
            va,
            ma,
            pvops_core::paging::KERNEL_RW,
        )
    }
    .unwrap();
    flush.flush(&mut sim).unwrap();
    // SAFETY: mapped.
    unsafe { sim.read_virt(va, &mut buf) }.unwrap();
    assert_eq!(&buf, b"frame A!");
    assert!(sim.tlb_has(va));
    // Remap to B without a flush: the CPU still uses A. (A present entry is replaced with
    // set_pte_atomic; set_pte would be refused.)
    let slot = mapper::l1_slot(&mut sim, &mut run.state.alloc, root, va, false).unwrap();
    // SAFETY: as above.
    unsafe { sim.set_pte_atomic(slot, PageTableEntry::new(mb, pvops_core::paging::KERNEL_RW)) }
        .unwrap();
    assert_eq!(sim.walk(va, Access::Read).unwrap().mfn, mb);
    // SAFETY: as above.
    unsafe { sim.read_virt(va, &mut buf) }.unwrap();
    assert_eq!(&buf, b"frame A!", "stale TLB entry must still be used");
    sim.flush_tlb_single(va).unwrap();
    // SAFETY: as above.
    unsafe { sim.read_virt(va, &mut buf) }.unwrap();
    assert_eq!(&buf, b"frame B!");
    // A read-only remap without a flush: the cached RW translation still allows a write
    // (as on hardware) ...
    // SAFETY: as above.
    unsafe { sim.set_pte_atomic(slot, PageTableEntry::new(mb, KERNEL_RO)) }.unwrap();
    // SAFETY: as above.
    unsafe { sim.write_virt(va, b"stale RW") }.unwrap();
    sim.flush_tlb_single(va).unwrap();
    // ... and after the flush the write faults with present|write; reads still work.
    // SAFETY: as above.
    let pf = unsafe { sim.write_virt(va, b"refused!") }.unwrap_err();
    assert_eq!((pf.addr, pf.error), (va, PF_PRESENT | PF_WRITE));
    // SAFETY: as above.
    unsafe { sim.read_virt(va, &mut buf) }.unwrap();
    assert_eq!(&buf, b"stale RW");
    // Unmap without a flush: still readable; a cr3 reload drops it.
    // SAFETY: as above.
    unsafe { sim.pte_clear(slot) }.unwrap();
    // SAFETY: as above.
    unsafe { sim.read_virt(va, &mut buf) }.unwrap();
    assert_eq!(&buf, b"stale RW");
    // SAFETY: reloads the live root.
    unsafe { sim.write_cr3(root) }.unwrap();
    assert!(!sim.tlb_has(va));
    // SAFETY: as above.
    let pf = unsafe { sim.read_virt(va, &mut buf) }.unwrap_err();
    assert_eq!((pf.addr, pf.error), (va, 0));
}

#[test]
fn virtual_accesses_cross_pages_and_report_the_faulting_page() {
    let (mut sim, mut run) = boot_cfg(SimConfig::new(32));
    let root = run.expect_pass().root;
    let (fa, fb) = (
        run.state.alloc.alloc().unwrap(),
        run.state.alloc.alloc().unwrap(),
    );
    let va = VirtAddr::new(SCRATCH_AREA + 16 * FRAME as u32);
    for (i, f) in [fa, fb].into_iter().enumerate() {
        let m = sim.phys_to_machine(f).unwrap();
        let v = VirtAddr::new(va.as_u32() + i as u32 * FRAME as u32);
        // SAFETY: the scratch area is unused after the boot.
        let t = unsafe {
            mapper::map_page(
                &mut sim,
                &mut run.state.alloc,
                root,
                v,
                m,
                pvops_core::paging::KERNEL_RW,
            )
        };
        t.unwrap().flush(&mut sim).unwrap();
    }
    let data: Vec<u8> = (0..32u8).collect();
    let at = VirtAddr::new(va.as_u32() + FRAME as u32 - 16);
    // SAFETY: both pages are ours.
    unsafe { sim.write_virt(at, &data) }.unwrap();
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    sim.read_phys(PhysAddr::new(fa.start().as_u64() + FRAME - 16), &mut a);
    sim.read_phys(fb.start(), &mut b);
    assert_eq!((&a[..], &b[..]), (&data[..16], &data[16..]));
    // Into the third (unmapped) page: the fault names that page, the first bytes were read.
    let mut buf = [0u8; 32];
    let at = VirtAddr::new(va.as_u32() + 2 * FRAME as u32 - 16);
    // SAFETY: reads only.
    let pf = unsafe { sim.read_virt(at, &mut buf) }.unwrap_err();
    assert_eq!(
        (pf.addr, pf.error),
        (VirtAddr::new(va.as_u32() + 2 * FRAME as u32), 0)
    );
    // SAFETY: writes into a not-present page.
    let pf =
        unsafe { sim.write_virt(VirtAddr::new(va.as_u32() + 2 * FRAME as u32), &[1]) }.unwrap_err();
    assert_eq!(pf.error, PF_WRITE);
}

#[test]
fn bootstrap_table_uses_2mib_pages_at_both_addresses() {
    let sim = SimConfig::new(128).build();
    for va in [
        0x0020_0123u32,
        PAGE_OFFSET + 0x0020_0123,
        PAGE_OFFSET + 0x03ff_f000,
    ] {
        let t = sim.walk(VirtAddr::new(va), Access::Write).unwrap();
        assert!(t.huge && t.writable);
        assert_eq!(t.mfn.number(), (va & 0x3fff_ffff) >> 12);
        // The native stub's bits: Present | RW | PS.
        assert_eq!(t.leaf.bits() & 0xfff, 0x83);
    }
    for va in [
        PAGE_OFFSET + 64 * MIB as u32,
        IOREMAP_WINDOW,
        SCRATCH_AREA,
        0x4000_0000,
    ] {
        assert!(
            sim.walk(VirtAddr::new(va), Access::Read).is_err(),
            "{va:#x} mapped by the bootstrap table"
        );
    }
}

#[test]
fn frame_ptr_reaches_only_what_the_live_table_maps() {
    let mut sim = SimConfig::new(2048).build();
    let last_boot = PhysFrame::new((64 * MIB / FRAME) as u32 - 1);
    assert!(sim.frame_ptr(last_boot).is_some());
    assert!(
        sim.frame_ptr(PhysFrame::new(last_boot.number() + 1))
            .is_none(),
        "beyond the bootstrap mapping"
    );
    assert!(
        sim.frame_ptr(PhysFrame::new(0xa0)).is_some(),
        "the bootstrap table maps the BIOS hole"
    );
    let run = run_boot(&mut sim, BootOptions::default());
    run.expect_pass();
    let limit = (LOWMEM_LIMIT / FRAME) as u32;
    assert!(sim
        .frame_ptr(PhysFrame::new(last_boot.number() + 1))
        .is_some());
    assert!(sim.frame_ptr(PhysFrame::new(limit - 1)).is_some());
    assert!(
        sim.frame_ptr(PhysFrame::new(limit)).is_none(),
        "highmem is not mapped"
    );
    assert!(
        sim.frame_ptr(PhysFrame::new(0xa0)).is_none(),
        "the BIOS hole is not in the direct map"
    );
    assert!(
        sim.frame_ptr(PhysFrame::new(sim.ram_frames())).is_none(),
        "outside RAM"
    );
}

// ----- 7. scrambled p2m -----

#[test]
fn scrambled_p2m_boots_and_entries_hold_machine_frames() {
    let machines = [
        SimConfig::new(128)
            .p2m(P2m::Xor(0x5a5))
            .bootstrap(BootstrapStyle::Small4K),
        SimConfig::new(512)
            .p2m(P2m::Xor(0x5a5))
            .bootstrap(BootstrapStyle::Small4K),
        // mfn = pfn + 256 Ki: a pseudo-physical frame written by mistake names no guest frame.
        SimConfig::new(128).p2m(P2m::Offset(0x40000)),
        SimConfig::new(96)
            .p2m(P2m::Offset(0x40000))
            .bootstrap(BootstrapStyle::Small4K),
    ];
    for cfg in machines {
        let (sim, run) = boot_cfg(cfg.clone());
        let report = run.expect_pass();
        let what = format!("{:?}/{:?}", cfg.p2m, cfg.bootstrap);
        check_direct_map(&sim, &run, &report);
        for pfn in [0u32, 9, 0x100, 0x5a5, 0x1000] {
            let e = mapper::translate(&sim, report.root, direct_va(pfn)).unwrap();
            assert_run_eq!(
                run,
                e.bits(),
                ((cfg.p2m.to_machine(pfn) as u64) << 12) | DIRECT_MAP_FLAGS,
                "{what}: pfn {pfn:#x}"
            );
            assert_run!(
                run,
                e.frame().map_or(u32::MAX, MachineFrame::number) != pfn,
                "{what}: pfn {pfn:#x} written as its own mfn"
            );
        }
        // Every entry written names guest machine memory; links name announced tables.
        let announced: Vec<(PhysFrame, Level)> = sim
            .events()
            .iter()
            .filter_map(|e| match *e {
                SimEvent::AllocPt { frame, level, .. } => Some((frame, level)),
                _ => None,
            })
            .collect();
        for w in sim.writes().iter().filter(|w| w.value.is_present()) {
            let pfn = sim.machine_to_phys(w.value.frame().expect("frame below 16 TiB"));
            assert_run!(run, pfn.is_some(), "{what}: {w:?} names no guest frame");
            let next = match w.level {
                Level::L1 => continue,
                Level::L2 => Level::L1,
                Level::L3 => Level::L2,
            };
            assert_run!(
                run,
                announced.contains(&(pfn.unwrap(), next)),
                "{what}: {w:?} links pfn {} which was not announced as {}",
                pfn.unwrap(),
                next.name()
            );
        }
        let l2 = sim
            .machine_to_phys(
                sim.entry(report.root, 3)
                    .frame()
                    .expect("frame below 16 TiB"),
            )
            .unwrap();
        assert_run_eq!(
            run,
            sim.entry(report.root, 3).bits(),
            ((cfg.p2m.to_machine(l2.number()) as u64) << 12) | 1
        );
        let ma = MachineAddr::new(cfg.p2m.to_machine(9) as u64 * FRAME);
        assert_run!(
            run,
            run.log.contains(&format!("pa=0x9000 ma={ma} ")),
            "{what}: probe machine address"
        );
    }
}

// ----- 8. fault injection -----

/// The injected error inside a boot error, if the kind is one a backend failure may take.
fn injected(kind: &BootErrorKind<SimError>) -> Option<SimError> {
    match kind {
        BootErrorKind::Backend(e)
        | BootErrorKind::Map(MapError::Backend(e))
        | BootErrorKind::Ioremap(IoremapError::Map(MapError::Backend(e))) => Some(*e),
        _ => None,
    }
}

#[test]
fn failing_any_page_table_operation_fails_the_boot_cleanly() {
    let (clean, run) = boot_cfg(SimConfig::new(32));
    run.expect_pass();
    let total = clean.pt_ops();
    assert!(total > 8000, "{total} page-table operations");
    let mut ks: Vec<u64> = (1..=60).collect();
    ks.extend((60..total - 80).step_by(1013));
    ks.extend(total - 80..=total);
    // Boot-path stages in order, then the kernel's (the exercise).
    let order = |s: Stage| s.position().unwrap_or(usize::MAX);
    let mut last_stage = order(Stage::Banner);
    let mut stages_seen = BTreeSet::new();
    for k in ks {
        let mut sim = SimConfig::new(32).build();
        sim.fail_at(Some(k));
        let run = run_boot(&mut sim, BootOptions::default());
        let err = run.expect_fail();
        let e = injected(&err.kind)
            .unwrap_or_else(|| panic!("op #{k}: unexpected error kind: {err}\n{}", run.log));
        assert_run!(
            run,
            matches!(e, SimError::Injected { n, .. } if n == k),
            "op #{k}: {e}"
        );
        assert_run!(
            run,
            order(err.stage) >= last_stage,
            "op #{k} fails in {} after a later stage",
            err.stage.name()
        );
        last_stage = order(err.stage);
        stages_seen.insert(err.stage.name());
        let done = stage_lines(&run.log);
        let expect: Vec<String> = DEMO_STAGES
            .iter()
            .take_while(|s| **s != err.stage.name())
            .map(|s| s.to_string())
            .collect();
        assert_run_eq!(run, done, expect, "op #{k}: stages before the failing one");
        if matches!(err.kind, BootErrorKind::Ioremap(_)) {
            // A half-made early_ioremap mapping is cleared again (issue 10; tested on its
            // own in address_spaces.rs): those clears may follow the failing op.
            assert_run!(
                run,
                sim.pt_ops() >= k,
                "op #{k}: ops before the failing one"
            );
        } else {
            assert_run_eq!(
                run,
                sim.pt_ops(),
                k,
                "op #{k}: the boot stops at the failing op"
            );
        }
        let msg = err.to_string();
        assert_run!(
            run,
            msg.starts_with(&format!("stage={}: ", err.stage.name()))
                && msg.contains(&format!("sim: injected failure of page-table op #{k} (")),
            "op #{k}: message `{msg}`"
        );
    }
    for s in DEMO_STAGES {
        assert!(
            stages_seen.contains(s),
            "no injected failure landed in stage {s}: {stages_seen:?}"
        );
    }
    // One past the last operation: nothing fails.
    let mut sim = SimConfig::new(32).build();
    sim.fail_at(Some(total + 1));
    run_boot(&mut sim, BootOptions::default()).expect_pass();
    assert_eq!(sim.pt_ops(), total, "boots are deterministic");
}

// ----- the sim refuses what real hardware or a hypervisor would -----

#[test]
fn sim_refuses_page_table_misuse() {
    let mut sim = SimConfig::new(32).build();
    let mut alloc = Box::new(FrameAllocator::new(
        sim.memory_map(),
        sim.first_free(),
        sim.bootstrap_reach(),
        pvops_core::addr::FrameRange::EMPTY,
    ));
    let plain = alloc.alloc().unwrap();
    let e = PageTableEntry::new(MachineFrame::new(0x300), pvops_core::paging::KERNEL_RW);
    // SAFETY: refused before any store.
    let err =
        unsafe { sim.set_pte(EntrySlot::new(plain, EntryIndex::new_const(0)), e) }.unwrap_err();
    assert_eq!(
        err,
        SimError::NotATable {
            op: "set_pte",
            table: plain,
            want: Level::L1,
            is: None
        }
    );
    let pd = sim.bootstrap_pd();
    let link = PageTableEntry::new(
        sim.phys_to_machine(plain).unwrap(),
        pvops_core::paging::TABLE_FLAGS,
    );
    // SAFETY: refused: `plain` was never announced.
    let err =
        unsafe { sim.set_pmd(EntrySlot::new(pd, EntryIndex::new_const(100)), link) }.unwrap_err();
    assert!(
        matches!(err, SimError::BadLink { op: "set_pmd", .. }),
        "{err}"
    );
    // SAFETY: refused: a PDPT has 4 entries.
    let err = unsafe {
        sim.set_pud(
            EntrySlot::new(sim.bootstrap_root(), EntryIndex::new_const(4)),
            PageTableEntry::EMPTY,
        )
    };
    assert!(matches!(err, Err(SimError::BadIndex { .. })));
    sim.write_phys(plain.start(), &[1]);
    assert_eq!(
        sim.alloc_pt(plain, Level::L1),
        Err(SimError::NotZeroed(plain))
    );
    sim.write_phys(plain.start(), &[0]);
    sim.alloc_pt(plain, Level::L1).unwrap();
    assert_eq!(
        sim.alloc_pt(plain, Level::L1),
        Err(SimError::AlreadyTable {
            frame: plain,
            level: Level::L1
        })
    );
    // SAFETY: links the announced L1 into a slot the bootstrap leaves empty.
    unsafe { sim.set_pmd(EntrySlot::new(pd, EntryIndex::new_const(100)), link) }.unwrap();
    assert_eq!(
        sim.release_pt(plain, Level::L1),
        Err(SimError::StillLinked {
            frame: plain,
            from: pd,
            index: 100
        })
    );
    // SAFETY: unlinks it again.
    unsafe {
        sim.set_pmd(
            EntrySlot::new(pd, EntryIndex::new_const(100)),
            PageTableEntry::EMPTY,
        )
    }
    .unwrap();
    sim.release_pt(plain, Level::L1).unwrap();
    assert_eq!(sim.table_level(plain), None);
    let (k, _) = new_table(&mut sim, &mut *alloc, Level::L3).unwrap();
    assert!(matches!(
        sim.pagetable_setup_done(k),
        Err(SimError::NotLive { .. })
    ));
    assert_eq!(sim.retired(), None);
    // Every refused and accepted operation was counted; the writes log holds accepted ones.
    assert_eq!(sim.write_counts().pmd, 2);
    assert_eq!(sim.writes().len(), 2);
}

// ----- random machines -----

fn machine_strategy() -> impl proptest::strategy::Strategy<Value = SimConfig> {
    use proptest::prelude::*;
    (
        16u32..=1100,
        proptest::option::of((2u64..1100, 1u64..=8)),
        0u8..3,
    )
        .prop_map(|(mib, hole, p2m)| {
            let mut cfg = SimConfig::new(mib);
            if let Some((start, len)) = hole {
                let start = start.min(mib as u64 - 1);
                let len = len.min(mib as u64 - start);
                if len > 0 {
                    cfg = cfg.hole(start * MIB, len * MIB);
                }
            }
            match p2m {
                0 => cfg,
                1 => cfg.p2m(P2m::Offset(0x40000)),
                _ => cfg.p2m(P2m::Xor(0x5a5)).bootstrap(BootstrapStyle::Small4K),
            }
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn random_machines_boot_with_the_expected_direct_map(cfg in machine_strategy()) {
        let (sim, run) = boot_cfg(cfg.clone());
        let report = run.expect_pass();
        let (below, above) = expected_lowmem(&cfg);
        assert_run_eq!(run, (report.lowmem_mapped, report.lowmem_not_mapped), (below, above), "{cfg:?}");
        let want = expected_direct_map(&cfg);
        assert_run_eq!(run, report.direct_map_ptes as usize, want.len(), "{cfg:?}");
        let limit = ((cfg.ram_mib as u64 * MIB).min(LOWMEM_LIMIT) / FRAME) as u32;
        let holes = cfg.holes.iter().flat_map(|&(s, l)| {
            let (a, b) = ((s / FRAME) as u32, ((s + l) / FRAME) as u32);
            [a.saturating_sub(1), a, b.saturating_sub(1), b]
        });
        for pfn in (0..limit).step_by(61).chain(holes).chain([0x9e, 0x9f, 0xff, 0x100, limit.saturating_sub(1)]) {
            if pfn >= limit {
                continue;
            }
            let t = sim.walk(direct_va(pfn), Access::Write);
            let ok = t.is_ok_and(|t| t.pfn == Some(PhysFrame::new(pfn)) && t.writable);
            assert_run_eq!(run, ok, want.contains(pfn), "{cfg:?}: pfn {pfn:#x}: {t:?}");
        }
    }
}

/// Issue 11: `boot()` trusted the `table_pool`, `bootstrap_tables` and `kernel_image` of a
/// caller-built `BootInfo`: a pool over the live bootstrap table or over free RAM, or a
/// "bootstrap table" of free or non-RAM frames, booted without complaint (and later freed or
/// handed out frames still in use). Each is now a typed error before anything is allocated.
#[test]
fn boot_refuses_inconsistent_boot_info() {
    use pvops_core::addr::FrameRange;
    use pvops_core::boot::{BootInfo, BootInfoError, BootRange, BootState};
    let range = |a: u32, b: u32| FrameRange {
        start: PhysFrame::new(a),
        end: PhysFrame::new(b),
    };
    let good = SimConfig::new(32).build().boot_info();
    let (image, bt, ff) = (good.kernel_image, good.bootstrap_tables, good.first_free);
    let free = range(ff.number(), ff.number() + 8);
    let code = range(image.start.number(), image.start.number() + 2);
    let hole = range(0xa0, 0xa2);
    type Change = Box<dyn Fn(&mut BootInfo<'static>)>;
    let cases: Vec<(&str, Change, BootInfoError)> = vec![
        (
            "pool over the live bootstrap table",
            Box::new(move |i| i.table_pool = bt),
            BootInfoError::PoolOverlapsBootstrap {
                pool: bt,
                bootstrap: bt,
            },
        ),
        (
            "pool over free RAM",
            Box::new(move |i| i.table_pool = free),
            BootInfoError::AtOrAboveFirstFree {
                which: BootRange::TablePool,
                range: free,
                first_free: ff,
            },
        ),
        (
            "pool outside the image",
            Box::new(move |i| i.table_pool = range(0x10, 0x12)),
            BootInfoError::PoolOutsideImage {
                pool: range(0x10, 0x12),
                image,
            },
        ),
        (
            "bootstrap table on free RAM",
            Box::new(move |i| i.bootstrap_tables = free),
            BootInfoError::AtOrAboveFirstFree {
                which: BootRange::BootstrapTables,
                range: free,
                first_free: ff,
            },
        ),
        (
            "bootstrap table outside RAM",
            Box::new(move |i| i.bootstrap_tables = hole),
            BootInfoError::NotRam {
                which: BootRange::BootstrapTables,
                range: hole,
            },
        ),
        (
            "bootstrap table that is not the live one",
            Box::new(move |i| i.bootstrap_tables = code),
            BootInfoError::RootOutsideBootstrap {
                root: bt.start,
                bootstrap: code,
            },
        ),
        (
            "image reaching past first_free",
            Box::new(move |i| i.kernel_image.end = PhysFrame::new(ff.number() + 1)),
            BootInfoError::AtOrAboveFirstFree {
                which: BootRange::KernelImage,
                range: range(image.start.number(), ff.number() + 1),
                first_free: ff,
            },
        ),
        (
            "pool over loader data",
            Box::new(move |i| {
                i.table_pool = code;
                i.reserved
                    .add("mbi", code.start.start(), 64)
                    .expect("room for one reservation");
            }),
            BootInfoError::OverlapsReserved {
                which: BootRange::TablePool,
                range: code,
                what: "mbi",
            },
        ),
    ];
    for (name, change, want) in cases {
        let mut sim = SimConfig::new(32).build();
        assert_eq!(
            sim.read_cr3(),
            bt.start,
            "{name}: the sim starts on its bootstrap PDPT"
        );
        let mut info = sim.boot_info();
        change(&mut info);
        let mut state = Box::new(BootState::new());
        let mut log = String::new();
        let got = pvops_core::boot::boot(
            &mut sim,
            &info,
            BootOptions::default(),
            &mut state,
            &mut log,
        );
        match got {
            Err(e) => {
                assert_eq!(e.stage, Stage::Banner, "{name}: {e}");
                assert!(
                    matches!(&e.kind, BootErrorKind::BootInfo(k) if *k == want),
                    "{name}: got {e}, want {want}"
                );
                assert_eq!(state.alloc.allocated(), 0, "{name}: nothing allocated");
            }
            Ok(_) => panic!("{name}: boot accepted the BootInfo\n{log}"),
        }
    }
}

// ----- issue 11 item 2: the PAE write primitives -----

/// Issue 11 item 2: the simulated machine records the two 32-bit halves of every entry store
/// and refuses (nothing written) an order that lets the walker see, between them, a present
/// entry that is neither the old nor the new one: a clear that zeroes the high half first
/// while Present is set, a split store over a present entry. One 64-bit store never tears.
#[test]
fn sim_refuses_a_store_in_the_wrong_half_order() {
    use pvops_tests::sim::{HalfStore, StoreOrder};
    let mut sim = SimConfig::new(32).build();
    // An unused slot of the bootstrap page directory (beyond the 64 MiB it maps), holding
    // 2 MiB entries whose frames lie above 4 GiB, so their high halves are not zero.
    let slot = EntrySlot::new(sim.bootstrap_pd(), EntryIndex::new_const(100));
    let huge = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE;
    let e1 = PageTableEntry::new(MachineFrame::new(0x10_0200), huge);
    let e2 = PageTableEntry::new(MachineFrame::new(0x20_0400), huge);
    assert_ne!(e1.high(), 0);
    let at = |sim: &SimMachine| sim.entry(sim.bootstrap_pd(), 100);
    // A split store on a non-present entry: (e1.high, 0) is not present, so fine.
    sim.store_in_order(Level::L2, slot, e1, StoreOrder::HighThenLow)
        .unwrap();
    assert_eq!(at(&sim), e1);
    let w = sim.writes().last().copied().unwrap();
    assert_eq!(
        w.stores,
        [
            Some(HalfStore::High(e1.high())),
            Some(HalfStore::Low(e1.low()))
        ]
    );
    // A clear, high half first: the walker would see (0, e1.low): present, frame 0x200.
    let err = sim
        .store_in_order(
            Level::L2,
            slot,
            PageTableEntry::EMPTY,
            StoreOrder::HighThenLow,
        )
        .unwrap_err();
    assert!(
        matches!(err, SimError::TornEntry { seen, .. } if seen.is_present() && seen.high() == 0),
        "{err}"
    );
    assert_eq!(at(&sim), e1, "a refused store writes nothing");
    // Replacing a present entry with a split store: (e2.high, e1.low) is a third frame.
    let err = sim
        .store_in_order(Level::L2, slot, e2, StoreOrder::HighThenLow)
        .unwrap_err();
    assert!(matches!(err, SimError::TornEntry { .. }), "{err}");
    // The same replacement as one 64-bit store, and the clear with the low half first.
    sim.store_in_order(Level::L2, slot, e2, StoreOrder::Whole)
        .unwrap();
    assert_eq!(at(&sim), e2);
    sim.store_in_order(
        Level::L2,
        slot,
        PageTableEntry::EMPTY,
        StoreOrder::LowThenHigh,
    )
    .unwrap();
    assert_eq!(at(&sim), PageTableEntry::EMPTY);
    let w = sim.writes().last().copied().unwrap();
    assert_eq!(
        w.stores,
        [Some(HalfStore::Low(0)), Some(HalfStore::High(0))]
    );
}

/// Issue 11 item 2: every primitive stores its halves in Linux's order, and the boot path,
/// the exercise and the misuse cases keep each primitive's rule: `set_pte` only on a
/// non-present entry, L2 entries cleared with `pmd_clear` (low half first) and never with
/// `set_pmd(EMPTY)` (before, the exercise cleared its scratch L1's link that way: on bare
/// metal a split high-first store).
#[test]
fn pae_primitives_store_halves_in_linux_order() {
    use pvops_tests::sim::HalfStore;
    let (sim, run) = boot_cfg(SimConfig::new(64));
    run.expect_pass();
    let c = sim.write_counts();
    assert!(c.pte > 0 && c.pmd > 0 && c.pud > 0, "{c:?}");
    assert!(c.clear > 0, "early_ioremap unmaps with pte_clear: {c:?}");
    assert!(
        c.pmd_clear > 0,
        "the exercise unlinks its scratch L1 with pmd_clear: {c:?}"
    );
    for w in sim.writes() {
        let split = |first: HalfStore, second: HalfStore| [Some(first), Some(second)];
        let (hi, lo) = (
            HalfStore::High(w.value.high()),
            HalfStore::Low(w.value.low()),
        );
        let want = match w.op {
            "set_pte" => split(hi, lo),
            "set_pte_atomic" | "set_pmd" | "set_pud" => {
                [Some(HalfStore::Whole(w.value.bits())), None]
            }
            "pte_clear" | "pmd_clear" | "pud_clear" => split(lo, hi),
            other => panic!("unexpected op {other}"),
        };
        assert_eq!(w.stores, want, "{w:?}");
        assert!(
            w.op != "set_pmd" || w.value.is_present(),
            "an L2 entry cleared with set_pmd instead of pmd_clear: {w:?}"
        );
    }
}

/// Issue 11 item 2: `set_pte` is for a non-present entry only (its split store could show
/// the walker the old Present low half with the new high half); a present entry is replaced
/// with `set_pte_atomic`. Before, the sim (and every backend) took either.
#[test]
fn set_pte_over_a_present_entry_is_refused() {
    let (mut sim, mut run) = boot_cfg(SimConfig::new(32));
    let root = run.expect_pass().root;
    let va = VirtAddr::new(PAGE_OFFSET + 0x40_0000);
    let slot = mapper::l1_slot(&mut sim, &mut run.state.alloc, root, va, false).unwrap();
    let old = sim.entry(slot.table(), slot.index().get());
    assert!(old.is_present());
    let other = PageTableEntry::new(MachineFrame::new(0x0010_0000), KERNEL_RO);
    // SAFETY: refused before any store.
    let err = unsafe { sim.set_pte(slot, other) }.unwrap_err();
    assert_eq!(
        err,
        SimError::PresentTarget {
            op: "set_pte",
            slot,
            old
        }
    );
    assert_eq!(sim.entry(slot.table(), slot.index().get()), old);
    // SAFETY: puts the same entry back, as one 64-bit store.
    unsafe { sim.set_pte_atomic(slot, old) }.unwrap();
}

/// Issue 11 item 2: `pud_clear` of the live PDPT reloads cr3 on bare metal (the CPU latched
/// the four PDPT entries at the last load); of a PDPT that is not live, it does not.
#[test]
fn pud_clear_of_the_live_pdpt_reloads_cr3() {
    let (mut sim, mut run) = boot_cfg(SimConfig::new(32));
    let root = run.expect_pass().root;
    let reloads = |sim: &SimMachine| {
        sim.events()
            .iter()
            .filter(|e| matches!(e, SimEvent::Cr3Reload { .. }))
            .count()
    };
    assert_eq!(reloads(&sim), 0);
    // A root that is not live: no reload.
    let other = mapper::new_root(&mut sim, &mut run.state.alloc).unwrap();
    // SAFETY: `other` is not live; its slot 0 maps nothing.
    unsafe {
        sim.pud_clear(EntrySlot::pdpt(
            other,
            pvops_core::addr::PdptIndex::new_const(0),
        ))
    }
    .unwrap();
    assert_eq!(reloads(&sim), 0);
    // Slot 0 of the live root (user space: nothing mapped there by the boot path).
    let slot = EntrySlot::pdpt(root, pvops_core::addr::PdptIndex::new_const(0));
    assert!(sim.entry(root, 0).is_present());
    // SAFETY: nothing uses the first gigabyte.
    unsafe { sim.pud_clear(slot) }.unwrap();
    assert_eq!(reloads(&sim), 1);
    assert_eq!(sim.entry(root, 0), PageTableEntry::EMPTY);
    // The latched entry went with the reload: the walker sees the cleared slot.
    let pf = sim.walk(VirtAddr::new(0x1000), Access::Read).unwrap_err();
    assert_eq!(pf.error & PF_PRESENT, 0);
}

/// The smallest boot the simulated machine allows (8 MiB), then walks of the table it
/// leaves: the mapper's and the simulated MMU's translation of the direct map agree with
/// the p2m, reads through it see memory, and an address beyond it faults. With the walk
/// tests above that build no direct map, this is what `cargo xtask miri --full` runs under
/// Miri (a bigger boot takes many minutes there).
#[test]
fn smallest_boot_and_walks_of_its_table() {
    let (sim, mut run) = boot_cfg(SimConfig::new(8));
    let root = run.expect_pass().root;
    assert_eq!(sim.read_cr3(), root);
    for pfn in [0x100, 0x101, 0x7ff] {
        let va = direct_va(pfn);
        let e = mapper::translate(&sim, root, va).unwrap();
        assert_eq!(e.frame().unwrap().number(), p2m(&sim, pfn), "pfn {pfn:#x}");
        let t = sim.walk_root(root, va, Access::Read).unwrap();
        assert_eq!(t.mfn.number(), p2m(&sim, pfn), "pfn {pfn:#x} (MMU walk)");
        let mut via_va = [0u8; 8];
        // SAFETY: reads only, of the direct map.
        unsafe { sim.read_virt(va, &mut via_va) }.unwrap();
        let mut via_pa = [0u8; 8];
        sim.read_phys(PhysAddr::new(pfn as u64 * FRAME), &mut via_pa);
        assert_eq!(via_va, via_pa);
    }
    let beyond = direct_va(0x800);
    assert!(mapper::translate(&sim, root, beyond).is_err());
    let mut b = [0u8; 1];
    // SAFETY: reads only.
    assert!(unsafe { sim.read_virt(beyond, &mut b) }.is_err());
    let f = run.state.alloc.alloc().unwrap();
    run.state.alloc.free(f).unwrap();
}
