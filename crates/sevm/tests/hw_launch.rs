//! `--sev-backend hw` in KVM's order, proven over the loopback model of Linux's SEV driver and
//! KVM (`sev_firmware::hw::loopback`): sevm's real `Vm` build and SEV launch code (the vmm
//! library, through the builder `sevm run` uses: `vmm::builder::VmBuilder` with an
//! `HwBackend`, then `Vm::run`) on a real KVM VM whose SEV ioctls the loopback serves.
//! Linux refuses SEV init once a vCPU exists (`sev_guest_init`), counts pinned pages against
//! RLIMIT_MEMLOCK (`sev_pin_memory`) and takes at most 16 KiB of secret
//! (`psp_copy_user_blob`); the loopback does the same, and records every SEV ioctl in order.
//!
//! The guest runs on this host's KVM without memory encryption, so its RAM is also mapped at
//! `1 << cbitpos` (as on the soft backend) and the loopback leaves the guest's plaintext in
//! the host mapping after LAUNCH_UPDATE_DATA / LAUNCH_SECRET.

#[path = "sev_common/mod.rs"]
mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sev_firmware::hw::loopback::{LogEntry, Loopback};
use sev_firmware::hw::{HwPlatform, IoctlPort};
use sev_firmware::{GuestPolicy, PacketHeader, SevPlatform};
use sev_proto::session::{owner_session, OwnerSession};
use vmm::builder::{LaunchBackend, SevSpec, VmBuilder};
use vmm::confidential::{
    ConfidentialError, HwBackend, LaunchHandle, LaunchParams, PlatformInfo, ResetMode,
};
use vmm::{
    BootSource, ExitStatus, HookError, LaunchContext, LaunchHooks, SerialOut, VcpuFd, Vm, VmConfig,
    VmError, VmFd,
};

/// Guest RAM of every launch here (and `--memory` of `sevm owner measure`).
const MEMORY: u64 = 16 << 20;

/// The loopback kernel, the platform it serves through its `/dev/sev`, and that platform's
/// identity as `query-sev` shows it.
struct Rig {
    _dir: tempfile::TempDir,
    lb: Arc<Loopback>,
    info: PlatformInfo,
}

