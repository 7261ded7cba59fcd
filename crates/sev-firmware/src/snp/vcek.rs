//! The soft SNP identity: a per-platform random "fused" seed, the VCEK derived from it for a
//! TCB through the hash-stick chain (`snp-spec-notes.md` §3.4), and CHIP_ID.
//!
//! Hash sticks: for TCB component i (TCB byte order 0..7) at version v,
//! `H_i = SHA-384^(255 − v)(seed_i)`, `seed_0` = the fused seed, `seed_{i+1} = SHA-384(0^8 ‖ H_i)`;
//! the stick of the last component, `SHA-384(H_7)`, is the VCEK seed; the private key is
//! `d = (LE(KDF(vcek_seed, "sev-versioned-chip-endorsement-key", ∅, 56)) mod (n − 1)) + 1` on P-384.
//! A platform at TCB T keeps only its sticks ([`HashSticks`]), from which the VCEK of any TCB
//! that is componentwise ≤ T can be derived, never a newer one.

use crate::{FwError, Result};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::Private;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The KDF label of the VCEK private key.
pub const LABEL_VCEK: &[u8] = b"sev-versioned-chip-endorsement-key";
/// Our KDF label for the soft CHIP_ID scalar (not AMD's: real CHIP_IDs come from a fused key).
pub const LABEL_SOFT_CHIP_ID: &[u8] = b"sevm-soft-snp-chip-id";
/// The identity file in a platform directory.
pub const IDENTITY_FILE: &str = "snp-identity.json";

fn sha384(parts: &[&[u8]]) -> [u8; 48] {
    let mut h = openssl::sha::Sha384::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}

/// `n` SHA-384 iterations of `x`.
fn hash_n(x: &[u8; 48], n: u32) -> Zeroizing<[u8; 48]> {
    let mut h = Zeroizing::new(*x);
    for _ in 0..n {
        *h = sha384(&[&h[..]]);
    }
    h
}

/// The per-component hash values `H_0..H_7` for one TCB: what a platform at that TCB keeps.
pub struct HashSticks {
    tcb: [u8; 8],
    h: Zeroizing<[[u8; 48]; 8]>,
}

impl std::fmt::Debug for HashSticks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashSticks")
            .field("tcb", &hex::encode(self.tcb))
            .finish_non_exhaustive()
    }
}

impl HashSticks {
    /// The sticks for `tcb` (raw TCB_VERSION) from the fused seed.
    pub fn from_seed(seed: &[u8; 48], tcb: u64) -> Self {
        let tcb = tcb.to_le_bytes();
        let mut h = Zeroizing::new([[0u8; 48]; 8]);
        let mut s = Zeroizing::new(*seed);
        Self::fill(&mut h, &mut s, &tcb, 0);
        HashSticks { tcb, h }
    }

    /// Computes `h[from..]` starting from `seed_from` = `s`.
    fn fill(h: &mut [[u8; 48]; 8], s: &mut [u8; 48], tcb: &[u8; 8], from: usize) {
        for i in from..8 {
            h[i] = *hash_n(s, 255 - u32::from(tcb[i]));
            *s = sha384(&[&[0u8; 8], &h[i]]);
        }
    }

    /// The TCB these sticks are for.
    pub fn tcb(&self) -> u64 {
        u64::from_le_bytes(self.tcb)
    }

    /// The sticks of an older TCB (every component ≤ ours), computed from our sticks only
    /// (hashing down). A newer component is refused: the chain cannot be hashed up.
    pub fn derive_older(&self, tcb: u64) -> Result<HashSticks> {
        let t = tcb.to_le_bytes();
        if t.iter().zip(self.tcb.iter()).any(|(new, cur)| new > cur) {
            return Err(FwError::InvalidArgument(
                "TCB_VERSION: a component is newer than the platform's; its VCEK cannot be derived",
            ));
        }
        let mut h = Zeroizing::new(*self.h);
        match t.iter().zip(self.tcb.iter()).position(|(a, b)| a != b) {
            None => {}
            Some(i) => {
                h[i] = *hash_n(&self.h[i], u32::from(self.tcb[i] - t[i]));
                let mut s = Zeroizing::new(sha384(&[&[0u8; 8], &h[i]]));
                Self::fill(&mut h, &mut s, &t, i + 1);
            }
        }
        Ok(HashSticks { tcb: t, h })
    }

    /// The VCEK seed: the stick of the last component, SHA-384(H_7).
    pub fn vcek_seed(&self) -> Zeroizing<[u8; 48]> {
        Zeroizing::new(sha384(&[&self.h[7]]))
    }

