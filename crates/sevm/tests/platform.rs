//! `sevm platform` on the soft backend, and interop with the real sevctl 0.6.2:
//! `sevctl verify` accepts our export, `sevctl provision`-style ownership through
//! `sevm platform provision` with a `sevctl generate` OCA, and a session made by
//! `sevctl session` on our PDH is accepted by the soft firmware's LAUNCH_START and unwraps to
//! the TEK/TIK sevctl wrote.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, LaunchOwner, PacketHeader, SevGuest, SevPlatform};

fn plat(dir: &Path) -> Command {
    let mut c = sevm();
    c.args(["platform", "--platform-dir"]).arg(dir);
    c
}

/// `sevctl verify --sev SEV --ca CA`.
fn sevctl_verify(sevctl: &Path, sev: &Path, ca: &Path) -> Command {
    let mut c = Command::new(sevctl);
    c.args(["verify", "--sev"]).arg(sev).arg("--ca").arg(ca);
    c
}

/// `sevctl generate CERT KEY`: a new OCA, which must succeed.
fn sevctl_generate(sevctl: &Path, cert: &Path, key: &Path) {
    ok(Command::new(sevctl).arg("generate").arg(cert).arg(key));
}

/// `sevm owner verify` of a LAUNCH_MEASURE `blob` of `platform` for `policy`, the owner's
/// TIK file and the launch `digest` (hex); it must succeed.
fn owner_verify(platform: &SoftPlatform, tik: &Path, blob: &[u8], digest: &str, policy: &str) {
    let st = platform.platform_status().unwrap();
    ok(sevm()
        .args(["owner", "verify", "--tik"])
        .arg(tik)
        .args([
            "--launch-measure-blob",
            &b64(blob),
            "--launch-digest",
            digest,
        ])
        .args(["--api-major", &st.api_major.to_string()])
        .args(["--api-minor", &st.api_minor.to_string()])
        .args(["--build-id", &st.build.to_string(), "--policy", policy]));
}

#[test]
fn status_id_export_reset() {
    let dir = tempfile::tempdir().unwrap();
    let pd = dir.path().join("platform");
    let s = ok_json(plat(&pd).args(["status", "--json"]));
    assert_eq!(s["api_major"], 0);
    assert_eq!(s["api_minor"], 24);
    assert_eq!(s["owner_external"], false);
    assert_eq!(s["state"], "Init");
    assert_eq!(s["config_es"], true);
    assert_eq!(s["cbit_pos"], 47);
    let id1 = ok(plat(&pd).arg("id"));
    assert_eq!(id1.len(), 128, "{id1}");
    let f = |n: &str| dir.path().join(n);
    ok(plat(&pd).arg("export").arg(f("sev.bin")));
    ok(plat(&pd).args(["export", "--full"]).arg(f("full.bin")));
    ok(plat(&pd).args(["export", "--ca"]).arg(f("ca.bin")));
    let sev = std::fs::read(f("sev.bin")).unwrap();
    let full = std::fs::read(f("full.bin")).unwrap();
    let ca = std::fs::read(f("ca.bin")).unwrap();
    assert_eq!(sev.len(), 4 * 2084);
    assert_eq!(full, [sev.clone(), ca.clone()].concat());
    // Our own verify-chain accepts it against the exported soft CA, and refuses it against
    // AMD's roots (the soft ARK is not AMD's).
    ok(sevm()
        .args(["owner", "verify-chain", "--ca"])
        .arg(f("ca.bin"))
        .arg(f("sev.bin")));
    fails(sevm().args(["owner", "verify-chain"]).arg(f("full.bin")));
    // PDH_GEN changes the PDH only; reset keeps the chip id.
    ok(plat(&pd).arg("pdh-gen"));
    ok(plat(&pd).arg("export").arg(f("sev2.bin")));
    let sev2 = std::fs::read(f("sev2.bin")).unwrap();
    assert_ne!(sev[..2084], sev2[..2084]);
    assert_eq!(sev[2084..], sev2[2084..]);
    ok(plat(&pd).arg("reset"));
    assert_eq!(ok(plat(&pd).arg("id")), id1);
    ok(plat(&pd).arg("export").arg(f("sev3.bin")));
    let sev3 = std::fs::read(f("sev3.bin")).unwrap();
    assert_ne!(
        sev3[..3 * 2084],
        sev2[..3 * 2084],
        "reset must renew OCA, PEK, PDH"
    );
    assert_eq!(
        sev3[3 * 2084..],
        sev2[3 * 2084..],
        "reset must keep the CEK"
    );
    ok(plat(&pd).arg("pek-gen"));
    ok(plat(&pd).arg("pek-csr").arg(f("csr.bin")));
    assert_eq!(std::fs::read(f("csr.bin")).unwrap().len(), 2084);
    // Bad files for pek-cert-import are named.
    std::fs::write(f("junk.cert"), [7u8; 100]).unwrap();
    let e = fails(
        plat(&pd)
            .arg("pek-cert-import")
            .arg(f("junk.cert"))
            .arg(f("csr.bin")),
    );
    assert!(e.contains("PEK_CERT") && e.contains("junk.cert"), "{e}");
}

