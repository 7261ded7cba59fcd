//! Certificates and chains on real AMD data (testdata) and on soft chains made here.

mod common;
use common::{read, testdata};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::rsa::Rsa;
use sev_proto::cert::chain::{
    builtin_ark_ask, check_links, verify_full, CaChain, FullChain, Generation, Link, SevChain,
};
use sev_proto::cert::{Algo, CaCert, CertError, SevCert, Usage};

#[test]
fn naples_certs_roundtrip_and_fields() {
    let Some(td) = testdata() else { return };
    for (name, usage, algo) in [
        ("pdh", Usage::PDH, Algo::ECDH_SHA256),
        ("pek", Usage::PEK, Algo::ECDSA_SHA256),
        ("oca", Usage::OCA, Algo::ECDSA_SHA256),
        ("cek", Usage::CEK, Algo::ECDSA_SHA256),
    ] {
        let raw = read(&td, &format!("sev-crate/naples/{name}.cert"));
        let c = SevCert::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.usage, usage, "{name}");
        assert_eq!(c.algo, algo, "{name}");
        assert_eq!(c.encode(), raw, "{name} re-encodes byte-identically");
        assert_eq!(c.api_major, 0);
        assert_eq!(c.api_minor, if name == "cek" { 14 } else { 16 });
        c.ec_public_key().unwrap();
    }
    let cek = SevCert::parse(&read(&td, "sev-crate/naples/cek.cert")).unwrap();
    assert_eq!(cek.sigs[0].usage, Usage::ASK);
    assert_eq!(cek.sigs[0].algo, Algo::RSA_SHA256);
    assert!(cek.sigs[1].is_empty());
}

#[test]
fn naples_full_chain_verifies_and_fingerprints_match_sevctl() {
    let Some(td) = testdata() else { return };
    let raw = read(&td, "derived/naples_full_chain.bin");
    let chain = FullChain::parse(&raw).unwrap();
    assert_eq!(chain.encode(), raw);
    let builtin = builtin_ark_ask(Generation::Naples).unwrap();
    assert_eq!(builtin.ark, chain.ca.ark);
    let pdh = verify_full(&chain, Some(&builtin.ark)).unwrap();
    assert_eq!(pdh.cert, chain.sev.pdh);
    // The exact lines `sevctl verify` prints for this chain.
    assert_eq!(
        chain.sev.pdh.to_string(),
        "PDH EP384 D256 dbec0cf343b140dc7ded571935e8d0ec8059fd1610ddb3c79eb177e7cd3878a2"
    );
    assert_eq!(
        chain.sev.pek.to_string(),
        "PEK EP384 E256 8d55d63b6792c6ed10e11df7afc7e25d6a0428a6351fb9a806ec4160f2b0f390"
    );
    assert_eq!(
        chain.sev.oca.to_string(),
        "OCA EP384 E256 70bb8f3702b22e848ef7a5dac704186ee80a889273443b4b5466da9405d4cc03"
    );
    assert_eq!(
        chain.sev.cek.to_string(),
        "CEK EP384 E256 0f6570c3ddec6b393398084251f6924fcfb7d8fa1779e4e36dbbca30ee0c4f38"
    );
    assert_eq!(
        chain.ca.ask.to_string(),
        "ASK R2048 R256 5dff2a2a4dd59dc095d73a26af28be523192ade830bdd35bacdd81ee75584c45"
    );
    assert_eq!(
        chain.ca.ark.to_string(),
        "ARK R2048 R256 8efddcaaf84990cf6354d93637be270220cf15797332b3d918c3b8cc77349f31"
    );
    // The split files agree with the concatenation.
    let sev = SevChain::parse(&read(&td, "derived/naples_sev_chain_pdh_pek_oca_cek.bin")).unwrap();
    assert_eq!(sev, chain.sev);
    let ca = CaChain::parse(&read(&td, "derived/naples_ca_chain_ask_ark.bin")).unwrap();
    assert_eq!(ca, chain.ca);
}

#[test]
fn builtin_roots_all_generations() {
    let Some(td) = testdata() else { return };
    for g in Generation::ALL {
        let c = builtin_ark_ask(g).unwrap();
        c.verify().unwrap_or_else(|e| panic!("{g}: {e}"));
        assert_eq!(c.ask.certifying_id, c.ark.key_id, "{g}");
        let ark = read(&td, &format!("sev-crate/builtin-ca/{g}/ark.cert"));
        let ask = read(&td, &format!("sev-crate/builtin-ca/{g}/ask.cert"));
        assert_eq!(c.ark.encode(), ark, "{g} ARK");
        assert_eq!(c.ask.encode(), ask, "{g} ASK");
        let bits = if g == Generation::Naples { 2048 } else { 4096 };
        assert_eq!(c.ark.modulus_bits, bits);
        assert_eq!(ark.len(), CaCert::encoded_len_for(bits));
        assert_eq!(Generation::from_ark_key_id(&c.ark.key_id), Some(g));
    }
    let rome = builtin_ark_ask(Generation::Rome).unwrap();
    assert!(rome.ark.fingerprint().starts_with("3d2c1157"));
    assert!(rome.ask.fingerprint().starts_with("d8cd9d17"));
    assert!(rome.ark.to_string().starts_with("ARK R4096 R384 3d2c1157"));
    // Cross-generation links do not verify.
    let naples = builtin_ark_ask(Generation::Naples).unwrap();
    assert!(rome.ask.verify_signed_by(&naples.ark).is_err());
}

