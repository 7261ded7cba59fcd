//! Small crypto helpers over openssl: SP800-108 KDF (LE counter), HMAC-SHA256,
//! AES-128-CTR. Kept local until `sev-proto::kdf`/`session` land.

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

/// HMAC-SHA256(key, concat(parts)).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], ErrorStack> {
    let k = PKey::hmac(key)?;
    let mut s = Signer::new(MessageDigest::sha256(), &k)?;
    for p in parts {
        s.update(p)?;
    }
    let mut out = [0u8; 32];
    s.sign(&mut out)?;
    Ok(out)
}

/// NIST SP 800-108 counter-mode KDF with HMAC-SHA256; counter and length are LE32
/// (the PSP's convention, spec notes §4 step 3).
pub fn kdf(
    key: &[u8],
    label: &[u8],
    context: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 32));
    let l_bits = ((out_len * 8) as u32).to_le_bytes();
    let mut i: u32 = 1;
    while out.len() < out_len {
        let block = hmac_sha256(key, &[&i.to_le_bytes(), label, &[0u8], context, &l_bits])?;
        out.extend_from_slice(&block);
        i += 1;
    }
    out.truncate(out_len);
    Ok(out)
}

/// AES-128-CTR with a 16-byte initial counter block (big-endian increment).
pub fn aes128_ctr(
    key: &[u8],
    iv: &[u8; 16],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
    let mut c = Crypter::new(Cipher::aes_128_ctr(), Mode::Encrypt, key, Some(iv))?;
    let mut out = Zeroizing::new(vec![0u8; data.len() + 16]);
    let mut n = c.update(data, &mut out)?;
    n += c.finalize(&mut out[n..])?;
    out.truncate(n);
    Ok(out)
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_known_answer() {
        // spec notes §4 known answer.
        let k = kdf(&[0u8; 16], b"sev-master-secret", &[0u8; 16], 16).unwrap();
        assert_eq!(hex::encode(&*k), "ab4d269fcc62bedb4511d56c386ce706");
    }
}
