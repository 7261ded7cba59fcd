//! One builder from a resolved configuration to a launched VM, for every entry point
//! (`sevm run`, `sevm demo`, `sevm config check`, the QMP backend, the tests).
//!
//! ```text
//! VmBuilder::new(vm_config)            the VM (memory, vCPUs, boot source, serial, ...)
//!     .sev(SevSpec { backend, params, platform })   optional: no SEV is no SevSpec at all
//!     .check()   -> Plan               dry run: every refusal that needs no KVM or firmware
//!     .build()   -> Launched           check(), then KVM and the launch:
//!                                        create VM, INIT, LAUNCH_START, REG_REGION,
//!                                        place images, LAUNCH_UPDATE_DATA, create vCPUs,
//!                                        LAUNCH_UPDATE_VMSA, LAUNCH_MEASURE
//! Launched { vm, launch }              measured; the owner injects a secret through
//!                                        `launch`, and `vm.run()` does LAUNCH_FINISH
//! ```
//!
//! The C-bit page tables, the SEV CPUID leaves and status MSR, and the guest-RAM alias for a
//! guest that runs without memory encryption ([`LaunchBackend::host_encrypts`]) are set
//! here; callers never assemble the launch themselves.

use std::path::Path;

use sev_firmware::snp::soft::SoftSnpPlatform;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{FwError, SevPlatform};

use crate::boot::{self, BootError, BootSource};
use crate::confidential::snp::{
    self, SnpHandle, SnpHooks, SnpLaunchOps, SnpLaunchParams, SoftSnpOps,
};
use crate::confidential::snp_hw::HwSnpBackend;
use crate::confidential::{
    recipe, ConfidentialError, HwBackend, LaunchHandle, LaunchParams, PlatformInfo, SevBackend,
    SevHooks, SoftBackend,
};
use crate::vm::{HookError, LaunchContext, LaunchHooks, ResetAction, VmError};
use crate::{cpu, layout, memory, GuestMemoryMmap, Kvm, VcpuFd, Vm, VmConfig, VmFd};

/// The SEV firmware a launch runs on.
#[derive(Clone)]
pub enum LaunchBackend {
    /// The soft firmware model (the guest runs unencrypted; relaunches reuse the VM).
    Soft(SoftPlatform),
    /// Linux's `/dev/sev` and KVM (a new KVM VM per launch; guest RAM pinned).
    Hw(HwBackend),
}

impl std::fmt::Debug for LaunchBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl LaunchBackend {
    /// `soft` or `hw`.
    pub fn name(&self) -> &'static str {
        match self {
            LaunchBackend::Soft(_) => "soft",
            LaunchBackend::Hw(_) => "hw",
        }
    }

    /// Whether this host encrypts the guest's memory. When not (the soft model, or the hw
    /// backend over a port that is not the kernel), the guest's C-bit addresses reach its RAM
    /// through an alias at `1 << cbitpos`.
    pub fn host_encrypts(&self) -> bool {
        match self {
            LaunchBackend::Soft(_) => false,
            LaunchBackend::Hw(h) => h.encrypts(),
        }
    }

    /// The platform commands of this backend (PLATFORM_STATUS, certificates), for the
    /// monitor's `query-sev-capabilities`.
    pub fn platform(&self) -> Result<Box<dyn SevPlatform + Send + Sync>, FwError> {
        Ok(match self {
            LaunchBackend::Soft(p) => Box::new(p.clone()),
            LaunchBackend::Hw(h) => Box::new(h.platform()?),
        })
    }

    fn into_backend(self) -> Box<dyn SevBackend> {
        match self {
            LaunchBackend::Soft(p) => Box::new(SoftBackend(p)),
            LaunchBackend::Hw(h) => Box::new(h),
        }
    }
}

/// An SEV launch: the backend, the launch parameters and the firmware's identity.
#[derive(Clone, Debug)]
pub struct SevSpec {
    /// Where the firmware runs.
    pub backend: LaunchBackend,
    /// Policy, owner's session, C-bit, pause and reset behaviour.
    pub params: LaunchParams,
    /// The firmware identity `query-sev` shows.
    pub platform: PlatformInfo,
}

