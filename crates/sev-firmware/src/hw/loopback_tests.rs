//! `HwPlatform`/`HwGuest` end to end on the loopback kernel (see `loopback.rs`).

use super::loopback::Loopback;
use super::*;
use crate::soft::store::{API, BUILD};
use crate::{GuestState, PlatformState, SevGuest, SevPlatform};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sev_proto::cert::chain::{verify_full, FullChain};
use sev_proto::cert::{Algo, SevCert, Usage};
use sev_proto::measure::{measurement, LaunchDigest};
use sev_proto::secret::build_packet;
use sev_proto::session::LaunchOwner;
use sev_proto::session::{owner_session_with, TransportKeys};
use sev_proto::vmsa::{kvm_es_vmsa, qemu_vmsa, vmsa, KvmVmsaParams, VcpuState, VmsaProfile};

/// A test buffer standing in for guest RAM, as the runtime methods take it.
fn vs(b: &mut [u8]) -> VolatileSlice<'_> {
    VolatileSlice::from(b)
}

struct Rig {
    _dir: tempfile::TempDir,
    lb: Arc<Loopback>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let lb = Arc::new(Loopback::new(dir.path()));
    Rig { _dir: dir, lb }
}

impl Rig {
    fn port(&self) -> Arc<dyn IoctlPort> {
        self.lb.clone()
    }

    fn platform(&self) -> HwPlatform {
        HwPlatform::open_with_port(self.lb.sev_path(), self.port()).unwrap()
    }

    fn guest(&self, vm: &File, vm_type: u32) -> HwGuest {
        HwGuest::with_port(vm.as_raw_fd(), vm_type, self.lb.sev_path(), self.port()).unwrap()
    }
}

struct Owner {
    launch: LaunchOwner,
    keys: TransportKeys,
}

/// The guest owner: verifies the chain exported through `/dev/sev` (completed with the
/// soft CEK/ASK/ARK a KDS would give) and wraps launch keys for its PDH.
fn owner(r: &Rig, hw: &HwPlatform, policy: u32) -> Owner {
    let exp = hw.pdh_cert_export().unwrap();
    let soft = r.lb.platform().export_chain().unwrap();
    let mut bytes = exp.pdh.encode();
    bytes.extend_from_slice(&exp.pek.encode());
    bytes.extend_from_slice(&exp.oca.encode());
    bytes.extend_from_slice(&soft.cek);
    bytes.extend_from_slice(&soft.ask);
    bytes.extend_from_slice(&soft.ark);
    let full = FullChain::parse(&bytes).expect("chain parses");
    verify_full(&full, None).expect("chain exported through /dev/sev verifies");
    let pdh = exp.pdh;
    let godh_key: EcKey<Private> =
        EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let keys = TransportKeys::random().unwrap();
    let s = owner_session_with(&pdh, &godh_key, keys, &[3u8; 16], &[4u8; 16], policy).unwrap();
    Owner {
        launch: s.launch_owner(),
        keys: s.keys.clone(),
    }
}

/// `len` bytes of page-aligned memory inside `v` (which must hold `len + 4096`).
fn aligned(v: &mut [u8], len: usize) -> &mut [u8] {
    let off = v.as_ptr().align_offset(4096);
    &mut v[off..off + len]
}

fn status_of<T: std::fmt::Debug>(r: Result<T>) -> Status {
    r.expect_err("command must fail")
        .status()
        .expect("a firmware status")
}

fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    match r.expect_err("command must fail") {
        FwError::Ioctl { source, .. } => source.raw_os_error().expect("an errno"),
        e => panic!("expected an ioctl error, got {e}"),
    }
}

fn verify_report(report: &[u8], pek: &SevCert) -> bool {
    let pek = pek.ec_public_key().unwrap();
    let digest =
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &report[..0x34]).unwrap();
    let le = |b: &[u8]| {
        let mut v = b[..48].to_vec();
        v.reverse();
        openssl::bn::BigNum::from_slice(&v).unwrap()
    };
    let sig =
        openssl::ecdsa::EcdsaSig::from_private_components(le(&report[0x40..]), le(&report[0x88..]))
            .unwrap();
    sig.verify(&digest, &pek).unwrap()
}

#[test]
fn platform_commands_through_dev_sev() {
    let r = rig();
    let hw = r.platform();
    let st = hw.platform_status().unwrap();
    assert_eq!(st.state, PlatformState::Uninit);
    assert_eq!(
        (st.api_major, st.api_minor, st.build),
        (API.0, API.1, BUILD)
    );
    assert_eq!(st.guest_count, 0);

    // PDH_CERT_EXPORT initialises the platform (the driver's auto-INIT) and matches the
    // soft platform's own export; the chain verifies (done inside `owner`).
    let exp = hw.pdh_cert_export().unwrap();
    let st = hw.platform_status().unwrap();
    assert_eq!(st.state, PlatformState::Init);
    assert!(st.config_es, "the driver INITs with the ES flag and a TMR");
    let soft = r.lb.platform().export_chain().unwrap();
    assert_eq!(exp.pdh.encode(), soft.pdh);
    assert_eq!(exp.pek.encode(), soft.pek);
    assert_eq!(exp.oca.encode(), soft.oca);
    assert_eq!(exp.chain_bytes().len(), 3 * SevCert::LEN);
    owner(&r, &hw, 0);

    let id = hw.get_id().unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(id, r.lb.platform().get_id().unwrap());

    let csr = hw.pek_csr().unwrap();
    assert_eq!(
        csr.unsigned().encode(),
        SevCert::parse(&soft.pek).unwrap().unsigned().encode(),
        "the CSR is the PEK body"
    );

    // PDH_GEN replaces the PDH; PEK_GEN replaces PEK and PDH.
    hw.pdh_gen().unwrap();
    let after = hw.pdh_cert_export().unwrap();
    assert_ne!(after.pdh, exp.pdh);
    assert_eq!(after.chain_bytes(), exp.chain_bytes());
    hw.pek_gen().unwrap();
    let after2 = hw.pdh_cert_export().unwrap();
    assert_ne!(after2.pek, exp.pek);

    // Take ownership with an OCA-signed CSR, then FACTORY_RESET gives it up.
    let p384 = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let oca_key = EcKey::generate(&p384).unwrap();
    let mut oca_c = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, 0, 24, &oca_key).unwrap();
    oca_c.sign_with(&oca_key, Usage::OCA).unwrap();
    let oca = oca_c;
    let mut pek = hw.pek_csr().unwrap();
    pek.sign_with(&oca_key, Usage::OCA).unwrap();
    let mut wrong = pek.clone();
    wrong.pubkey[0x10] ^= 1;
    assert_eq!(
        status_of(hw.pek_cert_import(&wrong, &oca)),
        Status::BadSignature
    );
    // psp_copy_user_blob refuses an empty blob before the firmware runs (a certificate
    // cannot be empty, so the raw command shows it).
    let (empty, oca_bytes) = (Vec::<u8>::new(), oca.encode());
    let mut d = SevUserDataTwoBufs {
        addr1: empty.as_ptr() as u64,
        len1: 0,
        addr2: oca_bytes.as_ptr() as u64,
        len2: oca_bytes.len() as u32,
    };
    assert_eq!(
        errno_of(hw.issue(sev_cmd::PEK_CERT_IMPORT, "PEK_CERT_IMPORT", Some(&mut d))),
        libc::EINVAL
    );
    hw.pek_cert_import(&pek, &oca).unwrap();
    assert!(hw.platform_status().unwrap().owner_external);
    assert_eq!(
        status_of(hw.pek_cert_import(&pek, &oca)),
        Status::AlreadyOwned
    );
    hw.factory_reset().unwrap();
    let st = hw.platform_status().unwrap();
    assert!(!st.owner_external);
    assert_eq!(
        st.state,
        PlatformState::Uninit,
        "reset shuts the platform down"
    );
}

