//! Runs `tests/qmp/test_qmp_snp.py` (`qemu.qmp` against `sevm run --qmp` of an SEV-SNP guest:
//! `query-sev`'s `sev-snp` branch, HMP `info sev`, QEMU's refusals for SNP) against this
//! build's `sevm` binary.
//!
//! Python: `SEVM_PYTHON`, else `<repo>/.venv/bin/python`; it needs the `qemu.qmp` package.
//! KVM: `/dev/kvm`. When one is missing the test fails with the reason if `CI` is set, else
//! prints SKIP.

mod common;

#[test]
fn qemu_qmp_sees_the_snp_branch_and_qemus_refusals() {
    let Some(py) = common::qmp_python() else {
        return;
    };
    if !common::kvm() {
        return;
    }
    common::run_qmp_unittest(&py, "test_qmp_snp.py", &[]);
}
