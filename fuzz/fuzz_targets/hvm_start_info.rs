//! Fuzzes the PVH `hvm_start_info` parser (info, memory map, command line, modules) over a
//! segmented physical-memory image, then what the boot does with its result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_pvh::start_info::{parse, MAX_MODULES};
use pvops_core::addr::PhysFrame;
use pvops_fuzz::{check_allocator, check_map, check_options, check_without, PhysSegments};

fuzz_target!(|data: &[u8]| {
    let Some(mem) = PhysSegments::decode(data) else {
        return;
    };
    let read = |addr: u64, len: usize| mem.read64(addr, len);
    let Ok(si) = parse(mem.entry as u64, &read) else {
        return;
    };
    check_map(&si.memory);
    // The allocator must never hand out a loader structure or a module.
    if let Ok(free) = si.memory.without(si.reservations()) {
        check_without(&si.memory, si.reservations(), &free);
        check_allocator(&free, PhysFrame::new(0));
    }
    assert!(si.modules().len() <= MAX_MODULES);
    assert!(!si.cmdline.contains('\0'));
    for m in si.modules() {
        assert!(!m.cmdline.contains('\0'));
    }
    check_options(si.cmdline);
});
