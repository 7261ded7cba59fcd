//! Issue 17, run lifecycle: signals, timeouts, limits (findings 7, 8, 10, 11, 16, 17, 20).
//! Each test is named after its finding and runs the built `sevm` binary; every child has a
//! kill-after deadline, so a hang fails the test instead of blocking it.
//! docs/RELIABILITY.md, "Run lifecycle: signals, timeouts, limits".

#[path = "sev_common/mod.rs"]
mod common;
#[path = "../../vmm/tests/qmp_common/mod.rs"]
mod qmp_common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long any one child may take before it is killed and the test fails.
const KILL_AFTER: Duration = Duration::from_secs(90);

/// A spawned `sevm` with its stderr read line by line by a thread (and stdout collected).
struct Proc {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Proc {
    /// Spawns `cmd` with stderr (and stdout, unless set already) piped; stdin as `stdin`.
    fn spawn(mut cmd: Command, stdin: Stdio) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        Proc {
            child,
            what,
            lines,
            stderr: Vec::new(),
            stdout: Some(stdout),
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Waits for a stderr line containing `needle` (kills the child and fails after
    /// [`KILL_AFTER`] or if stderr ends first).
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + KILL_AFTER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stderr.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "{}: no stderr line with {needle:?} ({e:?}); stderr so far:\n{}",
                        self.what,
                        self.stderr.join("\n")
                    );
                }
            }
        }
    }

    /// Sends `sig` to the child.
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child, not yet reaped; no memory involved.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill");
    }

    /// Waits for the exit (killing the child after [`KILL_AFTER`]); returns the exit code,
    /// stdout and all of stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + KILL_AFTER;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {KILL_AFTER:?}; stderr:\n{}",
                    self.what,
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.take().unwrap().join().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(l);
        }
        let err = self.stderr.join("\n");
        assert!(!err.contains("panicked"), "{}: panic\n{err}", self.what);
        (
            status.code(),
            String::from_utf8_lossy(&out).into_owned(),
            err,
        )
    }
}

/// Runs `args` to the end (stdin empty) with the kill-after deadline.
fn run_args(args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = Command::new(SEVM);
    c.args(args);
    Proc::spawn(c, Stdio::null()).finish()
}

/// A soft platform directory of its own in `dir` (a copy of one identity made once: key
/// generation takes seconds), so that its `sev-guests.d` holds only this test's count files.
fn platform(dir: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, t) = TEMPLATE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("plat");
        let (code, _, err) = run_args(&["platform", "--platform-dir", s(&p), "status"]);
        assert_eq!(code, Some(0), "creating the template platform: {err}");
        (d, p)
    });
    let p = dir.join("plat");
    std::fs::create_dir(&p).unwrap();
    std::fs::copy(t.join("sev-state.json"), p.join("sev-state.json")).unwrap();
    p
}

