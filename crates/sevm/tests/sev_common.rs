//! Not a test: helpers included by the `sev_*` tests (`#[path]` module).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True if /dev/kvm exists; otherwise panics under CI and prints a SKIP reason.
pub fn kvm_or_skip(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: /dev/kvm is missing and CI is set: these SEV tests need KVM");
    }
    eprintln!("SKIP {test}: /dev/kvm is missing (SEV launch tests need KVM)");
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
    if std::env::var_os("CI").is_some() {
        panic!("{test}: sevctl is missing at {} and CI is set", p.display());
    }
    eprintln!("SKIP {test}: sevctl is not installed at {}", p.display());
    None
}

/// Runs the sevm binary.
pub fn sevm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sevm"))
        .args(args)
        .output()
        .expect("cannot run sevm")
}

/// stdout + stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `--object` text for a soft SEV guest.
pub fn object(policy: u32, extra: &str) -> String {
    format!("sev-guest,id=sev0,policy={policy:#x},cbitpos=47,reduced-phys-bits=1{extra}")
}

/// Exports the soft platform chain in `plat` to `dir/chain.cert`.
pub fn export_chain(plat: &Path, dir: &Path) -> PathBuf {
    let chain = dir.join("chain.cert");
    let o = sevm(&[
        "platform",
        "--platform-dir",
        plat.to_str().unwrap(),
        "export",
        "--full",
        chain.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "export: {:?}", text(&o));
    chain
}
