//! SEV guests: the launch lifecycle as [`LaunchHooks`] over a [`SevGuest`], the CPUID and
//! MSR view an SEV guest gets, the C-bit alias, and one API for host-side guest-RAM access.
//!
//! Sequence (docs/LAUNCH.md), in KVM's order (Linux refuses SEV init once a vCPU exists):
//! `init` (VM created, no vCPU yet): INIT/ES_INIT, LAUNCH_START (policy, owner GODH
//! certificate and session if given), the RLIMIT_MEMLOCK check and
//! KVM_MEMORY_ENCRYPT_REG_REGION of guest RAM; `after_load`: LAUNCH_UPDATE_DATA of every
//! measured range in [`LaunchContext::measured`] order; the vCPUs are created and get their
//! registers; `after_vcpus`: LAUNCH_UPDATE_VMSA per vCPU when the policy asks for SEV-ES,
//! LAUNCH_MEASURE. Between `after_vcpus` and `before_run` (the `--paused` window) the owner
//! reads the measurement and may inject a secret ([`LaunchHandle::inject_secret`]).
//! `before_run`: LAUNCH_FINISH. A guest reset is a fresh launch ([`ResetMode::Relaunch`]:
//! new context and key, everything re-measured, new MNONCE; on a new KVM VM when the backend
//! needs one, see [`SevBackend::new_vm_per_launch`]) or stops the VM.
//!
//! The soft backend has no #VC handling: for SEV-ES the register state (VMSA) is measured,
//! but the guest runs as a plain SEV guest. It has no memory encryption either: the guest
//! reaches its RAM through a second KVM slot at `1 << cbitpos` (see [`SevHooks::prepare`]).
//!
//! The firmware steps themselves are a typestate ([`launch::SevLaunch`]): `New` →
//! `launch_start` → `Started` → `measure` → `Measured` → `finish` → `Finished`. Callers do
//! not assemble a launch: [`crate::builder`] builds the VM and its launch in one call.

pub mod launch;
pub mod recipe;
pub mod snp;
pub mod snp_hw;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use sev_firmware::hw::{IoctlPort, Memlock};
use sev_firmware::{
    AttestationReport, FwError, GuestPolicy, GuestState, LaunchOwner, PacketHeader, SevGuest,
    Status,
};
use std::os::fd::{AsRawFd, IntoRawFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice};

use crate::config::SevLaunchConfig;
use crate::cpu::{CpuidOverride, CpuidOverrides};
use crate::layout;
use crate::vm::{HookError, LaunchContext, LaunchHooks, MsrHandler, ResetAction, VmConfig};
use crate::GuestMemoryMmap;

pub use launch::{LaunchFailed, LaunchState, SevLaunch};
pub use recipe::MeasuredBlob;

/// The SEV status MSR.
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;
/// CPUID leaf with the SEV capabilities.
pub const CPUID_SEV_LEAF: u32 = 0x8000_001F;
/// CPUID leaf with MAXPHYADDR.
pub const CPUID_ADDR_LEAF: u32 = 0x8000_0008;

/// Errors of the SEV layer. Messages name the firmware command or the address at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfidentialError {
    /// A firmware command failed.
    #[error("{stage}: {source}{}", hint(.source))]
    Firmware {
        /// What we were doing (e.g. "LAUNCH_START").
        stage: &'static str,
        /// The firmware error.
        #[source]
        source: FwError,
    },
    /// The measurement recipe could not place the images.
    #[error("measurement recipe: {0}")]
    Recipe(String),
    /// A guest-memory range that is not RAM.
    #[error("guest memory [{gpa:#x}, +{len:#x}) is not guest RAM")]
    BadRange {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// A device-like (host) write into private guest memory was refused.
    #[error(
        "refused a host write of {len} bytes at {gpa:#x}: that memory is private to the SEV guest"
    )]
    PrivateWrite {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// Debug access under a NODBG policy.
    #[error("debug access refused: the guest policy {policy:#x} has NODBG set")]
    DebugDisabled {
        /// The guest policy.
        policy: u32,
    },
    /// The secret does not fit the EFI secret area.
    #[error(transparent)]
    SecretRange(#[from] layout::SecretOutsideArea),
    /// An operation in the wrong launch phase.
    #[error("{op} is not possible while the launch is {phase}")]
    Phase {
        /// The operation.
        op: &'static str,
        /// The current phase.
        phase: Phase,
    },
    /// Writing the launch dump.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the launch timed out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Guest RAM cannot be pinned: RLIMIT_MEMLOCK is below what KVM will lock.
    #[error(
        "KVM_MEMORY_ENCRYPT_REG_REGION would fail: KVM pins {needed} bytes for this SEV guest \
         ({ram} bytes of guest memory plus {transient} bytes the launch commands pin while they \
         run) but RLIMIT_MEMLOCK is {limit} bytes. Raise the limit to at least {needed} bytes: \
         `ulimit -l {kib}` (KiB) in the shell that starts sevm, `LimitMEMLOCK={needed}` in its \
         systemd unit, or give sevm CAP_IPC_LOCK"
    )]
    Memlock {
        /// Bytes KVM will count against the limit at the peak of the launch.
        needed: u64,
        /// Guest memory registered with REG_REGION.
        ram: u64,
        /// The largest temporary pin (LAUNCH_UPDATE_DATA range, LAUNCH_SECRET, debug page).
        transient: u64,
        /// The soft limit.
        limit: u64,
        /// `needed` in KiB, rounded up (what `ulimit -l` takes).
        kib: u64,
    },
    /// SNP_LAUNCH_FINISH failed: shown as QEMU reports it (`sev_snp_launch_finish`), KVM's
    /// return value (-EIO for a firmware error), the firmware status and QEMU's name for it.
    #[error("SNP_LAUNCH_FINISH ret={ret} fw_error={code} '{name}'")]
    SnpLaunchFinish {
        /// What KVM's ioctl would return: -5 (EIO) for a firmware status, else -22 (EINVAL).
        ret: i32,
        /// The firmware status (0 when the failure is not the firmware's).
        code: u32,
        /// QEMU's text for the status (`fw_error_to_str`).
        name: &'static str,
        /// The error.
        #[source]
        source: FwError,
    },
    /// A secret larger than KVM passes to the firmware.
    #[error(
        "secret of {len} bytes refused: KVM_SEV_LAUNCH_SECRET takes at most {max} bytes of \
         ciphertext (SEV_FW_BLOB_MAX_SIZE), the firmware was not called"
    )]
    SecretTooLarge {
        /// Ciphertext length.
        len: usize,
        /// KVM's limit.
        max: usize,
    },
}

/// KVM's limit on a LAUNCH_SECRET ciphertext (and header): `psp_copy_user_blob` refuses a
/// blob over `SEV_FW_BLOB_MAX_SIZE` (16 KiB) with EINVAL (drivers/crypto/ccp/sev-dev.c).
pub const KVM_SECRET_MAX: usize = 16 * 1024;

