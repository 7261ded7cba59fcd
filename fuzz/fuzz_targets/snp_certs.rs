//! SEV-SNP certificates from an extended report / the host: `snp::certs::parse_cert_table`
//! and `VcekExtensions::from_der` on every blob. Invariants: no panic; a parsed table
//! re-encodes to a table that parses to the same entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::snp::certs::{encode_cert_table, parse_cert_table, VcekExtensions};

fuzz_target!(|data: &[u8]| {
    let _ = VcekExtensions::from_der(data);
    let Ok(es) = parse_cert_table(data) else {
        return;
    };
    for e in &es {
        if let Ok(v) = VcekExtensions::from_der(&e.data) {
            let _ = v.tcb(sev_proto::snp::tcb::TcbLayout::MilanGenoa);
        }
    }
    let b = encode_cert_table(&es).expect("re-encoding parsed entries");
    assert_eq!(parse_cert_table(&b).expect("re-parsing"), es);
});
