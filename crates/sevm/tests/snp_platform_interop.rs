//! `sevm platform snp` and the soft SNP firmware against virtee's tools: `snpguest` 0.11
//! (`verify certs`, `verify attestation`, `generate id-block`) and the `sev` crate's
//! `Chain`/`AttestationReport` verification. Guests are launched at the soft firmware's raw
//! interface, on the same platform directory the CLI uses.
//! Without snpguest (PATH or ~/.cargo/bin): SKIP, or a failure when `CI` is set.

mod common;
use common::*;

use base64::Engine as _;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use serde_json::Value;
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpGuest, SoftSnpPlatform};
use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform};
use sev_firmware::Status;
use sev_proto::snp::measure::PageType;
use sev_proto::snp::msg::{self, ReportReq, ReportRsp};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::report::AttestationReport;
use sev_proto::snp::secrets::SecretsPage;
use std::path::Path;
use std::process::Command;

const POLICY: u64 = 0x30000;
const OK_LINES: [&str; 3] = [
    "The AMD ARK was self-signed!",
    "The AMD ASK was signed by the AMD ARK!",
    "The VCEK was signed by the AMD ASK!",
];

fn snp(dir: &Path) -> Command {
    let mut c = sevm();
    c.args(["--json", "platform", "snp", "--platform-dir"])
        .arg(dir);
    c
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn verify_certs(sg: &Path, dir: &Path) {
    let out = ok(Command::new(sg).args(["verify", "certs"]).arg(dir));
    for l in OK_LINES {
        assert!(out.contains(l), "missing {l:?} in:\n{out}");
    }
}

/// A guest launched on `p` (one NORMAL page of `fill` and the secrets page), not finished.
fn launch(p: &SoftSnpPlatform, fill: u8) -> (SoftSnpGuest, SecretsPage) {
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(POLICY)))
        .unwrap();
    let mut n = vec![fill; 4096];
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0x10_0000), &mut n)
        .unwrap();
    let mut s = vec![0u8; 4096];
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    (g, SecretsPage::from_bytes(&s).unwrap())
}

fn report(g: &mut SoftSnpGuest, sp: &SecretsPage, seqno: u64, data: [u8; 64]) -> AttestationReport {
    let req = ReportReq {
        report_data: data,
        vmpl: 0,
        key_sel: 0,
    };
    let mut m = msg::seal(&sp.vmpck[0], seqno, 5, 1, 0, &req.to_bytes()).unwrap();
    m.resize(4096, 0);
    let mut resp = vec![0u8; 4096];
    g.snp_guest_request(&m, &mut resp).unwrap();
    let (_h, pt) = msg::open(&sp.vmpck[0], &resp).unwrap();
    let rsp = ReportRsp::from_bytes(&pt).unwrap();
    assert_eq!(rsp.status, 0);
    rsp.report.unwrap()
}

fn open(dir: &Path) -> SoftSnpPlatform {
    let p = SoftSnpPlatform::open(dir, SoftSnpConfig::default()).unwrap();
    p.snp_init().unwrap();
    p
}

fn verify_attestation(sg: &Path, certs: &Path, report: &Path, extra: &[String]) -> (bool, String) {
    let (o, so, se) = run(Command::new(sg)
        .args(["verify", "attestation"])
        .arg(certs)
        .arg(report)
        .args(extra));
    (o.status.success(), format!("{so}{se}"))
}

