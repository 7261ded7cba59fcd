//! Persistence of the soft platform directory: concurrent writers never tear it, a writer
//! killed at random points never corrupts it, a corrupt file is an error naming it, and
//! factory reset keeps the chip identity.

use sev_firmware::soft::store::{Store, STATE_FILE};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{SevPlatform, Status};
use sev_proto::cert::chain::{verify_full, FullChain};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "SEVM_FW_TEST_CHILD_DIR";

fn verify_dir(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let p = SoftPlatform::open(dir).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    let chain = p.export_chain().unwrap();
    let full = FullChain::parse(&chain.to_bytes()).unwrap();
    verify_full(&full, None).unwrap_or_else(|e| panic!("chain inconsistent: {e}"));
    (chain.cek, p.get_id().unwrap(), chain.ark)
}

/// Not a test on its own: when the parent sets CHILD_ENV, loop PDH_GEN forever.
#[test]
fn child_pdh_gen_loop() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p = SoftPlatform::open(Path::new(&dir)).unwrap();
    loop {
        p.pdh_gen().unwrap();
    }
}

#[test]
fn sigkill_at_random_points_never_corrupts() {
    let d = tempfile::tempdir().unwrap();
    let (cek, id, ark) = verify_dir(d.path());
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut gens = Vec::new();
    for _ in 0..100 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_pdh_gen_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, d.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the child's first write (a loaded host can take longer than any fixed
        // delay to start it), then kill it at a random point of the writes that follow.
        let before = Store::new(d.path()).unwrap().load().unwrap().generation;
        let started = std::time::Instant::now();
        while Store::new(d.path()).unwrap().load().unwrap().generation == before {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the child wrote nothing in 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(seed % 60));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (c, i, a) = verify_dir(d.path());
        assert_eq!(
            (c.as_slice(), i.as_slice(), a.as_slice()),
            (cek.as_slice(), id.as_slice(), ark.as_slice()),
            "identity changed"
        );
        gens.push(Store::new(d.path()).unwrap().load().unwrap().generation);
    }
    assert!(
        gens.last() > gens.first(),
        "children made progress: {gens:?}"
    );
}

#[test]
fn concurrent_writers_lose_no_update() {
    let d = tempfile::tempdir().unwrap();
    SoftPlatform::open(d.path()).unwrap();
    let g0 = Store::new(d.path()).unwrap().load().unwrap().generation;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let dir = d.path().to_path_buf();
            std::thread::spawn(move || {
                let p = SoftPlatform::open(&dir).unwrap();
                for _ in 0..5 {
                    p.pdh_gen().unwrap();
                    let e = p.pdh_cert_export().unwrap();
                    assert_eq!((e.pdh.encode().len(), e.chain_bytes().len()), (2084, 6252));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Through /dev/sev semantics each pdh_gen is INIT (no write: the keys exist) + PDH_GEN
    // (one write) and each export is INIT (no write).
    let g1 = Store::new(d.path()).unwrap().load().unwrap().generation;
    assert_eq!(g1 - g0, 4 * 5, "every read-modify-write was serialised");
    verify_dir(d.path());
}

#[test]
fn corrupt_or_partial_state_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    SoftPlatform::open(d.path()).unwrap();
    let path = d.path().join(STATE_FILE);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let e = SoftPlatform::open(d.path())
        .err()
        .expect("partial file must be refused");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        &good[..good.len() / 2],
        "never silently replaced"
    );
    let bad = String::from_utf8(good.clone()).unwrap().replacen(
        "\"chip_id\": \"",
        "\"chip_id\": \"zz",
        1,
    );
    std::fs::write(&path, bad).unwrap();
    let e = SoftPlatform::open(d.path())
        .err()
        .expect("bad hex must be refused");
    assert!(
        e.to_string().contains("chip_id") && e.to_string().contains(&path.display().to_string()),
        "{e}"
    );
    std::fs::write(&path, &good).unwrap();
    SoftPlatform::open(d.path()).unwrap();
}

#[test]
fn factory_reset_keeps_identity_and_ownership_round_trip() {
    use sev_proto::cert::{Algo, SevCert, Usage};
    let d = tempfile::tempdir().unwrap();
    let p = SoftPlatform::open_with(d.path(), 51).unwrap();
    assert_eq!(p.cbit_pos().unwrap(), 51);
    let before = p.export_chain().unwrap();
    // Take ownership: sign the PEK CSR with our own OCA.
    let p384 = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
    let oca_key = openssl::ec::EcKey::generate(&p384).unwrap();
    let mut oca_c = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &oca_key).unwrap();
    oca_c.sign_with(&oca_key, Usage::OCA).unwrap();
    let oca = oca_c;
    let mut pek = p.pek_csr().unwrap();
    pek.sign_with(&oca_key, Usage::OCA).unwrap();
    let mut wrong = pek.clone();
    wrong.pubkey[0x10] ^= 1;
    assert_eq!(
        p.pek_cert_import(&wrong, &oca).unwrap_err().status(),
        Some(Status::BadSignature),
        "the body changed after the OCA signed it (sev_cert_validate_sig)"
    );
    p.pek_cert_import(&pek, &oca).unwrap();
    assert_eq!(
        p.pek_cert_import(&pek, &oca).unwrap_err().status(),
        Some(Status::AlreadyOwned)
    );
    let owned = p.export_chain().unwrap();
    assert_eq!(owned.oca, oca.encode());
    assert_ne!(owned.pdh, before.pdh, "PDH regenerated on import");
    verify_full(&FullChain::parse(&owned.to_bytes()).unwrap(), None)
        .expect("owned chain verifies (PEK by our OCA and the CEK)");
    // Survives reopen.
    let p2 = SoftPlatform::open(d.path()).unwrap();
    p2.pdh_gen().unwrap();
    let _ = p2.platform_status().unwrap();
    p.factory_reset().unwrap();
    let after = SoftPlatform::open(d.path())
        .unwrap()
        .export_chain()
        .unwrap();
    assert_eq!(
        (after.cek.clone(), after.ark.clone(), after.ask.clone()),
        (before.cek.clone(), before.ark.clone(), before.ask.clone())
    );
    assert_ne!(after.oca, owned.oca);
    assert_ne!(after.pek, before.pek);
    assert_eq!(
        SoftPlatform::open(d.path()).unwrap().cbit_pos().unwrap(),
        51
    );
    assert_eq!(
        SoftPlatform::open(d.path()).unwrap().get_id().unwrap(),
        p.get_id().unwrap()
    );
    verify_full(&FullChain::parse(&after.to_bytes()).unwrap(), None).unwrap();
}
