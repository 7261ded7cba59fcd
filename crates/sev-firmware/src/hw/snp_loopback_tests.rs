//! The SNP launch through KVM's interface ([`super::snp::HwSnpLaunch`]) end to end on the
//! loopback kernel, against the soft SNP firmware's own launch of the same pages.

use super::loopback::{Loopback, KVM_SNP_POLICY_BITS};
use super::snp::*;
use super::IoctlPort;
use crate::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use crate::snp::vcek::SnpIdentity;
use crate::snp::{SnpGuest, SnpGuestState, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate};
use crate::{FwError, Status};
use kvm_bindings as kb;
use sev_proto::snp::measure::{PageType, SnpLaunchDigest};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::vmsa::{kvm_es_vmsa, KvmVmsaParams, VcpuState};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const PAGE: usize = 4096;
const POLICY: u64 = 0x30000;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE]);

/// Page-aligned guest RAM standing for the VMM's shared mapping.
struct Ram(Vec<Page>);

impl Ram {
    fn new(pages: usize) -> Ram {
        Ram(vec![Page([0; PAGE]); pages])
    }
    fn addr(&mut self) -> u64 {
        self.0.as_mut_ptr() as u64
    }
    fn len(&self) -> u64 {
        (self.0.len() * PAGE) as u64
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    lb: Arc<Loopback>,
    kvm: File,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("snp")).unwrap();
    let snp = SoftSnpPlatform::open(&dir.path().join("snp"), SoftSnpConfig::default()).unwrap();
    let lb = Arc::new(Loopback::new(dir.path()).with_snp(snp));
    let kvm = File::open(lb.kvm_path()).unwrap();
    Rig { _dir: dir, lb, kvm }
}

impl Rig {
    fn port(&self) -> Arc<dyn IoctlPort> {
        self.lb.clone()
    }

    /// A new SNP VM (KVM_CREATE_VM through the port) and its launch.
    fn vm(&self) -> (OwnedFd, HwSnpLaunch) {
        let vm = create_snp_vm(&*self.port(), self.kvm.as_raw_fd()).unwrap();
        let l = HwSnpLaunch::with_port(vm.as_raw_fd(), self.lb.sev_path(), self.port()).unwrap();
        (vm, l)
    }
}

/// guest_memfd of `ram`'s size bound at GPA 0 as memslot 0 (two memslots split at `split`
/// when given, the second at gmem offset `split`).
fn memory(l: &HwSnpLaunch, ram: &mut Ram, split: Option<u64>) -> OwnedFd {
    let gmem = l.create_guest_memfd(ram.len()).unwrap();
    let (a, n) = (ram.addr(), ram.len());
    match split {
        None => {
            // SAFETY: `ram` outlives the VM in every test (dropped after it).
            unsafe { l.set_user_memory_region2(0, 0, n, a, gmem.as_raw_fd(), 0) }.unwrap();
        }
        Some(s) => {
            // SAFETY: as above.
            unsafe {
                l.set_user_memory_region2(0, 0, s, a, gmem.as_raw_fd(), 0)
                    .unwrap();
                l.set_user_memory_region2(1, s, n - s, a + s, gmem.as_raw_fd(), s)
                    .unwrap();
            }
        }
    }
    gmem
}

fn errno(e: &FwError) -> i32 {
    match e {
        FwError::Ioctl { source, .. } | FwError::Kvm { source, .. } => {
            source.raw_os_error().expect("an errno")
        }
        e => panic!("expected a kernel refusal, got {e}"),
    }
}

fn pattern(pages: usize, salt: u8) -> Vec<u8> {
    (0..pages * PAGE)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i / PAGE) as u8)
        .collect()
}

/// A valid CPUID page with one entry.
fn cpuid_page() -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[0] = 1;
    p[0x10..0x14].copy_from_slice(&0x8000_001Fu32.to_le_bytes());
    p[0x28..0x2C].copy_from_slice(&0x1B_0000u32.to_le_bytes());
    p
}

