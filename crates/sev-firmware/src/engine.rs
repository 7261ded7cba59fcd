//! The soft memory-encryption engine: one VEK per guest, AES-128-XTS with a data unit
//! of one 16-byte block, tweaked by the block's (model) physical address
//! (spec notes §9 "recommended model"): `T = AES_K2(LE128(pa))`, `C = AES_K1(P ^ T) ^ T`.
//! Deterministic: same key, address and plaintext give the same ciphertext.
//!
//! Never exposes the VEK or the derived keys.

use openssl::error::ErrorStack;
use openssl::symm::{Cipher, Crypter, Mode};
use sev_proto::kdf::kdf;
use zeroize::{Zeroize, Zeroizing};

/// A guest's volume encryption key seed (16 bytes) and the derived XTS keys.
#[derive(Clone)]
pub struct MemoryKey {
    vek: Zeroizing<[u8; 16]>,
    k1: Zeroizing<Vec<u8>>,
    k2: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for MemoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryKey(..)")
    }
}

impl MemoryKey {
    /// The VEK and the derived engine keys, for the crate's own no-leak test only.
    #[cfg(test)]
    pub(crate) fn key_material_for_tests(&self) -> [Vec<u8>; 3] {
        [self.vek.to_vec(), self.k1.to_vec(), self.k2.to_vec()]
    }

    /// A fresh random VEK.
    pub fn random() -> Result<Self, ErrorStack> {
        let mut v = [0u8; 16];
        openssl::rand::rand_bytes(&mut v)?;
        let k = Self::from_vek(v);
        v.zeroize();
        k
    }

    /// Derive the engine keys from a VEK seed.
    pub fn from_vek(vek: [u8; 16]) -> Result<Self, ErrorStack> {
        Ok(MemoryKey {
            k1: kdf(&vek, b"model-data", &[], 16),
            k2: kdf(&vek, b"model-tweak", &[], 16),
            vek: Zeroizing::new(vek),
        })
    }

    /// True when both keys derive from the same VEK (key sharing).
    pub fn same_key(&self, other: &MemoryKey) -> bool {
        // Both VEKs are 16 bytes; compare in constant time.
        openssl::memcmp::eq(&self.vek[..], &other.vek[..])
    }

    /// The per-block tweaks (AES of each block's address under K2), wiped on drop.
    fn tweaks(&self, pa: u64, nblocks: usize) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
        let mut addrs = Vec::with_capacity(nblocks * 16);
        for i in 0..nblocks as u64 {
            addrs.extend_from_slice(&((pa + 16 * i) as u128).to_le_bytes());
        }
        ecb(&self.k2, Mode::Encrypt, &addrs).map(Zeroizing::new)
    }

    fn xex(&self, mode: Mode, pa: u64, data: &mut [u8]) -> Result<(), ErrorStack> {
        assert!(
            pa.is_multiple_of(16) && data.len().is_multiple_of(16),
            "engine needs 16-byte aligned ranges"
        );
        let t = self.tweaks(pa, data.len() / 16)?;
        for (d, t) in data.iter_mut().zip(t.iter()) {
            *d ^= t;
        }
        let mut out = ecb(&self.k1, mode, data)?;
        for ((d, o), t) in data.iter_mut().zip(&out).zip(t.iter()) {
            *d = o ^ t;
        }
        out.zeroize();
        Ok(())
    }

    /// Encrypt in place a 16-byte aligned range at model physical address `pa`.
    /// Panics only on misaligned input, which callers check first (INVALID_ADDRESS/LENGTH).
    pub fn encrypt(&self, pa: u64, data: &mut [u8]) -> Result<(), ErrorStack> {
        self.xex(Mode::Encrypt, pa, data)
    }

    /// Decrypt in place.
    pub fn decrypt(&self, pa: u64, data: &mut [u8]) -> Result<(), ErrorStack> {
        self.xex(Mode::Decrypt, pa, data)
    }
}

fn ecb(key: &[u8], mode: Mode, data: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    let mut c = Crypter::new(Cipher::aes_128_ecb(), mode, key, None)?;
    c.pad(false);
    let mut out = vec![0u8; data.len() + 16];
    let mut n = c.update(data, &mut out)?;
    n += c.finalize(&mut out[n..])?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_compares_the_vek() {
        let a = MemoryKey::from_vek([7u8; 16]).unwrap();
        assert!(a.same_key(&MemoryKey::from_vek([7u8; 16]).unwrap()));
        let mut v = [7u8; 16];
        v[15] = 8;
        assert!(!a.same_key(&MemoryKey::from_vek(v).unwrap()));
    }

    #[test]
    fn equals_openssl_xts_per_block_and_is_deterministic() {
        let k = MemoryKey::from_vek([7u8; 16]).unwrap();
        let pt: Vec<u8> = (0..64u8).collect();
        let mut a = pt.clone();
        k.encrypt(0x1000, &mut a).unwrap();
        // Each block equals openssl AES-128-XTS with key K1||K2 and tweak LE128(pa).
        let mut key = k.k1.to_vec();
        key.extend_from_slice(&k.k2);
        for i in 0..4 {
            let tweak = ((0x1000 + 16 * i) as u128).to_le_bytes();
            let c = openssl::symm::encrypt(
                Cipher::aes_128_xts(),
                &key,
                Some(&tweak),
                &pt[16 * i as usize..16 * i as usize + 16],
            )
            .unwrap();
            assert_eq!(&a[16 * i as usize..16 * i as usize + 16], &c[..]);
        }
        let mut b = pt.clone();
        k.encrypt(0x1000, &mut b).unwrap();
        assert_eq!(a, b, "deterministic");
        let mut c = pt.clone();
        k.encrypt(0x2000, &mut c).unwrap();
        assert_ne!(a, c, "address tweak");
        assert_ne!(&a[0..16], &a[16..32]);
        k.decrypt(0x1000, &mut a).unwrap();
        assert_eq!(a, pt);
        let other = MemoryKey::from_vek([8u8; 16]).unwrap();
        let mut d = pt.clone();
        other.encrypt(0x1000, &mut d).unwrap();
        assert_ne!(b, d);
    }
}
