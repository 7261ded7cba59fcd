//! SEV-SNP attestation report as a verifier receives it: `snp::report::AttestationReport`
//! `from_bytes`, `to_bytes`, `verify`, product/TCB inference. Invariants: whatever parses
//! re-encodes to the same bytes; no input verifies against an in-process key; a report signed
//! here over fuzzed fields verifies and stops verifying when a signed byte changes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use sev_proto::snp::report::{AttestationReport, REPORT_SIZE, SIGNED_LEN};
use std::sync::OnceLock;

fn keys() -> &'static (PKey<Private>, PKey<Public>) {
    static K: OnceLock<(PKey<Private>, PKey<Public>)> = OnceLock::new();
    K.get_or_init(|| {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let k = PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap();
        let p = PKey::public_key_from_pem(&k.public_key_to_pem().unwrap()).unwrap();
        (k, p)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, public) = keys();
    let Ok(r) = AttestationReport::from_bytes(data) else {
        return;
    };
    assert_eq!(
        &r.to_bytes().unwrap()[..],
        data,
        "re-encoding changed the report"
    );
    assert!(r.verify(public).is_err(), "an unsigned input verified");
    let _ = r.product();
    let _ = r.decode_tcb(r.reported_tcb);
    let mut s = r.clone();
    s.sign(key).expect("signing a parsed report");
    s.verify(public).expect("a report we signed verifies");
    let pos = usize::from(data[0x50]) * 3 % SIGNED_LEN;
    let mut b = s.to_bytes().unwrap();
    assert_eq!(b.len(), REPORT_SIZE);
    b[pos] ^= 1;
    if let Ok(t) = AttestationReport::from_bytes(&b) {
        assert!(
            t.verify(public).is_err(),
            "flipping byte {pos:#x} kept the signature valid"
        );
    }
});
