//! Runs `tests/qmp/test_qmp_sevm.py` (the `qemu.qmp` end-to-end attested launch of
//! `sevm run --paused --qmp`, with the real sevctl as the guest owner) against this build's
//! `sevm` binary.
//!
//! Python: `SEVM_PYTHON`, else `<repo>/.venv/bin/python`; it needs the `qemu.qmp` package.
//! sevctl: `SEVCTL`, else `sevctl` on PATH, else `~/.cargo/bin/sevctl`. KVM: `/dev/kvm`.
//! When one is missing the test fails with the reason if `CI` is set, else prints SKIP.

mod common;

use std::path::PathBuf;

/// `$SEVCTL`, else sevctl 0.6.2 from PATH or ~/.cargo/bin.
fn sevctl() -> Option<PathBuf> {
    std::env::var_os("SEVCTL")
        .map(PathBuf::from)
        .or_else(common::sevctl)
}

#[test]
fn qemu_qmp_attested_launch_with_sevctl() {
    let (Some(py), Some(sevctl)) = (common::qmp_python(), sevctl()) else {
        return;
    };
    if !common::kvm() {
        return;
    }
    common::run_qmp_unittest(&py, "test_qmp_sevm.py", &[("SEVCTL", sevctl.as_os_str())]);
}
