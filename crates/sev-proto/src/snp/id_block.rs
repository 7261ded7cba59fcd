//! The SNP ID block (0x60 bytes) and ID authentication information structure (0x1000 bytes)
//! given to SNP_LAUNCH_FINISH (notes §2.2).
//!
//! ID block: `00 LD\[48\] · 30 FAMILY_ID\[16\] · 40 IMAGE_ID\[16\] · 50 u32 VERSION (1) ·
//! 54 u32 GUEST_SVN · 58 u64 POLICY`.
//!
//! ID auth:
//!
//! | off | size | field |
//! |---|---|---|
//! | 000 | 4 | ID_KEY_ALGO (1 = ECDSA P-384 SHA-384) |
//! | 004 | 4 | AUTH_KEY_ALGO (1) |
//! | 008 | 0x38 | reserved |
//! | 040 | 0x200 | ID_BLOCK_SIG (ID key over the 0x60-byte ID block) |
//! | 240 | 0x404 | ID_KEY |
//! | 644 | 0x3C | reserved |
//! | 680 | 0x200 | ID_KEY_SIG (author key over the 0x404-byte ID_KEY) |
//! | 880 | 0x404 | AUTHOR_KEY |
//! | C84 | 0x37C | reserved |
//!
//! Key formats and signatures: [`super::ecdsa`]. ID_KEY_DIGEST / AUTHOR_KEY_DIGEST are SHA-384
//! over the 0x404-byte key structures. Known answer: virtee's `tests/id-block.rs` vector
//! (test keys and auth block in `tests/data/snp/`).

use super::ecdsa::{
    PublicKey, SigError, Signature, ALGO_ECDSA_P384_SHA384, PUBLIC_KEY_SIZE, SIGNATURE_SIZE,
};
use super::policy::SnpPolicy;
use super::{arr, expect_len, expect_zero, u32_at, u64_at, FormatError};
use openssl::pkey::{PKeyRef, Private};
use thiserror::Error;

/// Size of the ID block.
pub const ID_BLOCK_SIZE: usize = 0x60;
/// Size of the ID authentication structure.
pub const ID_AUTH_SIZE: usize = 0x1000;

/// The ID block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdBlock {
    /// The expected launch digest.
    pub ld: [u8; 48],
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VERSION (must be 1).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY (must equal the launch policy).
    pub policy: SnpPolicy,
}

impl IdBlock {
    /// A version-1 ID block.
    pub fn new(
        ld: [u8; 48],
        family_id: [u8; 16],
        image_id: [u8; 16],
        guest_svn: u32,
        policy: SnpPolicy,
    ) -> Self {
        IdBlock {
            ld,
            family_id,
            image_id,
            version: 1,
            guest_svn,
            policy,
        }
    }

    /// Parses the 0x60-byte ID block (VERSION must be 1).
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        expect_len("ID_BLOCK", b, ID_BLOCK_SIZE)?;
        let version = u32_at(b, 0x50);
        if version != 1 {
            return Err(FormatError::field(
                "ID_BLOCK",
                "VERSION",
                format!("{version}, expected 1"),
            ));
        }
        Ok(IdBlock {
            ld: arr(b, 0),
            family_id: arr(b, 0x30),
            image_id: arr(b, 0x40),
            version,
            guest_svn: u32_at(b, 0x54),
            policy: SnpPolicy(u64_at(b, 0x58)),
        })
    }

    /// Encodes the 0x60-byte ID block.
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut b = [0u8; ID_BLOCK_SIZE];
        b[..0x30].copy_from_slice(&self.ld);
        b[0x30..0x40].copy_from_slice(&self.family_id);
        b[0x40..0x50].copy_from_slice(&self.image_id);
        b[0x50..0x54].copy_from_slice(&self.version.to_le_bytes());
        b[0x54..0x58].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[0x58..0x60].copy_from_slice(&self.policy.0.to_le_bytes());
        b
    }
}

