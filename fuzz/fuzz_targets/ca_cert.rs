//! AMD CA certificates (ARK/ASK, variable length): parse, parse_prefix, re-encode,
//! self-signature check with attacker-chosen moduli.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::cert::CaCert;

fuzz_target!(|data: &[u8]| {
    let _ = CaCert::peek_len(data);
    if let Ok((c, rest)) = CaCert::parse_prefix(data) {
        assert!(rest.len() < data.len(), "parse_prefix consumed nothing");
        let enc = c.encode();
        let again = CaCert::parse(&enc).expect("re-parse of encode() output");
        assert!(again == c, "parse(encode(c)) != c");
        let _ = c.fingerprint();
        let _ = c.to_string();
        let _ = c.rsa_public_key();
        let _ = c.verify_self_signed();
    }
    let _ = CaCert::parse(data);
});