    /// The VCEK private key for this TCB.
    pub fn vcek_key(&self) -> Result<EcKey<Private>> {
        key_from_bytes(Nid::SECP384R1, &self.vcek_seed()[..], LABEL_VCEK)
    }
}

/// `d = (LE(KDF(seed, label, ∅, 56)) mod (n − 1)) + 1` on `curve`, with its public point.
pub(crate) fn key_from_bytes(curve: Nid, seed: &[u8], label: &[u8]) -> Result<EcKey<Private>> {
    let r = sev_proto::kdf::kdf(seed, label, b"", 56);
    let be: Zeroizing<Vec<u8>> = Zeroizing::new(r.iter().rev().copied().collect());
    let c = BigNum::from_slice(&be)?;
    let group = EcGroup::from_curve_name(curve)?;
    let mut ctx = BigNumContext::new()?;
    let mut n = BigNum::new()?;
    group.order(&mut n, &mut ctx)?;
    let mut nm1 = BigNum::new()?;
    nm1.checked_sub(&n, BigNum::from_u32(1)?.as_ref())?;
    let mut d = BigNum::new()?;
    d.nnmod(&c, &nm1, &mut ctx)?;
    d.add_word(1)?;
    let mut q = EcPoint::new(&group)?;
    q.mul_generator2(&group, &d, &mut ctx)?;
    Ok(EcKey::from_private_components(&group, &d, &q)?)
}

/// The soft CHIP_ID: the secp256k1 public point (x ‖ y, big-endian) of a scalar derived from
/// the fused seed with our label [`LABEL_SOFT_CHIP_ID`].
pub fn chip_id(seed: &[u8; 48]) -> Result<[u8; 64]> {
    let k = key_from_bytes(Nid::SECP256K1, seed, LABEL_SOFT_CHIP_ID)?;
    let mut ctx = BigNumContext::new()?;
    let mut x = BigNum::new()?;
    let mut y = BigNum::new()?;
    k.public_key()
        .affine_coordinates(k.group(), &mut x, &mut y, &mut ctx)?;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&x.to_vec_padded(32)?);
    out[32..].copy_from_slice(&y.to_vec_padded(32)?);
    Ok(out)
}

/// The platform's fused seed, persisted as `snp-identity.json` (mode 0600) in the platform
/// directory, created on first use.
pub struct SnpIdentity {
    seed: Zeroizing<[u8; 48]>,
}

impl std::fmt::Debug for SnpIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpIdentity").finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    version: u32,
    fused_seed: String,
}

impl SnpIdentity {
    /// An identity with the given seed (tests, known answers).
    pub fn from_seed(seed: [u8; 48]) -> Self {
        SnpIdentity {
            seed: Zeroizing::new(seed),
        }
    }

    /// A fresh random identity.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 48]);
        openssl::rand::rand_bytes(&mut seed[..])?;
        Ok(SnpIdentity { seed })
    }

    /// Loads `dir/snp-identity.json`, or creates it with a fresh random seed.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(IDENTITY_FILE);
        super::load_or_create(
            &path,
            "SNP identity file",
            4096,
            || {
                let id = Self::generate()?;
                let f = IdentityFile {
                    version: 1,
                    fused_seed: hex::encode(&id.seed[..]),
                };
                let json = Zeroizing::new(serde_json::to_vec_pretty(&f).map_err(|e| {
                    FwError::StateFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?);
                let _wipe = Zeroizing::new(f.fused_seed);
                Ok(json)
            },
            Self::parse,
        )
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| FwError::StateFile {
            path: PathBuf::from(path),
            reason,
        };
        let f: IdentityFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let hexseed = Zeroizing::new(f.fused_seed);
        if f.version != 1 {
            return Err(bad(format!("version {} is not 1", f.version)));
        }
        let v = Zeroizing::new(
            hex::decode(hexseed.as_bytes())
                .map_err(|e| bad(format!("fused_seed: not hex: {e}")))?,
        );
        if v.len() != 48 {
            return Err(bad(format!(
                "fused_seed: {} bytes, expected 48 (96 hex digits)",
                v.len()
            )));
        }
        let mut seed = Zeroizing::new([0u8; 48]);
        seed.copy_from_slice(&v);
        Ok(SnpIdentity { seed })
    }

    /// The hash sticks for `tcb`.
    pub fn sticks(&self, tcb: u64) -> HashSticks {
        HashSticks::from_seed(&self.seed, tcb)
    }

    /// CHIP_ID (64 bytes).
    pub fn chip_id(&self) -> Result<[u8; 64]> {
        chip_id(&self.seed)
    }
}
