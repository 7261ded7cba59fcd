//! Issue 14's end-to-end check on the soft backend: `sevm run --guest snp-attest` with an SNP
//! object, `--report-data` and `--report-out`; the report the guest received passes
//! `snpguest verify attestation` against the chain `sevm platform snp export` writes, with
//! `-m` = `sevm owner snp measure --vmm sevm ...`, `-d` = the host data and `-r` = the report
//! data given, and `sevm owner snp verify-report` agrees on it and on a tampered copy. An ID
//! block from `snpguest generate id-block` launches; one for another digest is refused at
//! LAUNCH_FINISH in QEMU's error format.
//!
//! Needs /dev/kvm and snpguest: SKIP without them, a failure when `CI` is set.

mod common;

use common::{
    b64, kvm, ok, run, sevm, snp_attest_predicted, snp_attest_run, snp_verify_report, snpguest,
    snpguest_verify_attestation,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use std::path::Path;
use std::process::Command;

#[test]
fn snp_attest_report_verifies_with_snpguest_and_the_owner_tools() {
    if !kvm() {
        return;
    }
    let Some(sg) = snpguest() else { return };
    let t = tempfile::tempdir().unwrap();
    let (plat, certs, rep) = (
        t.path().join("plat"),
        t.path().join("certs"),
        t.path().join("r.bin"),
    );
    let report_data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
    let host_data: Vec<u8> = (0..32u8).map(|i| i ^ 0xa7).collect();
    let (rd, hd) = (hex::encode(&report_data), hex::encode(&host_data));

    let (o, so, se) = run(&mut snp_attest_run(
        &plat,
        false,
        &format!(",host-data={}", b64(&host_data)),
        &rd,
        &rep,
    ));
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("snp-attest: all checks passed"), "{so}");
    let report = std::fs::read(&rep).unwrap();
    assert_eq!(report.len(), 0x4a0, "the report as the guest received it");
    assert_eq!(&report[0x50..0x90], &report_data[..], "REPORT_DATA");

    ok(sevm()
        .args(["platform", "snp", "export", "--platform-dir"])
        .arg(&plat)
        .arg(&certs));
    let m = snp_attest_predicted();
    assert_eq!(
        &hex::encode(&report[0x90..0xc0]),
        &m,
        "MEASUREMENT = the owner's prediction"
    );

    let (good, out) = snpguest_verify_attestation(&sg, &certs, &rep, &m, &hd, &rd);
    assert!(good, "snpguest verify attestation: {out}");
    assert!(out.contains("VEK signed the Attestation Report"), "{out}");
    let (good, out) = snp_verify_report(&certs, &rep, &m, &hd, &rd);
    assert!(good, "sevm owner snp verify-report: {out}");

    // Wrong expectations are caught by both.
    let mut wrong_rd = report_data.clone();
    wrong_rd[63] ^= 1;
    assert!(!snpguest_verify_attestation(&sg, &certs, &rep, &m, &hd, &hex::encode(&wrong_rd)).0);
    assert!(!snp_verify_report(&certs, &rep, &m, &hd, &hex::encode(&wrong_rd)).0);

    // One flipped byte in the signed area (the policy, the measurement, the chip id): both refuse.
    for off in [0x08usize, 0x95, 0x1a5] {
        let mut bad = report.clone();
        bad[off] ^= 0x01;
        let tampered = t.path().join(format!("t{off:x}.bin"));
        std::fs::write(&tampered, &bad).unwrap();
        let (good, out) = snpguest_verify_attestation(&sg, &certs, &tampered, &m, &hd, &rd);
        assert!(
            !good,
            "snpguest accepted a report with byte {off:#x} flipped: {out}"
        );
        let (good, out) = snp_verify_report(&certs, &tampered, &m, &hd, &rd);
        assert!(!good, "verify-report accepted byte {off:#x} flipped: {out}");
        assert!(out.contains("FAIL"), "{out}");
    }
}

#[test]
fn snpguest_id_block_launches_and_a_wrong_one_is_refused_at_launch_finish() {
    if !kvm() {
        return;
    }
    let Some(sg) = snpguest() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for n in ["id.pem", "author.pem"] {
        let k = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        std::fs::write(d.join(n), k.private_key_to_pem().unwrap()).unwrap();
    }
    let id_block = |digest: &str, tag: &str| -> (String, String) {
        let (idb, auth) = (d.join(format!("{tag}.idb")), d.join(format!("{tag}.auth")));
        ok(Command::new(&sg)
            .args(["generate", "id-block", "-p", "0x30000", "-i"])
            .arg(&idb)
            .arg("-a")
            .arg(&auth)
            .arg(d.join("id.pem"))
            .arg(d.join("author.pem"))
            .arg(format!("0x{digest}")));
        let r = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
        (r(&idb), r(&auth))
    };
    let m = snp_attest_predicted();
    let (idb, auth) = id_block(&m, "good");
    let extra = format!(",id-block={idb},id-auth={auth},author-key-enabled=on");
    let rd = "00".repeat(64);
    let (o, so, se) = run(&mut snp_attest_run(
        &d.join("plat"),
        false,
        &extra,
        &rd,
        &d.join("r.bin"),
    ));
    assert!(o.status.success(), "{so}\n{se}");
    let report = std::fs::read(d.join("r.bin")).unwrap();
    assert_eq!(hex::encode(&report[0x90..0xc0]), m);
    assert_ne!(report[0xe0..0x110], [0u8; 0x30], "ID_KEY_DIGEST is set");
    assert_ne!(
        report[0x110..0x140],
        [0u8; 0x30],
        "AUTHOR_KEY_DIGEST is set"
    );

    let mut other = hex::decode(&m).unwrap();
    other[0] ^= 0xff;
    let (idb, auth) = id_block(&hex::encode(other), "bad");
    let extra = format!(",id-block={idb},id-auth={auth},author-key-enabled=on");
    let (o, so, se) = run(&mut snp_attest_run(
        &d.join("plat"),
        false,
        &extra,
        &rd,
        &d.join("r2.bin"),
    ));
    assert!(!o.status.success(), "{so}\n{se}");
    assert!(
        se.contains("SNP_LAUNCH_FINISH") && se.contains("fw_error=11"),
        "{se}"
    );
    assert!(
        !d.join("r2.bin").exists(),
        "no report from a refused launch"
    );
}