#[test]
fn export_passes_snpguest_verify_certs_before_and_after_config_set_and_commit() {
    let Some(sg) = snpguest() else { return };
    let t = tempfile::tempdir().unwrap();
    let pd = t.path().join("platform");
    let (e1, e2, e3) = (
        t.path().join("e1"),
        t.path().join("e2"),
        t.path().join("e3"),
    );

    let s = json_of(&ok(snp(&pd).arg("status")));
    assert_eq!(s["state"], "INIT");
    let cur = s["current_tcb"]["raw"].as_str().unwrap().to_string();
    assert_eq!(s["reported_tcb"]["raw"], cur.as_str());
    assert_eq!(s["committed_tcb"]["raw"], cur.as_str());
    assert_eq!(hex::decode(s["raw"].as_str().unwrap()).unwrap().len(), 32);

    let x = json_of(&ok(snp(&pd).arg("export").arg(&e1)));
    assert_eq!(x["files"].as_array().unwrap().len(), 8);
    verify_certs(&sg, &e1);
    // DER and PEM hold the same certificates; certs.bin is the extended-report table of them.
    let table = std::fs::read(e1.join("certs.bin")).unwrap();
    let entries = sev_proto::snp::certs::parse_cert_table(&table).unwrap();
    let names = ["ark", "ask", "vcek"];
    assert_eq!(entries.len(), 3);
    for (e, n) in entries.iter().zip(names) {
        let der = std::fs::read(e1.join(format!("{n}.der"))).unwrap();
        assert_eq!(e.data, der, "{n}");
        let pem =
            openssl::x509::X509::from_pem(&std::fs::read(e1.join(format!("{n}.pem"))).unwrap())
                .unwrap();
        assert_eq!(pem.to_der().unwrap(), der, "{n}");
    }
    // snpguest also reads a DER-only directory.
    let deronly = t.path().join("der");
    std::fs::create_dir(&deronly).unwrap();
    for n in names {
        std::fs::copy(
            e1.join(format!("{n}.der")),
            deronly.join(format!("{n}.der")),
        )
        .unwrap();
    }
    verify_certs(&sg, &deronly);

    // config set: a lower reported TCB; the exported VCEK changes and still chains.
    let c = json_of(&ok(snp(&pd).args([
        "config",
        "set",
        "--bootloader",
        "2",
        "--microcode",
        "0x70",
    ])));
    let lower = u64::from_le_bytes([2, 0, 0, 0, 0, 0, 8, 0x70]);
    assert_eq!(c["reported_tcb"]["raw"], format!("0x{lower:016x}"));
    let tcb = json_of(&ok(snp(&pd).arg("tcb")));
    assert_eq!(tcb["current_tcb"]["raw"], cur.as_str());
    assert_eq!(tcb["committed_tcb"]["raw"], cur.as_str());
    assert_eq!(tcb["reported_tcb"]["bootloader"], 2);
    ok(snp(&pd).arg("export").arg(&e2));
    verify_certs(&sg, &e2);
    let rd = |d: &Path, n: &str| std::fs::read(d.join(n)).unwrap();
    assert_ne!(rd(&e1, "vcek.der"), rd(&e2, "vcek.der"));
    assert_eq!(rd(&e1, "ark.der"), rd(&e2, "ark.der"));
    assert_eq!(rd(&e1, "ask.der"), rd(&e2, "ask.der"));
    let ext = sev_proto::snp::certs::VcekExtensions::from_der(&rd(&e2, "vcek.der")).unwrap();
    let et = ext.tcb(sev_proto::snp::tcb::TcbLayout::MilanGenoa).unwrap();
    assert_eq!((et.bootloader, et.microcode, et.snp), (2, 0x70, 8));

    // A report from a guest on this platform verifies against e2 (its reported TCB), not e1.
    let p = open(&pd);
    let (mut g, sp) = launch(&p, 0x11);
    g.snp_launch_finish(&SnpLaunchFinish::default()).unwrap();
    let r = report(&mut g, &sp, 1, [3; 64]);
    assert_eq!(r.reported_tcb, lower);
    let rf = t.path().join("report.bin");
    std::fs::write(&rf, r.to_bytes().unwrap()).unwrap();
    let (good, out) = verify_attestation(&sg, &e2, &rf, &[]);
    assert!(good, "{out}");
    let (good, out) = verify_attestation(&sg, &e1, &rf, &[]);
    assert!(!good, "the VCEK of another TCB accepted the report:\n{out}");
    drop((g, p));

    // Above the committed TCB: refused, naming the command and status; nothing changes.
    let e = fails(snp(&pd).args(["config", "set", "--bootloader", "9"]));
    assert!(
        e.contains("SNP_CONFIG") && e.contains("INVALID_PARAM"),
        "{e}"
    );
    let e = fails(snp(&pd).args(["config", "set", "--snp", "nine"]));
    assert!(e.contains("--snp"), "{e}");
    let tcb2 = json_of(&ok(snp(&pd).arg("tcb")));
    assert_eq!(tcb2["reported_tcb"], tcb["reported_tcb"]);

    // reset, then a newer firmware and COMMIT: a newer VCEK, still chaining.
    let c = json_of(&ok(snp(&pd).args(["config", "reset"])));
    assert_eq!(c["reported_tcb"]["raw"], cur.as_str());
    let newer = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 9, 0x75]);
    ok(snp(&pd).args(["firmware-update", "--tcb", &format!("0x{newer:x}")]));
    let s = json_of(&ok(snp(&pd).arg("status")));
    assert_eq!(s["current_tcb"]["raw"], format!("0x{newer:016x}"));
    assert_eq!(s["reported_tcb"]["raw"], cur.as_str());
    let c = json_of(&ok(snp(&pd).arg("commit")));
    assert_eq!(c["committed_tcb"]["raw"], format!("0x{newer:016x}"));
    ok(snp(&pd).arg("export").arg(&e3));
    verify_certs(&sg, &e3);
    assert_ne!(rd(&e1, "vcek.der"), rd(&e3, "vcek.der"));
    let e = fails(snp(&pd).args(["firmware-update", "--tcb", &cur]));
    assert!(e.contains("BAD_SVN"), "{e}");
}

