//! Issue 17 ("Hardening"), the monitor's findings: 1 (a failed dump never unlinks its path),
//! 4 (dump files are 0600 and ours), 14 (memsave gives the real reason), 18 (JSON nesting as
//! QEMU, clear HMP address errors), 19 (SEV-ES + NODBG hides the registers) and the QMP
//! socket part of 20 (racing binds, `--qmp` suffixes). Each test is named after its finding.
//! Every client read has a 20 s timeout (qmp_common), so a hang fails instead of blocking.

mod qmp_common;

use qmp_common::*;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vmm::monitor::fake::{FakeBackend, FAKE_MEM_BYTES};
use vmm::monitor::{parse_qmp_spec, QmpServer, QmpServerError, DUMP_WRITE_STALL, MAX_NESTING};

const NODBG_REFUSAL: &str = "SEV: debug access refused: guest policy has NODBG set";
const NO_REGISTERS: &str = "no register state for CPU 0 yet: the vCPUs have not stopped since \
                            they started (use 'stop' first)";
const PRECIOUS: &[u8] = b"precious data that must survive";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skip loudly (fail under CI) when the test needs something this machine lacks.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("required under CI: {why}");
    }
    eprintln!("SKIP: {why}");
}

fn precious_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, PRECIOUS).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

#[track_caller]
fn assert_untouched(f: &Path, mode: u32) {
    let md = std::fs::symlink_metadata(f).expect("the file still exists");
    assert!(md.file_type().is_file());
    assert_eq!(md.mode() & 0o7777, mode, "mode unchanged");
    assert_eq!(std::fs::read(f).unwrap(), PRECIOUS, "content unchanged");
}

