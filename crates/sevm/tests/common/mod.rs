//! Helpers shared by the integration tests: locating test data, sevctl and Python, and
//! running the `sevm` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `sevm` binary under test.
pub fn sevm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sevm"))
}

/// Whether CI is set (then missing prerequisites are failures, not skips).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips (returns None after printing why) or, under CI, panics.
pub fn missing<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("prerequisite missing under CI: {what}");
    }
    eprintln!("SKIP: {what}");
    None
}

/// `../shared/testdata`, relative to the repository.
pub fn testdata() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    if p.is_dir() {
        Some(p.canonicalize().unwrap_or(p))
    } else {
        missing(&format!(
            "test data not found at {} (the shared testdata directory beside the repository)",
            p.display()
        ))
    }
}

/// The bundled sample images.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Candidates for a cargo-installed tool: `$PATH`, then ~/.cargo/bin.
fn tool_candidates(name: &str) -> Vec<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        cands.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    if let Some(home) = std::env::var_os("HOME") {
        cands.push(Path::new(&home).join(".cargo/bin").join(name));
    }
    cands
}

/// The first candidate for `name` whose `--version` succeeds and prints `version_has`.
fn find_tool(name: &str, version_has: &str) -> Option<PathBuf> {
    tool_candidates(name).into_iter().find(|c| {
        c.is_file()
            && Command::new(c).arg("--version").output().is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version_has)
            })
    })
}

/// The sevctl 0.6.2 binary: PATH, then ~/.cargo/bin.
pub fn sevctl() -> Option<PathBuf> {
    find_tool("sevctl", "0.6.2").or_else(|| {
        missing("sevctl 0.6.2 not found (cargo install sevctl --version 0.6.2 --locked)")
    })
}

/// The snpguest binary: PATH, then ~/.cargo/bin; it must answer `--version`.
pub fn snpguest() -> Option<PathBuf> {
    find_tool("snpguest", "").or_else(|| {
        missing("snpguest not found in PATH or ~/.cargo/bin (cargo install snpguest --locked)")
    })
}

/// A Python 3 with the `cryptography` package: $SEVM_PYTHON, .venv/bin/python, python3.
pub fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SEVM_PYTHON") {
        cands.push(PathBuf::from(p));
    }
    cands.push(root.join(".venv/bin/python"));
    cands.push(PathBuf::from("python3"));
    for c in cands {
        let ok = Command::new(&c)
            .args(["-c", "import cryptography"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(c);
        }
    }
    missing("no Python with the `cryptography` package (set SEVM_PYTHON or run .ci/run)")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `/dev/kvm` opens read-write; otherwise SKIP (a failure under CI) naming the error.
pub fn kvm() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => missing::<()>(&format!("/dev/kvm is not usable: {e}")).is_some(),
    }
}

/// A Python with `qemu.qmp`: `$SEVM_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn qmp_python() -> Option<PathBuf> {
    let py = std::env::var_os("SEVM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if !py.exists() {
        return missing(&format!(
            "no Python at {} (set SEVM_PYTHON or create .venv with qemu.qmp)",
            py.display()
        ));
    }
    let ok = Command::new(&py)
        .args(["-c", "import qemu.qmp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return missing(&format!(
            "{} cannot import qemu.qmp (pip install qemu.qmp)",
            py.display()
        ));
    }
    Some(py)
}

/// Runs the Python unittest file `tests/qmp/<file>` with `SEVM_BIN` set to this build's sevm
/// (plus `envs`), and asserts that it ran and passed, nothing skipped.
pub fn run_qmp_unittest(py: &Path, file: &str, envs: &[(&str, &std::ffi::OsStr)]) {
    let mut c = Command::new(py);
    c.current_dir(repo())
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests/qmp",
            "-p",
            file,
            "-v",
        ])
        .env("SEVM_BIN", env!("CARGO_BIN_EXE_sevm"));
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("running the Python QMP test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/qmp/{file} failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("Ran ") && !stderr.contains("Ran 0 tests") && !stderr.contains("skipped"),
        "the Python test did not run: {stderr}"
    );
}

/// Runs a command and returns its output, with both streams as text.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let o = cmd.output().expect("spawn");
    let so = String::from_utf8_lossy(&o.stdout).into_owned();
    let se = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, so, se)
}

/// Runs a command that must succeed; returns trimmed stdout.
pub fn ok(cmd: &mut Command) -> String {
    let (o, so, se) = run(cmd);
    assert!(
        o.status.success(),
        "command failed: {cmd:?}\nstatus {:?}\nstdout:\n{so}\nstderr:\n{se}",
        o.status
    );
    so.trim().to_string()
}