#[test]
fn soft_report_passes_snpguest_and_sev_crate_and_tampering_fails() {
    let Some(sg) = snpguest() else { return };
    let t = tempfile::tempdir().unwrap();
    let pd = t.path().join("platform");
    let certs = t.path().join("certs");
    ok(snp(&pd).arg("export").arg(&certs));
    let p = open(&pd);
    let (mut g, sp) = launch(&p, 0x22);
    let ld = g.launch_digest();
    let host_data = [0xA5; 32];
    g.snp_launch_finish(&SnpLaunchFinish {
        host_data,
        ..SnpLaunchFinish::default()
    })
    .unwrap();
    let mut data = [0u8; 64];
    for (i, b) in data.iter_mut().enumerate() {
        *b = i as u8;
    }
    let r = report(&mut g, &sp, 1, data);
    let bytes = r.to_bytes().unwrap();
    let rf = t.path().join("report.bin");
    std::fs::write(&rf, bytes).unwrap();

    // No -p: snpguest decides the product from the report's CPUID fields.
    let (good, out) = verify_attestation(&sg, &certs, &rf, &[]);
    assert!(good, "{out}");
    assert!(
        out.contains("VEK signed the Attestation Report") || out.contains("signed"),
        "{out}"
    );
    let flags = |m: &[u8], d: &[u8], r: &[u8]| {
        vec![
            "-m".to_string(),
            format!("0x{}", hex::encode(m)),
            "-d".to_string(),
            format!("0x{}", hex::encode(d)),
            "-r".to_string(),
            format!("0x{}", hex::encode(r)),
        ]
    };
    let (good, out) = verify_attestation(&sg, &certs, &rf, &flags(&ld, &host_data, &data));
    assert!(good, "{out}");
    let mut wrong = ld;
    wrong[47] ^= 1;
    let (good, out) = verify_attestation(&sg, &certs, &rf, &flags(&wrong, &host_data, &data));
    assert!(!good, "a wrong -m passed:\n{out}");
    let (good, out) = verify_attestation(&sg, &certs, &rf, &flags(&ld, &[0; 32], &data));
    assert!(!good, "a wrong -d passed:\n{out}");

    // One flipped byte anywhere in the signed area (0x000-0x29F) fails.
    for pos in [
        0x08usize, 0x30, 0x48, 0x50, 0x8F, 0x90, 0xBF, 0xC0, 0x140, 0x1A0, 0x1E8, 0x29F,
    ] {
        let mut b = bytes;
        b[pos] ^= 0x01;
        let tf = t.path().join(format!("tampered-{pos:x}.bin"));
        std::fs::write(&tf, b).unwrap();
        let (good, out) = verify_attestation(&sg, &certs, &tf, &[]);
        assert!(
            !good,
            "byte 0x{pos:x} flipped, snpguest still accepts:\n{out}"
        );
    }

    // The virtee sev crate accepts the same report with the exported chain.
    use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
    use sev::firmware::guest::AttestationReport as VReport;
    use sev::parser::ByteParser;
    let cert = |n: &str| Certificate::from_pem(&std::fs::read(certs.join(n)).unwrap()).unwrap();
    let chain = Chain {
        ca: ca::Chain {
            ark: cert("ark.pem"),
            ask: cert("ask.pem"),
        },
        vek: cert("vcek.pem"),
    };
    (&chain).verify().unwrap();
    let vr = VReport::from_bytes(&bytes).unwrap();
    (&chain, &vr).verify().unwrap();
    let mut b = bytes;
    b[0x50] ^= 1;
    assert!((&chain, &VReport::from_bytes(&b).unwrap())
        .verify()
        .is_err());
}

/// `snpguest generate id-block` for `ld`, with `policy`; returns (ID block, ID auth).
fn snpguest_id_block(sg: &Path, dir: &Path, ld: &[u8; 48], policy: u64) -> (Vec<u8>, Vec<u8>) {
    let (idb, auth) = (dir.join("idblock.b64"), dir.join("auth.b64"));
    let _ = std::fs::remove_file(&idb);
    let _ = std::fs::remove_file(&auth);
    ok(Command::new(sg)
        .args(["generate", "id-block"])
        .args(["-f", &"01".repeat(16), "-m", &"02".repeat(16), "-s", "5"])
        .args(["-p", &format!("0x{policy:x}")])
        .arg("-i")
        .arg(&idb)
        .arg("-a")
        .arg(&auth)
        .arg(dir.join("id.pem"))
        .arg(dir.join("author.pem"))
        .arg(format!("0x{}", hex::encode(ld))));
    let d = |p: &Path| {
        base64::engine::general_purpose::STANDARD
            .decode(std::fs::read_to_string(p).unwrap().trim())
            .unwrap()
    };
    (d(&idb), d(&auth))
}