#[test]
fn full_launch_through_kvm_on_the_loopback() {
    let r = rig();
    let hw = r.platform();
    let policy = 0u32; // debug allowed
    let o = owner(&r, &hw, policy);
    let exp = hw.pdh_cert_export().unwrap();
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();

    let count_before = hw.platform_status().unwrap().guest_count;
    let mut s = o.launch.clone();
    s.session.wrap_mac[0] ^= 1;
    assert_eq!(
        status_of(g.launch_start(GuestPolicy(policy), Some(&s), 0)),
        Status::BadMeasurement,
        "the firmware status comes back through kvm_sev_cmd.error as with the soft backend"
    );
    assert_eq!(hw.platform_status().unwrap().guest_count, count_before);

    let h = g
        .launch_start(GuestPolicy(policy), Some(&o.launch), 0)
        .unwrap();
    assert!(h >= 1);
    let st = hw.platform_status().unwrap();
    assert_eq!(st.state, PlatformState::Working);
    assert_eq!(st.guest_count, 1);

    let mut backing = vec![0u8; 4 * 4096];
    let ram = aligned(&mut backing, 3 * 4096);
    for (i, b) in ram.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let plain = ram.to_vec();
    g.register_region(0x10_0000, ram).unwrap();
    g.launch_update_data(0x10_0000, &mut ram[..8192]).unwrap();
    g.launch_update_data(0x10_0000 + 8192, &mut ram[8192..])
        .unwrap();
    let mut ld = LaunchDigest::new();
    ld.update(&plain);
    let ld = ld.finish();
    // Encrypted in place: the host mapping now reads ciphertext, as on hardware.
    assert_ne!(&ram[..], &plain[..]);
    assert_eq!(g.host_view(0x10_0000, vs(ram)).unwrap(), ram.to_vec());
    let mut dbg = vec![0u8; 64];
    g.dbg_decrypt(0x10_0000, vs(&mut ram[..64]), &mut dbg)
        .unwrap();
    assert_eq!(&dbg[..], &plain[..64]);
    // Unaligned: the kernel decrypts into a bounce page.
    let mut dbg = vec![0u8; 37];
    g.dbg_decrypt(0x10_0005, vs(&mut ram[5..42]), &mut dbg)
        .unwrap();
    assert_eq!(&dbg[..], &plain[5..42]);
    // Across a page boundary (one firmware command per source page).
    let mut dbg = vec![0u8; 256];
    g.dbg_decrypt(0x10_0F80, vs(&mut ram[0xF80..0x1080]), &mut dbg)
        .unwrap();
    assert_eq!(&dbg[..], &plain[0xF80..0x1080]);

    let m = g.launch_measure().unwrap();
    let mnonce: [u8; 16] = m[32..].try_into().unwrap();
    let expect = measurement(&o.keys.tik, API.0, API.1, BUILD, policy, &ld, &mnonce);
    assert_eq!(&m[..32], &expect[..], "measurement equals the owner's");
    let gs = g.guest_status().unwrap();
    assert_eq!((gs.state, gs.policy), (GuestState::LSecret, policy));

    let measure: [u8; 32] = m[..32].try_into().unwrap();
    let secret = *b"top-secret-key-material-32bytes!";
    let (hdr, ct) = build_packet(&o.keys, &measure, [9u8; 16], 0, &secret).unwrap();
    let mut sec_backing = vec![0u8; 2 * 4096];
    let sec_page = aligned(&mut sec_backing, 4096);
    let dest = &mut sec_page[0x100..0x120];
    let mut bad = hdr;
    bad.mac[0] ^= 1;
    assert_eq!(
        status_of(g.launch_secret(&bad, &ct, 0x20_0100, dest)),
        Status::BadMeasurement
    );
    g.launch_secret(&hdr, &ct, 0x20_0100, dest).unwrap();
    assert_ne!(&dest[..], &secret[..], "the host sees the secret encrypted");
    let mut out = [0u8; 32];
    g.dbg_decrypt(0x20_0100, vs(dest), &mut out).unwrap();
    assert_eq!(out, secret, "the secret's plaintext is in guest memory");

    let report = g.attestation_report([5u8; 16]).unwrap().to_bytes();
    assert_eq!(report.len(), 0xD0);
    assert_eq!(&report[..16], &[5u8; 16]);
    assert_eq!(&report[0x10..0x30], &ld[..]);
    assert!(
        verify_report(&report, &exp.pek),
        "the report verifies with the exported PEK"
    );

    g.launch_finish().unwrap();
    assert_eq!(g.guest_status().unwrap().state, GuestState::Running);
    assert_eq!(
        status_of(g.launch_measure()),
        Status::InvalidGuestState,
        "no measurement after LAUNCH_FINISH"
    );

    // DBG_ENCRYPT writes through the guest key; DBG_DECRYPT reads it back.
    let msg = *b"written-by-debug";
    g.dbg_encrypt(0x10_0000, &msg, vs(&mut ram[..16])).unwrap();
    assert_ne!(&ram[..16], &msg[..]);
    let mut back = [0u8; 16];
    g.dbg_decrypt(0x10_0000, vs(&mut ram[..16]), &mut back)
        .unwrap();
    assert_eq!(back, msg);
    // Unaligned destination and length: read-modify-write through bounce pages.
    g.dbg_encrypt(0x10_0023, b"xyz", vs(&mut ram[0x23..0x26]))
        .unwrap();
    let mut back = [0u8; 48];
    g.dbg_decrypt(0x10_0010, vs(&mut ram[0x10..0x40]), &mut back)
        .unwrap();
    let mut want = plain[0x10..0x40].to_vec();
    want[0x13..0x16].copy_from_slice(b"xyz");
    assert_eq!(&back[..], &want[..], "only the three bytes changed");

    drop(g);
    r.lb.destroy_vm(vm);
    assert_eq!(hw.platform_status().unwrap().guest_count, 0);
}

