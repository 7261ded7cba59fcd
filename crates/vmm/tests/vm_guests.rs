//! End-to-end: build and run each bundled guest under KVM through the library API, with COM1
//! captured to a buffer. Needs /dev/kvm: without it the tests print SKIP (or fail when CI is set).

mod guest_common;

use guest_common::{
    bundled_config, firmware, firmware_config, require_kvm, run_bundled, run_expect,
    spinning_firmware_config, Serial,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};
use vmm::{
    BootSource, CpuidOverride, CpuidOverrides, ExitStatus, LaunchContext, LaunchHooks, MsrHandler,
    OnReset, ResetAction, SerialOut, Vm, VmConfig,
};

/// What the `hello` guest prints with one vCPU.
const HELLO: &str = "hello from the sevm bundled guest\n";
/// What the `hello` guest prints with two vCPUs.
const HELLO_TWO_CPUS: &str = "hello from the sevm bundled guest\ncpus online: 02\n";

/// CPUID 0x8000_0008 (address sizes) reporting 48 physical and linear address bits, `edx`
/// as given.
fn phys_bits_override(edx: u32) -> CpuidOverride {
    CpuidOverride {
        function: 0x8000_0008,
        index: 0,
        eax: 0x3030,
        ebx: 0,
        ecx: 0,
        edx,
    }
}

#[test]
fn hello_prints_and_exits_zero() {
    require_kvm!();
    let (vm, out) = run_bundled("hello", ExitStatus::Exited(0));
    assert_eq!(out, HELLO);
    // After the exit the vCPU is in long mode with the VMM's page tables.
    let snap = vm.control().cpu_snapshot(0).unwrap();
    assert_eq!(snap.cr3, vmm::layout::PML4_START);
    assert_eq!(snap.efer & 0x500, 0x500);
    let t = vmm::paging::translate(vm.guest_memory(), snap.cr3, snap.rip, 0).unwrap();
    assert_eq!(t.gpa, snap.rip);
    assert!(snap.rip > vmm::layout::BUNDLED_LOAD_ADDR);
    // hello leaves through ring 3 (iretq to the VMM's user segments, port I/O via the TSS).
    assert_eq!(snap.cpl, 3);
}

#[test]
fn hello_with_two_cpus_sees_the_ap() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("hello");
    cfg.cpus = 2;
    let mut vm = Vm::build(&cfg).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    assert_eq!(out, HELLO_TWO_CPUS);
}

#[test]
fn cpuid_guest_without_sev() {
    require_kvm!();
    let (_vm, out) = run_bundled("cpuid", ExitStatus::Exited(0));
    assert!(out.contains("cpuid 80000008 eax="), "{out}");
    assert!(out.contains("msr c0010131 not read"), "{out}");
}

#[derive(Debug)]
struct SevStatus;
impl MsrHandler for SevStatus {
    fn rdmsr(&self, _cpu: usize, index: u32) -> Option<u64> {
        (index == 0xc001_0131).then_some(1)
    }
}

#[test]
fn cpuid_guest_with_overrides_alias_cbit_and_msr_hook() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("cpuid");
    let cbit = 47u8;
    cfg.page_table_cbit = Some(cbit);
    cfg.cpuid_overrides = CpuidOverrides(vec![
        CpuidOverride {
            function: 0x8000_001f,
            index: 0,
            eax: 0x2,
            ebx: 0x40 | cbit as u32,
            ecx: 0,
            edx: 0,
        },
        phys_bits_override(0x1234),
    ]);
    cfg.msr_handler = Some(Arc::new(SevStatus));
    let mut vm = Vm::build(&cfg).unwrap();
    vm.add_alias(1 << cbit).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    assert!(
        out.contains("cpuid 8000001f eax=00000002 ebx=0000006f ecx=00000000 edx=00000000"),
        "{out}"
    );
    assert!(out.contains("cpuid 80000008 eax=00003030"), "{out}");
    assert!(out.contains("edx=00001234"), "{out}");
    assert!(out.contains("msr c0010131=0000000000000001"), "{out}");
}