#[test]
fn snpguest_id_block_is_accepted_by_soft_launch_finish() {
    let Some(sg) = snpguest() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for n in ["id.pem", "author.pem"] {
        let k = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        std::fs::write(d.join(n), k.private_key_to_pem().unwrap()).unwrap();
    }
    std::fs::create_dir(d.join("platform")).unwrap();
    let p = open(&d.join("platform"));
    let (mut g, sp) = launch(&p, 0x33);
    let ld = g.launch_digest();
    let finish = |g: &mut SoftSnpGuest, b: &[u8], a: &[u8]| {
        g.snp_launch_finish(&SnpLaunchFinish {
            id_block: Some(b),
            id_auth: Some(a),
            auth_key_en: true,
            vcek_dis: false,
            host_data: [0; 32],
        })
    };
    let st = |r: sev_firmware::Result<()>| r.err().and_then(|e| e.status());

    // Wrong launch digest -> BAD_MEASUREMENT.
    let mut other = ld;
    other[0] ^= 0xFF;
    let (b, a) = snpguest_id_block(&sg, d, &other, POLICY);
    assert_eq!(st(finish(&mut g, &b, &a)), Some(Status::BadMeasurement));
    // Wrong policy -> POLICY_FAILURE.
    let (b, a) = snpguest_id_block(&sg, d, &ld, 0xB0000);
    assert_eq!(st(finish(&mut g, &b, &a)), Some(Status::PolicyFailure));
    // The right one, with a flipped signature byte -> BAD_SIGNATURE (ID key's and author's).
    let (b, a) = snpguest_id_block(&sg, d, &ld, POLICY);
    assert_eq!((b.len(), a.len()), (0x60, 0x1000));
    // (Bytes 0x00/0x04 are the key algorithms: a wrong one is INVALID_PARAM.)
    let mut algo = a.clone();
    algo[0x04] ^= 1;
    assert_eq!(st(finish(&mut g, &b, &algo)), Some(Status::InvalidParam));
    for pos in [0x40usize, 0x90, 0x680, 0x6D0] {
        let mut bad = a.clone();
        bad[pos] ^= 1;
        assert_eq!(
            st(finish(&mut g, &b, &bad)),
            Some(Status::BadSignature),
            "auth byte 0x{pos:x}"
        );
    }
    // Accepted; the report carries the ID block's fields.
    finish(&mut g, &b, &a).unwrap();
    let r = report(&mut g, &sp, 1, [0; 64]);
    assert_eq!(
        (r.family_id, r.image_id, r.guest_svn),
        ([1; 16], [2; 16], 5)
    );
    assert!(r.author_key_en());
    assert_ne!(r.id_key_digest, [0; 48]);
    // And snpguest checks the key digests it would compute itself.
    let digest = |key: &str| {
        let f = d.join(format!("{key}.digest"));
        ok(Command::new(&sg)
            .args(["generate", "key-digest"])
            .arg(d.join(format!("{key}.pem")))
            .arg("-d")
            .arg(&f));
        std::fs::read_to_string(&f).unwrap().trim().to_string()
    };
    let (idd, authd) = (digest("id"), digest("author"));
    let norm = |s: &str| s.trim_start_matches("0x").to_ascii_lowercase();
    assert_eq!(norm(&idd), hex::encode(r.id_key_digest), "id key digest");
    assert_eq!(
        norm(&authd),
        hex::encode(r.author_key_digest),
        "author key digest"
    );
}