#[test]
fn es_launch_measures_each_vcpu_once() {
    let r = rig();
    let hw = r.platform();
    // The VM type comes from KVM_CAP_VM_TYPES on /dev/kvm.
    let kvm = File::open(r.lb.kvm_path()).unwrap();
    let types = vm_types_through(r.port().as_ref(), kvm.as_raw_fd());
    assert_eq!(types, 0b1101);
    assert_eq!(sev_vm_type(types, true), Some(KVM_X86_SEV_ES_VM));
    let policy = 0x4u32; // ES
                         // INIT2 on an SEV-ES VM type, then legacy ES_INIT on a default VM.
    for vm_type in [KVM_X86_SEV_ES_VM, 0] {
        let o = owner(&r, &hw, policy);
        let vm = r.lb.create_vm(vm_type);
        let mut g = r.guest(&vm, vm_type);
        g.init(true).unwrap();
        // QEMU's reset registers (an AP at OVMF's reset block): KVM's VMSAs for them are
        // sevctl's (legacy ES_INIT) or the sev crate's (INIT2, FPU state synced) bytes.
        let (reset, sig) = (0x80B004, 0x800F12);
        for bsp in [true, false] {
            r.lb.add_vcpu(&vm, VcpuState::qemu_reset(bsp, reset, sig));
        }
        let profile = if vm_type == 0 {
            VmsaProfile::Qemu
        } else {
            VmsaProfile::QemuFpu
        };
        let vmsas: Vec<[u8; 4096]> = (0..2).map(|i| vmsa(profile, i == 0, reset, sig)).collect();
        assert_ne!(vmsas[0], vmsas[1]);
        g.launch_start(GuestPolicy(policy), Some(&o.launch), 0)
            .unwrap();
        let mut backing = vec![0u8; 2 * 4096];
        let ram = aligned(&mut backing, 4096);
        ram.fill(0x5A);
        let plain = ram.to_vec();
        g.register_region(0, ram).unwrap();
        g.launch_update_data(0, ram).unwrap();
        // One call for every vCPU: KVM encrypts them all from the vCPUs' registers (the
        // bytes passed here are not given to KVM).
        g.launch_update_vmsas(&[[0xEE; 4096]; 2]).unwrap();
        let m = g.launch_measure().unwrap();
        let mut ld = LaunchDigest::new();
        ld.update(&plain);
        for v in &vmsas {
            ld.update(v);
        }
        let ld = ld.finish();
        let mnonce: [u8; 16] = m[32..].try_into().unwrap();
        let expect = measurement(&o.keys.tik, API.0, API.1, BUILD, policy, &ld, &mnonce);
        assert_eq!(
            &m[..32],
            &expect[..],
            "firmware ‖ VMSA0 ‖ VMSA1 measured exactly once each (vm type {vm_type})"
        );
        // The VMSAs are protected now: KVM refuses a second LAUNCH_UPDATE_VMSA.
        let mut again =
            HwGuest::with_port(vm.as_raw_fd(), vm_type, r.lb.sev_path(), r.port()).unwrap();
        assert_eq!(
            errno_of(again.launch_update_vmsas(&[[0u8; 4096]; 2])),
            libc::EINVAL
        );
        g.launch_finish().unwrap();
        assert_eq!(g.guest_status().unwrap().policy, policy);
        drop(g);
        r.lb.destroy_vm(vm);
    }
    // INIT2 takes ES from the VM type: asking for the other kind is the caller's error.
    let vm = r.lb.create_vm(KVM_X86_SEV_VM);
    let mut g = r.guest(&vm, KVM_X86_SEV_VM);
    assert!(matches!(g.init(true), Err(FwError::InvalidArgument(_))));
    g.init(false).unwrap();
    // An ES policy on an SEV VM: KVM bound an SEV ASID, so ACTIVATE refuses it.
    assert_eq!(
        status_of(g.launch_start(GuestPolicy(policy), None, 0)),
        Status::InvalidAsid
    );
}

#[test]
fn kernel_refusals_reach_the_caller() {
    let r = rig();
    let hw = r.platform();
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    // LAUNCH commands and REG_REGION before KVM_SEV_INIT: not an SEV guest (ENOTTY).
    assert_eq!(
        errno_of(g.launch_start(GuestPolicy(0), None, 0)),
        libc::ENOTTY
    );
    assert_eq!(errno_of(g.launch_measure()), libc::ENOTTY);
    let mut mem = vec![0u8; 4096];
    assert_eq!(errno_of(g.register_region(0, &mut mem)), libc::ENOTTY);
    g.init(false).unwrap();
    assert_eq!(errno_of(g.init(false)), libc::EINVAL, "second INIT");
    assert_eq!(
        errno_of(g.launch_update_vmsas(&[[0u8; 4096]])),
        libc::ENOTTY
    );
    // Commands the firmware refuses in this state.
    g.launch_start(GuestPolicy(0x1), None, 0).unwrap(); // NODBG
    assert_eq!(status_of(g.launch_finish()), Status::InvalidGuestState);
    let hdr = PacketHeader::from_bytes(&[0u8; 52]).unwrap();
    let ct = [0u8; 16];
    let mut dest = vec![0u8; 16];
    assert_eq!(
        status_of(g.launch_secret(&hdr, &ct, 0, &mut dest)),
        Status::InvalidGuestState
    );
    let mut out = [0u8; 16];
    assert_eq!(
        status_of(g.dbg_decrypt(0, vs(&mut mem[..16]), &mut out)),
        Status::PolicyFailure,
        "NODBG"
    );
    // REG_REGION of an empty range: sev_pin_memory's EINVAL.
    assert_eq!(errno_of(g.register_region(0, &mut [])), libc::EINVAL);
    // FACTORY_RESET with a guest: the driver's EBUSY, no firmware status.
    assert_eq!(errno_of(hw.factory_reset()), libc::EBUSY);

    // Legacy INIT on an SEV-type VM, INIT2 on a default VM: EINVAL.
    let vm2 = r.lb.create_vm(KVM_X86_SEV_VM);
    let mut g2 = r.guest(&vm2, 0);
    assert_eq!(errno_of(g2.init(false)), libc::EINVAL);
    let vm3 = r.lb.create_vm(0);
    let mut g3 = r.guest(&vm3, KVM_X86_SEV_VM);
    assert_eq!(errno_of(g3.init(false)), libc::EINVAL);

    // A sev_fd that is not /dev/sev: EBADF at LAUNCH_START (INIT does not use it).
    let other = r._dir.path().join("not-sev");
    std::fs::write(&other, b"").unwrap();
    let vm4 = r.lb.create_vm(0);
    let mut g4 = HwGuest::with_port(vm4.as_raw_fd(), 0, &other, r.port()).unwrap();
    g4.init(false).unwrap();
    assert_eq!(
        errno_of(g4.launch_start(GuestPolicy(0), None, 0)),
        libc::EBADF
    );

    drop(g);
    r.lb.destroy_vm(vm);
    hw.factory_reset().unwrap();
}

