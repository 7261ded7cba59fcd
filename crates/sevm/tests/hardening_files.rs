//! End-to-end reproducers of issue 17's file findings (2, 3, 5, 6, 9, 12, 13, 15), each run
//! against the built `sevm` binary. Every child that must fail is killed after 20 s and the
//! test fails, so a regression to "blocks forever" or "reads forever" fails instead of hanging
//! the run. Commands that must succeed get 120 s: a new soft platform generates two RSA-4096
//! keys, which takes a while on a loaded machine.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const GUID: &str = "736869e5-84f0-4973-92ec-06879ce3da0b";
const GUID2: &str = "1e74f542-71dd-4d66-963e-ef4287ff173b";
const KEY: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// A LAUNCH_MEASURE blob (48 bytes, base64).
const BLOB: &str = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS";
/// For a command that must fail: it must not block or read without end.
const LIMIT: Duration = Duration::from_secs(20);
/// For a command that must succeed (it may generate a platform identity).
const LIMIT_OK: Duration = Duration::from_secs(120);

fn sevm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sevm"));
    c.stdin(Stdio::null());
    c
}

/// What a child did: exit status, stdout bytes, stderr text, how long it took.
struct Ran {
    status: ExitStatus,
    out: Vec<u8>,
    err: String,
    took: Duration,
}

/// Runs `cmd`, killing it after `limit` (then the test fails: it blocked).
fn run(cmd: &mut Command, limit: Duration) -> Ran {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sevm");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} was still running after {limit:?} (killed): it blocked or read without end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    Ran {
        status,
        out: o.join().unwrap(),
        err: e.join().unwrap(),
        took,
    }
}

/// Runs `cmd`, which must fail with exit 1 or 2 (no panic); returns stderr.
fn fails(cmd: &mut Command) -> String {
    let r = run(cmd, LIMIT);
    assert!(
        matches!(r.status.code(), Some(1) | Some(2)),
        "{cmd:?}: expected a clean failure, got {:?}\nstdout: {}\nstderr: {}",
        r.status,
        String::from_utf8_lossy(&r.out),
        r.err
    );
    assert!(!r.err.contains("panicked"), "{cmd:?} panicked: {}", r.err);
    eprintln!("{cmd:?} ({:?}): {}", r.took, r.err.trim());
    r.err
}

/// Runs `cmd`, which must succeed; returns stdout bytes and stderr.
fn ok(cmd: &mut Command) -> (Vec<u8>, String) {
    let r = run(cmd, LIMIT_OK);
    assert!(
        r.status.success(),
        "{cmd:?} failed: {:?}\n{}",
        r.status,
        r.err
    );
    (r.out, r.err)
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "missing {p:?} in: {msg}");
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh soft platform in `dir/plat`, with its SEV chain exported to `dir/chain.bin`.
fn platform(dir: &Path) -> (PathBuf, PathBuf) {
    let plat = dir.join("plat");
    let chain = dir.join("chain.bin");
    ok(sevm()
        .args(["platform", "--platform-dir", s(&plat), "export"])
        .arg(&chain));
    (plat, chain)
}

fn secret_cmd(secrets: &[String], header: &Path, payload: &Path) -> Command {
    let mut c = sevm();
    c.args(["owner", "secret", "--tik", KEY, "--tek", KEY])
        .args(["--launch-measure-blob", BLOB]);
    for sp in secrets {
        c.args(["--secret", sp]);
    }
    c.arg(header).arg(payload);
    c
}

/// A bzImage header (boot protocol 2.15) announcing `payload` bytes of protected-mode code,
/// followed by `have` bytes of it.
fn bzimage(payload: u32, have: usize) -> Vec<u8> {
    let mut img = vec![0u8; 2 * 512];
    img[0x1f1] = 1; // setup_sects
    img[0x1f4..0x1f8].copy_from_slice(&(payload / 16).to_le_bytes());
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 0x01;
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    img.extend(std::iter::repeat_n(0x90u8, have));
    img
}

