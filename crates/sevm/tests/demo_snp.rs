//! `sevm demo --snp` (issue 14): the whole SNP story on the soft backend passes, and the
//! SHA-256 the guest prints of the secret it opened equals the one the owner printed when it
//! sealed it; `--tamper` (a byte of the report before the owner sees it) and
//! `--tamper-at secret` (a byte of the sealed secret on its way to the guest) are refused with
//! a reason and exit 1.
//!
//! Needs /dev/kvm: SKIP without it, a failure when `CI` is set.

mod common;

use common::{kvm, run, sevm};

fn demo(extra: &[&str]) -> (std::process::ExitStatus, String) {
    let plat = tempfile::tempdir().unwrap();
    let mut c = sevm();
    c.args(["demo", "--snp", "--platform-dir"])
        .arg(plat.path())
        .args(extra);
    let (o, so, se) = run(&mut c);
    eprintln!("stdout:\n{so}\nstderr:\n{se}");
    (o.status, format!("{so}\n{se}"))
}

/// The 64-hex-digit value after `key` on the first line holding it.
fn sha_after(out: &str, key: &str) -> Option<String> {
    let i = out.find(key)? + key.len();
    let h: String = out[i..].chars().take(64).collect();
    (h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())).then_some(h)
}

#[test]
fn demo_snp_releases_the_secret_to_the_verified_guest_only() {
    if !kvm() {
        return;
    }
    let (st, out) = demo(&[]);
    assert_eq!(st.code(), Some(0), "{out}");
    let owner = sha_after(&out, "owner's secret sha256=").expect("owner's SHA-256 line");
    let guest = sha_after(&out, "guest| secret sha256=").expect("guest's SHA-256 line");
    assert_eq!(owner, guest, "{out}");
    assert!(out.contains("sevm demo --snp: OK"), "{out}");
    assert!(out.contains("snp-attest: sealed secret received"), "{out}");
    // Every numbered step reports OK and a timing.
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert!(steps.len() >= 10, "{out}");
    for l in &steps {
        assert!(l.ends_with(" OK") && l.contains(" ms)"), "{l}");
    }
    // The guest's key went into REPORT_DATA[0..32] and the owner's nonce into [32..64].
    let gpk = sha_after(&out, "guest x25519 public key=").expect("guest key line");
    let nonce = sha_after(&out, "owner: a fresh nonce: ").expect("nonce line");
    let rd = out
        .lines()
        .find_map(|l| l.strip_prefix("    guest| report_data="))
        .expect("report_data line");
    assert_eq!(rd, format!("{gpk}{nonce}"), "{out}");
    // A second run gets a different guest key (the nonce and RDRAND go into it).
    let (st2, out2) = demo(&[]);
    assert_eq!(st2.code(), Some(0), "{out2}");
    assert_ne!(sha_after(&out2, "guest x25519 public key="), Some(gpk));
    assert_ne!(sha_after(&out2, "owner's secret sha256="), Some(owner));
}

#[test]
fn demo_snp_tampered_report_is_refused_by_the_owner() {
    if !kvm() {
        return;
    }
    let (st, out) = demo(&["--tamper"]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(
        out.contains("TAMPERED: the host flipped a bit of MEASUREMENT"),
        "{out}"
    );
    assert!(
        out.contains("sevm demo --snp: REFUSED: REFUSED by the owner"),
        "{out}"
    );
    assert!(out.contains("report_signature"), "{out}");
    assert!(out.contains("measurement"), "{out}");
    assert!(out.contains("the owner released no secret"), "{out}");
    assert!(!out.contains("owner's secret sha256="), "{out}");
    assert!(!out.contains("guest| secret sha256="), "{out}");
}

#[test]
fn demo_snp_tampered_secret_is_refused_by_the_guest() {
    if !kvm() {
        return;
    }
    let (st, out) = demo(&["--tamper-at", "secret"]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(
        out.contains("TAMPERED: the host flipped a bit of the ciphertext"),
        "{out}"
    );
    assert!(out.contains("AES-256-GCM tag mismatch"), "{out}");
    assert!(out.contains("REFUSED by the guest"), "{out}");
    assert!(!out.contains("guest| secret sha256="), "{out}");
}