#[test]
fn emulated_kernel_follows_the_length_probes() {
    let r = rig();
    let port = r.port();
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.lb.sev_path())
        .unwrap();
    let issue = |fd: RawFd, cmd: u32, data: u64| {
        let mut c = SevIssueCmd {
            cmd,
            data,
            error: 0,
        };
        // SAFETY: `c` is live; `data` is 0 or a live struct of the command's type.
        let res = unsafe { port.ioctl(fd, SEV_ISSUE_CMD, (&mut c as *mut SevIssueCmd).cast()) };
        (res.map_err(|e| e.raw_os_error().unwrap()), c.error)
    };
    let fd = dev.as_raw_fd();
    // PEK_CSR probe: EIO, INVALID_LEN, needed length.
    let mut d = SevUserDataAddrLen::default();
    let (res, err) = issue(fd, sev_cmd::PEK_CSR, &mut d as *mut _ as u64);
    let len = d.length;
    assert_eq!((res, err, len), (Err(libc::EIO), 4, 2084));
    // PDH_CERT_EXPORT probe.
    let mut d = SevUserDataTwoBufs::default();
    let (res, err) = issue(fd, sev_cmd::PDH_CERT_EXPORT, &mut d as *mut _ as u64);
    let (l1, l2) = (d.len1, d.len2);
    assert_eq!((res, err, l1, l2), (Err(libc::EIO), 4, 2084, 3 * 2084));
    // GET_ID2 probe.
    let mut d = SevUserDataAddrLen::default();
    let (res, err) = issue(fd, sev_cmd::GET_ID2, &mut d as *mut _ as u64);
    let len = d.length;
    assert_eq!((res, err, len), (Err(libc::EIO), 4, 64));
    // Unknown command and unknown ioctl: EINVAL.
    assert_eq!(issue(fd, 99, 0).0, Err(libc::EINVAL));
    // SAFETY: a request the device does not know; the argument is never read.
    let e = unsafe { port.ioctl(fd, KVM_MEMORY_ENCRYPT_OP, std::ptr::null_mut()) };
    assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    // Writes need FMODE_WRITE.
    let ro = File::open(r.lb.sev_path()).unwrap();
    assert_eq!(
        issue(ro.as_raw_fd(), sev_cmd::PEK_GEN, 0).0,
        Err(libc::EPERM)
    );
    // An unrelated file has no such ioctl.
    let plain = File::open(r._dir.path().join("platform")).unwrap();
    assert_eq!(
        issue(plain.as_raw_fd(), sev_cmd::PLATFORM_STATUS, 0).0,
        Err(libc::ENOTTY)
    );
    assert_eq!(vm_types_through(port.as_ref(), plain.as_raw_fd()), 0);

    // KVM side: NULL probe, then the LAUNCH_MEASURE / ATTESTATION probes.
    let vm = r.lb.create_vm(0);
    // SAFETY: a NULL argument is KVM's support probe.
    let probe = unsafe { port.ioctl(vm.as_raw_fd(), KVM_MEMORY_ENCRYPT_OP, std::ptr::null_mut()) };
    assert_eq!(probe.unwrap(), 0);
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    let op = |id: u32, data: u64| {
        let mut c = kb::kvm_sev_cmd {
            id,
            pad0: 0,
            data,
            error: 0,
            sev_fd: dev.as_raw_fd() as u32,
        };
        // SAFETY: `c` is live; `data` is a live struct of the command's type.
        let res = unsafe {
            port.ioctl(
                vm.as_raw_fd(),
                KVM_MEMORY_ENCRYPT_OP,
                (&mut c as *mut kb::kvm_sev_cmd).cast(),
            )
        };
        (res.map_err(|e| e.raw_os_error().unwrap()), c.error)
    };
    let mut m = kb::kvm_sev_launch_measure::default();
    let (res, err) = op(
        kb::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE,
        &mut m as *mut _ as u64,
    );
    assert_eq!((res, err, m.len), (Err(libc::EIO), 4, 48));
    // Too long for SEV_FW_BLOB_MAX_SIZE.
    let mut big = vec![0u8; 16];
    m.uaddr = big.as_mut_ptr() as u64;
    m.len = 0x4001;
    assert_eq!(
        op(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE,
            &mut m as *mut _ as u64
        )
        .0,
        Err(libc::EINVAL)
    );
    let mut a = kb::kvm_sev_attestation_report::default();
    let (res, err) = op(
        kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT,
        &mut a as *mut _ as u64,
    );
    // The guest is still in LUPDATE: the firmware refuses the state before the length.
    assert_eq!(
        (res, err),
        (Err(libc::EIO), Status::InvalidGuestState.code())
    );
    g.launch_measure().unwrap();
    let (res, err) = op(
        kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT,
        &mut a as *mut _ as u64,
    );
    assert_eq!((res, err, a.len), (Err(libc::EIO), 4, 0xD0));
    // Unknown KVM_SEV id: EINVAL.
    assert_eq!(op(999, 0).0, Err(libc::EINVAL));
    // UNREG_REGION needs the exact range registered before.
    let mut region_mem = vec![0u8; 8192];
    let mut region = kb::kvm_enc_region {
        addr: region_mem.as_mut_ptr() as u64,
        size: 8192,
    };
    let region_ioctl = |req: u64, r: &mut kb::kvm_enc_region| {
        // SAFETY: `r` is live and describes memory owned by this test.
        unsafe { port.ioctl(vm.as_raw_fd(), req, (r as *mut kb::kvm_enc_region).cast()) }
            .map_err(|e| e.raw_os_error().unwrap())
    };
    assert_eq!(
        region_ioctl(KVM_MEMORY_ENCRYPT_REG_REGION, &mut region),
        Ok(0)
    );
    region.size = 4096;
    assert_eq!(
        region_ioctl(KVM_MEMORY_ENCRYPT_UNREG_REGION, &mut region),
        Err(libc::EINVAL)
    );
    region.size = 8192;
    assert_eq!(
        region_ioctl(KVM_MEMORY_ENCRYPT_UNREG_REGION, &mut region),
        Ok(0)
    );
    assert_eq!(
        region_ioctl(KVM_MEMORY_ENCRYPT_UNREG_REGION, &mut region),
        Err(libc::EINVAL),
        "already unregistered"
    );
    drop(g);
    r.lb.destroy_vm(vm);
}

