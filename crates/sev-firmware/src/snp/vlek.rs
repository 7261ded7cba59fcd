//! The VLEK (versioned loaded endorsement key): the SNP_VLEK_LOAD wrapped blob and the key it
//! carries (`snp-spec-notes.md` §1.3).
//!
//! Layout (0x1B0 bytes, AMD's, from the notes): `000 IV[12] · 00C RSVD[4] · 010 WRAPPED[0x180]`
//! (8 hash sticks × 48 bytes, AES-256-GCM ciphertext) `· 190 TCB_VERSION u64 · 198 RSVD[8] · 1A0
//! TAG[16]`; the AAD is the 16 bytes at 0x190. The VLEK private key is key-from-bytes(KDF(stick
//! 7, "sev-versioned-loaded-attestation-key", 56)) on P-384, as the VCEK's from its seed.
//!
//! **The wrapping key is sevm's own.** On AMD parts the key that AMD's KDS wraps for is
//! chip-internal and its derivation is not public beyond "a KDF of a VCEK hash stick with
//! label `vlek-wrapping-key`". The soft firmware uses, per platform, `KDF(VCEK seed of the
//! blob's TCB, "vlek-wrapping-key", ∅, 32)` (SP 800-108 HMAC-SHA256 counter mode, the same KDF
//! as everything else here): only the platform itself (or whoever holds its fused seed) can make
//! a blob it accepts, which [`wrap`] does for `sevm platform snp vlek-make`. A blob made for one
//! soft platform is refused by another with BAD_MEASUREMENT (the tag), as a real chip refuses a
//! blob wrapped for another chip.

use super::vcek::HashSticks;
use crate::Result;
use openssl::ec::EcKey;
use openssl::nid::Nid;
use openssl::pkey::Private;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use sev_proto::snp::FormatError;
use zeroize::Zeroizing;

/// Size of the wrapped blob.
pub const WRAPPED_SIZE: usize = 0x1B0;
/// KDF label of the wrapping key.
pub const LABEL_WRAP: &[u8] = b"vlek-wrapping-key";
/// KDF label of the VLEK private key.
pub const LABEL_VLEK: &[u8] = b"sev-versioned-loaded-attestation-key";

const S: &str = "VLEK_WRAPPED";

/// The hash sticks a VLEK blob carries (8 × 48 bytes), zeroized on drop.
pub type VlekSticks = Zeroizing<[[u8; 48]; 8]>;

/// The wrapped blob, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedVlek {
    /// IV (12 bytes).
    pub iv: [u8; 12],
    /// The ciphertext of the 8 hash sticks.
    pub wrapped: Box<[u8; 0x180]>,
    /// TCB_VERSION the VLEK is for (must equal the reported TCB at load).
    pub tcb_version: u64,
    /// The GCM tag.
    pub tag: [u8; 16],
}

impl WrappedVlek {
    /// Parses the 0x1B0-byte blob; the reserved fields must be zero.
    pub fn from_bytes(b: &[u8]) -> std::result::Result<Self, FormatError> {
        let b: &[u8; WRAPPED_SIZE] = b.try_into().map_err(|_| FormatError::Length {
            structure: S,
            expected: WRAPPED_SIZE,
            got: b.len(),
        })?;
        let field = |f: &'static str| FormatError::Field {
            structure: S,
            field: f,
            reason: "reserved bytes must be zero".into(),
        };
        if b[0x0C..0x10].iter().any(|&x| x != 0) {
            return Err(field("RSVD (0x0C)"));
        }
        if b[0x198..0x1A0].iter().any(|&x| x != 0) {
            return Err(field("RSVD (0x198)"));
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&b[..12]);
        let mut wrapped = Box::new([0u8; 0x180]);
        wrapped.copy_from_slice(&b[0x10..0x190]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[0x190..0x198]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&b[0x1A0..0x1B0]);
        Ok(WrappedVlek {
            iv,
            wrapped,
            tcb_version: u64::from_le_bytes(t),
            tag,
        })
    }

    /// The 0x1B0-byte encoding.
    pub fn to_bytes(&self) -> [u8; WRAPPED_SIZE] {
        let mut b = [0u8; WRAPPED_SIZE];
        b[..12].copy_from_slice(&self.iv);
        b[0x10..0x190].copy_from_slice(&self.wrapped[..]);
        b[0x190..0x198].copy_from_slice(&self.tcb_version.to_le_bytes());
        b[0x1A0..].copy_from_slice(&self.tag);
        b
    }

    /// The AAD: the 16 bytes at 0x190 (TCB_VERSION ‖ RSVD).
    fn aad(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.tcb_version.to_le_bytes());
        a
    }
}