/// The SEV-SNP firmware a launch runs on.
#[derive(Clone)]
pub enum SnpBackend {
    /// The soft SNP firmware model (the guest runs unencrypted; relaunches reuse the VM).
    Soft(SoftSnpPlatform),
    /// KVM's SNP interface (`KVM_X86_SNP_VM`, INIT2, guest_memfd, KVM_SEV_SNP_*; a new KVM VM
    /// per launch), on the real kernel or the loopback model of it.
    Hw(HwSnpBackend),
}

impl std::fmt::Debug for SnpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl SnpBackend {
    /// `soft` or `hw`.
    pub fn name(&self) -> &'static str {
        match self {
            SnpBackend::Soft(_) => "soft",
            SnpBackend::Hw(_) => "hw",
        }
    }

    /// Whether this host encrypts the guest's memory (else its C-bit addresses reach its RAM
    /// through an alias at `1 << cbitpos`, see [`LaunchBackend::host_encrypts`]).
    pub fn host_encrypts(&self) -> bool {
        match self {
            SnpBackend::Soft(_) => false,
            SnpBackend::Hw(h) => h.encrypts(),
        }
    }

    /// The firmware operations of one VM's launches.
    pub fn ops(&self) -> Result<Box<dyn SnpLaunchOps>, FwError> {
        Ok(match self {
            SnpBackend::Soft(p) => Box::new(SoftSnpOps::new(p.clone())?),
            SnpBackend::Hw(h) => Box::new(h.ops()),
        })
    }
}

/// An SEV-SNP launch: the backend and the launch parameters.
#[derive(Clone, Debug)]
pub struct SnpSpec {
    /// Where the firmware runs.
    pub backend: SnpBackend,
    /// Policy, ID block, host data, C-bit, REPORT_DATA, certificates, reset behaviour.
    pub params: SnpLaunchParams,
}

/// What [`VmBuilder::check`] found: the configuration the VM will be built from (with the
/// SEV page-table C-bit, CPUID and MSR settings applied) and what the launch will need.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The VM configuration, SEV settings applied.
    pub vm: VmConfig,
    /// The launch digest the firmware will measure (SEV only).
    pub expected_digest: Option<[u8; 32]>,
    /// The SNP launch digest (MEASUREMENT) the firmware will compute (SNP only).
    pub expected_snp_digest: Option<[u8; 48]>,
    /// Bytes KVM will pin against RLIMIT_MEMLOCK (hw backend only).
    pub memlock_needed: Option<u64>,
    /// Base of the guest-RAM alias (a guest without memory encryption).
    pub alias: Option<u64>,
}

/// A built VM: measured (SEV) or ready to run.
pub struct Launched {
    /// The VM; `run()` finishes the launch (LAUNCH_FINISH) and runs the guest.
    pub vm: Vm,
    /// The SEV launch, for the owner and the monitor.
    pub launch: Option<LaunchHandle>,
    /// The SEV-SNP launch, for the run and the monitor.
    pub snp: Option<SnpHandle>,
}

/// A host write into guest RAM between the images' placement and LAUNCH_UPDATE_DATA (the
/// demo's `--tamper`).
pub type BeforeMeasure = Box<dyn FnMut(&GuestMemoryMmap) -> Result<(), HookError> + Send>;

/// Builds a VM and its launch (see the module documentation).
pub struct VmBuilder {
    vm: VmConfig,
    sev: Option<SevSpec>,
    snp: Option<SnpSpec>,
    before_measure: Option<BeforeMeasure>,
    wrap: Option<WrapHooks>,
}

/// Wraps the launch hooks (a test's fault injection or register poke around the SEV hooks).
pub type WrapHooks = Box<dyn FnOnce(Box<dyn LaunchHooks>) -> Box<dyn LaunchHooks> + Send>;

impl VmBuilder {
    /// A builder for `vm` (a plain VM until [`sev`](Self::sev) is given).
    pub fn new(vm: VmConfig) -> Self {
        VmBuilder {
            vm,
            sev: None,
            snp: None,
            before_measure: None,
            wrap: None,
        }
    }

    /// Launches the VM under SEV as `sev` says (`None`: a plain VM).
    pub fn sev(mut self, sev: Option<SevSpec>) -> Self {
        self.sev = sev;
        self
    }

    /// Launches the VM under SEV-SNP as `snp` says (`None`: no SNP). Exclusive with
    /// [`sev`](Self::sev).
    pub fn snp(mut self, snp: Option<SnpSpec>) -> Self {
        self.snp = snp;
        self
    }

    /// Runs `f` on guest RAM after the images are placed, before they are measured.
    pub fn before_measure(mut self, f: BeforeMeasure) -> Self {
        self.before_measure = Some(f);
        self
    }

