//! `sevm run` of SEV-SNP guests on the soft backend and `sevm owner snp measure --vmm sevm`:
//! the owner's prediction equals the measurement the launch reports (one code path), bad
//! `sev-snp-guest` options and `--report-data` are refused naming the option, and
//! `--report-out` needs a report the guest left.
//!
//! Runs that need /dev/kvm print `SKIP:` without it (failures when `CI` is set).

mod common;

use std::path::Path;

use common::{b64, fails, ok, ok_json, run, sevm};

fn snp_object(extra: &str) -> String {
    format!("sev-snp-guest,id=snp0,reduced-phys-bits=1{extra}")
}

fn run_snp(dir: &Path, cpus: u8, extra: &str) -> std::process::Command {
    let mut c = sevm();
    c.args(["run", "--guest", "hello", "--memory", "16M", "--cpus"])
        .arg(cpus.to_string())
        .args(["--object", &snp_object(extra)])
        .args([
            "--machine",
            "confidential-guest-support=snp0",
            "--platform-dir",
        ])
        .arg(dir.join("plat"));
    c
}

fn measured(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split("measurement ").nth(1))
        .unwrap_or_else(|| panic!("no measurement line in:\n{stderr}"))
        .trim()
        .to_string()
}

#[test]
fn owner_prediction_equals_the_soft_launch_for_one_and_two_vcpus() {
    if !common::kvm() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for cpus in [1u8, 2] {
        let host = format!(",host-data={}", b64(&[0x5a; 32]));
        let (o, so, se) = run(&mut run_snp(t.path(), cpus, &host));
        assert!(o.status.success(), "{so}\n{se}");
        assert!(so.contains("hello from the sevm bundled guest"), "{so}");
        let got = measured(&se);
        let want = ok(sevm()
            .args([
                "owner", "snp", "measure", "--vmm", "sevm", "--guest", "hello", "--memory", "16M",
                "--policy", "0x30000", "--vcpus",
            ])
            .arg(cpus.to_string()));
        assert_eq!(got, want, "{cpus} vCPUs");
        seen.push(want);
    }
    assert_ne!(seen[0], seen[1], "one VMSA per vCPU");
    // --dump-launch: every PAGE_INFO, the last ones the VMSAs, the final LD the digest.
    let j = ok_json(sevm().args([
        "--json",
        "owner",
        "snp",
        "measure",
        "--vmm",
        "sevm",
        "--guest",
        "hello",
        "--memory",
        "16M",
        "--vcpus",
        "2",
        "--dump-launch",
    ]));
    let pages = j["pages"].as_array().unwrap();
    let n = pages.len();
    assert_eq!(pages[n - 1]["source"], "vmsa");
    assert_eq!(pages[n - 2]["vcpu"], 0);
    assert_eq!(pages[n - 1]["gpa"], "0xfffffffff000");
    assert_eq!(pages[n - 1]["ld"], j["measurement"]);
    assert_eq!(j["measurement"].as_str().unwrap(), seen[1]);
    assert!(pages.iter().any(|p| p["page_type"] == "SECRETS"));
    assert!(pages.iter().any(|p| p["page_type"] == "CPUID"));
}

#[test]
fn bad_snp_options_are_refused_naming_the_option() {
    let t = tempfile::tempdir().unwrap();
    for (extra, says) in [
        (format!(",id-block={}", b64(&[0; 95])), "key `id-block`"),
        (format!(",host-data={}", b64(&[0; 33])), "key `host-data`"),
        (",policy=0x10000".to_string(), "bit 17"),
        (",policy=0x430000".to_string(), "does not support"),
        (",id-auth=%%%".to_string(), "not base64"),
    ] {
        let e = fails(
            sevm()
                .args(["config", "check", "--guest", "hello", "--memory", "16M"])
                .args(["--object", &snp_object(&extra)])
                .args([
                    "--machine",
                    "confidential-guest-support=snp0",
                    "--platform-dir",
                ])
                .arg(t.path().join("plat")),
        );
        assert!(
            e.contains(says) && e.contains("--object sev-snp-guest"),
            "{extra}: {e}"
        );
    }
    for (rd, says) in [
        ("abcd", "2 bytes given"),
        ("zz", "not hex"),
        (&"00".repeat(65), "65 bytes given"),
    ] {
        let e = fails(run_snp(t.path(), 1, "").args(["--report-data", rd]));
        assert!(e.contains("--report-data") && e.contains(says), "{rd}: {e}");
    }
    let e = fails(sevm().args(["run", "--guest", "hello", "--report-data", &"00".repeat(64)]));
    assert!(e.contains("needs an SEV-SNP guest"), "{e}");
    let e = fails(sevm().args([
        "owner", "snp", "measure", "--vmm", "sevm", "--guest", "nope", "--vcpus", "1",
    ]));
    assert!(e.contains("--guest nope"), "{e}");
}

