//! Fuzzes the memory map a loader reports (region by region, as the multiboot, Xen and PVH
//! paths add them), the loader's reservations cut out of it, and the frame allocator built on
//! both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_core::addr::{PhysAddr, PhysFrame};
use pvops_core::mem::{MemoryMap, RegionKind, Reservations};
use pvops_fuzz::{check_allocator, check_map, check_without, u32_le};

fuzz_target!(|data: &[u8]| {
    let Some(first_free) = u32_le(data) else {
        return;
    };
    let mut map = MemoryMap::new();
    let mut reserved = Reservations::new();
    for e in data[4..].chunks_exact(17) {
        let start = u64::from_le_bytes(e[0..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap());
        // 0 and 1 add a region; 2 adds RAM the loader filled (a usable region, reserved);
        // 3 reserves a range only.
        let kind = match e[16] & 3 {
            0 => Some(RegionKind::Reserved),
            1 | 2 => Some(RegionKind::Usable),
            _ => None,
        };
        if let Some(kind) = kind {
            let before = map.regions().len();
            match map.add(PhysAddr::new(start), len, kind) {
                Ok(()) => {
                    assert_eq!(map.regions().len(), before + 1);
                    assert!(map
                        .regions()
                        .iter()
                        .any(|r| r.start.as_u64() == start && r.len == len && r.kind == kind));
                }
                Err(_) => assert_eq!(map.regions().len(), before),
            }
            check_map(&map);
        }
        if e[16] & 3 >= 2 {
            let before = reserved.len();
            match reserved.add("fuzz", PhysAddr::new(start), len) {
                Ok(()) => assert_eq!(reserved.len(), before + usize::from(len != 0)),
                Err(_) => assert_eq!(reserved.len(), before),
            }
        }
    }
    check_allocator(&map, PhysFrame::new(first_free));
    if let Ok(free) = map.without(&reserved) {
        check_without(&map, &reserved, &free);
        check_allocator(&free, PhysFrame::new(first_free));
    }
});