    /// Passes the SEV launch hooks through `f` before the VM is built (tests: fault injection
    /// and register changes between the launch steps). Ignored for a plain VM.
    pub fn wrap_hooks(mut self, f: WrapHooks) -> Self {
        self.wrap = Some(f);
        self
    }

    /// The dry run: everything `build` refuses without touching KVM or the firmware (memory
    /// size, vCPU count, C-bit, boot images and their layout, the measurement recipe, and
    /// RLIMIT_MEMLOCK for a backend that pins guest RAM).
    pub fn check(&self) -> Result<Plan, VmError> {
        let mut vm = self.vm.clone();
        memory::check_memory_size(vm.memory)?;
        let max_cpus = crate::boot::max_cpus(&vm.boot);
        if vm.cpus == 0 || vm.cpus > max_cpus {
            return Err(VmError::BadCpus {
                cpus: vm.cpus,
                max: usize::from(max_cpus),
            });
        }
        if let BootSource::Bundled(name) = &vm.boot {
            if guests::get(name).is_none() {
                return Err(BootError::UnknownGuest {
                    name: name.clone(),
                    known: guests::NAMES.join(", "),
                }
                .into());
            }
        }
        let fw_size = match vm.boot.firmware() {
            Some(p) => Some(boot::firmware_size(p)?),
            None => None,
        };
        boot::check_files(&vm.boot, vm.memory)?;
        if let Some(snp) = &self.snp {
            let snp_err = |e: ConfidentialError| VmError::Hook {
                stage: "check",
                source: Box::new(e),
            };
            if self.sev.is_some() {
                return Err(snp_err(ConfidentialError::Recipe(
                    "a VM is launched under SEV or under SEV-SNP, not both".into(),
                )));
            }
            let p = &snp.params;
            p.prepare_config(&mut vm);
            cpu::cbit_mask(vm.page_table_cbit)?;
            let digest = snp::predict(vm.memory, &vm.boot, p.cbitpos, vm.cpus, false)
                .map_err(snp_err)?
                .launch_digest();
            return Ok(Plan {
                vm,
                expected_digest: None,
                expected_snp_digest: digest,
                memlock_needed: None,
                alias: (!snp.backend.host_encrypts()).then_some(1u64 << p.cbitpos),
            });
        }
        let Some(sev) = &self.sev else {
            return Ok(Plan {
                vm,
                expected_digest: None,
                expected_snp_digest: None,
                memlock_needed: None,
                alias: None,
            });
        };
        let p = &sev.params;
        if p.es() && !sev.backend.host_encrypts() && matches!(vm.boot, BootSource::Linux { .. }) {
            // Refused up front rather than hanging: Linux reads SEV-ES in MSR 0xC0010131 and
            // takes its SEV-ES path, which needs #VC and the GHCB protocol.
            return Err(VmError::LinuxSevEsUnsupported);
        }
        SevHooks::prepare_config(p, &mut vm);
        cpu::cbit_mask(vm.page_table_cbit)?;
        let sev_err = |e: ConfidentialError| VmError::Hook {
            stage: "check",
            source: Box::new(e),
        };
        let (blobs, entry) =
            recipe::plan_blobs(vm.memory, &vm.boot, Some(p.cbitpos), vm.cpus).map_err(sev_err)?;
        let vmsas = if p.es() {
            recipe::es_vmsas(entry, vm.cpus)
        } else {
            Vec::new()
        };
        let digest = recipe::launch_digest(&blobs, &vmsas);
        let memlock_needed = match &sev.backend {
            LaunchBackend::Hw(h) => {
                let ranges: Vec<(u64, u64)> = blobs
                    .iter()
                    .map(|b| (b.gpa, b.bytes.len() as u64))
                    .collect();
                // Guest RAM is mapped page-aligned: each range sits in its host pages as it
                // sits in the guest's, so the count is the one `init` makes.
                // RAM and the firmware's ROM region are both registered.
                let fw_pages = fw_size.map_or(0, |f| f.next_multiple_of(layout::PAGE_SIZE) / 4096);
                let ram_pages = vm.memory.div_ceil(4096) + fw_pages;
                let needed = crate::confidential::memlock_needed(ram_pages, &ranges);
                if let Some(limit) = h.memlock() {
                    crate::confidential::check_memlock_bytes(needed, limit).map_err(|e| {
                        VmError::Hook {
                            stage: "init",
                            source: Box::new(e),
                        }
                    })?;
                }
                Some(needed.0)
            }
            LaunchBackend::Soft(_) => None,
        };
        Ok(Plan {
            vm,
            expected_digest: Some(digest),
            expected_snp_digest: None,
            memlock_needed,
            alias: (!sev.backend.host_encrypts()).then_some(1u64 << p.cbitpos),
        })
    }

