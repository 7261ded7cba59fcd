//! SEV certificates (the 2084-byte platform format: OCA, PEK, PDH, CEK, GODH) and AMD CA
//! certificates (ARK, ASK), with codecs that both read and **make** certificates, signing and
//! verification, sevctl-style fingerprints, and chain verification ([`chain`]).
//!
//! All numbers in both formats are little-endian, including ECDSA r/s and RSA signatures.
//! ECDSA is P-384 over SHA-256 (or SHA-384 for the `*_SHA384` algos); RSA is RSASSA-PSS with
//! MGF1 on the same hash and salt length = hash length.

mod ca;
pub mod chain;
mod firmware;

pub use ca::CaCert;
pub use firmware::{chip_id, firmware_validate};

use crate::util::{array_at, le_u32};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcKeyRef};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, Private, Public};
use openssl::rsa::{Padding, Rsa, RsaRef};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use std::fmt;
use thiserror::Error;

/// Errors of certificate parsing, building, signing and verification.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CertError {
    /// The input ends inside a field.
    #[error("{what}: truncated: {len} bytes, field `{field}` incomplete (need {need} bytes)")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// The first incomplete field.
        field: &'static str,
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Bytes follow the end of the structure.
    #[error("{what}: {extra} unexpected trailing bytes after {need} bytes")]
    Trailing {
        /// Which structure.
        what: &'static str,
        /// Size of the structure.
        need: usize,
        /// Extra bytes.
        extra: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: field `{field}`: {reason}")]
    BadField {
        /// Which structure.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The public key cannot be used (wrong type, not on the curve, ...).
    #[error("public key: {0}")]
    BadKey(String),
    /// The certificate has no signature slot for the given signer.
    #[error("no signature by a {signer} ({algo}) key in the certificate")]
    NoSignature {
        /// The signer's usage name.
        signer: String,
        /// The signer's algorithm name.
        algo: String,
    },
    /// A signature did not verify.
    #[error("signature by the {signer} key does not verify")]
    BadSignature {
        /// The signer's usage name.
        signer: String,
    },
    /// This signer is not allowed to sign this kind of certificate.
    #[error("a {signer} certificate may not sign a {subject} certificate")]
    WrongSigner {
        /// Signer usage.
        signer: String,
        /// Subject usage.
        subject: String,
    },
    /// Both signature slots are already used.
    #[error("both signature slots of the certificate are already in use")]
    NoFreeSlot,
    /// The ASK's certifying_id does not name the ARK.
    #[error("ASK certifying_id {certifying} does not match ARK key_id {issuer}")]
    KeyIdMismatch {
        /// Hex of the subject's certifying_id.
        certifying: String,
        /// Hex of the issuer's key_id.
        issuer: String,
    },
    /// The root is not the trusted one.
    #[error("ARK is not the trusted root (fingerprint {0})")]
    UntrustedRoot(String),
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    Crypto(String),
}

pub(crate) fn ossl(e: openssl::error::ErrorStack) -> CertError {
    CertError::Crypto(e.to_string())
}

/// A certificate key usage (`pubkey_usage` / signature `usage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Usage(pub u32);

impl Usage {
    /// AMD root key.
    pub const ARK: Usage = Usage(0x0000);
    /// AMD signing key.
    pub const ASK: Usage = Usage(0x0013);
    /// Empty signature slot / invalid.
    pub const INVALID: Usage = Usage(0x1000);
    /// Owner certificate authority.
    pub const OCA: Usage = Usage(0x1001);
    /// Platform endorsement key.
    pub const PEK: Usage = Usage(0x1002);
    /// Platform Diffie-Hellman key (also the GODH).
    pub const PDH: Usage = Usage(0x1003);
    /// Chip endorsement key.
    pub const CEK: Usage = Usage(0x1004);

    /// The spec name, or `None` for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Usage::ARK => "ARK",
            Usage::ASK => "ASK",
            Usage::INVALID => "INV",
            Usage::OCA => "OCA",
            Usage::PEK => "PEK",
            Usage::PDH => "PDH",
            Usage::CEK => "CEK",
            _ => return None,
        })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "usage {:#x}", self.0),
        }
    }
}

/// A certificate key / signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Algo(pub u32);

