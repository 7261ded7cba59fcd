//! What the AMD Secure Processor's own code computes from certificates and its chip key, for a
//! software model of the firmware:
//!
//! - [`firmware_validate`]: certificate validation with the firmware's order of checks and the
//!   firmware's status codes (`sev_cert_validate` in AMD's published SEV firmware source), which
//!   differ from [`SevCert::verify_signed_by`]'s descriptive errors: a signature that does not
//!   verify, or a half-empty signature slot, is BAD_SIGNATURE; everything else that is wrong is
//!   INVALID_CERTIFICATE.
//! - [`chip_id`]: GET_ID's per-socket id, the chip-unique key times the secp256k1 generator.
//!
//! Read from AMD's source for facts only; the code here is our own.

use super::{le_field_to_bn, rsa_pss_verify, signer_allowed, Algo, CertError, SevCert, Usage};
use crate::status::Status;
use crate::util::le_u32;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::hash;
use openssl::nid::Nid;
use openssl::pkey::Public;
use openssl::rsa::Rsa;

/// Offset of the first signature slot; the second follows 0x208 bytes later.
const SIG1: usize = 0x414;
/// Size of one signature slot (usage, algo, 512-byte signature).
const SLOT: usize = 0x208;
/// Largest RSA modulus the firmware accepts (`RSA_MOD_SIZE_BYTES` × 8).
const RSA_MAX_BITS: u32 = 4096;

/// The public-key part of a certificate body as the firmware reads it: raw fields, none of
/// [`SevCert::parse`]'s checks (the firmware checks them later, in its own order).
struct RawKey<'a> {
    usage: Usage,
    algo: Algo,
    /// The 0x404-byte key field.
    key: &'a [u8],
}

fn raw_key(cert: &[u8; SevCert::LEN]) -> RawKey<'_> {
    RawKey {
        usage: Usage(le_u32(cert, 8).unwrap_or(0)),
        algo: Algo(le_u32(cert, 12).unwrap_or(0)),
        key: &cert[0x10..SevCert::BODY_LEN],
    }
}

/// The firmware's `usage_is_valid`: the six key usages (not the empty-slot marker).
fn usage_is_valid(u: Usage) -> bool {
    matches!(
        u,
        Usage::ARK | Usage::ASK | Usage::OCA | Usage::PEK | Usage::PDH | Usage::CEK
    )
}

/// An EC key field as the firmware accepts it: curve 2 (P-384) only, a point on the curve with
/// coordinates below the field prime.
fn ec_key(key: &[u8]) -> Option<EcKey<Public>> {
    if le_u32(key, 0)? != 2 {
        return None;
    }
    let group = EcGroup::from_curve_name(Nid::SECP384R1).ok()?;
    let (qx, qy) = (&key[4..4 + 72], &key[4 + 72..4 + 144]);
    // A coordinate wider than 48 bytes is at least the prime: not a field element.
    if qx[48..].iter().chain(&qy[48..]).any(|&b| b != 0) {
        return None;
    }
    let (x, y) = (
        le_field_to_bn(&qx[..48]).ok()?,
        le_field_to_bn(&qy[..48]).ok()?,
    );
    let mut ctx = BigNumContext::new().ok()?;
    let (mut p, mut a, mut b) = (
        BigNum::new().ok()?,
        BigNum::new().ok()?,
        BigNum::new().ok()?,
    );
    group
        .components_gfp(&mut p, &mut a, &mut b, &mut ctx)
        .ok()?;
    if x >= p || y >= p {
        return None;
    }
    let k = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
    k.check_key().ok()?;
    Some(k)
}

/// An RSA key field: `modulus_size_bits`, `pub_exp[512]`, `modulus[512]` (little-endian).
fn rsa_key(key: &[u8]) -> Option<Rsa<Public>> {
    let bits = le_u32(key, 0)? as usize;
    if bits == 0 || bits > RSA_MAX_BITS as usize || !bits.is_multiple_of(8) {
        return None;
    }
    let e = le_field_to_bn(&key[4..4 + 512]).ok()?;
    let n = le_field_to_bn(&key[4 + 512..4 + 512 + bits / 8]).ok()?;
    Rsa::from_public_components(n, e).ok()
}

/// The firmware's `pubkey_is_valid`: a valid usage and, by algorithm, an RSA modulus of at most
/// 4096 bits or a P-384 point on the curve.
fn pubkey_is_valid(k: &RawKey<'_>) -> bool {
    if !usage_is_valid(k.usage) {
        return false;
    }
    match k.algo {
        Algo::RSA_SHA256 | Algo::RSA_SHA384 => {
            le_u32(k.key, 0).is_some_and(|bits| bits <= RSA_MAX_BITS)
        }
        Algo::ECDSA_SHA256 | Algo::ECDH_SHA256 | Algo::ECDSA_SHA384 | Algo::ECDH_SHA384 => {
            ec_key(k.key).is_some()
        }
        _ => false,
    }
}