#[test]
fn sevctl_verifies_our_export() {
    let Some(sevctl) = sevctl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pd = dir.path().join("platform");
    let f = |n: &str| dir.path().join(n);
    ok(plat(&pd).arg("export").arg(f("sev.bin")));
    ok(plat(&pd).args(["export", "--ca"]).arg(f("ca.bin")));
    let out = ok(&mut sevctl_verify(&sevctl, &f("sev.bin"), &f("ca.bin")));
    assert!(out.contains("PDH") && out.contains("ARK"), "{out}");
    // A tampered export is refused by sevctl too (so the check above means something).
    let mut bad = std::fs::read(f("sev.bin")).unwrap();
    bad[2084 + 30] ^= 1; // PEK public key
    std::fs::write(f("bad.bin"), &bad).unwrap();
    let (o, so, se) = run(&mut sevctl_verify(&sevctl, &f("bad.bin"), &f("ca.bin")));
    assert!(
        !o.status.success(),
        "sevctl accepted a tampered chain:\n{so}\n{se}"
    );
}

#[test]
fn provision_with_a_sevctl_generated_oca() {
    let Some(sevctl) = sevctl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pd = dir.path().join("platform");
    let f = |n: &str| dir.path().join(n);
    ok(plat(&pd).args(["export", "--ca"]).arg(f("ca.bin")));
    // Take ownership with an OCA made by `sevctl generate`.
    sevctl_generate(&sevctl, &f("oca.cert"), &f("oca.key"));
    ok(plat(&pd)
        .arg("provision")
        .arg(f("oca.cert"))
        .arg(f("oca.key")));
    let s = ok_json(plat(&pd).args(["status", "--json"]));
    assert_eq!(s["owner_external"], true);
    ok(plat(&pd).arg("export").arg(f("owned.bin")));
    let owned = std::fs::read(f("owned.bin")).unwrap();
    assert_eq!(
        owned[2 * 2084..3 * 2084],
        std::fs::read(f("oca.cert")).unwrap()[..]
    );
    ok(&mut sevctl_verify(&sevctl, &f("owned.bin"), &f("ca.bin")));
    ok(sevm()
        .args(["owner", "verify-chain", "--ca"])
        .arg(f("ca.bin"))
        .arg(f("owned.bin")));
    // A key that does not match the OCA certificate is refused, naming it.
    sevctl_generate(&sevctl, &f("oca2.cert"), &f("oca2.key"));
    let e = fails(
        plat(&pd)
            .arg("provision")
            .arg(f("oca.cert"))
            .arg(f("oca2.key")),
    );
    assert!(e.contains("OCA_KEY") && e.contains("oca2.key"), "{e}");
}

#[test]
fn sevctl_session_is_accepted_by_soft_launch_start() {
    let Some(sevctl) = sevctl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pd = dir.path().join("platform");
    let f = |n: &str| dir.path().join(n);
    ok(plat(&pd).arg("export").arg(f("sev.bin")));
    let policy = 0x1u32; // NODBG
    ok(Command::new(&sevctl)
        .current_dir(dir.path())
        .args(["session", "--name", "s"])
        .arg(f("sev.bin"))
        .arg(policy.to_string()));
    // sevctl's files decode as ours (the edge where an owner's files come in).
    let owner =
        LaunchOwner::from_bytes(&read_b64(&f("s_godh.b64")), &read_b64(&f("s_session.b64")))
            .expect("sevctl's GODH certificate and session decode");

    let platform = SoftPlatform::open(&pd).unwrap();
    let mut guest = platform.new_guest();
    guest.init(false).unwrap();
    guest
        .launch_start(GuestPolicy(policy), Some(&owner), 0)
        .expect("LAUNCH_START must accept sevctl's session");
    // Measure an image, then check the measurement with sevctl's TIK.
    let mut image = vec![0x5Au8; 8192];
    guest.register_region(0x10_0000, &mut image).unwrap();
    guest.launch_update_data(0x10_0000, &mut image).unwrap();
    let blob = guest.launch_measure().unwrap();
    let digest = hex::encode(openssl::sha::sha256(&[0x5Au8; 8192]));
    owner_verify(
        &platform,
        &f("s_tik.bin"),
        &blob,
        &digest,
        &policy.to_string(),
    );
    let blob_b64 = b64(&blob);
    // And the TEK: a secret packet built by sevctl with its TEK/TIK decrypts in the guest.
    std::fs::write(f("secret.txt"), b"sevctl-made-secret").unwrap();
    ok(Command::new(&sevctl)
        .args(["secret", "build", "--tik"])
        .arg(f("s_tik.bin"))
        .arg("--tek")
        .arg(f("s_tek.bin"))
        .args(["--launch-measure-blob", &blob_b64])
        .arg("--secret")
        .arg(format!(
            "736869e5-84f0-4973-92ec-06879ce3da0b:{}",
            f("secret.txt").display()
        ))
        .arg(f("hdr.bin"))
        .arg(f("payload.bin")));
    let hdr = PacketHeader::from_bytes(&std::fs::read(f("hdr.bin")).unwrap())
        .expect("sevctl's packet header decodes");
    let ct = std::fs::read(f("payload.bin")).unwrap();
    let mut dest = vec![0u8; ct.len()];
    guest
        .launch_secret(&hdr, &ct, 0x20_0000, &mut dest)
        .expect("LAUNCH_SECRET must accept sevctl's packet");
    let view = guest
        .host_view(0x20_0000, vm_memory::VolatileSlice::from(&mut dest[..]))
        .unwrap_or_default();
    let hay = [dest.clone(), view].concat();
    assert!(
        dest.windows(18).any(|w| w == b"sevctl-made-secret"),
        "secret plaintext not in guest memory: {}",
        hex::encode(&hay[..64.min(hay.len())])
    );
    // A session for another policy is refused (policy MAC).
    let mut g2 = platform.new_guest();
    g2.init(false).unwrap();
    assert!(g2.launch_start(GuestPolicy(0x3), Some(&owner), 0).is_err());
}

