//! The `pvops.*` switches of the guest command line: the core's own, and the way a
//! backend's own switches reach it ([`crate::MmuOps::set_option`]).
//!
//! `pvops.early_ioremap=swapper` re-creates a Linux 2.6.25-rc1 bug; it exists only when the
//! kernel enables pvops-core's `bug-early-ioremap-swapper` feature (off by default). A
//! kernel built without it refuses the switch ([`OptionErrorKind::NotBuiltIn`]).

use crate::ops::MmuOps;
use core::fmt;

/// Which table early_ioremap walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoremapWalk {
    /// The live table found through `read_cr3` (correct; default).
    Cr3,
    /// The kernel's static table (`pvops.early_ioremap=swapper`: the 2.6.25-rc1 bug).
    #[cfg(feature = "bug-early-ioremap-swapper")]
    Swapper,
}

/// The core's options, parsed from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// `pvops.early_ioremap=cr3|swapper`.
    pub early_ioremap: IoremapWalk,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            early_ioremap: IoremapWalk::Cr3,
        }
    }
}

/// Why a `pvops.*` word was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionErrorKind {
    /// No such switch (on this backend).
    Unknown,
    /// The switch exists but its value is not valid.
    BadValue,
    /// The switch re-creates a bug and this kernel was built without that feature.
    NotBuiltIn,
    /// The switch can only be set before the boot path starts.
    TooLate,
}

/// A `pvops.*` word that could not be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionError<'a> {
    /// The offending word.
    pub word: &'a str,
    /// Why.
    pub kind: OptionErrorKind,
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad command-line option `{}`", self.word)?;
        match self.kind {
            OptionErrorKind::Unknown | OptionErrorKind::BadValue => Ok(()),
            OptionErrorKind::NotBuiltIn => f.write_str(
                " (a 2008 bug re-creation switch: this kernel is built without its feature)",
            ),
            OptionErrorKind::TooLate => f.write_str(" (only before the boot path)"),
        }
    }
}

/// The `pvops.*` words of `cmdline`, split into key and optional value.
fn switches(cmdline: &str) -> impl Iterator<Item = (&str, &str, Option<&str>)> {
    cmdline.split_ascii_whitespace().filter_map(|word| {
        let opt = word.strip_prefix("pvops.")?;
        let (key, value) = opt
            .split_once('=')
            .map_or((opt, None), |(k, v)| (k, Some(v)));
        Some((word, key, value))
    })
}

