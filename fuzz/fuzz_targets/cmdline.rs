//! Fuzzes the `pvops.*` command-line parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_fuzz::check_options;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmdline) = core::str::from_utf8(data) {
        check_options(cmdline);
    }
});