fn hint(e: &FwError) -> &'static str {
    match e.status() {
        Some(Status::BadMeasurement) => {
            " (the owner's session does not open on this platform: wrong session file, GODH \
             certificate or policy for this PDH)"
        }
        Some(Status::PolicyFailure) => " (the guest policy forbids this)",
        _ => "",
    }
}

/// QEMU's text for a firmware status (`sev_fw_errlist` in target/i386/sev.c, read for its
/// strings), "unknown error" beyond the table as QEMU prints.
pub fn qemu_fw_error_str(code: u32) -> &'static str {
    const TABLE: [&str; 0x19] = [
        "",
        "Platform state is invalid",
        "Guest state is invalid",
        "Platform configuration is invalid",
        "Buffer too small",
        "Platform is already owned",
        "Certificate is invalid",
        "Policy is not allowed",
        "Guest is not active",
        "Invalid address",
        "Bad signature",
        "Bad measurement",
        "ASID is already owned",
        "Invalid ASID",
        "WBINVD is required",
        "DF_FLUSH is required",
        "Guest handle is invalid",
        "Invalid command",
        "Guest is active",
        "Hardware error",
        "Hardware unsafe",
        "Feature not supported",
        "Invalid parameter",
        "Required firmware resource depleted",
        "Part-specific integrity check failure",
    ];
    TABLE.get(code as usize).copied().unwrap_or("unknown error")
}

fn fw(stage: &'static str) -> impl Fn(FwError) -> ConfidentialError {
    move |source| ConfidentialError::Firmware { stage, source }
}

/// Where the launch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No launch yet.
    Uninit,
    /// LAUNCH_START done, measuring.
    LaunchUpdate,
    /// LAUNCH_MEASURE done: the measurement is available and a secret may be injected.
    LaunchSecret,
    /// LAUNCH_FINISH done.
    Running,
    /// A launch step failed.
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Uninit => "uninit",
            Phase::LaunchUpdate => "launch-update",
            Phase::LaunchSecret => "launch-secret",
            Phase::Running => "running",
            Phase::Failed => "failed",
        })
    }
}

impl Phase {
    /// QEMU's `SevState` for this phase (a failed launch shows as `uninit`: QEMU has no
    /// failed state).
    pub fn sev_state(self) -> crate::monitor::SevState {
        use crate::monitor::SevState;
        match self {
            Phase::Uninit | Phase::Failed => SevState::Uninit,
            Phase::LaunchUpdate => SevState::LaunchUpdate,
            Phase::LaunchSecret => SevState::LaunchSecret,
            Phase::Running => SevState::Running,
        }
    }
}

/// What a guest reset does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetMode {
    /// A fresh launch: new context and key, re-measured, new MNONCE.
    #[default]
    Relaunch,
    /// Stop the VM.
    Shutdown,
}

/// Firmware identity shown by `query-sev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo {
    /// API major.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// Build id.
    pub build: u8,
    /// C-bit position.
    pub cbitpos: u8,
}

/// How guest memory is accessed from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// What the host (a device, the VMM) sees: ciphertext where the memory is private.
    Host,
    /// Through DBG_DECRYPT / DBG_ENCRYPT (refused under NODBG).
    Debug,
}

/// Makes a fresh firmware guest context for a VM (called at every launch).
pub type GuestFactory = Box<dyn FnMut(&VmFd) -> Result<Box<dyn SevGuest + Send>, FwError> + Send>;

/// How a launch reaches KVM and the SEV firmware: the soft model ([`SoftBackend`]), Linux
/// ([`HwBackend`]), or any [`GuestFactory`].
pub trait SevBackend: Send {
    /// A fresh firmware guest context for one launch on `vm` (no vCPU exists yet).
    fn new_guest(&mut self, vm: &VmFd) -> Result<Box<dyn SevGuest + Send>, FwError>;
    /// Creates the KVM VM of a launch.
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        Ok(kvm.create_vm()?)
    }
    /// Whether each launch needs its own KVM VM: KVM refuses a second SEV INIT on a VM
    /// (`sev->active`) and keeps the first context until the VM fd closes.
    fn new_vm_per_launch(&self) -> bool {
        false
    }
    /// RLIMIT_MEMLOCK as the kernel will apply it to KVM_MEMORY_ENCRYPT_REG_REGION, when the
    /// backend pins guest memory (`None`: nothing is pinned).
    fn memlock(&self) -> Option<Memlock> {
        None
    }
}

/// A [`GuestFactory`] as a backend on the caller's KVM VM (nothing pinned, one VM for every
/// launch).
struct FactoryBackend(GuestFactory);

impl SevBackend for FactoryBackend {
    fn new_guest(&mut self, vm: &VmFd) -> Result<Box<dyn SevGuest + Send>, FwError> {
        (self.0)(vm)
    }
}

/// The soft firmware model: guest contexts on a [`sev_firmware::soft::SoftPlatform`]; the
/// guest runs unencrypted, so relaunches reuse the VM.
pub struct SoftBackend(pub sev_firmware::soft::SoftPlatform);

impl SevBackend for SoftBackend {
    fn new_guest(&mut self, _vm: &VmFd) -> Result<Box<dyn SevGuest + Send>, FwError> {
        Ok(Box::new(self.0.new_guest()))
    }
}

/// Linux's SEV: KVM_MEMORY_ENCRYPT_OP on the VM fd with the SEV device's fd. Each launch gets
/// a new VM (KVM inits SEV once per VM); REG_REGION pins guest RAM against RLIMIT_MEMLOCK.
/// VMs are of the default type with KVM_SEV_INIT / ES_INIT, QEMU's `legacy-vm-type=auto`
/// for a guest without options that need KVM_SEV_INIT2 (sevm offers none of them).
#[derive(Clone)]
pub struct HwBackend {
    sev_device: PathBuf,
    port: Arc<dyn IoctlPort>,
    /// The kernel encrypts guest memory (false over a test port such as the loopback).
    encrypts: bool,
}

impl HwBackend {
    /// The backend over the real kernel, with the SEV device at `sev_device`.
    pub fn new(sev_device: &Path) -> Self {
        HwBackend {
            encrypts: true,
            ..Self::with_port(sev_device, Arc::new(sev_firmware::hw::SysIoctl))
        }
    }

    /// The backend issuing every SEV and vCPU-creation ioctl through `port` (tests: the
    /// loopback model of Linux). The guest is taken to run without memory encryption (its
    /// RAM is aliased at the C-bit, see [`crate::builder::LaunchBackend::host_encrypts`]).
    pub fn with_port(sev_device: &Path, port: Arc<dyn IoctlPort>) -> Self {
        HwBackend {
            sev_device: sev_device.to_path_buf(),
            port,
            encrypts: false,
        }
    }

    /// Whether the kernel behind this backend encrypts guest memory.
    pub fn encrypts(&self) -> bool {
        self.encrypts
    }

    /// The SEV device (its path).
    pub fn sev_device(&self) -> &Path {
        &self.sev_device
    }

    /// The platform commands on the same device and port.
    pub fn platform(&self) -> Result<sev_firmware::hw::HwPlatform, FwError> {
        sev_firmware::hw::HwPlatform::open_with_port(&self.sev_device, self.port.clone())
    }
}

