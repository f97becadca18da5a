//! Fuzzes the memory map a loader reports (region by region, as the multiboot and Xen paths
//! add them) and the frame allocator built on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_core::addr::{PhysAddr, PhysFrame};
use pvops_core::mem::{MemoryMap, RegionKind};
use pvops_fuzz::{check_allocator, check_map, u32_le};

fuzz_target!(|data: &[u8]| {
    let Some(first_free) = u32_le(data) else {
        return;
    };
    let mut map = MemoryMap::new();
    for e in data[4..].chunks_exact(17) {
        let start = u64::from_le_bytes(e[0..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let kind = if e[16] & 1 == 1 {
            RegionKind::Usable
        } else {
            RegionKind::Reserved
        };
        let before = map.regions().len();
        match map.add(PhysAddr(start), len, kind) {
            Ok(()) => {
                assert_eq!(map.regions().len(), before + 1);
                assert!(map
                    .regions()
                    .iter()
                    .any(|r| r.start.0 == start && r.len == len && r.kind == kind));
            }
            Err(_) => assert_eq!(map.regions().len(), before),
        }
        check_map(&map);
    }
    check_allocator(&map, PhysFrame(first_free));
});
