//! Runs `tests/qmp/test_qmp_sevm.py` (the `qemu.qmp` end-to-end attested launch of
//! `sevm run --paused --qmp`, with the real sevctl as the guest owner) against this build's
//! `sevm` binary.
//!
//! Python: `SEVM_PYTHON`, else `<repo>/.venv/bin/python`; it needs the `qemu.qmp` package.
//! sevctl: `SEVCTL`, else `sevctl` on PATH, else `~/.cargo/bin/sevctl`. KVM: `/dev/kvm`.
//! When one is missing the test fails with the reason if `CI` is set, else prints SKIP.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails under CI, else prints the reason and returns `None`.
fn missing<T>(reason: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("qmp_e2e: {reason} (required when CI is set)");
    }
    eprintln!("SKIP qmp_e2e: {reason}");
    None
}

fn python() -> Option<PathBuf> {
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
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return missing(&format!(
            "{} cannot import qemu.qmp (pip install qemu.qmp)",
            py.display()
        ));
    }
    Some(py)
}

fn sevctl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SEVCTL") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sevctl"))
            .find(|p| p.is_file())
    });
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/sevctl"));
    match on_path.or(home.filter(|p| p.is_file())) {
        Some(p) => Some(p),
        None => missing("sevctl 0.6.2 is not installed (cargo install sevctl --version 0.6.2)"),
    }
}

fn kvm() -> Option<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Some(()),
        Err(e) => missing(&format!("/dev/kvm is not usable: {e}")),
    }
}

#[test]
fn qemu_qmp_attested_launch_with_sevctl() {
    let (Some(py), Some(sevctl), Some(())) = (python(), sevctl(), kvm()) else {
        return;
    };
    let out = Command::new(&py)
        .current_dir(repo())
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests/qmp",
            "-p",
            "test_qmp_sevm.py",
            "-v",
        ])
        .env("SEVM_BIN", env!("CARGO_BIN_EXE_sevm"))
        .env("SEVCTL", &sevctl)
        .output()
        .expect("running the Python QMP test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/qmp/test_qmp_sevm.py failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("Ran ") && !stderr.contains("skipped"),
        "the Python test did not run: {stderr}"
    );
}
