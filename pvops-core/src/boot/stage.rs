//! The stages: the boot path's own, the stages a kernel names for its work after it, and the
//! one running now (for trap handlers, so a fault says where it happened).

use core::sync::atomic::{AtomicPtr, Ordering};

/// A stage a kernel runs after the boot path, declared as a static so that its name can be
/// the current stage: `static MINE: KernelStage = KernelStage::new("my_stage");` then
/// `set_stage(Stage::Kernel(&MINE))`.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelStage {
    name: &'static str,
}

impl KernelStage {
    /// A stage called `name` (printed in `stage <name> ok` and in `stage=<name>`).
    pub const fn new(name: &'static str) -> KernelStage {
        KernelStage { name }
    }
    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// Where a run is: before the boot path, one of its stages, or a stage of the kernel's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// A stage the kernel named for its own work after the boot path.
    Kernel(&'static KernelStage),
}

/// Names of [`Stage::Entry`] and the boot path's stages, in [`Stage::position`] order; the
/// current stage points at one of these or at a kernel's [`KernelStage`].
static BUILTIN: [KernelStage; 7] = [
    KernelStage::new("entry"),
    KernelStage::new("banner"),
    KernelStage::new("early_ioremap"),
    KernelStage::new("pagetable_setup_start"),
    KernelStage::new("build_direct_map"),
    KernelStage::new("write_cr3"),
    KernelStage::new("pagetable_setup_done"),
];

impl Stage {
    /// Where this stage is in [`BOOT_STAGES`] (`None` for `Entry` and a kernel's stages).
    pub fn position(self) -> Option<usize> {
        BOOT_STAGES.iter().position(|s| *s == self)
    }

    fn builtin(self) -> Option<&'static KernelStage> {
        let i = match self {
            Stage::Entry => 0,
            Stage::Kernel(_) => return None,
            s => 1 + s.position()?,
        };
        BUILTIN.get(i)
    }

    /// The name printed in `stage <name> ok` and `stage=<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Kernel(k) => k.name(),
            s => s.builtin().map_or("?", KernelStage::name),
        }
    }
}

/// The stages of the generic boot path, in order.
pub const BOOT_STAGES: [Stage; 6] = [
    Stage::Banner,
    Stage::EarlyIoremap,
    Stage::PagetableSetupStart,
    Stage::BuildDirectMap,
    Stage::WriteCr3,
    Stage::PagetableSetupDone,
];

/// The current stage; only ever points at a `'static` [`KernelStage`].
static CURRENT_STAGE: AtomicPtr<KernelStage> = AtomicPtr::new(core::ptr::null_mut());

/// The stage running now (for trap handlers).
pub fn current_stage() -> Stage {
    let p = CURRENT_STAGE.load(Ordering::Acquire);
    if p.is_null() {
        return Stage::Entry;
    }
    let i = BUILTIN.iter().position(|b| core::ptr::eq(b, p));
    match i {
        Some(0) => Stage::Entry,
        Some(i) => BOOT_STAGES[i - 1],
        // SAFETY: every non-null value stored comes from a `&'static KernelStage`.
        None => Stage::Kernel(unsafe { &*p }),
    }
}

/// Sets the stage running now.
pub fn set_stage(s: Stage) {
    let k: &'static KernelStage = match s {
        Stage::Kernel(k) => k,
        s => s.builtin().unwrap_or(&BUILTIN[0]),
    };
    CURRENT_STAGE.store(
        k as *const KernelStage as *mut KernelStage,
        Ordering::Release,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    static MINE: KernelStage = KernelStage::new("address_spaces");

    #[test]
    fn stages_round_trip_through_the_current_stage() {
        for s in [Stage::Entry, Stage::Kernel(&MINE)]
            .into_iter()
            .chain(BOOT_STAGES)
        {
            set_stage(s);
            assert_eq!(current_stage(), s);
            assert_eq!(current_stage().name(), s.name());
        }
        assert_eq!(Stage::Kernel(&MINE).name(), "address_spaces");
        assert_eq!(Stage::PagetableSetupDone.name(), "pagetable_setup_done");
        assert_eq!(Stage::BuildDirectMap.position(), Some(3));
        assert_eq!(Stage::Entry.position(), None);
    }
}