impl Algo {
    /// Empty slot / invalid.
    pub const INVALID: Algo = Algo(0);
    /// RSA-PSS with SHA-256.
    pub const RSA_SHA256: Algo = Algo(1);
    /// ECDSA with SHA-256.
    pub const ECDSA_SHA256: Algo = Algo(2);
    /// ECDH (key agreement key; hash SHA-256 for fingerprints).
    pub const ECDH_SHA256: Algo = Algo(3);
    /// RSA-PSS with SHA-384.
    pub const RSA_SHA384: Algo = Algo(0x101);
    /// ECDSA with SHA-384.
    pub const ECDSA_SHA384: Algo = Algo(0x102);
    /// ECDH (hash SHA-384).
    pub const ECDH_SHA384: Algo = Algo(0x103);

    /// The spec name, or `None` for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Algo::INVALID => "INVALID",
            Algo::RSA_SHA256 => "RSA_SHA256",
            Algo::ECDSA_SHA256 => "ECDSA_SHA256",
            Algo::ECDH_SHA256 => "ECDH_SHA256",
            Algo::RSA_SHA384 => "RSA_SHA384",
            Algo::ECDSA_SHA384 => "ECDSA_SHA384",
            Algo::ECDH_SHA384 => "ECDH_SHA384",
            _ => return None,
        })
    }
    /// True for the EC algorithms (ECDSA and ECDH).
    pub fn is_ec(self) -> bool {
        matches!(
            self,
            Algo::ECDSA_SHA256 | Algo::ECDH_SHA256 | Algo::ECDSA_SHA384 | Algo::ECDH_SHA384
        )
    }
    /// True for the RSA algorithms.
    pub fn is_rsa(self) -> bool {
        matches!(self, Algo::RSA_SHA256 | Algo::RSA_SHA384)
    }
    /// True for ECDH key algorithms (PDH, GODH).
    pub fn is_ecdh(self) -> bool {
        matches!(self, Algo::ECDH_SHA256 | Algo::ECDH_SHA384)
    }
    /// The hash of this algorithm (SHA-384 for `*_SHA384`, else SHA-256).
    pub fn digest(self) -> MessageDigest {
        if self.0 & 0x100 != 0 {
            MessageDigest::sha384()
        } else {
            MessageDigest::sha256()
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "algo {:#x}", self.0),
        }
    }
}

/// One signature slot of a SEV certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct SigSlot {
    /// Usage of the signing key (0x1000 = empty).
    pub usage: Usage,
    /// Algorithm of the signing key (0 = empty).
    pub algo: Algo,
    /// ECDSA: `r[72]` LE ‖ `s[72]` LE ‖ zeros; RSA: the signature integer, LE.
    pub sig: [u8; 512],
}

impl fmt::Debug for SigSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigSlot")
            .field("usage", &self.usage)
            .field("algo", &self.algo)
            .field("sig", &hex::encode(&self.sig[..16]))
            .finish()
    }
}

impl SigSlot {
    /// An empty slot: usage INVALID, algo 0, zero signature.
    pub fn empty() -> Self {
        SigSlot {
            usage: Usage::INVALID,
            algo: Algo::INVALID,
            sig: [0; 512],
        }
    }
    /// True when the slot is marked empty (usage 0x1000 and algo 0).
    pub fn is_empty(&self) -> bool {
        self.usage == Usage::INVALID && self.algo == Algo::INVALID
    }
}

/// Field offsets and sizes of the 2084-byte SEV certificate, for error messages.
const SEV_FIELDS: &[(&str, usize, usize)] = &[
    ("version", 0x000, 4),
    ("api_major", 0x004, 1),
    ("api_minor", 0x005, 1),
    ("reserved", 0x006, 2),
    ("pubkey_usage", 0x008, 4),
    ("pubkey_algo", 0x00C, 4),
    ("pubkey", 0x010, 0x404),
    ("sig1.usage", 0x414, 4),
    ("sig1.algo", 0x418, 4),
    ("sig1.sig", 0x41C, 512),
    ("sig2.usage", 0x61C, 4),
    ("sig2.algo", 0x620, 4),
    ("sig2.sig", 0x624, 512),
];