#[test]
fn platform_snp_cli_refuses_bad_input_clearly() {
    let t = tempfile::tempdir().unwrap();
    let pd = t.path().join("platform");
    // The hw backend goes to /dev/sev's SNP commands; on a host without SEV it says so.
    if !std::path::Path::new("/dev/sev").exists() {
        let e = fails(snp(&pd).args(["--sev-backend", "hw", "status"]));
        assert!(
            e.contains("/dev/sev") && e.contains("--sev-backend hw"),
            "{e}"
        );
    }
    let e = fails(snp(&pd).args(["--sev-backend", "hw", "export", "x"]));
    assert!(e.contains("/dev/sev") || e.contains("KDS"), "{e}");
    let e = fails(snp(&pd).args(["firmware-update", "--tcb", "0xZZ"]));
    assert!(e.contains("--tcb"), "{e}");
    // A reserved byte set in the Milan layout.
    let e = fails(snp(&pd).args(["firmware-update", "--tcb", "0x0000000100000000"]));
    assert!(e.contains("--tcb") && e.contains("reserved"), "{e}");
    let e = fails(snp(&pd).args(["config", "set", "--reported-tcb", "1", "--snp", "2"]));
    assert!(e.contains("--reported-tcb") || e.contains("--snp"), "{e}");
    let e = fails(snp(&pd).args(["config", "set", "--microcode", "256"]));
    assert!(e.contains("--microcode") && e.contains("8 bits"), "{e}");
    // The text output (no --json) decodes the status.
    let s = ok(sevm()
        .args(["platform", "snp", "--platform-dir"])
        .arg(&pd)
        .arg("status"));
    assert!(
        s.contains("state:         INIT") && s.contains("reported TCB:"),
        "{s}"
    );
    // A corrupt snp-config.json is named, with the field at fault.
    ok(snp(&pd).args(["config", "set", "--mask-chip-id"]));
    let cf = pd.join("snp-config.json");
    let good = std::fs::read_to_string(&cf).unwrap();
    assert!(good.contains("\"mask_chip_id\": true"), "{good}");
    std::fs::write(&cf, good.replace("\"version\": 1", "\"version\": 7")).unwrap();
    let e = fails(snp(&pd).arg("status"));
    assert!(
        e.contains("snp-config.json") && e.contains("version 7"),
        "{e}"
    );
}

/// `vlek-make` / `vlek-load` through the CLI: the blob loads (status says VLEK), `export`
/// writes the ASVK and VLEK certificates chaining to the exported ARK, a report of a guest on
/// the same platform directory is signed by the exported VLEK (SIGNING_KEY 1) and not by the
/// VCEK; an altered blob is refused naming `VLEK_WRAPPED.TAG`, a truncated one naming its
/// length. Needs no third-party tool.
#[test]
fn vlek_make_load_export_and_vlek_signed_reports() {
    let t = tempfile::tempdir().unwrap();
    let pd = t.path().join("platform");
    let blob = t.path().join("vlek.bin");
    let j = ok_json(snp(&pd).arg("vlek-make").arg(&blob));
    assert_eq!(j["ok"], true, "{j}");
    let bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes.len(), 0x1B0);
    let mut bad = bytes.clone();
    bad[0x40] ^= 1;
    let badf = t.path().join("bad.bin");
    std::fs::write(&badf, &bad).unwrap();
    let e = fails(snp(&pd).arg("vlek-load").arg(&badf));
    assert!(
        e.contains("VLEK_WRAPPED.TAG") && e.contains("BAD_MEASUREMENT"),
        "{e}"
    );
    std::fs::write(&badf, &bytes[..100]).unwrap();
    let e = fails(snp(&pd).arg("vlek-load").arg(&badf));
    assert!(e.contains("VLEK_WRAPPED") && e.contains("100"), "{e}");
    assert_eq!(ok_json(snp(&pd).arg("status"))["vlek_en"], false);
    let j = ok_json(snp(&pd).arg("vlek-load").arg(&blob));
    assert_eq!(j["command"], "SNP_VLEK_LOAD", "{j}");
    assert_eq!(ok_json(snp(&pd).arg("status"))["vlek_en"], true);
    let out = t.path().join("certs");
    let j = ok_json(snp(&pd).arg("export").arg(&out));
    let files = j["files"].to_string();
    assert!(
        files.contains("asvk.pem") && files.contains("vlek.der"),
        "{j}"
    );
    let pem =
        |n: &str| openssl::x509::X509::from_pem(&std::fs::read(out.join(n)).unwrap()).unwrap();
    let (ark, asvk, vlek, vcek) = (
        pem("ark.pem"),
        pem("asvk.pem"),
        pem("vlek.pem"),
        pem("vcek.pem"),
    );
    assert!(asvk.verify(&ark.public_key().unwrap()).unwrap());
    assert!(vlek.verify(&asvk.public_key().unwrap()).unwrap());
    let p = open(&pd);
    let (mut g, sp) = launch(&p, 3);
    g.snp_launch_finish(&SnpLaunchFinish::default()).unwrap();
    let r = report(&mut g, &sp, 1, [9; 64]);
    assert_eq!(r.signing_key(), 1);
    r.verify(&vlek.public_key().unwrap()).unwrap();
    assert!(r.verify(&vcek.public_key().unwrap()).is_err());
}