/// The ID authentication information structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdAuth {
    /// ID_KEY_ALGO.
    pub id_key_algo: u32,
    /// AUTH_KEY_ALGO.
    pub auth_key_algo: u32,
    /// ID_BLOCK_SIG.
    pub id_block_sig: Signature,
    /// ID_KEY.
    pub id_key: PublicKey,
    /// ID_KEY_SIG (zero when no author key is used).
    pub id_key_sig: Signature,
    /// AUTHOR_KEY (zero when no author key is used).
    pub author_key: PublicKey,
}

/// Why SNP_LAUNCH_FINISH rejects an ID block / ID auth pair, in the firmware's check order;
/// [`IdCheckError::status`] is the firmware status code.
#[derive(Debug, Error)]
pub enum IdCheckError {
    /// ID block LD ≠ the guest's launch digest (BAD_MEASUREMENT).
    #[error("ID_BLOCK.LD does not match the launch digest")]
    LdMismatch,
    /// ID block POLICY ≠ the launch policy (POLICY_FAILURE).
    #[error("ID_BLOCK.POLICY 0x{id_block:X} does not match the launch policy 0x{launch:X}")]
    PolicyMismatch {
        /// ID block policy.
        id_block: u64,
        /// Launch policy.
        launch: u64,
    },
    /// ID_KEY_ALGO or AUTH_KEY_ALGO is not 1 (INVALID_PARAM).
    #[error("ID_AUTH.{field}: algorithm {value} is not 1 (ECDSA P-384 with SHA-384)")]
    Algo {
        /// `ID_KEY_ALGO` or `AUTH_KEY_ALGO`.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A key or signature is invalid (BAD_SIGNATURE).
    #[error("ID_AUTH: {0}")]
    Signature(SigError),
}

impl IdCheckError {
    /// The SEV firmware status code for this failure.
    pub fn status(&self) -> u32 {
        match self {
            IdCheckError::LdMismatch => 0x0B,
            IdCheckError::PolicyMismatch { .. } => 0x07,
            IdCheckError::Algo { .. } => 0x16,
            IdCheckError::Signature(_) => 0x0A,
        }
    }
}

/// The key digests SNP_LAUNCH_FINISH stores after a successful check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDigests {
    /// ID_KEY_DIGEST.
    pub id_key: [u8; 48],
    /// AUTHOR_KEY_DIGEST (zero unless AUTH_KEY_EN).
    pub author_key: [u8; 48],
}

const A: &str = "ID_AUTH";