    /// [`check`](Self::check), then builds the VM and runs its launch up to LAUNCH_MEASURE,
    /// in KVM's order (`vmm::vm`).
    pub fn build(self) -> Result<Launched, VmError> {
        let mut plan = self.check()?;
        if let Some(snp) = self.snp {
            let cbitpos = snp.params.cbitpos;
            if plan.alias.is_some() {
                crate::vm::check_host_alias(&plan.vm, cbitpos)?;
            }
            let ops = snp.backend.ops().map_err(|e| VmError::Hook {
                stage: "init",
                source: Box::new(ConfidentialError::Firmware {
                    stage: "SNP_INIT",
                    source: e,
                }),
            })?;
            let hooks = SnpHooks::new(ops, snp.params);
            let handle = hooks.handle();
            plan.vm.guest_requests = Some(handle.requests());
            let hooks: Box<dyn LaunchHooks> = match self.wrap {
                Some(w) => w(Box::new(hooks)),
                None => Box::new(hooks),
            };
            let mut vm = Vm::build_with_hooks(&plan.vm, hooks)?;
            if let Some(base) = plan.alias {
                vm.add_alias(base)?;
            }
            return Ok(Launched {
                vm,
                launch: None,
                snp: Some(handle),
            });
        }
        let Some(sev) = self.sev else {
            return Ok(Launched {
                vm: Vm::build(&plan.vm)?,
                launch: None,
                snp: None,
            });
        };
        if plan.alias.is_some() {
            // Before any guest memory exists: the alias at 2^cbit must be below the host's
            // MAXPHYADDR, or KVM refuses the memory slot with a bare EINVAL.
            crate::vm::check_host_alias(&plan.vm, sev.params.cbitpos)?;
        }
        let hooks = SevHooks::with_backend(sev.params, sev.platform, sev.backend.into_backend());
        let handle = hooks.handle();
        let hooks: Box<dyn LaunchHooks> = match self.before_measure {
            Some(f) => Box::new(BeforeMeasureHooks { inner: hooks, f }),
            None => Box::new(hooks),
        };
        let hooks = match self.wrap {
            Some(w) => w(hooks),
            None => hooks,
        };
        let mut vm = Vm::build_with_hooks(&plan.vm, hooks)?;
        if let Some(base) = plan.alias {
            vm.add_alias(base)?;
        }
        Ok(Launched {
            vm,
            launch: Some(handle),
            snp: None,
        })
    }
}

/// The SEV hooks with a host write before LAUNCH_UPDATE_DATA.
struct BeforeMeasureHooks {
    inner: SevHooks,
    f: BeforeMeasure,
}

impl LaunchHooks for BeforeMeasureHooks {
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        self.inner.create_vm(kvm)
    }
    fn init(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.init(ctx)
    }
    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        (self.f)(ctx.memory)?;
        self.inner.after_load(ctx)
    }
    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        self.inner.create_vcpu(vm_fd, id)
    }
    fn after_vcpus(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.after_vcpus(ctx)
    }
    fn new_vm_per_launch(&self) -> bool {
        self.inner.new_vm_per_launch()
    }
    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.inner.before_run(ctx)
    }
    fn on_reset(&mut self, ctx: &LaunchContext<'_>) -> Result<ResetAction, HookError> {
        self.inner.on_reset(ctx)
    }
}

/// The soft backend over the platform state in `dir` (opened, or created if missing).
pub fn soft_backend(dir: &Path) -> Result<LaunchBackend, FwError> {
    Ok(LaunchBackend::Soft(SoftPlatform::open(dir)?))
}

