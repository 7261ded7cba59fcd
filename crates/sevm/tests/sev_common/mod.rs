//! Not a test target (a module in a directory, so cargo builds no empty test binary for it):
//! helpers for the tests that drive the `sevm` binary with argument lists and launch SEV
//! guests under KVM (`#[path = "sev_common/mod.rs"] mod common;`): prerequisites, running
//! `sevm` and checking its exit status, `sevm run` command lines, owner sessions from
//! `sevm owner session` or sevctl, the files `--dump-launch` writes, and paused launches that
//! wait for the owner's secret.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;

use base64::Engine as _;

/// The `sevm` binary under test.
pub const SEVM: &str = env!("CARGO_BIN_EXE_sevm");

/// `--machine` value that selects the `sev0` object of [`object`].
pub const MACHINE: &str = "confidential-guest-support=sev0";

/// Whether CI is set (then missing prerequisites are failures, not skips).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A prerequisite of `test` is missing (`why`): panics when CI is set, else prints the
/// reason the test is skipped.
pub fn missing(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {why}, and CI is set");
    }
    eprintln!("SKIP {test}: {why}");
}

/// True if /dev/kvm exists; otherwise panics under CI and prints a SKIP reason.
pub fn kvm_or_skip(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    missing(
        test,
        "/dev/kvm is missing (these SEV launch tests need KVM)",
    );
    false
}

/// For a KVM test: a temporary directory (kept alive by the `TempDir`) and the soft platform
/// directory `plat` in it (not created yet), or None when `test` is skipped.
pub fn kvm_plat(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = t.path().join("plat");
    Some((t, plat))
}

/// True if /dev/kvm opens for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// True if /dev/kvm is usable; otherwise panics under CI and prints a SKIP reason.
pub fn kvm_usable_or_skip(test: &str) -> bool {
    if kvm_usable() {
        return true;
    }
    missing(test, "/dev/kvm is not usable");
    false
}

/// sevctl 0.6.2 at ~/.cargo/bin/sevctl, or None (panics under CI).
pub fn sevctl_or_skip(test: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cargo/bin/sevctl");
    if p.exists() {
        return Some(p);
    }
    missing(test, &format!("sevctl is not installed at {}", p.display()));
    None
}

/// The bundled sample images (`crates/sevm/samples`).
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {}", p.display()))
}

/// An argument list as one line, for failure messages.
pub fn shown<S: AsRef<OsStr>>(args: &[S]) -> String {
    let v: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    v.join(" ")
}

/// Runs the sevm binary (stdin empty, both streams captured).
pub fn sevm<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(SEVM)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SEVM}: {e}"))
}

/// stdout + stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts that `o`, the output of `what`, exited with `code`; returns (stdout, stderr).
pub fn expect_exit(what: &str, o: &Output, code: i32) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: wrong exit status\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

/// Runs `sevm args`, which must exit with `code`; returns (stdout, stderr).
pub fn sevm_exits<S: AsRef<OsStr>>(code: i32, args: &[S]) -> (String, String) {
    expect_exit(&format!("sevm {}", shown(args)), &sevm(args), code)
}

/// Runs `sevm args`, which must succeed; returns its output.
pub fn sevm_ok<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let o = sevm(args);
    assert!(
        o.status.success(),
        "sevm {} failed ({:?}): {}",
        shown(args),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Runs `sevm args`, which must succeed; returns its trimmed stdout.
pub fn sevm_stdout<S: AsRef<OsStr>>(args: &[S]) -> String {
    String::from_utf8_lossy(&sevm_ok(args).stdout)
        .trim()
        .to_string()
}

/// `platform --platform-dir DIR rest...`: a `sevm platform` command line.
pub fn platform_args<'a>(dir: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    [&["platform", "--platform-dir", dir][..], rest].concat()
}

/// `sevm owner measure args`, which must succeed; returns the printed digest (or blob).
pub fn owner_measure(args: &[&str]) -> String {
    sevm_stdout(&[&["owner", "measure"], args].concat())
}

/// `--object` text for a soft SEV guest.
pub fn object(policy: u32, extra: &str) -> String {
    format!("sev-guest,id=sev0,policy={policy:#x},cbitpos=47,reduced-phys-bits=1{extra}")
}

/// A `sevm run` command line, built argument by argument.
#[derive(Debug, Clone)]
pub struct Run {
    args: Vec<String>,
}

