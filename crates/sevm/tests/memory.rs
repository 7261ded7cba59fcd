//! `sevm owner measure` streams its inputs: peak RSS stays under 16 MiB for a 4 MiB firmware,
//! 16 MiB kernel and 64 MiB initrd (sparse files, so the test is cheap on disk).

mod common;
use common::*;

/// Peak resident set of all waited-for children of this process, in KiB.
fn children_maxrss_kib() -> i64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer we pass; it is valid and
    // properly aligned for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage returned 0, so it initialised the struct.
    unsafe { ru.assume_init() }.ru_maxrss
}

#[test]
fn measure_streams_large_images_in_small_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 4 MiB firmware: the sample's footer table at the end of a sparse file.
    let sample = std::fs::read(samples().join("sample-ovmf.fd")).unwrap();
    let fw = d.join("fw.fd");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&fw).unwrap();
        let tail = &sample[sample.len() - 4096..];
        f.seek(SeekFrom::Start(4 * 1024 * 1024 - 4096)).unwrap();
        f.write_all(tail).unwrap();
    }
    let kernel = d.join("kernel");
    std::fs::File::create(&kernel)
        .unwrap()
        .set_len(16 * 1024 * 1024)
        .unwrap();
    let initrd = d.join("initrd");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let out = ok(sevm()
        .args(["owner", "measure", "--firmware"])
        .arg(&fw)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "console=ttyS0"]));
    assert_eq!(out.len(), 64, "{out}");
    let rss = children_maxrss_kib();
    eprintln!("peak RSS of sevm owner measure (and earlier children): {rss} KiB");
    assert!(
        rss > 0 && rss < 16 * 1024,
        "peak RSS {rss} KiB is not under 16 MiB"
    );
}