/// Runs a command that must fail (exit 1, no panic); returns stdout + stderr.
pub fn fails(cmd: &mut Command) -> String {
    let (o, so, se) = run(cmd);
    assert!(
        !o.status.success(),
        "command unexpectedly succeeded: {cmd:?}\n{so}\n{se}"
    );
    assert!(!se.contains("panicked"), "command panicked: {cmd:?}\n{se}");
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "unexpected exit status {:?} for {cmd:?}\n{se}",
        o.status
    );
    format!("{so}\n{se}")
}

/// SHA-256 of nothing, as hex: a launch digest any measurement command accepts.
pub const SHA256_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Runs a command that must succeed and print one JSON document; returns it.
pub fn ok_json(cmd: &mut Command) -> serde_json::Value {
    let out = ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}) from {cmd:?}: {out}"))
}

/// Standard base64.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Asserts that the file at `p` holds the bytes whose standard base64 is `want`.
pub fn assert_file_b64(p: &Path, want: &str) {
    let got = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(b64(&got), want, "{}", p.display());
}

/// The bytes of a base64 text file.
pub fn read_b64(p: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    base64::engine::general_purpose::STANDARD
        .decode(t.trim())
        .unwrap_or_else(|e| panic!("{}: not base64: {e}", p.display()))
}

/// `sevm owner measure --firmware FW`, to add more arguments to.
pub fn measure_firmware(fw: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = sevm();
    c.args(["owner", "measure", "--firmware"]).arg(fw);
    c
}

/// Guest RAM of the `snp-attest` runs in the SNP tests.
pub const SNP_ATTEST_MEM: &str = "16M";

/// `sevm run --guest snp-attest` with an SNP object (policy 0x30000 plus `object_extra`), the
/// report data and the report file; `hw` selects `--sev-backend hw --hw-loopback`.
pub fn snp_attest_run(
    plat: &Path,
    hw: bool,
    object_extra: &str,
    report_data: &str,
    out: &Path,
) -> Command {
    let mut c = sevm();
    c.args(["run", "--guest", "snp-attest", "--memory", SNP_ATTEST_MEM])
        .arg("--platform-dir")
        .arg(plat);
    if hw {
        c.args(["--sev-backend", "hw", "--hw-loopback"]);
    }
    c.args([
        "--object",
        &format!(
            "sev-snp-guest,id=snp0,policy=0x30000,cbitpos=47,reduced-phys-bits=1{object_extra}"
        ),
        "--machine",
        "confidential-guest-support=snp0",
        "--report-data",
        report_data,
        "--report-out",
    ])
    .arg(out);
    c
}

/// The owner's predicted MEASUREMENT of [`snp_attest_run`]'s launch (hex).
pub fn snp_attest_predicted() -> String {
    ok(sevm().args([
        "owner",
        "snp",
        "measure",
        "--vmm",
        "sevm",
        "--guest",
        "snp-attest",
        "--memory",
        SNP_ATTEST_MEM,
        "--policy",
        "0x30000",
        "--vcpus",
        "1",
    ]))
}

/// `sevm owner snp verify-report` with the expected measurement, host data and report data
/// (hex): (passed, its output).
pub fn snp_verify_report(certs: &Path, report: &Path, m: &str, d: &str, r: &str) -> (bool, String) {
    let (o, so, se) = run(sevm()
        .args(["owner", "snp", "verify-report", "--certs"])
        .arg(certs)
        .args(["--measurement", m, "--host-data", d, "--report-data", r])
        .arg(report));
    (o.status.success(), format!("{so}{se}"))
}

/// Unmodified `snpguest verify attestation CERTS REPORT -m -d -r` (snpguest wants 0x-prefixed
/// hex): (passed, its output).
pub fn snpguest_verify_attestation(
    sg: &Path,
    certs: &Path,
    report: &Path,
    m: &str,
    d: &str,
    r: &str,
) -> (bool, String) {
    let o = Command::new(sg)
        .args(["verify", "attestation"])
        .arg(certs)
        .arg(report)
        .args([
            "-m",
            &format!("0x{m}"),
            "-d",
            &format!("0x{d}"),
            "-r",
            &format!("0x{r}"),
        ])
        .output()
        .expect("run snpguest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The shim library (`libsevm_shim.so`) next to the sevm binary; SKIP (or, under CI, a
/// failure) when it is not built.
pub fn shim_lib() -> Option<PathBuf> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_sevm"));
    let lib = exe.parent().unwrap().join("libsevm_shim.so");
    if lib.is_file() {
        Some(lib)
    } else {
        missing(&format!(
            "{} not built: run `cargo build -p sevm -p sevm-shim` first",
            lib.display()
        ))
    }
}