/// One call's outcome, comparable across backends.
fn outcome<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(FwError::Status { status, .. }) => format!("status {status}"),
        Err(FwError::InvalidArgument(_)) => "invalid argument".into(),
        Err(FwError::Ioctl { source, .. }) => format!("errno {:?}", source.raw_os_error()),
        Err(e) => format!("other {e}"),
    }
}

/// The same calls, including misuse, on a soft guest and on a hw guest over the loopback.
fn misuse_script(g: &mut dyn SevGuest) -> Vec<String> {
    let mut log = Vec::new();
    let mut backing = vec![0u8; 3 * 4096];
    let mem = aligned(&mut backing, 2 * 4096);
    mem.fill(7);
    log.push(outcome(g.init(false)));
    log.push(outcome(g.launch_start(GuestPolicy(0x1), None, 0))); // NODBG
    log.push(outcome(g.register_region(0x1000, mem)));
    log.push(outcome(g.launch_update_data(0x1000, &mut mem[..4096])));
    log.push(outcome(
        g.launch_update_data(0x2008, &mut mem[4096 + 8..4096 + 24]),
    ));
    let mut out = [0u8; 16];
    log.push(outcome(g.dbg_decrypt(0x1000, vs(&mut mem[..32]), &mut out)));
    log.push(outcome(g.dbg_decrypt(0x1000, vs(&mut mem[..16]), &mut out)));
    log.push(outcome(g.launch_finish()));
    let hdr = PacketHeader::from_bytes(&[0u8; 52]).unwrap();
    let mut dest = [0u8; 16];
    log.push(outcome(
        g.launch_secret(&hdr, &[0u8; 32], 0x2000, &mut dest),
    ));
    log.push(outcome(
        g.launch_secret(&hdr, &[0u8; 16], 0x2000, &mut dest),
    ));
    log.push(outcome(g.attestation_report([1; 16])));
    log.push(outcome(g.launch_measure()));
    log.push(outcome(g.launch_measure()));
    log.push(outcome(g.guest_status().map(|s| (s.state, s.policy))));
    log.push(format!(
        "{:?}",
        g.guest_status().map(|s| (s.state, s.policy)).ok()
    ));
    log.push(outcome(
        g.attestation_report([1; 16]).map(|r| r.to_bytes().len()),
    ));
    log.push(outcome(g.launch_finish()));
    log.push(format!("{:?}", g.guest_status().map(|s| s.state).ok()));
    log.push(outcome(g.launch_finish()));
    log
}

#[test]
fn soft_and_hw_backends_agree_on_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let soft = crate::soft::SoftPlatform::open(dir.path()).unwrap();
    let mut sg = soft.new_guest();
    let soft_log = misuse_script(&mut sg);

    let r = rig();
    let vm = r.lb.create_vm(0);
    let mut hg = r.guest(&vm, 0);
    let hw_log = misuse_script(&mut hg);
    assert_eq!(hw_log, soft_log);
    assert_eq!(soft_log[0], "ok");
    assert_eq!(soft_log[4], "status INVALID_ADDRESS (0x09)", "{soft_log:?}");
    drop(hg);
    r.lb.destroy_vm(vm);
}

#[test]
fn es_asids_run_out_and_are_recycled() {
    let r = rig();
    // ES guests get ASIDs 1..MIN_SEV_ASID-1 (four of them in the model).
    let n = (crate::soft::fw::MIN_SEV_ASID - 1) as usize;
    let vms: Vec<File> = (0..n).map(|_| r.lb.create_vm(0)).collect();
    let mut guests: Vec<HwGuest> = vms.iter().map(|vm| r.guest(vm, 0)).collect();
    for g in guests.iter_mut() {
        g.init(true).unwrap();
        g.launch_start(GuestPolicy(0x4), None, 0).unwrap();
    }
    let extra = r.lb.create_vm(0);
    let mut ge = r.guest(&extra, 0);
    assert_eq!(errno_of(ge.init(true)), libc::EBUSY, "no ES ASID left");
    assert_eq!(
        r.platform().platform_status().unwrap().guest_count,
        n as u32
    );
    // Closing one VM deactivates and decommissions it; its ASID is reclaimable and the
    // next INIT recycles it (DF_FLUSH), after which ACTIVATE accepts it.
    guests.pop();
    r.lb.destroy_vm(vms.into_iter().last().unwrap());
    ge.init(true).unwrap();
    ge.launch_start(GuestPolicy(0x4), None, 0).unwrap();
    assert_eq!(
        r.platform().platform_status().unwrap().guest_count,
        n as u32
    );
}

#[test]
fn physically_scattered_pages() {
    let r = rig();
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    let mut backing = vec![0u8; 3 * 4096];
    let ram = aligned(&mut backing, 2 * 4096);
    for (i, b) in ram.iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    let plain = ram.to_vec();
    // Pin the second page first: the first page then lands after it physically, so the
    // two are not contiguous and KVM issues one LAUNCH_UPDATE_DATA per page.
    g.register_region(0x1000, &mut ram[4096..]).unwrap();
    g.register_region(0, ram).unwrap();
    g.launch_update_data(0, ram).unwrap();
    let mut back = vec![0u8; 2 * 4096];
    g.dbg_decrypt(0, vs(ram), &mut back).unwrap();
    assert_eq!(
        back, plain,
        "both pages decrypt at their own physical addresses"
    );
    g.launch_measure().unwrap();
    let report = g.attestation_report([0; 16]).unwrap();
    let mut ld = LaunchDigest::new();
    ld.update(&plain);
    assert_eq!(report.launch_digest, ld.finish(), "digest over both runs");
    // LAUNCH_SECRET needs a physically contiguous destination: EINVAL before the firmware.
    let hdr = PacketHeader::from_bytes(&[0u8; 52]).unwrap();
    let ct = [0u8; 32];
    assert_eq!(
        errno_of(g.launch_secret(&hdr, &ct, 0xFF0, &mut ram[4096 - 16..4096 + 16])),
        libc::EINVAL
    );
    drop(g);
    r.lb.destroy_vm(vm);
}

