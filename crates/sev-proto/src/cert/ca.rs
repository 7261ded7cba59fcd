//! The AMD CA certificate (ARK and ASK; SEV API appendix B.1).

use super::{ossl, rsa_pss_sign, rsa_pss_verify, truncated, CertError, Usage};
use crate::util::{array_at, le_u32};
use openssl::bn::BigNum;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{HasPublic, Private, Public};
use openssl::rsa::{Rsa, RsaRef};
use std::fmt;

const WHAT: &str = "AMD CA certificate";
const HEADER: usize = 0x40;
const CA_FIELDS: &[(&str, usize, usize)] = &[
    ("version", 0x00, 4),
    ("key_id", 0x04, 16),
    ("certifying_id", 0x14, 16),
    ("key_usage", 0x24, 4),
    ("reserved", 0x28, 16),
    ("pubexp_size", 0x38, 4),
    ("modulus_size", 0x3C, 4),
];

/// An AMD CA certificate: `version=1, key_id[16], certifying_id[16], key_usage, reserved[16],
/// pubexp_bits, modulus_bits, pubexp, modulus, signature` (all integers little-endian).
#[derive(Clone, PartialEq, Eq)]
pub struct CaCert {
    /// Format version (1).
    pub version: u32,
    /// This key's ID.
    pub key_id: [u8; 16],
    /// The issuer's key ID (the ARK's own key_id for the ARK).
    pub certifying_id: [u8; 16],
    /// [`Usage::ARK`] or [`Usage::ASK`].
    pub usage: Usage,
    /// Reserved (zero in real certs).
    pub reserved: [u8; 16],
    /// Size of the public exponent field in bits (2048 or 4096).
    pub pubexp_bits: u32,
    /// Modulus size in bits (2048 or 4096).
    pub modulus_bits: u32,
    /// Public exponent, little-endian, `pubexp_bits / 8` bytes.
    pub pubexp: Vec<u8>,
    /// Modulus, little-endian, `modulus_bits / 8` bytes.
    pub modulus: Vec<u8>,
    /// RSA-PSS signature, little-endian, `modulus_bits / 8` bytes.
    pub signature: Vec<u8>,
}

impl fmt::Debug for CaCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCert")
            .field("usage", &self.usage)
            .field("key_id", &hex::encode(self.key_id))
            .field("certifying_id", &hex::encode(self.certifying_id))
            .field("modulus_bits", &self.modulus_bits)
            .finish()
    }
}

/// Formats as sevctl does: `ARK R4096 R384 <fingerprint>`.
impl fmt::Display for CaCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} R{} R{} {}",
            self.usage,
            self.modulus_bits,
            self.digest().size() * 8,
            self.fingerprint()
        )
    }
}

fn le_bytes_of(bn: &BigNum, len: usize) -> Result<Vec<u8>, CertError> {
    let be = bn.to_vec();
    if be.len() > len {
        return Err(CertError::BadKey(format!(
            "{}-byte integer does not fit {len} bytes",
            be.len()
        )));
    }
    let mut v: Vec<u8> = be.into_iter().rev().collect();
    v.resize(len, 0);
    Ok(v)
}

