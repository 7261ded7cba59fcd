//! Shared helpers for the guest tests under KVM (`vm_guests`, `faults_guests`): the /dev/kvm
//! skip rule, raw firmware images assembled by hand, VM configs and COM1 captured in memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmm::{BootSource, ExitStatus, SerialOut, Vm, VmConfig};

/// Whether /dev/kvm opens read-write. When it does not, this panics if env `CI` is set, and
/// otherwise prints a SKIP reason and returns false.
pub fn kvm_available() -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("/dev/kvm is not usable and CI is set");
    }
    eprintln!("SKIP: /dev/kvm is not usable");
    false
}

/// Returns from the calling test when /dev/kvm is not usable (see [`kvm_available`]).
macro_rules! require_kvm {
    () => {
        if !$crate::guest_common::kvm_available() {
            return;
        }
    };
}
pub(crate) use require_kvm;

/// `jmp $` (real mode): spins forever.
pub const JMP_SELF: [u8; 2] = [0xeb, 0xfe];

/// A 4 KiB firmware image (filled with `hlt`) whose last 16 bytes (the reset vector at
/// 0xFFFF_FFF0, CS base 0xFFFF_0000, IP 0xFFF0) are `reset`, with `extra` placed at
/// segment offset `at` (image offset `at - 0xF000`), written to `dir/fw.bin`.
pub fn firmware(dir: &Path, reset: &[u8], extra: &[(u16, &[u8])]) -> PathBuf {
    let mut fw = vec![0xf4u8; 0x1000];
    fw[0xff0..0xff0 + reset.len()].copy_from_slice(reset);
    for (at, bytes) in extra {
        let o = (*at as usize) - 0xf000;
        fw[o..o + bytes.len()].copy_from_slice(bytes);
    }
    let p = dir.join("fw.bin");
    std::fs::write(&p, &fw).unwrap();
    p
}

/// A one-vCPU VM with 16 MiB of RAM booting the raw firmware image `fw`.
pub fn firmware_config(fw: &Path, serial: SerialOut, timeout: Duration) -> VmConfig {
    VmConfig {
        memory: 16 << 20,
        boot: BootSource::Firmware(fw.into()),
        serial,
        timeout: Some(timeout),
        ..Default::default()
    }
}

/// [`firmware_config`] for firmware in `dir` that spins at the reset vector, COM1 discarded.
pub fn spinning_firmware_config(dir: &Path, timeout: Duration) -> VmConfig {
    firmware_config(&firmware(dir, &JMP_SELF, &[]), SerialOut::Sink, timeout)
}

/// COM1 captured in memory.
#[derive(Clone, Default)]
pub struct Serial(Arc<Mutex<Vec<u8>>>);

impl Serial {
    /// The [`SerialOut`] that writes into this capture.
    pub fn out(&self) -> SerialOut {
        SerialOut::Buffer(self.0.clone())
    }

    /// Everything written so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many bytes were written so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A one-vCPU VM with 32 MiB of RAM running the bundled guest `guest`, COM1 captured, 60 s
/// timeout.
pub fn bundled_config(guest: &str) -> (VmConfig, Serial) {
    let serial = Serial::default();
    let cfg = VmConfig {
        memory: 32 << 20,
        boot: BootSource::Bundled(guest.into()),
        serial: serial.out(),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    (cfg, serial)
}

/// Runs `vm` to its end, asserts it ended with `want` (the failure shows the serial output)
/// and returns the serial output.
#[track_caller]
pub fn run_expect(vm: &mut Vm, want: ExitStatus, serial: &Serial) -> String {
    let st = vm.run().unwrap();
    let out = serial.text();
    assert_eq!(st, want, "serial: {out}");
    out
}

/// Builds and runs the bundled guest `guest` with [`bundled_config`] as it is, asserting it
/// ends with `want`; returns the VM and its serial output.
#[track_caller]
pub fn run_bundled(guest: &str, want: ExitStatus) -> (Vm, String) {
    let (cfg, serial) = bundled_config(guest);
    let mut vm = Vm::build(&cfg).unwrap();
    let out = run_expect(&mut vm, want, &serial);
    (vm, out)
}
