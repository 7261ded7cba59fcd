//! The kernel-hashes table (SEV measured direct boot): `parse_table`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::kernel_hashes::parse_table;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_table(data) {
        let _ = format!("{h:?}");
    }
});
