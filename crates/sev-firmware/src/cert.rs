//! Minimal encoders/decoders for the SEV certificate (2084 bytes) and the AMD CA
//! certificate (ARK/ASK), and the signing the soft firmware needs (spec notes §3.2-3.3).
//!
//! Kept local until `sev-proto::cert` lands. Never does I/O.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcKeyRef};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, Private, Public};
use openssl::rsa::{Padding, Rsa, RsaRef};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

/// Size of a SEV certificate.
pub const SEV_CERT_LEN: usize = 0x824;
/// Offset of the end of the signed body.
const BODY_END: usize = 0x414;
const SIG1: usize = 0x414;
const SIG2: usize = 0x61C;

/// Key usages.
pub mod usage {
    /// AMD root key.
    pub const ARK: u32 = 0x0;
    /// AMD signing key.
    pub const ASK: u32 = 0x13;
    /// Empty signature slot.
    pub const INVALID: u32 = 0x1000;
    /// Owner certificate authority.
    pub const OCA: u32 = 0x1001;
    /// Platform endorsement key.
    pub const PEK: u32 = 0x1002;
    /// Platform Diffie-Hellman key (also the guest owner's GODH).
    pub const PDH: u32 = 0x1003;
    /// Chip endorsement key.
    pub const CEK: u32 = 0x1004;
}