/// One signature over `body` by `signer`, as the firmware checks it: ECDSA with r and s
/// (72-byte little-endian fields) in [1, n−1], or RSA-PSS with the signature reversed to
/// big-endian. `Err(BadSignature)` when it does not verify.
fn verify_slot(body: &[u8], sig: &[u8], signer: &RawKey<'_>) -> Result<(), Status> {
    let md = signer.algo.digest();
    let ok = match signer.algo {
        Algo::ECDSA_SHA256 | Algo::ECDSA_SHA384 => (|| {
            let key = ec_key(signer.key)?;
            let r = le_field_to_bn(&sig[0..72]).ok()?;
            let s = le_field_to_bn(&sig[72..144]).ok()?;
            let sig = EcdsaSig::from_private_components(r, s).ok()?;
            let h = hash(md, body).ok()?;
            sig.verify(&h, &key).ok()
        })()
        .unwrap_or(false),
        Algo::RSA_SHA256 | Algo::RSA_SHA384 => (|| {
            let key = rsa_key(signer.key)?;
            let be: Vec<u8> = sig[..key.size() as usize].iter().rev().copied().collect();
            rsa_pss_verify(&key, md, body, &be).ok()
        })()
        .unwrap_or(false),
        // An ECDH key cannot sign.
        _ => return Err(Status::Unsupported),
    };
    if ok {
        Ok(())
    } else {
        Err(Status::BadSignature)
    }
}

/// The firmware's `sev_cert_validate_sig`: each slot in turn; a half-empty slot (exactly one of
/// usage 0x1000 / algo 0) ends the check with BAD_SIGNATURE; a slot whose usage and algo are
/// the signer's is verified. The last verified slot decides; none at all is
/// INVALID_CERTIFICATE.
fn validate_sig(cert: &[u8; SevCert::LEN], signer: &RawKey<'_>) -> Result<(), Status> {
    let body = &cert[..SevCert::BODY_LEN];
    let mut result = Err(Status::InvalidCertificate);
    for i in 0..2 {
        let off = SIG1 + i * SLOT;
        let usage = Usage(le_u32(cert, off).unwrap_or(0));
        let algo = Algo(le_u32(cert, off + 4).unwrap_or(0));
        if (usage == Usage::INVALID) != (algo == Algo::INVALID) {
            return Err(Status::BadSignature);
        }
        if usage != signer.usage || algo != signer.algo {
            continue;
        }
        result = verify_slot(body, &cert[off + 8..off + SLOT], signer);
        if !matches!(result, Ok(()) | Err(Status::BadSignature)) {
            return result;
        }
    }
    result
}

/// Validates `cert` against the public key of `signer` (an encoded SEV certificate: the OCA
/// for itself or a PEK, the PEK for a PDH) in the order and with the status codes of the AMD
/// firmware's `sev_cert_validate`:
///
/// 1. the signer's key must be valid (usage, P-384 point or RSA ≤ 4096 bits), else
///    INVALID_CERTIFICATE;
/// 2. the signatures, before anything else about `cert`: a half-empty slot or a signature that
///    does not verify is BAD_SIGNATURE, no slot of the signer's usage and algo is
///    INVALID_CERTIFICATE, a slot by an ECDH signer is UNSUPPORTED;
/// 3. `cert`'s body: version 1 and a valid key, else INVALID_CERTIFICATE;
/// 4. the signer may sign this kind of certificate (PDH by PEK, PEK by OCA or CEK, OCA by
///    itself, CEK by ASK), else INVALID_CERTIFICATE.
pub fn firmware_validate(
    cert: &[u8; SevCert::LEN],
    signer: &[u8; SevCert::LEN],
) -> Result<(), Status> {
    let signer = raw_key(signer);
    if !pubkey_is_valid(&signer) {
        return Err(Status::InvalidCertificate);
    }
    validate_sig(cert, &signer)?;
    let subject = raw_key(cert);
    if le_u32(cert, 0) != Some(1) || !pubkey_is_valid(&subject) {
        return Err(Status::InvalidCertificate);
    }
    if !signer_allowed(subject.usage, signer.usage) {
        return Err(Status::InvalidCertificate);
    }
    Ok(())
}

