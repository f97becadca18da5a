//! The stages of the boot path, and the one running now (for trap handlers).

use core::sync::atomic::{AtomicU8, Ordering};

/// A boot stage (also used by trap handlers to say where a fault happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Backend entry, before the boot path.
    Entry,
    /// Linked backends, memory map, command line.
    Banner,
    /// early_ioremap on the bootstrap table.
    EarlyIoremap,
    /// The kernel's root table handed to the backend.
    PagetableSetupStart,
    /// The direct map built into the kernel's table.
    BuildDirectMap,
    /// The switch to the kernel's table.
    WriteCr3,
    /// The bootstrap table retired, its frames freed.
    PagetableSetupDone,
    /// Mapping, reuse and early_ioremap on the kernel's table.
    Exercise,
    /// Bad operations that must be refused (kernel-defined).
    Misuse,
    /// Everything passed.
    Done,
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Entry,
        Stage::Banner,
        Stage::EarlyIoremap,
        Stage::PagetableSetupStart,
        Stage::BuildDirectMap,
        Stage::WriteCr3,
        Stage::PagetableSetupDone,
        Stage::Exercise,
        Stage::Misuse,
        Stage::Done,
    ];
    /// The name printed in `stage <name> ok`.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Entry => "entry",
            Stage::Banner => "banner",
            Stage::EarlyIoremap => "early_ioremap",
            Stage::PagetableSetupStart => "pagetable_setup_start",
            Stage::BuildDirectMap => "build_direct_map",
            Stage::WriteCr3 => "write_cr3",
            Stage::PagetableSetupDone => "pagetable_setup_done",
            Stage::Exercise => "exercise",
            Stage::Misuse => "misuse",
            Stage::Done => "done",
        }
    }
}

/// The stages of the generic boot path, in order.
pub const BOOT_STAGES: [Stage; 7] = [
    Stage::Banner,
    Stage::EarlyIoremap,
    Stage::PagetableSetupStart,
    Stage::BuildDirectMap,
    Stage::WriteCr3,
    Stage::PagetableSetupDone,
    Stage::Exercise,
];

static CURRENT_STAGE: AtomicU8 = AtomicU8::new(Stage::Entry as u8);

/// The stage running now (for trap handlers).
pub fn current_stage() -> Stage {
    let n = CURRENT_STAGE.load(Ordering::Relaxed) as usize;
    Stage::ALL.get(n).copied().unwrap_or(Stage::Entry)
}

/// Sets the stage running now.
pub fn set_stage(s: Stage) {
    CURRENT_STAGE.store(s as u8, Ordering::Relaxed);
}