fn save(c: &mut Client, cmd: &str, val: i64, size: i64, f: &Path) -> Value {
    c.exec(
        cmd,
        json!({"val": val, "size": size, "filename": f.to_str().unwrap()}),
    )
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

fn desc(r: &Value) -> String {
    r["error"]["desc"]
        .as_str()
        .unwrap_or_else(|| panic!("an error reply: {r}"))
        .to_string()
}

/// Finding 1: every refusal happens before the file is opened; the path is never removed.
#[test]
fn finding1_refused_dumps_leave_an_existing_file_untouched() {
    let h = Harness::sev();
    h.backend.set_virt_needs_stop(true);
    let mut c = h.client();
    let f = precious_file(h.dir.path(), "F", 0o644);
    // Address outside RAM (the issue's reproducer, scaled to the fake's 1 MiB).
    let r = save(&mut c, "pmemsave", FAKE_MEM_BYTES as i64 - 256, 4096, &f);
    assert_eq!(
        desc(&r),
        format!(
            "Invalid addr 0x{:016x}/size 4096 specified: guest physical range 0x{:x}+0x1000 is \
             not RAM",
            FAKE_MEM_BYTES - 256,
            FAKE_MEM_BYTES - 256
        )
    );
    assert_untouched(&f, 0o644);
    // A range that wraps past 2^64.
    let r = save(&mut c, "pmemsave", -16, 4096, &f);
    assert!(desc(&r).ends_with("the range runs past the end of the address space"));
    assert_untouched(&f, 0o644);
    // memsave before stop (no register state to translate with).
    let r = save(&mut c, "memsave", 0, 16, &f);
    assert_generic_err(&r, NO_REGISTERS);
    assert_untouched(&f, 0o644);

    let h = Harness::new(FakeBackend::sev_paused(0x1));
    let mut c = h.client();
    let f = precious_file(h.dir.path(), "F", 0o644);
    for cmd in ["pmemsave", "memsave"] {
        let r = save(&mut c, cmd, 0, 4096, &f);
        assert_generic_err(&r, NODBG_REFUSAL);
        assert_untouched(&f, 0o644);
    }
}

/// Finding 1: ENOSPC after the file was opened: the error is reported, the device stays.
/// As root the test writes into its own copy of /dev/full (mknod c 1 7), so a regression
/// cannot delete the real one.
#[test]
fn finding1_enospc_reports_and_leaves_the_device() {
    let h = Harness::sev();
    let mut c = h.client();
    let dev = if is_root() {
        let p = h.dir.path().join("full");
        let st = Command::new("mknod")
            .arg(&p)
            .args(["c", "1", "7"])
            .status()
            .expect("run mknod");
        assert!(st.success(), "mknod {}", p.display());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        p
    } else {
        let p = PathBuf::from("/dev/full");
        if std::fs::OpenOptions::new().write(true).open(&p).is_err() {
            return skip("/dev/full is not writable here");
        }
        p
    };
    let before = std::fs::symlink_metadata(&dev).unwrap();
    let r = save(&mut c, "pmemsave", 0, 200_000, &dev);
    let d = desc(&r);
    assert!(
        d.starts_with(&format!(
            "Error writing to '{}': No space left on device",
            dev.display()
        )),
        "{d}"
    );
    assert!(
        d.ends_with("is left with the first 0 of 200000 bytes)"),
        "{d}"
    );
    let after = std::fs::symlink_metadata(&dev).expect("the device node still exists");
    assert!(after.file_type().is_char_device());
    assert_eq!(after.rdev(), before.rdev());
    assert_eq!(after.mode(), before.mode(), "no chmod of a device");
    // The session goes on.
    assert_eq!(c.execute("query-status")["return"]["status"], "prelaunch");
}

/// Finding 1: EPIPE (the FIFO's reader goes away mid-dump): reported, the FIFO stays.
#[test]
fn finding1_epipe_reports_and_leaves_the_fifo() {
    let h = Harness::sev();
    let mut c = h.client();
    let fifo = h.dir.path().join("fifo");
    mkfifo(&fifo);
    // Open the reading end first (non-blocking, so it does not wait for a writer), read a
    // little once data flows, then close it.
    let mut rd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let reader = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(15);
        let mut got = 0;
        let mut buf = [0u8; 4096];
        while got < 4096 && Instant::now() < end {
            match rd.read(&mut buf) {
                Ok(n) if n > 0 => got += n,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        got
    });
    let r = save(&mut c, "pmemsave", 0, FAKE_MEM_BYTES as i64, &fifo);
    assert!(reader.join().unwrap() >= 4096, "the reader got data");
    let d = desc(&r);
    assert!(
        d.starts_with(&format!(
            "Error writing to '{}': Broken pipe",
            fifo.display()
        )),
        "{d}"
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("the FIFO still exists")
        .file_type()
        .is_fifo());
}

/// Finding 1: a FIFO nobody reads is refused at once instead of blocking the monitor.
#[test]
fn finding1_fifo_without_reader_is_refused_at_once() {
    let h = Harness::sev();
    let mut c = h.client();
    let fifo = h.dir.path().join("fifo");
    mkfifo(&fifo);
    let t = Instant::now();
    let r = save(&mut c, "pmemsave", 0, 16, &fifo);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_generic_err(
        &r,
        &format!(
            "Could not open '{}': it is a FIFO that no process has open for reading (start the \
             reader first)",
            fifo.display()
        ),
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}

/// Finding 1: a reader that stops reading makes the dump fail after DUMP_WRITE_STALL, and the
/// monitor answers other clients meanwhile.
#[test]
fn finding1_stalled_fifo_reader_does_not_block_the_monitor_forever() {
    let h = Harness::sev();
    let mut c = h.client();
    let fifo = h.dir.path().join("fifo");
    mkfifo(&fifo);
    let rd = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let path = h.path.clone();
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let mut o = Client::connect(&path);
        o.negotiate();
        let t = Instant::now();
        let s = o.execute("query-status")["return"]["status"].clone();
        (s, t.elapsed())
    });
    let t = Instant::now();
    let r = save(&mut c, "pmemsave", 0, FAKE_MEM_BYTES as i64, &fifo);
    let took = t.elapsed();
    let d = desc(&r);
    assert!(
        d.contains(&format!(
            "no progress for {} s: nothing reads from it",
            DUMP_WRITE_STALL.as_secs()
        )),
        "{d}"
    );
    assert!(took >= DUMP_WRITE_STALL && took < DUMP_WRITE_STALL + Duration::from_secs(8));
    let (status, answered) = other.join().unwrap();
    assert_eq!(status, "prelaunch");
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    drop(rd);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    eprintln!("stalled FIFO: dump failed after {took:?}; another client answered in {answered:?}");
}

