//! Unit tests: every branch of the reader, the output creator, the atomic writer and the
//! private-directory check.

use super::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs `f` on another thread and fails if it does not return within 10 s (a regression to
/// "blocks forever" must fail, not hang the test run).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the call blocked for more than 10 s")
}

#[test]
fn regular_file_is_read_whole() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("k");
    std::fs::write(&p, b"kernel bytes").unwrap();
    assert_eq!(read_bounded(&p, "--kernel", 12).unwrap(), b"kernel bytes");
    assert_eq!(
        read_bounded_to_string(&p, "--x", 100).unwrap(),
        "kernel bytes"
    );
    // Exactly at the limit is fine, one byte over is not.
    let e = read_bounded(&p, "--kernel", 11).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::TooLarge {
                size: 12,
                max: 11,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn fifo_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fifo");
    mkfifo(&p);
    let q = p.clone();
    let e = within_10s(move || read_bounded(&q, "dh-cert-file", 1 << 16).unwrap_err());
    let msg = e.to_string();
    assert!(matches!(e, FileError::NotRegular { .. }), "{msg}");
    assert!(
        msg.contains("dh-cert-file")
            && msg.contains(&p.display().to_string())
            && msg.contains("is a FIFO"),
        "{msg}"
    );
}

#[test]
fn dev_zero_is_refused_as_a_character_device() {
    let t = Instant::now();
    let e = read_bounded(Path::new("/dev/zero"), "--kernel", u64::MAX).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    let msg = e.to_string();
    assert_eq!(
        msg,
        "--kernel: /dev/zero is a character device (e.g. /dev/zero); a regular file is needed"
    );
}

#[test]
fn dev_null_reads_as_an_empty_file() {
    let e = read_bounded(Path::new("/dev/null"), "--kernel", 100).unwrap_err();
    assert!(matches!(e, FileError::Empty { .. }), "{e}");
    let v = Limit::new("--kernel", 100)
        .allow_empty()
        .read(Path::new("/dev/null"))
        .unwrap();
    assert!(v.is_empty());
}

#[test]
fn directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let e = read_bounded(d.path(), "--initrd", 100).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert_eq!(e.path(), d.path());
}

#[test]
fn oversize_sparse_file_is_refused_before_reading() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("huge");
    let f = File::create(&p).unwrap();
    f.set_len(8 << 30).unwrap(); // 8 GiB, sparse
    let t = Instant::now();
    let e = Limit::new("--kernel", 1 << 30)
        .why("it must fit in guest RAM")
        .read(&p)
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "it was read: {:?}",
        t.elapsed()
    );
    let msg = e.to_string();
    assert!(
        msg.contains("8589934592 bytes")
            && msg.contains("limit of 1073741824 bytes")
            && msg.contains("it must fit in guest RAM"),
        "{msg}"
    );
}

#[test]
fn empty_file_is_reported_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("empty");
    std::fs::write(&p, b"").unwrap();
    let e = read_bounded(&p, "--firmware", 100).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("--firmware: {} is empty", p.display())
    );
    assert_eq!(Limit::new("x", 100).allow_empty().read(&p).unwrap(), b"");
}

#[test]
fn reason_leaves_out_what_and_path() {
    let e = read_bounded(Path::new("/dev/zero"), "--kernel", 1).unwrap_err();
    assert_eq!(
        e.reason(),
        "is a character device (e.g. /dev/zero); a regular file is needed"
    );
}

#[test]
fn missing_file_is_not_found() {
    let d = tempfile::tempdir().unwrap();
    let e = read_bounded(&d.path().join("nope"), "--tik", 16).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("No such file"), "{e}");
}

#[test]
fn symlinks_are_followed_unless_refused() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("t");
    std::fs::write(&target, b"state").unwrap();
    let link = d.path().join("l");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(read_bounded(&link, "x", 10).unwrap(), b"state");
    let e = Limit::new("state file", 10)
        .no_follow()
        .read(&link)
        .unwrap_err();
    assert!(matches!(e, FileError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains("is a symbolic link to"), "{e}");
    // A dangling link is a refusal too, never "not found" (which would mean "create it").
    let dangling = d.path().join("dangling");
    std::os::unix::fs::symlink(d.path().join("missing"), &dangling).unwrap();
    let e = Limit::new("state file", 10)
        .no_follow()
        .read(&dangling)
        .unwrap_err();
    assert!(
        matches!(e, FileError::Symlink { .. }) && !e.is_not_found(),
        "{e}"
    );
}