impl SevBackend for HwBackend {
    fn new_guest(&mut self, vm: &VmFd) -> Result<Box<dyn SevGuest + Send>, FwError> {
        Ok(Box::new(sev_firmware::hw::HwGuest::with_port(
            vm.as_raw_fd(),
            0,
            &self.sev_device,
            self.port.clone(),
        )?))
    }

    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        let vm = kvm.create_vm()?;
        self.port.vm_created(vm.as_raw_fd());
        Ok(vm)
    }

    fn new_vm_per_launch(&self) -> bool {
        true
    }

    fn memlock(&self) -> Option<Memlock> {
        Some(self.port.memlock())
    }
}

/// Launch parameters (from [`SevLaunchConfig`] plus the CLI).
#[derive(Debug, Clone)]
pub struct LaunchParams {
    /// Guest policy.
    pub policy: GuestPolicy,
    /// The owner's GODH certificate and session blob, `None` for a launch without owner.
    pub owner: Option<LaunchOwner>,
    /// Handle to share a key with (0 = new key).
    pub handle: u32,
    /// C-bit position.
    pub cbitpos: u8,
    /// Physical address bits lost to encryption.
    pub reduced_phys_bits: u8,
    /// Wait for [`LaunchHandle::release`] before LAUNCH_FINISH (every launch). When the VM
    /// was built with [`VmConfig::start_paused`], the first launch instead continues with
    /// [`crate::VmControl::resume`] (the monitor's `cont`).
    pub paused: bool,
    /// Reset behaviour.
    pub on_reset: ResetMode,
    /// Write the measured bytes and VMSAs here.
    pub dump_dir: Option<PathBuf>,
}

impl LaunchParams {
    /// From a validated config and the platform's C-bit.
    pub fn from_config(cfg: &SevLaunchConfig, platform_cbitpos: u8) -> Self {
        LaunchParams {
            policy: GuestPolicy(cfg.policy),
            owner: cfg.owner.clone(),
            handle: cfg.handle,
            cbitpos: cfg.cbitpos.unwrap_or(platform_cbitpos),
            reduced_phys_bits: cfg.reduced_phys_bits,
            paused: false,
            on_reset: ResetMode::Relaunch,
            dump_dir: None,
        }
    }

    /// SEV-ES?
    pub fn es(&self) -> bool {
        self.policy.es()
    }
}

/// `query-sev` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevStatus {
    /// Launch phase.
    pub phase: Phase,
    /// Firmware handle.
    pub handle: u32,
    /// Policy.
    pub policy: u32,
    /// Firmware.
    pub platform: PlatformInfo,
    /// SEV-ES?
    pub es: bool,
    /// Number of launches so far (1 + relaunches).
    pub launches: u32,
    /// ASID bound by the firmware (0 if unknown).
    pub asid: u32,
}

impl SevStatus {
    /// What QEMU's `query-sev` reports about this launch.
    pub fn sev_info(&self) -> crate::monitor::SevInfo {
        crate::monitor::SevInfo {
            enabled: true,
            api_major: self.platform.api_major,
            api_minor: self.platform.api_minor,
            build_id: self.platform.build,
            policy: self.policy,
            state: self.phase.sev_state(),
            handle: self.handle,
            snp_policy: None,
        }
    }

    /// The reply of QEMU's `query-sev`: the monitor's one renderer
    /// ([`crate::monitor::SevInfo::to_query_sev`]) over [`SevStatus::sev_info`].
    pub fn to_query_sev(&self) -> serde_json::Value {
        self.sev_info().to_query_sev()
    }
}

struct State {
    /// The launch in its current typestate (the firmware context lives in it).
    launch: LaunchState,
    backend: Box<dyn SevBackend>,
    /// What LAUNCH_UPDATE_DATA got, for `--dump-launch`.
    dump: Vec<MeasuredBlob>,
    params: LaunchParams,
    platform: PlatformInfo,
    handle: u32,
    measure: Option<[u8; 48]>,
    digest: Option<[u8; 32]>,
    launches: u32,
    memory: Option<GuestMemoryMmap>,
    /// Ranges encrypted by the firmware (measured images, injected secrets): [start, end).
    private: Vec<(u64, u64)>,
    released: bool,
    refused_writes: u64,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// A cloneable handle on one VM's SEV launch, for the owner flow and the monitor
/// (measurement, secret injection, status, memory access).
#[derive(Clone)]
pub struct LaunchHandle(Arc<Shared>);

/// The [`LaunchHooks`] of an SEV VM, driving one [`SevLaunch`] typestate per launch.
/// [`crate::builder::VmBuilder::build`] makes and installs them; [`SevHooks::new`] and
/// [`SevHooks::prepare`] remain for tests of the hooks themselves.
pub struct SevHooks {
    handle: LaunchHandle,
}

impl SevHooks {
    /// A launch that asks `factory` for a firmware guest context at every launch.
    pub fn new(params: LaunchParams, platform: PlatformInfo, factory: GuestFactory) -> Self {
        Self::with_backend(params, platform, Box::new(FactoryBackend(factory)))
    }

    /// A launch on `backend`.
    pub fn with_backend(
        params: LaunchParams,
        platform: PlatformInfo,
        backend: Box<dyn SevBackend>,
    ) -> Self {
        SevHooks {
            handle: LaunchHandle(Arc::new(Shared {
                state: Mutex::new(State {
                    launch: LaunchState::None,
                    backend,
                    dump: Vec::new(),
                    params,
                    platform,
                    handle: 0,
                    measure: None,
                    digest: None,
                    launches: 0,
                    memory: None,
                    private: Vec::new(),
                    released: false,
                    refused_writes: 0,
                }),
                cond: Condvar::new(),
            })),
        }
    }

    /// The handle for the owner / monitor.
    pub fn handle(&self) -> LaunchHandle {
        self.handle.clone()
    }

    /// Sets what an SEV guest needs in `cfg`: C-bit page tables, CPUID 0x8000001F and
    /// 0x80000008 and the SEV status MSR.
    pub fn prepare(&self, cfg: &mut VmConfig) {
        let st = self.handle.lock();
        Self::prepare_config(&st.params, cfg);
    }

