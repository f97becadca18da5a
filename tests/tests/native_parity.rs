//! The simulated machine matches what backend-native's entry code sees and uses.

use pvops_core::addr::PhysFrame;
use pvops_core::MmuOps;
use pvops_tests::sim::{
    SimConfig, BOOTSTRAP_MAP_BYTES, MULTIBOOT_INFO_ADDR, MULTIBOOT_MAGIC, MULTIBOOT_TAG,
    NATIVE_LAYOUT,
};

#[test]
fn sim_layout_is_the_native_layout() {
    assert_eq!(NATIVE_LAYOUT, backend_native::LAYOUT);
    assert_eq!(BOOTSTRAP_MAP_BYTES, backend_native::BOOTSTRAP_MAPPED);
    let sim = SimConfig::new(64).build();
    assert_eq!(sim.layout(), backend_native::LAYOUT);
    assert_eq!(<pvops_tests::SimMachine as MmuOps>::NAME, "sim");
    const { assert!(!<pvops_tests::SimMachine as MmuOps>::READ_ONLY_PAGE_TABLES) };
}

#[test]
fn native_multiboot_parser_reads_the_sims_info_block() {
    for (mib, holes) in [(32u32, vec![]), (2048, vec![(100u64 << 20, 1u64 << 20)])] {
        let mut cfg = SimConfig::new(mib).cmdline("/kernel pvops.batch=8 console=ttyS0");
        for (s, l) in holes {
            cfg = cfg.hole(s, l);
        }
        let sim = cfg.build();
        let mut low = vec![0u8; 0x10000];
        sim.read_phys(pvops_core::addr::PhysAddr::new(0), &mut low);
        let read = |a: u32, l: usize| {
            low.get(a as usize..(a as usize + l).min(low.len()))
                .filter(|b| !b.is_empty())
        };
        let mut cmdline = pvops_core::cmdline::CmdlineCopy::empty();
        let mb = backend_native::multiboot::parse(
            MULTIBOOT_MAGIC,
            MULTIBOOT_INFO_ADDR.as_u64() as u32,
            &read,
            &mut cmdline,
        )
        .unwrap_or_else(|e| panic!("{mib} MiB: {e}"));
        assert_eq!(
            mb.memory.regions(),
            sim.memory_map().regions(),
            "{mib} MiB memory map"
        );
        assert_eq!(cmdline.as_str(), "/kernel pvops.batch=8 console=ttyS0");
        assert_eq!(&low[0x9000 + 28..0x9000 + 44], MULTIBOOT_TAG);
        let info = sim.boot_info();
        assert_eq!(info.memory.regions(), sim.memory_map().regions());
        // Like the native stub: the bootstrap table is the image's last frames, first_free is
        // the end of the image, the probe is the multiboot info.
        assert_eq!(info.bootstrap_tables.end, info.kernel_image.end);
        assert_eq!(info.first_free, info.kernel_image.end);
        assert_eq!(
            info.bootstrap_reach,
            PhysFrame::new(((64u64 << 20).min((mib as u64) << 20) >> 12) as u32)
        );
        assert_eq!(info.probe.map(|p| p.addr), Some(MULTIBOOT_INFO_ADDR));
    }
}
