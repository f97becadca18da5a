//! The domain builder (xg_dom_x86.c): image, p2m list, start_info, rings, bootstrap tables, stack.

use super::*;

pub(super) fn build_domain(cfg: &DomainConfig) -> XenDomain {
    let nr = cfg.nr_pages;
    assert!(
        (1024..=(1 << 18)).contains(&nr),
        "nr_pages {nr:#x} outside 4 MiB..1 GiB"
    );
    let mut m = XenModel::empty(nr, cfg.p2m);
    let image = FrameRange {
        start: PhysFrame::new(0),
        end: PhysFrame::new(cfg.image_pages),
    };
    assert!(
        cfg.pool_pages <= cfg.image_pages,
        "the table pool lies inside the image"
    );
    let table_pool = FrameRange {
        start: PhysFrame::new(cfg.image_pages - cfg.pool_pages),
        end: image.end,
    };
    let p2m_pages = (nr * 4).div_ceil(PAGE_SIZE as u32);
    let p2m_list = FrameRange {
        start: image.end,
        end: PhysFrame::new(image.end.number() + p2m_pages),
    };
    let start_info = p2m_list.end;
    let xenstore = PhysFrame::new(start_info.number() + 1);
    let console = PhysFrame::new(start_info.number() + 2);
    let pt_start = start_info.number() + 3;
    // alloc_pgtables_pv: 512 KiB of padding plus the boot stack, the mapped region grown in
    // 4 MiB steps until it holds its own tables.
    let extra = 1 + (512 * 1024) / PAGE_SIZE as u32;
    let mut end = (pt_start + extra).next_multiple_of(1024);
    let l1_count = loop {
        let l1s = end / 512;
        if pt_start + 2 + l1s + extra <= end {
            break l1s;
        }
        end += 1024;
    };
    assert!(
        end <= nr,
        "a {nr:#x}-page domain cannot hold the builder's {end:#x}-page region"
    );
    let tables = 2 + l1_count;
    let page_tables = FrameRange {
        start: PhysFrame::new(pt_start),
        end: PhysFrame::new(pt_start + tables),
    };
    let l3 = PhysFrame::new(pt_start);
    let l2 = PhysFrame::new(pt_start + 1);
    let l1s = FrameRange {
        start: PhysFrame::new(pt_start + 2),
        end: page_tables.end,
    };
    let boot_stack = page_tables.end;
    let layout = BuilderLayout {
        image,
        p2m_list,
        start_info,
        xenstore,
        console,
        page_tables,
        l3,
        l2,
        l1s,
        boot_stack,
        region_end: VIRT_BASE + end * PAGE_SIZE as u32,
    };
    let p2m = m.p2m.clone();
    let mfn = |p: u32| p2m[p as usize];
    let upper = P | RW | US | A | D;
    // The tables, written before Xen sees them (the builder maps guest memory directly).
    let (l3m, l2m) = (mfn(l3.number()), mfn(l2.number()));
    m.xen_write(l3m, 3, ((l2m as u64) << 12) | upper);
    for c in 0..l1_count {
        let l1m = mfn(l1s.start.number() + c);
        m.xen_write(l2m, c as usize, ((l1m as u64) << 12) | upper);
    }
    for pfn in 0..end {
        let flags = if page_tables.contains(PhysFrame::new(pfn)) {
            P | A
        } else {
            P | RW | A
        };
        let l1m = mfn(l1s.start.number() + pfn / 512);
        m.xen_write(l1m, (pfn % 512) as usize, ((mfn(pfn) as u64) << 12) | flags);
    }
    for pfn in 0..nr {
        let at = mfn(p2m_list.start.number() + pfn / 1024);
        m.write_raw(at, (pfn % 1024) as usize * 4, &mfn(pfn).to_le_bytes());
    }
    let mut si = StartInfo {
        magic: [0; 32],
        nr_pages: nr,
        shared_info: SHARED_INFO_MFN << 12,
        flags: 0,
        store_mfn: mfn(xenstore.number()),
        store_evtchn: 1,
        console_mfn: mfn(console.number()),
        console_evtchn: 2,
        pt_base: VIRT_BASE + l3.number() * PAGE_SIZE as u32,
        nr_pt_frames: tables,
        mfn_list: VIRT_BASE + p2m_list.start.number() * PAGE_SIZE as u32,
        mod_start: 0,
        mod_len: 0,
        cmd_line: [0; 1024],
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    };
    si.magic[..START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    let cl = cfg.cmdline.as_bytes();
    assert!(cl.len() < 1024, "command line too long");
    si.cmd_line[..cl.len()].copy_from_slice(cl);
    // SAFETY: StartInfo is plain old data without padding (checked by its const asserts).
    let raw = unsafe {
        core::slice::from_raw_parts(
            &si as *const StartInfo as *const u8,
            core::mem::size_of::<StartInfo>(),
        )
    };
    m.write_raw(mfn(start_info.number()), 0, raw);
    m.layout = Some(layout);
    // bootlate_pv: pin the L3; the vCPU's cr3 holds another type reference.
    if let Err(e) = m.pin(l3m, PageType::L3) {
        panic!(
            "the builder's bootstrap table was refused: {e} ({:?})",
            m.reason
        );
    }
    m.get_type(l3m, PageType::L3, false)
        .expect("cr3 ref on a pinned L3");
    m.cr3 = l3m;
    let si_va = VIRT_BASE + start_info.number() * PAGE_SIZE as u32;
    let mut back = vec![0u8; core::mem::size_of::<StartInfo>()];
    // SAFETY: reads start_info through the bootstrap table, as the guest's entry does.
    unsafe { m.read_virt(VirtAddr::new(si_va), &mut back) }.expect("start_info is mapped");
    // SAFETY: `back` holds size_of::<StartInfo>() bytes of a StartInfo (plain old data).
    let start_info_copy =
        Box::new(unsafe { core::ptr::read_unaligned(back.as_ptr() as *const StartInfo) });
    // Leaked (about 1 KiB a domain) so that the facts `XenDomain::facts` derives from it
    // borrow nothing of the domain, whose model then moves into a `XenMmu`.
    let start_info_copy: &'static StartInfo = Box::leak(start_info_copy);
    XenDomain {
        model: m,
        start_info: start_info_copy,
        start_info_va: si_va,
        esp: VIRT_BASE + (boot_stack.number() + 1) * PAGE_SIZE as u32,
        image,
        table_pool,
        layout,
    }
}
