//! SEV guest-memory access, reset-as-relaunch and device writes, through `vmm::confidential`
//! on the soft backend under KVM.

#[path = "sev_common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};

use common::kvm_or_skip;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, PacketHeader, SevPlatform};
use vmm::builder::{LaunchBackend, SevSpec, VmBuilder};
use vmm::confidential::{
    AccessKind, ConfidentialError, LaunchHandle, LaunchParams, Phase, PlatformInfo, ResetMode,
};
use vmm::{BootSource, ExitStatus, SerialOut, Vm, VmConfig};

/// For a KVM test: a soft platform in a temporary directory (kept alive by the `TempDir`), or
/// None when the test is skipped.
fn soft_platform(test: &str) -> Option<(tempfile::TempDir, SoftPlatform)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(t.path()).unwrap();
    Some((t, plat))
}

/// A SEV VM of the bundled `guest` on `plat` (32 MiB, serial into a buffer), launched up to
/// LAUNCH_MEASURE; returns it, its launch handle and the serial buffer.
fn launch(
    plat: &SoftPlatform,
    guest: &str,
    policy: u32,
    on_reset: ResetMode,
) -> (Vm, LaunchHandle, Arc<Mutex<Vec<u8>>>) {
    launch_with(plat, guest, policy, on_reset, false)
}

