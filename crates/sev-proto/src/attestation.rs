//! The legacy SEV ATTESTATION report (API 0.23+, 0xD0 bytes), signed with the PEK:
//! `0x00 mnonce[16] ‖ 0x10 launch_digest[32] ‖ 0x30 u32 policy ‖ 0x34 u32 sig_usage (PEK) ‖
//! 0x38 u32 sig_algo (ECDSA_SHA256) ‖ 0x3C reserved ‖ 0x40 sig[144] (r[72] LE ‖ s[72] LE)`.
//! The signature is ECDSA P-384 over SHA-256 of bytes `[0x00, 0x34)`.

use crate::cert::{be_to_le_field, le_field_to_bn, ossl, Algo, CertError, SevCert, Usage};
use crate::util::{array_at, le_u32};
use openssl::ec::EcKeyRef;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::Private;
use std::fmt;

/// The 0xD0-byte attestation report.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationReport {
    /// The owner's nonce.
    pub mnonce: [u8; 16],
    /// The launch digest.
    pub launch_digest: [u8; 32],
    /// The guest policy.
    pub policy: u32,
    /// Usage of the signing key (PEK = 0x1002).
    pub sig_usage: Usage,
    /// Algorithm of the signature (ECDSA_SHA256 = 2).
    pub sig_algo: Algo,
    /// Reserved word at 0x3C.
    pub reserved: u32,
    /// `r[72]` LE ‖ `s[72]` LE.
    pub sig: [u8; 144],
}

impl fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationReport")
            .field("mnonce", &hex::encode(self.mnonce))
            .field("launch_digest", &hex::encode(self.launch_digest))
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("sig_usage", &self.sig_usage)
            .field("sig_algo", &self.sig_algo)
            .finish()
    }
}

impl AttestationReport {
    /// Size of the encoded report.
    pub const LEN: usize = 0xD0;
    const SIGNED: usize = 0x34;

    /// An unsigned report (signature zero).
    pub fn new(mnonce: [u8; 16], launch_digest: [u8; 32], policy: u32) -> Self {
        AttestationReport {
            mnonce,
            launch_digest,
            policy,
            sig_usage: Usage::PEK,
            sig_algo: Algo::ECDSA_SHA256,
            reserved: 0,
            sig: [0; 144],
        }
    }

    /// Encodes the report.
    pub fn to_bytes(&self) -> [u8; 0xD0] {
        let mut b = [0u8; 0xD0];
        b[0x00..0x10].copy_from_slice(&self.mnonce);
        b[0x10..0x30].copy_from_slice(&self.launch_digest);
        b[0x30..0x34].copy_from_slice(&self.policy.to_le_bytes());
        b[0x34..0x38].copy_from_slice(&self.sig_usage.0.to_le_bytes());
        b[0x38..0x3C].copy_from_slice(&self.sig_algo.0.to_le_bytes());
        b[0x3C..0x40].copy_from_slice(&self.reserved.to_le_bytes());
        b[0x40..0xD0].copy_from_slice(&self.sig);
        b
    }

    /// Decodes exactly 0xD0 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CertError> {
        const WHAT: &str = "attestation report";
        if b.len() != Self::LEN {
            return Err(if b.len() < Self::LEN {
                CertError::Truncated {
                    what: WHAT,
                    field: "report",
                    len: b.len(),
                    need: Self::LEN,
                }
            } else {
                CertError::Trailing {
                    what: WHAT,
                    need: Self::LEN,
                    extra: b.len() - Self::LEN,
                }
            });
        }
        let t = || CertError::Truncated {
            what: WHAT,
            field: "report",
            len: b.len(),
            need: Self::LEN,
        };
        Ok(AttestationReport {
            mnonce: array_at(b, 0x00).ok_or_else(t)?,
            launch_digest: array_at(b, 0x10).ok_or_else(t)?,
            policy: le_u32(b, 0x30).ok_or_else(t)?,
            sig_usage: Usage(le_u32(b, 0x34).ok_or_else(t)?),
            sig_algo: Algo(le_u32(b, 0x38).ok_or_else(t)?),
            reserved: le_u32(b, 0x3C).ok_or_else(t)?,
            sig: array_at(b, 0x40).ok_or_else(t)?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        openssl::sha::sha256(&self.to_bytes()[..Self::SIGNED])
    }

    /// Signs the report with the PEK private key (sets usage PEK, algo ECDSA_SHA256).
    pub fn sign(&mut self, pek: &EcKeyRef<Private>) -> Result<(), CertError> {
        self.sig_usage = Usage::PEK;
        self.sig_algo = Algo::ECDSA_SHA256;
        let sig = EcdsaSig::sign(&self.digest(), pek).map_err(ossl)?;
        let mut s = [0u8; 144];
        be_to_le_field(&sig.r().to_vec(), &mut s[..72])?;
        be_to_le_field(&sig.s().to_vec(), &mut s[72..])?;
        self.sig = s;
        Ok(())
    }

    /// Verifies the signature against the PEK certificate.
    pub fn verify(&self, pek: &SevCert) -> Result<(), CertError> {
        if self.sig_usage != Usage::PEK || self.sig_algo != Algo::ECDSA_SHA256 {
            return Err(CertError::NoSignature {
                signer: self.sig_usage.to_string(),
                algo: self.sig_algo.to_string(),
            });
        }
        let key = pek.ec_public_key()?;
        let sig = EcdsaSig::from_private_components(
            le_field_to_bn(&self.sig[..72])?,
            le_field_to_bn(&self.sig[72..])?,
        )
        .map_err(ossl)?;
        if sig.verify(&self.digest(), &key).unwrap_or(false) {
            Ok(())
        } else {
            Err(CertError::BadSignature {
                signer: "PEK".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;

    #[test]
    fn sign_verify_roundtrip() {
        let k = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        let pek = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, 0, 24, &k).unwrap();
        let mut r = AttestationReport::new([1; 16], [2; 32], 5);
        r.sign(&k).unwrap();
        let b = r.to_bytes();
        assert_eq!(&b[0x34..0x38], &0x1002u32.to_le_bytes());
        let back = AttestationReport::from_bytes(&b).unwrap();
        assert_eq!(back, r);
        back.verify(&pek).unwrap();
        let mut t = back.clone();
        t.policy = 1;
        assert!(t.verify(&pek).is_err());
        assert!(AttestationReport::from_bytes(&b[..0xCF]).is_err());
    }
}
