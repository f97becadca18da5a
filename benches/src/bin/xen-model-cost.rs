//! Prints the hypercalls of building direct maps of N PTEs on the model of Xen's rules, as
//! one JSON object per line: {"ptes":N,"mode":"batched","hypercalls":H,...}; then those of
//! runtime mapping and unmapping of N pages in one lazy section each:
//! {"runtime":"map","pages":N,"hypercalls":H,"bound":B,...}.

use pvops_core::Counters as _;
use pvops_tests::directmap_cost::{hypercall_bound, measure, MODES, SIZES};
use pvops_tests::runtime_map_cost;
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
    for n in runtime_map_cost::SIZES {
        let c = match runtime_map_cost::measure(n) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("xen-model-cost: runtime N={n}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (what, k) in [("map", c.map), ("unmap", c.unmap)] {
            println!(
                "{{\"runtime\":\"{what}\",\"pages\":{n},\"hypercalls\":{},\"mmu_update_calls\":{},\"mmu_update_entries\":{},\"mmuext_calls\":{},\"mmuext_ops\":{},\"multicalls\":{},\"bound\":{}}}",
                k.hypercalls(),
                k.mmu_update_calls,
                k.mmu_update_entries,
                k.mmuext_calls,
                k.mmuext_ops,
                k.multicall_calls,
                runtime_map_cost::hypercall_bound(n)
            );
        }
    }
    ExitCode::SUCCESS
}