/// [`launch`], optionally `paused` (each launch waits for the owner's release).
fn launch_with(
    plat: &SoftPlatform,
    guest: &str,
    policy: u32,
    on_reset: ResetMode,
    paused: bool,
) -> (Vm, LaunchHandle, Arc<Mutex<Vec<u8>>>) {
    let st = plat.platform_status().unwrap();
    let cbit = plat.cbit_pos().unwrap();
    let params = LaunchParams {
        policy: GuestPolicy(policy),
        owner: None,
        handle: 0,
        cbitpos: cbit,
        reduced_phys_bits: 1,
        paused,
        on_reset,
        dump_dir: None,
    };
    let info = PlatformInfo {
        api_major: st.api_major,
        api_minor: st.api_minor,
        build: st.build,
        cbitpos: cbit,
    };
    let serial = Arc::new(Mutex::new(Vec::new()));
    let cfg = VmConfig {
        memory: 32 << 20,
        boot: BootSource::Bundled(guest.into()),
        serial: SerialOut::Buffer(serial.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..VmConfig::default()
    };
    let l = VmBuilder::new(cfg)
        .sev(Some(SevSpec {
            backend: LaunchBackend::Soft(plat.clone()),
            params,
            platform: info,
        }))
        .build()
        .expect("SEV VM builds");
    (l.vm, l.launch.expect("an SEV launch"), serial)
}

#[test]
fn debug_reads_plaintext_nodbg_refuses_host_sees_ciphertext() {
    let Some((_t, plat)) =
        soft_platform("debug_reads_plaintext_nodbg_refuses_host_sees_ciphertext")
    else {
        return;
    };
    let image = guests::get("hello").unwrap().bytes;
    let gpa = vmm::layout::BUNDLED_LOAD_ADDR;

    let (_vm, h, _) = launch(&plat, "hello", 0, ResetMode::Relaunch);
    assert_eq!(h.status().phase, Phase::LaunchSecret);
    let dbg = h.read(gpa, 64, AccessKind::Debug).unwrap();
    assert_eq!(&dbg[..], &image[..64], "debug read is the plaintext image");
    let host = h.read(gpa, 64, AccessKind::Host).unwrap();
    assert_ne!(
        &host[..],
        &image[..64],
        "host view of private memory is ciphertext"
    );
    // Unaligned debug reads work too.
    assert_eq!(
        h.read(gpa + 3, 5, AccessKind::Debug).unwrap(),
        image[3..8].to_vec()
    );
    // Debug write then read back.
    h.write_debug(vmm::layout::SCRATCH + 0x100, &[0x5a; 16])
        .unwrap();
    assert_eq!(
        h.read(vmm::layout::SCRATCH + 0x100, 16, AccessKind::Debug)
            .unwrap(),
        vec![0x5a; 16]
    );
    // Unaligned debug write, as KVM's DBG_ENCRYPT read-modify-write allows: only those bytes
    // of the measured image change.
    h.write_debug(gpa + 5, b"abc").unwrap();
    let mut want = image[..32].to_vec();
    want[5..8].copy_from_slice(b"abc");
    assert_eq!(h.read(gpa, 32, AccessKind::Debug).unwrap(), want);

    let (_vm2, h2, _) = launch(&plat, "hello", 0x1, ResetMode::Relaunch);
    let e = h2.read(gpa, 64, AccessKind::Debug).unwrap_err();
    assert!(
        matches!(e, ConfidentialError::DebugDisabled { policy: 1 }),
        "{e}"
    );
    assert!(e.to_string().contains("NODBG"), "{e}");
    assert!(h2.write_debug(gpa, &[0; 16]).is_err());
    // The host view still works under NODBG (it is not a debug access).
    assert_ne!(
        h2.read(gpa, 64, AccessKind::Host).unwrap(),
        image[..64].to_vec()
    );
}

#[test]
fn device_writes_into_private_memory_are_refused() {
    let Some((_t, plat)) = soft_platform("device_writes_into_private_memory_are_refused") else {
        return;
    };
    let (_vm, h, _) = launch(&plat, "hello", 0, ResetMode::Relaunch);
    let e = h
        .write_shared(vmm::layout::BUNDLED_LOAD_ADDR, b"evil")
        .unwrap_err();
    assert!(matches!(e, ConfidentialError::PrivateWrite { .. }), "{e}");
    // Page tables are measured (private) too.
    assert!(h.write_shared(vmm::layout::PML4_START + 8, &[1]).is_err());
    assert_eq!(h.refused_writes(), 2);
    // Memory outside the launched ranges is shared.
    h.write_shared(0x20_0000, b"dma buffer").unwrap();
    assert_eq!(
        h.read(0x20_0000, 10, AccessKind::Host).unwrap(),
        b"dma buffer".to_vec()
    );
    // A secret outside the EFI secret area is refused before the firmware sees it.
    let e = h
        .inject_secret(
            &PacketHeader::from_bytes(&[0; 52]).unwrap(),
            &[0; 32],
            Some(0x40000),
        )
        .unwrap_err();
    assert!(matches!(e, ConfidentialError::SecretRange(_)), "{e}");
}

#[test]
fn reset_is_a_fresh_launch_with_a_new_measurement() {
    let Some((_t, plat)) = soft_platform("reset_is_a_fresh_launch_with_a_new_measurement") else {
        return;
    };
    let (mut vm, h, serial) = launch(&plat, "reset", 0, ResetMode::Relaunch);
    let first = h.measurement().unwrap();
    let digest = h.launch_digest().unwrap();
    let handle1 = h.status().handle;
    let st = vm.run().unwrap();
    let out = String::from_utf8_lossy(&serial.lock().unwrap()).into_owned();
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("reset guest: done"), "{out}");
    let s = h.status();
    assert_eq!(s.launches, 4, "1 launch + 3 relaunches");
    assert_eq!(s.phase, Phase::Running);
    let last = h.measurement().unwrap();
    assert_ne!(
        first, last,
        "a relaunch has a new MNONCE, hence a new measurement"
    );
    assert_ne!(first[32..], last[32..]);
    assert_eq!(
        h.launch_digest().unwrap(),
        digest,
        "same images, same digest"
    );
    assert_ne!(s.handle, 0);
    let _ = handle1;
    let q = s.to_query_sev();
    assert_eq!(q["state"], "running");
    assert_eq!(q["api-major"], 0);
    assert_eq!(q["api-minor"], 24);
    assert_eq!(q["sev-type"], "sev");

    // --on-reset shutdown: the first reset stops the VM.
    let (mut vm, h, _) = launch(&plat, "reset", 0, ResetMode::Shutdown);
    assert_eq!(vm.run().unwrap(), ExitStatus::Reset);
    assert_eq!(h.status().launches, 1);
}