/// The platform's wrapping key for blobs at the TCB of `sticks` (see the module notes).
pub fn wrapping_key(sticks: &HashSticks) -> Zeroizing<[u8; 32]> {
    let k = sev_proto::kdf::kdf(&sticks.vcek_seed()[..], LABEL_WRAP, b"", 32);
    let mut a = Zeroizing::new([0u8; 32]);
    a.copy_from_slice(&k);
    a
}

/// Wraps `vlek` for TCB `tcb` under `key` with a fresh random IV.
pub fn wrap(key: &[u8; 32], vlek: &[[u8; 48]; 8], tcb: u64) -> Result<WrappedVlek> {
    let mut iv = [0u8; 12];
    openssl::rand::rand_bytes(&mut iv)?;
    let mut w = WrappedVlek {
        iv,
        wrapped: Box::new([0u8; 0x180]),
        tcb_version: tcb,
        tag: [0; 16],
    };
    let pt = Zeroizing::new(vlek.as_flattened().to_vec());
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv),
        &w.aad(),
        &pt,
        &mut w.tag,
    )?;
    w.wrapped.copy_from_slice(&ct);
    Ok(w)
}

/// Unwraps `w` under `key`. A tag that does not verify is an error naming VLEK_WRAPPED.TAG
/// (OpenSSL checks the tag in constant time).
pub fn unwrap(key: &[u8; 32], w: &WrappedVlek) -> std::result::Result<VlekSticks, FormatError> {
    let pt = decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&w.iv),
        &w.aad(),
        &w.wrapped[..],
        &w.tag,
    )
    .map_err(|_| FormatError::Field {
        structure: S,
        field: "TAG",
        reason: "the AES-256-GCM tag does not verify under this platform's VLEK wrapping key \
                 (a blob made for another platform or TCB, or altered)"
            .into(),
    })?;
    let pt = Zeroizing::new(pt);
    let mut s = Zeroizing::new([[0u8; 48]; 8]);
    for (i, c) in pt.chunks_exact(48).enumerate().take(8) {
        s[i].copy_from_slice(c);
    }
    Ok(s)
}

/// The VLEK private key from its hash sticks.
pub fn vlek_key(sticks: &[[u8; 48]; 8]) -> Result<EcKey<Private>> {
    super::vcek::key_from_bytes(Nid::SECP384R1, &sticks[7], LABEL_VLEK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip_and_every_flipped_byte_fails_naming_the_field() {
        let sticks = HashSticks::from_seed(&[9; 48], 0x7300_0800_0000_0003);
        let key = wrapping_key(&sticks);
        let vlek = [[0x5Au8; 48]; 8];
        let w = wrap(&key, &vlek, sticks.tcb()).unwrap();
        let b = w.to_bytes();
        let back = WrappedVlek::from_bytes(&b).unwrap();
        assert_eq!(back, w);
        assert_eq!(*unwrap(&key, &back).unwrap(), vlek);
        // Every byte that is not reserved is covered by the tag (IV, ciphertext, TCB, tag).
        for i in
            (0..WRAPPED_SIZE).filter(|i| !(0x0C..0x10).contains(i) && !(0x198..0x1A0).contains(i))
        {
            let mut c = b;
            c[i] ^= 1;
            let e = unwrap(&key, &WrappedVlek::from_bytes(&c).unwrap()).unwrap_err();
            assert!(
                e.to_string().starts_with("VLEK_WRAPPED.TAG: "),
                "byte {i:#x}: {e}"
            );
        }
        // Another platform's key.
        let other = wrapping_key(&HashSticks::from_seed(&[8; 48], sticks.tcb()));
        assert!(unwrap(&other, &back).is_err());
        // Reserved bytes and length.
        let mut c = b;
        c[0x0D] = 1;
        let e = WrappedVlek::from_bytes(&c).unwrap_err().to_string();
        assert!(e.contains("VLEK_WRAPPED.RSVD (0x0C)"), "{e}");
        let e = WrappedVlek::from_bytes(&b[1..]).unwrap_err().to_string();
        assert!(
            e.contains("VLEK_WRAPPED") && e.contains("0x1B0") || e.contains("432"),
            "{e}"
        );
        // The key is a P-384 key from stick 7 only.
        let k1 = vlek_key(&vlek).unwrap();
        let mut v2 = vlek;
        v2[0][0] ^= 1;
        assert_eq!(
            k1.private_key().to_vec(),
            vlek_key(&v2).unwrap().private_key().to_vec()
        );
        v2[7][0] ^= 1;
        assert_ne!(
            k1.private_key().to_vec(),
            vlek_key(&v2).unwrap().private_key().to_vec()
        );
    }
}
