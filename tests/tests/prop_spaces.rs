//! Property test of address spaces (issue 10): the same random sequence of create / switch /
//! destroy / duplicate (shared and copy-on-write) / map / unmap / translate, inside and
//! outside lazy mode, on the simulated machine
//! and on the model of Xen's rules under the real `XenMmu`, each after a whole boot.
//!
//! Checked: every translation agrees with a mirror (which frame of the test's own each page
//! maps, or none) after every step and on both machines; both machines give the same
//! result for every operation and the same allocator count after every step; at the end
//! (everything unmapped, every space destroyed) the allocator has every frame back (no
//! leaked table) and, on the model, no page table is mapped writable, nothing but the live
//! root is pinned, and the model saw no rule violation.

use backend_xen::XenMmu;
use proptest::prelude::*;
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::mapper;
use pvops_core::mem::FrameAllocator;
use pvops_core::options::BootOptions;
use pvops_core::paging::{PteFlags, KERNEL_RW};
use pvops_core::space::{AddressSpaces, Duplicate, SpaceError, SpaceId, Target};
use pvops_core::{LazyMmu, Platform};
use pvops_tests::boot_default;
use pvops_tests::xen_model::{boot_mib, ModelAccess, XenModel};
use std::collections::BTreeMap;

/// Private pages: 8 in each of two 2 MiB areas of the lower half (two L1s).
const USER_PAGES: u8 = 16;
/// Kernel-half pages (the upper half of the scratch area).
const KERNEL_PAGES: u8 = 16;

#[derive(Clone, Copy, Debug)]
enum Op {
    Create,
    /// Destroy the `pick`-th space alive.
    Destroy(u8),
    /// Switch to the kernel root (`pick` 0) or a space.
    Switch(u8),
    /// Map a fresh frame at a private page of a space (and the next page too, in the same
    /// lazy section, when `lazy`).
    Map {
        space: u8,
        page: u8,
        lazy: bool,
    },
    /// Unmap a private page of a space.
    Unmap {
        space: u8,
        page: u8,
    },
    /// Map fresh frames at kernel-half pages through `map_kernel_range` (seen by every space).
    KernelMap {
        page: u8,
        pages: u8,
        lazy: bool,
    },
    /// Unmap every kernel-half page the test mapped.
    KernelUnmap,
    /// Duplicate a space (`AddressSpaces::duplicate`), copy-on-write or shared.
    Duplicate {
        space: u8,
        cow: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Create),
        1 => any::<u8>().prop_map(Op::Destroy),
        3 => any::<u8>().prop_map(Op::Switch),
        4 => (any::<u8>(), 0..USER_PAGES, any::<bool>())
            .prop_map(|(space, page, lazy)| Op::Map { space, page, lazy }),
        2 => (any::<u8>(), 0..USER_PAGES).prop_map(|(space, page)| Op::Unmap { space, page }),
        1 => (0..KERNEL_PAGES, 1..6u8, any::<bool>())
            .prop_map(|(page, pages, lazy)| Op::KernelMap { page, pages, lazy }),
        1 => Just(Op::KernelUnmap),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(space, cow)| Op::Duplicate { space, cow }),
    ]
}

fn user_va(page: u8) -> VirtAddr {
    let area = if page < 8 { 0x4000_0000 } else { 0x4020_0000 };
    VirtAddr::new(area + (page as u32 % 8) * PAGE_SIZE as u32)
}

/// One machine under test: the mirror of what is mapped, the trace of results.
struct Run<'a, P: Platform> {
    p: &'a mut P,
    alloc: &'a mut FrameAllocator,
    spaces: AddressSpaces,
    alive: Vec<SpaceId>,
    /// (space, page) -> index of the frame in `frames`.
    user: BTreeMap<(usize, u8), usize>,
    kernel: BTreeMap<u8, usize>,
    kernel_va: VirtAddr,
    had_kernel_l1: bool,
    frames: Vec<PhysFrame>,
    start: u32,
    trace: Vec<String>,
}