/// The count files in `plat/sev-guests.d`.
fn count_files(plat: &Path) -> Vec<String> {
    match std::fs::read_dir(plat.join("sev-guests.d")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".count"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `sevm run --guest NAME` on a soft SEV platform `plat`, with `rest`.
fn sev_run(guest: &str, plat: &Path, rest: &[&str]) -> Command {
    let mut c = Run::guest(guest).sev(1, "").platform(plat).command();
    c.args(rest);
    c
}

fn kvm(test: &str) -> bool {
    kvm_usable_or_skip(test)
}

#[test]
fn finding7_huge_timeout_does_not_panic() {
    if !kvm("finding7_huge_timeout_does_not_panic") {
        return;
    }
    let (code, out, err) = run_args(&[
        "run",
        "--guest",
        "hello",
        "--timeout",
        "18446744073709551615",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("hello from the sevm bundled guest"), "{out}");
}

/// Finding 8 with QMP: for each signal, the QMP client gets SHUTDOWN with reason
/// `host-signal`, sevm exits 0 (as QEMU), and the socket and the count file are gone.
#[test]
fn finding8_signals_end_run_cleanly_with_qmp_shutdown_event() {
    if !kvm("finding8_signals_end_run_cleanly_with_qmp_shutdown_event") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    for (sig, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let sock = t.path().join(format!("{name}.sock"));
        let qmp = format!("unix:{}", sock.display());
        let mut p = Proc::spawn(
            sev_run("hello", &plat, &["--paused", "--qmp", &qmp]),
            Stdio::null(),
        );
        p.wait_line("QMP monitor on");
        let mut client = qmp_common::Client::connect(&sock);
        client.negotiate();
        assert_eq!(count_files(&plat).len(), 1, "{name}: one live guest");
        p.signal(sig);
        let ev = client.wait_event("SHUTDOWN");
        assert_eq!(ev["data"]["reason"], "host-signal", "{name}: {ev}");
        assert_eq!(ev["data"]["guest"], false, "{name}: {ev}");
        let (code, out, err) = p.finish();
        assert_eq!(code, Some(0), "{name}: exit status\n{err}");
        assert!(
            err.contains(&format!("terminating on signal {sig} ({name})")),
            "{name}: {err}"
        );
        assert!(out.is_empty(), "{name}: the guest ran: {out}");
        assert!(!sock.exists(), "{name}: socket left behind");
        assert_eq!(
            count_files(&plat),
            Vec::<String>::new(),
            "{name}: count file"
        );
    }
}

/// Finding 8 while the vCPUs run (a guest spinning in `jmp $`): the signal kicks them out.
#[test]
fn finding8_signal_stops_running_vcpus() {
    if !kvm("finding8_signal_stops_running_vcpus") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut fw = vec![0x90u8; 0x1000];
    fw[0xff0..0xff2].copy_from_slice(&[0xeb, 0xfe]); // jmp $
    let fw_path = t.path().join("spin.bin");
    std::fs::write(&fw_path, fw).unwrap();
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut c = Command::new(SEVM);
        c.args(["run", "--firmware", s(&fw_path), "--memory", "32M"])
            .args(["--serial", "none", "--cpus", "2"]);
        let p = Proc::spawn(c, Stdio::null());
        // The vCPU threads (named vcpuN) start with the first run (docs/LAUNCH.md).
        wait_for_thread(p.pid(), "vcpu1");
        let t0 = Instant::now();
        p.signal(sig);
        let (code, _, err) = p.finish();
        assert_eq!(code, Some(0), "signal {sig}: {err}");
        assert!(
            err.contains(&format!("terminating on signal {sig}")),
            "{err}"
        );
        eprintln!("signal {sig}: exit 0 after {:?}", t0.elapsed());
    }
}

/// Waits until process `pid` has a thread named `name` (fails after [`KILL_AFTER`]).
fn wait_for_thread(pid: libc::pid_t, name: &str) {
    let deadline = Instant::now() + KILL_AFTER;
    loop {
        let found = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
                })
            })
            .unwrap_or(false);
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no thread {name} in {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Finding 8 while sevm waits for the owner's line (`--paused` on stdin, no QMP).
#[test]
fn finding8_signal_while_waiting_for_the_owner_line() {
    if !kvm("finding8_signal_while_waiting_for_the_owner_line") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    let mut p = Proc::spawn(sev_run("hello", &plat, &["--paused"]), Stdio::piped());
    p.wait_line("launch 1 measured:");
    assert_eq!(count_files(&plat).len(), 1);
    p.signal(libc::SIGINT);
    let (code, out, err) = p.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("terminating on signal 2 (SIGINT)"), "{err}");
    assert!(out.is_empty(), "the guest ran without its owner: {out}");
    assert_eq!(count_files(&plat), Vec::<String>::new(), "count file");
}