/// KVM_SEV_INIT2 with `features` on `vm` straight through the port: 0 or the errno.
fn init2(r: &Rig, vm: &File, features: u64) -> i32 {
    let sev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.lb.sev_path())
        .unwrap();
    let mut init = kb::kvm_sev_init {
        vmsa_features: features,
        ..Default::default()
    };
    let mut c = kb::kvm_sev_cmd {
        id: kb::sev_cmd_id_KVM_SEV_INIT2,
        data: &mut init as *mut kb::kvm_sev_init as u64,
        sev_fd: sev.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `c` is a kvm_sev_cmd whose data points to a live kvm_sev_init.
    let r = unsafe {
        r.lb.ioctl(
            vm.as_raw_fd(),
            KVM_MEMORY_ENCRYPT_OP,
            (&mut c as *mut kb::kvm_sev_cmd).cast(),
        )
    };
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// `__sev_guest_init`: SEV init (legacy or INIT2) once a vCPU exists is EINVAL, and the
/// loopback's log shows the vCPU before the refused INIT.
#[test]
fn sev_init_after_a_vcpu_is_refused() {
    let r = rig();
    for vm_type in [0, KVM_X86_SEV_VM, KVM_X86_SEV_ES_VM] {
        let vm = r.lb.create_vm(vm_type);
        let mut g = r.guest(&vm, vm_type);
        let vcpu = g.create_vcpu(0).unwrap();
        assert!(
            vcpu.is_some(),
            "the hw backend creates vCPUs through its port"
        );
        let es = vm_type == KVM_X86_SEV_ES_VM;
        assert_eq!(errno_of(g.init(es)), libc::EINVAL, "vm type {vm_type}");
        let log = r.lb.log();
        let mine: Vec<_> = log
            .iter()
            .filter(|e| e.vm == log.last().unwrap().vm)
            .collect();
        assert_eq!(mine[0].op, "KVM_CREATE_VCPU");
        assert_eq!(mine[0].errno, 0);
        assert!(mine[1].op.starts_with("KVM_SEV_INIT") || mine[1].op == "KVM_SEV_ES_INIT");
        assert_eq!(mine[1].errno, libc::EINVAL);
    }
}

/// The same rule on a real KVM VM whose vCPU was created behind the loopback's back:
/// the real kernel's `created_vcpus` (KVM_SET_BOOT_CPU_ID answers EBUSY) decides.
#[test]
fn sev_init_on_a_real_vm_with_a_vcpu_is_refused() {
    let kvm = match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(f) => f,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "/dev/kvm: {e}, and CI is set"
            );
            eprintln!("SKIP sev_init_on_a_real_vm_with_a_vcpu_is_refused: /dev/kvm: {e}");
            return;
        }
    };
    let r = rig();
    let new_vm = || {
        // SAFETY: KVM_CREATE_VM takes an integer (the VM type) and returns a new fd.
        let fd = unsafe { libc::ioctl(kvm.as_raw_fd(), 0xAE01, 0usize) };
        assert!(fd >= 0, "KVM_CREATE_VM: {}", io::Error::last_os_error());
        // SAFETY: a new fd nothing else owns.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    // Clean VM: INIT succeeds; a second INIT on it is refused (`sev->active`).
    let vm = new_vm();
    r.lb.vm_created(vm.as_raw_fd());
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();
    assert_eq!(errno_of(g.init(false)), libc::EINVAL, "second INIT");
    drop(g);
    drop(vm);
    // A vCPU made directly with KVM_CREATE_VCPU (not through the port).
    let vm = new_vm();
    r.lb.vm_created(vm.as_raw_fd());
    // SAFETY: KVM_CREATE_VCPU takes an integer (the vCPU id) and returns a new fd.
    let vcpu = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU as _, 0usize) };
    assert!(vcpu >= 0, "KVM_CREATE_VCPU: {}", io::Error::last_os_error());
    // SAFETY: a new fd nothing else owns.
    let _vcpu = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(vcpu) };
    let mut g = r.guest(&vm, 0);
    assert_eq!(errno_of(g.init(false)), libc::EINVAL);
    assert_eq!(errno_of(g.init(true)), libc::EINVAL);
}

/// `__sev_guest_init` for INIT2: VMSA features outside `sev_supported_vmsa_features` (and
/// any on a plain SEV VM) are EINVAL; accepted features land in every VMSA's SEV_FEATURES;
/// a second INIT2 is refused (`need_init` is gone).
#[test]
fn init2_vmsa_features_follow_the_host() {
    let r = rig();
    let vm = r.lb.create_vm(KVM_X86_SEV_VM);
    assert_eq!(init2(&r, &vm, 1 << 5), libc::EINVAL, "features on SEV");
    assert_eq!(init2(&r, &vm, 0), 0);
    assert_eq!(init2(&r, &vm, 0), libc::EINVAL, "second INIT2");
    let vm = r.lb.create_vm(KVM_X86_SEV_ES_VM);
    assert_eq!(init2(&r, &vm, 1 << 7), libc::EINVAL, "unsupported feature");
    r.lb.set_supported_vmsa_features(0);
    assert_eq!(
        init2(&r, &vm, 1 << 5),
        libc::EINVAL,
        "host without DebugSwap"
    );
    r.lb.set_supported_vmsa_features(1 << 5);
    assert_eq!(init2(&r, &vm, 1 << 5), 0);
    // The feature is measured: the digest of a one-vCPU launch has SEV_FEATURES = 1 << 5.
    let hw = r.platform();
    let o = owner(&r, &hw, 0x4);
    let mut g = r.guest(&vm, KVM_X86_SEV_ES_VM);
    r.lb.add_vcpu(&vm, VcpuState::kvm_reset());
    g.launch_start(GuestPolicy(0x4), Some(&o.launch), 0)
        .unwrap();
    g.launch_update_vmsas(&[[0u8; 4096]]).unwrap();
    let m = g.launch_measure().unwrap();
    let params = KvmVmsaParams {
        vmsa_features: 1 << 5,
        init2: true,
    };
    let v = kvm_es_vmsa(&VcpuState::kvm_reset(), &params);
    assert_eq!(v[0x3B0], 1 << 5);
    let mut ld = LaunchDigest::new();
    ld.update(&v);
    let mnonce: [u8; 16] = m[32..].try_into().unwrap();
    let expect = measurement(
        &o.keys.tik,
        API.0,
        API.1,
        BUILD,
        0x4u32,
        &ld.finish(),
        &mnonce,
    );
    assert_eq!(&m[..32], &expect[..]);
}

