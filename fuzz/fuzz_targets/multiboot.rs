//! Fuzzes the multiboot1 parser (info, memory map, command line) over a segmented physical
//! memory image, then what the boot does with its result: the frame allocator and the options.
#![no_main]

use backend_native::multiboot::{parse, BOOTLOADER_MAGIC};
use libfuzzer_sys::fuzz_target;
use pvops_core::addr::PhysFrame;
use pvops_fuzz::{check_allocator, check_map, check_options, PhysSegments};

fuzz_target!(|data: &[u8]| {
    let Some(mem) = PhysSegments::decode(data) else {
        return;
    };
    let read = |addr: u32, len: usize| mem.read(addr, len);
    if let Ok(mb) = parse(BOOTLOADER_MAGIC, mem.entry, &read) {
        assert!(!mb.cmdline.contains('\0'));
        check_map(&mb.memory);
        check_allocator(&mb.memory, PhysFrame(0x100));
        check_options(mb.cmdline);
    }
});