#[test]
fn snp_certs_with_a_wrong_chain_is_refused_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs");
    // The soft platform's export, with the ASK of another platform.
    ok(sevm()
        .args(["platform", "snp", "--platform-dir"])
        .arg(t.path().join("a"))
        .arg("export")
        .arg(&certs));
    ok(sevm()
        .args(["platform", "snp", "--platform-dir"])
        .arg(t.path().join("b"))
        .arg("export")
        .arg(t.path().join("other")));
    for ext in ["pem", "der"] {
        let _ = std::fs::remove_file(certs.join(format!("ask.{ext}")));
    }
    std::fs::copy(t.path().join("other/ask.pem"), certs.join("ask.pem")).unwrap();
    let e = fails(run_snp(t.path(), 1, "").arg("--snp-certs").arg(&certs));
    assert!(
        e.contains("--snp-certs") && e.contains("ask.pem") && e.contains("not signed by"),
        "{e}"
    );
}

#[test]
fn report_out_without_a_report_says_so() {
    if !common::kvm() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("r.bin");
    let e = fails(
        run_snp(t.path(), 1, "")
            .args(["--report-data", &"11".repeat(64), "--report-out"])
            .arg(&out),
    );
    assert!(
        e.contains("--report-out") && e.contains("left no report"),
        "{e}"
    );
    assert!(!out.exists());
}

/// A guest reset relaunches: a new context (fresh VMPCKs in a new secrets page), the images
/// measured again, the same measurement; the `reset` guest boots four times, then exits 0.
#[test]
fn reset_relaunches_with_the_same_measurement() {
    if !common::kvm() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut c = sevm();
    c.args([
        "run",
        "--guest",
        "reset",
        "--memory",
        "16M",
        "--timeout",
        "60",
    ])
    .args(["--object", &snp_object("")])
    .args([
        "--machine",
        "confidential-guest-support=snp0",
        "--platform-dir",
    ])
    .arg(t.path().join("plat"));
    let (o, so, se) = run(&mut c);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("boot 04") && so.contains("done"), "{so}");
    let want = ok(sevm().args([
        "owner", "snp", "measure", "--vmm", "sevm", "--guest", "reset", "--memory", "16M",
        "--vcpus", "1",
    ]));
    assert_eq!(measured(&se), want);
}

/// `guest-channel` in a TOML `[sev-snp]` table: `config check` reports it (resolved against
/// the file's directory) and refuses what `run` would (an existing path, a missing directory).
#[test]
fn config_check_reports_and_checks_the_tomls_guest_channel() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("vm.toml");
    let write = |ch: &str| {
        std::fs::write(
            &f,
            format!(
                "guest = \"hello\"\nmemory = \"16M\"\n[sev-snp]\nplatform-dir = \"plat\"\n\
                 guest-channel = \"{ch}\"\n"
            ),
        )
        .unwrap()
    };
    write("ch.sock");
    let j = ok_json(
        sevm()
            .args(["--json", "config", "check", "--config"])
            .arg(&f),
    );
    assert_eq!(
        j["sev-snp"]["guest-channel"].as_str(),
        Some(t.path().join("ch.sock").to_str().unwrap())
    );
    std::fs::write(t.path().join("ch.sock"), b"").unwrap();
    let e = fails(sevm().args(["config", "check", "--config"]).arg(&f));
    assert!(
        e.contains("ch.sock") && e.contains("the path exists"),
        "{e}"
    );
    write("nodir/ch.sock");
    let e = fails(sevm().args(["config", "check", "--config"]).arg(&f));
    assert!(e.contains("nodir") && e.contains("not a directory"), "{e}");
    write("");
    let e = fails(sevm().args(["config", "check", "--config"]).arg(&f));
    assert!(
        e.contains("key `guest-channel`") && e.contains("a socket path"),
        "{e}"
    );
}
