//! Helpers for the `vmm::config` tests: real P-384 owner certificates and sessions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;

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

/// Writes `godh.b64` and `session.b64` for `owner` into `dir`.
pub fn write_owner_files(dir: &Path, owner: &Owner) -> (PathBuf, PathBuf) {
    let c = dir.join("godh.b64");
    let s = dir.join("session.b64");
    write_b64(&c, &owner.cert);
    write_b64(&s, &owner.session);
    (c, s)
}

/// A valid `[sev-launch]` text for `owner` (files named relative to the config's dir).
pub fn valid_sev_launch(owner: &Owner) -> String {
    format!(
        "# sevm launch\n[sev-launch]\nflags = \"00000000\"\npolicy = \"00000005\"\n\
         dh_pub_qx = \"{}\"\ndh_pub_qy = \"{}\"\nnonce = \"{}\"\nvcpu_count = \"2\"\n\
         vcpu_length = \"1\"\nvcpu_mask = \"03\"\ndh_cert_file = \"godh.b64\"\n\
         session_file = \"session.b64\"\n",
        hex(&owner.qx_le),
        hex(&owner.qy_le),
        hex(&owner.session[..16])
    )
}