impl BootOptions {
    /// Parses the `pvops.*` words of `cmdline`: the core's own here, every other one handed
    /// to `backend` through [`MmuOps::set_option`] (which refuses what it does not know).
    /// Other words are left to the kernel. Call it before the boot path.
    pub fn parse<'a, P: MmuOps + ?Sized>(
        cmdline: &'a str,
        backend: &mut P,
    ) -> Result<BootOptions, OptionError<'a>> {
        let mut o = BootOptions::default();
        for (word, key, value) in switches(cmdline) {
            let r = match key {
                "early_ioremap" => o.set_early_ioremap(value),
                _ => backend.set_option(key, value),
            };
            r.map_err(|kind| OptionError { word, kind })?;
        }
        Ok(o)
    }

    fn set_early_ioremap(&mut self, value: Option<&str>) -> Result<(), OptionErrorKind> {
        self.early_ioremap = match value {
            Some("cr3") => IoremapWalk::Cr3,
            #[cfg(feature = "bug-early-ioremap-swapper")]
            Some("swapper") => IoremapWalk::Swapper,
            #[cfg(not(feature = "bug-early-ioremap-swapper"))]
            Some("swapper") => return Err(OptionErrorKind::NotBuiltIn),
            _ => return Err(OptionErrorKind::BadValue),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr};
    use crate::ops::MemoryLayout;
    use crate::paging::{EntrySlot, Level, PageTableEntry};

    #[derive(Clone, Copy, Debug, Default)]
    struct NoCalls;
    impl fmt::Display for NoCalls {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            Ok(())
        }
    }
    impl crate::ops::Counters for NoCalls {
        fn since(&self, _: &Self) -> Self {
            NoCalls
        }
        fn hypercalls(&self) -> u64 {
            0
        }
        fn write_json(&self, _: &str, _: &mut dyn fmt::Write) -> fmt::Result {
            Ok(())
        }
    }

    /// A backend that takes `pvops.batch=N` and records it (no page tables).
    #[derive(Default)]
    struct Opts {
        batch: Option<u32>,
    }

    impl MmuOps for Opts {
        crate::direct_mmu_hooks!();

        type Error = core::convert::Infallible;
        type Counters = NoCalls;
        const NAME: &'static str = "opts";
        const READ_ONLY_PAGE_TABLES: bool = false;
        fn layout(&self) -> MemoryLayout {
            unimplemented!()
        }
        fn phys_to_machine(&self, f: PhysFrame) -> Option<MachineFrame> {
            Some(MachineFrame::new(f.number()))
        }
        fn machine_to_phys(&self, f: MachineFrame) -> Option<PhysFrame> {
            Some(PhysFrame::new(f.number()))
        }
        fn read_cr3(&self) -> PhysFrame {
            PhysFrame::new(0)
        }
        unsafe fn write_cr3(&mut self, _: PhysFrame) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn set_pte(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn set_pmd(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn set_pud(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn pte_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn set_pte_atomic(
            &mut self,
            _: EntrySlot,
            _: PageTableEntry,
        ) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn pmd_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
            Ok(())
        }
        unsafe fn pud_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
            Ok(())
        }
        fn flush_tlb_single(&mut self, _: VirtAddr) -> Result<(), Self::Error> {
            Ok(())
        }
        fn flush_tlb_all(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
        fn pagetable_setup_start(&mut self, _: PhysFrame) -> Result<(), Self::Error> {
            Ok(())
        }
        fn pagetable_setup_done(&mut self, _: PhysFrame) -> Result<FrameRange, Self::Error> {
            Ok(FrameRange::EMPTY)
        }
        fn alloc_pt(&mut self, _: PhysFrame, _: Level) -> Result<(), Self::Error> {
            Ok(())
        }
        fn release_pt(&mut self, _: PhysFrame, _: Level) -> Result<(), Self::Error> {
            Ok(())
        }
        fn counters(&self) -> NoCalls {
            NoCalls
        }
        fn set_option(&mut self, key: &str, value: Option<&str>) -> Result<(), OptionErrorKind> {
            match (key, value) {
                ("batch", Some(v)) => {
                    self.batch = Some(v.parse().map_err(|_| OptionErrorKind::BadValue)?);
                    Ok(())
                }
                _ => Err(OptionErrorKind::Unknown),
            }
        }
    }

    #[test]
    fn core_switches_here_backend_switches_to_the_backend() {
        let mut b = Opts::default();
        let o = BootOptions::parse(
            "/guest.elf console=x pvops.early_ioremap=cr3 pvops.batch=1",
            &mut b,
        )
        .unwrap();
        assert_eq!(o, BootOptions::default());
        assert_eq!(b.batch, Some(1), "the backend got its switch");
        let e = BootOptions::parse("pvops.bogus", &mut b).unwrap_err();
        assert_eq!((e.word, e.kind), ("pvops.bogus", OptionErrorKind::Unknown));
        let e = BootOptions::parse("pvops.batch=x", &mut b).unwrap_err();
        assert_eq!(e.kind, OptionErrorKind::BadValue);
        let e = BootOptions::parse("pvops.early_ioremap=elsewhere", &mut b).unwrap_err();
        assert_eq!(e.kind, OptionErrorKind::BadValue);
        assert_eq!(
            BootOptions::parse("", &mut b).unwrap(),
            BootOptions::default()
        );
    }

    #[cfg(feature = "bug-early-ioremap-swapper")]
    #[test]
    fn the_swapper_switch_exists_with_its_feature() {
        let o = BootOptions::parse("pvops.early_ioremap=swapper", &mut Opts::default()).unwrap();
        assert_eq!(o.early_ioremap, IoremapWalk::Swapper);
    }

    #[cfg(not(feature = "bug-early-ioremap-swapper"))]
    #[test]
    fn without_its_feature_the_swapper_switch_is_refused() {
        let e =
            BootOptions::parse("pvops.early_ioremap=swapper", &mut Opts::default()).unwrap_err();
        assert_eq!(e.kind, OptionErrorKind::NotBuiltIn);
        struct Line([u8; 160], usize);
        impl fmt::Write for Line {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let end = self.1 + s.len();
                self.0
                    .get_mut(self.1..end)
                    .ok_or(fmt::Error)?
                    .copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        let mut line = Line([0; 160], 0);
        fmt::write(&mut line, format_args!("{e}")).unwrap();
        let text = core::str::from_utf8(&line.0[..line.1]).unwrap();
        assert!(text.contains("built without"), "{text}");
    }
}
