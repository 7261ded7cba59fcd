//! Property tests: every parser survives arbitrary bytes without panicking, and whatever parses
//! re-encodes to the same bytes; encoders round-trip through their parsers.

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::rsa::Rsa;
use proptest::prelude::*;
use sev_proto::cert::chain::{CaChain, FullChain, SevChain};
use sev_proto::cert::{Algo, CaCert, SevCert, Usage};
use sev_proto::kernel_hashes;
use sev_proto::measure::LaunchMeasure;
use sev_proto::ovmf::FooterTable;
use sev_proto::policy::GuestPolicy;
use sev_proto::secret::PacketHeader;
use sev_proto::secret_table::SecretTable;
use sev_proto::session::SessionBlob;
use std::sync::OnceLock;
use uuid::Uuid;

fn sev_template() -> &'static Vec<u8> {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let k = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        let mut c = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &k).unwrap();
        c.sign_with(&k, Usage::OCA).unwrap();
        c.encode()
    })
}

fn ca_template() -> &'static Vec<u8> {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let k = Rsa::generate(2048).unwrap();
        CaCert::new_self_signed_rsa(&k, Usage::ARK)
            .unwrap()
            .encode()
    })
}

fn mutate(base: &[u8], muts: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut v = base.to_vec();
    for (i, x) in muts {
        let n = v.len();
        v[i % n] = *x;
    }
    if let Some(c) = cut {
        v.truncate(c % (base.len() + 1));
    }
    v
}

