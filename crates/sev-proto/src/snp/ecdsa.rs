//! The SEV-SNP ECDSA formats shared by the attestation report, the ID block authentication
//! structure and the firmware (notes §2.2, §3.1):
//!
//! - a **signature** block (0x200 bytes): `000 R\[72\] · 048 S\[72\] · 090..1FF reserved (zero)`;
//! - a **public key** (0x404 bytes): `000 u32 CURVE (2 = P-384) · 004 QX\[72\] · 04C QY\[72\] ·
//!   094..403 reserved (zero)`.
//!
//! All big numbers are **little-endian**, zero-padded to 72 bytes (P-384 uses 48). Conversion to
//! and from OpenSSL's big-endian numbers is done here; the signing and verification themselves
//! are OpenSSL's (ECDSA P-384 over a SHA-384 digest).

use super::{expect_len, expect_zero, sha384, FormatError};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcKeyRef};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKeyRef, Private, Public};
use thiserror::Error;

/// Size of a signature block.
pub const SIGNATURE_SIZE: usize = 0x200;
/// Size of a public key structure.
pub const PUBLIC_KEY_SIZE: usize = 0x404;
/// Size of one little-endian component.
pub const COMPONENT_SIZE: usize = 72;
/// CURVE value for P-384.
pub const CURVE_P384: u32 = 2;
/// Signature / key algorithm value for ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;

/// A failed signature operation.
#[derive(Debug, Error)]
pub enum SigError {
    /// The structure is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The key is not an EC key on P-384.
    #[error("{0}: the key is not an ECDSA P-384 key")]
    NotP384(&'static str),
    /// The signature does not verify.
    #[error("{0}: ECDSA P-384 SHA-384 signature does not verify")]
    BadSignature(&'static str),
    /// The algorithm field is not 1 (ECDSA P-384 SHA-384).
    #[error("{structure}.{field}: algorithm {value} is not 1 (ECDSA P-384 with SHA-384)")]
    UnsupportedAlgo {
        /// Structure name.
        structure: &'static str,
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
}

fn le_to_bn(le: &[u8]) -> Result<BigNum, ErrorStack> {
    let be: Vec<u8> = le.iter().rev().copied().collect();
    BigNum::from_slice(&be)
}

fn bn_to_le(bn: &openssl::bn::BigNumRef) -> Result<[u8; COMPONENT_SIZE], ErrorStack> {
    let be = bn.to_vec_padded(COMPONENT_SIZE as i32)?;
    let mut out = [0u8; COMPONENT_SIZE];
    for (o, b) in out.iter_mut().zip(be.iter().rev()) {
        *o = *b;
    }
    Ok(out)
}

/// The P-384 group.
fn p384() -> Result<EcGroup, ErrorStack> {
    EcGroup::from_curve_name(Nid::SECP384R1)
}

/// The EC key of `pkey` if it is P-384.
pub(crate) fn p384_key<T: HasPublic>(
    what: &'static str,
    pkey: &PKeyRef<T>,
) -> Result<EcKey<T>, SigError> {
    let ec = pkey.ec_key().map_err(|_| SigError::NotP384(what))?;
    if ec.group().curve_name() != Some(Nid::SECP384R1) {
        return Err(SigError::NotP384(what));
    }
    Ok(ec)
}

/// An SNP ECDSA signature (R, S little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// R, little-endian, zero-padded.
    pub r: [u8; COMPONENT_SIZE],
    /// S, little-endian, zero-padded.
    pub s: [u8; COMPONENT_SIZE],
}

impl Default for Signature {
    fn default() -> Self {
        Signature {
            r: [0; COMPONENT_SIZE],
            s: [0; COMPONENT_SIZE],
        }
    }
}

impl Signature {
    /// Parses a 0x200-byte signature block; `structure` names the containing structure in errors.
    pub fn from_bytes(structure: &'static str, b: &[u8]) -> Result<Self, FormatError> {
        expect_len(structure, b, SIGNATURE_SIZE)?;
        expect_zero(structure, "SIGNATURE reserved", b, 0x90, SIGNATURE_SIZE)?;
        Ok(Signature {
            r: super::arr(b, 0),
            s: super::arr(b, COMPONENT_SIZE),
        })
    }

    /// Encodes the 0x200-byte block.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_SIZE] {
        let mut b = [0u8; SIGNATURE_SIZE];
        b[..COMPONENT_SIZE].copy_from_slice(&self.r);
        b[COMPONENT_SIZE..2 * COMPONENT_SIZE].copy_from_slice(&self.s);
        b
    }

    /// Signs `message` (hashed with SHA-384) with a P-384 private key.
    pub fn sign(
        what: &'static str,
        message: &[u8],
        key: &PKeyRef<Private>,
    ) -> Result<Self, SigError> {
        let ec = p384_key(what, key)?;
        let sig = EcdsaSig::sign(&sha384(&[message]), &ec)?;
        Ok(Signature {
            r: bn_to_le(sig.r())?,
            s: bn_to_le(sig.s())?,
        })
    }

    /// Verifies over `message` (hashed with SHA-384); `what` names the structure in errors.
    pub fn verify<T: HasPublic>(
        &self,
        what: &'static str,
        message: &[u8],
        key: &EcKeyRef<T>,
    ) -> Result<(), SigError> {
        if key.group().curve_name() != Some(Nid::SECP384R1) {
            return Err(SigError::NotP384(what));
        }
        let sig = EcdsaSig::from_private_components(le_to_bn(&self.r)?, le_to_bn(&self.s)?)?;
        // An out-of-range R or S makes OpenSSL return an error rather than `false`; both mean
        // the signature does not verify.
        match sig.verify(&sha384(&[message]), key) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(SigError::BadSignature(what)),
        }
    }
}

