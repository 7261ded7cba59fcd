//! Secrets never reach any output: the end-to-end flows run with every log at TRACE and
//! their output is searched for the TEK, TIK, the injected secret and the platform's private
//! keys (and, in the library flow, the owner's GODH private key, the ECDH shared secret and the
//! channel keys: master secret, KEK, KIK), as raw bytes, lower/upper hex, base64 and Rust's `{:?}` byte-array form.
//!
//! * library flow (in-process, a tracing subscriber at TRACE captures every event): soft
//!   platform, owner session, soft SEV launch (LAUNCH_START with the owner's GODH/session,
//!   UPDATE_DATA, MEASURE, SECRET, FINISH), a refused secret (bad MAC), platform commands;
//! * CLI flow (`sevm` with RUST_LOG=trace, stdout and stderr captured): `platform export`,
//!   `owner session`, `owner secret`, `platform status/pdh-gen`, `--json` variants, and
//!   `sevm demo` when KVM is usable.

#[path = "sev_common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, SevGuest, SevPlatform};
use sev_proto::cert::SevCert;
use sev_proto::measure::LaunchMeasure;

use common::{
    kvm_usable, kvm_usable_or_skip, owner_secret_args, session_files, unb64, Paused, Run, SEVM,
};

/// Every encoding of `secret` a careless log line could contain.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        b64.encode(secret).trim_end_matches('=').as_bytes().to_vec(),
        b64u.encode(secret).into_bytes(),
        format!("{secret:?}")
            .trim_end_matches(']')
            .as_bytes()
            .to_vec(),
        format!("{secret:02x?}")
            .trim_end_matches(']')
            .as_bytes()
            .to_vec(),
    ]
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 8 && hay.windows(needle.len()).any(|w| w == needle)
}

/// Panics if any encoding of any named secret occurs in `out`.
fn assert_clean(what: &str, out: &[u8], secrets: &[(&str, Vec<u8>)]) {
    for (name, s) in secrets {
        for (i, enc) in encodings(s).iter().enumerate() {
            assert!(
                !find(out, enc),
                "{what}: the {name} appears in the output (encoding #{i}: {})",
                String::from_utf8_lossy(enc)
            );
        }
    }
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The platform's private keys (DER) from its state file, and the raw scalars.
fn platform_private_keys(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sev-state.json")).unwrap()).unwrap();
    let mut v = Vec::new();
    for (name, field) in [
        ("PDH key", "pdh"),
        ("PEK key", "pek"),
        ("OCA key", "oca"),
        ("CEK key", "cek"),
    ] {
        if let Some(h) = j[field]["key"].as_str() {
            let der = hex::decode(h).unwrap();
            let k = openssl::ec::EcKey::private_key_from_der(&der).unwrap();
            v.push((name, k.private_key().to_vec()));
            v.push((name, der));
        }
    }
    for (name, field) in [("ASK key", "ask_key"), ("ARK key", "ark_key")] {
        let der = hex::decode(j[field].as_str().unwrap()).unwrap();
        let k = openssl::rsa::Rsa::private_key_from_der(&der).unwrap();
        v.push((name, k.d().to_vec()));
        v.push((name, der[der.len() - 64..].to_vec()));
    }
    v
}

#[test]
fn library_flows_at_trace_level_log_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("platform");
    let cap = Arc::new(Mutex::new(Vec::new()));
    let w = Capture(cap.clone());
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let secret_pt: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let mut channel: Vec<(&str, Vec<u8>)> = Vec::new();
    let (tek, tik) = tracing::subscriber::with_default(sub, || {
        tracing::info!("secrets test: capture works");
        let p = SoftPlatform::open(&dir).unwrap();
        p.pdh_gen().unwrap();
        let chain = p.export_chain().unwrap();
        let _ = p.platform_status().unwrap();
        let pdh = SevCert::parse(&chain.pdh).unwrap();
        let policy = 0x1u32;
        // The owner's side with a GODH key and nonce we know, so the ECDH secret and the
        // channel keys (master secret, KEK, KIK) can be searched for too.
        let godh_key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap(),
        )
        .unwrap();
        let nonce = [0x3cu8; 16];
        let sess = sev_proto::session::owner_session_with(
            &pdh,
            &godh_key,
            sev_proto::session::TransportKeys::random().unwrap(),
            &nonce,
            &[0x4du8; 16],
            policy,
        )
        .unwrap();
        let z = sev_proto::session::ecdh_shared_secret(&godh_key, &pdh.ec_public_key().unwrap())
            .unwrap();
        let ck = sev_proto::session::derive_channel_keys(&z, &nonce);
        channel.extend([
            ("GODH private key", godh_key.private_key().to_vec()),
            ("ECDH shared secret", z.to_vec()),
            ("master secret", ck.master.to_vec()),
            ("KEK", ck.kek.to_vec()),
            ("KIK", ck.kik.to_vec()),
        ]);
        // A careless developer's log line: Debug of the keys must be redacted.
        tracing::trace!(keys = ?sess.keys, "owner session keys");
        let mut g = p.new_guest();
        g.init(false).unwrap();
        g.launch_start(GuestPolicy(policy), Some(&sess.launch_owner()), 0)
            .unwrap();
        let gpa = 0x10_0000u64;
        let mut mem = vec![0x5au8; 0x2000];
        g.launch_update_data(gpa, &mut mem).unwrap();
        let lm = LaunchMeasure::from_bytes(&g.launch_measure().unwrap()).unwrap();
        let iv = [7u8; 16];
        // A packet with a bad MAC first: the refusal must not print keys either.
        let (mut bad_hdr, bad_ct) =
            sev_proto::secret::build_packet(&sess.keys, &lm.measure, iv, 0, &secret_pt).unwrap();
        bad_hdr.mac[0] ^= 1;
        let e = g
            .launch_secret(&bad_hdr, &bad_ct, gpa, &mut mem[..64])
            .unwrap_err();
        tracing::error!("refused as expected: {e} / {e:?}");
        let (hdr, ct) =
            sev_proto::secret::build_packet(&sess.keys, &lm.measure, iv, 0, &secret_pt).unwrap();
        g.launch_secret(&hdr, &ct, gpa, &mut mem[..64]).unwrap();
        g.launch_finish().unwrap();
        let _ = g.guest_status().unwrap();
        let _ = g.attestation_report([1u8; 16]).unwrap();
        g.decommission().unwrap();
        (sess.keys.tek, sess.keys.tik)
    });
    let out = cap.lock().unwrap().clone();
    assert!(
        find(&out, b"secrets test: capture works"),
        "the subscriber captured nothing"
    );
    let mut secrets = vec![
        ("TEK", tek.to_vec()),
        ("TIK", tik.to_vec()),
        ("secret", secret_pt.clone()),
    ];
    secrets.extend(channel);
    secrets.extend(platform_private_keys(&dir));
    assert_clean("library flows at TRACE", &out, &secrets);
    eprintln!(
        "library flows: {} bytes of TRACE output, {} secrets x {} encodings absent",
        out.len(),
        secrets.len(),
        encodings(&tek).len()
    );
}

