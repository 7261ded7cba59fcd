//! OVMF footer GUID table (read from the end of a firmware image): parse, accessors,
//! encode round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::ovmf::FooterTable;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = FooterTable::parse(data) else {
        return;
    };
    let _ = t.secret_area();
    let _ = t.hashes_area();
    let _ = t.es_reset_addr();
    let _ = t.sev_metadata_offset();
    let _ = t.supports_kernel_hashes();
    if let Ok(mut enc) = t.encode() {
        // encode() yields the table as it sits before the image's last 32 bytes.
        enc.extend_from_slice(&[0u8; 32]);
        let again = FooterTable::parse(&enc).expect("re-parse of encode() output");
        assert_eq!(again, t, "parse(encode(t)) != t");
    }
});