/// Finding 2: files that never end (`/dev/zero`) and huge sparse files are refused before
/// being read, on every path that reads a user file.
#[test]
fn finding2_unbounded_reads_are_refused_before_reading() {
    let t = tempfile::tempdir().unwrap();
    let (plat, chain) = platform(t.path());
    let sparse = t.path().join("sparse-8g");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let kernel = t.path().join("bzImage");
    std::fs::write(&kernel, bzimage(4096, 4096)).unwrap();
    let dz = "/dev/zero";
    let chardev = ["/dev/zero", "is a character device"];
    let runs: Vec<(Command, Vec<&str>)> = vec![
        (
            {
                let mut c = sevm();
                c.args(["run", "--kernel", dz, "--timeout", "5"]);
                c
            },
            vec!["kernel", dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["run", "--kernel"])
                    .arg(&sparse)
                    .args(["--timeout", "5"]);
                c
            },
            vec!["kernel", "sparse-8g", "8589934592 bytes", "does not fit"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["config", "check", "--kernel"]).arg(&sparse);
                c
            },
            vec!["sparse-8g", "8589934592 bytes"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["run", "--kernel"])
                    .arg(&kernel)
                    .args(["--initrd", dz, "--timeout", "5"]);
                c
            },
            vec!["initrd", dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["config", "check", "--kernel"])
                    .arg(&kernel)
                    .arg("--initrd")
                    .arg(&sparse);
                c
            },
            vec!["initrd", "sparse-8g", "8589934592 bytes"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["owner", "verify-chain", dz]);
                c
            },
            vec!["certificate chain", dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["owner", "verify-chain"])
                    .arg(&chain)
                    .args(["--ca", dz]);
                c
            },
            vec!["--ca", dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["owner", "measure", "--vmm", "sevm", "--kernel", dz]);
                c
            },
            chardev.to_vec(),
        ),
        (
            {
                let mut c = sevm();
                c.args(["owner", "measure", "--vmm", "sevm", "--kernel"])
                    .arg(&sparse);
                c
            },
            vec!["sparse-8g", "8589934592 bytes"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["owner", "measure", "--firmware"]).arg(&sparse);
                c
            },
            vec!["--firmware", "sparse-8g", "more than the limit"],
        ),
        (
            secret_cmd(
                &[format!("{GUID}:{dz}")],
                &t.path().join("h"),
                &t.path().join("p"),
            ),
            vec![GUID, dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args(["platform", "--platform-dir", s(&plat), "provision", dz, dz]);
                c
            },
            vec!["OCA_CERT", dz, "is a character device"],
        ),
        (
            {
                let mut c = sevm();
                c.args([
                    "platform",
                    "--platform-dir",
                    s(&plat),
                    "pek-cert-import",
                    dz,
                    dz,
                ]);
                c
            },
            vec!["PEK_CERT", dz, "is a character device"],
        ),
    ];
    for (mut cmd, want) in runs {
        let t0 = Instant::now();
        let e = fails(&mut cmd);
        assert_has(&e, &want);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{cmd:?} took {:?}: it read the file",
            t0.elapsed()
        );
    }
    // A secret that cannot fit the 16 KiB secret area is refused by size, not read.
    let big = t.path().join("big-secret");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let e = fails(&mut secret_cmd(
        &[format!("{GUID}:{}", big.display())],
        &t.path().join("h"),
        &t.path().join("p"),
    ));
    assert_has(
        &e,
        &["big-secret", "104857600 bytes", "16384-byte secret area"],
    );
    assert!(!t.path().join("h").exists() && !t.path().join("p").exists());
}