#[test]
fn a_file_that_grows_stays_bounded() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("g");
    std::fs::write(&p, b"0123").unwrap();
    let o = Limit::new("--secret", 8)
        .why("the secret area")
        .open(&p)
        .unwrap();
    assert_eq!(o.size(), 4);
    // It grows after the size check.
    std::fs::write(&p, b"0123456789abcdef").unwrap();
    let e = o.read_all().unwrap_err();
    assert!(matches!(e, FileError::Grew { max: 8, .. }), "{e}");
    let o = Limit::new("--kernel", 8).open(&p);
    assert!(matches!(o, Err(FileError::TooLarge { .. })));
    // Streaming is bounded the same way.
    std::fs::write(&p, b"0123").unwrap();
    let o = Limit::new("--kernel", 8).open(&p).unwrap();
    std::fs::write(&p, b"0123456789abcdef").unwrap();
    let mut seen = 0usize;
    let e = o.stream(3, |b| seen += b.len()).unwrap_err();
    assert!(matches!(e, FileError::Grew { .. }), "{e}");
    assert!(seen <= 8, "{seen}");
    // And a file that shrank to nothing is empty.
    std::fs::write(&p, b"0123").unwrap();
    let o = Limit::new("--kernel", 8).open(&p).unwrap();
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(o.read_all(), Err(FileError::Empty { .. })));
}

#[test]
fn stream_head_and_tail() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    std::fs::write(&p, &data).unwrap();
    let mut o = Limit::new("--firmware", 10_000).open(&p).unwrap();
    assert_eq!(o.read_head(16).unwrap(), &data[..16]);
    assert_eq!(o.read_tail(100).unwrap(), &data[data.len() - 100..]);
    assert_eq!(o.read_tail(1 << 20).unwrap(), data);
    let mut got = Vec::new();
    assert_eq!(o.stream(333, |b| got.extend_from_slice(b)).unwrap(), 10_000);
    assert_eq!(got, data);
}

#[test]
fn not_utf8_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(&p, [0xff, 0xfe]).unwrap();
    let e = read_bounded_to_string(&p, "--config", 100).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("--config: {} is not UTF-8 text", p.display())
    );
}

// ---------------------------------------------------------------------------------------------
// Outputs

#[test]
fn new_output_gets_the_mode_and_existing_private_output_is_tightened() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tek.bin");
    let o = write_output(&p, "TEK", b"0123456789abcdef", MODE_PRIVATE).unwrap();
    assert!(o.created() && o.is_regular() && !o.is_stdout());
    assert_eq!(mode(&p), 0o600);
    assert_eq!(std::fs::read(&p).unwrap(), b"0123456789abcdef");
    // An existing world-readable file is made 0600 before the key is written, and truncated.
    std::fs::write(&p, b"an older and longer public file").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = write_output(&p, "TEK", b"key", MODE_PRIVATE).unwrap();
    assert!(!o.created());
    assert_eq!(mode(&p), 0o600);
    assert_eq!(std::fs::read(&p).unwrap(), b"key");
    // A public output keeps an existing file's mode.
    let h = d.path().join("h");
    std::fs::write(&h, b"0123456789").unwrap();
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_output(&h, "HEADER", b"ab", MODE_PUBLIC).unwrap();
    assert_eq!(mode(&h), 0o640);
    assert_eq!(std::fs::read(&h).unwrap(), b"ab");
}

#[test]
fn output_symlinks_to_files_are_refused_and_targets_untouched() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = d.path().join("out");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let e = create_output(&link, "export", MODE_PUBLIC).unwrap_err();
    assert!(matches!(e, FileError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains("export:"), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // A dangling link: nothing is created at its target.
    let target = d.path().join("would-be-created");
    let dl = d.path().join("dl");
    std::os::unix::fs::symlink(&target, &dl).unwrap();
    let e = create_output(&dl, "TEK", MODE_PRIVATE).unwrap_err();
    assert!(e.to_string().contains("points to nothing"), "{e}");
    assert!(!target.exists());
    assert!(std::fs::symlink_metadata(&dl)
        .unwrap()
        .file_type()
        .is_symlink());
    // A link to a character device that is not our stdout/stderr.
    let nl = d.path().join("null-link");
    std::os::unix::fs::symlink("/dev/null", &nl).unwrap();
    let e = create_output(&nl, "x", MODE_PUBLIC).unwrap_err();
    assert!(matches!(e, FileError::Symlink { .. }), "{e}");
}

#[test]
fn dash_is_stdout() {
    let o = create_output(Path::new("-"), "export", MODE_PUBLIC).unwrap();
    assert!(o.is_stdout() && !o.created());
    assert!(!Path::new("-").exists());
}

#[test]
fn fifo_output_without_reader_fails_fast_and_with_reader_works() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fifo");
    mkfifo(&p);
    let q = p.clone();
    let e = within_10s(move || create_output(&q, "--serial", MODE_PUBLIC).unwrap_err());
    assert!(matches!(e, FileError::NoReader { .. }), "{e}");
    assert!(p.exists(), "the FIFO was removed");
    // With a reader.
    let q = p.clone();
    let reader = std::thread::spawn(move || std::fs::read(&q).unwrap());
    let mut out = None;
    for _ in 0..200 {
        match create_output(&p, "--serial", MODE_PUBLIC) {
            Ok(o) => {
                out = Some(o);
                break;
            }
            Err(FileError::NoReader { .. }) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
    let mut o = out.expect("the reader never opened the FIFO");
    assert!(!o.is_regular() && !o.created());
    o.write_all(b"through the fifo").unwrap();
    drop(o);
    assert_eq!(reader.join().unwrap(), b"through the fifo");
}

#[test]
fn pipe_through_proc_link_and_char_device_outputs() {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) just returned these two descriptors; each is owned exactly once here.
    let (r, w) = unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    };
    // /proc/self/fd/N is a symbolic link to the pipe, as /dev/stdout is to fd 1.
    let p = PathBuf::from(format!("/proc/self/fd/{}", w.as_raw_fd()));
    let mut o = create_output(&p, "export", MODE_PUBLIC).unwrap();
    assert!(!o.is_regular());
    o.write_all(b"chain").unwrap();
    drop(o);
    drop(w);
    let mut got = Vec::new();
    (&r).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"chain");
    // A character device named directly is written, never truncated or replaced.
    let mut o = create_output(Path::new("/dev/null"), "export", MODE_PUBLIC).unwrap();
    o.write_all(b"x").unwrap();
    assert!(!o.created() && !o.is_regular());
    o.remove_if_created();
    assert!(Path::new("/dev/null").exists());
}

