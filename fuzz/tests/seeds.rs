//! The checked-in seeds come from boots that PASSed: each must parse.

use pvops_core::addr::PhysFrame;
use pvops_fuzz::{u32_le, PhysSegments};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn every_seed_parses() {
    for data in seeds("multiboot") {
        let mem = PhysSegments::decode(&data).unwrap();
        let mut c = pvops_core::cmdline::CmdlineCopy::empty();
        let read = |a: u32, l: usize| mem.read(a, l);
        let mb = backend_native::multiboot::parse(
            backend_native::multiboot::BOOTLOADER_MAGIC,
            mem.entry,
            &read,
            &mut c,
        )
        .unwrap();
        assert!(mb.memory.usable_bytes() > 0);
        assert!(!c.as_str().is_empty());
    }
    for data in seeds("hvm_start_info") {
        let mem = PhysSegments::decode(&data).unwrap();
        let read = |a: u64, l: usize| mem.read64(a, l);
        let si = platform_pvh::start_info::parse(mem.entry as u64, &read).unwrap();
        assert!(si.memory.usable_bytes() > 0);
    }
    for data in seeds("start_info") {
        let si = backend_xen::abi::StartInfo::from_bytes(&data[12..]).unwrap();
        let nr = si.nr_pages;
        let owned = |mfn: u32| (mfn < nr).then_some(PhysFrame::new(mfn));
        backend_xen::start_info::validate(
            &si,
            u32_le(&data).unwrap(),
            u32_le(&data[4..]).unwrap(),
            PhysFrame::new(u32_le(&data[8..]).unwrap()),
            &owned,
        )
        .unwrap();
    }
}
