//! SEV certificates (2084-byte PDH/PEK/OCA/CEK layout): parse, re-encode, key extraction,
//! signature checks on attacker-chosen keys.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::cert::SevCert;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = SevCert::parse(data) else {
        return;
    };
    let enc = c.encode();
    let again = SevCert::parse(&enc).expect("re-parse of encode() output");
    assert!(again == c, "parse(encode(c)) != c");
    let _ = c.fingerprint();
    let _ = c.key_desc();
    let _ = c.to_string();
    let _ = c.ec_public_key();
    let _ = c.rsa_public_key();
    let _ = c.unsigned();
    let _ = c.verify_self_signed();
});
