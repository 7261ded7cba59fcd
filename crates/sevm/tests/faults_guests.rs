//! Misbehaving guests through the real `sevm run`: a triple fault (exit 125, docs/LAYOUT.md),
//! a guest resetting in a loop (plain and SEV on the soft backend: `--timeout` still stops it,
//! exit 124, on time, in bounded memory), and a guest flooding COM1 into `--serial file:`.
//! Needs /dev/kvm: without it the tests print SKIP (or fail when CI is set).

#[path = "sev_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{kvm_usable_or_skip, object, MACHINE};

/// Runs `sevm args`; returns its output and how long it took.
fn sevm_timed<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Output, Duration) {
    let t0 = Instant::now();
    let o = common::sevm(args);
    (o, t0.elapsed())
}

/// Peak RSS (KiB) of the largest child this process has waited for.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage only writes the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

/// 4 KiB raw firmware: `reset` at the reset vector, `extra` at segment offsets.
fn firmware(dir: &Path, name: &str, reset: &[u8], extra: &[(usize, &[u8])]) -> PathBuf {
    let mut fw = vec![0xf4u8; 0x1000];
    fw[0xff0..0xff0 + reset.len()].copy_from_slice(reset);
    for (at, b) in extra {
        fw[at - 0xf000..at - 0xf000 + b.len()].copy_from_slice(b);
    }
    let p = dir.join(name);
    std::fs::write(&p, fw).unwrap();
    p
}

/// ELF64 with one PT_LOAD of `code` at `paddr` (entered in 64-bit mode, IDT limit 0).
fn elf64(paddr: u64, code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 120];
    e[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&62u16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut e[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes());
    ph[4..8].copy_from_slice(&5u32.to_le_bytes());
    ph[8..16].copy_from_slice(&120u64.to_le_bytes());
    ph[16..24].copy_from_slice(&paddr.to_le_bytes());
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(code);
    e
}

#[test]
fn triple_fault_exits_125() {
    if !kvm_usable_or_skip("triple_fault_exits_125") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("vmlinux");
    std::fs::write(&k, elf64(0x20_0000, &[0x0f, 0x0b])).unwrap(); // ud2
    let (o, took) = sevm_timed(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--memory",
        "32M",
        "--serial",
        "none",
        "--timeout",
        "30",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "sevm run: {err}");
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("triple fault: exit 125 in {took:?}; stderr: {}", err.trim());
}

/// `mov al,0xfe; out 0x64,al; jmp $`.
const RESET_LOOP: [u8; 6] = [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];

#[test]
fn reset_loop_is_stopped_by_timeout_plain_and_sev() {
    if !kvm_usable_or_skip("reset_loop_is_stopped_by_timeout_plain_and_sev") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fw = firmware(tmp.path(), "reset.bin", &RESET_LOOP, &[]);
    let fw = fw.to_str().unwrap();
    let base = [
        "run",
        "--firmware",
        fw,
        "--memory",
        "32M",
        "--serial",
        "none",
        "--on-reset",
        "relaunch",
        "--timeout",
        "3",
    ];
    let (o, took) = sevm_timed(&base);
    assert_eq!(
        o.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        took < Duration::from_secs(8),
        "plain: timeout 3 s took {took:?}"
    );
    eprintln!("plain reset loop: exit 124 after {took:?}");

    // SEV on the soft backend: every reset is a fresh launch (LAUNCH_START..MEASURE).
    let pd = tmp.path().join("platform");
    let pds = pd.to_str().unwrap();
    let (o, _) = sevm_timed(&["platform", "--platform-dir", pds, "status"]);
    assert!(o.status.success());
    let mut args: Vec<&str> = base.to_vec();
    let sev0 = object(0, "");
    args.extend([
        "--object",
        &sev0,
        "--machine",
        MACHINE,
        "--platform-dir",
        pds,
    ]);
    let (o, took) = sevm_timed(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(124), "SEV reset loop: {err}");
    assert!(
        took < Duration::from_secs(10),
        "SEV: timeout 3 s took {took:?}"
    );
    let rss = children_max_rss_kib();
    assert!(rss < 256 * 1024, "peak RSS {rss} KiB");
    eprintln!("SEV reset loop: exit 124 after {took:?}; children's peak RSS {rss} KiB");
    // The platform dir is still usable afterwards.
    let (o, _) = sevm_timed(&["platform", "--platform-dir", pds, "status"]);
    assert!(o.status.success());
}

#[test]
fn serial_flood_into_a_file_completes() {
    if !kvm_usable_or_skip("serial_flood_into_a_file_completes") {
        return;
    }
    // 512 KiB by default (6-15 s here: one KVM exit per byte); SEVM_FLOOD_BYTES=10485760 for
    // the 10 MB run recorded in docs/RELIABILITY.md.
    let n: u32 = std::env::var("SEVM_FLOOD_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512 << 10);
    let tmp = tempfile::tempdir().unwrap();
    let mut code = vec![0xba, 0xf8, 0x03, 0x66, 0xb9]; // mov dx,0x3f8; mov ecx,n
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0xb0, b'y', 0xee, 0x66, 0x49, 0x75, 0xfb]); // out loop
    code.extend_from_slice(&[0xba, 0xf4, 0x00, 0xb0, 0x00, 0xee, 0xf4]); // exit 0
    let fw = firmware(
        tmp.path(),
        "flood.bin",
        &[0xe9, 0x0d, 0xff],
        &[(0xff00, &code)],
    );
    let out = tmp.path().join("serial.log");
    let serial = format!("file:{}", out.display());
    let (o, took) = sevm_timed(&[
        "run",
        "--firmware",
        fw.to_str().unwrap(),
        "--memory",
        "32M",
        "--serial",
        &serial,
        "--timeout",
        "600",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let b = std::fs::read(&out).unwrap();
    assert_eq!(b.len(), n as usize);
    assert!(b.iter().all(|&c| c == b'y'));
    assert!(o.stdout.len() < 4096, "serial leaked to stdout");
    let rss = children_max_rss_kib();
    assert!(rss < 256 * 1024, "peak RSS {rss} KiB for a 32 MiB guest");
    eprintln!(
        "serial flood: {n} bytes into {} in {took:?} ({:.1} KB/s), children's peak RSS {rss} KiB",
        out.display(),
        n as f64 / took.as_secs_f64() / 1e3
    );
}