#[test]
fn finding10_timeout_bounds_the_owner_wait_at_the_first_launch() {
    if !kvm("finding10_timeout_bounds_the_owner_wait_at_the_first_launch") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    // stdin stays open and silent.
    let mut p = Proc::spawn(
        sev_run("hello", &plat, &["--paused", "--timeout", "2"]),
        Stdio::piped(),
    );
    p.wait_line("launch 1 measured:");
    let t0 = Instant::now();
    let (code, out, err) = p.finish();
    let took = t0.elapsed();
    assert_eq!(code, Some(124), "{err}");
    assert!(
        err.contains(
            "--timeout 2 s elapsed while waiting for the owner's line on stdin (launch 1)"
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(count_files(&plat), Vec::<String>::new(), "count file");
    eprintln!("owner wait, launch 1: exit 124 {took:?} after the measurement");
}

#[test]
fn finding10_timeout_bounds_the_owner_wait_at_a_relaunch() {
    if !kvm("finding10_timeout_bounds_the_owner_wait_at_a_relaunch") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    let mut p = Proc::spawn(
        sev_run("reset", &plat, &["--paused", "--timeout", "4"]),
        Stdio::piped(),
    );
    p.wait_line("launch 1 measured:");
    // An empty line: launch 1 runs without a secret, resets, and launch 2 waits.
    let mut stdin = p.child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    p.wait_line("launch 2 measured:");
    let (code, out, err) = p.finish();
    drop(stdin);
    assert_eq!(code, Some(124), "{err}");
    assert!(err.contains("(launch 2)"), "{err}");
    assert!(out.contains("reset guest: boot 01"), "{out}");
    assert!(!out.contains("boot 02"), "launch 2 ran: {out}");
    assert_eq!(count_files(&plat), Vec::<String>::new(), "count file");
}

/// Finding 10: a line of 200 MB on stdin is refused after at most [`MAX_OWNER_LINE`]+1 bytes;
/// the child's peak RSS (from wait4) stays far below the line's size.
#[test]
fn finding10_owner_line_length_is_bounded() {
    if !kvm("finding10_owner_line_length_is_bounded") {
        return;
    }
    const LINE: usize = 200 << 20;
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    let mut p = Proc::spawn(sev_run("hello", &plat, &["--paused"]), Stdio::piped());
    let mut stdin = p.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'A'; 1 << 20];
        let mut sent = 0;
        while sent < LINE {
            match stdin.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break, // sevm stopped reading and exited
            }
        }
        sent
    });
    p.wait_line("launch 1 measured:");
    // Reap with wait4 for the child's own peak RSS.
    let deadline = Instant::now() + KILL_AFTER;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pointers to two live locals; WNOHANG never blocks.
        let r = unsafe { libc::wait4(p.pid(), &mut status, libc::WNOHANG, &mut ru) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == p.pid() {
            break (status, ru);
        }
        if Instant::now() > deadline {
            let _ = p.child.kill();
            panic!("sevm still running: it buffers the line");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let sent = writer.join().unwrap();
    while let Ok(l) = p.lines.recv_timeout(Duration::from_secs(5)) {
        p.stderr.push(l);
    }
    let err = p.stderr.join("\n");
    assert!(libc::WIFEXITED(status), "{err}");
    assert_eq!(libc::WEXITSTATUS(status), 1, "{err}");
    assert!(
        err.contains("the owner's line on stdin is longer than")
            && err.contains("refused without reading it"),
        "{err}"
    );
    let peak_mib = rusage.ru_maxrss / 1024;
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
    assert!(sent < LINE, "sevm read the whole line");
    assert_eq!(count_files(&plat), Vec::<String>::new(), "count file");
    eprintln!("200 MB line: the pipe took {sent} bytes, sevm exit 1, peak RSS {peak_mib} MiB");
}

/// Finding 10 (and 13's stdin part): `/tmp /tmp` is not decoded as base64; each field is
/// validated and the one at fault named; another line may follow.
#[test]
fn finding10_owner_line_fields_are_validated() {
    if !kvm("finding10_owner_line_fields_are_validated") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = platform(t.path());
    let hdr = t.path().join("hdr.bin");
    std::fs::write(&hdr, [0u8; 52]).unwrap();
    let big = t.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 16385]).unwrap();
    let mut p = Proc::spawn(
        sev_run("hello", &plat, &["--paused", "--timeout", "60"]),
        Stdio::piped(),
    );
    p.wait_line("launch 1 measured:");
    let mut stdin = p.child.stdin.take().unwrap();
    let lines = format!(
        "/tmp /tmp\n/tmp/xyz AAAA\n{h} /tmp\n{h} {b}\na b c\n\n",
        h = hdr.display(),
        b = big.display()
    );
    stdin.write_all(lines.as_bytes()).unwrap();
    drop(stdin);
    let (code, out, err) = p.finish();
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "line refused: HEADER: '/tmp' is a directory, not a file or base64",
        "line refused: HEADER: '/tmp/xyz' (no such file) decodes as base64 to 6 bytes; a packet header is exactly 52 bytes",
        "line refused: SECRET: '/tmp' is a directory",
        "line refused: SECRET: file",
        "is 16385 bytes; a secret payload is at most 16384 bytes",
        "expected `HEADER SECRET` (two fields) or an empty line, got 3 fields",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert_eq!(
        err.matches("enter `HEADER SECRET` again").count(),
        5,
        "{err}"
    );
    // The empty line continued without a secret.
    assert!(out.contains("hello from the sevm bundled guest"), "{out}");
}