/// The rig, or None when KVM is missing (a failure under CI).
fn rig(test: &str) -> Option<Rig> {
    if !common::kvm_usable_or_skip(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let lb = Arc::new(Loopback::new(dir.path()));
    let port: Arc<dyn IoctlPort> = lb.clone();
    let hw = HwPlatform::open_with_port(lb.sev_path(), port).unwrap();
    let st = hw.platform_status().unwrap();
    let info = PlatformInfo {
        api_major: st.api_major,
        api_minor: st.api_minor,
        build: st.build,
        cbitpos: lb.platform().cbit_pos().unwrap(),
    };
    Some(Rig {
        _dir: dir,
        lb,
        info,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `HwBackend` over the loopback.
    Hw,
    /// `SoftBackend` on the loopback's own soft platform (same PDH, same firmware).
    Soft,
}

impl Rig {
    fn backend(&self, kind: Kind) -> LaunchBackend {
        match kind {
            Kind::Hw => {
                LaunchBackend::Hw(HwBackend::with_port(self.lb.sev_path(), self.lb.clone()))
            }
            Kind::Soft => LaunchBackend::Soft(self.lb.platform().clone()),
        }
    }

    /// An owner session for this platform's PDH (exported through the loopback's /dev/sev).
    fn owner(&self, policy: u32) -> OwnerSession {
        let hw = HwPlatform::open_with_port(self.lb.sev_path(), self.lb.clone()).unwrap();
        let pdh = hw.pdh_cert_export().unwrap().pdh;
        owner_session(&pdh, policy).unwrap()
    }

    /// Builds `guest` under SEV on `kind`, as `sevm run` does: the launch is measured when
    /// this returns.
    fn build(
        &self,
        kind: Kind,
        guest: &str,
        cpus: u8,
        owner: &OwnerSession,
        policy: u32,
        on_reset: ResetMode,
    ) -> Result<Launched, VmError> {
        self.build_with(kind, guest, cpus, owner, policy, on_reset, |h| h)
    }

    /// [`build`](Self::build) with the launch hooks passed through `wrap`.
    #[allow(clippy::too_many_arguments)]
    fn build_with(
        &self,
        kind: Kind,
        guest: &str,
        cpus: u8,
        owner: &OwnerSession,
        policy: u32,
        on_reset: ResetMode,
        wrap: impl FnOnce(Box<dyn LaunchHooks>) -> Box<dyn LaunchHooks> + Send + 'static,
    ) -> Result<Launched, VmError> {
        let (b, serial) = self.builder(kind, guest, cpus, owner, policy, on_reset);
        let l = b.wrap_hooks(Box::new(wrap)).build()?;
        let handle = l.launch.expect("an SEV launch");
        Ok(Launched {
            vm: l.vm,
            handle,
            serial,
        })
    }

    /// The builder `sevm run` (and, as a dry run, `sevm config check`) uses for this launch,
    /// and the serial buffer of its VM.
    fn builder(
        &self,
        kind: Kind,
        guest: &str,
        cpus: u8,
        owner: &OwnerSession,
        policy: u32,
        on_reset: ResetMode,
    ) -> (VmBuilder, Arc<Mutex<Vec<u8>>>) {
        let params = LaunchParams {
            policy: GuestPolicy(policy),
            owner: Some(owner.launch_owner()),
            handle: 0,
            cbitpos: self.info.cbitpos,
            reduced_phys_bits: 1,
            paused: false,
            on_reset,
            dump_dir: None,
        };
        let serial = Arc::new(Mutex::new(Vec::new()));
        let cfg = VmConfig {
            memory: MEMORY,
            cpus,
            boot: BootSource::Bundled(guest.into()),
            serial: SerialOut::Buffer(serial.clone()),
            timeout: Some(Duration::from_secs(60)),
            ..VmConfig::default()
        };
        // No memory encryption on this host (the loopback port): the builder aliases the
        // guest's C-bit addresses to its RAM.
        let b = VmBuilder::new(cfg).sev(Some(SevSpec {
            backend: self.backend(kind),
            params,
            platform: self.info,
        }));
        (b, serial)
    }
}

struct Launched {
    vm: Vm,
    handle: LaunchHandle,
    serial: Arc<Mutex<Vec<u8>>>,
}

impl Launched {
    fn serial(&self) -> String {
        String::from_utf8_lossy(&self.serial.lock().unwrap()).into_owned()
    }
}

/// `sevm owner measure --vmm sevm` for `guest` with the launch's TIK, platform identity and
/// MNONCE: the base64 measurement blob the owner expects.
fn owner_measure(
    dir: &Path,
    guest: &str,
    cpus: u8,
    policy: u32,
    r: &Rig,
    owner: &OwnerSession,
    blob: &[u8; 48],
) -> String {
    let tik = dir.join("tik.bin");
    let lm = dir.join("lm.bin");
    std::fs::write(&tik, owner.keys.tik).unwrap();
    std::fs::write(&lm, blob).unwrap();
    let (mem, cpus, policy) = (
        format!("{}M", MEMORY >> 20),
        cpus.to_string(),
        policy.to_string(),
    );
    let (maj, min, build) = (
        r.info.api_major.to_string(),
        r.info.api_minor.to_string(),
        r.info.build.to_string(),
    );
    let mut args = vec![
        "--vmm", "sevm", "--guest", guest, "--memory", &mem, "--policy", &policy, "--tik",
    ];
    args.extend([
        common::s(&tik),
        "--api-major",
        &maj,
        "--api-minor",
        &min,
        "--build-id",
        &build,
        "--launch-measure-blob",
        common::s(&lm),
    ]);
    if policy.parse::<u32>().unwrap() & 4 != 0 {
        args.extend(["--num-cpus", &cpus]);
    }
    common::owner_measure(&args).trim().to_string()
}

/// The SEV ioctls of VM number `vm`, by name.
fn ops(log: &[LogEntry], vm: u32) -> Vec<&str> {
    log.iter()
        .filter(|e| e.vm == vm)
        .map(|e| e.op.as_str())
        .collect()
}

/// KVM's order on every VM of the log: no refusal; INIT, LAUNCH_START and REG_REGION before
/// the first KVM_CREATE_VCPU; LAUNCH_UPDATE_DATA before it too; VMSA and MEASURE after the
/// last one. Returns the VM numbers.
fn assert_kvm_order(log: &[LogEntry], cpus: usize, es: bool) -> Vec<u32> {
    assert!(
        log.iter().all(|e| e.errno == 0),
        "the kernel refused something: {log:?}"
    );
    let mut vms: Vec<u32> = log.iter().map(|e| e.vm).collect();
    vms.dedup();
    for &vm in &vms {
        let o = ops(log, vm);
        let pos = |op: &str| o.iter().position(|x| *x == op);
        let first_vcpu = pos("KVM_CREATE_VCPU").expect("vCPUs created through the port");
        let last_vcpu = o.iter().rposition(|x| *x == "KVM_CREATE_VCPU").unwrap();
        assert_eq!(
            o.iter().filter(|x| **x == "KVM_CREATE_VCPU").count(),
            cpus,
            "{o:?}"
        );
        let init = pos(if es {
            "KVM_SEV_ES_INIT"
        } else {
            "KVM_SEV_INIT"
        })
        .expect("INIT");
        assert_eq!(init, 0, "SEV init is the first SEV ioctl of VM {vm}: {o:?}");
        for op in ["LAUNCH_START", "REG_REGION", "LAUNCH_UPDATE_DATA"] {
            assert!(
                pos(op).expect(op) < first_vcpu,
                "{op} before any vCPU: {o:?}"
            );
        }
        let measure = pos("LAUNCH_MEASURE").expect("LAUNCH_MEASURE");
        assert!(measure > last_vcpu, "{o:?}");
        if es {
            let vmsa = pos("LAUNCH_UPDATE_VMSA").expect("LAUNCH_UPDATE_VMSA");
            assert!(vmsa > last_vcpu && vmsa < measure, "{o:?}");
        }
    }
    vms
}

/// The secret table with one entry, as `sevm owner secret` makes it, and the packet.
fn secret_packet(
    owner: &OwnerSession,
    measure: &[u8; 48],
    secret: &[u8],
) -> (PacketHeader, Vec<u8>) {
    let mut t = sev_proto::secret_table::SecretTable::new();
    t.push(
        uuid::Uuid::parse_str("736869e5-84f0-4973-92ec-06879ce3da0b").unwrap(),
        secret.to_vec(),
    );
    let plain = t.encode().unwrap();
    let m: [u8; 32] = measure[..32].try_into().unwrap();
    let (hdr, ct) = sev_proto::secret::build_packet(&owner.keys, &m, [9; 16], 0, &plain).unwrap();
    (hdr, ct)
}

/// A plain SEV launch of `secret-reader` over the loopback: KVM's order holds, the firmware's
/// measurement is the one `sevm owner measure` predicts, the injected secret reaches the
/// guest (it prints the SHA-256 the owner expects); the soft backend gives the same digest.
#[test]
fn sev_launch_with_a_secret_over_the_loopback() {
    let Some(r) = rig("sev_launch_with_a_secret_over_the_loopback") else {
        return;
    };
    let policy = 0x1; // NODBG
    let owner = r.owner(policy);
    let l = r
        .build(
            Kind::Hw,
            "secret-reader",
            1,
            &owner,
            policy,
            ResetMode::Shutdown,
        )
        .expect("the hw launch builds in KVM's order");
    let m = l.handle.measurement().expect("measured");
    let dir = tempfile::tempdir().unwrap();
    let expect = owner_measure(dir.path(), "secret-reader", 1, policy, &r, &owner, &m);
    assert_eq!(
        expect,
        common::b64(&m),
        "owner measure predicts the hw measurement"
    );
    let secret = b"the loopback's secret, 16 KiB max".to_vec();
    let (hdr, ct) = secret_packet(&owner, &m, &secret);
    l.handle.inject_secret(&hdr, &ct, None).unwrap();
    let mut vm = l.vm;
    let status = vm.run().unwrap();
    let out = String::from_utf8_lossy(&l.serial.lock().unwrap()).into_owned();
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    let sha = hex::encode(openssl::sha::sha256(&secret));
    assert!(out.contains(&format!("sha256={sha}")), "{out}");
    let log = r.lb.log();
    let vms = assert_kvm_order(&log, 1, false);
    assert_eq!(vms.len(), 1);
    let o = ops(&log, vms[0]);
    let secret_at = o.iter().position(|x| *x == "LAUNCH_SECRET").unwrap();
    let finish_at = o.iter().position(|x| *x == "LAUNCH_FINISH").unwrap();
    assert!(secret_at < finish_at, "{o:?}");
    // The soft backend, same images and policy: the same launch digest.
    let soft = r
        .build(
            Kind::Soft,
            "secret-reader",
            1,
            &owner,
            policy,
            ResetMode::Shutdown,
        )
        .unwrap();
    assert_eq!(soft.handle.launch_digest(), l.handle.launch_digest());
    let sm = soft.handle.measurement().unwrap();
    assert_eq!(
        owner_measure(dir.path(), "secret-reader", 1, policy, &r, &owner, &sm),
        common::b64(&sm)
    );
}

/// SEV-ES with 2 vCPUs over the loopback: LAUNCH_UPDATE_VMSA after both vCPUs exist, where
/// the loopback builds each VMSA from the registers it reads from the real vCPU (as
/// `sev_es_sync_vmsa`: the long-mode state sevm set, not a reset state); that measurement is
/// what `sevm owner measure --num-cpus 2` prints, and soft agrees.
#[test]
fn sev_es_two_vcpus_measure_as_the_owner_predicts() {
    let Some(r) = rig("sev_es_two_vcpus_measure_as_the_owner_predicts") else {
        return;
    };
    let policy = 0x5; // NODBG | ES
    let owner = r.owner(policy);
    let dir = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for kind in [Kind::Hw, Kind::Soft] {
        let l = r
            .build(kind, "hello", 2, &owner, policy, ResetMode::Shutdown)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let m = l.handle.measurement().unwrap();
        assert_eq!(
            owner_measure(dir.path(), "hello", 2, policy, &r, &owner, &m),
            common::b64(&m),
            "{kind:?}"
        );
        digests.push(l.handle.launch_digest().unwrap());
    }
    assert_eq!(digests[0], digests[1]);
    let log = r.lb.log();
    assert_kvm_order(&log, 2, true);
}

/// Launch hooks that, once sevm has set the vCPUs' registers and before LAUNCH_UPDATE_VMSA,
/// change one register of vCPU `cpu` behind sevm's back (KVM_GET_* / KVM_SET_* on its fd).
struct Poke {
    inner: Box<dyn LaunchHooks>,
    fds: Vec<RawFd>,
    cpu: usize,
    poke: fn(RawFd),
}

impl LaunchHooks for Poke {
    fn create_vm(&mut self, kvm: &vmm::Kvm) -> Result<VmFd, HookError> {
        self.inner.create_vm(kvm)
    }
    fn init(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.init(ctx)
    }
    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.after_load(ctx)
    }
    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        let v = self.inner.create_vcpu(vm_fd, id)?;
        self.fds.push(v.as_raw_fd());
        Ok(v)
    }
    fn after_vcpus(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        (self.poke)(self.fds[self.cpu]);
        self.inner.after_vcpus(ctx)
    }
    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.before_run(ctx)
    }
    fn on_reset(&mut self, ctx: &LaunchContext<'_>) -> Result<vmm::ResetAction, HookError> {
        self.inner.on_reset(ctx)
    }
    fn new_vm_per_launch(&self) -> bool {
        self.inner.new_vm_per_launch()
    }
}