fn muts() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>()), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sev_cert_garbage(b in prop::collection::vec(any::<u8>(), 0..2200)) {
        if let Ok(c) = SevCert::parse(&b) {
            prop_assert_eq!(c.encode(), b);
        }
    }

    #[test]
    fn sev_cert_mutated(m in muts(), cut in prop::option::of(any::<usize>())) {
        let b = mutate(sev_template(), &m, cut);
        match SevCert::parse(&b) {
            Ok(c) => {
                prop_assert_eq!(c.encode(), b.clone());
                prop_assert_eq!(SevCert::parse(&c.encode()).unwrap(), c.clone());
                // None of these may panic on a mutated certificate.
                let _ = c.ec_public_key();
                let _ = c.verify_self_signed();
                let _ = c.to_string();
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn ca_cert_garbage(b in prop::collection::vec(any::<u8>(), 0..1700)) {
        if let Ok(c) = CaCert::parse(&b) {
            prop_assert_eq!(c.encode(), b.clone());
        }
        let _ = CaChain::parse(&b);
    }

    #[test]
    fn ca_cert_mutated(m in muts(), cut in prop::option::of(any::<usize>())) {
        let b = mutate(ca_template(), &m, cut);
        if let Ok(c) = CaCert::parse(&b) {
            prop_assert_eq!(c.encode(), b.clone());
            let _ = c.rsa_public_key();
            let _ = c.verify_self_signed();
            let _ = c.to_string();
        }
    }

    #[test]
    fn chains_garbage(b in prop::collection::vec(any::<u8>(), 0..12000)) {
        let _ = SevChain::parse(&b);
        let _ = FullChain::parse(&b);
    }

    #[test]
    fn session_blob(b in prop::collection::vec(any::<u8>(), 0..300)) {
        match SessionBlob::from_bytes(&b) {
            Ok(s) => { prop_assert_eq!(b.len(), 128); prop_assert_eq!(&s.to_bytes()[..], &b[..]); }
            Err(_) => prop_assert_ne!(b.len(), 128),
        }
    }

    #[test]
    fn packet_header(b in prop::collection::vec(any::<u8>(), 0..120)) {
        match PacketHeader::from_bytes(&b) {
            Ok(h) => { prop_assert_eq!(b.len(), 52); prop_assert_eq!(&h.to_bytes()[..], &b[..]); }
            Err(_) => prop_assert_ne!(b.len(), 52),
        }
        if let Ok(m) = LaunchMeasure::from_bytes(&b) {
            prop_assert_eq!(&m.to_bytes()[..], &b[..]);
        }
    }

    #[test]
    fn footer_table_garbage(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = FooterTable::parse(&b);
        let _ = kernel_hashes::parse_table(&b);
    }

    #[test]
    fn footer_table_roundtrip(
        entries in prop::collection::vec((any::<u128>(), prop::collection::vec(any::<u8>(), 0..40)), 0..6),
        prefix in prop::collection::vec(any::<u8>(), 0..64),
        tail in prop::array::uniform32(any::<u8>()),
    ) {
        let t = FooterTable { entries: entries.into_iter().map(|(g, d)| (Uuid::from_u128(g), d)).collect() };
        let mut img = prefix;
        img.extend_from_slice(&t.encode().unwrap());
        img.extend_from_slice(&tail);
        prop_assert_eq!(FooterTable::parse(&img).unwrap(), t);
    }

    #[test]
    fn footer_table_corrupted_footer(
        entries in prop::collection::vec((any::<u128>(), prop::collection::vec(any::<u8>(), 0..40)), 1..4),
        m in muts(),
    ) {
        let t = FooterTable { entries: entries.into_iter().map(|(g, d)| (Uuid::from_u128(g), d)).collect() };
        let mut img = t.encode().unwrap();
        img.extend_from_slice(&[0u8; 32]);
        let img = mutate(&img, &m, None);
        let _ = FooterTable::parse(&img);
    }

    #[test]
    fn secret_table_garbage(b in prop::collection::vec(any::<u8>(), 0..300), m in muts()) {
        let _ = SecretTable::parse(&b);
        let mut t = SecretTable::new();
        t.push(Uuid::from_u128(7), b"secret".to_vec());
        let enc = mutate(&t.encode().unwrap(), &m, None);
        let _ = SecretTable::parse(&enc);
    }

    #[test]
    fn secret_table_roundtrip(
        entries in prop::collection::vec((any::<u128>(), prop::collection::vec(any::<u8>(), 0..50)), 0..6),
    ) {
        let t = SecretTable { entries: entries.into_iter().map(|(g, d)| (Uuid::from_u128(g), d)).collect() };
        let enc = t.encode().unwrap();
        prop_assert_eq!(enc.len() % 16, 0);
        let back = SecretTable::parse(&enc).unwrap();
        // A trailing entry can only be confused with padding if it is all zero (GUID nil and
        // nothing else), which its nonzero length field rules out.
        prop_assert_eq!(back, t);
    }

    #[test]
    fn crypto_entry_points_never_panic(
        z in prop::collection::vec(any::<u8>(), 0..100),
        blob in prop::array::uniform32(any::<u8>()),
        ct in prop::collection::vec(any::<u8>(), 0..80),
        guest_len in any::<u32>(),
        policy in any::<u32>(),
    ) {
        let mut raw = [0u8; 128];
        for (i, b) in raw.iter_mut().enumerate() { *b = blob[i % 32] ^ (i as u8); }
        let sb = SessionBlob::from_bytes(&raw).unwrap();
        let _ = sev_proto::session::platform_unwrap(&z, &sb, policy);
        let _ = sev_proto::kdf::kdf(&z, b"label", &ct, z.len());
        let keys = sev_proto::session::TransportKeys { tek: [1; 16], tik: [2; 16] };
        let hdr = PacketHeader::from_bytes(&raw[..52]).unwrap();
        let _ = sev_proto::secret::open_packet(&keys, &blob, &hdr, &ct, guest_len);
        let _ = sev_proto::secret::build_packet(&keys, &blob, [0; 16], 0, &ct);
    }

    #[test]
    fn policy_parse_any_string(s in ".{0,24}") {
        let _ = GuestPolicy::parse(&s);
    }

    #[test]
    fn policy_roundtrip(v in any::<u32>()) {
        prop_assert_eq!(GuestPolicy::parse(&format!("{v:#x}")).unwrap(), GuestPolicy(v));
        prop_assert_eq!(GuestPolicy::parse(&v.to_string()).unwrap(), GuestPolicy(v));
        let p = GuestPolicy(v);
        prop_assert_eq!(GuestPolicy::new(v & 0xFFFF, p.api_major(), p.api_minor()), p);
    }
}

#[test]
fn ecdh_with_mismatched_curves_is_an_error() {
    let a = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let b = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
    let b_pub = EcKey::from_public_key(b.group(), b.public_key()).unwrap();
    assert!(sev_proto::session::ecdh_shared_secret(&a, &b_pub).is_err());
    // A P-256 PDH certificate is parsed but fails the GODH check.
    let c = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &b).unwrap();
    assert!(sev_proto::session::check_godh(&c).is_err());
}
