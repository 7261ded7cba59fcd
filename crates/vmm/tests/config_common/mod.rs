//! Helpers for the `vmm::config` tests: real P-384 owner certificates and sessions, owner
//! files, `[sev-launch]` texts and error-location checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use vmm::config::{ConfigError, Where};

/// Asserts that `$e` (a `ConfigError`) matches the pattern `$p`; the failure shows the error.
macro_rules! assert_kind {
    ($e:expr, $p:pat) => {{
        let e = &$e;
        assert!(matches!(e, $p), "{e}");
    }};
}
pub(crate) use assert_kind;

/// A GODH certificate made here, with its key coordinates.
pub struct Owner {
    pub cert: Vec<u8>,
    /// Qx, Qy little-endian (as the certificate stores them).
    pub qx_le: [u8; 48],
    pub qy_le: [u8; 48],
    pub session: Vec<u8>,
}

/// Writes the 2084-byte SEV certificate layout directly around a fresh P-384 key.
pub fn make_owner() -> Owner {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("P-384 group");
    let key = EcKey::generate(&group).expect("P-384 key");
    let mut ctx = BigNumContext::new().expect("bn ctx");
    let mut x = openssl::bn::BigNum::new().expect("bn");
    let mut y = openssl::bn::BigNum::new().expect("bn");
    key.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
        .expect("coordinates");
    let mut qx_le: [u8; 48] = x.to_vec_padded(48).expect("48 bytes").try_into().unwrap();
    let mut qy_le: [u8; 48] = y.to_vec_padded(48).expect("48 bytes").try_into().unwrap();
    qx_le.reverse();
    qy_le.reverse();
    let mut cert = vec![0u8; 0x824];
    cert[0..4].copy_from_slice(&1u32.to_le_bytes()); // version
    cert[8..12].copy_from_slice(&0x1003u32.to_le_bytes()); // usage PDH (as sevctl's GODH)
    cert[0x0c..0x10].copy_from_slice(&3u32.to_le_bytes()); // ECDH-SHA256
    cert[0x10..0x14].copy_from_slice(&2u32.to_le_bytes()); // P-384
    cert[0x14..0x14 + 48].copy_from_slice(&qx_le);
    cert[0x5c..0x5c + 48].copy_from_slice(&qy_le);
    for slot in [0x414usize, 0x61c] {
        cert[slot..slot + 4].copy_from_slice(&0x1000u32.to_le_bytes()); // empty slot
    }
    let mut session = vec![0u8; 128];
    openssl::rand::rand_bytes(&mut session).expect("rand");
    Owner {
        cert,
        qx_le,
        qy_le,
        session,
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn write_b64(path: &Path, bytes: &[u8]) {
    std::fs::write(
        path,
        base64::engine::general_purpose::STANDARD.encode(bytes),
    )
    .expect("write");
}

/// Reads and decodes a base64 file (as `sevctl session` writes them).
pub fn read_b64(path: &Path) -> Vec<u8> {
    let t =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    base64::engine::general_purpose::STANDARD
        .decode(t.trim())
        .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()))
}

/// Writes `godh.b64` and `session.b64` for `owner` into `dir`.
pub fn write_owner_files(dir: &Path, owner: &Owner) -> (PathBuf, PathBuf) {
    let c = dir.join("godh.b64");
    let s = dir.join("session.b64");
    write_b64(&c, &owner.cert);
    write_b64(&s, &owner.session);
    (c, s)
}

/// A fresh owner whose `godh.b64` and `session.b64` are written into `dir`.
pub fn owner_in(dir: &Path) -> Owner {
    let owner = make_owner();
    write_owner_files(dir, &owner);
    owner
}

/// The seed's three owner keys as `[sev-launch]` lines: `dh_pub_qx`, `dh_pub_qy` (Qx, Qy
/// little-endian) and `nonce` (the first 16 bytes of `session`).
pub fn owner_key_lines(qx_le: &[u8], qy_le: &[u8], session: &[u8]) -> String {
    format!(
        "dh_pub_qx = \"{}\"\ndh_pub_qy = \"{}\"\nnonce = \"{}\"\n",
        hex(qx_le),
        hex(qy_le),
        hex(&session[..16])
    )
}

/// A valid `[sev-launch]` text for `owner` (files named relative to the config's dir).
pub fn valid_sev_launch(owner: &Owner) -> String {
    format!(
        "# sevm launch\n[sev-launch]\nflags = \"00000000\"\npolicy = \"00000005\"\n{}\
         vcpu_count = \"2\"\nvcpu_length = \"1\"\nvcpu_mask = \"03\"\n\
         dh_cert_file = \"godh.b64\"\nsession_file = \"session.b64\"\n",
        owner_key_lines(&owner.qx_le, &owner.qy_le, &owner.session)
    )
}

/// The line number and key a file error points at (panics, naming the error, for any other
/// location).
#[track_caller]
pub fn line_key(e: &ConfigError) -> (usize, String) {
    match e.location() {
        Some(Where::Line { line, key, .. }) => (*line, key.clone()),
        other => panic!("expected a file line, got {other:?} for {e}"),
    }
}