    /// [`prepare`](Self::prepare) from the launch parameters alone.
    pub fn prepare_config(p: &LaunchParams, cfg: &mut VmConfig) {
        cfg.page_table_cbit = Some(p.cbitpos);
        let mut ov = sev_cpuid(p.cbitpos, p.reduced_phys_bits, p.es());
        ov.0.extend(cfg.cpuid_overrides.0.iter().copied());
        cfg.cpuid_overrides = ov;
        cfg.msr_handler = Some(Arc::new(SevMsrs { es: p.es() }));
    }
}

/// CPUID leaves for an SEV guest: 0x8000001F (EAX bit 1 SEV, bit 3 SEV-ES; EBX[5:0] C-bit,
/// EBX[11:6] reduced physical bits; ECX number of encrypted guests; EDX minimum SEV ASID) and
/// 0x80000008 with MAXPHYADDR above the C-bit.
pub fn sev_cpuid(cbitpos: u8, reduced_phys_bits: u8, es: bool) -> CpuidOverrides {
    // `__cpuid` is an unsafe fn in older compilers (the MSRV, 1.89, among them) and a safe
    // one in newer ones: the block keeps both building (`unused_unsafe` allowed).
    #[allow(unused_unsafe)]
    // SAFETY: every x86_64 CPU has CPUID, and leaf 0x8000_0008 (address sizes) exists on every
    // CPU that can run a SEV guest; reading it has no other precondition.
    let host = unsafe { std::arch::x86_64::__cpuid(CPUID_ADDR_LEAF) };
    let maxphys = (host.eax & 0xff).max(cbitpos as u32 + 1);
    CpuidOverrides(vec![
        CpuidOverride {
            function: CPUID_SEV_LEAF,
            index: 0,
            eax: (1 << 1) | if es { 1 << 3 } else { 0 },
            ebx: (cbitpos as u32 & 0x3f) | ((reduced_phys_bits as u32 & 0x3f) << 6),
            ecx: 15,
            edx: 5,
        },
        CpuidOverride {
            function: CPUID_ADDR_LEAF,
            index: 0,
            eax: (host.eax & !0xff) | maxphys,
            ebx: host.ebx,
            ecx: host.ecx,
            edx: host.edx,
        },
    ])
}

/// Answers the SEV status MSR 0xC0010131 (bit 0 SEV, bit 1 SEV-ES); writes are refused.
#[derive(Debug, Clone, Copy)]
pub struct SevMsrs {
    /// SEV-ES active.
    pub es: bool,
}

impl MsrHandler for SevMsrs {
    fn rdmsr(&self, _cpu: usize, index: u32) -> Option<u64> {
        (index == MSR_SEV_STATUS).then_some(1 | if self.es { 2 } else { 0 })
    }
}

/// `[gpa, gpa+len)` lies inside one region of guest RAM.
fn host_slice_check(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Result<(), ConfidentialError> {
    let bad = || ConfidentialError::BadRange {
        gpa,
        len: len as u64,
    };
    let region = mem.find_region(GuestAddress(gpa)).ok_or_else(bad)?;
    let off = gpa - region.start_addr().0;
    if off.checked_add(len as u64).is_none_or(|e| e > region.len()) {
        return Err(bad());
    }
    Ok(())
}

/// The host mapping of guest RAM `[gpa, gpa+len)`; must lie in one region. **Launch time
/// only** (REG_REGION, LAUNCH_UPDATE_DATA, LAUNCH_SECRET before LAUNCH_FINISH): a Rust slice
/// over guest RAM is sound only while no vCPU runs. Runtime access (debug/host reads and
/// writes) goes through [`guest_slice`]'s `VolatileSlice` instead.
#[allow(clippy::mut_from_ref)]
fn host_slice(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Result<&mut [u8], ConfidentialError> {
    let bad = || ConfidentialError::BadRange {
        gpa,
        len: len as u64,
    };
    host_slice_check(mem, gpa, len)?;
    let host = mem.get_host_address(GuestAddress(gpa)).map_err(|_| bad())?;
    // SAFETY: `host` points into a live mmap of guest RAM owned by `mem` (a clone of the VM's
    // mapping, kept alive by the reference), and `[host, host+len)` lies inside one region
    // (checked above). Every caller runs at launch time, before LAUNCH_FINISH lets the vCPUs
    // run (`State::launch` from `after_load`, `inject_secret` in the LaunchSecret phase,
    // which `before_run` ends): nothing else reads or writes this memory while the slice
    // lives, and it does not outlive the firmware call it is passed to.
    Ok(unsafe { std::slice::from_raw_parts_mut(host, len) })
}

/// Guest RAM `[gpa, gpa+len)` as a `VolatileSlice` (vm-memory's safe API; must lie in one
/// region), for runtime access while vCPUs may be writing the same memory.
fn guest_slice(
    mem: &GuestMemoryMmap,
    gpa: u64,
    len: usize,
) -> Result<VolatileSlice<'_>, ConfidentialError> {
    mem.get_slice(GuestAddress(gpa), len)
        .map_err(|_| ConfidentialError::BadRange {
            gpa,
            len: len as u64,
        })
}

impl LaunchHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// LAUNCH_MEASURE output (MEASURE ‖ MNONCE) of the current launch, once measured.
    pub fn measurement(&self) -> Option<[u8; 48]> {
        self.lock().measure
    }

    /// The launch digest sevm computed over exactly what it passed to the firmware.
    pub fn launch_digest(&self) -> Option<[u8; 32]> {
        self.lock().digest
    }

    /// Waits until launch number `launch` (1-based) is measured; returns its measurement.
    pub fn wait_measured(
        &self,
        launch: u32,
        timeout: Duration,
    ) -> Result<[u8; 48], ConfidentialError> {
        let st = self.lock();
        let (st, _) = self
            .0
            .cond
            .wait_timeout_while(st, timeout, |s| {
                !(s.launches >= launch && s.launch.phase() == Phase::LaunchSecret)
                    && s.launch.phase() != Phase::Failed
            })
            .unwrap_or_else(|p| p.into_inner());
        match st.measure {
            Some(m) if st.launches >= launch && st.launch.phase() == Phase::LaunchSecret => Ok(m),
            _ => Err(ConfidentialError::Timeout("the launch measurement")),
        }
    }

    /// LAUNCH_SECRET: decrypts the packet (header, ciphertext) into guest memory at
    /// `gpa` (default: the EFI secret area), which must lie inside the secret area.
    pub fn inject_secret(
        &self,
        header: &PacketHeader,
        ct: &[u8],
        gpa: Option<u64>,
    ) -> Result<(), ConfidentialError> {
        let mut st = self.lock();
        let phase = st.launch.phase();
        if phase != Phase::LaunchSecret {
            return Err(ConfidentialError::Phase {
                op: "LAUNCH_SECRET",
                phase,
            });
        }
        // KVM's own limit first, so both backends refuse what Linux would (before the firmware).
        if ct.len() > KVM_SECRET_MAX {
            return Err(ConfidentialError::SecretTooLarge {
                len: ct.len(),
                max: KVM_SECRET_MAX,
            });
        }
        let gpa = gpa.unwrap_or(layout::SECRET_AREA_START);
        layout::check_secret_range(gpa, ct.len() as u64)?;
        let mem = st.memory.clone().ok_or(ConfidentialError::Phase {
            op: "LAUNCH_SECRET",
            phase,
        })?;
        let dest = host_slice(&mem, gpa, ct.len())?;
        let LaunchState::Measured(launch) = &mut st.launch else {
            return Err(ConfidentialError::Phase {
                op: "LAUNCH_SECRET",
                phase,
            });
        };
        launch.inject_secret(header, ct, gpa, dest)?;
        st.private.push((gpa, gpa + ct.len() as u64));
        tracing::info!(gpa, len = ct.len(), "secret injected");
        Ok(())
    }

    /// ATTESTATION (KVM_SEV_GET_ATTESTATION_REPORT): the firmware's report
    /// `mnonce ‖ launch digest ‖ policy ‖ PEK signature`, for the owner's nonce `mnonce`.
    /// Possible once the launch is measured (LAUNCH_SECRET) and while the guest runs; any
    /// other phase is a [`ConfidentialError::Phase`].
    pub fn attestation_report(
        &self,
        mnonce: &[u8; 16],
    ) -> Result<AttestationReport, ConfidentialError> {
        let mut st = self.lock();
        let phase = st.launch.phase();
        if !matches!(phase, Phase::LaunchSecret | Phase::Running) {
            return Err(ConfidentialError::Phase {
                op: "ATTESTATION",
                phase,
            });
        }
        let guest = st.launch.guest_mut().ok_or(ConfidentialError::Phase {
            op: "ATTESTATION",
            phase: Phase::Uninit,
        })?;
        let report = guest
            .attestation_report(*mnonce)
            .map_err(fw("ATTESTATION"))?;
        tracing::info!("attestation report produced");
        Ok(report)
    }

    /// Lets a paused relaunch continue to LAUNCH_FINISH (the first launch continues with
    /// [`crate::VmControl::resume`]).
    pub fn release(&self) {
        self.lock().released = true;
        self.0.cond.notify_all();
    }

    /// The VM has stopped for good: decommissions the SEV context now (the soft platform's
    /// guest count drops, its `sev-guests.d` count file goes) instead of when the last clone
    /// of this handle is dropped, which a monitor client thread may delay past the process's
    /// exit. Later operations see no guest.
    pub fn end(&self) {
        let mut st = self.lock();
        if let Some(mut g) = st.launch.take().into_guest() {
            if let Err(e) = g.decommission() {
                tracing::warn!("decommissioning the SEV context at the end of the run: {e}");
            }
        }
        st.memory = None;
        drop(st);
        self.0.cond.notify_all();
    }

    /// `query-sev` status.
    pub fn status(&self) -> SevStatus {
        let mut st = self.lock();
        let asid = st
            .launch
            .guest_mut()
            .and_then(|g| g.guest_status().ok())
            .map(|s| s.asid)
            .unwrap_or(0);
        SevStatus {
            phase: st.launch.phase(),
            handle: st.handle,
            policy: st.params.policy.bits(),
            platform: st.platform,
            es: st.params.es(),
            launches: st.launches,
            asid,
        }
    }

    /// The firmware's own view of the guest (GUEST_STATUS).
    pub fn guest_state(&self) -> Option<GuestState> {
        self.lock()
            .launch
            .guest_mut()
            .and_then(|g| g.guest_status().ok())
            .map(|s| s.state)
    }

    /// Number of host writes refused because they targeted private memory.
    pub fn refused_writes(&self) -> u64 {
        self.lock().refused_writes
    }

    /// Reads guest memory: [`AccessKind::Host`] gives what the host sees (ciphertext where
    /// private), [`AccessKind::Debug`] decrypts through DBG_DECRYPT (refused under NODBG).
    /// Sound while vCPUs run: guest RAM is reached as a `VolatileSlice`, never a Rust slice.
    pub fn read(
        &self,
        gpa: u64,
        len: usize,
        kind: AccessKind,
    ) -> Result<Vec<u8>, ConfidentialError> {
        let mut st = self.lock();
        let mem = st.memory.clone().ok_or(ConfidentialError::Phase {
            op: "guest memory access",
            phase: st.launch.phase(),
        })?;
        // Firmware access is 16-byte granular: widen, then trim.
        let start = gpa & !15;
        let end = gpa
            .checked_add(len as u64)
            .and_then(|e| e.checked_next_multiple_of(16))
            .ok_or(ConfidentialError::BadRange {
                gpa,
                len: len as u64,
            })?;
        let wide = (end - start) as usize;
        let src = guest_slice(&mem, start, wide)?;
        let policy = st.params.policy;
        let guest = st.launch.guest_mut().ok_or(ConfidentialError::Phase {
            op: "guest memory access",
            phase: Phase::Uninit,
        })?;
        let out = match kind {
            AccessKind::Host => guest.host_view(start, src).map_err(fw("host view"))?,
            AccessKind::Debug => {
                if policy.nodbg() {
                    return Err(ConfidentialError::DebugDisabled {
                        policy: policy.bits(),
                    });
                }
                let mut out = vec![0u8; wide];
                guest
                    .dbg_decrypt(start, src, &mut out)
                    .map_err(fw("DBG_DECRYPT"))?;
                out
            }
        };
        let off = (gpa - start) as usize;
        Ok(out[off..off + len].to_vec())
    }

    /// Writes guest memory through DBG_ENCRYPT (refused under NODBG). `gpa` and the length
    /// need no alignment: KVM (and the soft backend, which models it) read-modify-writes the
    /// 16-byte blocks around an unaligned range. Sound while vCPUs run: guest RAM is reached as
    /// a `VolatileSlice`, never a Rust slice.
    pub fn write_debug(&self, gpa: u64, data: &[u8]) -> Result<(), ConfidentialError> {
        let mut st = self.lock();
        let policy = st.params.policy;
        if policy.nodbg() {
            return Err(ConfidentialError::DebugDisabled {
                policy: policy.bits(),
            });
        }
        let mem = st.memory.clone().ok_or(ConfidentialError::Phase {
            op: "DBG_ENCRYPT",
            phase: st.launch.phase(),
        })?;
        let dest = guest_slice(&mem, gpa, data.len())?;
        let guest = st.launch.guest_mut().ok_or(ConfidentialError::Phase {
            op: "DBG_ENCRYPT",
            phase: Phase::Uninit,
        })?;
        guest
            .dbg_encrypt(gpa, data, dest)
            .map_err(fw("DBG_ENCRYPT"))
    }

    /// A device-model write: allowed into shared memory only; a write touching memory the
    /// firmware encrypted (measured images, injected secrets) is refused and logged.
    pub fn write_shared(&self, gpa: u64, data: &[u8]) -> Result<(), ConfidentialError> {
        let mut st = self.lock();
        let end = gpa.saturating_add(data.len() as u64);
        if st.private.iter().any(|&(s, e)| gpa < e && end > s) {
            st.refused_writes += 1;
            tracing::warn!(
                gpa,
                len = data.len(),
                "device write into private SEV memory refused"
            );
            return Err(ConfidentialError::PrivateWrite {
                gpa,
                len: data.len() as u64,
            });
        }
        let mem = st.memory.clone().ok_or(ConfidentialError::Phase {
            op: "device write",
            phase: st.launch.phase(),
        })?;
        // A plain (volatile) copy into guest RAM, as a device's DMA would be.
        host_slice_check(&mem, gpa, data.len())?;
        mem.write_slice(data, GuestAddress(gpa))
            .map_err(|_| ConfidentialError::BadRange {
                gpa,
                len: data.len() as u64,
            })
    }
}

/// Pages KVM pins for `[addr, addr+len)` (`sev_pin_memory`: the range need not be aligned).
fn pages_spanned(addr: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (addr + len - 1) / 4096 - addr / 4096 + 1
}

impl State {
    /// The launch if it is measuring ([`launch::Started`]), else a phase error for `op`.
    fn started(
        &mut self,
        op: &'static str,
    ) -> Result<&mut SevLaunch<launch::Started>, ConfidentialError> {
        let phase = self.launch.phase();
        match &mut self.launch {
            LaunchState::Started(l) => Ok(l),
            _ => Err(ConfidentialError::Phase { op, phase }),
        }
    }

