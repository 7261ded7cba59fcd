//! Full disk and read-only platform directory, through the real `sevm` binary.
//!
//! The platform directory lives on a small tmpfs mounted in a private mount namespace
//! (`unshare -m`), so the test needs root (or CAP_SYS_ADMIN). The parent test re-runs this
//! test binary inside the namespace with the tmpfs mounted; the child does the work. When
//! mounting is not permitted the test prints SKIP, or fails when CI is set.
//!
//! What must hold: every `sevm platform` command that has to write fails with exit status 1
//! and an error naming the file and the errno (ENOSPC / EROFS), and the identity on disk
//! (chip id, CEK, CA, PDH, PEK, OCA) is byte-for-byte what it was before.

#[path = "sev_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{missing, platform_args, sevm, sevm_ok};

const CHILD_MNT: &str = "SEVM_FAULTS_DISK_MNT";
const CHILD_SCRATCH: &str = "SEVM_FAULTS_DISK_SCRATCH";
/// Exit status of the namespace shell when the tmpfs cannot be mounted.
const NO_MOUNT: i32 = 77;
/// tmpfs size: holds the state file (~35 KiB) and its temp copy, but little more.
const TMPFS_SIZE: &str = "160k";

/// Runs `sevm args`, which must fail with status 1 and a one-line error naming a path under
/// `dir` and containing one of `errno_texts`. Returns the error text.
fn must_fail(args: &[&str], dir: &Path, errno_texts: &[&str]) -> String {
    let o = sevm(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "sevm {args:?}: {err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "sevm {args:?}: no `error:` line: {err}"
    );
    assert!(!err.contains("panicked"), "sevm {args:?} panicked: {err}");
    let clear = errno_texts.iter().any(|t| err.contains(t)) && err.contains(dir.to_str().unwrap());
    // Bug 2 (docs/RELIABILITY.md, "Fault injection"): a state-file write that fails inside
    // a firmware command is reported as HWERROR_PLATFORM; the file and errno are in an ERROR
    // log line on stderr since sevm installs a tracing subscriber. Without that line it is
    // tolerated unless SEVM_FAULTS_STRICT is set.
    let known_gap = err.contains("HWERROR_PLATFORM (0x13)");
    if !clear && known_gap && std::env::var_os("SEVM_FAULTS_STRICT").is_none() {
        eprintln!("GAP (open bug): sevm {args:?}: {}", err.trim());
        return err;
    }
    assert!(
        clear,
        "sevm {args:?}: error does not name {errno_texts:?} and a file under {}: {err}",
        dir.display()
    );
    err
}

fn mount(args: &[&str]) {
    let st = Command::new("mount")
        .args(args)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount {args:?} failed");
}

/// Full export (PDH‖PEK‖OCA‖CEK‖ASK‖ARK) and GET_ID: the whole identity.
fn snapshot(d: &str, out: &Path) -> (Vec<u8>, String) {
    let f = out.join("snap.bin");
    let _ = std::fs::remove_file(&f);
    sevm_ok(&platform_args(
        d,
        &["export", "--full", f.to_str().unwrap()],
    ));
    let id = sevm_ok(&platform_args(d, &["id"]));
    (
        std::fs::read(&f).unwrap(),
        String::from_utf8_lossy(&id.stdout).trim().to_string(),
    )
}

/// Fills the file system holding `dir` with a filler file until ENOSPC; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("create filler");
    let chunk = [0xAAu8; 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    let _ = f.sync_all();
    p
}

fn libc_enospc() -> i32 {
    28
}