#[test]
fn naples_ark_without_signature_splices() {
    let Some(td) = testdata() else { return };
    let bad = read(&td, "sev-crate/naples/ark.cert.bad");
    let sig = read(&td, "sev-crate/naples/ark.cert.sig");
    let e = CaCert::parse(&bad).unwrap_err();
    assert!(e.to_string().contains("`signature`"), "{e}");
    let mut full = bad.clone();
    full.extend_from_slice(&sig);
    let ark = CaCert::parse(&full).unwrap();
    ark.verify_self_signed().unwrap();
    assert_eq!(ark, builtin_ark_ask(Generation::Naples).unwrap().ark);
}

#[test]
fn each_link_failure_is_named() {
    let Some(td) = testdata() else { return };
    let good = FullChain::parse(&read(&td, "derived/naples_full_chain.bin")).unwrap();
    let flip_sev = |c: &mut SevCert| c.sigs[0].sig[5] ^= 0x40;
    type Tamper = Box<dyn Fn(&mut FullChain)>;
    let cases: Vec<(Link, Tamper)> = vec![
        (Link::ArkSelf, Box::new(|c| c.ca.ark.signature[3] ^= 1)),
        (Link::AskByArk, Box::new(|c| c.ca.ask.signature[3] ^= 1)),
        (Link::CekByAsk, Box::new(move |c| flip_sev(&mut c.sev.cek))),
        (Link::OcaSelf, Box::new(move |c| flip_sev(&mut c.sev.oca))),
        (Link::PekByOca, Box::new(move |c| flip_sev(&mut c.sev.pek))),
        (
            Link::PekByCek,
            Box::new(|c| c.sev.pek.sigs[1].sig[5] ^= 0x40),
        ),
        (Link::PdhByPek, Box::new(move |c| flip_sev(&mut c.sev.pdh))),
    ];
    for (link, tamper) in cases {
        let mut c = good.clone();
        tamper(&mut c);
        let e = verify_full(&c, None).unwrap_err();
        assert_eq!(e.link, link, "{e}");
        assert!(e.to_string().contains(&link.to_string()));
    }
    // A different (valid) root is rejected as untrusted.
    let rome = builtin_ark_ask(Generation::Rome).unwrap();
    let e = verify_full(&good, Some(&rome.ark)).unwrap_err();
    assert_eq!(e.link, Link::ArkSelf);
    assert!(matches!(e.source, CertError::UntrustedRoot(_)));
}

fn p384() -> EcKey<openssl::pkey::Private> {
    EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap()
}

/// A soft platform chain as the soft firmware makes it: soft ARK/ASK (RSA-4096, PSS SHA-384),
/// CEK signed by the ASK, OCA self-signed, PEK by OCA + CEK, PDH by PEK.
#[test]
fn soft_chain_verifies_here_and_in_the_sev_crate() {
    let ark_key = Rsa::generate(4096).unwrap();
    let ask_key = Rsa::generate(4096).unwrap();
    let ark = CaCert::new_self_signed_rsa(&ark_key, Usage::ARK).unwrap();
    let ask = CaCert::new_signed(&ask_key, &ark_key, ark.key_id).unwrap();
    assert_eq!(ark.encode().len(), 1600);
    let (cek_k, oca_k, pek_k, pdh_k) = (p384(), p384(), p384(), p384());
    let mut cek = SevCert::new_ec(Usage::CEK, Algo::ECDSA_SHA256, 0, 24, &cek_k).unwrap();
    cek.sign_with_rsa(&ask_key, Usage::ASK).unwrap();
    assert_eq!(cek.sigs[0].algo, Algo::RSA_SHA384);
    let mut oca = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &oca_k).unwrap();
    oca.sign_with(&oca_k, Usage::OCA).unwrap();
    let mut pek = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &pek_k).unwrap();
    pek.sign_with(&oca_k, Usage::OCA).unwrap();
    pek.sign_with(&cek_k, Usage::CEK).unwrap();
    let mut pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh_k).unwrap();
    pdh.sign_with(&pek_k, Usage::PEK).unwrap();
    let chain = FullChain {
        sev: SevChain { pdh, pek, oca, cek },
        ca: CaChain { ask, ark },
    };
    let bytes = chain.encode();
    let back = FullChain::parse(&bytes).unwrap();
    assert_eq!(back, chain);
    verify_full(&back, Some(&chain.ca.ark)).unwrap();

    // Independent check: the `sev` crate (as used by sevctl) accepts the same bytes.
    use sev::certs::sev::Verifiable;
    use sev::parser::Decoder;
    let theirs = sev::certs::sev::Chain::decode(&mut &bytes[..], ()).unwrap();
    theirs.verify().expect("sev crate verifies the soft chain");
    // And our fingerprints equal its Display.
    assert_eq!(theirs.sev.pdh.to_string(), chain.sev.pdh.to_string());
    assert_eq!(theirs.ca.ark.to_string(), chain.ca.ark.to_string());
}