    /// Before any vCPU exists: INIT/ES_INIT, LAUNCH_START, the RLIMIT_MEMLOCK check and
    /// REG_REGION of every region of guest RAM.
    fn init(&mut self, ctx: &LaunchContext<'_>) -> Result<(), ConfidentialError> {
        if let Some(mut old) = self.launch.take().into_guest() {
            // A relaunch: the old context (and its key) is gone.
            if let Err(e) = old.decommission() {
                tracing::warn!("decommissioning the previous SEV context: {e}");
            }
        }
        self.measure = None;
        self.digest = None;
        self.dump.clear();
        self.private.clear();
        self.released = !self.params.paused;
        self.memory = Some(ctx.memory.clone());
        let guest = self
            .backend
            .new_guest(ctx.vm_fd)
            .map_err(fw("opening the SEV guest context"))?;
        // A context whose INIT or LAUNCH_START failed holds no key: it is dropped.
        let started = SevLaunch::new(guest)
            .launch_start(
                self.params.policy,
                self.params.owner.as_ref(),
                self.params.handle,
            )
            .map_err(|f| *f.error)?;
        self.handle = started.handle();
        self.launches += 1;
        // From here on the guest context exists: a later failure leaves it to the relaunch
        // or the VM's teardown to decommission.
        self.launch = LaunchState::Started(started);
        if let Some(limit) = self.backend.memlock() {
            check_memlock(ctx, limit)?;
        }
        let launch = self.started("MEMORY_ENCRYPT_REG_REGION")?;
        for r in ctx.memory.iter() {
            let s = host_slice(ctx.memory, r.start_addr().0, r.len() as usize)?;
            launch.register_region(r.start_addr().0, s)?;
        }
        Ok(())
    }

