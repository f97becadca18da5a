//! Fuzzes the multiboot1 parser (info, memory map, modules, command line) over a segmented
//! physical memory image, then what the boot does with its result: the free memory left after
//! the loader's reservations, the frame allocator on it, and the options.
#![no_main]

use backend_native::multiboot::{parse, BOOTLOADER_MAGIC};
use libfuzzer_sys::fuzz_target;
use pvops_core::addr::PhysFrame;
use pvops_core::cmdline::CmdlineCopy;
use pvops_fuzz::{check_allocator, check_map, check_options, PhysSegments};

fuzz_target!(|data: &[u8]| {
    let Some(mem) = PhysSegments::decode(data) else {
        return;
    };
    let read = |addr: u32, len: usize| mem.read(addr, len);
    let mut cmdline = CmdlineCopy::empty();
    let Ok(mb) = parse(BOOTLOADER_MAGIC, mem.entry, &read, &mut cmdline) else {
        return;
    };
    check_map(&mb.memory);
    for m in mb.modules() {
        let end = m.start.as_u64() + m.len;
        assert!(
            m.len == 0
                || mb
                    .reserved
                    .iter()
                    .any(|r| r.start.as_u64() <= m.start.as_u64() && end <= r.end),
            "module {m:?} not reserved"
        );
    }
    if let Ok(free) = mb.memory.without(&mb.reserved) {
        check_map(&free);
        for r in mb.reserved.iter() {
            assert!(
                free.usable()
                    .all(|u| u.end() <= r.start.as_u64() || r.end <= u.start.as_u64()),
                "{r:?} still usable"
            );
        }
        check_allocator(&free, PhysFrame::new(0x100));
    }
    assert!(!cmdline.as_str().contains('\0'));
    check_options(cmdline.as_str());
});