#[test]
fn directory_and_block_device_outputs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let e = create_output(d.path(), "export", MODE_PUBLIC).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
}

#[test]
fn remove_if_created_never_removes_what_existed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("existing");
    std::fs::write(&p, b"old").unwrap();
    create_output(&p, "x", MODE_PUBLIC)
        .unwrap()
        .remove_if_created();
    assert!(p.exists());
    let n = d.path().join("new");
    create_output(&n, "x", MODE_PUBLIC)
        .unwrap()
        .remove_if_created();
    assert!(!n.exists());
}

#[test]
fn atomic_write_replaces_and_is_private() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sev-state.json");
    write_atomic(&p, "state", b"{1}", 0o600).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"{1}");
    assert_eq!(mode(&p), 0o600);
    write_atomic(&p, "state", b"{2}", 0o600).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"{2}");
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("sev-state.json")]);
}

#[test]
fn atomic_write_ignores_planted_temp_names_and_refuses_links() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sev-state.json");
    // The old predictable temp name, pre-created by someone else: never written.
    let planted = d
        .path()
        .join(format!(".sev-state.json.tmp.{}", std::process::id()));
    std::fs::write(&planted, b"").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    write_atomic(&p, "state", b"secret keys", 0o600).unwrap();
    assert_eq!(std::fs::read(&planted).unwrap(), b"");
    assert_eq!(mode(&p), 0o600);
    // A link in place of the state file, to a file or to nothing, is refused and kept.
    let other = d.path().join("other");
    std::fs::write(&other, b"x").unwrap();
    let link = d.path().join("linked.json");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let e = write_atomic(&link, "state", b"k", 0o600).unwrap_err();
    assert!(matches!(e, FileError::Symlink { .. }), "{e}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&other).unwrap(), b"x");
    let dl = d.path().join("dangling.json");
    std::os::unix::fs::symlink(d.path().join("nothing"), &dl).unwrap();
    assert!(write_atomic(&dl, "state", b"k", 0o600).is_err());
    assert!(!d.path().join("nothing").exists());
    // A directory in its place.
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = write_atomic(&sub, "state", b"k", 0o600).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
}

#[test]
fn private_dir_is_created_0700_and_checked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a/b/platform");
    create_private_dir(&p, "--platform-dir").unwrap();
    assert_eq!(mode(&p), 0o700);
    // Group-writable: refused with the fix.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
    let e = create_private_dir(&p, "--platform-dir").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("writable by group or others (mode 0775)") && msg.contains("chmod go-w"),
        "{msg}"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    check_private_dir(&p, "--platform-dir").unwrap();
    // A regular file.
    let f = d.path().join("file");
    std::fs::write(&f, b"").unwrap();
    let e = create_private_dir(&f, "--platform-dir").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "--platform-dir: {} is a regular file, not a directory",
            f.display()
        )
    );
    // Another user's directory (only root can make one here).
    if euid() == 0 {
        let o = d.path().join("theirs");
        std::fs::DirBuilder::new().mode(0o700).create(&o).unwrap();
        std::os::unix::fs::chown(&o, Some(4242), None).unwrap();
        let e = check_private_dir(&o, "--platform-dir").unwrap_err();
        assert!(e.to_string().contains("belongs to uid 4242"), "{e}");
    } else {
        eprintln!("SKIP: not root, cannot make a directory owned by another user");
    }
}