#[test]
fn cbit_without_alias_faults() {
    require_kvm!();
    // With the C-bit in the page tables but no alias slot, the page walk cannot reach RAM.
    let (mut cfg, _serial) = bundled_config("hello");
    cfg.page_table_cbit = Some(47);
    cfg.timeout = Some(Duration::from_secs(20));
    let mut vm = Vm::build(&cfg).unwrap();
    let st = vm.run().unwrap();
    assert_ne!(st, ExitStatus::Exited(0));
}

#[test]
fn reset_guest_reboots_three_times() {
    require_kvm!();
    let (vm, out) = run_bundled("reset", ExitStatus::Exited(0));
    assert_eq!(vm.reset_count(), 3);
    assert_eq!(
        out,
        "reset guest: boot 01\nreset guest: boot 02\nreset guest: boot 03\nreset guest: boot 04\nreset guest: done\n"
    );
}

#[test]
fn reset_with_shutdown_policy_stops() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("reset");
    cfg.on_reset = OnReset::Shutdown;
    let mut vm = Vm::build(&cfg).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Reset, &serial);
    assert_eq!(vm.reset_count(), 1);
    assert_eq!(out, "reset guest: boot 01\n");
}

/// Records hook calls and relaunches on reset.
struct Recorder(Arc<Mutex<Vec<String>>>);
impl LaunchHooks for Recorder {
    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), vmm::HookError> {
        let kinds: Vec<String> = ctx
            .measured
            .iter()
            .map(|r| format!("{:?}", r.kind))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("after_load {}", kinds.join(",")));
        Ok(())
    }
    fn before_run(&mut self, _ctx: &LaunchContext<'_>) -> Result<(), vmm::HookError> {
        self.0.lock().unwrap().push("before_run".into());
        Ok(())
    }
    fn on_reset(&mut self, _ctx: &LaunchContext<'_>) -> Result<ResetAction, vmm::HookError> {
        self.0.lock().unwrap().push("on_reset".into());
        Ok(ResetAction::Relaunch)
    }
}

#[test]
fn hooks_are_called_in_order_and_relaunch_works() {
    require_kvm!();
    let (cfg, serial) = bundled_config("reset");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(Recorder(log.clone()))).unwrap();
    run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    let log = log.lock().unwrap().clone();
    let load = "after_load BootTables,BootTables,Bundled".to_string();
    let mut want = vec![load.clone(), "before_run".into()];
    for _ in 0..3 {
        want.extend([
            "on_reset".to_string(),
            load.clone(),
            "before_run".to_string(),
        ]);
    }
    assert_eq!(log, want);
}

/// EFI secret table with the given entries (entry length includes its 20-byte header).
fn secret_table(entries: &[([u8; 16], Vec<u8>)]) -> Vec<u8> {
    let hdr_guid: [u8; 16] = [
        0x42, 0xf5, 0x74, 0x1e, 0xdd, 0x71, 0x66, 0x4d, 0x96, 0x3e, 0xef, 0x42, 0x87, 0xff, 0x17,
        0x3b,
    ];
    let mut body = Vec::new();
    for (g, d) in entries {
        body.extend_from_slice(g);
        body.extend_from_slice(&(20 + d.len() as u32).to_le_bytes());
        body.extend_from_slice(d);
    }
    let mut t = hdr_guid.to_vec();
    t.extend_from_slice(&(20 + body.len() as u32).to_le_bytes());
    t.extend_from_slice(&body);
    while !t.len().is_multiple_of(16) {
        t.push(0);
    }
    t
}

fn sha256_hex(d: &[u8]) -> String {
    let h = openssl::sha::sha256(d);
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a secret table after images are placed, as the SEV layer's LAUNCH_SECRET would.
struct InjectSecret(Vec<u8>);
impl LaunchHooks for InjectSecret {
    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), vmm::HookError> {
        ctx.memory
            .write_slice(&self.0, GuestAddress(vmm::layout::SECRET_AREA_START))?;
        Ok(())
    }
}

/// A VM built from `cfg` whose secret area holds `table` when the guest starts.
fn secret_reader_vm(cfg: &VmConfig, table: Vec<u8>) -> Vm {
    Vm::build_with_hooks(cfg, Box::new(InjectSecret(table))).unwrap()
}

#[test]
fn secret_reader_without_secret() {
    require_kvm!();
    let (_vm, out) = run_bundled("secret-reader", ExitStatus::Exited(0));
    assert_eq!(out, "no secret\n");
}