impl Run {
    /// `sevm run` with no options yet.
    pub fn new() -> Run {
        Run {
            args: vec!["run".into()],
        }
    }

    /// `sevm run --guest NAME` (a bundled guest).
    pub fn guest(name: &str) -> Run {
        Run::new().opt("--guest", name)
    }

    /// Adds `flag value`.
    pub fn opt(mut self, flag: &str, value: impl Into<String>) -> Run {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// Adds `flag PATH`.
    pub fn path(self, flag: &str, p: &Path) -> Run {
        self.opt(flag, s(p))
    }

    /// Adds `args` as they are.
    pub fn args(mut self, args: &[&str]) -> Run {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds a lone flag.
    pub fn flag(mut self, flag: &str) -> Run {
        self.args.push(flag.into());
        self
    }

    /// A soft SEV guest: `--object` (see [`object`]) and `--machine`.
    pub fn sev(self, policy: u32, extra: &str) -> Run {
        self.opt("--object", object(policy, extra))
            .opt("--machine", MACHINE)
    }

    /// `--platform-dir DIR`.
    pub fn platform(self, dir: &Path) -> Run {
        self.path("--platform-dir", dir)
    }

    /// `--dump-launch DIR`.
    pub fn dump(self, dir: &Path) -> Run {
        self.path("--dump-launch", dir)
    }

    /// The command, to spawn it.
    pub fn command(&self) -> Command {
        let mut c = Command::new(SEVM);
        c.args(&self.args);
        c
    }

    /// Runs it to the end.
    pub fn output(&self) -> Output {
        sevm(&self.args)
    }

    /// Runs it; it must exit with `code`. Returns (stdout, stderr).
    pub fn exits(&self, code: i32) -> (String, String) {
        sevm_exits(code, &self.args)
    }

    /// Runs it; it must fail (any non-zero status). Returns (stdout, stderr).
    pub fn fails(&self) -> (String, String) {
        let o = self.output();
        let (out, err) = text(&o);
        assert!(
            !o.status.success(),
            "sevm {} unexpectedly succeeded\n{out}\n{err}",
            shown(&self.args)
        );
        (out, err)
    }
}

impl Default for Run {
    fn default() -> Run {
        Run::new()
    }
}

/// Exports the soft platform chain in `plat` to `dir/chain.cert`.
pub fn export_chain(plat: &Path, dir: &Path) -> PathBuf {
    let chain = dir.join("chain.cert");
    let o = sevm(&[
        "platform",
        "--platform-dir",
        s(plat),
        "export",
        "--full",
        s(&chain),
    ]);
    assert!(o.status.success(), "export: {:?}", text(&o));
    chain
}

/// The `--object` suffix naming the owner files `dir/NAME_godh.b64` and `dir/NAME_session.b64`.
pub fn session_files(dir: &Path, name: &str) -> String {
    format!(
        ",dh-cert-file={},session-file={}",
        dir.join(format!("{name}_godh.b64")).display(),
        dir.join(format!("{name}_session.b64")).display()
    )
}

/// `sevm owner session --no-verify` for `chain` and `policy`, writing `dir/NAME_*`; returns
/// the `--object` suffix naming its GODH and session files.
pub fn owner_session(dir: &Path, name: &str, chain: &Path, policy: &str) -> String {
    let o = sevm(&[
        "owner",
        "session",
        "--no-verify",
        "--name",
        name,
        "--out",
        s(dir),
        s(chain),
        policy,
    ]);
    assert!(o.status.success(), "owner session: {:?}", text(&o));
    session_files(dir, name)
}

/// `sevctl session --name NAME chain policy` in `dir`; returns the `--object` suffix naming
/// its GODH and session files.
pub fn sevctl_session(sevctl: &Path, dir: &Path, name: &str, chain: &Path, policy: &str) -> String {
    let o = Command::new(sevctl)
        .current_dir(dir)
        .args(["session", "--name", name, s(chain), policy])
        .output()
        .unwrap();
    assert!(o.status.success(), "sevctl session: {:?}", text(&o));
    session_files(dir, name)
}

/// `sevctl measurement build` for the soft platform (API 0.24, build 17) with `policy`, the
/// TIK file, the digest inputs `args`, and the firmware's LAUNCH_MEASURE `blob`: sevctl's
/// measurement must equal the blob's.
pub fn assert_sevctl_measurement(
    sevctl: &Path,
    policy: &str,
    tik: &Path,
    args: &[&str],
    blob: &[u8],
) {
    let blob_b64 = b64(blob);
    let head = [
        "measurement",
        "build",
        "--api-major",
        "0",
        "--api-minor",
        "24",
        "--build-id",
        "17",
        "--policy",
        policy,
        "--tik",
        s(tik),
    ];
    let o = Command::new(sevctl)
        .args(head)
        .args(args)
        .args(["--launch-measure-blob", &blob_b64])
        .output()
        .unwrap();
    let (sout, serr) = text(&o);
    assert!(
        o.status.success(),
        "sevctl measurement build: {sout}\n{serr}"
    );
    let got = unb64(sout.trim()).expect("sevctl prints base64");
    assert_eq!(
        got, blob,
        "sevctl's measurement differs from the firmware's"
    );
}

/// Standard base64.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes standard base64.
pub fn unb64(t: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(t)
}

/// The bytes of a base64 text file.
pub fn read_b64(p: &Path) -> Vec<u8> {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    unb64(t.trim()).unwrap_or_else(|e| panic!("{}: not base64: {e}", p.display()))
}

/// SHA-256 of the bytes a `--dump-launch` directory says were measured (`measured.bin`).
pub fn measured_sha256(dump: &Path) -> [u8; 32] {
    openssl::sha::sha256(&std::fs::read(dump.join("measured.bin")).unwrap())
}

/// The measured ranges a `--dump-launch` directory holds (`NN-kind-gpa.bin`), sorted.
pub fn dumped_ranges(dump: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('0'))
        .collect();
    names.sort();
    names
}

/// `sevm owner secret` arguments: the owner's `dir/NAME_tik.bin` and `dir/NAME_tek.bin`, the
/// LAUNCH_MEASURE blob (base64 or a file), one `--secret GUID:FILE`, and the header and
/// payload files to write.
pub fn owner_secret_args(
    dir: &Path,
    name: &str,
    blob: &str,
    secret: &str,
    hdr: &Path,
    payload: &Path,
) -> Vec<String> {
    [
        "owner",
        "secret",
        "--tik",
        s(&dir.join(format!("{name}_tik.bin"))),
        "--tek",
        s(&dir.join(format!("{name}_tek.bin"))),
        "--launch-measure-blob",
        blob,
        "--secret",
        secret,
        s(hdr),
        s(payload),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A `sevm run --paused` child: it measures, prints `measured: <base64>` on stderr and waits
/// for the owner's secret files on stdin.
pub struct Paused {
    child: Child,
    stderr: BufReader<ChildStderr>,
    stdout: JoinHandle<Vec<u8>>,
    /// stderr up to and including the `measured:` line.
    pub before: Vec<u8>,
}

/// How a [`Paused`] launch ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// stderr after the `measured:` line.
    pub stderr: Vec<u8>,
}

impl Paused {
    /// Spawns `cmd` with all three streams piped (stdout read by a thread, so the guest's
    /// serial output never blocks it).
    pub fn spawn(mut cmd: Command) -> Paused {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut v = Vec::new();
            out.read_to_end(&mut v).unwrap();
            v
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Paused {
            child,
            stderr,
            stdout,
            before: Vec::new(),
        }
    }

    /// Reads stderr up to the `measured: <base64>` line; returns the base64 LAUNCH_MEASURE.
    pub fn measurement(&mut self) -> String {
        loop {
            let mut line = Vec::new();
            assert!(
                self.stderr.read_until(b'\n', &mut line).unwrap() > 0,
                "sevm run ended before measuring: {}",
                String::from_utf8_lossy(&self.before)
            );
            self.before.extend_from_slice(&line);
            let line = String::from_utf8_lossy(&line);
            if let Some(rest) = line.split("measured: ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
    }

    /// Writes `HDR PAYLOAD` to stdin, closes it and waits for the launch to end.
    pub fn inject(mut self, hdr: &Path, payload: &Path) -> Finished {
        {
            let mut stdin = self.child.stdin.take().unwrap();
            writeln!(stdin, "{} {}", hdr.display(), payload.display()).unwrap();
        }
        let mut stderr = Vec::new();
        self.stderr.read_to_end(&mut stderr).unwrap();
        let status = self.child.wait().unwrap();
        Finished {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr,
        }
    }
}
