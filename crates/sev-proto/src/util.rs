//! Small internal helpers: HMAC-SHA256 and AES-128-CTR through OpenSSL, little-endian readers.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};

/// HMAC-SHA256 over the concatenation of `parts`.
///
/// OpenSSL only fails here on allocation failure; that is not an input error, so it aborts
/// with a message instead of threading an impossible error through every caller.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // OpenSSL 3 refuses empty HMAC keys; HMAC zero-pads short keys to the block size, so an
    // empty key is the same as a single zero byte (RFC 2104).
    let key = if key.is_empty() { &[0u8][..] } else { key };
    let pkey = PKey::hmac(key).expect("OpenSSL: creating an HMAC key failed (out of memory?)");
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)
        .expect("OpenSSL: creating an HMAC-SHA256 context failed");
    for p in parts {
        signer
            .update(p)
            .expect("OpenSSL: HMAC-SHA256 update failed");
    }
    let mut out = [0u8; 32];
    let n = signer
        .sign(&mut out)
        .expect("OpenSSL: HMAC-SHA256 finalisation failed");
    debug_assert_eq!(n, 32);
    out
}

/// AES-128-CTR over `data` (encryption and decryption are the same operation). The 16-byte IV
/// is the initial counter block, incremented as a 128-bit big-endian integer (OpenSSL's rule).
pub(crate) fn aes128_ctr(key: &[u8; 16], iv: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let cipher = Cipher::aes_128_ctr();
    let mut c = Crypter::new(cipher, Mode::Encrypt, key, Some(iv))
        .expect("OpenSSL: AES-128-CTR context creation failed");
    let mut out = vec![0u8; data.len() + cipher.block_size()];
    let mut n = c
        .update(data, &mut out)
        .expect("OpenSSL: AES-128-CTR update failed");
    n += c
        .finalize(&mut out[n..])
        .expect("OpenSSL: AES-128-CTR finalisation failed");
    out.truncate(n);
    out
}

/// Reads a little-endian u32 at `off`; `None` when out of bounds.
pub(crate) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a little-endian u16 at `off`; `None` when out of bounds.
pub(crate) fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Copies `N` bytes at `off` into an array; `None` when out of bounds.
pub(crate) fn array_at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    let s = b.get(off..off.checked_add(N)?)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Some(a)
}