    /// LAUNCH_UPDATE_DATA of every measured range (no vCPU exists yet).
    fn update_data(&mut self, ctx: &LaunchContext<'_>) -> Result<(), ConfidentialError> {
        let dumping = self.params.dump_dir.is_some();
        let mut dump: Vec<MeasuredBlob> = Vec::new();
        let mut private = Vec::new();
        let launch = self.started("LAUNCH_UPDATE_DATA")?;
        let mut r = Ok(());
        for m in ctx.measured {
            r = host_slice(ctx.memory, m.gpa, m.len as usize).and_then(|s| {
                if dumping {
                    dump.push(MeasuredBlob {
                        gpa: m.gpa,
                        kind: m.kind,
                        bytes: s.to_vec(),
                    });
                }
                launch.update_data(m.gpa, s)
            });
            if r.is_err() {
                break;
            }
            private.push((m.gpa, m.gpa + m.len));
        }
        // The ranges the firmware took are private even when a later one failed.
        self.private.extend(private);
        self.dump = dump;
        r
    }

    /// Once the vCPUs exist with their boot registers: LAUNCH_UPDATE_VMSA (SEV-ES),
    /// LAUNCH_MEASURE.
    fn measure(&mut self, ctx: &LaunchContext<'_>) -> Result<(), ConfidentialError> {
        let mut launch = match self.launch.take() {
            LaunchState::Started(l) => l,
            other => {
                let phase = other.phase();
                self.launch = other;
                return Err(ConfidentialError::Phase {
                    op: "LAUNCH_MEASURE",
                    phase,
                });
            }
        };
        // The VMSAs of the registers the vCPUs were just given: what KVM measures on
        // hardware (the hw backend lets KVM build them; the soft firmware measures these).
        let vmsas: Vec<[u8; 4096]> = if self.params.es() {
            ctx.vcpu_regs.iter().map(recipe::vcpu_vmsa).collect()
        } else {
            Vec::new()
        };
        if !vmsas.is_empty() {
            if let Err(e) = launch.update_vmsas(&vmsas) {
                self.launch = LaunchState::Started(launch);
                return Err(e);
            }
        }
        let measured = match launch.measure() {
            Ok(m) => m,
            Err(f) => {
                self.launch = LaunchState::Failed(Some(f.guest));
                return Err(*f.error);
            }
        };
        let (m, d) = (measured.measurement(), measured.launch_digest());
        self.launch = LaunchState::Measured(measured);
        if let Some(dir) = self.params.dump_dir.clone() {
            let dump = std::mem::take(&mut self.dump);
            write_dump(&dir, &dump, &vmsas, &d, &m, self.params.policy.bits())?;
        }
        self.measure = Some(m);
        self.digest = Some(d);
        tracing::info!(
            launch = self.launches,
            handle = self.handle,
            "SEV launch measured"
        );
        Ok(())
    }