#[test]
fn default_platform_dir_is_under_the_data_dir() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let id = ok(sevm()
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", &data)
        .args(["platform", "id"]));
    assert_eq!(id.len(), 128);
    assert!(data.join("sevm/platform/sev-state.json").is_file());
}

#[test]
fn hw_backend_without_dev_sev_is_a_clear_error() {
    if Path::new("/dev/sev").exists() {
        eprintln!("SKIP: this machine has /dev/sev");
        return;
    }
    let e = fails(sevm().args(["platform", "--sev-backend", "hw", "status"]));
    assert!(e.contains("/dev/sev"), "{e}");
}

#[test]
fn our_session_against_our_platform() {
    let dir = tempfile::tempdir().unwrap();
    let pd = dir.path().join("platform");
    let f = |n: &str| dir.path().join(n);
    ok(plat(&pd).args(["export", "--full"]).arg(f("full.bin")));
    ok(plat(&pd).args(["export", "--ca"]).arg(f("ca.bin")));
    // Without a trusted root the soft chain is refused (its ARK is not AMD's)...
    let e = fails(
        sevm()
            .args(["owner", "session", "--out"])
            .arg(dir.path())
            .arg(f("full.bin"))
            .arg("0x1"),
    );
    assert!(e.contains("full.bin") || e.contains("generation"), "{e}");
    assert!(!f("vm_tek.bin").exists());
    // ...and accepted with --ca.
    let policy = 0x5u32; // NODBG | ES
    ok(sevm()
        .args(["owner", "session", "--name", "g", "--ca"])
        .arg(f("ca.bin"))
        .arg("--out")
        .arg(dir.path())
        .arg(f("full.bin"))
        .arg(format!("{policy:#x}")));
    let platform = SoftPlatform::open(&pd).unwrap();
    let mut guest = platform.new_guest();
    guest.init(true).unwrap();
    guest
        .launch_start(
            GuestPolicy(policy),
            Some(
                &LaunchOwner::from_bytes(
                    &read_b64(&f("g_godh.b64")),
                    &read_b64(&f("g_session.b64")),
                )
                .unwrap(),
            ),
            0,
        )
        .expect("LAUNCH_START must accept our session");
    let blob = guest.launch_measure().unwrap();
    owner_verify(&platform, &f("g_tik.bin"), &blob, SHA256_EMPTY, "5");
    let blob_b64 = b64(&blob);
    // A secret we build with our TEK/TIK lands in guest memory.
    std::fs::write(f("secret.txt"), b"our-own-secret-bytes").unwrap();
    ok(sevm()
        .args(["owner", "secret", "--tik"])
        .arg(f("g_tik.bin"))
        .arg("--tek")
        .arg(f("g_tek.bin"))
        .args(["--launch-measure-blob", &blob_b64, "--secret"])
        .arg(format!(
            "1e74f542-71dd-4d66-963e-ef4287ff173c:{}",
            f("secret.txt").display()
        ))
        .arg(f("h.bin"))
        .arg(f("p.bin")));
    let ct = std::fs::read(f("p.bin")).unwrap();
    let mut dest = vec![0u8; ct.len()];
    guest
        .launch_secret(
            &PacketHeader::from_bytes(&std::fs::read(f("h.bin")).unwrap()).unwrap(),
            &ct,
            0x30_0000,
            &mut dest,
        )
        .expect("LAUNCH_SECRET must accept our packet");
    assert!(dest.windows(20).any(|w| w == b"our-own-secret-bytes"));
    // The full chain with a different --ca is refused, naming the ARK link.
    let other = dir.path().join("other");
    ok(plat(&other).args(["export", "--ca"]).arg(f("other-ca.bin")));
    let e = fails(
        sevm()
            .args(["owner", "verify-chain", "--ca"])
            .arg(f("other-ca.bin"))
            .arg(f("full.bin")),
    );
    assert!(e.contains("ARK"), "{e}");
}