/// Child: runs inside the private mount namespace with a tmpfs at `CHILD_MNT`.
#[test]
fn child_full_and_read_only_disk() {
    let (Ok(mnt), Ok(scratch)) = (std::env::var(CHILD_MNT), std::env::var(CHILD_SCRATCH)) else {
        return;
    };
    let mnt = PathBuf::from(mnt);
    let scratch = PathBuf::from(scratch);
    let dir = mnt.join("platform");
    let d = dir.to_str().unwrap();

    // A fresh identity on the tmpfs.
    let (full0, id0) = snapshot(d, &scratch);
    assert!(full0.len() > 4 * 2084);
    let state = std::fs::metadata(dir.join("sev-state.json")).unwrap().len();
    eprintln!("state file: {state} bytes on a {TMPFS_SIZE} tmpfs");

    // --- Full disk ---
    let filler = fill(&mnt);
    let enospc = ["No space left on device", "os error 28"];
    for verb in [&["pdh-gen"][..], &["pek-gen"], &["reset"]] {
        let e = must_fail(&platform_args(d, verb), &dir, &enospc);
        eprintln!("full disk, sevm platform {verb:?}: {}", e.trim());
    }
    // Read-only verbs need no write (INIT does not rewrite an unchanged state, bug 2 fix).
    sevm_ok(&platform_args(d, &["status"]));
    // Nor does an SEV launch: the guest count it publishes for other processes' status is
    // best effort, so a full disk does not stop a VM.
    if common::kvm_usable() {
        let (out, err) = common::Run::guest("hello")
            .sev(0, "")
            .platform(&dir)
            .opt("--timeout", "60")
            .exits(0);
        assert!(out.contains("hello from"), "{out}\n{err}");
        eprintln!("full disk, sevm run (SEV, soft): exit 0");
    }
    let (full_during, _) = snapshot(d, &scratch);
    assert!(
        full_during == full0,
        "export on a full disk changed the identity"
    );
    // An output file on the full disk: the error names that file.
    let out_on_full = mnt.join("chain.bin");
    let e = must_fail(
        &platform_args(d, &["export", "--ca", out_on_full.to_str().unwrap()]),
        &mnt,
        &enospc,
    );
    eprintln!("full disk, export --ca to the full disk: {}", e.trim());
    // GET_ID needs no write and still answers, with the same id.
    let id = sevm_ok(&platform_args(d, &["id"]));
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), id0);
    // Space back: nothing was lost, not even the PDH.
    std::fs::remove_file(&filler).unwrap();
    let _ = std::fs::remove_file(&out_on_full);
    let (full1, id1) = snapshot(d, &scratch);
    assert_eq!(id1, id0, "chip id changed after ENOSPC");
    assert!(full1 == full0, "identity changed after ENOSPC");
    sevm_ok(&platform_args(d, &["pdh-gen"]));
    let (full2, _) = snapshot(d, &scratch);
    assert_ne!(
        full2[..2084],
        full0[..2084],
        "PDH_GEN did not change the PDH"
    );
    assert_eq!(
        full2[2084..],
        full0[2084..],
        "PDH_GEN changed more than the PDH"
    );

    // --- Read-only file system (tmpfs remounted ro: root ignores file modes) ---
    mount(&["-o", "remount,ro", mnt.to_str().unwrap()]);
    let erofs = ["Read-only file system", "os error 30"];
    for verb in [
        &["pdh-gen"][..],
        &["pek-gen"],
        &["reset"],
        &["status"],
        &["id"],
    ] {
        let e = must_fail(&platform_args(d, verb), &dir, &erofs);
        eprintln!("read-only, sevm platform {verb:?}: {}", e.trim());
    }
    let ro_out = scratch.join("ro-export.bin");
    must_fail(
        &platform_args(d, &["export", ro_out.to_str().unwrap()]),
        &dir,
        &erofs,
    );
    // A platform dir that does not exist yet on a read-only fs: error names the dir.
    let fresh = mnt.join("fresh");
    must_fail(
        &platform_args(fresh.to_str().unwrap(), &["status"]),
        &fresh,
        &erofs,
    );
    mount(&["-o", "remount,rw", mnt.to_str().unwrap()]);
    let (full3, id3) = snapshot(d, &scratch);
    assert_eq!(id3, id0);
    assert!(
        full3 == full2,
        "identity changed after the read-only period"
    );

    // --- Read-only bind mount of the directory ---
    let bind = mnt.join("bind-ro");
    std::fs::create_dir(&bind).unwrap();
    mount(&["--bind", d, bind.to_str().unwrap()]);
    mount(&["-o", "remount,bind,ro", bind.to_str().unwrap()]);
    let e = must_fail(
        &platform_args(bind.to_str().unwrap(), &["pdh-gen"]),
        &bind,
        &erofs,
    );
    eprintln!("read-only bind mount, pdh-gen: {}", e.trim());
    let (full4, _) = snapshot(d, &scratch);
    assert!(
        full4 == full2,
        "identity changed through the read-only bind mount"
    );
    println!("CHILD-DONE");
}

#[test]
fn full_disk_and_read_only_dir_fail_clearly_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    let me = std::env::current_exe().unwrap();
    let script = format!(
        "mount --make-rprivate / 2>/dev/null; \
         mount -t tmpfs -o size={TMPFS_SIZE} sevm-faults \"$0\" || exit {NO_MOUNT}; exec \"$@\""
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .arg(&mnt)
        .arg(&me)
        .args([
            "--exact",
            "child_full_and_read_only_disk",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MNT, &mnt)
        .env(CHILD_SCRATCH, &scratch)
        .output();
    let skip = |why: String| {
        missing(
            "full_disk_and_read_only_dir_fail_clearly_and_lose_nothing",
            &why,
        )
    };
    let o = match o {
        Ok(o) => o,
        Err(e) => return skip(format!("cannot run unshare: {e}")),
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(NO_MOUNT) || stderr.contains("unshare failed") {
        return skip(format!(
            "no private mount namespace or tmpfs mount allowed (need root/CAP_SYS_ADMIN): {}",
            stderr.trim()
        ));
    }
    eprintln!("{stderr}");
    assert!(
        o.status.success() && stdout.contains("CHILD-DONE") && stdout.contains("1 passed"),
        "child failed ({:?}):\n{stdout}\n{stderr}",
        o.status
    );
}
