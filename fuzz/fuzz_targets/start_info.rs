//! Fuzzes the validation of Xen's start_info: what it accepts must describe a layout inside the
//! domain, since the boot then reads the p2m list and the bootstrap tables where it says.
#![no_main]

use backend_xen::abi::{StartInfo, VIRT_BASE};
use backend_xen::start_info::validate;
use libfuzzer_sys::fuzz_target;
use pvops_core::addr::PhysFrame;
use pvops_fuzz::{check_options, u32_le};

fuzz_target!(|data: &[u8]| {
    let (Some(si_va), Some(esp), Some(image_end)) = (
        u32_le(data),
        data.get(4..).and_then(u32_le),
        data.get(8..).and_then(u32_le),
    ) else {
        return;
    };
    let mut raw = [0u8; StartInfo::SIZE];
    let body = &data[12..];
    let n = body.len().min(raw.len());
    raw[..n].copy_from_slice(&body[..n]);
    let si = StartInfo::from_bytes(&raw).expect("full length");
    let nr = si.nr_pages;
    // The M2P lookup of the real boot returns only frames of the domain; here: identity below
    // nr_pages.
    let owned_pfn = |mfn: u32| (mfn < nr).then_some(PhysFrame::new(mfn));
    let Ok(facts) = validate(&si, si_va, esp, PhysFrame::new(image_end), &owned_pfn) else {
        return;
    };
    assert_eq!(facts.nr_pages, nr);
    let tables = facts.bootstrap_tables;
    assert!(
        !tables.is_empty() && tables.end.number() <= nr,
        "tables {tables:?}, nr_pages {nr:#x}"
    );
    assert_eq!(facts.pt_base, tables.start);
    assert!(facts.start_info.number() < nr);
    // The boot reads nr_pages 4-byte entries of the p2m list at mfn_list (RealXen::new).
    let p2m_start = (si.mfn_list - VIRT_BASE) as u64;
    let p2m_end = p2m_start + nr as u64 * 4;
    assert!(
        p2m_end <= nr as u64 * 4096,
        "p2m list {:#x}..{:#x} runs past the domain's {nr:#x} pages",
        si.mfn_list,
        p2m_end + VIRT_BASE as u64
    );
    if image_end <= nr {
        assert!(
            facts.first_free.number() <= nr,
            "first_free {} past nr_pages {nr:#x}",
            facts.first_free
        );
    }
    assert!(
        facts.first_free.number() >= tables.end.number() && facts.first_free > facts.start_info
    );
    for f in [facts.console, facts.store].into_iter().flatten() {
        assert!(f.number() < nr, "ring pfn {f} past nr_pages {nr:#x}");
    }
    let domain_end = nr as u64 * 4096;
    if let Some(m) = facts.module {
        assert!(
            m.start.as_u64() + m.len <= domain_end,
            "module {m:?} past the domain"
        );
    }
    for r in facts.reserved.iter() {
        assert!(r.end <= domain_end, "{r:?} past the domain");
    }
    assert!(!facts.cmdline.contains('\0'));
    check_options(facts.cmdline);
});