/// KVM_SET_REGS on a vCPU through the port.
fn set_regs(port: &dyn IoctlPort, vcpu: &OwnedFd, regs: &kb::kvm_regs) {
    let mut r = *regs;
    // SAFETY: KVM_SET_REGS reads one kvm_regs, which `r` is, live for the call.
    unsafe {
        port.ioctl(
            vcpu.as_raw_fd(),
            super::loopback::KVM_SET_REGS,
            (&mut r as *mut kb::kvm_regs).cast(),
        )
    }
    .unwrap();
}

/// The launch the test drives: (gpa, bytes, type), in order.
fn page_set() -> Vec<(u64, Vec<u8>, PageType)> {
    vec![
        (0x1000, pattern(3, 1), PageType::Normal),
        (0x5000, vec![0; PAGE], PageType::Secrets),
        (0x6000, cpuid_page(), PageType::Cpuid),
        (0x8000, pattern(2, 9), PageType::Zero),
        (0xA000, pattern(1, 5), PageType::Unmeasured),
        // Spans memslot 0 ([0, 0x40000)) and memslot 1: the remainder loop.
        (0x3C000, pattern(8, 3), PageType::Normal),
    ]
}

#[test]
fn snp_launch_through_kvm_equals_the_soft_firmwares_digest() {
    let r = rig();
    let port = r.port();
    assert_ne!(
        check_extension(&*port, r.kvm.as_raw_fd(), kb::KVM_CAP_VM_TYPES) & (1 << KVM_X86_SNP_VM),
        0
    );
    let (vm, mut l) = r.vm();
    assert_eq!(l.check_extension(KVM_CAP_GUEST_MEMFD), 1);
    assert_eq!(
        l.check_extension(KVM_CAP_MEMORY_ATTRIBUTES) as u64,
        KVM_MEMORY_ATTRIBUTE_PRIVATE
    );
    l.init2(0, 0).unwrap();
    let mut ram = Ram::new(128);
    let _gmem = memory(&l, &mut ram, Some(0x40000));
    for (gpa, b, _) in page_set() {
        l.set_private(gpa, b.len() as u64).unwrap();
    }
    l.launch_start(POLICY, [0; 16]).unwrap();
    assert_eq!(l.phase(), SnpLaunchPhase::Started);
    let mut ioctls = Vec::new();
    for (gpa, mut b, t) in page_set() {
        let rep = l.launch_update(gpa, &mut b, t).unwrap();
        assert!(rep.cpuid_fixes.is_empty());
        ioctls.push(rep.ioctls);
    }
    assert_eq!(
        ioctls,
        [1, 1, 1, 1, 1, 2],
        "the last range needs the remainder loop"
    );
    // Two vCPUs: vCPU 0 with registers set through KVM_SET_REGS, vCPU 1 at reset.
    let v0 = l.create_vcpu(0).unwrap();
    let _v1 = l.create_vcpu(1).unwrap();
    let regs = kb::kvm_regs {
        rip: 0x1000,
        rsp: 0x8000,
        rflags: 2,
        ..Default::default()
    };
    set_regs(&*port, &v0, &regs);
    let host_data = [7u8; 32];
    l.launch_finish(&SnpLaunchFinish {
        host_data,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(l.phase(), SnpLaunchPhase::Finished);

    // The soft firmware's direct launch of the same pages, then the same VMSAs.
    let mut st0 = VcpuState::kvm_reset();
    super::kvm_state::apply_regs(&mut st0, &regs);
    let params = KvmVmsaParams {
        vmsa_features: SVM_SEV_FEAT_SNP_ACTIVE,
        init2: true,
    };
    let vmsas = [
        kvm_es_vmsa(&st0, &params),
        kvm_es_vmsa(&VcpuState::kvm_reset(), &params),
    ];
    let soft =
        SoftSnpPlatform::new(SnpIdentity::from_seed([9; 48]), SoftSnpConfig::default()).unwrap();
    crate::snp::SnpPlatform::snp_init(&soft).unwrap();
    let mut g = soft.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(POLICY)))
        .unwrap();
    let mut ld = SnpLaunchDigest::new();
    for (gpa, b, t) in page_set() {
        for (i, chunk) in b.chunks(PAGE).enumerate() {
            let gpa = gpa + (i * PAGE) as u64;
            g.snp_launch_update(&SnpLaunchUpdate::page(t, gpa), &mut chunk.to_vec())
                .unwrap();
        }
        match t {
            PageType::Normal => ld.update_normal(gpa, &b),
            PageType::Zero => ld.update_zero(gpa, b.len()),
            PageType::Unmeasured => ld.update_unmeasured(gpa, b.len()),
            PageType::Secrets => ld.update_secrets(gpa),
            PageType::Cpuid => ld.update_cpuid(gpa),
            PageType::Vmsa => unreachable!(),
        }
        .unwrap();
    }
    for v in &vmsas {
        g.snp_launch_update(
            &SnpLaunchUpdate::page(PageType::Vmsa, KVM_VMSA_GPA),
            &mut v.to_vec(),
        )
        .unwrap();
        ld.update_vmsa_at(KVM_VMSA_GPA, v).unwrap();
    }
    let hw =
        r.lb.snp_launch_digest(&vm)
            .expect("the VM has an SNP context");
    assert_eq!(
        hw,
        g.launch_digest(),
        "loopback KVM launch = soft firmware launch"
    );
    assert_eq!(hw, ld.digest(), "= the owner's PAGE_INFO chain");
    // What KVM measured: one VMSA per vCPU, in order, SNP_ACTIVE in SEV_FEATURES.
    let measured = r.lb.snp_vmsas(&vm);
    assert_eq!(measured.len(), 2);
    assert_eq!(measured[0][..], vmsas[0][..]);
    assert_eq!(measured[1][..], vmsas[1][..]);
    let off = sev_proto::vmsa::SEV_FEATURES;
    assert_eq!(measured[0][off] & 1, 1, "SNP_ACTIVE");
    // A launch without vCPU 0's registers gives another digest (the VMSA is measured).
    let mut other = SnpLaunchDigest::from_digest(ld.digest());
    other.update_vmsa_at(KVM_VMSA_GPA, &vmsas[1]).unwrap();
    assert_ne!(other.digest(), hw);

    // The private pages as the guest sees them: data, the firmware's secrets page, zeros.
    assert_eq!(
        r.lb.gmem_page(&vm, 0x2000).unwrap(),
        pattern(3, 1)[PAGE..2 * PAGE]
    );
    assert_eq!(r.lb.gmem_page(&vm, 0x8000).unwrap(), vec![0; PAGE]);
    let secrets = r.lb.gmem_page(&vm, 0x5000).unwrap();
    assert_ne!(
        secrets,
        vec![0; PAGE],
        "the firmware wrote the secrets page"
    );
    assert_eq!(
        r.lb.gmem_page(&vm, 0x40000).unwrap(),
        pattern(8, 3)[4 * PAGE..5 * PAGE],
        "memslot 1's first page, through the second ioctl"
    );
    assert_eq!(
        r.lb.gmem_page(&vm, 0x3000 + 0x10000),
        None,
        "never populated"
    );
    let st = r.lb.with_snp_guest(&vm, |g| g.snp_guest_status()).unwrap();
    let st = st.unwrap();
    assert_eq!(st.state, SnpGuestState::Running);
    assert_eq!(st.policy, SnpPolicy(POLICY));

    // KVM's order as the log saw it.
    let ops: Vec<String> =
        r.lb.log()
            .into_iter()
            .filter(|e| e.errno == 0)
            .map(|e| e.op)
            .collect();
    let pos = |op: &str| ops.iter().position(|o| o == op).unwrap();
    assert!(pos("KVM_SEV_INIT2") < pos("CREATE_GUEST_MEMFD"));
    assert!(pos("SET_MEMORY_ATTRIBUTES") < pos("SNP_LAUNCH_START"));
    assert!(pos("SNP_LAUNCH_UPDATE") < pos("KVM_CREATE_VCPU"));
    assert_eq!(ops.last().map(String::as_str), Some("SNP_LAUNCH_FINISH"));
    assert_eq!(ops.iter().filter(|o| *o == "SNP_LAUNCH_UPDATE").count(), 7);
}

