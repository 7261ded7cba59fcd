//! `sevm_files`: the one reader of user files and the one creator of output files. Fuzz bytes
//! become a file's contents (written directly, through `write_output` or through
//! `write_atomic`), then are read back with a random limit through every reading API.
//!
//! Input: `flags (1 byte) ‖ limit (2 bytes LE) ‖ contents`.
//! Invariants: a read is Ok iff `len ≤ max` and (the file is non-empty or empty is allowed);
//! what comes back equals the contents and is never longer than `max`; a refusal says why
//! (TooLarge / Empty / NotUtf8 / Symlink); streaming, head and tail agree with the contents.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sevm_files::{FileError, Limit};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn dir() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

fn check_read(r: Result<Vec<u8>, FileError>, data: &[u8], max: u64, allow_empty: bool) {
    let fits = data.len() as u64 <= max;
    let want_ok = fits && (allow_empty || !data.is_empty());
    match r {
        Ok(v) => {
            assert!(want_ok, "accepted {} bytes with max {max}", data.len());
            assert!(v.len() as u64 <= max);
            assert_eq!(v, data, "contents differ");
        }
        Err(FileError::TooLarge { size, max: m, .. }) => {
            assert!(!fits && size == data.len() as u64 && m == max, "wrong TooLarge");
        }
        Err(FileError::Empty { .. }) => assert!(data.is_empty() && !allow_empty && fits),
        Err(e) => panic!("unexpected error for a regular file: {e}"),
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let flags = input[0];
    let raw = u16::from_le_bytes([input[1], input[2]]) as u64;
    let data = &input[3..];
    // Half the time a limit near the length (the boundary), else anything.
    let max = if flags & 0x80 == 0 {
        raw % (data.len() as u64 + 2)
    } else {
        raw
    };
    let allow_empty = flags & 1 != 0;
    let path: PathBuf = dir().join("f");
    match (flags >> 1) & 3 {
        0 => std::fs::write(&path, data).expect("write"),
        1 => {
            let mode = if flags & 8 != 0 { 0o600 } else { 0o644 };
            let o = sevm_files::write_output(&path, "fuzz", data, mode).expect("write_output");
            assert!(o.is_regular() && !o.is_stdout());
        }
        _ => sevm_files::write_atomic(&path, "fuzz", data, 0o600).expect("write_atomic"),
    }
    let mut limit = Limit::new("fuzz", max).why("fuzzed limit");
    if allow_empty {
        limit = limit.allow_empty();
    }
    check_read(limit.read(&path), data, max, allow_empty);
    check_read(
        sevm_files::read_bounded(&path, "fuzz", max),
        data,
        max,
        false,
    );
    match limit.read_to_string(&path) {
        Ok(s) => assert_eq!(s.as_bytes(), data),
        Err(FileError::NotUtf8 { .. }) => {
            assert!(data.len() as u64 <= max && std::str::from_utf8(data).is_err())
        }
        Err(e) => check_read(Err(e), data, max, allow_empty),
    }
    // Streaming, head and tail.
    if let Ok(mut o) = limit.open(&path) {
        assert_eq!(o.size(), data.len() as u64);
        let n = (flags as usize >> 4) * 7 + 1;
        assert_eq!(o.read_head(n).expect("head"), &data[..n.min(data.len())]);
        assert_eq!(
            o.read_tail(n as u64).expect("tail"),
            &data[data.len() - n.min(data.len())..]
        );
        let mut got = Vec::new();
        let total = o.stream(n, |b| got.extend_from_slice(b)).expect("stream");
        assert_eq!(total, data.len() as u64);
        assert_eq!(got, data);
    }
    // Through a symbolic link: followed by default, refused with no_follow.
    let link = dir().join("l");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    check_read(limit.read(&link), data, max, allow_empty);
    assert!(matches!(
        limit.clone().no_follow().read(&link),
        Err(FileError::Symlink { .. })
    ));
});
