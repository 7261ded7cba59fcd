//! Session blob (128 bytes) and the firmware's LAUNCH_START session path
//! (`platform_open_session`) with a fixed platform PDH key.
//! Input: 128-byte session blob, 4-byte policy, then 2084 bytes of GODH certificate (or
//! anything: wrong lengths must be refused cleanly).
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sev_proto::session::{platform_open_session, SessionBlob};
use std::sync::OnceLock;

fn pdh() -> &'static EcKey<Private> {
    static K: OnceLock<EcKey<Private>> = OnceLock::new();
    K.get_or_init(|| {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        EcKey::generate(&g).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = SessionBlob::from_bytes(data);
    if data.len() < 132 {
        return;
    }
    let (session, rest) = data.split_at(128);
    let policy = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let godh = &rest[4..];
    if let Ok(b) = SessionBlob::from_bytes(session) {
        assert_eq!(&b.to_bytes()[..], session, "to_bytes(from_bytes(x)) != x");
    }
    match platform_open_session(pdh(), godh, session, policy) {
        Ok(_) => panic!("a fuzzed session opened under a random PDH key (MAC forged?)"),
        Err(e) => {
            let _ = e.status();
            let _ = e.to_string();
        }
    }
});