/// Key/signature algorithms.
pub mod algo {
    /// RSA-PSS SHA-256.
    pub const RSA_SHA256: u32 = 1;
    /// ECDSA SHA-256.
    pub const ECDSA_SHA256: u32 = 2;
    /// ECDH SHA-256.
    pub const ECDH_SHA256: u32 = 3;
    /// RSA-PSS SHA-384.
    pub const RSA_SHA384: u32 = 0x101;
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Wrong length.
    #[error("certificate length {0}, expected {1}")]
    Length(usize, usize),
    /// A field has a value this model refuses.
    #[error("certificate field {0} is invalid")]
    Field(&'static str),
    /// Signature missing or wrong.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// Crypto library failure.
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn le_fixed(n: &BigNum, len: usize) -> Vec<u8> {
    let mut v = n.to_vec();
    v.reverse();
    v.resize(len, 0);
    v
}

fn be_from_le(b: &[u8]) -> Result<BigNum, openssl::error::ErrorStack> {
    let mut v = b.to_vec();
    v.reverse();
    BigNum::from_slice(&v)
}

/// P-384 group.
pub fn p384() -> EcGroup {
    // P-384 is always available in openssl; a failure here is a broken library.
    EcGroup::from_curve_name(Nid::SECP384R1).expect("openssl lacks P-384")
}

/// Build an unsigned SEV certificate for a P-384 public key.
pub fn sev_cert_ec<T: HasPublic>(
    key_usage: u32,
    key_algo: u32,
    api: (u8, u8),
    key: &EcKeyRef<T>,
) -> Result<[u8; SEV_CERT_LEN], CertError> {
    let mut c = [0u8; SEV_CERT_LEN];
    wr32(&mut c, 0, 1);
    c[4] = api.0;
    c[5] = api.1;
    wr32(&mut c, 8, key_usage);
    wr32(&mut c, 0xC, key_algo);
    wr32(&mut c, 0x10, 2);
    let mut x = BigNum::new()?;
    let mut y = BigNum::new()?;
    let mut ctx = BigNumContext::new()?;
    key.public_key()
        .affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)?;
    c[0x14..0x14 + 72].copy_from_slice(&le_fixed(&x, 72));
    c[0x5C..0x5C + 72].copy_from_slice(&le_fixed(&y, 72));
    for off in [SIG1, SIG2] {
        wr32(&mut c, off, usage::INVALID);
    }
    Ok(c)
}

/// The public-key usage field of a SEV cert.
pub fn cert_usage(c: &[u8]) -> u32 {
    rd32(c, 8)
}

/// Clear both signature slots (e.g. to export the CEK unsigned).
pub fn clear_sigs(c: &mut [u8; SEV_CERT_LEN]) {
    c[SIG1..].fill(0);
    wr32(c, SIG1, usage::INVALID);
    wr32(c, SIG2, usage::INVALID);
}

fn free_slot(c: &[u8]) -> Result<usize, CertError> {
    [SIG1, SIG2]
        .into_iter()
        .find(|&o| rd32(c, o) == usage::INVALID && rd32(c, o + 4) == 0)
        .ok_or(CertError::Field("signature slots (both full)"))
}

/// Sign a SEV cert's body with an ECDSA P-384 key (SHA-256) into the first free slot.
pub fn sign_ec(
    c: &mut [u8; SEV_CERT_LEN],
    signer: &EcKeyRef<Private>,
    signer_usage: u32,
) -> Result<(), CertError> {
    let slot = free_slot(c)?;
    let digest = hash(MessageDigest::sha256(), &c[..BODY_END])?;
    let sig = EcdsaSig::sign(&digest, signer)?;
    wr32(c, slot, signer_usage);
    wr32(c, slot + 4, algo::ECDSA_SHA256);
    c[slot + 8..slot + 8 + 72].copy_from_slice(&le_fixed(&sig.r().to_owned()?, 72));
    c[slot + 8 + 72..slot + 8 + 144].copy_from_slice(&le_fixed(&sig.s().to_owned()?, 72));
    Ok(())
}

/// Sign a SEV cert's body with an RSA-4096 key (PSS, SHA-384, salt 48) into the first free slot.
pub fn sign_rsa(
    c: &mut [u8; SEV_CERT_LEN],
    signer: &Rsa<Private>,
    signer_usage: u32,
) -> Result<(), CertError> {
    let slot = free_slot(c)?;
    let sig = rsa_pss_sign(signer, &c[..BODY_END])?;
    let mut le = sig;
    le.reverse();
    le.resize(512, 0);
    wr32(c, slot, signer_usage);
    wr32(c, slot + 4, algo::RSA_SHA384);
    c[slot + 8..slot + 8 + 512].copy_from_slice(&le);
    Ok(())
}

fn rsa_pss_sign(key: &Rsa<Private>, msg: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let pk = PKey::from_rsa(key.clone())?;
    let mut s = Signer::new(MessageDigest::sha384(), &pk)?;
    s.set_rsa_padding(Padding::PKCS1_PSS)?;
    s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
    s.set_rsa_mgf1_md(MessageDigest::sha384())?;
    s.update(msg)?;
    s.sign_to_vec()
}

/// Parse the P-384 public key of a SEV cert, checking version, curve and point.
pub fn ec_public_key(c: &[u8]) -> Result<EcKey<Public>, CertError> {
    if c.len() != SEV_CERT_LEN {
        return Err(CertError::Length(c.len(), SEV_CERT_LEN));
    }
    if rd32(c, 0) != 1 {
        return Err(CertError::Field("version"));
    }
    if rd32(c, 0x10) != 2 {
        return Err(CertError::Field("curve"));
    }
    if c[0x14 + 48..0x14 + 72].iter().any(|&b| b != 0)
        || c[0x5C + 48..0x5C + 72].iter().any(|&b| b != 0)
    {
        return Err(CertError::Field("pubkey padding"));
    }
    let g = p384();
    let x = be_from_le(&c[0x14..0x14 + 48])?;
    let y = be_from_le(&c[0x5C..0x5C + 48])?;
    let key = EcKey::from_public_key_affine_coordinates(&g, &x, &y)
        .map_err(|_| CertError::Field("pubkey point"))?;
    key.check_key()
        .map_err(|_| CertError::Field("pubkey point"))?;
    Ok(key)
}

/// Verify that `c` carries a valid ECDSA-SHA256 signature by the key of `signer` (a SEV cert),
/// in whichever slot matches the signer's usage.
pub fn verify_ec_by(c: &[u8], signer: &[u8]) -> Result<(), CertError> {
    let key = ec_public_key(signer)?;
    let su = cert_usage(signer);
    let digest = hash(MessageDigest::sha256(), &c[..BODY_END])?;
    for slot in [SIG1, SIG2] {
        if rd32(c, slot) == su && rd32(c, slot + 4) == algo::ECDSA_SHA256 {
            let r = be_from_le(&c[slot + 8..slot + 8 + 72])?;
            let s = be_from_le(&c[slot + 80..slot + 80 + 72])?;
            let sig = EcdsaSig::from_private_components(r, s)?;
            if sig.verify(&digest, &key)? {
                return Ok(());
            }
        }
    }
    Err(CertError::BadSignature)
}

/// Build an AMD-format CA certificate (version 1, 4096-bit) for `subject`, signed by `issuer`.
pub fn ca_cert(
    subject: &RsaRef<impl HasPublic>,
    key_id: [u8; 16],
    certifying_id: [u8; 16],
    key_usage: u32,
    issuer: &Rsa<Private>,
) -> Result<Vec<u8>, CertError> {
    let bits = subject.size() * 8;
    let bytes = subject.size() as usize;
    let mut c = Vec::with_capacity(0x40 + 3 * bytes);
    c.extend_from_slice(&1u32.to_le_bytes());
    c.extend_from_slice(&key_id);
    c.extend_from_slice(&certifying_id);
    c.extend_from_slice(&key_usage.to_le_bytes());
    c.extend_from_slice(&[0u8; 16]);
    c.extend_from_slice(&bits.to_le_bytes());
    c.extend_from_slice(&bits.to_le_bytes());
    c.extend_from_slice(&le_fixed(&subject.e().to_owned()?, bytes));
    c.extend_from_slice(&le_fixed(&subject.n().to_owned()?, bytes));
    let mut sig = rsa_pss_sign(issuer, &c)?;
    sig.reverse();
    sig.resize(bytes, 0);
    c.extend_from_slice(&sig);
    Ok(c)
}

/// Verify an AMD-format CA cert (4096-bit, SHA-384 PSS) against an issuer RSA key.
pub fn verify_ca(c: &[u8], issuer: &RsaRef<impl HasPublic>) -> Result<(), CertError> {
    let bytes = issuer.size() as usize;
    if c.len() != 0x40 + 3 * bytes {
        return Err(CertError::Length(c.len(), 0x40 + 3 * bytes));
    }
    let (body, sig) = c.split_at(0x40 + 2 * bytes);
    let mut sig = sig.to_vec();
    sig.reverse();
    let pk = PKey::from_rsa(Rsa::from_public_components(
        issuer.n().to_owned()?,
        issuer.e().to_owned()?,
    )?)?;
    let mut v = Verifier::new(MessageDigest::sha384(), &pk)?;
    v.set_rsa_padding(Padding::PKCS1_PSS)?;
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
    v.set_rsa_mgf1_md(MessageDigest::sha384())?;
    v.update(body)?;
    if v.verify(&sig)? {
        Ok(())
    } else {
        Err(CertError::BadSignature)
    }
}

/// ECDH on P-384: the 48-byte big-endian x coordinate of d·Q.
pub fn ecdh(
    private: &EcKeyRef<Private>,
    peer: &EcKeyRef<Public>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, openssl::error::ErrorStack> {
    let me = PKey::from_ec_key(private.to_owned())?;
    let them = PKey::from_ec_key(peer.to_owned())?;
    let mut d = openssl::derive::Deriver::new(&me)?;
    d.set_peer(&them)?;
    Ok(zeroize::Zeroizing::new(d.derive_to_vec()?))
}

/// Generate a fresh P-384 key pair.
pub fn gen_p384() -> Result<EcKey<Private>, openssl::error::ErrorStack> {
    EcKey::generate(&p384())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_cert_sign_verify_round_trip() {
        let oca = gen_p384().unwrap();
        let pek = gen_p384().unwrap();
        let mut oc = sev_cert_ec(usage::OCA, algo::ECDSA_SHA256, (0, 24), &oca).unwrap();
        sign_ec(&mut oc, &oca, usage::OCA).unwrap();
        let mut pc = sev_cert_ec(usage::PEK, algo::ECDSA_SHA256, (0, 24), &pek).unwrap();
        sign_ec(&mut pc, &oca, usage::OCA).unwrap();
        verify_ec_by(&pc, &oc).unwrap();
        verify_ec_by(&oc, &oc).unwrap();
        assert!(verify_ec_by(&oc, &pc).is_err());
        pc[0x20] ^= 1;
        assert!(verify_ec_by(&pc, &oc).is_err());
        let k = ec_public_key(&oc).unwrap();
        assert_eq!(
            k.public_key_to_der().unwrap(),
            oca.public_key_to_der().unwrap()
        );
    }
}
