//! `sevm run --paused`: the owner reads the measurement, builds a secret with `sevm owner
//! secret`, and sevm injects it before LAUNCH_FINISH; the guest reads it via the C-bit map.

#[path = "sev_common.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn paused_launch_takes_the_owners_secret_from_stdin() {
    if !kvm_or_skip("paused_launch_takes_the_owners_secret_from_stdin") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let plat = d.join("plat");
    let chain = export_chain(&plat, d);
    let o = sevm(&[
        "owner",
        "session",
        "--no-verify",
        "--name",
        "own",
        "--out",
        d.to_str().unwrap(),
        chain.to_str().unwrap(),
        "1",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let extra = format!(
        ",dh-cert-file={},session-file={}",
        d.join("own_godh.b64").display(),
        d.join("own_session.b64").display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sevm"))
        .args([
            "run",
            "--guest",
            "secret-reader",
            "--paused",
            "--object",
            &object(1, &extra),
            "--machine",
            "confidential-guest-support=sev0",
            "--platform-dir",
            plat.to_str().unwrap(),
            "--timeout",
            "60",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut blob = String::new();
    let mut seen = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("measured: ").nth(1) {
            blob = rest.split_whitespace().next().unwrap().to_string();
            break;
        }
    }
    assert!(!blob.is_empty(), "no measurement printed: {seen}");
    let secret = d.join("secret.bin");
    std::fs::write(&secret, b"0123456789abcdef-the-disk-passphrase").unwrap();
    let guid = "736869e5-84f0-4973-92ec-06879ce3da0b";
    let (hdr, payload) = (d.join("hdr.bin"), d.join("payload.bin"));
    let o = sevm(&[
        "owner",
        "secret",
        "--tik",
        d.join("own_tik.bin").to_str().unwrap(),
        "--tek",
        d.join("own_tek.bin").to_str().unwrap(),
        "--launch-measure-blob",
        &blob,
        "--secret",
        &format!("{guid}:{}", secret.display()),
        hdr.to_str().unwrap(),
        payload.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "owner secret: {:?}", text(&o));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{} {}", hdr.display(), payload.display()).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}\n{seen}{rest}");
    assert!(rest.contains("secret injected"), "{rest}");
    let want = hex::encode(openssl::sha::sha256(
        b"0123456789abcdef-the-disk-passphrase",
    ));
    assert!(
        out.contains(&format!("secret entry {guid} len=00000024 sha256={want}")),
        "{out}"
    );
}
