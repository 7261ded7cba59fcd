//! Argument parsing shared by every subcommand: numbers in hex or decimal, base64 blobs,
//! "path or base64" inputs (as sevctl takes them), `UUID:FILE` secret specs and digests.
//!
//! Every error names the argument (and the file, when one is involved) so that a user can
//! tell which of many options was wrong. Nothing here panics on bad input.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use thiserror::Error;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Errors from parsing command-line values.
#[derive(Debug, Error)]
pub enum ArgError {
    /// A number was neither `0x`-hex nor decimal.
    #[error("{arg}: '{value}' is not a number (use decimal or 0x-prefixed hex)")]
    NotANumber {
        /// The argument name, e.g. `--policy`.
        arg: String,
        /// The value given.
        value: String,
    },
    /// A number does not fit the field width.
    #[error("{arg}: {value} does not fit in {bits} bits")]
    TooLarge {
        /// The argument name.
        arg: String,
        /// The value given.
        value: String,
        /// The width of the field.
        bits: u32,
    },
    /// A value was not valid base64.
    #[error("{arg}: not valid base64 ({source})")]
    Base64 {
        /// The argument name.
        arg: String,
        /// The decoder's complaint.
        source: base64::DecodeError,
    },
    /// A "path or base64" value was neither an existing file nor valid base64.
    #[error("{arg}: no such file '{value}', and it is not valid base64 either ({source})")]
    NotFileNorBase64 {
        /// The argument name, e.g. `--tik`.
        arg: String,
        /// The value given.
        value: String,
        /// The base64 decoder's complaint.
        source: base64::DecodeError,
    },
    /// A file could not be read, or is not a regular file of a sane size (the message names
    /// the argument, the file and what is wrong).
    #[error(transparent)]
    File(#[from] sevm_files::FileError),
    /// A value had the wrong length.
    #[error("{arg}: {what} must be {expected} bytes, got {got}")]
    Length {
        /// The argument name.
        arg: String,
        /// What the bytes are (e.g. "TIK" or "launch measure blob").
        what: String,
        /// The required length.
        expected: String,
        /// The actual length.
        got: usize,
    },
    /// A `UUID:FILE` secret spec was malformed.
    #[error("--secret: '{value}': {reason}")]
    SecretSpec {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest was neither 64 hex digits nor base64 of 32 bytes.
    #[error("{arg}: '{value}' is neither 64 hex digits nor base64 of 32 bytes")]
    Digest {
        /// The argument name.
        arg: String,
        /// The value given.
        value: String,
    },
}

/// Parses a `u64` given in decimal or `0x`-prefixed hex (`_` separators allowed).
pub fn parse_u64(arg: &str, value: &str) -> Result<u64, ArgError> {
    let v = value.trim().replace('_', "");
    let bad = || ArgError::NotANumber {
        arg: arg.to_string(),
        value: value.to_string(),
    };
    let too_large = || ArgError::TooLarge {
        arg: arg.to_string(),
        value: value.to_string(),
        bits: 64,
    };
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (v.as_str(), 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    u64::from_str_radix(digits, radix).map_err(|_| too_large())
}

/// Parses a number that must fit in `bits` bits (8, 16 or 32).
pub fn parse_bits(arg: &str, value: &str, bits: u32) -> Result<u64, ArgError> {
    let n = match parse_u64(arg, value) {
        Err(ArgError::TooLarge { .. }) => u64::MAX,
        other => other?,
    };
    if bits < 64 && n >> bits != 0 {
        return Err(ArgError::TooLarge {
            arg: arg.to_string(),
            value: value.to_string(),
            bits,
        });
    }
    Ok(n)
}

/// Parses a `u32` (hex or decimal) for argument `arg`.
pub fn parse_u32(arg: &str, value: &str) -> Result<u32, ArgError> {
    // parse_bits guarantees the value fits.
    parse_bits(arg, value, 32).map(|n| n as u32)
}

/// Parses a `u8` (hex or decimal) for argument `arg`.
pub fn parse_u8(arg: &str, value: &str) -> Result<u8, ArgError> {
    parse_bits(arg, value, 8).map(|n| n as u8)
}

/// clap value parser for `--policy` / POLICY (32 bits).
pub fn policy(value: &str) -> Result<u32, String> {
    parse_u32("policy", value).map_err(|e| e.to_string())
}

/// clap value parser for 8-bit fields (`--api-major`, `--api-minor`, `--build-id`).
pub fn byte(value: &str) -> Result<u8, String> {
    parse_u8("value", value).map_err(|e| e.to_string())
}

/// clap value parser for 32-bit counts (`--num-cpus`).
pub fn count(value: &str) -> Result<u32, String> {
    parse_u32("value", value).map_err(|e| e.to_string())
}

/// Decodes standard base64 (padding optional, surrounding whitespace ignored).
pub fn decode_b64(arg: &str, value: &str) -> Result<Vec<u8>, ArgError> {
    let cleaned: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(cleaned).map_err(|source| ArgError::Base64 {
        arg: arg.to_string(),
        source,
    })
}

/// Encodes bytes as standard padded base64.
pub fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads the regular file named by argument `arg` (at most `max` bytes, `why` saying why),
/// naming both in the error; FIFOs, devices and directories are refused without blocking.
pub fn read_file(arg: &str, path: &Path, max: u64, why: &str) -> Result<Vec<u8>, ArgError> {
    Ok(sevm_files::Limit::new(arg, max).why(why).read(path)?)
}

/// Largest file read as a "path or base64" value: these hold a key or nonce (16 bytes), a
/// LAUNCH_MEASURE blob (48), a packet header (52) or a secret payload (at most 16 KiB).
pub const MAX_PATH_OR_B64_FILE: u64 = 64 << 10;

/// Reads a "path or base64" value as sevctl does: an existing file is read as raw bytes (its
/// contents are not base64-decoded), anything else is decoded as base64.
///
/// A value that names something that exists but is not a regular file (`/dev/zero`, a FIFO,
/// a directory such as `/tmp`, which is also valid base64) is refused as such, never decoded.
/// A value that is neither an existing file nor valid base64 is refused with an error saying
/// both, since a mistyped or missing file name is the likelier mistake.
///
/// The bytes may be key material (TEK, TIK), so they come back in a buffer that is wiped on
/// drop.
pub fn path_or_b64(arg: &str, value: &str) -> Result<Zeroizing<Vec<u8>>, ArgError> {
    let p = Path::new(value);
    let absent = match std::fs::metadata(p) {
        Ok(_) => false,
        Err(e) => {
            e.kind() == std::io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ENAMETOOLONG | libc::ENOTDIR))
        }
    };
    if !absent {
        return read_file(
            arg,
            p,
            MAX_PATH_OR_B64_FILE,
            "keys, nonces, measurements and secret packets are far smaller",
        )
        .map(Zeroizing::new);
    }
    match decode_b64(arg, value) {
        Ok(bytes) => Ok(Zeroizing::new(bytes)),
        Err(ArgError::Base64 { source, .. }) => Err(ArgError::NotFileNorBase64 {
            arg: arg.to_string(),
            value: value.to_string(),
            source,
        }),
        Err(other) => Err(other),
    }
}

/// Reads a 16-byte key (TEK or TIK) from a path or base64 value; wiped on drop.
pub fn key16(arg: &str, what: &str, value: &str) -> Result<Zeroizing<[u8; 16]>, ArgError> {
    let bytes = path_or_b64(arg, value)?;
    let mut key = Zeroizing::new([0u8; 16]);
    if bytes.len() != 16 {
        return Err(ArgError::Length {
            arg: arg.to_string(),
            what: what.to_string(),
            expected: "16".into(),
            got: bytes.len(),
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Reads a LAUNCH_MEASURE blob (48 bytes: measure[32] || mnonce[16]) from path or base64.
pub fn measure_blob(arg: &str, value: &str) -> Result<([u8; 32], [u8; 16]), ArgError> {
    let bytes = path_or_b64(arg, value)?;
    if bytes.len() != 48 {
        return Err(ArgError::Length {
            arg: arg.to_string(),
            what: "launch measure blob (measure || mnonce)".into(),
            expected: "48".into(),
            got: bytes.len(),
        });
    }
    let mut m = [0u8; 32];
    let mut n = [0u8; 16];
    m.copy_from_slice(&bytes[..32]);
    n.copy_from_slice(&bytes[32..]);
    Ok((m, n))
}

/// Reads a 16-byte nonce / IV from path or base64.
pub fn bytes16(arg: &str, what: &str, value: &str) -> Result<[u8; 16], ArgError> {
    key16(arg, what, value).map(|k| *k)
}

/// Parses a 32-byte digest given as 64 hex digits or base64.
pub fn digest32(arg: &str, value: &str) -> Result<[u8; 32], ArgError> {
    let v = value.trim();
    let hexv = v.strip_prefix("0x").unwrap_or(v);
    if hexv.len() == 64 {
        if let Ok(b) = hex::decode(hexv) {
            if let Ok(d) = <[u8; 32]>::try_from(b.as_slice()) {
                return Ok(d);
            }
        }
    }
    let err = || ArgError::Digest {
        arg: arg.to_string(),
        value: value.to_string(),
    };
    let b = decode_b64(arg, v).map_err(|_| err())?;
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| err())
}

/// A `UUID:FILE` pair given to `--secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The GUID the guest looks the secret up by.
    pub guid: Uuid,
    /// The file holding the secret bytes.
    pub path: PathBuf,
}

impl FromStr for SecretSpec {
    type Err = ArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ArgError::SecretSpec {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (u, f) = s.split_once(':').ok_or_else(|| err("expected UUID:FILE"))?;
        let guid = Uuid::parse_str(u).map_err(|e| err(&format!("bad UUID '{u}': {e}")))?;
        if f.is_empty() {
            return Err(err("missing FILE after ':'"));
        }
        Ok(SecretSpec {
            guid,
            path: PathBuf::from(f),
        })
    }
}

/// clap value parser for `--secret`.
pub fn secret_spec(value: &str) -> Result<SecretSpec, String> {
    value.parse().map_err(|e: ArgError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_hex_and_decimal() {
        assert_eq!(parse_u32("p", "0x03").unwrap(), 3);
        assert_eq!(parse_u32("p", "40").unwrap(), 40);
        assert_eq!(parse_u32("p", "0XFFFFFFFF").unwrap(), u32::MAX);
        assert_eq!(parse_u8("p", "0x28").unwrap(), 40);
        assert!(matches!(
            parse_u32("--policy", "0x100000000"),
            Err(ArgError::TooLarge { bits: 32, .. })
        ));
        assert!(matches!(
            parse_u32("--policy", "99999999999999999999999"),
            Err(ArgError::TooLarge { bits: 32, .. })
        ));
        assert!(matches!(
            parse_u8("x", "256"),
            Err(ArgError::TooLarge { .. })
        ));
        for bad in ["", "0x", "-1", "1.5", "abc", "0xg1", "+3"] {
            assert!(
                matches!(parse_u32("--policy", bad), Err(ArgError::NotANumber { .. })),
                "{bad}"
            );
        }
        let e = parse_u32("--policy", "0x1ffffffff")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--policy") && e.contains("32 bits"), "{e}");
    }

    #[test]
    fn base64_and_lengths() {
        assert_eq!(decode_b64("a", "AAEC").unwrap(), vec![0, 1, 2]);
        assert_eq!(decode_b64("a", "AAE").unwrap(), vec![0, 1]);
        assert!(decode_b64("--nonce", "!!!")
            .unwrap_err()
            .to_string()
            .contains("--nonce"));
        let e = key16("--tik", "TIK", "AAEC").unwrap_err().to_string();
        assert!(
            e.contains("--tik") && e.contains("16") && e.contains("got 3"),
            "{e}"
        );
        assert!(measure_blob("--launch-measure-blob", "AAAA").is_err());
    }

    #[test]
    fn path_or_b64_names_missing_file_and_base64() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("vm_tik.bin");
        let missing = missing.to_str().unwrap();
        let e = path_or_b64("--tik", missing).unwrap_err();
        assert!(matches!(e, ArgError::NotFileNorBase64 { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("--tik")
                && msg.contains(&format!("no such file '{missing}'"))
                && msg.contains("base64"),
            "{msg}"
        );
        // Successes are unchanged: an existing file is read raw (even if it holds base64
        // text), anything else is decoded as base64.
        let file = dir.path().join("key.b64");
        std::fs::write(&file, "AAEC").unwrap();
        assert_eq!(
            path_or_b64("--tik", file.to_str().unwrap())
                .unwrap()
                .as_slice(),
            b"AAEC"
        );
        assert_eq!(path_or_b64("--tik", "AAEC").unwrap().as_slice(), &[0, 1, 2]);
    }

    #[test]
    fn digests() {
        let h = "4b47fec6f851487c33714c8a00a832a1b705ad0a7cac4a647388eccfa9f0c570";
        let d = digest32("--launch-digest", h).unwrap();
        assert_eq!(hex::encode(d), h);
        let b = encode_b64(&d);
        assert_eq!(digest32("--launch-digest", &b).unwrap(), d);
        assert!(digest32("--launch-digest", "abcd").is_err());
    }

    #[test]
    fn secret_specs() {
        let s: SecretSpec = "736869e5-84f0-4973-92ec-06879ce3da0b:/tmp/x"
            .parse()
            .unwrap();
        assert_eq!(s.path, PathBuf::from("/tmp/x"));
        assert_eq!(
            s.guid,
            Uuid::parse_str("736869e5-84f0-4973-92ec-06879ce3da0b").unwrap()
        );
        assert!("nouuid".parse::<SecretSpec>().is_err());
        assert!("zz:/tmp/x".parse::<SecretSpec>().is_err());
        assert!("736869e5-84f0-4973-92ec-06879ce3da0b:"
            .parse::<SecretSpec>()
            .is_err());
    }

    proptest::proptest! {
        #[test]
        fn numbers_round_trip(n: u32) {
            proptest::prop_assert_eq!(parse_u32("--policy", &n.to_string()).unwrap(), n);
            proptest::prop_assert_eq!(parse_u32("--policy", &format!("{n:#x}")).unwrap(), n);
        }

        #[test]
        fn wide_numbers_are_refused(n in (1u64 << 32)..) {
            let is_too_large = matches!(
                parse_u32("--policy", &n.to_string()),
                Err(ArgError::TooLarge { .. })
            );
            proptest::prop_assert!(is_too_large);
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".*") {
            let _ = parse_u32("x", &s);
            let _ = parse_u8("x", &s);
            let _ = decode_b64("x", &s);
            let _ = digest32("x", &s);
            let _ = s.parse::<SecretSpec>();
        }
    }
}