/// Finding 11: `config check` refuses what `run` refuses (TOML memory, stored C-bit).
#[test]
fn finding11_config_check_refuses_what_run_refuses() {
    let t = tempfile::tempdir().unwrap();
    for (mem, why) in [("1", "too small"), ("1048576", "too large")] {
        let toml = t.path().join(format!("m{mem}.toml"));
        std::fs::write(&toml, format!("guest = \"hello\"\nmemory = {mem}\n")).unwrap();
        for cmd in [&["config", "check"][..], &["run"][..]] {
            let args = [cmd, &["--config", s(&toml)]].concat();
            let (code, _, err) = run_args(&args);
            assert_eq!(code, Some(1), "{args:?}: {err}");
            assert!(
                err.contains("key `memory`: value") && err.contains(why),
                "{args:?}: {err}"
            );
        }
    }
    if !kvm("finding11_config_check_refuses_what_run_refuses (C-bit part)") {
        return;
    }
    let plat = platform(t.path());
    let state = plat.join("sev-state.json");
    let good = std::fs::read_to_string(&state).unwrap();
    assert!(good.contains("\"cbit_pos\": 47"));
    for bad in ["0", "64", "255"] {
        std::fs::write(
            &state,
            good.replace("\"cbit_pos\": 47", &format!("\"cbit_pos\": {bad}")),
        )
        .unwrap();
        let obj = object(1, "");
        let rest = [
            "--guest",
            "hello",
            "--object",
            &obj,
            "--machine",
            MACHINE,
            "--platform-dir",
            s(&plat),
        ];
        for cmd in [&["config", "check"][..], &["run"][..]] {
            let mut c = Command::new(SEVM);
            c.args(cmd).args(rest);
            let (code, out, err) = Proc::spawn(c, Stdio::null()).finish();
            assert_eq!(code, Some(1), "{cmd:?} with cbit_pos {bad}: {out}{err}");
            assert!(
                err.contains(&format!(
                    "field cbit_pos: {bad} is not a usable C-bit position (32..=51)"
                )),
                "{cmd:?} {bad}: {err}"
            );
            assert!(!out.contains("configuration OK"), "{out}");
        }
    }
}

