//! Known-answer vectors from `../shared/testdata/VECTORS.md` (B: measurement build, C: secret
//! build, A: the sev crate's measurement) and `sev-spec-notes.md` §10/§11, run through the CLI.

mod common;
use common::*;

const NONCE: &str = "wxP6tRHCFrFQWxsuqZA8QA==";

fn b_common(td: &std::path::Path) -> Vec<String> {
    vec![
        "owner".into(),
        "measure".into(),
        "--api-major".into(),
        "0x01".into(),
        "--api-minor".into(),
        "40".into(),
        "--build-id".into(),
        "40".into(),
        "--policy".into(),
        "0x03".into(),
        "--tik".into(),
        td.join("sevctl/measurement/tik1.bin").display().to_string(),
        "--nonce".into(),
        NONCE.into(),
    ]
}

fn ovmf(td: &std::path::Path) -> String {
    td.join("sevctl/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9")
        .display()
        .to_string()
}

#[test]
fn b1_launch_digest() {
    let Some(td) = testdata() else { return };
    let out = ok(sevm().args(b_common(&td)).args([
        "--launch-digest",
        "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM=",
    ]));
    assert_eq!(
        out,
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    );
}

#[test]
fn b2_firmware() {
    let Some(td) = testdata() else { return };
    let out = ok(sevm().args(b_common(&td)).args(["--firmware", &ovmf(&td)]));
    assert_eq!(
        out,
        "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"
    );
}

