//! AMD SEV-SNP byte formats and cryptography (pure code, no KVM).
//!
//! Every structure here has a parser that returns a [`FormatError`] naming the structure and the
//! field on bad input (it never panics) and an encoder that is its exact inverse. Sources for the
//! layouts: `shared/reference/snp-spec-notes.md` §2–§4 (AMD SEV-SNP firmware ABI), cross-checked
//! against the virtee `sev` crate and sev-snp-measure; each module states what it follows.
//!
//! - [`policy`]: the SNP guest policy (`u64`) and the checks SNP_LAUNCH_START applies to it.
//! - [`tcb`]: TCB_VERSION in the Milan/Genoa and Turin layouts.
//! - [`measure`]: PAGE_INFO and the SHA-384 launch-digest chain of SNP_LAUNCH_UPDATE.
//! - [`report`]: the 0x4A0-byte attestation report (v2, v3, v5), its ECDSA P-384 signature.
//! - [`id_block`]: the ID block, ID authentication structure, SNP public keys and key digests.
//! - [`certs`]: the extended-report certificate table and the VCEK's AMD X.509 extensions.
//! - [`msg`]: guest messages (header, AES-256-GCM) and the report/key request layouts.
//! - [`secrets`]: the secrets page (VMPCKs, GOSVW) written at launch.

pub mod certs;
pub mod ecdsa;
pub mod id_block;
pub mod measure;
pub mod msg;
pub mod policy;
pub mod report;
pub mod secrets;
pub mod tcb;

use thiserror::Error;

/// A malformed SEV-SNP structure: which structure, which field, and what is wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The input has the wrong length for the structure.
    #[error("{structure}: length is {got} bytes, expected {expected}")]
    Length {
        /// Structure name, e.g. `ATTESTATION_REPORT`.
        structure: &'static str,
        /// The required length (or minimum length, see the message of the caller).
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{structure}.{field}: {reason}")]
    Field {
        /// Structure name.
        structure: &'static str,
        /// Field name (as in the AMD SEV-SNP ABI specification).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl FormatError {
    pub(crate) fn field(
        structure: &'static str,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        FormatError::Field {
            structure,
            field,
            reason: reason.into(),
        }
    }
}

/// Checks that `b` is exactly `len` bytes long.
pub(crate) fn expect_len(structure: &'static str, b: &[u8], len: usize) -> Result<(), FormatError> {
    if b.len() == len {
        Ok(())
    } else {
        Err(FormatError::Length {
            structure,
            expected: len,
            got: b.len(),
        })
    }
}

/// Checks that `b[range]` is all zero (reserved, must be zero).
pub(crate) fn expect_zero(
    structure: &'static str,
    field: &'static str,
    b: &[u8],
    start: usize,
    end: usize,
) -> Result<(), FormatError> {
    match b.get(start..end) {
        Some(s) => match s.iter().position(|&x| x != 0) {
            None => Ok(()),
            Some(i) => Err(FormatError::field(
                structure,
                field,
                format!(
                    "reserved bytes 0x{start:X}..0x{end:X} must be zero (byte 0x{:X} is 0x{:02X})",
                    start + i,
                    s[i]
                ),
            )),
        },
        None => Err(FormatError::Length {
            structure,
            expected: end,
            got: b.len(),
        }),
    }
}

/// Fixed-size array copy from a slice whose bounds the caller has already checked by length.
pub(crate) fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(off..off + N) {
        out.copy_from_slice(s);
    }
    out
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// SHA-384 of the concatenation of `parts`, through OpenSSL.
pub(crate) fn sha384(parts: &[&[u8]]) -> [u8; 48] {
    let mut h = openssl::sha::Sha384::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}
