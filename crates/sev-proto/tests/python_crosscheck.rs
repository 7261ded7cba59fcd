//! Independent cross-check: runs the reference Python scripts (../shared/reference/kat/) and
//! compares every value they print with what this crate computes for the same inputs.
//! The interpreter is `$SEVM_PYTHON`, else `.venv/bin/python`, else `python3` (one with the
//! `cryptography` module); without one, or without the scripts, the tests print SKIP, or fail
//! when `CI` is set. A script that fails under a working interpreter is a test failure.

mod common;
use common::{missing, python, seq};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use sev_proto::measure::measurement;
use sev_proto::secret::build_packet;
use sev_proto::session::{derive_channel_keys, ecdh_shared_secret, owner_wrap, TransportKeys};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn run(script: &str) -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/kat");
    let path = dir.join(script);
    if !path.is_file() {
        return missing(&format!("{} not found", path.display()));
    }
    let py = python()?;
    let o = Command::new(&py)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        o.status.success(),
        "{} {script} failed ({}):\n{}",
        py.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Maps "name value" / "name= value" lines to name -> last hex word.
fn values(out: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (Some(first), Some(last)) = (words.first(), words.last()) {
            m.insert(first.trim_end_matches('=').to_string(), last.to_string());
        }
    }
    m
}

#[test]
fn kat_py_agrees() {
    let Some(out) = run("kat.py") else { return };
    let v = values(&out);
    let ck = derive_channel_keys(&[0; 16], &[0; 16]);
    assert_eq!(v["master"], hex::encode(ck.master));
    let blob = owner_wrap(&[0; 16], &[0; 16], &[0; 16], &TransportKeys::zero(), 0u32);
    assert_eq!(v["wrap_tk"], hex::encode(blob.wrap_tk));
    assert_eq!(v["wrap_mac"], hex::encode(blob.wrap_mac));
    assert_eq!(v["policy_mac"], hex::encode(blob.policy_mac));
    assert!(out.contains(&format!("kik {}", hex::encode(ck.kik))));
}

fn key_of(byte: u8) -> EcKey<openssl::pkey::Private> {
    let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let d = BigNum::from_slice(&[byte; 47]).unwrap(); // e2e_kat.py uses 47-byte scalars
    let mut ctx = BigNumContext::new().unwrap();
    let mut q = EcPoint::new(&g).unwrap();
    q.mul_generator2(&g, &d, &mut ctx).unwrap();
    EcKey::from_private_components(&g, &d, &q).unwrap()
}

#[test]
fn e2e_kat_py_agrees() {
    let Some(out) = run("e2e_kat.py") else { return };
    let v = values(&out);
    let (pdh, godh) = (key_of(0x11), key_of(0x22));
    let pdh_pub = EcKey::from_public_key(pdh.group(), pdh.public_key()).unwrap();
    let z = ecdh_shared_secret(&godh, &pdh_pub).unwrap();
    assert_eq!(v["Z"], hex::encode(&z[..]));
    let keys = TransportKeys {
        tek: seq(0xa0),
        tik: seq(0xb0),
    };
    let ck = derive_channel_keys(&z, &seq(0));
    assert_eq!(v["master"], hex::encode(ck.master));
    assert_eq!(v["KEK"], hex::encode(ck.kek));
    assert_eq!(v["KIK"], hex::encode(ck.kik));
    let blob = owner_wrap(&z, &seq(0), &seq(0x10), &keys, 1u32);
    assert_eq!(v["wrap_tk"], hex::encode(blob.wrap_tk));
    assert_eq!(v["wrap_mac"], hex::encode(blob.wrap_mac));
    assert_eq!(v["policy_mac"], hex::encode(blob.policy_mac));
    let mut ld = openssl::sha::Sha256::new();
    ld.update(&[0u8; 4096]);
    ld.update(&[0x5au8; 176]);
    let ld = ld.finish();
    let m = measurement(&keys.tik, 0, 24, 17, 1u32, &ld, &seq(0x20));
    assert_eq!(v["measurement"], hex::encode(m));
    let mut pt = [0u8; 32];
    pt[..16].copy_from_slice(b"hello-sev-secret");
    let (hdr, ct) = build_packet(&keys, &m, seq(0x30), 0, &pt).unwrap();
    assert!(out.contains(&format!("secret ct {}", hex::encode(&ct))));
    assert!(out.contains(&format!("secret hdr mac {}", hex::encode(hdr.mac))));
}