#[test]
fn paused_relaunch_waits_for_the_owner_each_time() {
    let Some((_t, plat)) = soft_platform("paused_relaunch_waits_for_the_owner_each_time") else {
        return;
    };
    let (mut vm, h, _) = launch_with(&plat, "reset", 0, ResetMode::Relaunch, true);
    let owner = {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for n in 1..=4 {
                let m = h
                    .wait_measured(n, std::time::Duration::from_secs(30))
                    .expect("each launch is measured and waits");
                // Still paused: the launch is not finished until we release it.
                assert_eq!(h.status().phase, Phase::LaunchSecret);
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert_eq!(h.status().phase, Phase::LaunchSecret);
                seen.push(m);
                h.release();
            }
            seen
        })
    };
    assert_eq!(vm.run().unwrap(), ExitStatus::Exited(0));
    let seen = owner.join().unwrap();
    for i in 0..seen.len() {
        for j in i + 1..seen.len() {
            assert_ne!(seen[i], seen[j], "launch {i} and {j} share a measurement");
        }
    }
}

/// Sends one QMP command line on `s` and returns the next non-event reply.
fn qmp_cmd(
    s: &mut std::os::unix::net::UnixStream,
    r: &mut impl std::io::BufRead,
    cmd: &str,
) -> serde_json::Value {
    use std::io::Write as _;
    writeln!(s, "{{\"execute\": \"{cmd}\"}}").unwrap();
    loop {
        let mut line = String::new();
        assert_ne!(
            r.read_line(&mut line).unwrap(),
            0,
            "QMP closed before {cmd}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("event").is_none() {
            return v;
        }
    }
}

#[test]
fn query_sev_over_qmp_says_sev_for_an_sev_es_guest() {
    let Some((_t, plat)) = soft_platform("query_sev_over_qmp_says_sev_for_an_sev_es_guest") else {
        return;
    };
    let es = sev_proto::policy::GuestPolicy::ES | sev_proto::policy::GuestPolicy::NODBG;
    for (policy, is_es) in [(es, true), (sev_proto::policy::GuestPolicy::NODBG, false)] {
        let (vm, h, _) = launch(&plat, "hello", policy, ResetMode::Shutdown);
        assert_eq!(h.status().es, is_es);
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let cfg = vmm::monitor::vm_backend::VmBackendConfig {
            snp: None,
            launch: Some(h.clone()),
            caps: None,
            cbitpos: Some(plat.cbit_pos().unwrap()),
            start_paused: false,
            vcpus: 1,
        };
        let rt = vmm::monitor::vm_backend::start(&sock, &vm, cfg).expect("QMP server starts");
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut greeting = String::new();
        std::io::BufRead::read_line(&mut r, &mut greeting).unwrap();
        assert!(greeting.contains("\"QMP\""), "{greeting}");
        assert_eq!(
            qmp_cmd(&mut s, &mut r, "qmp_capabilities"),
            serde_json::json!({"return": {}})
        );
        let q = qmp_cmd(&mut s, &mut r, "query-sev");
        let ret = &q["return"];
        // QEMU's SevGuestType: `sev` for legacy SEV and SEV-ES guests alike (only SNP differs).
        assert_eq!(ret["sev-type"], "sev", "policy {policy:#x}: {q}");
        assert_eq!(ret["state"], "launch-secret", "{q}");
        let p = sev_proto::policy::GuestPolicy(ret["policy"].as_u64().unwrap() as u32);
        assert_eq!(p.bits(), policy, "{q}");
        assert_eq!(
            p.es(),
            is_es,
            "the ES bit is how QMP tells an SEV-ES guest: {q}"
        );
        // One renderer: the run log's query-sev is QMP's.
        assert_eq!(ret, &h.status().to_query_sev(), "{q}");
        drop((s, r));
        rt.finish(None);
        drop(vm);
    }
}