/// Finding 1 (output files): a symbolic link is never followed.
#[test]
fn finding1_symlink_target_is_refused() {
    let h = Harness::sev();
    let mut c = h.client();
    let f = precious_file(h.dir.path(), "F", 0o644);
    let link = h.dir.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    let r = save(&mut c, "pmemsave", 0, 16, &link);
    assert_generic_err(
        &r,
        &format!(
            "Could not open '{}': it is a symbolic link (dump files are never opened through \
             one)",
            link.display()
        ),
    );
    assert_untouched(&f, 0o644);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Finding 4: an existing file of ours with a wider mode is made 0600 before guest memory
/// goes into it (and truncated: no stale tail).
#[test]
fn finding4_existing_file_is_made_0600_before_the_dump() {
    let h = Harness::sev();
    let mut c = h.client();
    for mode in [0o644, 0o666, 0o4755, 0o400] {
        let f = h.dir.path().join(format!("F{mode:o}"));
        std::fs::write(&f, vec![0xeeu8; 8192]).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = save(&mut c, "pmemsave", 0x100, 300, &f);
        assert_eq!(r, json!({"return": {}}), "mode {mode:o}");
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600, "was {mode:o}");
        let expect: Vec<u8> = (0x100..0x100 + 300).map(|i| (i % 251) as u8).collect();
        assert_eq!(std::fs::read(&f).unwrap(), expect);
    }
    // A new file is created 0600.
    let n = h.dir.path().join("new");
    assert_eq!(save(&mut c, "pmemsave", 0, 16, &n), json!({"return": {}}));
    assert_eq!(std::fs::metadata(&n).unwrap().mode() & 0o7777, 0o600);
}

/// Finding 4: a file that belongs to another user is refused (its owner could read the dump
/// whatever its mode); needs root to create such a file.
#[test]
fn finding4_file_of_another_user_is_refused() {
    if !is_root() {
        return skip("needs root to create a file owned by another uid");
    }
    let h = Harness::sev();
    let mut c = h.client();
    let f = precious_file(h.dir.path(), "F", 0o644);
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let r = save(&mut c, "pmemsave", 0, 16, &f);
    assert_generic_err(
        &r,
        &format!(
            "refusing to write guest memory into '{}': the file belongs to uid 65534 and sevm \
             runs as uid 0 (its owner could read the dump); remove it or choose another file",
            f.display()
        ),
    );
    assert_untouched(&f, 0o644);
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), 65534);
}

/// Finding 4: a file with several hard links is refused (the dump would appear elsewhere).
#[test]
fn finding4_hard_linked_file_is_refused() {
    let h = Harness::sev();
    let mut c = h.client();
    let f = precious_file(h.dir.path(), "F", 0o600);
    let g = h.dir.path().join("G");
    std::fs::hard_link(&f, &g).unwrap();
    let r = save(&mut c, "pmemsave", 0, 16, &g);
    assert!(desc(&r).contains("the file has 2 hard links"), "{r}");
    assert_untouched(&f, 0o600);
}

/// Finding 14: memsave says why it cannot read (no register state, NODBG), as HMP `x` does,
/// instead of "Invalid addr".
#[test]
fn finding14_memsave_gives_the_real_reason() {
    let h = Harness::sev();
    h.backend.set_virt_needs_stop(true);
    let mut c = h.client();
    let f = h.dir.path().join("v.bin");
    let r = save(&mut c, "memsave", 0x40, 16, &f);
    assert_generic_err(&r, NO_REGISTERS);
    assert_eq!(
        c.hmp("x /2x 0x40"),
        format!("0000000000000040: Cannot access memory ({NO_REGISTERS})\r\n")
    );
    c.execute_ok("cont");
    c.execute_ok("stop");
    assert_eq!(save(&mut c, "memsave", 0x40, 16, &f), json!({"return": {}}));
    let expect: Vec<u8> = (0x40..0x50).collect();
    assert_eq!(std::fs::read(&f).unwrap(), expect);
    // Unmapped memory keeps QEMU's message, now with the reason.
    let r = save(&mut c, "memsave", 0x20_0000, 16, &f);
    assert_generic_err(
        &r,
        "Invalid addr 0x0000000000200000/size 16 specified: guest physical range \
         0x200000+0x10 is not RAM",
    );

    let h = Harness::new(FakeBackend::sev_paused(0x1));
    let mut c = h.client();
    let r = save(&mut c, "memsave", 0, 16, &h.dir.path().join("n.bin"));
    assert_generic_err(&r, NODBG_REFUSAL);
    assert_eq!(
        c.hmp("x /2x 0"),
        format!("0000000000000000: Cannot access memory ({NODBG_REFUSAL})\r\n")
    );
}

