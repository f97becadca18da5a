//! Prints the hypercalls of building direct maps of N PTEs on the model of Xen's rules, as
//! one JSON object per line: {"ptes":N,"mode":"batched","hypercalls":H,...}.

use pvops_core::Counters as _;
use pvops_tests::directmap_cost::{hypercall_bound, measure, MODES, SIZES};
use std::process::ExitCode;

fn main() -> ExitCode {
    for n in SIZES {
        for (mode, batch) in MODES {
            match measure(n, batch) {
                Ok(c) => println!(
                    "{{\"ptes\":{n},\"mode\":\"{mode}\",\"batch\":{batch},\"hypercalls\":{},\"mmu_update_calls\":{},\"mmu_update_entries\":{},\"mmuext_calls\":{},\"multicalls\":{},\"l1_tables\":{},\"bound\":{}}}",
                    c.counters.hypercalls(),
                    c.counters.mmu_update_calls,
                    c.counters.mmu_update_entries,
                    c.counters.mmuext_calls,
                    c.counters.multicall_calls,
                    c.tables,
                    hypercall_bound(n)
                ),
                Err(e) => {
                    eprintln!("xen-model-cost: N={n} {mode}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
