//! Runs `tests/qmp/test_qmp_snp.py` (`qemu.qmp` against `sevm run --qmp` of an SEV-SNP guest:
//! `query-sev`'s `sev-snp` branch, HMP `info sev`, QEMU's refusals for SNP) against this
//! build's `sevm` binary.
//!
//! Python: `SEVM_PYTHON`, else `<repo>/.venv/bin/python`; it needs the `qemu.qmp` package.
//! KVM: `/dev/kvm`. When one is missing the test fails with the reason if `CI` is set, else
//! prints SKIP.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn missing<T>(reason: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("qmp_snp: {reason} (required when CI is set)");
    }
    eprintln!("SKIP qmp_snp: {reason}");
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
        return missing(&format!("{} cannot import qemu.qmp", py.display()));
    }
    Some(py)
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
fn qemu_qmp_sees_the_snp_branch_and_qemus_refusals() {
    let (Some(py), Some(())) = (python(), kvm()) else {
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
            "test_qmp_snp.py",
            "-v",
        ])
        .env("SEVM_BIN", env!("CARGO_BIN_EXE_sevm"))
        .output()
        .expect("running the Python QMP test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/qmp/test_qmp_snp.py failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("Ran 1 test") && !stderr.contains("skipped"),
        "the Python test did not run: {stderr}"
    );
}