/// `{"execute": "query-status", "id": [[...[]...]]}` nested `depth` levels in all.
fn nested_request(depth: usize) -> (Vec<u8>, Value) {
    let inner = depth - 1; // the request object is the first level
    let id = format!("{}{}", "[".repeat(inner), "]".repeat(inner));
    let text = format!(r#"{{"execute": "query-status", "id": {id}}}"#);
    let mut de = serde_json::Deserializer::from_str(&id);
    de.disable_recursion_limit();
    let v: Value = serde::Deserialize::deserialize(&mut de).unwrap();
    (text.into_bytes(), v)
}

/// Finding 18: 1024 levels (QEMU's json-streamer MAX_NESTING) are accepted.
#[test]
fn finding18_nesting_at_1024_levels_is_accepted() {
    let h = Harness::sev();
    let mut c = h.client();
    for depth in [129, 500, MAX_NESTING] {
        let (text, id) = nested_request(depth);
        c.send_raw(&text);
        let r = c.reply();
        assert_eq!(r["return"]["status"], "prelaunch", "depth {depth}");
        assert!(r["id"] == id, "depth {depth}: id echoed");
    }
}

/// Finding 18: deeper than 1024 is QEMU's error, the rest of that text is skipped and the
/// session continues (QEMU keeps the client too).
#[test]
fn finding18_nesting_beyond_1024_is_an_error_and_the_session_continues() {
    let h = Harness::sev();
    let mut c = h.client();
    let (text, _) = nested_request(MAX_NESTING + 1);
    c.send_raw(&text);
    let r = c.reply();
    assert_eq!(
        r,
        json!({"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}})
    );
    assert_eq!(c.execute("query-status")["return"]["status"], "prelaunch");
    // A huge run of brackets (with brackets in a string) costs no memory and ends cleanly.
    let n = 200_000;
    let mut big = "[".repeat(n).into_bytes();
    big.extend_from_slice(br#""]]]]""#);
    big.extend("]".repeat(n).into_bytes());
    c.send_raw(&big);
    let r = c.reply();
    assert_eq!(r["error"]["desc"], "JSON nesting depth limit exceeded");
    let r = c.cmd(json!({"execute": "query-kvm", "id": 7}));
    assert_eq!(r["id"], 7);
    assert_eq!(r["return"]["enabled"], true);
}

/// Finding 18: HMP addresses that are negative or do not fit in 64 bits say so.
#[test]
fn finding18_hmp_negative_and_overflowing_addresses() {
    let h = Harness::sev();
    let mut c = h.client();
    let range = "(addresses are 0 to 0xffffffffffffffff)";
    assert_eq!(
        c.hmp("xp -1"),
        format!("xp: address '-1' is negative {range}\r\n")
    );
    assert_eq!(
        c.hmp("xp 0xfffffffffffffffff"),
        format!("xp: address '0xfffffffffffffffff' is out of range {range}\r\n")
    );
    assert_eq!(
        c.hmp("x /2x 0x10-0x20"),
        format!("x: address '0x10-0x20' is negative {range}\r\n")
    );
    assert_eq!(
        c.hmp("xp 18446744073709551615+1"),
        format!("xp: address '18446744073709551615+1' is out of range {range}\r\n")
    );
    assert_eq!(c.hmp("xp nowhere"), "invalid char in expression\r\n");
    assert_eq!(
        c.hmp("xp /1xb 0x20-0x10"),
        "0000000000000010: 0x10\r\n",
        "differences that stay positive still work"
    );
}

/// Finding 19: an SEV-ES guest with NODBG keeps its registers in the encrypted VMSA; plain
/// SEV (registers not encrypted) and ES with debugging allowed still show them.
#[test]
fn finding19_sev_es_nodbg_does_not_show_registers() {
    for (policy, hidden) in [
        (0x5, true),
        (0x7, true),
        (0x1, false),
        (0x4, false),
        (0x0, false),
    ] {
        let h = Harness::new(FakeBackend::sev_paused(policy));
        let mut c = h.client();
        for cpu in [0, 1] {
            let r = c.exec(
                "human-monitor-command",
                json!({"command-line": "info registers", "cpu-index": cpu}),
            );
            let out = r["return"].as_str().unwrap();
            if hidden {
                assert_eq!(
                    out,
                    format!(
                        "Error: the register state of CPU {cpu} is inside the encrypted VMSA of \
                         this SEV-ES guest (policy {policy:#x} has NODBG set), so it cannot be \
                         shown\r\n"
                    )
                );
            } else {
                assert!(out.contains("RIP="), "policy {policy:#x}: {out}");
            }
        }
    }
    let h = Harness::new(FakeBackend::plain());
    assert!(h.client().hmp("info registers").contains("RIP="));
}

/// Finding 20: processes racing for one --qmp path: exactly one wins, every loser is told
/// the address is in use and by which process — never "it exists and is not a socket", and
/// a loser never removes the winner's socket as stale.
#[test]
fn finding20_racing_binds_one_wins_the_others_are_told_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let me = std::process::id() as i32;
    const RACERS: usize = 6;
    for round in 0..30 {
        if round % 2 == 1 {
            // A stale socket from a crashed run: all racers see it.
            drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        }
        let barrier = Arc::new(Barrier::new(RACERS));
        let results: Vec<_> = (0..RACERS)
            .map(|_| {
                let (b, p) = (barrier.clone(), path.clone());
                std::thread::spawn(move || {
                    b.wait();
                    QmpServer::bind(&p, Arc::new(FakeBackend::plain()))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(s) => winners.push(s),
                Err(e @ QmpServerError::InUse(_, Some(pid))) => {
                    assert_eq!(pid, me, "round {round}");
                    let m = e.to_string();
                    assert_eq!(
                        m,
                        format!(
                            "refusing to replace {}: address in use: process {me} (another \
                             sevm?) is listening on it",
                            path.display()
                        )
                    );
                }
                Err(e) => panic!("round {round}: a loser got: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one bind wins");
        let mut w = winners.pop().unwrap();
        w.start().unwrap();
        let mut cl = Client::connect(&path);
        cl.negotiate();
        drop(cl);
        drop(w);
        assert!(
            !path.exists(),
            "round {round}: the winner removed its socket"
        );
    }
}

/// Finding 20: QEMU's socket options on the --qmp path are accepted or refused by name.
#[test]
fn finding20_qmp_path_options() {
    for ok in [
        "unix:/tmp/q.sock",
        "unix:/tmp/q.sock,server",
        "unix:/tmp/q.sock,server,nowait",
        "unix:/tmp/q.sock,server=on,wait=off",
        "unix:/tmp/q.sock,wait=off,server=on",
        "unix:/tmp/q.sock,server=yes,wait=no",
    ] {
        assert_eq!(parse_qmp_spec(ok), Ok(PathBuf::from("/tmp/q.sock")), "{ok}");
    }
    assert_eq!(
        parse_qmp_spec("unix:/tmp/a,,b.sock,server=on"),
        Ok(PathBuf::from("/tmp/a,b.sock")),
        "',,' is a literal comma"
    );
    for (bad, err) in [
        (
            "unix:/tmp/q.sock,foo=bar",
            "unknown option 'foo=bar' (sevm accepts server, server=on, nowait, wait=off)",
        ),
        (
            "unix:/tmp/q.sock,server=on,reconnect=1",
            "unknown option 'reconnect=1' (sevm accepts server, server=on, nowait, wait=off)",
        ),
        (
            "unix:/tmp/q.sock,server=maybe",
            "invalid value 'maybe' for option 'server' (expected on or off)",
        ),
        (
            "unix:/tmp/q.sock,server=off",
            "server=off (connecting to a client's socket) is not supported: sevm's QMP socket \
             is always a listening server",
        ),
        (
            "unix:/tmp/q.sock,server,wait",
            "wait=on (waiting for a client before the VM starts) is not supported: use \
             wait=off (with --paused the VM waits for 'cont')",
        ),
        ("unix:/tmp/q.sock,", "empty option after ','"),
        ("unix:", "the socket path after 'unix:' is empty"),
        (
            "tcp:localhost:4444",
            "expected unix:PATH[,server=on][,wait=off] (only Unix sockets are supported)",
        ),
    ] {
        assert_eq!(parse_qmp_spec(bad), Err(err.to_string()), "{bad}");
    }
}
