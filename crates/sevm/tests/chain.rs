//! `sevm owner verify-chain` on the real Naples chain: it verifies against AMD's built-in
//! root; one flipped bit in any signed byte of any certificate makes it fail and name the link;
//! truncated, oversized and garbage files are errors naming the file and certificate.

mod common;
use common::*;
use std::path::Path;

const SEV_LEN: usize = 2084;
/// Signed part of a SEV cert: header (16) + public key (1028).
const SEV_SIGNED: usize = 1044;
/// Naples CA certs: 64-byte header + pubexp (256) + modulus (256) are signed.
const CA_LEN: usize = 832;
const CA_SIGNED: usize = 576;

fn verify(chain: &Path) -> std::process::Output {
    sevm()
        .args(["owner", "verify-chain"])
        .arg(chain)
        .output()
        .unwrap()
}

#[test]
fn naples_full_chain_verifies_against_builtin_root() {
    let Some(td) = testdata() else { return };
    let full = td.join("derived/naples_full_chain.bin");
    let out = ok(sevm().args(["owner", "verify-chain"]).arg(&full));
    assert!(out.contains("built-in AMD naples root"), "{out}");
    for name in ["PDH", "PEK", "OCA", "CEK", "ASK", "ARK"] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    // The fingerprints sevctl prints for this chain.
    for fp in [
        "dbec0cf343b140dc7ded571935e8d0ec8059fd1610ddb3c79eb177e7cd3878a2",
        "8d55d63b6792c6ed10e11df7afc7e25d6a0428a6351fb9a806ec4160f2b0f390",
        "70bb8f3702b22e848ef7a5dac704186ee80a889273443b4b5466da9405d4cc03",
        "0f6570c3ddec6b393398084251f6924fcfb7d8fa1779e4e36dbbca30ee0c4f38",
        "5dff2a2a4dd59dc095d73a26af28be523192ade830bdd35bacdd81ee75584c45",
        "8efddcaaf84990cf6354d93637be270220cf15797332b3d918c3b8cc77349f31",
    ] {
        assert!(out.contains(fp), "fingerprint {fp} missing from:\n{out}");
    }
    // JSON form.
    let j: serde_json::Value = serde_json::from_str(&ok(sevm()
        .args(["owner", "verify-chain", "--json"])
        .arg(&full)))
    .unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["certificates"].as_array().unwrap().len(), 6);
    // SEV chain only, detected generation, explicit generation and explicit --ca.
    let sev = td.join("derived/naples_sev_chain_pdh_pek_oca_cek.bin");
    ok(sevm().args(["owner", "verify-chain"]).arg(&sev));
    ok(sevm()
        .args(["owner", "verify-chain", "--generation", "naples"])
        .arg(&sev));
    ok(sevm()
        .args(["owner", "verify-chain", "--ca"])
        .arg(td.join("derived/naples_ca_chain_ask_ark.bin"))
        .arg(&sev));
    // The wrong generation's root does not sign a Naples CEK.
    let e = fails(
        sevm()
            .args(["owner", "verify-chain", "--generation", "milan"])
            .arg(&sev),
    );
    assert!(e.contains("CEK <- ASK"), "{e}");
}

#[test]
fn one_flipped_bit_names_the_link() {
    let Some(td) = testdata() else { return };
    let orig = std::fs::read(td.join("derived/naples_full_chain.bin")).unwrap();
    assert_eq!(orig.len(), 4 * SEV_LEN + 2 * CA_LEN);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.bin");
    // (name, start, signed length, sample offsets within the signed part)
    let sev_samples = [4usize, 5, 9, 20, 47, 67, 92, 139, 163, 600, 1043];
    let ca_samples = [4usize, 17, 20, 35, 36, 64, 200, 319, 320, 450, 575];
    let mut certs: Vec<(&str, usize, usize, &[usize])> = Vec::new();
    for (i, n) in ["PDH", "PEK", "OCA", "CEK"].into_iter().enumerate() {
        certs.push((n, i * SEV_LEN, SEV_SIGNED, &sev_samples));
    }
    certs.push(("ASK", 4 * SEV_LEN, CA_SIGNED, &ca_samples));
    certs.push(("ARK", 4 * SEV_LEN + CA_LEN, CA_SIGNED, &ca_samples));
    let mut checked = 0;
    for (name, start, signed, samples) in certs {
        for &off in samples {
            assert!(off < signed);
            for bit in [0u8, 7] {
                let mut b = orig.clone();
                b[start + off] ^= 1 << bit;
                std::fs::write(&path, &b).unwrap();
                let o = verify(&path);
                let all = format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                assert!(
                    !o.status.success(),
                    "{name} byte {off} bit {bit} flipped but the chain verified:\n{all}"
                );
                assert!(!all.contains("panicked"), "{all}");
                // Either the certificate's own link fails, or it no longer parses; both
                // name it.
                let named = all.contains(&format!("link {name} <-"))
                    || all.contains(&format!("{name} certificate"));
                assert!(
                    named,
                    "{name} byte {off} bit {bit}: output does not name it:\n{all}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * (4 * sev_samples.len() + 2 * ca_samples.len()));
}

#[test]
fn bad_chain_files_are_errors_naming_file_and_cert() {
    let Some(td) = testdata() else { return };
    let full = std::fs::read(td.join("derived/naples_full_chain.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad-chain.bin");
    // Truncated at various points.
    for len in [
        0usize,
        100,
        SEV_LEN,
        3 * SEV_LEN + 10,
        4 * SEV_LEN + 500,
        full.len() - 1,
    ] {
        std::fs::write(&p, &full[..len]).unwrap();
        let e = fails(sevm().args(["owner", "verify-chain"]).arg(&p));
        assert!(e.contains("bad-chain.bin"), "len {len}: {e}");
    }
    // Oversized: trailing junk.
    let mut big = full.clone();
    big.extend_from_slice(&[0xAA; 7]);
    std::fs::write(&p, &big).unwrap();
    let e = fails(sevm().args(["owner", "verify-chain"]).arg(&p));
    assert!(e.contains("bad-chain.bin"), "{e}");
    // Huge: refused before being read.
    let huge = dir.path().join("huge-chain.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let e = fails(sevm().args(["owner", "verify-chain"]).arg(&huge));
    assert!(
        e.contains("huge-chain.bin") && e.contains("too large"),
        "{e}"
    );
    // Garbage of the right size.
    let garbage: Vec<u8> = (0..full.len()).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&p, &garbage).unwrap();
    let e = fails(sevm().args(["owner", "verify-chain"]).arg(&p));
    assert!(e.contains("bad-chain.bin") && e.contains("PDH"), "{e}");
    // Missing file.
    let e = fails(
        sevm()
            .args(["owner", "verify-chain"])
            .arg(dir.path().join("nope.bin")),
    );
    assert!(e.contains("nope.bin"), "{e}");
    // A bad --ca file.
    std::fs::write(&p, [1u8; 40]).unwrap();
    let e = fails(
        sevm()
            .args(["owner", "verify-chain", "--ca"])
            .arg(&p)
            .arg(td.join("derived/naples_sev_chain_pdh_pek_oca_cek.bin")),
    );
    assert!(e.contains("--ca") && e.contains("bad-chain.bin"), "{e}");
}