/// Finding 3: the platform directory is created 0700 and its state file 0600; a directory
/// group or others can write (where a temp file or link could be planted) is refused; the
/// state is written through an O_EXCL temp file (see the store's unit test for a planted one).
#[test]
fn finding3_platform_dir_is_private_and_refused_when_others_can_write() {
    let t = tempfile::tempdir().unwrap();
    let plat = t.path().join("a/plat");
    ok(sevm().args(["platform", "--platform-dir", s(&plat), "status"]));
    assert_eq!(mode(&plat), 0o700, "platform dir mode");
    assert_eq!(mode(&plat.join("sev-state.json")), 0o600);
    for e in std::fs::read_dir(&plat).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!n.contains(".tmp"), "temp file left behind: {n}");
        if p.is_file() {
            assert_eq!(mode(&p) & 0o077, 0, "{n} is readable by others");
        }
    }
    for bad in [0o775, 0o777, 0o757] {
        std::fs::set_permissions(&plat, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = fails(sevm().args(["platform", "--platform-dir", s(&plat), "pdh-gen"]));
        assert_has(&e, &[s(&plat), "writable by group or others", "chmod go-w"]);
        let e = fails(sevm().args([
            "run",
            "--guest",
            "hello",
            "--platform-dir",
            s(&plat),
            "--object",
            "sev-guest,id=sev0,policy=0x1,reduced-phys-bits=1",
            "--machine",
            "confidential-guest-support=sev0",
            "--timeout",
            "5",
        ]));
        assert_has(&e, &["writable by group or others"]);
    }
    std::fs::set_permissions(&plat, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(sevm().args(["platform", "--platform-dir", s(&plat), "pdh-gen"]));
}

/// Finding 5: a symbolic link as `sev-state.json`, dangling or not, is refused: no new
/// identity appears at its target, and the link is not replaced by a regular file.
#[test]
fn finding5_symlinked_state_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let plat = t.path().join("plat");
    std::fs::DirBuilder::new().create(&plat).unwrap();
    std::fs::set_permissions(&plat, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = plat.join("sev-state.json");
    let target = t.path().join("elsewhere.json");
    std::os::unix::fs::symlink(&target, &st).unwrap();
    let e = fails(sevm().args(["platform", "--platform-dir", s(&plat), "status"]));
    assert_has(&e, &["sev-state.json", "is a symbolic link"]);
    assert!(
        !target.exists(),
        "a new identity was created through the link"
    );
    // A link to a real state file: refused, and still a link afterwards.
    let other = t.path().join("other");
    ok(sevm().args(["platform", "--platform-dir", s(&other), "status"]));
    std::fs::remove_file(&st).unwrap();
    std::os::unix::fs::symlink(other.join("sev-state.json"), &st).unwrap();
    let before = std::fs::read(other.join("sev-state.json")).unwrap();
    let e = fails(sevm().args(["platform", "--platform-dir", s(&plat), "pdh-gen"]));
    assert_has(&e, &["is a symbolic link"]);
    assert!(std::fs::symlink_metadata(&st)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(other.join("sev-state.json")).unwrap(), before);
}

/// Finding 6: `owner secret` refuses HEADER_OUT == PAYLOAD_OUT (also through another name or
/// a hard link) and duplicate GUIDs; `owner session --name` stays inside `--out`.
#[test]
fn finding6_owner_outputs_and_names_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let sec = t.path().join("secret");
    std::fs::write(&sec, b"passphrase").unwrap();
    let spec = format!("{GUID}:{}", sec.display());
    let out = t.path().join("out.bin");
    // Same path.
    let e = fails(&mut secret_cmd(std::slice::from_ref(&spec), &out, &out));
    assert_has(&e, &["HEADER_OUT", "PAYLOAD_OUT", "are the same file"]);
    assert!(!out.exists(), "something was written");
    // The same file through another spelling, and through a hard link.
    let sub = t.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let other_name = sub.join("..").join("out.bin");
    let e = fails(&mut secret_cmd(
        std::slice::from_ref(&spec),
        &out,
        &other_name,
    ));
    assert_has(&e, &["are the same file"]);
    std::fs::write(&out, b"keep").unwrap();
    let hard = t.path().join("hard.bin");
    std::fs::hard_link(&out, &hard).unwrap();
    let e = fails(&mut secret_cmd(std::slice::from_ref(&spec), &out, &hard));
    assert_has(&e, &["are the same file"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    // Duplicate GUIDs.
    let (h, p) = (t.path().join("h"), t.path().join("p"));
    let e = fails(&mut secret_cmd(&[spec.clone(), spec.clone()], &h, &p));
    assert_has(&e, &[GUID, "given twice"]);
    // Two GUIDs and two files work.
    ok(&mut secret_cmd(
        &[spec.clone(), format!("{GUID2}:{}", sec.display())],
        &h,
        &p,
    ));
    assert_eq!(std::fs::read(&h).unwrap().len(), 52);

    // Session names.
    let (_, chain) = platform(t.path());
    let outdir = t.path().join("o/d");
    for name in ["../../x", "a/b", "..", "-x", ""] {
        let e = fails(
            sevm()
                .args(["owner", "session", "--no-verify", "--out", s(&outdir)])
                .arg(format!("--name={name}"))
                .arg(&chain)
                .arg("0x1"),
        );
        assert_has(&e, &["--name", "file-name prefix"]);
    }
    assert!(!t.path().join("x_tek.bin").exists() && !outdir.exists());
    ok(sevm()
        .args(["owner", "session", "--no-verify", "--out", s(&outdir)])
        .args(["--name", "vm1"])
        .arg(&chain)
        .arg("0x1"));
    assert_eq!(mode(&outdir.join("vm1_tek.bin")), 0o600);
}

/// Finding 9: a FIFO given as an owner file (QEMU options, TOML, `[sev-launch]`), a config
/// file, a chain, a kernel, a firmware or a serial output file never blocks.
#[test]
fn finding9_fifos_never_block() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let f = s(&fifo);
    let plat = t.path().join("plat");
    let sevobj = format!(
        "sev-guest,id=sev0,policy=0x1,reduced-phys-bits=1,dh-cert-file={f},session-file={f}"
    );
    let e = fails(
        sevm()
            .args(["config", "check", "--platform-dir", s(&plat)])
            .args([
                "--object",
                &sevobj,
                "--machine",
                "confidential-guest-support=sev0",
            ]),
    );
    assert_has(&e, &[f, "is a FIFO"]);
    let toml = t.path().join("vm.toml");
    std::fs::write(
        &toml,
        format!("[sev]\npolicy = 1\ndh-cert-file = \"{f}\"\nsession-file = \"{f}\"\n"),
    )
    .unwrap();
    let e = fails(sevm().args([
        "config",
        "check",
        "--platform-dir",
        s(&plat),
        "--config",
        s(&toml),
    ]));
    assert_has(&e, &["vm.toml", f, "is a FIFO"]);
    let seed = t.path().join("sev.conf");
    std::fs::write(
        &seed,
        format!("[sev-launch]\npolicy = \"1\"\ndh_cert_file = \"{f}\"\nsession_file = \"{f}\"\n"),
    )
    .unwrap();
    let e = fails(sevm().args([
        "config",
        "check",
        "--platform-dir",
        s(&plat),
        "--sev-config",
        s(&seed),
    ]));
    assert_has(&e, &["sev.conf", f, "is a FIFO"]);
    let e = fails(sevm().args(["config", "check", "--config", f]));
    assert_has(&e, &["config file", f, "is a FIFO"]);
    let e = fails(sevm().args(["config", "check", "--sev-config", f]));
    assert_has(&e, &[f, "is a FIFO"]);
    let e = fails(sevm().args(["owner", "verify-chain", f]));
    assert_has(&e, &[f, "is a FIFO"]);
    for (opt, what) in [("--kernel", "kernel"), ("--firmware", "firmware")] {
        let e = fails(sevm().args(["run", opt, f, "--timeout", "5"]));
        assert_has(&e, &[what, f, "is a FIFO"]);
        let e = fails(sevm().args(["config", "check", opt, f]));
        assert_has(&e, &[f, "is a FIFO"]);
    }
    // A FIFO as serial output with no reader: a clear error, not a hang.
    let e = fails(sevm().args([
        "run",
        "--guest",
        "hello",
        "--serial",
        &format!("file:{f}"),
        "--timeout",
        "5",
    ]));
    assert_has(&e, &[f, "no reader"]);
    assert!(fifo.exists(), "the FIFO was removed");
}

/// Finding 12: a bzImage cut short of what its header announces is refused before it is
/// measured; a 1-byte firmware is refused with the reason.
#[test]
fn finding12_truncated_kernel_and_tiny_firmware_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let trunc = t.path().join("bzImage.trunc");
    std::fs::write(&trunc, bzimage(1 << 20, 600 << 10)).unwrap();
    let want = [
        "bzImage.trunc",
        "truncated kernel",
        "announces 1049600 bytes",
    ];
    let e = fails(sevm().args(["run", "--kernel", s(&trunc), "--timeout", "5"]));
    assert_has(&e, &want);
    let e = fails(sevm().args(["config", "check", "--kernel", s(&trunc)]));
    assert_has(&e, &want);
    let e = fails(sevm().args(["owner", "measure", "--vmm", "sevm", "--kernel", s(&trunc)]));
    assert_has(&e, &want);
    let ovmf = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-ovmf.fd");
    let e = fails(
        sevm()
            .args(["owner", "measure", "--firmware"])
            .arg(&ovmf)
            .args(["--kernel", s(&trunc)]),
    );
    assert_has(&e, &want);
    // The whole image is accepted by the same measurement.
    let whole = t.path().join("bzImage");
    std::fs::write(&whole, bzimage(1 << 20, 1 << 20)).unwrap();
    ok(sevm().args(["owner", "measure", "--vmm", "sevm", "--kernel", s(&whole)]));

    let one = t.path().join("fw-1-byte");
    std::fs::write(&one, [0xf4]).unwrap();
    for mut c in [
        {
            let mut c = sevm();
            c.args(["run", "--firmware", s(&one), "--timeout", "5"]);
            c
        },
        {
            let mut c = sevm();
            c.args(["config", "check", "--firmware", s(&one)]);
            c
        },
        {
            let mut c = sevm();
            c.args(["owner", "measure", "--vmm", "sevm", "--firmware", s(&one)]);
            c
        },
    ] {
        let e = fails(&mut c);
        assert_has(&e, &["fw-1-byte", "1 bytes", "whole number of 4 KiB pages"]);
    }
}