pub(crate) fn truncated(
    what: &'static str,
    fields: &[(&'static str, usize, usize)],
    len: usize,
    need: usize,
) -> CertError {
    let field = fields
        .iter()
        .find(|(_, off, sz)| off + sz > len)
        .map(|(n, _, _)| *n)
        .unwrap_or("?");
    CertError::Truncated {
        what,
        field,
        len,
        need,
    }
}

/// Writes a big-endian integer into a little-endian fixed field (zero padded).
pub(crate) fn be_to_le_field(be: &[u8], field: &mut [u8]) -> Result<(), CertError> {
    if be.len() > field.len() {
        return Err(CertError::BadKey(format!(
            "{}-byte integer does not fit a {}-byte field",
            be.len(),
            field.len()
        )));
    }
    field.fill(0);
    for (i, b) in be.iter().rev().enumerate() {
        field[i] = *b;
    }
    Ok(())
}

/// Reads a little-endian field as a BigNum.
pub(crate) fn le_field_to_bn(le: &[u8]) -> Result<BigNum, CertError> {
    let be: Vec<u8> = le.iter().rev().copied().collect();
    BigNum::from_slice(&be).map_err(ossl)
}

fn curve_nid(curve: u32) -> Option<(Nid, usize)> {
    match curve {
        1 => Some((Nid::X9_62_PRIME256V1, 32)),
        2 => Some((Nid::SECP384R1, 48)),
        _ => None,
    }
}

/// Which usages may sign which subject usages (SEV API `sev_cert_validate`).
fn signer_allowed(subject: Usage, signer: Usage) -> bool {
    matches!(
        (subject, signer),
        (Usage::PDH, Usage::PEK)
            | (Usage::PEK, Usage::OCA)
            | (Usage::PEK, Usage::CEK)
            | (Usage::OCA, Usage::OCA)
            | (Usage::CEK, Usage::ASK)
    )
}

/// Hex of the digest of `data` with `md`.
fn hex_digest(md: MessageDigest, data: &[u8]) -> String {
    match hash(md, data) {
        Ok(d) => hex::encode(&*d),
        Err(_) => String::new(),
    }
}

/// RSASSA-PSS (MGF1 = same hash, salt = hash length) over `data`; returns the signature
/// big-endian, as OpenSSL makes it.
pub(crate) fn rsa_pss_sign(
    key: &RsaRef<Private>,
    md: MessageDigest,
    data: &[u8],
) -> Result<Vec<u8>, CertError> {
    let pkey = PKey::from_rsa(key.to_owned()).map_err(ossl)?;
    let mut s = Signer::new(md, &pkey).map_err(ossl)?;
    s.set_rsa_padding(Padding::PKCS1_PSS).map_err(ossl)?;
    s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
        .map_err(ossl)?;
    s.set_rsa_mgf1_md(md).map_err(ossl)?;
    s.update(data).map_err(ossl)?;
    s.sign_to_vec().map_err(ossl)
}

/// Verifies RSASSA-PSS over `data` with a big-endian signature.
pub(crate) fn rsa_pss_verify<T: HasPublic>(
    key: &RsaRef<T>,
    md: MessageDigest,
    data: &[u8],
    sig_be: &[u8],
) -> Result<bool, CertError> {
    let pkey = PKey::from_rsa(key.to_owned()).map_err(ossl)?;
    let mut v = Verifier::new(md, &pkey).map_err(ossl)?;
    v.set_rsa_padding(Padding::PKCS1_PSS).map_err(ossl)?;
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
        .map_err(ossl)?;
    v.set_rsa_mgf1_md(md).map_err(ossl)?;
    v.update(data).map_err(ossl)?;
    // A malformed signature is a failed verification, not an error.
    Ok(v.verify(sig_be).unwrap_or(false))
}

/// A 2084-byte (0x824) SEV certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct SevCert {
    /// 0x000: format version (1).
    pub version: u32,
    /// 0x004: API major of the firmware that made the cert.
    pub api_major: u8,
    /// 0x005: API minor.
    pub api_minor: u8,
    /// 0x006: reserved (0).
    pub reserved: [u8; 2],
    /// 0x008: usage of the certified key.
    pub usage: Usage,
    /// 0x00C: algorithm of the certified key.
    pub algo: Algo,
    /// 0x010: the raw 0x404-byte public key field (EC: curve, `Qx[72]`, `Qy[72]`, zeros;
    /// RSA: modulus bits, `pubexp[512]`, `modulus[512]`).
    pub pubkey: [u8; 0x404],
    /// 0x414 and 0x61C: the two signature slots.
    pub sigs: [SigSlot; 2],
}

impl fmt::Debug for SevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SevCert")
            .field("version", &self.version)
            .field(
                "api",
                &format_args!("{}.{}", self.api_major, self.api_minor),
            )
            .field("usage", &self.usage)
            .field("algo", &self.algo)
            .field("sigs", &self.sigs)
            .finish()
    }
}

/// Formats as sevctl does: `PEK EP384 E256 <fingerprint>`.
impl fmt::Display for SevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.usage,
            self.key_desc(),
            self.fingerprint()
        )
    }
}