impl IdAuth {
    /// Parses the 0x1000-byte structure (reserved ranges must be zero).
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        expect_len(A, b, ID_AUTH_SIZE)?;
        expect_zero(A, "reserved", b, 0x008, 0x040)?;
        expect_zero(A, "reserved", b, 0x644, 0x680)?;
        expect_zero(A, "reserved", b, 0xC84, ID_AUTH_SIZE)?;
        Ok(IdAuth {
            id_key_algo: u32_at(b, 0),
            auth_key_algo: u32_at(b, 4),
            id_block_sig: Signature::from_bytes(
                "ID_AUTH.ID_BLOCK_SIG",
                &b[0x40..0x40 + SIGNATURE_SIZE],
            )?,
            id_key: PublicKey::from_bytes("ID_AUTH.ID_KEY", &b[0x240..0x240 + PUBLIC_KEY_SIZE])?,
            id_key_sig: Signature::from_bytes(
                "ID_AUTH.ID_KEY_SIG",
                &b[0x680..0x680 + SIGNATURE_SIZE],
            )?,
            author_key: PublicKey::from_bytes(
                "ID_AUTH.AUTHOR_KEY",
                &b[0x880..0x880 + PUBLIC_KEY_SIZE],
            )?,
        })
    }

    /// Encodes the 0x1000-byte structure.
    pub fn to_bytes(&self) -> [u8; ID_AUTH_SIZE] {
        let mut b = [0u8; ID_AUTH_SIZE];
        b[0..4].copy_from_slice(&self.id_key_algo.to_le_bytes());
        b[4..8].copy_from_slice(&self.auth_key_algo.to_le_bytes());
        b[0x40..0x240].copy_from_slice(&self.id_block_sig.to_bytes());
        b[0x240..0x644].copy_from_slice(&self.id_key.to_bytes());
        b[0x680..0x880].copy_from_slice(&self.id_key_sig.to_bytes());
        b[0x880..0xC84].copy_from_slice(&self.author_key.to_bytes());
        b
    }

    /// Signs `block` with the ID key and, if given, the ID key with the author key.
    pub fn sign(
        block: &IdBlock,
        id_key: &PKeyRef<Private>,
        author_key: Option<&PKeyRef<Private>>,
    ) -> Result<Self, SigError> {
        let id_pub = PublicKey::from_pkey("ID key", id_key)?;
        let id_block_sig = Signature::sign("ID key", &block.to_bytes(), id_key)?;
        let (id_key_sig, author, auth_algo) = match author_key {
            Some(k) => (
                Signature::sign("author key", &id_pub.to_bytes(), k)?,
                PublicKey::from_pkey("author key", k)?,
                ALGO_ECDSA_P384_SHA384,
            ),
            None => (
                Signature::default(),
                PublicKey {
                    curve: 0,
                    qx: [0; 72],
                    qy: [0; 72],
                },
                0,
            ),
        };
        Ok(IdAuth {
            id_key_algo: ALGO_ECDSA_P384_SHA384,
            auth_key_algo: auth_algo,
            id_block_sig,
            id_key: id_pub,
            id_key_sig,
            author_key: author,
        })
    }

    /// ID_KEY_DIGEST.
    pub fn id_key_digest(&self) -> [u8; 48] {
        self.id_key.digest()
    }

    /// AUTHOR_KEY_DIGEST.
    pub fn author_key_digest(&self) -> [u8; 48] {
        self.author_key.digest()
    }

    /// Verifies ID_BLOCK_SIG over `block` with ID_KEY (ID_KEY_ALGO must be 1).
    pub fn verify_id_block(&self, block: &IdBlock) -> Result<(), SigError> {
        if self.id_key_algo != ALGO_ECDSA_P384_SHA384 {
            return Err(SigError::UnsupportedAlgo {
                structure: A,
                field: "ID_KEY_ALGO",
                value: self.id_key_algo,
            });
        }
        let key = self.id_key.to_ec_key("ID_AUTH.ID_KEY")?;
        self.id_block_sig
            .verify("ID_AUTH.ID_BLOCK_SIG", &block.to_bytes(), &key)
    }

    /// Verifies ID_KEY_SIG over the ID_KEY structure with AUTHOR_KEY (AUTH_KEY_ALGO must be 1).
    pub fn verify_author(&self) -> Result<(), SigError> {
        if self.auth_key_algo != ALGO_ECDSA_P384_SHA384 {
            return Err(SigError::UnsupportedAlgo {
                structure: A,
                field: "AUTH_KEY_ALGO",
                value: self.auth_key_algo,
            });
        }
        let key = self.author_key.to_ec_key("ID_AUTH.AUTHOR_KEY")?;
        self.id_key_sig
            .verify("ID_AUTH.ID_KEY_SIG", &self.id_key.to_bytes(), &key)
    }

    /// The ID checks of SNP_LAUNCH_FINISH in the firmware's order: LD, policy, ID key algo,
    /// (author key algo), ID block signature, (author signature). Returns the digests to store.
    pub fn check_launch_finish(
        &self,
        block: &IdBlock,
        launch_digest: &[u8; 48],
        launch_policy: SnpPolicy,
        auth_key_en: bool,
    ) -> Result<KeyDigests, IdCheckError> {
        if !openssl::memcmp::eq(&block.ld, launch_digest) {
            return Err(IdCheckError::LdMismatch);
        }
        if block.policy != launch_policy {
            return Err(IdCheckError::PolicyMismatch {
                id_block: block.policy.0,
                launch: launch_policy.0,
            });
        }
        if self.id_key_algo != ALGO_ECDSA_P384_SHA384 {
            return Err(IdCheckError::Algo {
                field: "ID_KEY_ALGO",
                value: self.id_key_algo,
            });
        }
        if auth_key_en && self.auth_key_algo != ALGO_ECDSA_P384_SHA384 {
            return Err(IdCheckError::Algo {
                field: "AUTH_KEY_ALGO",
                value: self.auth_key_algo,
            });
        }
        self.verify_id_block(block)
            .map_err(IdCheckError::Signature)?;
        let mut d = KeyDigests {
            id_key: self.id_key_digest(),
            author_key: [0; 48],
        };
        if auth_key_en {
            self.verify_author().map_err(IdCheckError::Signature)?;
            d.author_key = self.author_key_digest();
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;

    const LD: &str = "a14d638341e5674628fe1e02fbedebe5e5ab4faf1dd72d8966068e615bb99efd13d214b35c231715b38e263dc6059745";
    // virtee/sev tests/id-block.rs expected values (base64 there; hex here).
    const ID_BLOCK: &str = "a14d638341e5674628fe1e02fbedebe5e5ab4faf1dd72d8966068e615bb99efd13d214b35c231715b38e263dc6059745000000000000000000000000000000000000000000000000000000000000000001000000000000000000030000000000";
    const ID_KEY_DIGEST: &str = "59fb2c686dfa4fef49f38339aa775c90051c28d57383ddc3baf3b5eb4b1496df3b0dbbdcbae5fe27677a644820773fe2";
    const AUTHOR_KEY_DIGEST: &str = "eed81169fb0cb5e0ec34794f128fd4e0c4a46f67c65a1adfa81fcb24bcc088c272369b7ffc3eb2b6af6a4284a1b36c5f";

    fn ld() -> [u8; 48] {
        hex::decode(LD).unwrap().try_into().unwrap()
    }
    fn virtee_block() -> IdBlock {
        IdBlock::new(ld(), [0; 16], [0; 16], 0, SnpPolicy(0x30000))
    }
    fn pem_key(pem: &[u8]) -> PKey<Private> {
        PKey::private_key_from_pem(pem).unwrap()
    }
    fn id_key() -> PKey<Private> {
        pem_key(include_bytes!("../../tests/data/snp/test_id_key.pem"))
    }
    fn author_key() -> PKey<Private> {
        pem_key(include_bytes!("../../tests/data/snp/test_auth_key.pem"))
    }
    fn auth_block() -> &'static [u8] {
        include_bytes!("../../tests/data/snp/test_auth_block.bin")
    }

    #[test]
    fn virtee_id_block_and_digests_known_answer() {
        let b = virtee_block();
        assert_eq!(hex::encode(b.to_bytes()), ID_BLOCK);
        assert_eq!(
            IdBlock::from_bytes(&hex::decode(ID_BLOCK).unwrap()).unwrap(),
            b
        );
        let idk = PublicKey::from_pkey("ID key", &id_key()).unwrap();
        let auk = PublicKey::from_pkey("author key", &author_key()).unwrap();
        assert_eq!(hex::encode(idk.digest()), ID_KEY_DIGEST);
        assert_eq!(hex::encode(auk.digest()), AUTHOR_KEY_DIGEST);
    }

    #[test]
    fn virtee_auth_block_verifies() {
        let a = IdAuth::from_bytes(auth_block()).unwrap();
        assert_eq!(&a.to_bytes()[..], auth_block(), "exact round trip");
        assert_eq!((a.id_key_algo, a.auth_key_algo), (1, 1));
        assert_eq!(hex::encode(a.id_key_digest()), ID_KEY_DIGEST);
        assert_eq!(hex::encode(a.author_key_digest()), AUTHOR_KEY_DIGEST);
        let b = virtee_block();
        a.verify_id_block(&b).unwrap();
        a.verify_author().unwrap();
        let d = a
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), true)
            .unwrap();
        assert_eq!(hex::encode(d.author_key), AUTHOR_KEY_DIGEST);
        let d = a
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), false)
            .unwrap();
        assert_eq!(d.author_key, [0; 48]);
    }

    #[test]
    fn launch_finish_errors_and_status() {
        let a = IdAuth::from_bytes(auth_block()).unwrap();
        let b = virtee_block();
        let mut wrong_ld = ld();
        wrong_ld[47] ^= 1;
        let e = a
            .check_launch_finish(&b, &wrong_ld, SnpPolicy(0x30000), true)
            .unwrap_err();
        assert!(matches!(e, IdCheckError::LdMismatch) && e.status() == 0x0B);
        let e = a
            .check_launch_finish(&b, &ld(), SnpPolicy(0xB0000), true)
            .unwrap_err();
        assert!(
            matches!(e, IdCheckError::PolicyMismatch { .. }) && e.status() == 0x07,
            "{e}"
        );
        let mut x = a;
        x.id_key_algo = 2;
        let e = x
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), true)
            .unwrap_err();
        assert_eq!(e.status(), 0x16);
        assert!(e.to_string().contains("ID_KEY_ALGO"), "{e}");
        let mut x = a;
        x.auth_key_algo = 0;
        let e = x
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), true)
            .unwrap_err();
        assert!(e.to_string().contains("AUTH_KEY_ALGO"), "{e}");
        x.check_launch_finish(&b, &ld(), SnpPolicy(0x30000), false)
            .unwrap();
        // A changed ID block (other family id, same LD and policy) fails the signature.
        let mut b2 = b;
        b2.family_id[0] = 1;
        let e = a
            .check_launch_finish(&b2, &ld(), SnpPolicy(0x30000), true)
            .unwrap_err();
        assert_eq!(e.status(), 0x0A);
        assert!(e.to_string().contains("ID_AUTH.ID_BLOCK_SIG"), "{e}");
        let mut x = a;
        x.id_key_sig.r[3] ^= 1;
        let e = x
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), true)
            .unwrap_err();
        assert!(e.to_string().contains("ID_AUTH.ID_KEY_SIG"), "{e}");
        let mut x = a;
        x.id_key.curve = 1;
        let e = x
            .check_launch_finish(&b, &ld(), SnpPolicy(0x30000), true)
            .unwrap_err();
        assert!(e.to_string().contains("ID_AUTH.ID_KEY.CURVE"), "{e}");
    }

    #[test]
    fn sign_round_trip_with_and_without_author() {
        let k = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap();
        let b = IdBlock::new([5; 48], [1; 16], [2; 16], 7, SnpPolicy(0x30000));
        let a = IdAuth::sign(&b, &k, Some(&author_key())).unwrap();
        let p = IdAuth::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(p, a);
        p.check_launch_finish(&b, &[5; 48], SnpPolicy(0x30000), true)
            .unwrap();
        let a = IdAuth::sign(&b, &k, None).unwrap();
        let p = IdAuth::from_bytes(&a.to_bytes()).unwrap();
        p.check_launch_finish(&b, &[5; 48], SnpPolicy(0x30000), false)
            .unwrap();
        assert!(p.verify_author().is_err());
    }

    #[test]
    fn parse_errors() {
        let e = IdBlock::from_bytes(&[0; 0x5F]).unwrap_err();
        assert_eq!(
            e,
            FormatError::Length {
                structure: "ID_BLOCK",
                expected: 0x60,
                got: 0x5F
            }
        );
        let mut b = virtee_block().to_bytes();
        b[0x50] = 2;
        assert!(IdBlock::from_bytes(&b)
            .unwrap_err()
            .to_string()
            .starts_with("ID_BLOCK.VERSION: 2"));
        assert!(IdAuth::from_bytes(&[0; 0xFFF]).is_err());
        for (off, want) in [
            (0x008, "ID_AUTH.reserved"),
            (0x644, "ID_AUTH.reserved"),
            (0xFFF, "ID_AUTH.reserved"),
            (0x1FF, "ID_AUTH.ID_BLOCK_SIG.SIGNATURE reserved"),
            (0x643, "ID_AUTH.ID_KEY.PUBLIC_KEY reserved"),
            (0x87F, "ID_AUTH.ID_KEY_SIG.SIGNATURE reserved"),
            (0xC83, "ID_AUTH.AUTHOR_KEY.PUBLIC_KEY reserved"),
        ] {
            let mut x = auth_block().to_vec();
            x[off] ^= 1;
            let e = IdAuth::from_bytes(&x).unwrap_err();
            assert!(e.to_string().starts_with(want), "0x{off:X}: {e}");
        }
    }
}