    /// LAUNCH_FINISH of a measured launch.
    fn finish(&mut self) -> Result<(), ConfidentialError> {
        match self.launch.take() {
            LaunchState::Measured(l) => match l.finish() {
                Ok(f) => {
                    self.launch = LaunchState::Running(f);
                    Ok(())
                }
                Err(f) => {
                    self.launch = LaunchState::Failed(Some(f.guest));
                    Err(*f.error)
                }
            },
            other => {
                let phase = other.phase();
                self.launch = other;
                Err(ConfidentialError::Phase {
                    op: "LAUNCH_FINISH",
                    phase,
                })
            }
        }
    }
}

/// Refuses a launch whose guest memory KVM could not pin under RLIMIT_MEMLOCK, before
/// REG_REGION fails with a bare ENOMEM. KVM counts per VM (`sev->pages_locked`): every
/// registered region stays pinned, and LAUNCH_UPDATE_DATA, LAUNCH_SECRET and DBG_* pin their
/// range on top of that while they run (`sev_pin_memory` in arch/x86/kvm/svm/sev.c).
fn check_memlock(ctx: &LaunchContext<'_>, limit: Memlock) -> Result<(), ConfidentialError> {
    let mut ram_pages = 0;
    for r in ctx.memory.iter() {
        let host = ctx.memory.get_host_address(r.start_addr()).map_err(|_| {
            ConfidentialError::BadRange {
                gpa: r.start_addr().0,
                len: r.len(),
            }
        })? as u64;
        ram_pages += pages_spanned(host, r.len());
    }
    let mut ranges = Vec::new();
    for m in ctx.measured {
        if let Ok(h) = ctx.memory.get_host_address(GuestAddress(m.gpa)) {
            ranges.push((h as u64, m.len));
        }
    }
    check_memlock_bytes(memlock_needed(ram_pages, &ranges), limit)
}

/// What KVM pins for an SEV guest, in bytes: `(needed, ram, transient)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemlockNeed(pub u64, pub u64, pub u64);

/// The pinned bytes of a launch with `ram_pages` pages of guest RAM registered and the
/// measured ranges `(host address, length)` pinned one at a time on top (as is LAUNCH_SECRET's
/// destination and a debug page).
pub fn memlock_needed(ram_pages: u64, measured: &[(u64, u64)]) -> MemlockNeed {
    let mut transient = pages_spanned(0x10, KVM_SECRET_MAX as u64).max(2);
    for &(h, len) in measured {
        transient = transient.max(pages_spanned(h, len));
    }
    MemlockNeed(
        (ram_pages + transient) * 4096,
        ram_pages * 4096,
        transient * 4096,
    )
}

/// Refuses `need` under `limit` with a message naming the bytes and how to raise the limit.
pub fn check_memlock_bytes(need: MemlockNeed, limit: Memlock) -> Result<(), ConfidentialError> {
    let MemlockNeed(needed, ram, transient) = need;
    if limit.allows(needed) {
        return Ok(());
    }
    let lim = limit.limit.unwrap_or(u64::MAX);
    Err(ConfidentialError::Memlock {
        needed,
        ram,
        transient,
        limit: lim,
        kib: needed.div_ceil(1024),
    })
}

/// Writes one `--dump-launch` file (no following of a link; a regular file is truncated only
/// once opened; `sevm_files::create_output`).
fn write_file(path: PathBuf, data: &[u8]) -> Result<(), ConfidentialError> {
    sevm_files::write_output(&path, "--dump-launch", data, sevm_files::MODE_PUBLIC)
        .map(drop)
        .map_err(|e| ConfidentialError::Io {
            source: std::io::Error::other(e.reason()),
            path,
        })
}

/// Writes the measured bytes: `NN-<kind>-<gpa>.bin` per range, `vmsa-cpuN.bin`, the
/// concatenation `measured.bin` (ranges then VMSAs, i.e. the launch-digest input),
/// `launch-digest.b64`, `launch-measure.bin` and `policy.txt`.
fn write_dump(
    dir: &Path,
    blobs: &[MeasuredBlob],
    vmsas: &[[u8; 4096]],
    digest: &[u8; 32],
    measure: &[u8; 48],
    policy: u32,
) -> Result<(), ConfidentialError> {
    use base64::Engine;
    fs::create_dir_all(dir).map_err(|source| ConfidentialError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut all = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        let name = format!("{i:02}-{:?}-{:#x}.bin", b.kind, b.gpa).to_lowercase();
        write_file(dir.join(name), &b.bytes)?;
        all.extend_from_slice(&b.bytes);
    }
    for (i, v) in vmsas.iter().enumerate() {
        write_file(dir.join(format!("vmsa-cpu{i}.bin")), v)?;
        all.extend_from_slice(v);
    }
    write_file(dir.join("measured.bin"), &all)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    write_file(dir.join("launch-digest.b64"), b64.encode(digest).as_bytes())?;
    write_file(dir.join("launch-measure.bin"), measure)?;
    write_file(dir.join("policy.txt"), format!("{policy:#x}\n").as_bytes())
}

fn boxed(e: ConfidentialError) -> HookError {
    Box::new(e)
}

impl SevHooks {
    /// Runs one launch step; a failure marks the launch failed and wakes waiters.
    fn step(
        &mut self,
        f: impl FnOnce(&mut State) -> Result<(), ConfidentialError>,
    ) -> Result<(), HookError> {
        let mut st = self.handle.lock();
        let r = f(&mut st);
        if r.is_err() {
            st.launch.fail();
        }
        drop(st);
        self.handle.0.cond.notify_all();
        r.map_err(boxed)
    }
}

impl LaunchHooks for SevHooks {
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        self.handle.lock().backend.create_vm(kvm)
    }