#[test]
fn soft_chain_2048_root_like_naples() {
    let ark_key = Rsa::generate(2048).unwrap();
    let ask_key = Rsa::generate(2048).unwrap();
    let ark = CaCert::new_self_signed_rsa(&ark_key, Usage::ARK).unwrap();
    let ask = CaCert::new_signed(&ask_key, &ark_key, ark.key_id).unwrap();
    let cek_k = p384();
    let mut cek = SevCert::new_ec(Usage::CEK, Algo::ECDSA_SHA256, 0, 14, &cek_k).unwrap();
    cek.sign_with_rsa(&ask_key, Usage::ASK).unwrap();
    cek.verify_signed_by_ca(&ask).unwrap();
    assert!(cek.verify_signed_by_ca(&ark).is_err());
    let ca = CaChain { ask, ark };
    ca.verify().unwrap();
    let theirs = {
        use sev::parser::Decoder;
        sev::certs::sev::ca::Chain::decode(&mut &ca.encode()[..], ()).unwrap()
    };
    use sev::certs::sev::Verifiable;
    (&theirs).verify().unwrap();
}

/// `check_links` (the one chain verifier, which `sevm owner verify-chain` reports from) checks
/// every link in `Link::ALL`'s order without stopping; `verify_full` names its first failure.
#[test]
fn check_links_reports_every_link_in_order() {
    let ark_key = Rsa::generate(2048).unwrap();
    let ask_key = Rsa::generate(2048).unwrap();
    let ark = CaCert::new_self_signed_rsa(&ark_key, Usage::ARK).unwrap();
    let ask = CaCert::new_signed(&ask_key, &ark_key, ark.key_id).unwrap();
    let (cek_k, oca_k, pek_k, pdh_k) = (p384(), p384(), p384(), p384());
    let mut cek = SevCert::new_ec(Usage::CEK, Algo::ECDSA_SHA256, 0, 24, &cek_k).unwrap();
    cek.sign_with_rsa(&ask_key, Usage::ASK).unwrap();
    let mut oca = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &oca_k).unwrap();
    oca.sign_with(&oca_k, Usage::OCA).unwrap();
    let mut pek = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &pek_k).unwrap();
    pek.sign_with(&oca_k, Usage::OCA).unwrap();
    pek.sign_with(&cek_k, Usage::CEK).unwrap();
    let mut pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh_k).unwrap();
    pdh.sign_with(&pek_k, Usage::PEK).unwrap();
    let mut chain = FullChain {
        sev: SevChain { pdh, pek, oca, cek },
        ca: CaChain { ask, ark },
    };
    let all = check_links(&chain.sev, &chain.ca);
    assert_eq!(all.iter().map(|c| c.link).collect::<Vec<_>>(), Link::ALL);
    assert!(all.iter().all(|c| c.result.is_ok()), "{all:?}");
    assert_eq!(Link::OcaSelf.to_string(), "OCA <- OCA (self)");
    assert_eq!(Link::ArkSelf.to_string(), "ARK <- ARK (self)");

    // Two broken signatures: the OCA's self-signature and the PDH's.
    chain.sev.oca.sigs[0].sig[5] ^= 0x40;
    chain.sev.pdh.sigs[0].sig[5] ^= 0x40;
    let failed: Vec<Link> = check_links(&chain.sev, &chain.ca)
        .into_iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.link)
        .collect();
    assert_eq!(failed, [Link::OcaSelf, Link::PdhByPek]);
    assert_eq!(verify_full(&chain, None).unwrap_err().link, Link::OcaSelf);
    assert_eq!(chain.sev.verify().unwrap_err().link, Link::OcaSelf);
}

/// The GODH key as the 2016 launch file writes it (`dh_pub_qx`/`dh_pub_qy`): the stored
/// little-endian coordinates, P-384 only.
#[test]
fn p384_point_le_is_the_stored_key() {
    let k = p384();
    let c = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 0, &k).unwrap();
    let (qx, qy) = c.p384_point_le().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().unwrap(),
        openssl::bn::BigNum::new().unwrap(),
    );
    k.public_key()
        .affine_coordinates(k.group(), &mut x, &mut y, &mut ctx)
        .unwrap();
    let mut qx_be = qx.to_vec();
    qx_be.reverse();
    let mut qy_be = qy.to_vec();
    qy_be.reverse();
    assert_eq!(qx_be, x.to_vec_padded(48).unwrap());
    assert_eq!(qy_be, y.to_vec_padded(48).unwrap());
    let p256 = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
    let c = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 0, &p256).unwrap();
    assert!(c
        .p384_point_le()
        .unwrap_err()
        .to_string()
        .contains("not P-384"));
}