#[test]
fn secret_reader_hashes_entries_through_cbit_mapping() {
    require_kvm!();
    // GUID 736869e5-84f0-4973-92ec-06879ce3da0b (the sev disk passphrase GUID) in bytes_le.
    let g1: [u8; 16] = [
        0xe5, 0x69, 0x68, 0x73, 0xf0, 0x84, 0x73, 0x49, 0x92, 0xec, 0x06, 0x87, 0x9c, 0xe3, 0xda,
        0x0b,
    ];
    let g2: [u8; 16] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x10,
    ];
    let d1 = b"correct horse battery staple".to_vec();
    let d2: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect(); // multi-block
    let d3 = vec![0xabu8; 55]; // padding edge case: 55 bytes fits one block
    let table = secret_table(&[(g1, d1.clone()), (g2, d2.clone()), (g1, d3.clone())]);

    let (mut cfg, serial) = bundled_config("secret-reader");
    let cbit = 47u8;
    cfg.page_table_cbit = Some(cbit);
    cfg.cpuid_overrides = CpuidOverrides(vec![phys_bits_override(0)]);
    let mut vm = secret_reader_vm(&cfg, table);
    vm.add_alias(1 << cbit).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    let want = format!(
        "secret entry 736869e5-84f0-4973-92ec-06879ce3da0b len=0000001c sha256={}\n\
         secret entry 04030201-0605-0807-090a-0b0c0d0e0f10 len=000000c8 sha256={}\n\
         secret entry 736869e5-84f0-4973-92ec-06879ce3da0b len=00000037 sha256={}\n\
         secret entries: 03\n",
        sha256_hex(&d1),
        sha256_hex(&d2),
        sha256_hex(&d3)
    );
    assert_eq!(out, want);
}

#[test]
fn raw_firmware_at_reset_vector() {
    require_kvm!();
    // Real-mode code at 0xFFFFFFF0: mov dx,0x3f8; mov al,'F'; out dx,al; mov dx,0xf4;
    // mov al,5; out dx,al; hlt.
    let code = [
        0xba, 0xf8, 0x03, 0xb0, b'F', 0xee, 0xba, 0xf4, 0x00, 0xb0, 0x05, 0xee, 0xf4,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let serial = Serial::default();
    let mut cfg = firmware_config(
        &firmware(tmp.path(), &code, &[]),
        serial.out(),
        Duration::from_secs(30),
    );
    cfg.cpus = 2;
    let mut vm = Vm::build(&cfg).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(5), &serial);
    assert_eq!(out, "F");
}

#[test]
fn timeout_stops_a_spinning_guest() {
    require_kvm!();
    // Firmware that spins forever: jmp $ at the reset vector.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = spinning_firmware_config(tmp.path(), Duration::from_millis(300));
    let mut vm = Vm::build(&cfg).unwrap();
    assert_eq!(vm.run().unwrap(), ExitStatus::Timeout);
}

fn wait_state(c: &vmm::VmControl, s: vmm::RunState) {
    let t0 = std::time::Instant::now();
    while c.state() != s {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "state {s:?} not reached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn start_paused_waits_for_resume() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("hello");
    cfg.start_paused = true;
    let mut vm = Vm::build(&cfg).unwrap();
    let c = vm.control();
    assert_eq!(c.state(), vmm::RunState::Created);
    let serial2 = serial.clone();
    let t = std::thread::spawn(move || {
        wait_state(&c, vmm::RunState::Paused);
        std::thread::sleep(Duration::from_millis(100));
        let before = serial2.len();
        assert!(c.resume());
        (before, c)
    });
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    let (before, c) = t.join().unwrap();
    assert_eq!(before, 0, "guest ran before resume");
    assert_eq!(c.state(), vmm::RunState::Stopped);
    assert_eq!(out, HELLO);
}

#[test]
fn pause_resume_and_quit_a_spinning_guest() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = spinning_firmware_config(tmp.path(), Duration::from_secs(30));
    let mut vm = Vm::build(&cfg).unwrap();
    let c = vm.control();
    let t = std::thread::spawn(move || {
        wait_state(&c, vmm::RunState::Running);
        assert!(c.pause());
        wait_state(&c, vmm::RunState::Paused);
        // Real mode at the reset vector: CS base 0xffff0000, IP stays on the jmp at 0xfff0.
        let snap = c.cpu_snapshot(0).expect("snapshot while paused");
        assert_eq!(snap.rip, 0xfff0);
        assert_eq!(snap.cr0 & 1, 0);
        assert!(c.resume());
        wait_state(&c, vmm::RunState::Running);
        assert!(c.quit());
    });
    assert_eq!(vm.run().unwrap(), ExitStatus::Quit);
    t.join().unwrap();
}