/// Reads a `T` with `get`, changes it with `f`, writes it back with `set`, on vCPU fd `fd`.
fn modify<T: Default>(fd: RawFd, get: u64, set: u64, f: impl FnOnce(&mut T)) {
    let mut v = T::default();
    // SAFETY: `get` is KVM_GET_REGS/KVM_GET_SREGS with `T` its struct: KVM writes one `T`.
    let r = unsafe { libc::ioctl(fd, get as _, &mut v as *mut T) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    f(&mut v);
    // SAFETY: `set` is the matching KVM_SET_*: KVM reads one `T`.
    let r = unsafe { libc::ioctl(fd, set as _, &mut v as *mut T) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn rip_plus_16(fd: RawFd) {
    use sev_firmware::hw::loopback::{KVM_GET_REGS, KVM_SET_REGS};
    modify(
        fd,
        KVM_GET_REGS,
        KVM_SET_REGS,
        |r: &mut kvm_bindings::kvm_regs| r.rip += 16,
    );
}

fn cr3_next_page(fd: RawFd) {
    use sev_firmware::hw::loopback::{KVM_GET_SREGS, KVM_SET_SREGS};
    modify(
        fd,
        KVM_GET_SREGS,
        KVM_SET_SREGS,
        |s: &mut kvm_bindings::kvm_sregs| s.cr3 += 0x1000,
    );
}

fn unchanged(fd: RawFd) {
    use sev_firmware::hw::loopback::{KVM_GET_SREGS, KVM_SET_SREGS};
    modify(
        fd,
        KVM_GET_SREGS,
        KVM_SET_SREGS,
        |_: &mut kvm_bindings::kvm_sregs| {},
    );
}

/// A vCPU, how to change its registers on KVM, and the same change to the model's state
/// (`None`: written back unchanged).
type Case = (
    usize,
    fn(RawFd),
    Option<fn(&mut sev_proto::vmsa::VcpuState)>,
);

/// The loopback measures the vCPUs' registers, not what sevm predicts: a register changed on
/// the vCPU after sevm set it (RIP of vCPU 1, CR3 of vCPU 0) changes the hw measurement, which
/// then no longer matches `sevm owner measure` and equals the digest of the changed registers
/// through the VMSA model; writing the registers back unchanged keeps the prediction.
#[test]
fn loopback_measures_the_vcpu_registers() {
    let Some(r) = rig("loopback_measures_the_vcpu_registers") else {
        return;
    };
    let policy = 0x5; // NODBG | ES
    let owner = r.owner(policy);
    let dir = tempfile::tempdir().unwrap();
    let cases: [Case; 3] = [
        (0, unchanged, None),
        (1, rip_plus_16, Some(|s| s.rip += 16)),
        (0, cr3_next_page, Some(|s| s.cr3 += 0x1000)),
    ];
    for (cpu, poke, change) in cases {
        let l = r
            .build_with(
                Kind::Hw,
                "hello",
                2,
                &owner,
                policy,
                ResetMode::Shutdown,
                move |inner| {
                    Box::new(Poke {
                        inner,
                        fds: Vec::new(),
                        cpu,
                        poke,
                    })
                },
            )
            .unwrap();
        let m = l.handle.measurement().unwrap();
        let predicted = owner_measure(dir.path(), "hello", 2, policy, &r, &owner, &m);
        let Some(change) = change else {
            assert_eq!(
                predicted,
                common::b64(&m),
                "registers written back unchanged"
            );
            continue;
        };
        assert_ne!(
            predicted,
            common::b64(&m),
            "vCPU {cpu}: the change is measured"
        );
        // What the firmware measured: sevm's images, then the VMSAs of the changed registers.
        use vmm::confidential::recipe;
        let mut states: Vec<_> = (0..2)
            .map(|i| {
                let b = vmm::cpu::boot_regs(l.vm.entry(), i, 2, Default::default());
                recipe::vcpu_state(&b)
            })
            .collect();
        change(&mut states[cpu]);
        let vmsas: Vec<[u8; 4096]> = states
            .iter()
            .map(|s| sev_proto::vmsa::kvm_es_vmsa(s, &recipe::VMSA_PARAMS))
            .collect();
        let blobs = recipe::measured_blobs(
            MEMORY,
            &BootSource::Bundled("hello".into()),
            Some(r.info.cbitpos),
            2,
        )
        .unwrap();
        let ld = recipe::launch_digest(&blobs, &vmsas);
        let mnonce: [u8; 16] = m[32..].try_into().unwrap();
        let expect = sev_proto::measure::measurement(
            &owner.keys.tik,
            r.info.api_major,
            r.info.api_minor,
            r.info.build,
            policy,
            &ld,
            &mnonce,
        );
        assert_eq!(&m[..32], &expect[..], "vCPU {cpu}");
    }
}

/// A guest reset with `--on-reset relaunch` on hw: each launch on a new KVM VM (KVM inits SEV
/// once per VM), each in KVM's order, each measured to the same digest; the guest finishes.
#[test]
fn reset_relaunches_on_a_new_vm() {
    let Some(r) = rig("reset_relaunches_on_a_new_vm") else {
        return;
    };
    let owner = r.owner(0);
    let l = r
        .build(Kind::Hw, "reset", 1, &owner, 0, ResetMode::Relaunch)
        .unwrap();
    let digest = l.handle.launch_digest().unwrap();
    let mut vm = l.vm;
    let status = vm.run().unwrap();
    let out = String::from_utf8_lossy(&l.serial.lock().unwrap()).into_owned();
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("reset guest: done"), "{out}");
    let times = guests::abi::RESET_TIMES;
    assert_eq!(l.handle.status().launches, times + 1);
    assert_eq!(l.handle.launch_digest(), Some(digest));
    let vms = assert_kvm_order(&r.lb.log(), 1, false);
    assert_eq!(vms.len() as u32, times + 1, "one KVM VM per launch");
}

/// What the loopback refuses, and that sevm never asks it: SEV init after a vCPU exists is
/// EINVAL from the model (shown on a VM where the test creates a vCPU first), while sevm's
/// own launches log INIT before every KVM_CREATE_VCPU (`assert_kvm_order` above).
#[test]
fn loopback_refuses_init_after_a_vcpu_and_sevm_never_asks() {
    let Some(r) = rig("loopback_refuses_init_after_a_vcpu_and_sevm_never_asks") else {
        return;
    };
    let kvm = vmm::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    r.lb.vm_created(std::os::fd::AsRawFd::as_raw_fd(&vm));
    let _vcpu = vm.create_vcpu(0).unwrap();
    let mut g = sev_firmware::hw::HwGuest::with_port(
        std::os::fd::AsRawFd::as_raw_fd(&vm),
        0,
        r.lb.sev_path(),
        r.lb.clone(),
    )
    .unwrap();
    let e = sev_firmware::SevGuest::init(&mut g, false).unwrap_err();
    assert!(e.to_string().contains("Invalid argument"), "{e}");
    let last = r.lb.log().pop().unwrap();
    assert_eq!(
        (last.op.as_str(), last.errno),
        ("KVM_SEV_INIT", libc::EINVAL)
    );
    // sevm's launch on the same loopback: INIT first, no refusal.
    let owner = r.owner(0);
    r.build(Kind::Hw, "hello", 2, &owner, 0, ResetMode::Shutdown)
        .unwrap();
    let log: Vec<_> = r.lb.log().into_iter().filter(|e| e.vm != last.vm).collect();
    assert_kvm_order(&log, 2, false);
}

/// RLIMIT_MEMLOCK too low for the guest's RAM: sevm refuses before REG_REGION with a message
/// naming the bytes needed and how to raise the limit; the kernel was never asked to pin.
#[test]
fn memlock_too_low_is_a_clear_error() {
    let Some(r) = rig("memlock_too_low_is_a_clear_error") else {
        return;
    };
    let owner = r.owner(0);
    r.lb.set_memlock(Some(8 << 20), false);
    let e = r
        .build(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown)
        .err()
        .expect("16 MiB of RAM cannot be pinned under an 8 MiB limit");
    let msg = e.to_string();
    let VmError::Hook { stage, source } = &e else {
        panic!("{e}")
    };
    assert_eq!(*stage, "init", "{msg}");
    let ce = source
        .downcast_ref::<ConfidentialError>()
        .expect("a ConfidentialError");
    let ConfidentialError::Memlock { needed, limit, .. } = ce else {
        panic!("{ce}")
    };
    assert_eq!(*limit, 8 << 20);
    assert!(*needed > MEMORY, "{ce}");
    let text = ce.to_string();
    for want in [
        format!("{needed} bytes"),
        "RLIMIT_MEMLOCK is 8388608 bytes".into(),
        format!("ulimit -l {}", needed.div_ceil(1024)),
        format!("LimitMEMLOCK={needed}"),
    ] {
        assert!(text.contains(&want), "{want:?} missing: {text}");
    }
    assert!(
        !r.lb.log().iter().any(|e| e.op == "REG_REGION"),
        "REG_REGION must not be tried: {:?}",
        r.lb.log()
    );
    // Enough headroom (or CAP_IPC_LOCK): the same launch builds.
    r.lb.set_memlock(Some(*needed), false);
    r.build(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown)
        .unwrap();
    r.lb.set_memlock(Some(0), true);
    r.build(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown)
        .unwrap();
}

/// The dry run (`sevm config check`) refuses the same RLIMIT_MEMLOCK shortfall as the launch,
/// with the same numbers, and without a single ioctl: no KVM VM, no SEV command.
#[test]
fn dry_run_refuses_memlock_as_the_launch_does_without_an_ioctl() {
    let Some(r) = rig("dry_run_refuses_memlock_as_the_launch_does_without_an_ioctl") else {
        return;
    };
    let owner = r.owner(0);
    r.lb.set_memlock(Some(8 << 20), false);
    let (b, _serial) = r.builder(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown);
    let before = r.lb.log().len();
    let e = b.check().expect_err("16 MiB cannot be pinned under 8 MiB");
    assert_eq!(r.lb.log().len(), before, "the dry run issued an ioctl");
    let VmError::Hook { source, .. } = &e else {
        panic!("{e}")
    };
    let Some(ConfidentialError::Memlock { needed, .. }) = source.downcast_ref() else {
        panic!("{e}")
    };
    // At exactly the amount the dry run names, the dry run and the real launch both pass.
    r.lb.set_memlock(Some(*needed), false);
    let (b, _serial) = r.builder(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown);
    assert_eq!(b.check().unwrap().memlock_needed, Some(*needed));
    b.build().expect("the launch pins what the dry run said");
    // One page less: refused.
    r.lb.set_memlock(Some(*needed - 4096), false);
    let (b, _serial) = r.builder(Kind::Hw, "hello", 1, &owner, 0, ResetMode::Shutdown);
    assert!(b.check().is_err());
}

/// A 20 KiB secret: refused by sevm (KVM's 16 KiB) before the firmware is called, on both
/// backends; the launch stays in LAUNCH_SECRET and takes a proper secret afterwards.
#[test]
fn secret_over_16_kib_is_refused_before_the_firmware() {
    let Some(r) = rig("secret_over_16_kib_is_refused_before_the_firmware") else {
        return;
    };
    let owner = r.owner(0);
    for kind in [Kind::Hw, Kind::Soft] {
        let l = r
            .build(kind, "secret-reader", 1, &owner, 0, ResetMode::Shutdown)
            .unwrap();
        let m = l.handle.measurement().unwrap();
        let before = r.lb.log().len();
        let (hdr, ct) = secret_packet(&owner, &m, &vec![0x5a; 20 * 1024 - 64]);
        assert!(ct.len() > 16 * 1024);
        let e = l.handle.inject_secret(&hdr, &ct, None).unwrap_err();
        assert!(
            matches!(e, ConfidentialError::SecretTooLarge { max: 16384, .. }),
            "{kind:?}: {e}"
        );
        assert!(e.to_string().contains("at most 16384 bytes"), "{e}");
        assert_eq!(
            r.lb.log().len(),
            before,
            "{kind:?}: no ioctl for the refused secret"
        );
        assert_eq!(
            l.handle.guest_state(),
            Some(sev_firmware::GuestState::LSecret)
        );
        let (hdr, ct) = secret_packet(&owner, &m, b"small");
        l.handle.inject_secret(&hdr, &ct, None).unwrap();
        let _ = l.serial();
    }
}
