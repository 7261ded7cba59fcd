//! Opening the KVM device fails cleanly: an unprivileged user gets a "permission denied"
//! message naming the device and exit code 1 (docs/LAYOUT.md, docs/OPERATOR.md), and a
//! missing device gets a "not found" message naming the path, also with exit code 1.
//!
//! The permission case really drops privileges: the test (running as root, as CI does)
//! spawns the built `sevm` binary as uid/gid 65534 (`nobody`) with no supplementary
//! groups, so the kernel refuses `open("/dev/kvm", O_RDWR)` with `EACCES`. Without root the
//! user cannot be switched: the test prints a SKIP reason, or fails when `CI` is set.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// uid and gid of `nobody`.
const NOBODY: u32 = 65534;

/// The KVM device the binary opens by default.
const KVM: &str = "/dev/kvm";

/// Skips the test (prints the reason) or, under CI, fails with it.
fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("kvm_permission cannot run under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// True if every ancestor directory of `p` is searchable and `p` itself is readable and
/// executable by "other" (which is what uid/gid 65534 without groups falls under).
fn usable_by_others(p: &Path) -> bool {
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    if m.mode() & 0o005 != 0o005 {
        return false;
    }
    p.ancestors().skip(1).all(|d| {
        std::fs::metadata(d)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Asserts the common shape of a failed `sevm run`: exit code 1, no panic, and stderr
/// containing every string in `needles`.
fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1; status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}\nstderr:\n{stderr}");
    }
    for bad in ["panicked", "RUST_BACKTRACE", "thread 'main'"] {
        assert!(!stderr.contains(bad), "stderr shows a panic:\n{stderr}");
    }
    assert!(
        !stdout.contains("hello from the sevm bundled guest"),
        "the guest ran although the KVM device could not be opened:\n{stdout}"
    );
}

#[test]
fn unprivileged_user_gets_permission_denied() {
    // SAFETY: geteuid takes no arguments, has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        skip(&format!(
            "not running as root (euid {euid}), so the test cannot switch to uid {NOBODY}"
        ));
        return;
    }
    let kvm = match std::fs::metadata(KVM) {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("{KVM} is not usable here: {e}"));
            return;
        }
    };
    if kvm.mode() & 0o006 == 0o006 || kvm.uid() == NOBODY || kvm.gid() == NOBODY {
        skip(&format!(
            "{KVM} (mode {:o}, owner {}:{}) is open to uid {NOBODY}, so no EACCES can occur",
            kvm.mode() & 0o7777,
            kvm.uid(),
            kvm.gid()
        ));
        return;
    }

    // The binary must be reachable by nobody; otherwise run a 0755 copy from a temp dir.
    let built = PathBuf::from(env!("CARGO_BIN_EXE_sevm"));
    let tmp = tempfile::tempdir().expect("create temp dir");
    let bin = if usable_by_others(&built) {
        built
    } else {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let copy = tmp.path().join("sevm");
        std::fs::copy(&built, &copy).expect("copy sevm binary");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod sevm copy");
        assert!(
            usable_by_others(&copy),
            "{} is not reachable by uid {NOBODY} (an ancestor directory lacks o+x)",
            copy.display()
        );
        copy
    };

    // std drops supplementary groups (setgroups(0)) when root sets a uid without groups.
    let out = Command::new(&bin)
        .args(["run", "--guest", "hello", "--timeout", "30"])
        .current_dir("/")
        .env_remove("RUST_BACKTRACE")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("spawn sevm as nobody");
    assert_clean_failure(&out, &["permission denied", KVM]);
}

#[test]
fn missing_device_is_named() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let missing = dir.path().join("no-such-kvm");
    let out = Command::new(env!("CARGO_BIN_EXE_sevm"))
        .args(["run", "--guest", "hello", "--timeout", "30", "--kvm-device"])
        .arg(&missing)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("spawn sevm");
    let path = missing.display().to_string();
    assert_clean_failure(&out, &["not found", &path]);
}
