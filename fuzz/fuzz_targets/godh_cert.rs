//! The firmware's GODH certificate check (`check_godh`) and ECDH with the platform PDH key:
//! fuzzed 2084-byte certificates whose public key point is attacker-chosen.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sev_proto::cert::SevCert;
use sev_proto::session::{check_godh, ecdh_shared_secret};
use std::sync::OnceLock;

fn pdh() -> &'static EcKey<Private> {
    static K: OnceLock<EcKey<Private>> = OnceLock::new();
    K.get_or_init(|| {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        EcKey::generate(&g).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // Short inputs are padded to the certificate length so the fuzzer reaches the key
    // checks without having to discover the 2084-byte size first.
    let mut buf = data.to_vec();
    if buf.len() < SevCert::LEN {
        buf.resize(SevCert::LEN, 0);
    }
    let Ok(c) = SevCert::parse(&buf) else {
        return;
    };
    match check_godh(&c) {
        Ok(peer) => {
            assert!(peer.check_key().is_ok(), "check_godh accepted an invalid point");
            let z = ecdh_shared_secret(pdh(), &peer).expect("ECDH on a checked key");
            assert_eq!(z.len(), 48);
        }
        Err(e) => {
            let _ = e.status();
            let _ = e.to_string();
        }
    }
});