fn key_id_of(modulus_le: &[u8]) -> [u8; 16] {
    let d = openssl::sha::sha256(modulus_le);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

impl CaCert {
    /// Encoded size for a key size in bits: `0x40 + 3 * bits / 8` (832 or 1600).
    pub fn encoded_len_for(bits: u32) -> usize {
        HEADER + 3 * (bits as usize / 8)
    }

    /// Reads the total length announced by the header of `b` (for splitting a chain).
    pub fn peek_len(b: &[u8]) -> Result<usize, CertError> {
        if b.len() < HEADER {
            return Err(truncated(WHAT, CA_FIELDS, b.len(), HEADER));
        }
        let pe = le_u32(b, 0x38).unwrap_or(0);
        let m = le_u32(b, 0x3C).unwrap_or(0);
        for (field, v) in [("pubexp_size", pe), ("modulus_size", m)] {
            if v != 2048 && v != 4096 {
                return Err(CertError::BadField {
                    what: WHAT,
                    field,
                    reason: format!("{v} bits (expected 2048 or 4096)"),
                });
            }
        }
        Ok(HEADER + pe as usize / 8 + 2 * (m as usize / 8))
    }

    /// Parses a CA certificate that fills `b` exactly.
    pub fn parse(b: &[u8]) -> Result<Self, CertError> {
        let (c, rest) = Self::parse_prefix(b)?;
        if !rest.is_empty() {
            return Err(CertError::Trailing {
                what: WHAT,
                need: b.len() - rest.len(),
                extra: rest.len(),
            });
        }
        Ok(c)
    }

    /// Parses a CA certificate at the start of `b`; returns it and the remaining bytes.
    pub fn parse_prefix(b: &[u8]) -> Result<(Self, &[u8]), CertError> {
        let need = Self::peek_len(b)?;
        let version = le_u32(b, 0).unwrap_or(0);
        if version != 1 {
            return Err(CertError::BadField {
                what: WHAT,
                field: "version",
                reason: format!("{version} (expected 1)"),
            });
        }
        let usage = Usage(le_u32(b, 0x24).unwrap_or(0));
        if usage != Usage::ARK && usage != Usage::ASK {
            return Err(CertError::BadField {
                what: WHAT,
                field: "key_usage",
                reason: format!("{:#x} is not ARK (0x0) or ASK (0x13)", usage.0),
            });
        }
        let pe_bits = le_u32(b, 0x38).unwrap_or(0);
        let m_bits = le_u32(b, 0x3C).unwrap_or(0);
        let pe_len = pe_bits as usize / 8;
        let m_len = m_bits as usize / 8;
        if b.len() < need {
            let field = if b.len() < HEADER + pe_len {
                "pubexp"
            } else if b.len() < HEADER + pe_len + m_len {
                "modulus"
            } else {
                "signature"
            };
            return Err(CertError::Truncated {
                what: WHAT,
                field,
                len: b.len(),
                need,
            });
        }
        let t = || truncated(WHAT, CA_FIELDS, b.len(), need);
        let c = CaCert {
            version,
            key_id: array_at(b, 0x04).ok_or_else(t)?,
            certifying_id: array_at(b, 0x14).ok_or_else(t)?,
            usage,
            reserved: array_at(b, 0x28).ok_or_else(t)?,
            pubexp_bits: pe_bits,
            modulus_bits: m_bits,
            pubexp: b[HEADER..HEADER + pe_len].to_vec(),
            modulus: b[HEADER + pe_len..HEADER + pe_len + m_len].to_vec(),
            signature: b[HEADER + pe_len + m_len..need].to_vec(),
        };
        Ok((c, &b[need..]))
    }

    /// The signed body: everything before the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + self.pubexp.len() + self.modulus.len());
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.key_id);
        v.extend_from_slice(&self.certifying_id);
        v.extend_from_slice(&self.usage.0.to_le_bytes());
        v.extend_from_slice(&self.reserved);
        v.extend_from_slice(&self.pubexp_bits.to_le_bytes());
        v.extend_from_slice(&self.modulus_bits.to_le_bytes());
        v.extend_from_slice(&self.pubexp);
        v.extend_from_slice(&self.modulus);
        v
    }

    /// Encodes the certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    /// The hash used for signature and fingerprint: SHA-256 for 2048-bit, SHA-384 for 4096-bit.
    pub fn digest(&self) -> MessageDigest {
        if self.modulus_bits == 2048 {
            MessageDigest::sha256()
        } else {
            MessageDigest::sha384()
        }
    }

    /// The sevctl fingerprint: hex of the hash ([`Self::digest`]) of the body.
    pub fn fingerprint(&self) -> String {
        hash(self.digest(), &self.body())
            .map(|d| hex::encode(&*d))
            .unwrap_or_default()
    }

    /// The RSA public key.
    pub fn rsa_public_key(&self) -> Result<Rsa<Public>, CertError> {
        let be = |le: &[u8]| {
            let v: Vec<u8> = le.iter().rev().copied().collect();
            BigNum::from_slice(&v).map_err(ossl)
        };
        Rsa::from_public_components(be(&self.modulus)?, be(&self.pubexp)?).map_err(ossl)
    }

    fn unsigned_for<T: HasPublic>(
        key: &RsaRef<T>,
        usage: Usage,
        certifying_id: Option<[u8; 16]>,
    ) -> Result<Self, CertError> {
        let bits = key.size() * 8;
        if bits != 2048 && bits != 4096 {
            return Err(CertError::BadKey(format!(
                "RSA key of {bits} bits (need 2048 or 4096)"
            )));
        }
        let len = bits as usize / 8;
        let modulus = le_bytes_of(&key.n().to_owned().map_err(ossl)?, len)?;
        let pubexp = le_bytes_of(&key.e().to_owned().map_err(ossl)?, len)?;
        let key_id = key_id_of(&modulus);
        Ok(CaCert {
            version: 1,
            key_id,
            certifying_id: certifying_id.unwrap_or(key_id),
            usage,
            reserved: [0; 16],
            pubexp_bits: bits,
            modulus_bits: bits,
            pubexp,
            modulus,
            signature: vec![0; len],
        })
    }

    fn sign(&mut self, issuer: &RsaRef<Private>) -> Result<(), CertError> {
        if issuer.size() * 8 != self.modulus_bits {
            return Err(CertError::BadKey(format!(
                "issuer key has {} bits but the certificate's signature field holds {}",
                issuer.size() * 8,
                self.modulus_bits
            )));
        }
        let be = rsa_pss_sign(issuer, self.digest(), &self.body())?;
        let mut le: Vec<u8> = be.into_iter().rev().collect();
        le.resize(self.modulus_bits as usize / 8, 0);
        self.signature = le;
        Ok(())
    }

    /// A self-signed CA certificate (a soft ARK). The key_id is the first 16 bytes of
    /// SHA-256 over the little-endian modulus.
    pub fn new_self_signed_rsa(key: &RsaRef<Private>, usage: Usage) -> Result<Self, CertError> {
        let mut c = Self::unsigned_for(key, usage, None)?;
        c.sign(key)?;
        Ok(c)
    }

    /// An ASK certificate for `subject`, signed by `issuer` (whose key_id is `issuer_key_id`).
    /// Both keys must have the same size.
    pub fn new_signed<T: HasPublic>(
        subject: &RsaRef<T>,
        issuer: &RsaRef<Private>,
        issuer_key_id: [u8; 16],
    ) -> Result<Self, CertError> {
        let mut c = Self::unsigned_for(subject, Usage::ASK, Some(issuer_key_id))?;
        c.sign(issuer)?;
        Ok(c)
    }

    /// Verifies that `issuer` (the ARK) signed this certificate (the ASK, or the ARK itself).
    pub fn verify_signed_by(&self, issuer: &CaCert) -> Result<(), CertError> {
        if issuer.usage != Usage::ARK {
            return Err(CertError::WrongSigner {
                signer: issuer.usage.to_string(),
                subject: self.usage.to_string(),
            });
        }
        if self.certifying_id != issuer.key_id {
            return Err(CertError::KeyIdMismatch {
                certifying: hex::encode(self.certifying_id),
                issuer: hex::encode(issuer.key_id),
            });
        }
        let key = issuer.rsa_public_key()?;
        let be: Vec<u8> = self.signature.iter().rev().copied().collect();
        if rsa_pss_verify(&key, self.digest(), &self.body(), &be)? {
            Ok(())
        } else {
            Err(CertError::BadSignature {
                signer: issuer.usage.to_string(),
            })
        }
    }

    /// Verifies a self-signed ARK.
    pub fn verify_self_signed(&self) -> Result<(), CertError> {
        self.verify_signed_by(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_ark_ask_2048() {
        let ark_key = Rsa::generate(2048).unwrap();
        let ask_key = Rsa::generate(2048).unwrap();
        let ark = CaCert::new_self_signed_rsa(&ark_key, Usage::ARK).unwrap();
        ark.verify_self_signed().unwrap();
        let ask = CaCert::new_signed(&ask_key, &ark_key, ark.key_id).unwrap();
        ask.verify_signed_by(&ark).unwrap();
        assert_eq!(ask.certifying_id, ark.key_id);
        let enc = ask.encode();
        assert_eq!(enc.len(), 832);
        assert_eq!(CaCert::parse(&enc).unwrap(), ask);
        // ASK cannot sign, ARK does not verify a tampered body.
        assert!(ark.verify_signed_by(&ask).is_err());
        let mut t = ask.clone();
        t.reserved[0] = 1;
        assert!(matches!(
            t.verify_signed_by(&ark),
            Err(CertError::BadSignature { .. })
        ));
        let e = CaCert::parse(&enc[..700]).unwrap_err();
        assert!(e.to_string().contains("`signature`"), "{e}");
        let e = CaCert::parse(&enc[..10]).unwrap_err();
        assert!(e.to_string().contains("`key_id`"), "{e}");
        let other = Rsa::generate(4096).unwrap();
        assert!(CaCert::new_signed(&ask_key, &other, ark.key_id).is_err());
    }
}