/// `sev_pin_memory`: per VM, registered pages plus a command's own pins must stay within
/// RLIMIT_MEMLOCK (ENOMEM), unless CAP_IPC_LOCK; transient pins are released after the call.
#[test]
fn pinning_counts_against_rlimit_memlock() {
    let r = rig();
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    let no = r.lb.log().last().unwrap().vm;
    let mut backing = vec![0u8; 4 * 4096];
    let ram = aligned(&mut backing, 3 * 4096);
    r.lb.set_memlock(Some(2 * 4096), false);
    assert_eq!(errno_of(g.register_region(0, ram)), libc::ENOMEM);
    assert_eq!(r.lb.pages_locked(no), Some(0));
    g.register_region(0, &mut ram[..2 * 4096]).unwrap();
    assert_eq!(r.lb.pages_locked(no), Some(2));
    // LAUNCH_UPDATE_DATA pins its page on top of the registered ones: 3 > 2.
    assert_eq!(
        errno_of(g.launch_update_data(0, &mut ram[..4096])),
        libc::ENOMEM
    );
    r.lb.set_memlock(Some(3 * 4096), false);
    g.launch_update_data(0, &mut ram[..4096]).unwrap();
    assert_eq!(
        r.lb.pages_locked(no),
        Some(2),
        "the command's pin is released"
    );
    // CAP_IPC_LOCK lifts the limit.
    r.lb.set_memlock(Some(0), true);
    g.register_region(0, &mut ram[2 * 4096..]).unwrap();
    assert_eq!(r.lb.pages_locked(no), Some(3));
    assert_eq!(
        r.lb.memlock(),
        Memlock {
            limit: Some(0),
            cap_ipc_lock: true
        }
    );
}

/// `sev_launch_secret`: the ciphertext is a `psp_copy_user_blob` (over 16 KiB: EINVAL) and
/// the firmware never runs for it.
#[test]
fn launch_secret_over_16_kib_is_einval() {
    let r = rig();
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    g.launch_measure().unwrap();
    let mut backing = vec![0u8; 7 * 4096];
    let dest = aligned(&mut backing, 0x4010);
    let ct = vec![0u8; 0x4010];
    let hdr = PacketHeader::from_bytes(&[0u8; 52]).unwrap();
    assert_eq!(errno_of(g.launch_secret(&hdr, &ct, 0, dest)), libc::EINVAL);
    let last = r.lb.log().pop().unwrap();
    assert_eq!(
        (last.op.as_str(), last.errno),
        ("LAUNCH_SECRET", libc::EINVAL)
    );
    assert_eq!(g.guest_status().unwrap().state, GuestState::LSecret);
}

/// One ES launch on an emulated legacy VM whose vCPUs were created through the port; `set`
/// issues KVM_SET_* on the vCPU fds (through the port) before LAUNCH_UPDATE_VMSA. Returns the
/// measurement and the owner (for its TIK), or the LAUNCH_UPDATE_VMSA error.
fn es_launch_with_port_vcpus(
    r: &Rig,
    set: &dyn Fn(&[std::os::fd::OwnedFd]),
) -> std::result::Result<([u8; 48], Owner), FwError> {
    let hw = r.platform();
    let o = owner(r, &hw, 0x4);
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(true).unwrap();
    let fds: Vec<_> = (0..2)
        .map(|i| g.create_vcpu(i).unwrap().expect("a vCPU fd"))
        .collect();
    set(&fds);
    g.launch_start(GuestPolicy(0x4), Some(&o.launch), 0)
        .unwrap();
    // Two vCPUs were created through the guest: one VMSA for one of them is refused before
    // KVM is asked (KVM would measure both).
    assert!(matches!(
        g.launch_update_vmsas(&[[0u8; 4096]]),
        Err(FwError::InvalidArgument(_))
    ));
    g.launch_update_vmsas(&[[0u8; 4096]; 2])?;
    // Once per launch: KVM did every vCPU.
    assert!(matches!(
        g.launch_update_vmsas(&[[0u8; 4096]; 2]),
        Err(FwError::InvalidArgument(_))
    ));
    let m = g.launch_measure().unwrap();
    Ok((m, o))
}

fn digest_of(vmsas: &[[u8; 4096]]) -> [u8; 32] {
    let mut ld = LaunchDigest::new();
    for v in vmsas {
        ld.update(v);
    }
    ld.finish()
}

/// `sev_es_sync_vmsa` reads the registers: vCPUs created through the port start in KVM's
/// reset state; KVM_SET_REGS / KVM_SET_SREGS through the port change what is measured (RIP
/// and CR3 here), and a DR7 beyond 0x400 is refused (EINVAL).
#[test]
fn launch_update_vmsa_builds_the_vmsa_from_the_vcpu_registers() {
    let r = rig();
    let check = |states: [VcpuState; 2], set: &dyn Fn(&[std::os::fd::OwnedFd])| {
        let (m, o) = es_launch_with_port_vcpus(&r, set).unwrap();
        let p = KvmVmsaParams::default();
        let ld = digest_of(&[kvm_es_vmsa(&states[0], &p), kvm_es_vmsa(&states[1], &p)]);
        let mnonce: [u8; 16] = m[32..].try_into().unwrap();
        let expect = measurement(&o.keys.tik, API.0, API.1, BUILD, 0x4u32, &ld, &mnonce);
        assert_eq!(&m[..32], &expect[..]);
        ld
    };
    // Nothing set: KVM's reset state (RDX 0x600, the reset vector).
    let reset = VcpuState::kvm_reset();
    let ld_reset = check([reset, reset], &|_| {});
    // RIP of vCPU 1 and CR3 of vCPU 0 set through the port: measured.
    let mut moved = [reset, reset];
    moved[1].rip = 0x1234;
    moved[0].cr3 = 0x9000 | 1 << 47;
    let ld_moved = check(moved, &|fds| {
        let regs = kb::kvm_regs {
            rip: 0x1234,
            rflags: 2,
            rdx: 0x600,
            ..Default::default()
        };
        // SAFETY: KVM_SET_REGS reads one kvm_regs, which `regs` is.
        unsafe {
            r.lb.ioctl(
                fds[1].as_raw_fd(),
                loopback::KVM_SET_REGS,
                (&regs as *const kb::kvm_regs).cast_mut().cast(),
            )
        }
        .unwrap();
        let mut sregs = reset_sregs();
        sregs.cr3 = 0x9000 | 1 << 47;
        // SAFETY: KVM_SET_SREGS reads one kvm_sregs, which `sregs` is.
        unsafe {
            r.lb.ioctl(
                fds[0].as_raw_fd(),
                loopback::KVM_SET_SREGS,
                (&mut sregs as *mut kb::kvm_sregs).cast(),
            )
        }
        .unwrap();
    });
    assert_ne!(
        ld_reset, ld_moved,
        "a changed register changes the measurement"
    );
    // QEMU's reset VMSA is KVM's reset state with the CPU signature in RDX.
    let q = VcpuState::qemu_reset(true, 0, 0x600);
    assert_eq!(
        kvm_es_vmsa(&reset, &KvmVmsaParams::default()),
        kvm_es_vmsa(&q, &KvmVmsaParams::default())
    );
    assert_eq!(
        kvm_es_vmsa(&reset, &KvmVmsaParams::default()),
        qemu_vmsa(true, 0, 0x600)
    );
    // A vCPU with a DR7 breakpoint enabled: sev_es_sync_vmsa refuses it.
    let vm = r.lb.create_vm(0);
    let mut g = r.guest(&vm, 0);
    g.init(true).unwrap();
    let hw = r.platform();
    let o = owner(&r, &hw, 0x4);
    r.lb.add_vcpu(
        &vm,
        VcpuState {
            dr7: 0x401,
            ..VcpuState::kvm_reset()
        },
    );
    g.launch_start(GuestPolicy(0x4), Some(&o.launch), 0)
        .unwrap();
    assert_eq!(
        errno_of(g.launch_update_vmsas(&[[0u8; 4096]])),
        libc::EINVAL
    );
}