#[test]
fn snp_order_violations_get_linuxs_errnos() {
    let r = rig();
    let port = r.port();

    // INIT2 once a vCPU exists: EINVAL (the rule that holds for every SEV VM type).
    let (_vm, mut l) = r.vm();
    let _v = l.create_vcpu(0).unwrap();
    assert_eq!(errno(&l.init2(0, 0).unwrap_err()), libc::EINVAL);

    let (vm, mut l) = r.vm();
    // Before INIT2: LAUNCH_START is not an SNP guest's (ENOTTY), LAUNCH_UPDATE EINVAL.
    assert_eq!(
        errno(&l.launch_start(POLICY, [0; 16]).unwrap_err()),
        libc::ENOTTY
    );
    let mut page = pattern(1, 0);
    let e = l
        .launch_update(0x1000, &mut page, PageType::Normal)
        .unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    assert!(e.to_string().contains("GPA 0x1000"), "{e}");
    // INIT2's own checks: GHCB version 1 (SNP needs 2), a VMSA feature the host lacks.
    assert_eq!(errno(&l.init2(0, 1).unwrap_err()), libc::EINVAL);
    assert_eq!(errno(&l.init2(1 << 9, 0).unwrap_err()), libc::EINVAL);
    l.init2(0, 2).unwrap();
    // Now an SNP guest: INIT2 again and every pre-SNP command are EPERM.
    assert_eq!(errno(&l.init2(0, 2).unwrap_err()), libc::EPERM);
    let mut legacy = super::HwGuest::with_port(
        vm.as_raw_fd(),
        KVM_X86_SNP_VM,
        r.lb.sev_path(),
        port.clone(),
    )
    .unwrap();
    let e = crate::SevGuest::launch_start(&mut legacy, crate::GuestPolicy(1), None, 0).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM);

    let mut ram = Ram::new(16);
    let _gmem = memory(&l, &mut ram, None);
    // LAUNCH_UPDATE before LAUNCH_START: EINVAL.
    l.set_private(0x1000, 0x1000).unwrap();
    assert_eq!(
        errno(
            &l.launch_update(0x1000, &mut page, PageType::Normal)
                .unwrap_err()
        ),
        libc::EINVAL
    );
    // KVM's policy checks: bit 17 must be set; MIGRATE_MA (bit 18) is not offered.
    assert_eq!(
        errno(&l.launch_start(0x10000, [0; 16]).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(
        errno(&l.launch_start(POLICY | 1 << 18, [0; 16]).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(KVM_SNP_POLICY_BITS & 1 << 18, 0);
    l.launch_start(POLICY, [0; 16]).unwrap();
    assert_eq!(
        errno(&l.launch_start(POLICY, [0; 16]).unwrap_err()),
        libc::EINVAL
    );

    // A shared page (no PRIVATE attribute): kvm_gmem_populate's EINVAL comes back as EIO,
    // fw_error 0.
    let e = l
        .launch_update(0x2000, &mut page, PageType::Normal)
        .unwrap_err();
    assert_eq!(errno(&e), libc::EIO);
    assert!(e.status().is_none());
    assert!(e.to_string().contains("not private"), "{e}");
    // No guest_memfd memslot there: EINVAL.
    l.set_private(0x100000, 0x1000).unwrap();
    assert_eq!(
        errno(
            &l.launch_update(0x100000, &mut page, PageType::Normal)
                .unwrap_err()
        ),
        libc::EINVAL
    );
    // Once launched, a page is refused (EEXIST inside, EIO out).
    l.launch_update(0x1000, &mut page, PageType::Normal)
        .unwrap();
    assert_eq!(
        errno(
            &l.launch_update(0x1000, &mut page, PageType::Normal)
                .unwrap_err()
        ),
        libc::EIO
    );
    // The uAPI's own checks, on the raw struct: VMSA type, flags, length, alignment.
    let mut buf = Ram::new(2);
    let base = buf.addr();
    for (ty, flags, len, uaddr) in [
        (2u8, 0u16, 4096u64, base),
        (1, 1, 4096, base),
        (1, 0, 100, base),
        (1, 0, 0, base),
        (1, 0, 4096, base + 8),
        (7, 0, 4096, base),
    ] {
        let mut p = kb::kvm_sev_snp_launch_update {
            gfn_start: 3,
            uaddr,
            len,
            type_: ty,
            flags,
            ..Default::default()
        };
        // SAFETY: `uaddr` points into `buf`, which holds two pages from `base`.
        let e = unsafe { l.launch_update_raw(&mut p) }.unwrap_err();
        assert_eq!(errno(&e), libc::EINVAL, "type {ty} flags {flags} len {len}");
    }
    // The API refuses VMSA pages and unaligned addresses before the kernel sees them.
    assert!(matches!(
        l.launch_update(0x3000, &mut page, PageType::Vmsa),
        Err(FwError::InvalidArgument(_))
    ));
    assert!(matches!(
        l.launch_update(0x3008, &mut page, PageType::Normal),
        Err(FwError::InvalidArgument(_))
    ));

    // LAUNCH_FINISH measures the vCPUs once: a second one finds vCPU 0 protected (EINVAL).
    let _v0 = l.create_vcpu(0).unwrap();
    assert!(matches!(
        l.launch_finish(&SnpLaunchFinish {
            id_block: Some(&[0; 95]),
            ..Default::default()
        }),
        Err(FwError::InvalidArgument(_))
    ));
    l.launch_finish(&SnpLaunchFinish::default()).unwrap();
    assert_eq!(
        errno(&l.launch_finish(&SnpLaunchFinish::default()).unwrap_err()),
        libc::EINVAL
    );
    // After LAUNCH_FINISH the firmware refuses an update: EIO with its status.
    l.set_private(0x4000, 0x1000).unwrap();
    let e = l
        .launch_update(0x4000, &mut page, PageType::Normal)
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::InvalidGuestState), "{e}");
}

#[test]
fn snp_memory_setup_follows_kvm() {
    let r = rig();
    let port = r.port();
    let (_vm, l) = r.vm();
    // guest_memfd: non-zero, 4 KiB multiple.
    assert_eq!(errno(&l.create_guest_memfd(0).unwrap_err()), libc::EINVAL);
    assert_eq!(errno(&l.create_guest_memfd(100).unwrap_err()), libc::EINVAL);
    let gmem = l.create_guest_memfd(0x8000).unwrap();
    let mut ram = Ram::new(16);
    let a = ram.addr();
    // SAFETY: `ram` outlives the VM (every memslot call in this block names its pages).
    unsafe {
        // Past the guest_memfd's end, unaligned offset: EINVAL.
        let e = l
            .set_user_memory_region2(0, 0, 0x10000, a, gmem.as_raw_fd(), 0)
            .unwrap_err();
        assert_eq!(errno(&e), libc::EINVAL);
        assert!(e.to_string().contains("slot 0"), "{e}");
        let e = l.set_user_memory_region2(0, 0, 0x4000, a, gmem.as_raw_fd(), 0x800);
        assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);
        l.set_user_memory_region2(0, 0, 0x4000, a, gmem.as_raw_fd(), 0)
            .unwrap();
        // Overlapping GPA: EEXIST; the same gmem range twice: EINVAL; a private slot cannot
        // be changed, only deleted.
        let e = l.set_user_memory_region2(1, 0x2000, 0x4000, a, gmem.as_raw_fd(), 0x4000);
        assert_eq!(errno(&e.unwrap_err()), libc::EEXIST);
        let e = l.set_user_memory_region2(1, 0x8000, 0x2000, a, gmem.as_raw_fd(), 0x2000);
        assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);
        let e = l.set_user_memory_region2(0, 0, 0x4000, a, gmem.as_raw_fd(), 0);
        assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);
        // Not a guest_memfd (the SEV device): EINVAL; not a file: EBADF.
        let sev = File::open(r.lb.sev_path()).unwrap();
        let e = l.set_user_memory_region2(2, 0x10000, 0x1000, a, sev.as_raw_fd(), 0);
        assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);
        let e = l.set_user_memory_region2(2, 0x10000, 0x1000, a, 1_000_000, 0);
        assert_eq!(errno(&e.unwrap_err()), libc::EBADF);
        // Another VM's guest_memfd: EINVAL.
        let (_vm2, l2) = r.vm();
        let g2 = l2.create_guest_memfd(0x1000).unwrap();
        let e = l.set_user_memory_region2(2, 0x10000, 0x1000, a, g2.as_raw_fd(), 0);
        assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);
    }
    // Attributes: flags MBZ, alignment, only PRIVATE.
    assert_eq!(errno(&l.set_private(0x1000, 0).unwrap_err()), libc::EINVAL);
    assert_eq!(
        errno(&l.set_private(0x1800, 0x1000).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(
        errno(&l.set_memory_attributes(0, 0x1000, 1 << 4).unwrap_err()),
        libc::EINVAL
    );

    // A default VM has no private memory: no guest_memfd memslots, no PRIVATE attribute, and
    // the error says what this KVM lacks.
    let dvm = r.lb.create_vm(kb::KVM_X86_DEFAULT_VM);
    assert_eq!(
        check_extension(&*port, dvm.as_raw_fd(), KVM_CAP_MEMORY_ATTRIBUTES),
        0
    );
    assert_eq!(
        check_extension(&*port, dvm.as_raw_fd(), KVM_CAP_GUEST_MEMFD),
        0
    );
    let e = set_memory_attributes(
        &*port,
        dvm.as_raw_fd(),
        0,
        0x1000,
        KVM_MEMORY_ATTRIBUTE_PRIVATE,
    )
    .unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    assert!(
        e.to_string().contains("KVM_CAP_MEMORY_ATTRIBUTES = 0x0"),
        "{e}"
    );
    let g = create_guest_memfd(&*port, dvm.as_raw_fd(), 0x1000).unwrap();
    // SAFETY: `ram` outlives the VM.
    let e = unsafe {
        set_user_memory_region2(&*port, dvm.as_raw_fd(), 0, 0, 0x1000, a, g.as_raw_fd(), 0)
    };
    assert_eq!(errno(&e.unwrap_err()), libc::EINVAL);

    // A loopback without an SNP PSP offers no SNP VM type; creating one says so.
    let dir = tempfile::tempdir().unwrap();
    let plain: Arc<dyn IoctlPort> = Arc::new(Loopback::new(dir.path()));
    let kvm = File::open(dir.path().join("kvm")).unwrap();
    let e = create_snp_vm(&*plain, kvm.as_raw_fd()).unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    assert!(
        e.to_string().contains("does not offer KVM_X86_SNP_VM"),
        "{e}"
    );
}

#[test]
fn snp_cpuid_page_is_retried_once_with_the_firmwares_correction() {
    let r = rig();
    let (vm, mut l) = r.vm();
    l.init2(0, 0).unwrap();
    let mut ram = Ram::new(16);
    let _g = memory(&l, &mut ram, None);
    l.set_private(0, 0x10000).unwrap();
    l.launch_start(POLICY, [0; 16]).unwrap();

    // A reserved field set in entry 0: the firmware refuses (INVALID_PARAM) and writes back
    // the page with it cleared, which the kernel copies to the source.
    let mut bad = cpuid_page();
    bad[0x10 + 0x2C] = 0xEE;
    let mut raw = Ram::new(1);
    raw.0[0].0.copy_from_slice(&bad);
    let mut p = kb::kvm_sev_snp_launch_update {
        gfn_start: 6,
        uaddr: raw.addr(),
        len: 0x1000,
        type_: PageType::Cpuid as u8,
        ..Default::default()
    };
    // SAFETY: `uaddr` points to `raw`, one writable page.
    let e = unsafe { l.launch_update_raw(&mut p) }.unwrap_err();
    assert_eq!(e.status(), Some(Status::InvalidParam));
    assert_eq!((p.gfn_start, p.len), (6, 0x1000), "not advanced on failure");
    let corrected = raw.0[0].0.to_vec();
    assert_ne!(corrected, bad);
    assert_eq!(corrected, cpuid_page());

    // launch_update retries once with that page and reports what differed.
    let digest_before = r.lb.snp_launch_digest(&vm).unwrap();
    let mut page = bad.clone();
    let rep = l.launch_update(0x6000, &mut page, PageType::Cpuid).unwrap();
    assert_eq!(rep.ioctls, 2);
    assert_eq!(rep.cpuid_fixes.len(), 1);
    assert_eq!(rep.cpuid_fixes[0].function, 0x8000_001F);
    assert!(rep.cpuid_fixes[0].other_bytes);
    assert_eq!(
        page,
        cpuid_page(),
        "the caller's buffer holds the firmware's page"
    );
    assert_eq!(r.lb.gmem_page(&vm, 0x6000).unwrap(), cpuid_page());
    let mut ld = SnpLaunchDigest::from_digest(digest_before);
    ld.update_cpuid(0x6000).unwrap();
    assert_eq!(r.lb.snp_launch_digest(&vm).unwrap(), ld.digest());

    // A valid page goes through in one call, with nothing to report.
    let mut good = cpuid_page();
    let rep = l.launch_update(0x7000, &mut good, PageType::Cpuid).unwrap();
    assert_eq!((rep.ioctls, rep.cpuid_fixes.len()), (1, 0));
}

#[test]
fn snp_remainder_loop_and_partial_progress() {
    let r = rig();
    let (vm, mut l) = r.vm();
    l.init2(0, 0).unwrap();
    let mut ram = Ram::new(16);
    let _g = memory(&l, &mut ram, Some(0x4000));
    l.launch_start(POLICY, [0; 16]).unwrap();
    // Pages 1 and 2 private, page 3 shared: KVM populates two pages, swallows page 3's
    // failure and reports the remainder; the next call fails on page 3 itself.
    l.set_private(0x1000, 0x2000).unwrap();
    let mut src = Ram::new(3);
    for (i, p) in src.0.iter_mut().enumerate() {
        p.0.fill(i as u8 + 1);
    }
    let base = src.addr();
    let mut p = kb::kvm_sev_snp_launch_update {
        gfn_start: 1,
        uaddr: base,
        len: 0x3000,
        type_: PageType::Normal as u8,
        ..Default::default()
    };
    // SAFETY: `uaddr` points to `src`, three pages.
    unsafe { l.launch_update_raw(&mut p) }.unwrap();
    assert_eq!((p.gfn_start, p.uaddr, p.len), (3, base + 0x2000, 0x1000));
    // SAFETY: as above, now at the third page.
    let e = unsafe { l.launch_update_raw(&mut p) }.unwrap_err();
    assert_eq!(errno(&e), libc::EIO);
    assert_eq!(r.lb.gmem_page(&vm, 0x2000).unwrap(), vec![2; PAGE]);
    // The loop of launch_update names where it stopped.
    let mut bytes = vec![9u8; 0x2000];
    l.set_private(0x5000, 0x1000).unwrap();
    let e = l
        .launch_update(0x5000, &mut bytes, PageType::Normal)
        .unwrap_err();
    assert!(e.to_string().contains("GPA 0x6000"), "{e}");
    // Across two memslots ([0, 0x4000) and [0x4000, 0x10000)): two calls; ZERO ignores uaddr.
    l.set_private(0x3000, 0x1000).unwrap();
    l.set_private(0x4000, 0x1000).unwrap();
    let mut z = vec![0xAB; 0x2000];
    let rep = l.launch_update(0x3000, &mut z, PageType::Zero).unwrap();
    assert_eq!(rep.ioctls, 2);
    assert_eq!(
        z,
        vec![0xAB; 0x2000],
        "a ZERO update leaves the caller's bytes"
    );
    assert_eq!(r.lb.gmem_page(&vm, 0x4000).unwrap(), vec![0; PAGE]);
}
