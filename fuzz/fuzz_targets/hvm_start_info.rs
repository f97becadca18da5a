//! Fuzzes the PVH `hvm_start_info` parser (info, memory map, command line, modules) over a
//! segmented physical-memory image, then what the boot does with its result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_pvh::start_info::{parse, MAX_MODULES};
use pvops_core::addr::PhysFrame;
use pvops_fuzz::{check_allocator, check_map, check_options, PhysSegments};

fuzz_target!(|data: &[u8]| {
    let Some(mem) = PhysSegments::decode(data) else {
        return;
    };
    let read = |addr: u64, len: usize| mem.read64(addr, len);
    let Ok(si) = parse(mem.entry as u64, &read) else {
        return;
    };
    check_map(&si.memory);
    check_allocator(&si.memory, PhysFrame::new(0));
    // The allocator must never hand out a loader structure or a module.
    for r in si.reservations() {
        let end = r.start.saturating_add(r.len);
        assert!(
            si.memory
                .usable()
                .all(|u| u.end() <= r.start || end <= u.start.as_u64()),
            "{r:?} still usable in {:?}",
            si.memory.regions()
        );
    }
    assert!(si.modules().len() <= MAX_MODULES);
    assert!(!si.cmdline.contains('\0'));
    for m in si.modules() {
        assert!(!m.cmdline.contains('\0'));
    }
    check_options(si.cmdline);
});
