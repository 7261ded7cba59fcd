//! The LAUNCH_ATTESTATION report as the guest owner receives it from the (untrusted) host:
//! `AttestationReport::from_bytes`, `to_bytes`, and `verify` against a fixed PEK certificate.
//! Invariants: whatever parses re-encodes to the same bytes; an input report never verifies
//! (the PEK is generated in-process); a report we sign over fuzzed fields verifies,
//! and stops verifying when any byte of its signed region or signature changes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sev_proto::attestation::AttestationReport;
use sev_proto::cert::{Algo, SevCert, Usage};
use std::sync::OnceLock;

fn pek() -> &'static (EcKey<Private>, SevCert) {
    static K: OnceLock<(EcKey<Private>, SevCert)> = OnceLock::new();
    K.get_or_init(|| {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let k = EcKey::generate(&g).unwrap();
        let c = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &k).unwrap();
        (k, c)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, cert) = pek();
    // Unpadded: the exact-length rule is part of the surface (short and long inputs must be
    // refused with an error, not a panic).
    match AttestationReport::from_bytes(data) {
        Ok(r) => {
            assert_eq!(&r.to_bytes()[..], data, "re-encoding changed the report");
            // Our PEK is generated in this process, so no input can carry its signature:
            // a report that verifies would be a forged ECDSA signature.
            assert!(
                r.verify(cert).is_err(),
                "a report nobody signed verified against the PEK"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // Sign a report made of fuzzed fields, then tamper with one byte chosen by the input.
    let mut buf = data.to_vec();
    buf.resize(AttestationReport::LEN, 0);
    let Ok(mut r) = AttestationReport::from_bytes(&buf) else {
        panic!("a report of exactly LEN bytes did not parse");
    };
    r.sign(key).expect("signing with a P-384 PEK");
    r.verify(cert).expect("a report we signed verifies");
    let bytes = r.to_bytes();
    let pos = data.first().map(|b| *b as usize).unwrap_or(0) % AttestationReport::LEN;
    let bit = data.get(1).map(|b| b % 8).unwrap_or(0);
    // 0x34..0x40 (usage, algo, reserved) are outside the signed region; usage and algo are
    // checked by value, the reserved word is not covered by the signature.
    if (0x3C..0x40).contains(&pos) {
        return;
    }
    let mut t = bytes;
    t[pos] ^= 1 << bit;
    let tampered = AttestationReport::from_bytes(&t).unwrap();
    assert!(
        tampered.verify(cert).is_err(),
        "flipping bit {bit} of byte {pos:#x} left the signature valid"
    );
});