/// Finding 13: special files get messages that say what they are.
#[test]
fn finding13_special_files_are_named_for_what_they_are() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let e = fails(sevm().args(["run", "--firmware", "/dev/zero", "--timeout", "5"]));
    assert_has(&e, &["firmware", "/dev/zero", "is a character device"]);
    assert!(!e.contains("empty"), "{e}");
    let e = fails(sevm().args(["owner", "measure", "--firmware", s(&fifo)]));
    assert_has(&e, &["--firmware", "is a FIFO"]);
    assert!(!e.contains("empty"), "{e}");
    let measure = |tik: &str| {
        let mut c = sevm();
        c.args(["owner", "measure", "--launch-digest"])
            .arg("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .args(["--api-major", "0", "--api-minor", "24", "--build-id", "1"])
            .args(["--policy", "1", "--nonce", KEY, "--tik", tik]);
        c
    };
    let e = fails(&mut measure("/dev/zero"));
    assert_has(&e, &["--tik", "/dev/zero", "is a character device"]);
    assert!(!e.contains("no such file"), "{e}");
    // `/tmp` is valid base64 too: it is a directory, not a key.
    let e = fails(&mut measure("/tmp"));
    assert_has(&e, &["--tik", "/tmp", "is a directory"]);
    let ovmf = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-ovmf.fd");
    let e = fails(
        sevm()
            .args(["owner", "measure", "--firmware"])
            .arg(&ovmf)
            .args(["--num-cpus", "1", "--vmsa-cpu0", "/dev/zero"]),
    );
    assert_has(&e, &["--vmsa-cpu0", "/dev/zero", "is a character device"]);
    assert!(!e.contains("0 bytes"), "{e}");
    let file = t.path().join("regular");
    std::fs::write(&file, b"").unwrap();
    let e = fails(sevm().args(["platform", "--platform-dir", s(&file), "status"]));
    assert_has(&e, &[s(&file), "is a regular file, not a directory"]);
    assert!(!e.contains("File exists"), "{e}");
}