/// The hw backend over Linux's SEV device at `sev_device`.
pub fn hw_backend(sev_device: &Path) -> LaunchBackend {
    LaunchBackend::Hw(HwBackend::new(sev_device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confidential::ResetMode;

    fn spec(plat: &SoftPlatform, policy: u32) -> SevSpec {
        let cbit = plat.cbit_pos().unwrap();
        let st = plat.platform_status().unwrap();
        SevSpec {
            backend: LaunchBackend::Soft(plat.clone()),
            params: LaunchParams {
                policy: sev_firmware::GuestPolicy(policy),
                owner: None,
                handle: 0,
                cbitpos: cbit,
                reduced_phys_bits: 1,
                paused: false,
                on_reset: ResetMode::Shutdown,
                dump_dir: None,
            },
            platform: PlatformInfo {
                api_major: st.api_major,
                api_minor: st.api_minor,
                build: st.build,
                cbitpos: cbit,
            },
        }
    }

    fn vm(guest: &str, cpus: u8) -> VmConfig {
        VmConfig {
            memory: 16 << 20,
            cpus,
            boot: BootSource::Bundled(guest.into()),
            serial: crate::SerialOut::Sink,
            ..VmConfig::default()
        }
    }

    #[test]
    fn check_refuses_what_build_refuses_without_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let plat = SoftPlatform::open(dir.path()).unwrap();
        let e = VmBuilder::new(vm("nope", 1)).check().unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = VmBuilder::new(vm("hello", 0)).check().unwrap_err();
        assert!(matches!(e, VmError::BadCpus { cpus: 0, .. }), "{e}");
        let mut big = vm("hello", 1);
        big.memory = 1;
        assert!(VmBuilder::new(big).check().is_err());
        let mut s = spec(&plat, 0);
        s.params.cbitpos = 60;
        let e = VmBuilder::new(vm("hello", 1))
            .sev(Some(s))
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("60"), "{e}");
    }

    #[test]
    fn linux_under_sev_es_without_host_encryption_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let plat = SoftPlatform::open(dir.path()).unwrap();
        let k = dir.path().join("vmlinux");
        std::fs::write(&k, b"\x7fELF not checked before the SEV-ES refusal").unwrap();
        let linux = VmConfig {
            boot: BootSource::Linux {
                kernel: k,
                initrd: None,
                cmdline: String::new(),
            },
            ..vm("hello", 1)
        };
        let e = VmBuilder::new(linux.clone())
            .sev(Some(spec(&plat, 5)))
            .check()
            .unwrap_err();
        assert!(matches!(e, VmError::LinuxSevEsUnsupported), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("SEV-ES") && msg.contains("#VC") && msg.contains("GHCB"),
            "{msg}"
        );
        // Plain SEV goes on to the image checks (this "kernel" is not one); a bundled guest
        // under SEV-ES is fine.
        let e = VmBuilder::new(linux)
            .sev(Some(spec(&plat, 1)))
            .check()
            .unwrap_err();
        assert!(!matches!(e, VmError::LinuxSevEsUnsupported), "{e}");
        VmBuilder::new(vm("hello", 1))
            .sev(Some(spec(&plat, 5)))
            .check()
            .unwrap();
    }

    #[test]
    fn check_applies_the_sev_settings_and_predicts_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let plat = SoftPlatform::open(dir.path()).unwrap();
        let s = spec(&plat, 4);
        let cbit = s.params.cbitpos;
        let plan = VmBuilder::new(vm("hello", 2)).sev(Some(s)).check().unwrap();
        assert_eq!(plan.vm.page_table_cbit, Some(cbit));
        assert!(plan.vm.msr_handler.is_some());
        assert_eq!(plan.alias, Some(1u64 << cbit));
        assert_eq!(plan.memlock_needed, None, "the soft backend pins nothing");
        let want = recipe::expected_digest(
            16 << 20,
            &BootSource::Bundled("hello".into()),
            Some(cbit),
            2,
            true,
        )
        .unwrap();
        assert_eq!(plan.expected_digest, Some(want));
        let plain = VmBuilder::new(vm("hello", 1)).check().unwrap();
        assert_eq!(plain.vm.page_table_cbit, None);
        assert_eq!(plain.expected_digest, None);
    }

    #[test]
    fn build_measures_what_check_predicted() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plat = SoftPlatform::open(dir.path()).unwrap();
        let b = VmBuilder::new(vm("hello", 1)).sev(Some(spec(&plat, 0)));
        let want = b.check().unwrap().expected_digest;
        let l = b.build().unwrap();
        let h = l.launch.expect("an SEV launch");
        assert_eq!(h.launch_digest(), want);
        assert_eq!(h.status().phase, crate::confidential::Phase::LaunchSecret);
    }
}