#[test]
fn b3_kernel_initrd_cmdline() {
    let Some(td) = testdata() else { return };
    let m = td.join("sevctl/measurement");
    let imgs = |cmd: &mut std::process::Command| {
        cmd.args(["--firmware", &ovmf(&td)])
            .arg("--kernel")
            .arg(m.join("vmlinuz-fake"))
            .arg("--initrd")
            .arg(m.join("initrd-fake"))
            .args(["--cmdline", "foo bar baz fake kernel=cmdline"]);
    };
    let mut c = sevm();
    c.args(b_common(&td));
    imgs(&mut c);
    assert_eq!(
        ok(&mut c),
        "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    );
    // The intermediate launch digest, printed alone without the HMAC parameters.
    let mut c = sevm();
    c.args(["owner", "measure"]);
    imgs(&mut c);
    assert_eq!(
        ok(&mut c),
        "4b47fec6f851487c33714c8a00a832a1b705ad0a7cac4a647388eccfa9f0c570"
    );
    // --json carries the same digest.
    let mut c = sevm();
    c.args(["owner", "measure", "--json"]);
    imgs(&mut c);
    let v: serde_json::Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(
        v["launch_digest"],
        "4b47fec6f851487c33714c8a00a832a1b705ad0a7cac4a647388eccfa9f0c570"
    );
}

#[test]
fn b4_sev_es() {
    let Some(td) = testdata() else { return };
    let expected = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny";
    // The firmware, TIK and the four vCPUs' VMSAs (two distinct: the BSP's and the APs').
    let es = |cmd: &mut std::process::Command| {
        cmd.args(["--firmware", &ovmf(&td)])
            .arg("--tik")
            .arg(td.join("sevctl/measurement/tik1.bin"))
            .args(["--num-cpus", "4"])
            .arg("--vmsa-cpu0")
            .arg(td.join("sevctl/vmsa0.bin"))
            .arg("--vmsa-cpu1")
            .arg(td.join("sevctl/vmsa1.bin"))
            .args(["--launch-measure-blob", expected]);
    };
    let mut c = sevm();
    c.args(["owner", "measure", "--api-major", "1", "--api-minor", "49"])
        .args(["--build-id", "6", "--policy", "0x05"]);
    es(&mut c);
    assert_eq!(ok(&mut c), expected);
    // And `verify` accepts it, with the same images.
    let mut c = sevm();
    c.args(["owner", "verify", "--api-major", "1", "--api-minor", "0x31"])
        .args(["--build-id", "6", "--policy", "5"]);
    es(&mut c);
    ok(&mut c);
}

/// `sevm owner measure --json` of `digest` (hex) for API 0.`api_minor`, `build`, `policy`,
/// the base64 `nonce` and `tik` (base64 or a file); returns the JSON `measurement`.
fn measurement(
    api_minor: &str,
    build: &str,
    policy: &str,
    nonce: &str,
    tik: &str,
    digest: &str,
) -> serde_json::Value {
    let v = ok_json(
        sevm()
            .args([
                "owner",
                "measure",
                "--json",
                "--api-major",
                "0",
                "--api-minor",
                api_minor,
            ])
            .args(["--build-id", build, "--policy", policy, "--nonce", nonce])
            .args(["--tik", tik, "--launch-digest", digest]),
    );
    v["measurement"].clone()
}

#[test]
fn a_sev_crate_measurement() {
    // TIK 66320db7..., API 0.18, build 0x0f, policy 0, digest SHA256(""), mnonce 4fbe0bed...
    let dir = tempfile::tempdir().unwrap();
    let tik = dir.path().join("tik.bin");
    std::fs::write(
        &tik,
        hex::decode("66320db73158a35a255d051758e95ed4").unwrap(),
    )
    .unwrap();
    let nonce = b64(&hex::decode("4fbe0bedbad6c86ae8f68971d103e554").unwrap());
    assert_eq!(
        measurement(
            "0x12",
            "0x0f",
            "0",
            &nonce,
            tik.to_str().unwrap(),
            SHA256_EMPTY
        ),
        "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
    );
}

#[test]
fn spec_notes_section11_measurement() {
    let tik = b64(&(0xb0u8..=0xbf).collect::<Vec<_>>());
    let nonce = b64(&(0x20u8..=0x2f).collect::<Vec<_>>());
    assert_eq!(
        measurement(
            "24",
            "17",
            "0x1",
            &nonce,
            &tik,
            "715c8d7364830bcc6760f917d5ebfed68f658da32c7c2a6a45d88680d22c28d6"
        ),
        "abe2f57694c28fac12bdd984b41631ea88b07c3167744ebf84236d0db307cf38"
    );
}

#[test]
fn sev_crate_launch_digests() {
    let Some(td) = testdata() else { return };
    let m = td.join("sev-crate/measurement");
    let amd = m.join("ovmf_AmdSev_suffix.bin");
    let out = ok(measure_firmware(&amd)
        .args(["--kernel", "/dev/null", "--initrd", "/dev/null"])
        .args(["--cmdline", "console=ttyS0 loglevel=7"]));
    assert_eq!(
        out,
        "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"
    );
    let out = ok(measure_firmware(&amd).args(["--kernel", "/dev/null"]));
    assert_eq!(
        out,
        "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898"
    );
    let out = ok(&mut measure_firmware(m.join("ovmf_OvmfX64_suffix.bin")));
    assert_eq!(
        out,
        "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"
    );
    // A plain OvmfX64 has no hashes area: direct boot must be refused, naming the file.
    let e =
        fails(measure_firmware(m.join("ovmf_OvmfX64_suffix.bin")).args(["--kernel", "/dev/null"]));
    assert!(
        e.contains("--firmware") && e.contains("ovmf_OvmfX64_suffix.bin"),
        "{e}"
    );
}

fn secret_cmd(
    td: &std::path::Path,
    secrets: &[&str],
    hdr: &std::path::Path,
    pay: &std::path::Path,
) -> std::process::Command {
    let s = td.join("sevctl/secret");
    let mut c = sevm();
    c.args(["owner", "secret", "--tik"])
        .arg(s.join("tik1.bin"))
        .arg("--tek")
        .arg(s.join("tek1.bin"))
        .args([
            "--launch-measure-blob",
            "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS",
            "--iv",
            "rFR07U3TLH2YnsUj2SVZ7A==",
        ]);
    for (uuid, file) in secrets.iter().map(|x| x.split_once(':').unwrap()) {
        c.arg("--secret")
            .arg(format!("{uuid}:{}", s.join(file).display()));
    }
    c.arg(hdr).arg(pay);
    c
}

#[test]
fn c_secret_build() {
    let Some(td) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (h, p) = (dir.path().join("hdr"), dir.path().join("pay"));
    ok(&mut secret_cmd(
        &td,
        &["736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt"],
        &h,
        &p,
    ));
    assert_file_b64(
        &h,
        "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q==",
    );
    assert_file_b64(
        &p,
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA==",
    );
    ok(&mut secret_cmd(
        &td,
        &[
            "736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt",
            "736869e5-aaaa-4973-92ec-06879ce3da0b:secret2.txt",
        ],
        &h,
        &p,
    ));
    assert_file_b64(
        &h,
        "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng==",
    );
    assert_file_b64(
        &p,
        "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe"
    );
    for f in ["secret3.txt", "secret4.txt"] {
        ok(&mut secret_cmd(
            &td,
            &[&format!("736869e5-84f0-4973-92ec-06879ce3da0b:{f}")],
            &h,
            &p,
        ));
        assert_eq!(std::fs::read(&p).unwrap().len(), 16384, "{f}");
        assert_eq!(std::fs::read(&h).unwrap().len(), 52, "{f}");
    }
}
