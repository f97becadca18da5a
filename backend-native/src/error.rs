//! The native backend's error and the checks that produce it (plain code, tested on the
//! host; the MMU that uses them exists only on the i686 target).

use core::fmt;
use pvops_core::addr::{FrameRange, PhysFrame};

/// Why the native backend refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeError {
    /// `pagetable_setup_done` was called while cr3 does not hold the kernel's root, or still
    /// holds a bootstrap frame: retiring the bootstrap table would free the live table.
    BootstrapStillLive {
        /// The live root (cr3).
        live: PhysFrame,
        /// The root `pagetable_setup_done` was told is live.
        root: PhysFrame,
        /// The bootstrap table's frames.
        bootstrap: FrameRange,
    },
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BootstrapStillLive {
                live,
                root,
                bootstrap,
            } => write!(
                f,
                "pagetable_setup_done: cr3 pfn {live} is not the kernel root pfn {root} off the bootstrap table pfn {}..{}",
                bootstrap.start, bootstrap.end
            ),
        }
    }
}

/// The check of the native `pagetable_setup_done`: the bootstrap frames are released only
/// when the live root (`live`, cr3) is the kernel's `root` and not one of them.
pub fn retire_bootstrap(
    live: PhysFrame,
    root: PhysFrame,
    bootstrap: FrameRange,
) -> Result<FrameRange, NativeError> {
    if live != root || bootstrap.contains(live) {
        return Err(NativeError::BootstrapStillLive {
            live,
            root,
            bootstrap,
        });
    }
    Ok(bootstrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: the native `pagetable_setup_done` handed the bootstrap frames to the
    /// allocator without looking at cr3, so calling it before the switch freed the live
    /// table. It now refuses unless cr3 holds the kernel root, off the bootstrap frames.
    #[test]
    fn setup_done_refuses_while_cr3_is_on_the_bootstrap_table() {
        let bootstrap = FrameRange {
            start: PhysFrame::new(0x16b),
            end: PhysFrame::new(0x16d),
        };
        let (boot_root, kernel_root) = (PhysFrame::new(0x16b), PhysFrame::new(0x1af));
        assert_eq!(
            retire_bootstrap(boot_root, kernel_root, bootstrap),
            Err(NativeError::BootstrapStillLive {
                live: boot_root,
                root: kernel_root,
                bootstrap
            })
        );
        // A "root" that is itself a bootstrap frame is refused too.
        assert!(retire_bootstrap(boot_root, boot_root, bootstrap).is_err());
        assert_eq!(
            retire_bootstrap(kernel_root, kernel_root, bootstrap),
            Ok(bootstrap)
        );
    }
}
