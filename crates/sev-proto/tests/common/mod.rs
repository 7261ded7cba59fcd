//! Shared helpers for the integration tests: locating ../shared/testdata.
#![allow(dead_code)]

use std::path::PathBuf;

/// A prerequisite is missing (`what`): a hard failure when `CI` is set, else `None` after
/// printing `SKIP: what` (never a silent pass).
pub fn missing<T>(what: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} (CI is set, so this is an error)");
    }
    eprintln!("SKIP: {what}");
    None
}

/// The shared testdata directory, or `None` (after printing a SKIP reason) when it is missing
/// and `CI` is not set. With `CI` set, a missing directory is a hard failure.
pub fn testdata() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    if p.is_dir() {
        return Some(p);
    }
    missing(&format!("testdata directory {} not found", p.display()))
}

/// A Python 3 with the `cryptography` package: `$SEVM_PYTHON` when set (an explicit choice is
/// honoured, never silently replaced), else the workspace's `.venv/bin/python`, else
/// `python3`. `None` after a SKIP line (or a failure under `CI`) when there is none.
pub fn python() -> Option<PathBuf> {
    let usable = |p: &std::path::Path| {
        std::process::Command::new(p)
            .args(["-c", "import cryptography"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if let Some(p) = std::env::var_os("SEVM_PYTHON").map(PathBuf::from) {
        if usable(&p) {
            return Some(p);
        }
        return missing(&format!(
            "SEVM_PYTHON={} cannot run `import cryptography`",
            p.display()
        ));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    for c in [venv, PathBuf::from("python3")] {
        if usable(&c) {
            return Some(c);
        }
    }
    missing("no Python with the `cryptography` package (set SEVM_PYTHON)")
}

/// Reads a testdata file (panics with the path on error; only called after `testdata()`).
pub fn read(dir: &std::path::Path, rel: &str) -> Vec<u8> {
    let p = dir.join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Decodes hex into a fixed array.
pub fn h<const N: usize>(s: &str) -> [u8; N] {
    let v = hex::decode(s).expect("hex");
    v.try_into().expect("length")
}

/// Decodes base64.
pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// Encodes base64.
pub fn to_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Bytes 0, 1, 2, ... starting at `start`.
pub fn seq<const N: usize>(start: u8) -> [u8; N] {
    let mut a = [0u8; N];
    for (i, x) in a.iter_mut().enumerate() {
        *x = start.wrapping_add(i as u8);
    }
    a
}