/// GET_ID's 64-byte id of one socket, as the firmware computes it (`sev_get_id`): the
/// chip-unique key `cuk` read as a big-endian scalar d, the point d·G on **secp256k1**, and
/// its coordinates X ‖ Y, each 32 bytes big-endian. AMD's KDS looks certificates up by the hex
/// of these 64 bytes.
pub fn chip_id(cuk: &[u8; 32]) -> Result<[u8; 64], CertError> {
    let ossl = super::ossl;
    let group = EcGroup::from_curve_name(Nid::SECP256K1).map_err(ossl)?;
    let mut ctx = BigNumContext::new().map_err(ossl)?;
    let d = BigNum::from_slice(cuk).map_err(ossl)?;
    let mut q = EcPoint::new(&group).map_err(ossl)?;
    q.mul_generator2(&group, &d, &mut ctx).map_err(ossl)?;
    let (mut x, mut y) = (BigNum::new().map_err(ossl)?, BigNum::new().map_err(ossl)?);
    q.affine_coordinates(&group, &mut x, &mut y, &mut ctx)
        .map_err(|_| CertError::BadKey("chip-unique key is zero modulo the curve order".into()))?;
    let mut id = [0u8; 64];
    id[..32].copy_from_slice(&x.to_vec_padded(32).map_err(ossl)?);
    id[32..].copy_from_slice(&y.to_vec_padded(32).map_err(ossl)?);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::EcKey;

    fn p384() -> EcGroup {
        EcGroup::from_curve_name(Nid::SECP384R1).unwrap()
    }

    fn arr(v: Vec<u8>) -> [u8; SevCert::LEN] {
        v.try_into().unwrap()
    }

    /// An OCA (self-signed) and a PEK signed by it.
    fn oca_and_pek() -> ([u8; SevCert::LEN], [u8; SevCert::LEN]) {
        let ok = EcKey::generate(&p384()).unwrap();
        let mut oca = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &ok).unwrap();
        oca.sign_with(&ok, Usage::OCA).unwrap();
        let pk = EcKey::generate(&p384()).unwrap();
        let mut pek = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &pk).unwrap();
        pek.sign_with(&ok, Usage::OCA).unwrap();
        (arr(oca.encode()), arr(pek.encode()))
    }

    #[test]
    fn sev_cert_validate_accepts_good_certificates() {
        let (oca, pek) = oca_and_pek();
        assert_eq!(firmware_validate(&oca, &oca), Ok(()));
        assert_eq!(firmware_validate(&pek, &oca), Ok(()));
    }

    #[test]
    fn sev_cert_validate_bad_signature_is_bad_signature() {
        let (oca, pek) = oca_and_pek();
        let mut body_changed = pek;
        body_changed[0x20] ^= 1; // a key byte: the OCA's signature no longer covers it
        assert_eq!(
            firmware_validate(&body_changed, &oca),
            Err(Status::BadSignature)
        );
        let mut sig_changed = pek;
        sig_changed[SIG1 + 8] ^= 1; // r
        assert_eq!(
            firmware_validate(&sig_changed, &oca),
            Err(Status::BadSignature)
        );
        let mut self_sig = oca;
        self_sig[SIG1 + 8 + 72] ^= 1; // s of the OCA's self-signature
        assert_eq!(
            firmware_validate(&self_sig, &self_sig),
            Err(Status::BadSignature)
        );
    }

    #[test]
    fn sev_cert_validate_half_empty_slot_is_bad_signature_before_body_checks() {
        let (oca, pek) = oca_and_pek();
        // sig2 empty usage with a nonzero algo; also a bad version, checked only later.
        let mut c = pek;
        c[SIG1 + SLOT + 4..SIG1 + SLOT + 8].copy_from_slice(&2u32.to_le_bytes());
        c[0] = 7;
        assert_eq!(firmware_validate(&c, &oca), Err(Status::BadSignature));
    }

    #[test]
    fn sev_cert_validate_no_matching_slot_or_bad_body_is_invalid_certificate() {
        let (oca, pek) = oca_and_pek();
        // PEK checked against itself: no slot of a PEK key.
        assert_eq!(
            firmware_validate(&pek, &pek),
            Err(Status::InvalidCertificate)
        );
        // The signer's key off the curve.
        let mut bad_signer = oca;
        bad_signer[0x14] ^= 1;
        assert_eq!(
            firmware_validate(&pek, &bad_signer),
            Err(Status::InvalidCertificate)
        );
        // A PDH whose OCA signature verifies: the OCA may not sign a PDH.
        let pk = EcKey::generate(&p384()).unwrap();
        let mut pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pk).unwrap();
        let ok = EcKey::generate(&p384()).unwrap();
        let mut oca2 = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &ok).unwrap();
        oca2.sign_with(&ok, Usage::OCA).unwrap();
        pdh.sign_with(&ok, Usage::OCA).unwrap();
        assert_eq!(
            firmware_validate(&arr(pdh.encode()), &arr(oca2.encode())),
            Err(Status::InvalidCertificate),
            "an OCA may not sign a PDH (checked after the signature)"
        );
    }

    #[test]
    fn get_id_is_the_secp256k1_point_of_the_cuk() {
        // d = 1: the generator itself (SEC 2, secp256k1 G).
        let mut one = [0u8; 32];
        one[31] = 1;
        let id = chip_id(&one).unwrap();
        assert_eq!(
            hex::encode(&id[..32]),
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        );
        assert_eq!(
            hex::encode(&id[32..]),
            "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
        );
        // d = 2: 2G (a known vector), and a different id.
        let mut two = [0u8; 32];
        two[31] = 2;
        let id2 = chip_id(&two).unwrap();
        assert_eq!(
            hex::encode(&id2[..32]),
            "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
        );
        assert!(chip_id(&[0u8; 32]).is_err(), "zero key has no point");
    }
}