impl SevCert {
    /// Size of the encoded certificate.
    pub const LEN: usize = 0x824;
    /// Size of the signed body (version through pubkey).
    pub const BODY_LEN: usize = 0x414;
    const WHAT: &'static str = "SEV certificate";

    /// Parses exactly 2084 bytes, rejecting bad versions, unknown usages/algos, unknown curves
    /// or key sizes and malformed signature slots, with errors that name the field.
    pub fn parse(b: &[u8]) -> Result<Self, CertError> {
        if b.len() < Self::LEN {
            return Err(truncated(Self::WHAT, SEV_FIELDS, b.len(), Self::LEN));
        }
        if b.len() > Self::LEN {
            return Err(CertError::Trailing {
                what: Self::WHAT,
                need: Self::LEN,
                extra: b.len() - Self::LEN,
            });
        }
        let bad = |field: &'static str, reason: String| CertError::BadField {
            what: Self::WHAT,
            field,
            reason,
        };
        let t = || truncated(Self::WHAT, SEV_FIELDS, b.len(), Self::LEN);
        let version = le_u32(b, 0).ok_or_else(t)?;
        if version != 1 {
            return Err(bad("version", format!("{version} (expected 1)")));
        }
        let usage = Usage(le_u32(b, 8).ok_or_else(t)?);
        if !matches!(usage, Usage::OCA | Usage::PEK | Usage::PDH | Usage::CEK) {
            return Err(bad(
                "pubkey_usage",
                format!("{:#x} is not OCA, PEK, PDH or CEK", usage.0),
            ));
        }
        let algo = Algo(le_u32(b, 12).ok_or_else(t)?);
        if !(algo.is_ec() || algo.is_rsa()) {
            return Err(bad(
                "pubkey_algo",
                format!("{:#x} is not a known key algorithm", algo.0),
            ));
        }
        let pubkey: [u8; 0x404] = array_at(b, 0x10).ok_or_else(t)?;
        let kind = le_u32(&pubkey, 0).ok_or_else(t)?;
        if algo.is_ec() {
            let Some((_, clen)) = curve_nid(kind) else {
                return Err(bad(
                    "pubkey.curve",
                    format!("{kind} is not P-256 (1) or P-384 (2)"),
                ));
            };
            if pubkey[4 + clen..4 + 72].iter().any(|&x| x != 0)
                || pubkey[4 + 72 + clen..4 + 144].iter().any(|&x| x != 0)
            {
                return Err(bad(
                    "pubkey.qx/qy",
                    format!(
                        "nonzero bytes beyond the {clen}-byte coordinates of curve {kind} ({})",
                        if kind == 2 { "P-384" } else { "P-256" }
                    ),
                ));
            }
        } else if kind != 2048 && kind != 4096 {
            return Err(bad(
                "pubkey.modulus_size",
                format!("{kind} bits (expected 2048 or 4096)"),
            ));
        }
        let mut sigs = [SigSlot::empty(), SigSlot::empty()];
        for (i, slot) in sigs.iter_mut().enumerate() {
            let off = 0x414 + i * 0x208;
            let (fu, fa) = if i == 0 {
                ("sig1.usage", "sig1.algo")
            } else {
                ("sig2.usage", "sig2.algo")
            };
            slot.usage = Usage(le_u32(b, off).ok_or_else(t)?);
            slot.algo = Algo(le_u32(b, off + 4).ok_or_else(t)?);
            slot.sig = array_at(b, off + 8).ok_or_else(t)?;
            if slot.usage.name().is_none() {
                return Err(bad(fu, format!("{:#x} is not a known usage", slot.usage.0)));
            }
            if slot.algo.name().is_none() {
                return Err(bad(
                    fa,
                    format!("{:#x} is not a known algorithm", slot.algo.0),
                ));
            }
            if (slot.usage == Usage::INVALID) != (slot.algo == Algo::INVALID) {
                return Err(bad(
                    fa,
                    format!(
                        "slot half-empty: usage {:#x} with algo {:#x}",
                        slot.usage.0, slot.algo.0
                    ),
                ));
            }
        }
        Ok(SevCert {
            version,
            api_major: b[4],
            api_minor: b[5],
            reserved: [b[6], b[7]],
            usage,
            algo,
            pubkey,
            sigs,
        })
    }

    /// The signed body, bytes `[0x000, 0x414)`.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::BODY_LEN);
        v.extend_from_slice(&self.version.to_le_bytes());
        v.push(self.api_major);
        v.push(self.api_minor);
        v.extend_from_slice(&self.reserved);
        v.extend_from_slice(&self.usage.0.to_le_bytes());
        v.extend_from_slice(&self.algo.0.to_le_bytes());
        v.extend_from_slice(&self.pubkey);
        v
    }

    /// Encodes the 2084-byte certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        for s in &self.sigs {
            v.extend_from_slice(&s.usage.0.to_le_bytes());
            v.extend_from_slice(&s.algo.0.to_le_bytes());
            v.extend_from_slice(&s.sig);
        }
        v
    }

    /// A new, unsigned EC certificate (both slots empty) for `key`'s public point.
    /// `algo` must be an EC algorithm; the key must be on P-384 (or P-256).
    pub fn new_ec<T: HasPublic>(
        usage: Usage,
        algo: Algo,
        api_major: u8,
        api_minor: u8,
        key: &EcKeyRef<T>,
    ) -> Result<Self, CertError> {
        if !algo.is_ec() {
            return Err(CertError::BadKey(format!("{algo} is not an EC algorithm")));
        }
        let (curve, clen) = match key.group().curve_name() {
            Some(Nid::SECP384R1) => (2u32, 48),
            Some(Nid::X9_62_PRIME256V1) => (1u32, 32),
            other => {
                return Err(CertError::BadKey(format!(
                    "unsupported curve {other:?} (need P-384)"
                )))
            }
        };
        let mut ctx = BigNumContext::new().map_err(ossl)?;
        let mut x = BigNum::new().map_err(ossl)?;
        let mut y = BigNum::new().map_err(ossl)?;
        key.public_key()
            .affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)
            .map_err(ossl)?;
        let mut pubkey = [0u8; 0x404];
        pubkey[0..4].copy_from_slice(&curve.to_le_bytes());
        be_to_le_field(&x.to_vec(), &mut pubkey[4..4 + clen])?;
        be_to_le_field(&y.to_vec(), &mut pubkey[4 + 72..4 + 72 + clen])?;
        Ok(SevCert {
            version: 1,
            api_major,
            api_minor,
            reserved: [0; 2],
            usage,
            algo,
            pubkey,
            sigs: [SigSlot::empty(), SigSlot::empty()],
        })
    }

    /// The certificate with both signature slots emptied (e.g. the CEK that PDH_CERT_EXPORT
    /// returns, or a PEK CSR).
    pub fn unsigned(&self) -> Self {
        let mut c = self.clone();
        c.sigs = [SigSlot::empty(), SigSlot::empty()];
        c
    }

    /// The EC public key, checked to be a valid point.
    pub fn ec_public_key(&self) -> Result<EcKey<Public>, CertError> {
        if !self.algo.is_ec() {
            return Err(CertError::BadKey(format!(
                "{} key algorithm {} is not EC",
                self.usage, self.algo
            )));
        }
        let curve = le_u32(&self.pubkey, 0).unwrap_or(0);
        let (nid, clen) = curve_nid(curve)
            .ok_or_else(|| CertError::BadKey(format!("unknown curve id {curve}")))?;
        let group = EcGroup::from_curve_name(nid).map_err(ossl)?;
        let x = le_field_to_bn(&self.pubkey[4..4 + clen])?;
        let y = le_field_to_bn(&self.pubkey[4 + 72..4 + 72 + clen])?;
        let k = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(|e| {
            CertError::BadKey(format!("{} point is not on the curve: {e}", self.usage))
        })?;
        k.check_key()
            .map_err(|e| CertError::BadKey(format!("{} key invalid: {e}", self.usage)))?;
        Ok(k)
    }

    /// The P-384 public point `(Qx, Qy)` exactly as the certificate stores it: 48
    /// little-endian bytes each (the 2016 launch-file draft's `dh_pub_qx` / `dh_pub_qy`).
    /// Fails for a non-EC key or another curve; the point is not checked to be on the curve
    /// (see [`SevCert::ec_public_key`]).
    pub fn p384_point_le(&self) -> Result<([u8; 48], [u8; 48]), CertError> {
        if !self.algo.is_ec() {
            return Err(CertError::BadKey(format!(
                "{} key algorithm {} is not an EC algorithm",
                self.usage, self.algo
            )));
        }
        let curve = le_u32(&self.pubkey, 0).unwrap_or(0);
        if curve_nid(curve).map(|(nid, _)| nid) != Some(Nid::SECP384R1) {
            return Err(CertError::BadKey(format!(
                "{} key curve {curve} is not P-384 (2)",
                self.usage
            )));
        }
        let qx = array_at(&self.pubkey, 4).ok_or_else(|| CertError::BadKey("Qx".into()))?;
        let qy = array_at(&self.pubkey, 4 + 72).ok_or_else(|| CertError::BadKey("Qy".into()))?;
        Ok((qx, qy))
    }

    /// The RSA public key of an RSA certificate (e.g. an imported RSA OCA).
    pub fn rsa_public_key(&self) -> Result<Rsa<Public>, CertError> {
        if !self.algo.is_rsa() {
            return Err(CertError::BadKey(format!(
                "{} key algorithm {} is not RSA",
                self.usage, self.algo
            )));
        }
        let bits = le_u32(&self.pubkey, 0).unwrap_or(0) as usize;
        if bits != 2048 && bits != 4096 {
            return Err(CertError::BadKey(format!("modulus size {bits}")));
        }
        let e = le_field_to_bn(&self.pubkey[4..4 + 512])?;
        let n = le_field_to_bn(&self.pubkey[4 + 512..4 + 512 + bits / 8])?;
        Rsa::from_public_components(n, e).map_err(ossl)
    }

    fn free_slot(&mut self) -> Result<&mut SigSlot, CertError> {
        self.sigs
            .iter_mut()
            .find(|s| s.is_empty())
            .ok_or(CertError::NoFreeSlot)
    }

    /// Signs the body with an EC private key (ECDSA, SHA-256) into the first free slot,
    /// recording `usage` (the signer's usage) and algo ECDSA_SHA256.
    pub fn sign_with(&mut self, key: &EcKeyRef<Private>, usage: Usage) -> Result<(), CertError> {
        let digest = Algo::ECDSA_SHA256.digest();
        let h = hash(digest, &self.body()).map_err(ossl)?;
        let sig = EcdsaSig::sign(&h, key).map_err(ossl)?;
        let slot = self.free_slot()?;
        let mut s = [0u8; 512];
        be_to_le_field(&sig.r().to_vec(), &mut s[0..72])?;
        be_to_le_field(&sig.s().to_vec(), &mut s[72..144])?;
        slot.usage = usage;
        slot.algo = Algo::ECDSA_SHA256;
        slot.sig = s;
        Ok(())
    }

    /// Signs the body with an RSA key (RSA-PSS) into the first free slot: algo RSA_SHA256 for
    /// a 2048-bit key, RSA_SHA384 for 4096 bits (as real Naples / Rome+ CEKs). Used by the soft
    /// ASK to sign a CEK (`usage` = [`Usage::ASK`]).
    pub fn sign_with_rsa(&mut self, key: &RsaRef<Private>, usage: Usage) -> Result<(), CertError> {
        let algo = match key.size() {
            256 => Algo::RSA_SHA256,
            512 => Algo::RSA_SHA384,
            n => return Err(CertError::BadKey(format!("RSA key of {} bits", n * 8))),
        };
        let be = rsa_pss_sign(key, algo.digest(), &self.body())?;
        let slot = self.free_slot()?;
        let mut s = [0u8; 512];
        be_to_le_field(&be, &mut s)?;
        slot.usage = usage;
        slot.algo = algo;
        slot.sig = s;
        Ok(())
    }

    fn candidates(&self, usage: Usage, algo_ok: impl Fn(Algo) -> bool) -> Vec<&SigSlot> {
        self.sigs
            .iter()
            .filter(|s| s.usage == usage && algo_ok(s.algo))
            .collect()
    }

    /// Verifies that `signer` (a SEV certificate: OCA, PEK or CEK) signed this certificate.
    /// The slot is chosen by the signer's usage and algo; both slots are tried.
    pub fn verify_signed_by(&self, signer: &SevCert) -> Result<(), CertError> {
        if !signer_allowed(self.usage, signer.usage) {
            return Err(CertError::WrongSigner {
                signer: signer.usage.to_string(),
                subject: self.usage.to_string(),
            });
        }
        let slots = self.candidates(signer.usage, |a| a == signer.algo);
        if slots.is_empty() {
            return Err(CertError::NoSignature {
                signer: signer.usage.to_string(),
                algo: signer.algo.to_string(),
            });
        }
        let body = self.body();
        for slot in slots {
            let ok = if signer.algo.is_ec() {
                let key = signer.ec_public_key()?;
                let h = hash(slot.algo.digest(), &body).map_err(ossl)?;
                let r = le_field_to_bn(&slot.sig[0..72])?;
                let s = le_field_to_bn(&slot.sig[72..144])?;
                let sig = EcdsaSig::from_private_components(r, s).map_err(ossl)?;
                sig.verify(&h, &key).unwrap_or(false)
            } else {
                let key = signer.rsa_public_key()?;
                let n = key.size() as usize;
                let be: Vec<u8> = slot.sig[..n].iter().rev().copied().collect();
                rsa_pss_verify(&key, slot.algo.digest(), &body, &be)?
            };
            if ok {
                return Ok(());
            }
        }
        Err(CertError::BadSignature {
            signer: signer.usage.to_string(),
        })
    }

    /// Verifies a self-signed certificate (the OCA).
    pub fn verify_self_signed(&self) -> Result<(), CertError> {
        self.verify_signed_by(self)
    }

    /// Verifies that the AMD CA certificate `ca` (the ASK) signed this certificate (the CEK).
    pub fn verify_signed_by_ca(&self, ca: &CaCert) -> Result<(), CertError> {
        if !signer_allowed(self.usage, ca.usage) {
            return Err(CertError::WrongSigner {
                signer: ca.usage.to_string(),
                subject: self.usage.to_string(),
            });
        }
        let slots = self.candidates(ca.usage, |a| a.is_rsa());
        if slots.is_empty() {
            return Err(CertError::NoSignature {
                signer: ca.usage.to_string(),
                algo: "RSA".into(),
            });
        }
        let key = ca.rsa_public_key()?;
        let n = key.size() as usize;
        let body = self.body();
        for slot in slots {
            let be: Vec<u8> = slot.sig[..n.min(512)].iter().rev().copied().collect();
            if rsa_pss_verify(&key, slot.algo.digest(), &body, &be)? {
                return Ok(());
            }
        }
        Err(CertError::BadSignature {
            signer: ca.usage.to_string(),
        })
    }

    /// The sevctl fingerprint: lowercase hex of the SHA-256 (SHA-384 for `*_SHA384` keys) of
    /// the signed body.
    pub fn fingerprint(&self) -> String {
        hex_digest(self.algo.digest(), &self.body())
    }

    /// The key description sevctl prints, e.g. `EP384 E256` (ECDSA), `EP384 D256` (ECDH),
    /// `R4096 R384` (RSA).
    pub fn key_desc(&self) -> String {
        let hbits = self.algo.digest().size() * 8;
        let kind = le_u32(&self.pubkey, 0).unwrap_or(0);
        if self.algo.is_ec() {
            let deg = match kind {
                1 => 256,
                2 => 384,
                _ => 0,
            };
            let c = if self.algo.is_ecdh() { 'D' } else { 'E' };
            format!("EP{deg} {c}{hbits}")
        } else {
            format!("R{kind} R{hbits}")
        }
    }
}