#[test]
fn host_reset_request_counts_as_reset() {
    require_kvm!();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = spinning_firmware_config(tmp.path(), Duration::from_secs(30));
    cfg.on_reset = OnReset::Shutdown;
    let mut vm = Vm::build(&cfg).unwrap();
    let c = vm.control();
    let t = std::thread::spawn(move || {
        wait_state(&c, vmm::RunState::Running);
        assert!(c.reset());
    });
    assert_eq!(vm.run().unwrap(), ExitStatus::Reset);
    assert_eq!(vm.reset_count(), 1);
    t.join().unwrap();
}

#[test]
fn hello_with_cbit_alias_runs_at_cpl0_and_cpl3() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("hello");
    cfg.cpus = 2;
    cfg.page_table_cbit = Some(47);
    let mut vm = Vm::build(&cfg).unwrap();
    vm.add_alias(1 << 47).unwrap();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    assert_eq!(out, HELLO_TWO_CPUS);
    let snap = vm.control().cpu_snapshot(0).unwrap();
    assert_eq!(snap.cr3, vmm::layout::PML4_START | 1 << 47);
    assert_eq!(snap.cpl, 3);
    let t = vmm::paging::translate(vm.guest_memory(), snap.cr3, snap.rip, 1 << 47).unwrap();
    assert!(t.encrypted);
    assert_eq!(t.gpa, snap.rip);
    // Bad alias bases are refused with a reason.
    assert!(vm
        .add_alias(3 << 40)
        .unwrap_err()
        .to_string()
        .contains("power of two"));
    assert!(vm
        .add_alias(1 << 52)
        .unwrap_err()
        .to_string()
        .contains("2^52"));
}

#[test]
fn serial_to_file() {
    require_kvm!();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("com1.log");
    let cfg = VmConfig {
        memory: 16 << 20,
        boot: BootSource::Bundled("hello".into()),
        serial: SerialOut::File(p.clone()),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut vm = Vm::build(&cfg).unwrap();
    assert_eq!(vm.run().unwrap().exit_code(), 0);
    drop(vm);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), HELLO);
}

#[test]
fn secret_reader_handles_a_full_area() {
    require_kvm!();
    // One entry filling the whole 16 KiB area: 16384 - 20 (header) - 20 (entry header).
    let data: Vec<u8> = (0..16384u32 - 40).map(|i| (i % 251) as u8).collect();
    let g = [0x11u8; 16];
    let table = secret_table(&[(g, data.clone())]);
    assert_eq!(table.len() as u64, vmm::layout::SECRET_AREA_SIZE);
    let (cfg, serial) = bundled_config("secret-reader");
    let mut vm = secret_reader_vm(&cfg, table);
    let t0 = std::time::Instant::now();
    let out = run_expect(&mut vm, ExitStatus::Exited(0), &serial);
    eprintln!("16 KiB secret hashed at CPL0 in {:?}", t0.elapsed());
    assert_eq!(
        out,
        format!(
            "secret entry 11111111-1111-1111-1111-111111111111 len=00003fd8 sha256={}\nsecret entries: 01\n",
            sha256_hex(&data)
        )
    );
}

#[test]
fn secret_reader_rejects_overlong_table() {
    require_kvm!();
    let mut table = secret_table(&[([0x22u8; 16], vec![1, 2, 3])]);
    table[16..20].copy_from_slice(&(vmm::layout::SECRET_AREA_SIZE as u32 + 1).to_le_bytes());
    let (cfg, serial) = bundled_config("secret-reader");
    let mut vm = secret_reader_vm(&cfg, table);
    let out = run_expect(&mut vm, ExitStatus::Exited(1), &serial);
    assert_eq!(out, "bad secret table\n");
}
