//! Misbehaving guests under KVM, through the library: a guest that triple-faults, one that
//! resets in a loop, one that floods the serial port. Each is a tiny raw firmware image
//! assembled here by hand (real mode at the reset vector, docs/LAYOUT.md).
//! Needs /dev/kvm: without it the tests print SKIP (or fail when CI is set).

mod guest_common;

use guest_common::{firmware, firmware_config, require_kvm, run_expect, Serial};
use std::path::Path;
use std::time::{Duration, Instant};
use vmm::{BootSource, ExitStatus, OnReset, SerialOut, Vm, VmConfig};

/// Peak resident set (VmHWM) of this process in KiB.
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A minimal ELF64 "vmlinux": one PT_LOAD segment of `code` at physical `paddr`, entered
/// there in 64-bit mode (Linux 64-bit boot protocol, IDT loaded with limit 0).
fn elf64(paddr: u64, code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 120];
    e[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]); // ELF64, LE, v1
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers at 64
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut e[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // file offset
    ph[16..24].copy_from_slice(&paddr.to_le_bytes());
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(code);
    e
}

#[test]
fn triple_fault_stops_the_vm_with_exit_code_125() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    // 64-bit `ud2` with the IDT limit 0 (docs/LAYOUT.md): #UD -> #GP -> #DF -> shutdown.
    // (Real-mode variants at the reset vector end in KVM emulation failures on this nested
    // KVM instead: InternalError, exit 126.)
    let k = tmp.path().join("vmlinux");
    std::fs::write(&k, elf64(0x20_0000, &[0x0f, 0x0b])).unwrap();
    let c = VmConfig {
        memory: 32 << 20,
        boot: BootSource::Linux {
            kernel: k,
            initrd: None,
            cmdline: String::new(),
        },
        serial: SerialOut::Sink,
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut vm = Vm::build(&c).unwrap();
    let st = vm.run().unwrap();
    assert_eq!(st, ExitStatus::TripleFault { cpu: 0 });
    assert_eq!(
        st.exit_code(),
        125,
        "docs/LAYOUT.md: triple fault exits 125"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    eprintln!("triple fault detected in {:?}", t0.elapsed());
}

/// `mov al,0xfe; out 0x64,al; jmp $`: an i8042 reset, forever.
const RESET_LOOP: [u8; 6] = [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];

/// A VM whose firmware (written to `dir`) resets in a loop, rebooting on each reset.
fn reset_loop_vm(dir: &Path, timeout: Duration) -> Vm {
    let fw = firmware(dir, &RESET_LOOP, &[]);
    let mut c = firmware_config(&fw, SerialOut::Sink, timeout);
    c.on_reset = OnReset::Reboot;
    Vm::build(&c).unwrap()
}

/// Asserts the reset loop went round at least ten times.
#[track_caller]
fn assert_many_resets(vm: &Vm) {
    assert!(vm.reset_count() >= 10, "only {} resets", vm.reset_count());
}

#[test]
fn reset_loop_with_reboot_is_stopped_by_the_timeout() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    let mut vm = reset_loop_vm(tmp.path(), Duration::from_secs(2));
    let t0 = Instant::now();
    let st = vm.run().unwrap();
    let took = t0.elapsed();
    assert_eq!(st, ExitStatus::Timeout);
    assert_eq!(st.exit_code(), 124);
    assert!(
        took < Duration::from_secs(10),
        "timeout of 2 s took {took:?}"
    );
    assert_many_resets(&vm);
    eprintln!("{} resets in {took:?}, then Timeout", vm.reset_count());
}

/// Regression test for bug 3 in docs/RELIABILITY.md: a guest that resets every few ms must
/// not starve `quit` (`Vm::run_inner` checks the control channel before every epoch).
#[test]
fn reset_loop_with_reboot_obeys_quit() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    let mut vm = reset_loop_vm(tmp.path(), Duration::from_secs(60));
    let ctl = vm.control();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // The monitor stays responsive while the guest resets: state and pause work too.
        let s = ctl.state();
        let t_quit = Instant::now();
        assert!(ctl.quit(), "quit refused while resetting (state {s:?})");
        t_quit
    });
    let st = vm.run().unwrap();
    let t_quit = t.join().unwrap();
    assert_eq!(st, ExitStatus::Quit);
    let lag = t_quit.elapsed();
    assert!(lag < Duration::from_secs(5), "quit took {lag:?}");
    assert_many_resets(&vm);
    eprintln!("{} resets, quit honoured within {lag:?}", vm.reset_count());
}

