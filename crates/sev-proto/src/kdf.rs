//! The SEV key-derivation function: NIST SP 800-108 in counter mode with HMAC-SHA256 as PRF,
//! with the counter and the output length encoded **little-endian** (the AMD-SP convention).
//!
//! Block `i` (from 1) is `HMAC-SHA256(key, LE32(i) ‖ label ‖ 0x00 ‖ context ‖ LE32(out_len·8))`;
//! the output is the first `out_len` bytes of the concatenated blocks.

use crate::util::hmac_sha256;
use zeroize::Zeroizing;

/// Label of the master secret derivation at LAUNCH_START.
pub const LABEL_MASTER_SECRET: &[u8] = b"sev-master-secret";
/// Label of the key-encryption key.
pub const LABEL_KEK: &[u8] = b"sev-kek";
/// Label of the key-integrity key.
pub const LABEL_KIK: &[u8] = b"sev-kik";
/// Label of the chip-endorsement-key derivation.
pub const LABEL_CEK: &[u8] = b"sev-chip-endorsement-key";

/// Derives `out_len` bytes from `key`, `label` and `context`.
///
/// `out_len * 8` must fit into a u32 (anything up to 512 MiB); larger requests are clamped
/// to that limit, far above any SEV use (16 to 56 bytes).
pub fn kdf(key: &[u8], label: &[u8], context: &[u8], out_len: usize) -> Zeroizing<Vec<u8>> {
    let out_len = out_len.min((u32::MAX / 8) as usize);
    let bits = (out_len as u32).wrapping_mul(8).to_le_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 32));
    let mut i: u32 = 1;
    while out.len() < out_len {
        let block = Zeroizing::new(hmac_sha256(
            key,
            &[&i.to_le_bytes(), label, &[0u8], context, &bits],
        ));
        out.extend_from_slice(&block[..]);
        i = i.wrapping_add(1);
    }
    out.truncate(out_len);
    out
}

/// [`kdf`] into a fixed 16-byte array (the size of every SEV channel key).
pub fn kdf16(key: &[u8], label: &[u8], context: &[u8]) -> Zeroizing<[u8; 16]> {
    let v = kdf(key, label, context, 16);
    let mut a = Zeroizing::new([0u8; 16]);
    a.copy_from_slice(&v);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_secret_kat() {
        let m = kdf(&[0u8; 16], LABEL_MASTER_SECRET, &[0u8; 16], 16);
        assert_eq!(hex::encode(&*m), "ab4d269fcc62bedb4511d56c386ce706");
    }

    #[test]
    fn kek_kik_kat() {
        let m = kdf(&[0u8; 16], LABEL_MASTER_SECRET, &[0u8; 16], 16);
        assert_eq!(
            hex::encode(&*kdf(&m, LABEL_KEK, b"", 16)),
            "b6abfbfb75ea1ea74ed8750b8afdb973"
        );
        assert_eq!(
            hex::encode(*kdf16(&m, LABEL_KIK, b"")),
            "53b524bf5669a363f365c864acba8572"
        );
    }

    #[test]
    fn empty_key_is_fine() {
        // HMAC with an empty key is well defined (the key is zero-padded); must not panic.
        assert_eq!(
            kdf(b"", b"l", b"", 16)[..],
            kdf(&[0u8; 64], b"l", b"", 16)[..]
        );
    }

    #[test]
    fn multi_block_prefix_property() {
        // Different lengths encode different L, so outputs are not prefixes of each other,
        // but the length is always exact.
        for n in [0usize, 1, 31, 32, 33, 56, 64, 100] {
            assert_eq!(kdf(b"k", b"l", b"c", n).len(), n);
        }
        assert_ne!(
            kdf(b"k", b"l", b"c", 16)[..],
            kdf(b"k", b"l", b"c", 32)[..16]
        );
    }
}