/// Derives the chip endorsement key from a chip-unique key as the AMD firmware does:
/// seed = SHA-256(CUK); r = KDF(seed, "sev-chip-endorsement-key", "", 56); c = r read
/// little-endian; d = (c mod (n − 1)) + 1 on P-384. For soft platforms (real CEKs cannot be
/// reproduced without the fused CUK).
pub fn derive_cek_key(cuk: &[u8]) -> Result<EcKey<Private>, CertError> {
    let seed = zeroize::Zeroizing::new(openssl::sha::sha256(cuk));
    let r = crate::kdf::kdf(&seed[..], crate::kdf::LABEL_CEK, b"", 56);
    let c = le_field_to_bn(&r)?;
    let group = EcGroup::from_curve_name(Nid::SECP384R1).map_err(ossl)?;
    let mut ctx = BigNumContext::new().map_err(ossl)?;
    let mut n = BigNum::new().map_err(ossl)?;
    group.order(&mut n, &mut ctx).map_err(ossl)?;
    let one = BigNum::from_u32(1).map_err(ossl)?;
    let mut nm1 = BigNum::new().map_err(ossl)?;
    nm1.checked_sub(&n, &one).map_err(ossl)?;
    let mut d = BigNum::new().map_err(ossl)?;
    d.nnmod(&c, &nm1, &mut ctx).map_err(ossl)?;
    d.add_word(1).map_err(ossl)?;
    let mut q = openssl::ec::EcPoint::new(&group).map_err(ossl)?;
    q.mul_generator2(&group, &d, &mut ctx).map_err(ossl)?;
    EcKey::from_private_components(&group, &d, &q).map_err(ossl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cek_derivation_is_deterministic_and_valid() {
        let a = derive_cek_key(b"chip-unique-key-1").unwrap();
        let b = derive_cek_key(b"chip-unique-key-1").unwrap();
        let c = derive_cek_key(b"chip-unique-key-2").unwrap();
        a.check_key().unwrap();
        // Independently computed in Python from the same recipe (sev-spec-notes.md §3.1).
        assert_eq!(
            hex::encode(a.private_key().to_vec()),
            "0e3085c23b6bba08d11404610d028614b3d715e5872a43777d00181e23a0cb40e53ce8534675c683ed69480bb89a749a"
        );
        assert_eq!(a.private_key().to_vec(), b.private_key().to_vec());
        assert_ne!(a.private_key().to_vec(), c.private_key().to_vec());
    }

    fn p384() -> EcKey<Private> {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        EcKey::generate(&g).unwrap()
    }

    #[test]
    fn make_sign_verify_roundtrip() {
        let oca_key = p384();
        let mut oca = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &oca_key).unwrap();
        oca.sign_with(&oca_key, Usage::OCA).unwrap();
        oca.verify_self_signed().unwrap();
        let enc = oca.encode();
        assert_eq!(enc.len(), SevCert::LEN);
        let back = SevCert::parse(&enc).unwrap();
        assert_eq!(back, oca);
        assert_eq!(back.encode(), enc);
        let k = back.ec_public_key().unwrap();
        assert!(k
            .public_key()
            .eq(
                k.group(),
                oca_key.public_key(),
                &mut BigNumContext::new().unwrap()
            )
            .unwrap());

        let pek_key = p384();
        let cek_key = p384();
        let mut cek = SevCert::new_ec(Usage::CEK, Algo::ECDSA_SHA256, 0, 14, &cek_key).unwrap();
        let ask = Rsa::generate(2048).unwrap();
        cek.sign_with_rsa(&ask, Usage::ASK).unwrap();
        assert_eq!(cek.sigs[0].algo, Algo::RSA_SHA256);
        let mut pek = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &pek_key).unwrap();
        pek.sign_with(&oca_key, Usage::OCA).unwrap();
        pek.sign_with(&cek_key, Usage::CEK).unwrap();
        assert_eq!(
            pek.sign_with(&cek_key, Usage::CEK),
            Err(CertError::NoFreeSlot)
        );
        pek.verify_signed_by(&oca).unwrap();
        pek.verify_signed_by(&cek).unwrap();
        // A forged body breaks both signatures.
        let mut forged = pek.clone();
        forged.api_minor ^= 1;
        assert!(matches!(
            forged.verify_signed_by(&oca),
            Err(CertError::BadSignature { .. })
        ));
        // PDH signed by the wrong key.
        let pdh_key = p384();
        let mut pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh_key).unwrap();
        assert!(matches!(
            pdh.verify_signed_by(&pek),
            Err(CertError::NoSignature { .. })
        ));
        let other = p384();
        pdh.sign_with(&other, Usage::PEK).unwrap();
        assert!(matches!(
            pdh.verify_signed_by(&pek),
            Err(CertError::BadSignature { .. })
        ));
        assert!(matches!(
            pdh.verify_signed_by(&oca),
            Err(CertError::WrongSigner { .. })
        ));
        assert_eq!(pdh.key_desc(), "EP384 D256");
        assert_eq!(pek.key_desc(), "EP384 E256");
    }

    #[test]
    fn parse_errors_name_fields() {
        let k = p384();
        let c = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &k).unwrap();
        let enc = c.encode();
        let e = SevCert::parse(&enc[..100]).unwrap_err();
        assert!(e.to_string().contains("`pubkey`"), "{e}");
        let e = SevCert::parse(&enc[..0x500]).unwrap_err();
        assert!(e.to_string().contains("`sig1.sig`"), "{e}");
        let mut long = enc.clone();
        long.push(0);
        assert!(matches!(
            SevCert::parse(&long),
            Err(CertError::Trailing { .. })
        ));
        let mut b = enc.clone();
        b[0] = 2;
        assert!(SevCert::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`version`"));
        let mut b = enc.clone();
        b[8] = 0x55;
        assert!(SevCert::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`pubkey_usage`"));
        let mut b = enc.clone();
        b[12] = 0x77;
        assert!(SevCert::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`pubkey_algo`"));
        let mut b = enc.clone();
        b[0x10] = 9;
        assert!(SevCert::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`pubkey.curve`"));
        let mut b = enc.clone();
        b[0x418] = 2; // algo set while usage says empty
        assert!(SevCert::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`sig1.algo`"));
    }
}
