//! Known-answer tests: VECTORS.md section A and the §11 end-to-end vector of sev-spec-notes.md.

mod common;
use common::{h, seq};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use sev_proto::cert::{Algo, SevCert, Usage};
use sev_proto::kdf::{kdf, LABEL_MASTER_SECRET};
use sev_proto::measure::{measurement, LaunchDigest, LaunchMeasure};
use sev_proto::secret::{build_packet, open_packet, packet_mac};
use sev_proto::session::{
    derive_channel_keys, ecdh_shared_secret, owner_wrap, platform_unwrap, policy_mac, SessionBlob,
    TransportKeys,
};

#[test]
fn vectors_a_key_rs() {
    let m = kdf(&[0; 16], LABEL_MASTER_SECRET, &[0; 16], 16);
    assert_eq!(hex::encode(&*m), "ab4d269fcc62bedb4511d56c386ce706");
    assert_eq!(
        hex::encode(policy_mac(&[0; 16], 0)),
        "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
    );
}

#[test]
fn vectors_a_session() {
    let ck = derive_channel_keys(&[0; 16], &[0; 16]);
    assert_eq!(hex::encode(ck.kek), "b6abfbfb75ea1ea74ed8750b8afdb973");
    assert_eq!(hex::encode(ck.kik), "53b524bf5669a363f365c864acba8572");
    let blob = owner_wrap(&[0; 16], &[0; 16], &[0; 16], &TransportKeys::zero(), 0u32);
    assert_eq!(
        hex::encode(blob.wrap_tk),
        "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
    );
    assert_eq!(
        hex::encode(blob.wrap_mac),
        "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
    );
    assert_eq!(
        hex::encode(blob.policy_mac),
        "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
    );
}

#[test]
fn vectors_a_measure() {
    let tik = h::<16>("66320db73158a35a255d051758e95ed4");
    let mnonce = h::<16>("4fbe0bedbad6c86ae8f68971d103e554");
    let ld = LaunchDigest::new().finish();
    assert_eq!(
        hex::encode(measurement(&tik, 0x00, 0x12, 0x0f, 0u32, &ld, &mnonce)),
        "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
    );
}

/// A P-384 key with private scalar d = `byte` repeated 47 times.
///
/// Note: sev-spec-notes.md §11 says "48 bytes of 0x11", but the script that computed the vector
/// (kat/e2e_kat.py) uses a 94-hex-digit literal, i.e. 47 bytes; the published Qx/Z values
/// match 47 bytes.
fn key_of(byte: u8) -> EcKey<openssl::pkey::Private> {
    let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let d = BigNum::from_slice(&[byte; 47]).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let mut q = EcPoint::new(&g).unwrap();
    q.mul_generator2(&g, &d, &mut ctx).unwrap();
    EcKey::from_private_components(&g, &d, &q).unwrap()
}

#[test]
fn e2e_vector_section_11() {
    let pdh = key_of(0x11);
    let godh = key_of(0x22);
    // The public points as they appear (LE) in the SEV certificates.
    let pdh_cert = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh).unwrap();
    let godh_cert = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &godh).unwrap();
    assert_eq!(
        hex::encode(&pdh_cert.pubkey[4..52]),
        "9c33baf7daba18ca3ceffdef8277e862e5510fe608c6016dab99903758873cdef0bd6971f95e3935b9aea94c934277d1"
    );
    assert_eq!(
        hex::encode(&godh_cert.pubkey[4..52]),
        "5b64b2836c016081fc3170b621493e143aad5a775f34c77a5f228d3bc34cdd7014a8971b6150472fe079eac9225b4799"
    );
    // Both sides derive the same Z, through the certificate codec.
    let z_owner = ecdh_shared_secret(&godh, &pdh_cert.ec_public_key().unwrap()).unwrap();
    let z_fw = ecdh_shared_secret(&pdh, &godh_cert.ec_public_key().unwrap()).unwrap();
    assert_eq!(&z_owner[..], &z_fw[..]);
    assert_eq!(
        hex::encode(&z_owner[..]),
        "e077b362b6d49fe84b92a12c748d57b3addc105ff4a2bf24f72100dd7d05660e26b43b3580ac174666af265787552c96"
    );

    let nonce = seq::<16>(0x00);
    let iv = seq::<16>(0x10);
    let keys = TransportKeys {
        tek: seq(0xa0),
        tik: seq(0xb0),
    };
    let ck = derive_channel_keys(&z_owner, &nonce);
    assert_eq!(hex::encode(ck.master), "09957558f9919cda1af5db000fd91101");
    assert_eq!(hex::encode(ck.kek), "6e36914bff734bb68fac120a6e277998");
    assert_eq!(hex::encode(ck.kik), "cfebc8ff1d622036f58d2eb6d2f4ded1");
    let blob = owner_wrap(&z_owner, &nonce, &iv, &keys, 1u32);
    assert_eq!(
        hex::encode(blob.wrap_tk),
        "90c095747d5599873784e8b83add9ece2181b0de5808714c3cd3b3be9bbdc66c"
    );
    assert_eq!(
        hex::encode(blob.wrap_mac),
        "7347fe1d1fcecff5aade8dcf6653a67d4d008935386281bde39571d7514fecae"
    );
    assert_eq!(
        hex::encode(blob.policy_mac),
        "27c64c151fa6b686a2c7fb57689430912918c80c3ccb10d48dffe717cae2f173"
    );
    let blob2 = SessionBlob::from_bytes(&blob.to_bytes()).unwrap();
    let fw_keys = platform_unwrap(&z_fw, &blob2, 1u32).unwrap();
    assert_eq!(fw_keys, keys);

    // Measurement.
    let mut ld = LaunchDigest::new();
    ld.update(&[0u8; 4096]);
    ld.update(&[0x5Au8; 176]);
    let ld = ld.finish();
    assert_eq!(
        hex::encode(ld),
        "715c8d7364830bcc6760f917d5ebfed68f658da32c7c2a6a45d88680d22c28d6"
    );
    let mnonce = seq::<16>(0x20);
    let m = measurement(&fw_keys.tik, 0x00, 0x18, 0x11, 1u32, &ld, &mnonce);
    assert_eq!(
        hex::encode(m),
        "abe2f57694c28fac12bdd984b41631ea88b07c3167744ebf84236d0db307cf38"
    );
    let lm = LaunchMeasure { measure: m, mnonce };
    assert!(lm.verify(&keys.tik, 0, 0x18, 0x11, 1u32, &ld));

    // Secret.
    let mut pt = [0u8; 32];
    pt[..16].copy_from_slice(b"hello-sev-secret");
    let (hdr, ct) = build_packet(&keys, &m, seq(0x30), 0, &pt).unwrap();
    assert_eq!(
        hex::encode(&ct),
        "4e87911406667c49bcb228a26d056e456b85286c0cab608a39a5c722a31f47bb"
    );
    assert_eq!(
        hex::encode(hdr.mac),
        "ce9f6d94cc715724a8584564668d616da8562a9dcc8d2a36e7be5cc2fb04f62a"
    );
    assert_eq!(
        hdr.mac,
        packet_mac(&keys.tik, 0, &seq(0x30), 32, 32, &ct, &m)
    );
    assert_eq!(
        &open_packet(&fw_keys, &m, &hdr, &ct, 32).unwrap()[..],
        &pt[..]
    );
}
