//! Calibration loops for the performance figures: fixed work timed with the platform's cycle
//! counter, so a run can tell a slower clock or a slower CPU (a domU's TSC, QEMU under Xen)
//! from a slower kernel. The same loops run on every backend; `cargo xtask bench` divides.

use core::hint::black_box;
use pvops_core::Platform;

/// Iterations of the arithmetic loop.
pub const ALU_ITERATIONS: u32 = 1 << 20;
/// PAE-entry stores of the store loop (as many as a 512 MiB direct map has PTEs).
pub const STORES: u32 = 1 << 17;

/// Cycles of each loop, and the not-running time (ns) inside them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calibration {
    /// Cycles of [`ALU_ITERATIONS`] rounds of a 32-bit LCG (registers only).
    pub alu_cycles: u64,
    /// Cycles of [`STORES`] 8-byte stores, high half then low half as a PAE entry is
    /// written, into one 4 KiB page (no page-table walks after the first).
    pub store_cycles: u64,
    /// Nanoseconds the CPU did not run the kernel during all rounds (the fastest rounds
    /// are taken, so this is a hint of how disturbed the run was, not a correction).
    pub notrun_ns: u64,
    /// Cycles per microsecond of the platform's clock over the whole kernel run, where the
    /// backend has an independent clock (Xen's system time); filled in by the caller.
    pub cycles_per_us: Option<u64>,
    /// The store phase's profile ([`crate::profile`]), where it ran; filled in by the caller.
    pub profile: Option<crate::profile::StoreProfile>,
}

/// Rounds of each loop; the figures are the fastest round (the host is shared: a slow round
/// is someone else's).
pub const ROUNDS: u32 = 3;

/// Runs both loops [`ROUNDS`] times on `p`'s clock.
pub fn run<P: Platform>(p: &P) -> Calibration {
    let nr0 = p.not_running_ns();
    let (mut alu_cycles, mut store_cycles) = (u64::MAX, u64::MAX);
    for _ in 0..ROUNDS {
        let t0 = p.cycles();
        alu_loop();
        let t1 = p.cycles();
        store_loop();
        let t2 = p.cycles();
        alu_cycles = alu_cycles.min(t1.wrapping_sub(t0));
        store_cycles = store_cycles.min(t2.wrapping_sub(t1));
    }
    let notrun_ns = match (nr0, p.not_running_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    Calibration {
        alu_cycles,
        store_cycles,
        notrun_ns,
        cycles_per_us: None,
        profile: None,
    }
}

fn alu_loop() {
    let mut x = black_box(1u32);
    for _ in 0..black_box(ALU_ITERATIONS) {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    }
    black_box(x);
}

fn store_loop() {
    let mut page = [0u32; 1024];
    for i in 0..black_box(STORES) {
        let at = ((i & 511) * 2) as usize;
        let slot = black_box(&mut page);
        slot[at + 1] = i >> 20;
        slot[at] = i << 12 | 0x63;
    }
    black_box(&page);
}