/// Real-mode code at 0xFF00 that writes `n` bytes ('x') to COM1 one `out` at a time, then
/// exits with 0 via port 0xF4. The reset vector jumps there.
fn flood_firmware(dir: &Path, n: u32) -> std::path::PathBuf {
    let mut code = vec![0xba, 0xf8, 0x03]; // mov dx,0x3f8
    code.extend_from_slice(&[0x66, 0xb9]); // mov ecx,n
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0xb0, b'x']); // mov al,'x'
    code.extend_from_slice(&[0xee, 0x66, 0x49, 0x75, 0xfb]); // 1: out dx,al; dec ecx; jnz 1b
    code.extend_from_slice(&[0xba, 0xf4, 0x00, 0xb0, 0x00, 0xee, 0xf4]); // exit 0; hlt
                                                                         // jmp near 0xff00 from 0xfff0: rel16 = 0xff00 - 0xfff3.
    let jmp = [0xe9, 0x0d, 0xff];
    firmware(dir, &jmp, &[(0xff00, &code)])
}

#[test]
fn serial_flood_to_a_file_completes_with_bounded_memory() {
    require_kvm!();
    let n: u32 = std::env::var("SEVM_FLOOD_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256 << 10);
    let tmp = tempfile::tempdir().unwrap();
    let fw = flood_firmware(tmp.path(), n);
    let out = tmp.path().join("serial.log");
    let hwm0 = vm_hwm_kib();
    let mut vm = Vm::build(&firmware_config(
        &fw,
        SerialOut::File(out.clone()),
        Duration::from_secs(240),
    ))
    .unwrap();
    let t0 = Instant::now();
    let st = vm.run().unwrap();
    let took = t0.elapsed();
    assert_eq!(
        st,
        ExitStatus::Exited(0),
        "flood of {n} bytes did not finish"
    );
    drop(vm);
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(len, n as u64, "serial file has {len} of {n} bytes");
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.iter().all(|&b| b == b'x'), "serial file corrupted");
    let grew = vm_hwm_kib().saturating_sub(hwm0);
    // Guest RAM is 16 MiB; the output must not be held in memory.
    assert!(
        grew < 48 * 1024,
        "peak RSS grew by {grew} KiB while writing {n} bytes"
    );
    eprintln!(
        "serial flood: {n} bytes in {took:?} ({:.2} MB/s), peak RSS growth {grew} KiB",
        n as f64 / took.as_secs_f64() / 1e6
    );
}

/// The flood to a Sink (no file I/O): the VMM side alone.
#[test]
fn serial_flood_to_a_sink_completes() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    let n = 64 << 10;
    let fw = flood_firmware(tmp.path(), n);
    let mut vm = Vm::build(&firmware_config(
        &fw,
        SerialOut::Sink,
        Duration::from_secs(240),
    ))
    .unwrap();
    let t0 = Instant::now();
    assert_eq!(vm.run().unwrap(), ExitStatus::Exited(0));
    eprintln!("serial flood to sink: {n} bytes in {:?}", t0.elapsed());
}

/// `rep outsb` of "ABCD" to COM1. `Devices::io_out` (crates/vmm/src/devices.rs) uses only
/// `data[0]` of an OUT exit; this holds because KVM here exits once per byte of a string OUT.
/// A guard in case a KVM ever batches string PIO to user space (kvm-ioctls would then pass
/// `size * count` bytes).
#[test]
fn rep_outsb_to_the_serial_port_keeps_every_byte() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    // mov si,0xff80; mov cx,4; mov dx,0x3f8; cs rep outsb; mov al,0; out 0xf4,al
    let code = [
        0xbe, 0x80, 0xff, 0xb9, 0x04, 0x00, 0xba, 0xf8, 0x03, 0x2e, 0xf3, 0x6e, 0xb0, 0x00, 0xe6,
        0xf4,
    ];
    let fw = firmware(tmp.path(), &code, &[(0xff80, b"ABCD")]);
    let serial = Serial::default();
    let mut vm = Vm::build(&firmware_config(&fw, serial.out(), Duration::from_secs(30))).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    assert_eq!(out, "ABCD");
}
