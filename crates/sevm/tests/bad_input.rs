//! Bad input never panics: each error names the argument or file at fault and exits non-zero.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn measure_args(tik: &str, policy: &str, nonce: &str) -> Vec<String> {
    [
        "owner",
        "measure",
        "--launch-digest",
        SHA256_EMPTY,
        "--api-major",
        "0",
        "--api-minor",
        "24",
        "--build-id",
        "0x11",
        "--policy",
        policy,
        "--tik",
        tik,
        "--nonce",
        nonce,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const TIK: &str = "AAECAwQFBgcICQoLDA0ODw==";
const NONCE: &str = "ICEiIyQlJicoKSorLC0uLw==";

/// A LAUNCH_MEASURE blob (48 bytes, base64).
const BLOB: &str = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS";
const GUID: &str = "736869e5-84f0-4973-92ec-06879ce3da0b";

/// `sevm owner secret [--json]` with TIK as both keys, `blob`, one `--secret` and the
/// outputs `dir/h` and `dir/p`.
fn secret_cmd(json: bool, blob: &str, secret: &str, dir: &Path) -> Command {
    let mut c = sevm();
    c.args(["owner", "secret"]);
    if json {
        c.arg("--json");
    }
    c.args(["--tik", TIK, "--tek", TIK])
        .args(["--launch-measure-blob", blob, "--secret", secret])
        .arg(dir.join("h"))
        .arg(dir.join("p"));
    c
}

/// `sevm owner verify [--json]` of `blob` (API 0.24, build 17, digest of nothing) for `policy`.
fn verify_cmd(json: bool, policy: &str, blob: &str) -> Command {
    let mut c = sevm();
    c.args(["owner", "verify"]);
    if json {
        c.arg("--json");
    }
    c.args(["--tik", TIK, "--api-major", "0", "--api-minor", "24"])
        .args(["--build-id", "17", "--policy", policy])
        .args([
            "--launch-measure-blob",
            blob,
            "--launch-digest",
            SHA256_EMPTY,
        ]);
    c
}

#[test]
fn numbers_and_policy() {
    // Good: hex and decimal agree.
    let a = ok(sevm().args(measure_args(TIK, "0x10", NONCE)));
    let b = ok(sevm().args(measure_args(TIK, "16", NONCE)));
    assert_eq!(a, b);
    // Policy beyond 32 bits.
    let e = fails(sevm().args(measure_args(TIK, "0x100000000", NONCE)));
    assert!(e.contains("--policy") && e.contains("32 bits"), "{e}");
    let e = fails(sevm().args(measure_args(TIK, "banana", NONCE)));
    assert!(e.contains("--policy"), "{e}");
    // API fields are 8 bits.
    let mut v = measure_args(TIK, "1", NONCE);
    v[7] = "256".into();
    let e = fails(sevm().args(v));
    assert!(e.contains("--api-minor") && e.contains("8 bits"), "{e}");
}

#[test]
fn base64_and_key_lengths() {
    let e = fails(sevm().args(measure_args("not*base64", "1", NONCE)));
    assert!(e.contains("--tik") && e.contains("base64"), "{e}");
    let e = fails(sevm().args(measure_args("AAECAwQFBgcICQoLDA0O", "1", NONCE)));
    assert!(
        e.contains("--tik") && e.contains("16") && e.contains("15"),
        "{e}"
    );
    let e = fails(sevm().args(measure_args(TIK, "1", "AAAA")));
    assert!(e.contains("--nonce"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let tik = dir.path().join("short-tik.bin");
    std::fs::write(&tik, [0u8; 17]).unwrap();
    let e = fails(sevm().args(measure_args(tik.to_str().unwrap(), "1", NONCE)));
    assert!(e.contains("--tik") && e.contains("got 17"), "{e}");
    // Bad digest.
    let mut v = measure_args(TIK, "1", NONCE);
    v[3] = "abcd".into();
    let e = fails(sevm().args(v));
    assert!(e.contains("--launch-digest"), "{e}");
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = fails(&mut measure_firmware(dir.path().join("no-such-ovmf.fd")));
    assert!(
        e.contains("--firmware") && e.contains("no-such-ovmf.fd"),
        "{e}"
    );
    let e = fails(
        measure_firmware(samples().join("sample-ovmf.fd"))
            .arg("--kernel")
            .arg(dir.path().join("no-such-kernel")),
    );
    assert!(
        e.contains("--kernel") && e.contains("no-such-kernel"),
        "{e}"
    );
    // A VMSA of the wrong size.
    let v = dir.path().join("short.vmsa");
    std::fs::write(&v, [0u8; 100]).unwrap();
    let e = fails(
        measure_firmware(samples().join("sample-ovmf.fd"))
            .args(["--num-cpus", "1", "--vmsa-cpu0"])
            .arg(&v),
    );
    assert!(e.contains("--vmsa-cpu0") && e.contains("short.vmsa"), "{e}");
}

#[test]
fn secret_specs() {
    let dir = tempfile::tempdir().unwrap();
    let base = |secret: &str| secret_cmd(false, BLOB, secret, dir.path());
    let e = fails(&mut base("not-a-uuid:/etc/hostname"));
    assert!(e.contains("--secret") && e.contains("UUID"), "{e}");
    let e = fails(&mut base("no-colon"));
    assert!(e.contains("--secret"), "{e}");
    let e = fails(&mut base(&format!("{GUID}:/no/such/secret.txt")));
    assert!(
        e.contains("--secret") && e.contains("/no/such/secret.txt"),
        "{e}"
    );
    // A launch-measure blob of the wrong length.
    let e = fails(&mut secret_cmd(
        false,
        TIK,
        &format!("{GUID}:/etc/hostname"),
        dir.path(),
    ));
    assert!(
        e.contains("--launch-measure-blob") && e.contains("48"),
        "{e}"
    );
}

#[test]
fn verify_explains_a_mismatch() {
    let blob = ok(sevm().args(measure_args(TIK, "1", NONCE)));
    let out = ok(&mut verify_cmd(false, "1", &blob));
    assert!(out.contains("OK"), "{out}");
    let e = fails(&mut verify_cmd(false, "3", &blob));
    assert!(e.contains("MISMATCH") && e.contains("policy"), "{e}");
    let j = verify_cmd(true, "3", &blob).output().unwrap();
    assert_eq!(j.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn json_on_every_owner_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let fw = samples().join("sample-ovmf.fd");
    let v = ok_json(
        sevm()
            .args(["owner", "measure", "--json", "--firmware"])
            .arg(&fw),
    );
    assert_eq!(v["launch_digest"].as_str().unwrap().len(), 64);
    let digest = v["launch_digest"].as_str().unwrap().to_string();
    let v = ok_json(sevm().args(measure_args(TIK, "1", NONCE)).arg("--json"));
    let blob = v["launch_measure_blob"].as_str().unwrap().to_string();
    let v = ok_json(&mut verify_cmd(true, "1", &blob));
    assert_eq!(v["ok"], true);
    std::fs::write(dir.path().join("s.txt"), b"x").unwrap();
    let secret = format!("{GUID}:{}", dir.path().join("s.txt").display());
    let v = ok_json(&mut secret_cmd(true, &blob, &secret, dir.path()));
    assert_eq!(v["ok"], true);
    assert_eq!(v["payload_len"], 48);
    assert_ne!(digest, "");
    // Errors under --json are JSON too, with a non-zero exit.
    let o = sevm()
        .args(["owner", "measure", "--json", "--firmware"])
        .arg(dir.path().join("missing.fd"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("missing.fd"));
}

#[test]
fn es_policy_needs_vmsas() {
    let e = fails(
        measure_firmware(samples().join("sample-ovmf.fd"))
            .args([
                "--tik",
                TIK,
                "--nonce",
                NONCE,
                "--api-major",
                "0",
                "--api-minor",
                "24",
            ])
            .args(["--build-id", "1", "--policy", "0x5"]),
    );
    assert!(e.contains("ES") && e.contains("--vmsa-cpu0"), "{e}");
}

/// `--disk`, `--net`, `--vsock`: every bad spec names the option and key; devices are refused
/// for guests that cannot use them; nothing starts a VM (no /dev/kvm needed).
#[test]
fn virtio_device_options_are_checked_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let disk = format!("path={}", img.display());
    let kernel = t.path().join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    for (args, says) in [
        (vec!["--disk", "readonly=on"], "path=FILE is required"),
        (vec!["--disk", "path=/nonexistent/d.img"], "no such file"),
        (
            vec!["--disk", &disk, "--disk", "path=x,bad=1"],
            "unknown key `bad`",
        ),
        (vec!["--net", "tap=t0,mac=zz"], "--net"),
        (vec!["--vsock", "cid=2,uds=/tmp/x"], "cid must be 3 or more"),
        (
            vec!["--guest", "hello", "--disk", &disk],
            "need a Linux guest",
        ),
    ] {
        let mut c = sevm();
        c.arg("run").args(&args);
        let e = fails(&mut c);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let seven: Vec<String> = (0..7)
        .flat_map(|_| ["--disk".to_string(), disk.clone()])
        .collect();
    let mut c = sevm();
    c.args(["run", "--kernel"]).arg(&kernel).args(&seven);
    let e = fails(&mut c);
    assert!(e.contains("at most 6"), "{e}");
    // The TOML file's `disk` key and `--disk` together: refused, neither overrides.
    let toml = t.path().join("vm.toml");
    std::fs::write(&toml, format!("disk = [\"{disk}\"]\n")).unwrap();
    let mut c = sevm();
    c.args(["run", "--kernel"])
        .arg(&kernel)
        .arg("--config")
        .arg(&toml)
        .args(["--disk", &disk]);
    let e = fails(&mut c);
    assert!(e.contains("--disk and the key `disk`"), "{e}");
}