/// Finding 15: outputs go to pipes: `/dev/stdout` (a pipe here), `-` and a FIFO with a
/// reader, for `platform export` and `owner secret`; reports then go to stderr.
#[test]
fn finding15_outputs_to_stdout_and_pipes() {
    let t = tempfile::tempdir().unwrap();
    let (plat, chain) = platform(t.path());
    let want = std::fs::read(&chain).unwrap();
    assert_eq!(want.len(), 4 * 2084);
    for target in ["/dev/stdout", "-"] {
        let (out, err) = ok(sevm().current_dir(t.path()).args([
            "platform",
            "--platform-dir",
            s(&plat),
            "export",
            target,
        ]));
        assert_eq!(out, want, "export {target}: stdout is not the chain alone");
        assert_has(&err, &["wrote PDH, PEK, OCA, CEK"]);
    }
    assert!(
        !t.path().join("-").exists(),
        "`export -` wrote a file named '-'"
    );
    // A FIFO with a reader.
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let f2 = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::read(&f2).unwrap());
    ok(sevm().args(["platform", "--platform-dir", s(&plat), "export", s(&fifo)]));
    assert_eq!(reader.join().unwrap(), want);
    // owner secret: header to stdout, payload to a file.
    let sec = t.path().join("secret");
    std::fs::write(&sec, b"passphrase").unwrap();
    let p = t.path().join("payload");
    let (out, err) = ok(&mut secret_cmd(
        &[format!("{GUID}:{}", sec.display())],
        Path::new("/dev/stdout"),
        &p,
    ));
    assert_eq!(out.len(), 52, "stdout holds the 52-byte header only");
    assert_has(&err, &["Wrote header to: /dev/stdout"]);
    assert!(std::fs::metadata(&p).unwrap().len() > 0);
}