/// An SNP public key structure (P-384 only is usable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// CURVE (2 = P-384).
    pub curve: u32,
    /// QX, little-endian, zero-padded.
    pub qx: [u8; COMPONENT_SIZE],
    /// QY, little-endian, zero-padded.
    pub qy: [u8; COMPONENT_SIZE],
}

impl PublicKey {
    /// Parses the 0x404-byte structure (any CURVE value; see [`PublicKey::to_ec_key`]).
    pub fn from_bytes(structure: &'static str, b: &[u8]) -> Result<Self, FormatError> {
        expect_len(structure, b, PUBLIC_KEY_SIZE)?;
        expect_zero(structure, "PUBLIC_KEY reserved", b, 0x94, PUBLIC_KEY_SIZE)?;
        Ok(PublicKey {
            curve: super::u32_at(b, 0),
            qx: super::arr(b, 4),
            qy: super::arr(b, 4 + COMPONENT_SIZE),
        })
    }

    /// Encodes the 0x404-byte structure.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_SIZE] {
        let mut b = [0u8; PUBLIC_KEY_SIZE];
        b[..4].copy_from_slice(&self.curve.to_le_bytes());
        b[4..4 + COMPONENT_SIZE].copy_from_slice(&self.qx);
        b[4 + COMPONENT_SIZE..4 + 2 * COMPONENT_SIZE].copy_from_slice(&self.qy);
        b
    }

    /// SHA-384 of the 0x404-byte structure (ID_KEY_DIGEST / AUTHOR_KEY_DIGEST).
    pub fn digest(&self) -> [u8; 48] {
        sha384(&[&self.to_bytes()])
    }

    /// The structure for a P-384 key.
    pub fn from_pkey<T: HasPublic>(what: &'static str, key: &PKeyRef<T>) -> Result<Self, SigError> {
        let ec = p384_key(what, key)?;
        let mut ctx = BigNumContext::new()?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
        Ok(PublicKey {
            curve: CURVE_P384,
            qx: bn_to_le(&x)?,
            qy: bn_to_le(&y)?,
        })
    }

    /// The OpenSSL key; fails for a CURVE other than 2 or a point not on P-384.
    pub fn to_ec_key(&self, what: &'static str) -> Result<EcKey<Public>, SigError> {
        if self.curve != CURVE_P384 {
            return Err(FormatError::field(
                what,
                "CURVE",
                format!("{} is not 2 (P-384)", self.curve),
            )
            .into());
        }
        let group = p384()?;
        let key = EcKey::from_public_key_affine_coordinates(
            &group,
            &*le_to_bn(&self.qx)?,
            &*le_to_bn(&self.qy)?,
        )
        .map_err(|_| FormatError::field(what, "QX/QY", "not a point on P-384"))?;
        key.check_key()
            .map_err(|_| FormatError::field(what, "QX/QY", "not a valid P-384 public key"))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;

    fn key() -> PKey<Private> {
        PKey::from_ec_key(EcKey::generate(&p384().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let k = key();
        let pk = PublicKey::from_pkey("test", &k).unwrap();
        let pk2 = PublicKey::from_bytes("test", &pk.to_bytes()).unwrap();
        assert_eq!(pk, pk2);
        let ec = pk2.to_ec_key("test").unwrap();
        let sig = Signature::sign("test", b"hello", &k).unwrap();
        let sig2 = Signature::from_bytes("test", &sig.to_bytes()).unwrap();
        assert_eq!(sig, sig2);
        assert_eq!(&sig.r[48..], &[0; 24]);
        sig2.verify("test", b"hello", &ec).unwrap();
        assert!(matches!(
            sig2.verify("test", b"hellp", &ec),
            Err(SigError::BadSignature("test"))
        ));
        let mut bad = sig2;
        bad.s[0] ^= 1;
        assert!(matches!(
            bad.verify("test", b"hello", &ec),
            Err(SigError::BadSignature(_))
        ));
        let zero = Signature::default();
        assert!(matches!(
            zero.verify("test", b"hello", &ec),
            Err(SigError::BadSignature(_))
        ));
    }

    #[test]
    fn format_errors() {
        let e = Signature::from_bytes("ID_AUTH", &[0; 10]).unwrap_err();
        assert_eq!(
            e,
            FormatError::Length {
                structure: "ID_AUTH",
                expected: 0x200,
                got: 10
            }
        );
        let mut b = [0u8; 0x200];
        b[0x1FF] = 1;
        let e = Signature::from_bytes("ID_AUTH", &b).unwrap_err();
        assert!(
            e.to_string().starts_with("ID_AUTH.SIGNATURE reserved"),
            "{e}"
        );
        let mut b = [0u8; 0x404];
        b[0x94] = 1;
        assert!(PublicKey::from_bytes("K", &b)
            .unwrap_err()
            .to_string()
            .starts_with("K.PUBLIC_KEY reserved"));
        assert!(PublicKey::from_bytes("K", &b[..0x403]).is_err());
    }

    #[test]
    fn key_errors() {
        let k = key();
        let mut pk = PublicKey::from_pkey("K", &k).unwrap();
        pk.curve = 1;
        let e = pk.to_ec_key("K").unwrap_err();
        assert!(e.to_string().starts_with("K.CURVE: 1"), "{e}");
        pk.curve = 2;
        pk.qy[0] ^= 1;
        let e = pk.to_ec_key("K").unwrap_err();
        assert!(e.to_string().starts_with("K.QX/QY"), "{e}");
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        assert!(matches!(
            PublicKey::from_pkey("K", &rsa),
            Err(SigError::NotP384("K"))
        ));
        let p256 =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let p256 = PKey::from_ec_key(p256).unwrap();
        assert!(matches!(
            Signature::sign("K", b"x", &p256),
            Err(SigError::NotP384("K"))
        ));
    }
}
