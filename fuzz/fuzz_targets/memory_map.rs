//! Fuzzes the memory map a loader reports (region by region, as the multiboot, Xen and PVH
//! paths add them), its boot-data reservations, and the frame allocator built on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_core::addr::{PhysAddr, PhysFrame};
use pvops_core::mem::{MemoryMap, RegionKind};
use pvops_fuzz::{check_allocator, check_map, check_reserve, u32_le};

fuzz_target!(|data: &[u8]| {
    let Some(first_free) = u32_le(data) else {
        return;
    };
    let mut map = MemoryMap::new();
    for e in data[4..].chunks_exact(17) {
        let start = u64::from_le_bytes(e[0..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let kind = match e[16] & 3 {
            0 => RegionKind::Reserved,
            1 => RegionKind::Usable,
            2 => RegionKind::BootData,
            _ => {
                let before = map.clone();
                match map.reserve(PhysAddr::new(start), len) {
                    Ok(()) => check_reserve(&before, &map, start, len),
                    Err(_) => assert_eq!(before.regions(), map.regions()),
                }
                check_map(&map);
                continue;
            }
        };
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
    check_allocator(&map, PhysFrame::new(first_free));
});