/// KVM's reset sregs as `struct kvm_sregs` (what KVM_GET_SREGS gives on a fresh vCPU).
fn reset_sregs() -> kb::kvm_sregs {
    let seg = |selector: u16, base: u64, type_: u8, s: u8| kb::kvm_segment {
        base,
        limit: 0xFFFF,
        selector,
        type_,
        present: 1,
        s,
        ..Default::default()
    };
    let d = seg(0, 0, 3, 1);
    let mut sr = kb::kvm_sregs {
        cs: seg(0xF000, 0xFFFF_0000, 0xB, 1),
        ds: d,
        es: d,
        fs: d,
        gs: d,
        ss: d,
        tr: seg(0, 0, 0xB, 0),
        ldt: seg(0, 0, 2, 0),
        cr0: 0x6000_0010,
        ..Default::default()
    };
    sr.gdt.limit = 0xFFFF;
    sr.idt.limit = 0xFFFF;
    sr
}

#[test]
fn vcpu_ioctl_numbers_match_the_uapi() {
    assert_eq!(loopback::KVM_GET_REGS, 0x8090_AE81);
    assert_eq!(loopback::KVM_SET_REGS, 0x4090_AE82);
    assert_eq!(loopback::KVM_GET_SREGS, 0x8138_AE83);
    assert_eq!(loopback::KVM_SET_SREGS, 0x4138_AE84);
}

/// The SNP platform commands of `/dev/sev` (snphost's status, commit and config) through
/// `HwPlatform` and the loopback's model of Linux 6.11's driver.
#[test]
fn snp_platform_commands_through_dev_sev() {
    use crate::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
    use crate::snp::{SnpPlatform, SnpPlatformState};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("snp")).unwrap();
    let snp = SoftSnpPlatform::open(&dir.path().join("snp"), SoftSnpConfig::default()).unwrap();
    let lb = Arc::new(Loopback::new(dir.path()).with_snp(snp));
    let hw = HwPlatform::open_with_port(lb.sev_path(), lb.clone()).unwrap();
    let soft = lb.snp_platform().unwrap();

    let st = hw.snp_platform_status().unwrap();
    assert_eq!(st, soft.snp_platform_status().unwrap());
    assert_eq!(st.state, SnpPlatformState::Init);
    assert!(!st.mask_chip_id);

    // A reported TCB one SNP SVN below the committed one, and MASK_CHIP_ID.
    let committed = soft.committed_tcb();
    let mut lower = committed.to_le_bytes();
    let i = lower
        .iter()
        .position(|&b| b > 0)
        .expect("a non-zero TCB component");
    lower[i] -= 1;
    let lower = u64::from_le_bytes(lower);
    hw.snp_set_config(lower, 1).unwrap();
    let st = hw.snp_platform_status().unwrap();
    assert_eq!((st.reported_tcb, st.mask_chip_id), (lower, true));
    // The firmware's refusals come back as EIO with its status, and change nothing.
    let mut higher = committed.to_le_bytes();
    higher[i] = higher[i].wrapping_add(1);
    assert_eq!(
        status_of(hw.snp_set_config(u64::from_le_bytes(higher), 0)),
        Status::InvalidParam
    );
    assert_eq!(status_of(hw.snp_set_config(0, 4)), Status::InvalidParam);
    assert_eq!(hw.snp_platform_status().unwrap().reported_tcb, lower);
    hw.snp_set_config(0, 0).unwrap();
    assert_eq!(hw.snp_platform_status().unwrap().reported_tcb, committed);
    hw.snp_commit().unwrap();

    // VLEK_LOAD: the blob size is checked before the ioctl; the soft firmware refuses a blob
    // for another TCB (BAD_SVN) or not wrapped for it (BAD_MEASUREMENT) and loads its own.
    assert!(matches!(
        hw.snp_vlek_load(&[0; 16]),
        Err(FwError::InvalidArgument(_))
    ));
    assert_eq!(status_of(hw.snp_vlek_load(&[0; 0x1B0])), Status::BadSvn);
    let blob = soft.vlek_make().unwrap();
    let mut bad = blob.clone();
    bad[0x30] ^= 1;
    assert_eq!(status_of(hw.snp_vlek_load(&bad)), Status::BadMeasurement);
    assert!(!hw.snp_platform_status().unwrap().vlek_en);
    hw.snp_vlek_load(&blob).unwrap();
    assert!(hw.snp_platform_status().unwrap().vlek_en);

    // A read-only open: status works, SET_CONFIG is EPERM (the driver's FMODE_WRITE check).
    let ro = OpenOptions::new().read(true).open(lb.sev_path()).unwrap();
    let mut cfg = SevUserDataSnpConfig {
        reported_tcb: 0,
        flags: 0,
        rsvd: [0; 52],
    };
    let mut c = SevIssueCmd {
        cmd: sev_cmd::SNP_SET_CONFIG,
        data: &mut cfg as *mut SevUserDataSnpConfig as u64,
        error: 0,
    };
    // SAFETY: `c` is a valid sev_issue_cmd whose `data` points to a live 64-byte config.
    let r = unsafe {
        lb.ioctl(
            ro.as_raw_fd(),
            SEV_ISSUE_CMD,
            (&mut c as *mut SevIssueCmd).cast(),
        )
    };
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EPERM));
    let mut b = [0u8; crate::snp::PLATFORM_STATUS_SIZE];
    let mut c = SevIssueCmd {
        cmd: sev_cmd::SNP_PLATFORM_STATUS,
        data: b.as_mut_ptr() as u64,
        error: 0,
    };
    // SAFETY: as above, `data` points to a live 32-byte buffer.
    let r = unsafe {
        lb.ioctl(
            ro.as_raw_fd(),
            SEV_ISSUE_CMD,
            (&mut c as *mut SevIssueCmd).cast(),
        )
    };
    assert!(r.is_ok());
    assert_eq!(b[2], 1, "state INIT");

    // A PSP without SNP: the firmware does not know the command; COMMIT needs SNP init.
    let r2 = rig();
    let hw2 = r2.platform();
    assert_eq!(status_of(hw2.snp_platform_status()), Status::InvalidCommand);
    assert_eq!(errno_of(hw2.snp_commit()), libc::EINVAL);
}