    fn init(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| st.init(ctx))
    }

    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| st.update_data(ctx))
    }

    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        let mut st = self.handle.lock();
        // Only a measuring launch creates vCPUs: its VM is SEV-initialised (Linux refuses
        // SEV INIT once a vCPU exists).
        let created = match &mut st.launch {
            LaunchState::Started(l) => l.create_vcpu(id).map_err(boxed)?,
            LaunchState::None => None,
            other => {
                return Err(boxed(ConfidentialError::Phase {
                    op: "KVM_CREATE_VCPU",
                    phase: other.phase(),
                }))
            }
        };
        Ok(match created {
            // SAFETY: `fd` is a vCPU fd KVM_CREATE_VCPU just returned for `vm_fd` (the
            // backend issues it on the VM fd it was given at `new_guest`, which is `vm_fd`),
            // owned by nothing else: `into_raw_fd` hands its ownership to the VcpuFd.
            Some(fd) => unsafe { vm_fd.create_vcpu_from_rawfd(fd.into_raw_fd()) }?,
            None => vm_fd.create_vcpu(id)?,
        })
    }

    fn after_vcpus(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| st.measure(ctx))
    }

    fn new_vm_per_launch(&self) -> bool {
        self.handle.lock().backend.new_vm_per_launch()
    }

    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let mut st = self.handle.lock();
        // With start_paused the VM itself waited for `resume` before the first launch's
        // before_run; otherwise (and on every relaunch) a paused launch waits for release.
        let vm_paused_first = st.launches == 1 && ctx.config.start_paused;
        if !st.released && !vm_paused_first {
            tracing::info!("relaunch measured; waiting for the owner to release it");
            st = self
                .handle
                .0
                .cond
                .wait_while(st, |s| !s.released)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.finish().map_err(boxed)?;
        drop(st);
        self.handle.0.cond.notify_all();
        Ok(())
    }

    fn on_reset(&mut self, _ctx: &LaunchContext<'_>) -> Result<ResetAction, HookError> {
        Ok(match self.handle.lock().params.on_reset {
            ResetMode::Relaunch => ResetAction::Relaunch,
            ResetMode::Shutdown => ResetAction::Shutdown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{BootSource, RangeKind};

    #[test]
    fn cpuid_leaf_encodes_sev_es_cbit_and_reduced_bits() {
        let ov = sev_cpuid(47, 1, false);
        let f = ov.0.iter().find(|o| o.function == CPUID_SEV_LEAF).unwrap();
        assert_eq!(f.eax, 0x2);
        assert_eq!(f.ebx, 47 | (1 << 6));
        let es = sev_cpuid(51, 5, true);
        let f = es.0.iter().find(|o| o.function == CPUID_SEV_LEAF).unwrap();
        assert_eq!(f.eax, 0xa);
        assert_eq!(f.ebx, 51 | (5 << 6));
        let a = es.0.iter().find(|o| o.function == CPUID_ADDR_LEAF).unwrap();
        assert!(
            a.eax & 0xff > 51,
            "MAXPHYADDR {:#x} must exceed the C-bit",
            a.eax
        );
    }

    #[test]
    fn status_msr_bits() {
        assert_eq!(SevMsrs { es: false }.rdmsr(0, MSR_SEV_STATUS), Some(1));
        assert_eq!(SevMsrs { es: true }.rdmsr(1, MSR_SEV_STATUS), Some(3));
        assert_eq!(SevMsrs { es: true }.rdmsr(0, 0xC000_0080), None);
        assert!(!SevMsrs { es: true }.wrmsr(0, MSR_SEV_STATUS, 0));
    }

    #[test]
    fn recipe_is_the_layout_order_with_the_image_bytes() {
        let boot = BootSource::Bundled("hello".into());
        let blobs = recipe::measured_blobs(16 << 20, &boot, Some(47), 1).unwrap();
        let kinds: Vec<_> = blobs.iter().map(|b| (b.gpa, b.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0x1000, RangeKind::BootTables),
                (0x9000, RangeKind::BootTables),
                (0x10_0000, RangeKind::Bundled)
            ]
        );
        let img = guests::get("hello").unwrap().bytes;
        assert_eq!(&blobs[2].bytes[..img.len()], img);
        assert_eq!(blobs[2].bytes.len() % 4096, 0);
        // PML4[0] carries the C-bit.
        let pml4e = u64::from_le_bytes(blobs[1].bytes[..8].try_into().unwrap());
        assert_ne!(pml4e & (1 << 47), 0);
        let d47 = recipe::expected_digest(16 << 20, &boot, Some(47), 1, false).unwrap();
        let d51 = recipe::expected_digest(16 << 20, &boot, Some(51), 1, false).unwrap();
        assert_ne!(d47, d51, "the C-bit is in the measured page tables");
        let es1 = recipe::expected_digest(16 << 20, &boot, Some(47), 1, true).unwrap();
        let es2 = recipe::expected_digest(16 << 20, &boot, Some(47), 2, true).unwrap();
        assert_ne!(d47, es1);
        assert_ne!(es1, es2, "one VMSA per vCPU");
        let mut d = sev_proto::measure::LaunchDigest::new();
        for b in &blobs {
            d.update(&b.bytes);
        }
        assert_eq!(d.finish(), d47);
    }

    #[test]
    fn recipe_errors_name_the_input() {
        let e = recipe::measured_blobs(16 << 20, &BootSource::Bundled("nope".into()), Some(47), 1)
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = recipe::measured_blobs(
            16 << 20,
            &BootSource::Linux {
                kernel: "/nonexistent/vmlinux".into(),
                initrd: None,
                cmdline: String::new(),
            },
            Some(47),
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }

    #[test]
    fn query_sev_json_has_qemus_keys() {
        let s = SevStatus {
            phase: Phase::LaunchSecret,
            handle: 3,
            policy: 5,
            platform: PlatformInfo {
                api_major: 0,
                api_minor: 24,
                build: 17,
                cbitpos: 47,
            },
            es: true,
            launches: 1,
            asid: 1,
        };
        let q = s.to_query_sev();
        assert_eq!(q["enabled"], true);
        assert_eq!(q["state"], "launch-secret");
        assert_eq!(q["handle"], 3);
        assert_eq!(q["policy"], 5);
        assert_eq!(q["build-id"], 17);
        assert_eq!(q["api-minor"], 24);
        // QEMU's SevGuestType has only `sev` (legacy SEV or SEV-ES) and `sev-snp`: an SEV-ES
        // guest is `sev`, and its ES bit is in the policy.
        assert_eq!(q["sev-type"], "sev");
        let policy = q["policy"].as_u64().unwrap() as u32;
        assert!(GuestPolicy(policy).es(), "{q}");
        // The same renderer as QMP's: the monitor's SevInfo gives the same JSON.
        assert_eq!(q, s.sev_info().to_query_sev());
        // A failed launch is QEMU's `uninit` (QEMU's SevState has no failed state).
        let failed = SevStatus {
            phase: Phase::Failed,
            es: false,
            ..s
        };
        assert_eq!(failed.to_query_sev()["state"], "uninit");
    }

    #[test]
    fn attestation_before_the_measurement_is_a_phase_error() {
        let params = LaunchParams {
            policy: GuestPolicy(GuestPolicy::NODBG),
            owner: None,
            handle: 0,
            cbitpos: 47,
            reduced_phys_bits: 1,
            paused: false,
            on_reset: ResetMode::Relaunch,
            dump_dir: None,
        };
        let platform = PlatformInfo {
            api_major: 0,
            api_minor: 24,
            build: 0,
            cbitpos: 47,
        };
        let factory: GuestFactory = Box::new(|_| panic!("no launch in this test"));
        let h = SevHooks::new(params, platform, factory).handle();
        let e = h.attestation_report(&[7; 16]).unwrap_err();
        assert!(
            matches!(
                e,
                ConfidentialError::Phase {
                    op: "ATTESTATION",
                    phase: Phase::Uninit
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "ATTESTATION is not possible while the launch is uninit"
        );
    }

    #[test]
    fn bad_measurement_error_explains_the_session() {
        let e = ConfidentialError::Firmware {
            stage: "LAUNCH_START",
            source: FwError::Status {
                cmd: "LAUNCH_START",
                status: Status::BadMeasurement,
            },
        };
        let s = e.to_string();
        assert!(
            s.contains("BAD_MEASUREMENT") && s.contains("session"),
            "{s}"
        );
    }

    /// Ranges near the top of the address space are refused, not overflowed (a QMP
    /// `pmemsave` with `val: -8` reaches `read` with gpa 0xffff_ffff_ffff_fff8).
    #[test]
    fn reads_and_writes_at_the_top_of_the_address_space_are_bad_ranges() {
        use sev_firmware::SevPlatform;
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plat = sev_firmware::soft::SoftPlatform::open(dir.path()).unwrap();
        let cbit = plat.cbit_pos().unwrap();
        let params = LaunchParams {
            policy: GuestPolicy(0),
            owner: None,
            handle: 0,
            cbitpos: cbit,
            reduced_phys_bits: 1,
            paused: false,
            on_reset: ResetMode::Relaunch,
            dump_dir: None,
        };
        let info = PlatformInfo {
            api_major: 0,
            api_minor: 24,
            build: 17,
            cbitpos: cbit,
        };
        let p = plat.clone();
        let l = SevHooks::new(
            params,
            info,
            Box::new(move |_| Ok(Box::new(p.new_guest()) as Box<dyn SevGuest + Send>)),
        );
        let mut cfg = crate::VmConfig {
            memory: 16 << 20,
            boot: BootSource::Bundled("hello".into()),
            serial: crate::SerialOut::Sink,
            ..crate::VmConfig::default()
        };
        l.prepare(&mut cfg);
        let h = l.handle();
        let _vm = crate::Vm::build_with_hooks(&cfg, Box::new(l)).expect("SEV VM builds");
        assert!(h.measurement().is_some(), "launched");
        for gpa in [u64::MAX - 7, u64::MAX, u64::MAX - 15] {
            for kind in [AccessKind::Host, AccessKind::Debug] {
                let e = h.read(gpa, 1, kind).unwrap_err();
                assert!(matches!(e, ConfidentialError::BadRange { .. }), "{e:?}");
            }
            let e = h.write_shared(gpa, &[0]).unwrap_err();
            assert!(matches!(e, ConfidentialError::BadRange { .. }), "{e:?}");
        }
        // In range still works.
        assert_eq!(h.read(0x10_0000, 4, AccessKind::Debug).unwrap().len(), 4);
    }
}