/// Finding 16: a failing serial output stops the run with one clear error (exit 1).
#[test]
fn finding16_serial_output_failure_is_not_silent() {
    if !kvm("finding16_serial_output_failure_is_not_silent") {
        return;
    }
    if !Path::new("/dev/full").exists() {
        missing(
            "finding16_serial_output_failure_is_not_silent",
            "no /dev/full",
        );
        return;
    }
    let (code, _, err) = run_args(&["run", "--guest", "hello", "--serial", "file:/dev/full"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err.matches("COM1 serial output to file /dev/full failed: No space left on device")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("the VM was stopped"), "{err}");
    assert!(
        !err.contains("WARN"),
        "rate-limited warnings instead: {err}"
    );
    // stdout a socket whose reader is gone: EPIPE (Rust programs ignore SIGPIPE).
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(r);
    let child = Command::new(SEVM)
        .args(["run", "--guest", "hello"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(w)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = wait_output(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("COM1 serial output to stdout failed: Broken pipe"),
        "{err}"
    );
}

/// Waits for `child` (stderr piped) with the kill-after deadline; returns (code, stderr).
fn wait_output(mut child: Child) -> (Option<i32>, String) {
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + KILL_AFTER;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child still running after {KILL_AFTER:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

/// Finding 17: `--initrd`/`--cmdline` with a bundled guest are refused, in `run` and in
/// `config check`.
#[test]
fn finding17_initrd_and_cmdline_with_a_bundled_guest_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let initrd = t.path().join("initrd.img");
    std::fs::write(&initrd, b"initrd").unwrap();
    for cmd in [&["run"][..], &["config", "check"][..]] {
        for (opt, val) in [("--cmdline", "console=ttyS0"), ("--initrd", s(&initrd))] {
            let args = [cmd, &["--guest", "hello", opt, val, "--serial", "none"][..]].concat();
            let args: Vec<&str> = if cmd == ["run"] {
                args
            } else {
                args[..args.len() - 2].to_vec()
            };
            let (code, out, err) = run_args(&args);
            assert_eq!(code, Some(1), "{args:?}: {out}{err}");
            assert!(
                err.contains(&format!(
                    "{opt}: the bundled guest `hello` takes no initrd or command line"
                )),
                "{args:?}: {err}"
            );
            assert!(!out.contains("hello from"), "{args:?}: the guest ran");
        }
    }
}

/// Finding 17: the command line and the TOML file must agree on `--guest`/`--memory` (and
/// the other boot keys) instead of the command line silently winning.
#[test]
fn finding17_cli_and_toml_values_must_agree() {
    let t = tempfile::tempdir().unwrap();
    let toml = t.path().join("vm.toml");
    std::fs::write(&toml, "guest = \"hello\"\nmemory = 64\n").unwrap();
    let tp = s(&toml);
    for (extra, want) in [
        (
            &["--memory", "128M"][..],
            "--memory 128 MiB disagrees with the key `memory` (64 MiB)",
        ),
        (
            &["--guest", "cpuid"][..],
            "--guest \"cpuid\" disagrees with the key `guest` (\"hello\")",
        ),
    ] {
        let args = [&["config", "check", "--config", tp][..], extra].concat();
        let (code, _, err) = run_args(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want) && err.contains(tp), "{args:?}: {err}");
    }
    // The same value in both places is fine.
    let (code, out, err) = run_args(&[
        "config", "check", "--config", tp, "--memory", "64M", "--guest", "hello",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("memory: 64 MiB"), "{out}");
}

/// Finding 17: `--memory` follows QEMU's `-m`: a bare number is MiB.
#[test]
fn finding17_bare_memory_numbers_are_mib() {
    let (code, out, err) = run_args(&["config", "check", "--memory", "64"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("memory: 64 MiB"), "{out}");
    let (code, out, _) = run_args(&["config", "check", "--memory", "65536K"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("memory: 64 MiB"), "{out}");
    // 4096 is 4 GiB (too large), no longer 4096 bytes (too small).
    let (code, _, err) = run_args(&["config", "check", "--memory", "4096"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("too large") && err.contains("3072 MiB"),
        "{err}"
    );
}

/// Finding 20: `vcpu_count = "1024"` names the VM's limit, not `--cpus 1024`.
#[test]
fn finding20_vcpu_count_names_the_real_limit() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("launch.conf");
    std::fs::write(&conf, "[sev-launch]\nvcpu_count = \"1024\"\n").unwrap();
    for cmd in [&["config", "check"][..], &["run", "--guest", "hello"][..]] {
        let args = [cmd, &["--sev-config", s(&conf)]].concat();
        let (code, _, err) = run_args(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("key `vcpu_count`: value 1024 out of range: 1..=254 vCPUs"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("--cpus 1024"), "{err}");
    }
}