impl<'a, P: Platform> Run<'a, P>
where
    P::Error: core::fmt::Debug,
{
    fn new(p: &'a mut P, alloc: &'a mut FrameAllocator) -> Self {
        let spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
        let kernel_va = VirtAddr::new(p.layout().scratch_area.as_u32() + 0x10_0000);
        let had_kernel_l1 = mapper::walk(p, p.read_cr3(), kernel_va)
            .map(|w| w.level == pvops_core::paging::Level::L1)
            .unwrap_or(false);
        let start = alloc.available();
        Run {
            p,
            alloc,
            spaces,
            alive: Vec::new(),
            user: BTreeMap::new(),
            kernel: BTreeMap::new(),
            kernel_va,
            had_kernel_l1,
            frames: Vec::new(),
            start,
            trace: Vec::new(),
        }
    }

    fn fresh(&mut self) -> (usize, MachineFrame) {
        let f = self.alloc.alloc().expect("a frame");
        self.frames.push(f);
        (self.frames.len() - 1, self.p.phys_to_machine(f).unwrap())
    }

    fn space(&self, pick: u8) -> Option<(usize, SpaceId)> {
        (!self.alive.is_empty()).then(|| {
            let i = pick as usize % self.alive.len();
            (i, self.alive[i])
        })
    }

    fn note<T: core::fmt::Debug>(&mut self, what: String, r: &Result<T, SpaceError<P::Error>>) {
        let r = match r {
            Ok(_) => "ok".to_string(),
            Err(SpaceError::Map(e)) => format!("map error {:?}", core::mem::discriminant(e)),
            Err(e) => format!("{:?}", core::mem::discriminant(e)),
        };
        self.trace.push(format!("{what}: {r}"));
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Create => {
                let r = self.spaces.create(self.p, self.alloc);
                if let Ok(id) = r {
                    self.alive.push(id);
                }
                self.note("create".into(), &r);
            }
            Op::Destroy(pick) => {
                let Some((i, id)) = self.space(pick) else {
                    return;
                };
                // Unmap its pages first (the frames are the test's).
                let pages: Vec<u8> = self
                    .user
                    .keys()
                    .filter(|(s, _)| *s == id.index())
                    .map(|(_, p)| *p)
                    .collect();
                let r = self.spaces.destroy(self.p, self.alloc, id);
                if r.is_ok() {
                    self.alive.remove(i);
                    for page in pages {
                        let k = self.user.remove(&(id.index(), page)).unwrap();
                        self.release(k);
                    }
                }
                self.note(format!("destroy #{i}"), &r);
            }
            Op::Switch(pick) => {
                let (name, t) = match self.space(pick.wrapping_sub(1)) {
                    Some((i, id)) if pick != 0 => (format!("switch #{i}"), Target::Space(id)),
                    _ => ("switch kernel".to_string(), Target::Kernel),
                };
                let r = self.spaces.switch_to(self.p, t);
                self.note(name, &r);
            }
            Op::Map { space, page, lazy } => {
                let Some((i, id)) = self.space(space) else {
                    return;
                };
                let pages = if lazy {
                    vec![page, (page + 1) % USER_PAGES]
                } else {
                    vec![page]
                };
                let mut lz = LazyMmu::enter(&mut *self.p);
                for page in pages {
                    if self.user.contains_key(&(id.index(), page)) {
                        continue;
                    }
                    let f = self.alloc.alloc().expect("a frame");
                    let m = lz.phys_to_machine(f).unwrap();
                    // SAFETY: the page is free in that space (mirror) and the test's.
                    let r = unsafe {
                        self.spaces
                            .map_page(&mut *lz, self.alloc, id, user_va(page), m, KERNEL_RW)
                    }
                    .map(|f| f.ignore());
                    if r.is_ok() {
                        self.frames.push(f);
                        self.user.insert((id.index(), page), self.frames.len() - 1);
                    } else {
                        self.alloc.free(f).unwrap();
                    }
                    self.trace
                        .push(format!("map #{i} page {page} lazy={lazy}: {}", r.is_ok()));
                }
                lz.finish().unwrap();
            }
            Op::Unmap { space, page } => {
                let Some((i, id)) = self.space(space) else {
                    return;
                };
                // SAFETY: the test's page; a refusal changes nothing.
                let r = unsafe { self.spaces.unmap_page(self.p, id, user_va(page)) };
                match &r {
                    Ok((_, flush)) => {
                        let k = self.user.remove(&(id.index(), page)).expect("mirror");
                        self.release(k);
                        let _ = flush;
                    }
                    Err(_) => assert!(!self.user.contains_key(&(id.index(), page))),
                }
                if let Ok((_, flush)) = r {
                    flush.flush(self.p).unwrap();
                    self.trace.push(format!("unmap #{i} page {page}: ok"));
                } else {
                    self.trace.push(format!("unmap #{i} page {page}: refused"));
                }
            }
            Op::KernelMap { page, pages, lazy } => {
                let pages = pages.min(KERNEL_PAGES - page);
                if (page..page + pages).any(|p| self.kernel.contains_key(&p)) {
                    return;
                }
                let first = self.frames.len();
                let mfns: Vec<MachineFrame> = (0..pages).map(|_| self.fresh().1).collect();
                let va = VirtAddr::new(self.kernel_va.as_u32() + page as u32 * PAGE_SIZE as u32);
                let r = if lazy {
                    let mut lz = LazyMmu::enter(&mut *self.p);
                    // SAFETY: the test's kernel pages, free (mirror).
                    let r = unsafe {
                        self.spaces.map_kernel_range(
                            &mut *lz,
                            self.alloc,
                            va,
                            pages as usize,
                            KERNEL_RW,
                            |i| mfns[i],
                        )
                    };
                    lz.finish().unwrap();
                    r
                } else {
                    // SAFETY: as above.
                    unsafe {
                        self.spaces.map_kernel_range(
                            self.p,
                            self.alloc,
                            va,
                            pages as usize,
                            KERNEL_RW,
                            |i| mfns[i],
                        )
                    }
                };
                r.expect("kernel map");
                for i in 0..pages {
                    self.kernel.insert(page + i, first + i as usize);
                }
                self.trace
                    .push(format!("kernel map {page}+{pages} lazy={lazy}"));
            }
            Op::Duplicate { space, cow } => {
                let Some((i, id)) = self.space(space) else {
                    return;
                };
                let mode = if cow {
                    Duplicate::CopyOnWrite
                } else {
                    Duplicate::Shared
                };
                // SAFETY: the mirror counts every space that maps a frame (`release`).
                let r = unsafe { self.spaces.duplicate(self.p, self.alloc, id, mode) };
                let ok = r.is_ok();
                if let Ok((copy, flush)) = r {
                    flush.flush(self.p).unwrap();
                    self.alive.push(copy);
                    let pages: Vec<(u8, usize)> = self
                        .user
                        .iter()
                        .filter(|((s, _), _)| *s == id.index())
                        .map(|((_, p), k)| (*p, *k))
                        .collect();
                    for (page, k) in pages {
                        self.user.insert((copy.index(), page), k);
                        if cow {
                            for t in [id, copy] {
                                let e = self
                                    .spaces
                                    .translate(&*self.p, Target::Space(t), user_va(page))
                                    .unwrap();
                                assert!(!e.flags().contains(PteFlags::WRITABLE), "cow: read-only");
                            }
                        }
                    }
                }
                self.trace.push(format!("duplicate #{i} cow={cow}: {ok}"));
            }
            Op::KernelUnmap => {
                let pages: Vec<(u8, usize)> = self.kernel.iter().map(|(p, k)| (*p, *k)).collect();
                let mut lz = LazyMmu::enter(&mut *self.p);
                for (page, k) in pages {
                    let va =
                        VirtAddr::new(self.kernel_va.as_u32() + page as u32 * PAGE_SIZE as u32);
                    // SAFETY: the test's kernel page.
                    let flush =
                        unsafe { self.spaces.unmap_kernel_range(&mut *lz, va, 1, |_, _| {}) }
                            .expect("kernel unmap");
                    flush.flush(&mut *lz).unwrap();
                    self.alloc.free(self.frames[k]).unwrap();
                }
                lz.finish().unwrap();
                self.kernel.clear();
                self.trace.push("kernel unmap".into());
            }
        }
        self.check();
    }

    /// Gives frame `k` back once no space maps it any more (duplicates share frames).
    fn release(&mut self, k: usize) {
        if !self.user.values().any(|v| *v == k) {
            self.alloc.free(self.frames[k]).unwrap();
        }
    }

    /// Every page of every root translates as the mirror says.
    fn check(&mut self) {
        let frame_of =
            |p: &P, e: pvops_core::PageTableEntry| e.frame().and_then(|m| p.machine_to_phys(m));
        let mut roots = vec![(usize::MAX, Target::Kernel)];
        roots.extend(self.alive.iter().map(|id| (id.index(), Target::Space(*id))));
        for (index, t) in roots {
            let root = self.spaces.root::<P::Error>(t).unwrap();
            for page in 0..USER_PAGES {
                let got = mapper::translate(&*self.p, root, user_va(page))
                    .ok()
                    .and_then(|e| frame_of(self.p, e));
                let want = self.user.get(&(index, page)).map(|k| self.frames[*k]);
                assert_eq!(got, want, "{t:?} user page {page}");
            }
            for page in 0..KERNEL_PAGES {
                let va = VirtAddr::new(self.kernel_va.as_u32() + page as u32 * PAGE_SIZE as u32);
                let got = mapper::translate(&*self.p, root, va)
                    .ok()
                    .and_then(|e| frame_of(self.p, e));
                let want = self.kernel.get(&page).map(|k| self.frames[*k]);
                assert_eq!(got, want, "{t:?} kernel page {page}");
            }
        }
        // The live root's view through the CPU's path agrees for the kernel half.
        self.trace
            .push(format!("in use {}", self.start - self.alloc.available()));
    }

    /// Unmaps and destroys everything; the allocator must have every frame back.
    fn finish(mut self) -> Vec<String> {
        self.spaces.switch_to(self.p, Target::Kernel).unwrap();
        self.step(Op::KernelUnmap);
        let keys: Vec<(usize, u8)> = self.user.keys().copied().collect();
        for (s, page) in keys {
            let id = *self.alive.iter().find(|id| id.index() == s).unwrap();
            // SAFETY: the test's page.
            unsafe { self.spaces.unmap_page(self.p, id, user_va(page)) }
                .unwrap()
                .1
                .ignore();
            let k = self.user.remove(&(s, page)).unwrap();
            self.release(k);
        }
        for id in std::mem::take(&mut self.alive) {
            self.spaces.destroy(self.p, self.alloc, id).unwrap();
        }
        if !self.had_kernel_l1
            && mapper::walk(self.p, self.p.read_cr3(), self.kernel_va)
                .is_ok_and(|w| w.level == pvops_core::paging::Level::L1)
        {
            self.spaces
                .retire_kernel_table(self.p, self.alloc, self.kernel_va)
                .unwrap();
        }
        assert_eq!(self.alloc.available(), self.start, "frames (tables) leaked");
        self.trace
    }
}