fn run_sevm<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &mut Vec<u8>) -> std::process::Output {
    let o = Command::new(SEVM)
        .args(args)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    log.extend_from_slice(&o.stdout);
    log.extend_from_slice(&o.stderr);
    o
}

fn run_ok<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &mut Vec<u8>) {
    let o = run_sevm(args, log);
    assert!(
        o.status.success(),
        "sevm {}: {}",
        common::shown(args),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// In `tmp`: `platform export` of the chain (`chain.bin`) and the CA (`ca.bin`) of the
/// platform in `dir`, then `owner session --name vm` for policy 1 with them (`vm_*`), each
/// command line starting with `pre` (global options).
fn export_and_owner_session(tmp: &Path, dir: &str, pre: &[&str], log: &mut Vec<u8>) {
    let t = |n: &str| tmp.join(n).to_str().unwrap().to_string();
    let (chain, ca, out) = (t("chain.bin"), t("ca.bin"), t(""));
    for cmd in [
        &["platform", "--platform-dir", dir, "export", &chain][..],
        &["platform", "--platform-dir", dir, "export", "--ca", &ca],
        &[
            "owner", "session", "--name", "vm", "--out", &out, "--ca", &ca, &chain, "0x1",
        ],
    ] {
        run_ok(&[pre, cmd].concat(), log);
    }
}

#[test]
fn cli_flows_with_rust_log_trace_print_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let dir = t("platform");
    let mut log = Vec::new();
    for json in [false, true] {
        let j: &[&str] = if json { &["--json"] } else { &[] };
        let with_j = |rest: &[String]| -> Vec<String> {
            j.iter()
                .map(|s| s.to_string())
                .chain(rest.iter().cloned())
                .collect()
        };
        for verb in ["status", "pdh-gen"] {
            run_ok(
                &[j, &["platform", "--platform-dir", &dir, verb]].concat(),
                &mut log,
            );
        }
        export_and_owner_session(tmp.path(), &dir, j, &mut log);
        let secret = tmp.path().join("secret.bin");
        std::fs::write(
            &secret,
            b"passphrase: correct horse battery staple 0123456789",
        )
        .unwrap();
        // A made-up LAUNCH_MEASURE blob: `owner secret` only needs its MEASURE field.
        std::fs::write(tmp.path().join("lm.bin"), [0x3cu8; 48]).unwrap();
        let spec = format!("736869e5-84f0-4973-92ec-06879ce3da0b:{}", secret.display());
        let (hdr, payload) = (tmp.path().join("hdr.bin"), tmp.path().join("payload.bin"));
        let good = owner_secret_args(tmp.path(), "vm", &t("lm.bin"), &spec, &hdr, &payload);
        run_ok(&with_j(&good), &mut log);
        // Error paths: a wrong-length TEK, a missing file.
        std::fs::write(tmp.path().join("short.bin"), [1u8; 15]).unwrap();
        let mut bad = good.clone();
        let tek = bad.iter().position(|x| x == "--tek").unwrap() + 1;
        bad[tek] = t("short.bin");
        let bad = run_sevm(&with_j(&bad), &mut log);
        assert!(!bad.status.success());
    }
    let mut secrets = vec![
        ("TEK", std::fs::read(tmp.path().join("vm_tek.bin")).unwrap()),
        ("TIK", std::fs::read(tmp.path().join("vm_tik.bin")).unwrap()),
        (
            "secret",
            std::fs::read(tmp.path().join("secret.bin")).unwrap(),
        ),
    ];
    assert_eq!(secrets[0].1.len(), 16);
    secrets.extend(platform_private_keys(Path::new(&dir)));
    // The demo generates its own keys internally; its output must still carry no private
    // key of its platform directory.
    let demo_dir = t("demo-platform");
    if kvm_usable() {
        let mut demo_log = Vec::new();
        let o = run_sevm(&["demo", "--platform-dir", &demo_dir], &mut demo_log);
        assert!(
            o.status.success(),
            "sevm demo: {}",
            String::from_utf8_lossy(&demo_log)
        );
        assert_clean(
            "sevm demo",
            &demo_log,
            &platform_private_keys(Path::new(&demo_dir)),
        );
        log.extend_from_slice(&demo_log);
    } else {
        eprintln!("SKIP sevm demo: /dev/kvm is not usable");
    }
    assert_clean("sevm CLI with RUST_LOG=trace", &log, &secrets);
    eprintln!(
        "CLI flows: {} bytes of output, {} secrets x {} encodings absent",
        log.len(),
        secrets.len(),
        encodings(&secrets[0].1).len()
    );
}

/// The checker itself finds a secret in each encoding it claims to search for.
#[test]
fn the_checker_finds_each_encoding() {
    let s: Vec<u8> = (1..=16).collect();
    for enc in encodings(&s) {
        let mut out = b"log line: ".to_vec();
        out.extend_from_slice(&enc);
        out.extend_from_slice(b" end\n");
        let r = std::panic::catch_unwind(|| assert_clean("self-test", &out, &[("TEK", s.clone())]));
        assert!(r.is_err(), "missed {}", String::from_utf8_lossy(&enc));
    }
}

/// `sevm run --paused` on the soft backend with the owner's session, the secret built by
/// `sevm owner secret` and injected over stdin; the guest (secret-reader) proves it got the
/// secret by printing its SHA-256. Nothing of TEK, TIK or the secret appears in any output.
#[test]
fn sevm_run_with_an_injected_secret_prints_no_secret() {
    if !kvm_usable_or_skip("sevm_run_with_an_injected_secret_prints_no_secret") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let dir = t("platform");
    let mut log = Vec::new();
    export_and_owner_session(tmp.path(), &dir, &[], &mut log);
    let secret: Vec<u8> = b"disk passphrase: tr0ub4dor&3 / 9f8e7d6c5b4a".to_vec();
    std::fs::write(t("secret.bin"), &secret).unwrap();
    let mut cmd = Run::guest("secret-reader")
        .opt("--memory", "64M")
        .sev(1, &session_files(tmp.path(), "vm"))
        .platform(Path::new(&dir))
        .flag("--paused")
        .opt("--on-reset", "shutdown")
        .opt("--timeout", "120")
        .opt("--serial", "stdout")
        .command();
    cmd.env("RUST_LOG", "trace");
    let mut child = Paused::spawn(cmd);
    let measure = unb64(&child.measurement()).unwrap();
    assert_eq!(measure.len(), 48);
    std::fs::write(t("lm.bin"), &measure).unwrap();
    let spec = format!("736869e5-84f0-4973-92ec-06879ce3da0b:{}", t("secret.bin"));
    let (hdr, payload) = (tmp.path().join("hdr.bin"), tmp.path().join("payload.bin"));
    run_ok(
        &owner_secret_args(tmp.path(), "vm", &t("lm.bin"), &spec, &hdr, &payload),
        &mut log,
    );
    let mut err_log = child.before.clone();
    let end = child.inject(&hdr, &payload);
    err_log.extend_from_slice(&end.stderr);
    let (st, out) = (end.status, end.stdout);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        st.success(),
        "sevm run: {st:?}\n{text}\n{}",
        String::from_utf8_lossy(&err_log)
    );
    let sha = hex::encode(openssl::sha::sha256(&secret));
    assert!(
        text.contains(&format!("sha256={sha}")),
        "the guest did not receive the secret: {text}\n{}",
        String::from_utf8_lossy(&err_log)
    );
    log.extend_from_slice(&out);
    log.extend_from_slice(&err_log);
    let mut secrets = vec![
        ("TEK", std::fs::read(t("vm_tek.bin")).unwrap()),
        ("TIK", std::fs::read(t("vm_tik.bin")).unwrap()),
        ("secret", secret),
    ];
    secrets.extend(platform_private_keys(Path::new(&dir)));
    assert_clean("sevm run --paused with a secret", &log, &secrets);
    eprintln!(
        "sevm run with an injected secret: {} bytes of output, {} secrets absent",
        log.len(),
        secrets.len()
    );
}
