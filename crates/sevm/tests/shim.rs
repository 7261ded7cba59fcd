//! `sevm shim`: unmodified tools against the soft firmware through the LD_PRELOAD library.
//!
//! Needs `libsevm_shim.so` beside the sevm binary (`cargo build -p sevm -p sevm-shim`),
//! sevctl 0.6.2 and python3: missing ones fail under CI and are skipped (loud `SKIP:`)
//! elsewhere.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shim(pdir: &Path) -> Command {
    let mut c = sevm();
    c.arg("shim").arg("--platform-dir").arg(pdir).arg("--");
    c
}

/// Every file of the platform directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    m
}

/// The soft platform's chain as `sevm platform export` writes it: PDH, PEK, OCA, CEK.
fn chain(pdir: &Path, out: &Path) -> Vec<Vec<u8>> {
    ok(sevm()
        .args(["platform", "--platform-dir"])
        .arg(pdir)
        .args(["export"])
        .arg(out));
    let b = std::fs::read(out).unwrap();
    assert_eq!(b.len(), 4 * 2084, "export writes four SEV certificates");
    b.chunks(2084).map(|c| c.to_vec()).collect()
}

#[test]
fn sevctl_rotate_and_reset_change_the_platform_as_the_firmware_would() {
    let (Some(_), Some(sevctl)) = (shim_lib(), sevctl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    let c0 = chain(&pdir, &dir.path().join("c0"));

    // PDH_GEN through /dev/sev: a new PDH, same PEK and CEK.
    ok(shim(&pdir).arg(&sevctl).arg("rotate"));
    let c1 = chain(&pdir, &dir.path().join("c1"));
    assert_ne!(c1[0], c0[0], "sevctl rotate changed the PDH");
    assert_eq!(c1[1], c0[1], "sevctl rotate kept the PEK");
    assert_eq!(c1[3], c0[3], "sevctl rotate kept the CEK");

    // FACTORY_RESET: new PEK and PDH, the chip's CEK survives.
    ok(shim(&pdir).arg(&sevctl).arg("reset"));
    let c2 = chain(&pdir, &dir.path().join("c2"));
    assert_ne!(c2[0], c1[0], "sevctl reset changed the PDH");
    assert_ne!(c2[1], c1[1], "sevctl reset changed the PEK");
    assert_eq!(
        c2[3], c1[3],
        "sevctl reset kept the CEK (the chip identity)"
    );

    // The rotated chain still verifies against the soft CA with sevctl itself.
    let ca = dir.path().join("ca.cert");
    ok(sevm()
        .args(["platform", "--platform-dir"])
        .arg(&pdir)
        .args(["export", "--ca"])
        .arg(&ca));
    ok(Command::new(&sevctl)
        .args(["verify", "--sev"])
        .arg(dir.path().join("c2"))
        .arg("--ca")
        .arg(&ca));
}

#[test]
fn sevctl_show_reads_platform_status_through_the_shim() {
    let (Some(_), Some(sevctl)) = (shim_lib(), sevctl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    let guests = ok(shim(&pdir).arg(&sevctl).args(["show", "guests"]));
    assert_eq!(guests, "0", "no guests on a fresh soft platform");
    // Without /dev/sev (no shim) sevctl fails to open it: the answer above came through
    // the shim, not from a device on this machine.
    if !Path::new("/dev/sev").exists() {
        let (o, _, se) = run(Command::new(&sevctl).args(["show", "guests"]));
        assert!(!o.status.success());
        assert!(se.contains("/dev/sev"), "{se}");
    }
    // sevctl ok: the checks that need /dev/sev run only on a host whose CPUID shows SEV;
    // where they run, they pass through the shim.
    let (_, so, _) = run(shim(&pdir).arg(&sevctl).arg("ok"));
    let dev_lines: Vec<&str> = so.lines().filter(|l| l.contains("/dev/sev")).collect();
    for l in &dev_lines {
        assert!(!l.contains("FAIL"), "sevctl ok through the shim: {l}");
    }
    eprintln!("sevctl ok through the shim, its /dev/sev checks: {dev_lines:?}");
}

#[test]
fn sevctl_export_gets_past_the_device_to_the_kds_download() {
    let (Some(_), Some(sevctl)) = (shim_lib(), sevctl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    // sevctl 0.6.2's export takes the PDH chain (PDH_CERT_EXPORT) and the chip id (GET_ID2)
    // from /dev/sev, then downloads the CEK from AMD's KDS by chip id, which cannot know a
    // soft chip: the export must fail there and nowhere earlier.
    let (o, _, se) = run(shim(&pdir)
        .arg(&sevctl)
        .arg("export")
        .arg(dir.path().join("chain.cert")));
    assert!(
        !o.status.success(),
        "the KDS cannot serve a soft chip's CEK"
    );
    for early in [
        "unable to open /dev/sev",
        "unable to export SEV certificates",
        "error fetching identifier",
    ] {
        assert!(!se.contains(early), "failed before the download: {se}");
    }
}

#[test]
fn garbage_ioctls_get_the_drivers_errors_and_leave_the_platform_alone() {
    let Some(_) = shim_lib() else { return };
    let py = Command::new("python3").arg("--version").output();
    if !py.map(|o| o.status.success()).unwrap_or(false) {
        let _: Option<()> = missing("python3 not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    // Create the platform (legacy identity, and the SNP identity the shim's server creates
    // on first use), so what follows must not change it.
    chain(&pdir, &dir.path().join("c0"));
    ok(shim(&pdir).arg("true"));
    let before = snapshot(&pdir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shim_garbage.py");
    let out = ok(shim(&pdir).arg("python3").arg(&script));
    let v: serde_json::Value = serde_json::from_str(&out).expect("script output is JSON");
    let e = |k: &str| v[k].as_i64().or_else(|| v[k]["errno"].as_i64()).unwrap();
    const EINVAL: i64 = 22;
    const EFAULT: i64 = 14;
    const ENOMEM: i64 = 12;
    const EPERM: i64 = 1;
    const EIO: i64 = 5;
    assert_eq!(e("unknown_request"), EINVAL);
    assert_eq!(e("null_arg"), EFAULT);
    assert_eq!(e("bad_arg"), EFAULT);
    assert_eq!(e("bad_cmd"), EINVAL);
    assert_eq!(e("get_id_deprecated"), EINVAL);
    assert_eq!(e("status_null"), EFAULT);
    assert_eq!(e("status_bad"), EFAULT);
    assert_eq!(e("id2_huge"), ENOMEM);
    assert_eq!(e("csr_huge"), EFAULT);
    assert_eq!(e("import_empty"), EINVAL);
    assert_eq!(e("import_bad_ptrs"), EFAULT);
    assert_eq!(e("pek_gen_readonly"), EPERM);
    // The length probe: INVALID_LENGTH (0x0004) in `error`, EIO, the sizes written back.
    assert_eq!(e("pdh_probe"), EIO);
    assert_eq!(v["pdh_probe"]["error"], 4);
    assert_eq!(v["pdh_probe"]["pdh_len"], 2084);
    assert_eq!(v["pdh_probe"]["chain_len"], 3 * 2084);
    assert_eq!(e("status_ok"), 0);
    assert_eq!(v["status_data_echo"], true);
    assert_eq!(
        snapshot(&pdir),
        before,
        "garbage ioctls changed the platform directory"
    );
    // And the platform still works.
    chain(&pdir, &dir.path().join("c1"));
}

#[test]
fn shim_reports_a_missing_library_or_program_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    let (o, so, se) = run(sevm()
        .env("SEVM_SHIM_LIB", dir.path().join("nope.so"))
        .arg("shim")
        .arg("--platform-dir")
        .arg(&pdir)
        .args(["--", "true"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(format!("{so}{se}").contains("SEVM_SHIM_LIB"), "{so}{se}");
    let Some(_) = shim_lib() else { return };
    let (o, so, se) = run(shim(&pdir).arg(dir.path().join("no-such-program")));
    assert_eq!(o.status.code(), Some(1));
    assert!(format!("{so}{se}").contains("no-such-program"), "{so}{se}");
    // The program's exit status is sevm's.
    let (o, _, _) = run(shim(&pdir).args(["sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7));
}

/// snphost 0.9.0: PATH, then ~/.cargo/bin.
fn snphost() -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        cands.extend(std::env::split_paths(&path).map(|d| d.join("snphost")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        cands.push(Path::new(&home).join(".cargo/bin/snphost"));
    }
    for c in cands {
        if c.is_file() {
            let ok = Command::new(&c)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("0.9.0"))
                .unwrap_or(false);
            if ok {
                return Some(c);
            }
        }
    }
    missing("snphost 0.9.0 not found (cargo install snphost --version 0.9.0 --locked)")
}

/// `sevm platform snp status` as JSON.
fn snp_status(pdir: &Path) -> serde_json::Value {
    let out = ok(sevm()
        .args(["--json", "platform", "--platform-dir"])
        .arg(pdir)
        .args(["snp", "status"]));
    serde_json::from_str(&out).expect("snp status JSON")
}

/// The four SPLs of one `TCB Version:` block of snphost's output, as sevm's JSON names them.
fn tcb_block(text: &str) -> [u64; 4] {
    let get = |name: &str| -> u64 {
        let l = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        l.split(':').nth(1).unwrap().trim().parse().unwrap()
    };
    [
        get("Boot Loader:"),
        get("TEE:"),
        get("SNP:"),
        get("Microcode:"),
    ]
}

fn tcb_json(v: &serde_json::Value) -> [u64; 4] {
    ["bootloader", "tee", "snp", "microcode"].map(|k| v[k].as_u64().unwrap())
}

/// `snphost show tcb`: (reported, platform).
fn snphost_tcb(pdir: &Path, snphost: &Path) -> ([u64; 4], [u64; 4]) {
    let out = ok(shim(pdir).arg(snphost).args(["show", "tcb"]));
    let (rep, plat) = out
        .split_once("Platform TCB:")
        .unwrap_or_else(|| panic!("snphost show tcb: {out}"));
    (tcb_block(rep), tcb_block(plat))
}

#[test]
fn snphost_verbs_agree_with_sevm_platform_snp_status() {
    let (Some(_), Some(snphost)) = (shim_lib(), snphost()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("platform");
    let st = snp_status(&pdir);
    let (rep, plat) = snphost_tcb(&pdir, &snphost);
    assert_eq!(rep, tcb_json(&st["reported_tcb"]));
    assert_eq!(plat, tcb_json(&st["current_tcb"]));
    let guests = ok(shim(&pdir).arg(&snphost).args(["show", "guests"]));
    assert_eq!(guests, st["guest_count"].to_string());
    let version = ok(shim(&pdir).arg(&snphost).args(["show", "version"]));
    assert_eq!(version, format!("{}.{}", st["api_major"], st["api_minor"]));

    // config set: a reported TCB below the committed one, MASK_CHIP_ID.
    let c = tcb_json(&st["committed_tcb"]);
    let want = [
        c[0].saturating_sub(1),
        c[1],
        c[2].saturating_sub(1),
        c[3].saturating_sub(2),
    ];
    let args: Vec<String> = want.iter().map(|x| x.to_string()).collect();
    ok(shim(&pdir)
        .arg(&snphost)
        .args(["config", "set"])
        .args(&args)
        .arg("1"));
    let st = snp_status(&pdir);
    assert_eq!(
        tcb_json(&st["reported_tcb"]),
        want,
        "SNP_SET_CONFIG reached the platform"
    );
    assert_eq!(st["mask_chip_id"], true);
    assert_eq!(st["mask_chip_key"], false);
    assert_eq!(
        snphost_tcb(&pdir, &snphost).0,
        want,
        "snphost reads back what it set"
    );

    // config reset: the reported TCB follows the committed one again, masks cleared.
    ok(shim(&pdir).arg(&snphost).args(["config", "reset"]));
    let st = snp_status(&pdir);
    assert_eq!(st["reported_tcb"]["raw"], st["committed_tcb"]["raw"]);
    assert_eq!(st["mask_chip_id"], false);

    // commit: after a (modelled) firmware update, SNP_COMMIT makes it the committed TCB.
    let newer = format!(
        "0x{:016x}",
        u64::from_str_radix(
            st["current_tcb"]["raw"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16
        )
        .unwrap()
            + 1
    );
    ok(sevm()
        .args(["platform", "--platform-dir"])
        .arg(&pdir)
        .args(["snp", "firmware-update", "--tcb", &newer]));
    let st = snp_status(&pdir);
    assert_eq!(st["current_tcb"]["raw"], newer.as_str());
    assert_ne!(st["committed_tcb"]["raw"], newer.as_str());
    ok(shim(&pdir).arg(&snphost).arg("commit"));
    let st = snp_status(&pdir);
    assert_eq!(
        st["committed_tcb"]["raw"],
        newer.as_str(),
        "SNP_COMMIT reached the platform"
    );
}