fn check_model(mmu: &mut XenMmu<XenModel>) {
    let root = pvops_core::MmuOps::read_cr3(mmu);
    let m = mmu.model();
    assert_eq!(m.writable_pagetable_mappings(), vec![]);
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    let pinned: Vec<PhysFrame> = (0..m.nr_pages())
        .map(PhysFrame::new)
        .filter(|f| m.state(*f).pinned)
        .collect();
    assert_eq!(pinned, [root], "only the live root stays pinned");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_same_space_sequences_on_the_sim_and_the_xen_model(ops in proptest::collection::vec(op(), 4..40)) {
        let (mut sim, mut sim_run) = boot_default(64);
        sim_run.expect_pass();
        let mut s = Run::new(&mut sim, &mut sim_run.state.alloc);
        for op in &ops {
            s.step(*op);
        }
        let sim_trace = s.finish();

        let mut xen = boot_mib(64, BootOptions::default());
        xen.expect_pass();
        let mmu = xen.mmu.as_mut().unwrap();
        let mut x = Run::new(mmu, &mut xen.state.alloc);
        for op in &ops {
            x.step(*op);
        }
        let xen_trace = x.finish();
        check_model(xen.mmu.as_mut().unwrap());
        prop_assert_eq!(sim_trace, xen_trace);
    }
}
