//! The VM: configuration, building (KVM VM, memory slots, irqchip, vCPUs, devices, images),
//! the hooks the SEV layer plugs into, and the run loop (one thread per vCPU).
//!
//! vCPU threads: one per vCPU, started at the first [`Vm::run`] and kept across pause,
//! resume and reset; they end (and new ones start) only when a relaunch builds a new KVM VM,
//! or when the `Vm` is dropped. Between run phases each thread is parked on a condition
//! variable (no CPU use). The run loop releases them all, then waits on a condition variable
//! for a vCPU event, a [`VmControl`] request or the deadline; to stop them it sets a stop
//! flag, writes `immediate_exit` in each vCPU's `kvm_run` and sends the kick signal
//! (SIGRTMIN+1, a no-op handler), and waits until every thread has parked again. Launch and
//! reset hooks, register setup and snapshots run only while all threads are parked, so no
//! vCPU thread is ever in the guest while a hook runs.
//!
//! Lifecycle: [`Vm::build`] -> (optional [`Vm::add_alias`]) -> [`Vm::run`]. `run` returns when
//! the guest exits, powers off, triple-faults, fails, times out, or resets with
//! [`OnReset::Shutdown`]. A reset with [`OnReset::Reboot`] restarts every vCPU from its boot
//! state without touching RAM (images are not re-placed); [`ResetAction::Relaunch`] from a hook
//! re-places the boot images and runs the launch hooks again (on a new KVM VM when
//! [`LaunchHooks::new_vm_per_launch`] says so).
//!
//! Building follows KVM's order for confidential guests, which Linux enforces (SEV init is
//! refused once a vCPU exists, `sev_guest_init` in arch/x86/kvm/svm/sev.c): create the VM
//! ([`LaunchHooks::create_vm`]), memory slots and irqchip, place the images (plain memory
//! writes), [`LaunchHooks::init`] (SEV INIT, LAUNCH_START, encrypted regions),
//! [`LaunchHooks::after_load`] (LAUNCH_UPDATE_DATA), create the vCPUs ([`LaunchHooks::create_vcpu`]) and set their
//! registers, [`LaunchHooks::after_vcpus`] (LAUNCH_UPDATE_VMSA, LAUNCH_MEASURE); later
//! [`LaunchHooks::before_run`] (LAUNCH_FINISH). vCPUs can only be created with the
//! [`VcpusAllowed`] token that running `init` yields, so the order holds by construction.

use crate::boot::{self, BootError, BootPlan, BootSource, Entry, MeasuredRange};
use crate::cpu::{self, CpuError, CpuidOverrides};
use crate::devices::{DeviceError, Devices, IoAction, SerialOut};
use crate::layout;
use crate::memory::{self, MemoryError};
use kvm_bindings::{
    kvm_enable_cap, kvm_mp_state, kvm_pit_config, kvm_userspace_memory_region, CpuId,
    KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_MSR_EXIT_REASON_FILTER,
    KVM_MSR_EXIT_REASON_UNKNOWN,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// Error returned by a [`LaunchHooks`] method.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The KVM device does not exist.
    #[error("KVM device {0} not found: is the kvm module loaded (and is this a host with virtualization)?")]
    KvmNotFound(PathBuf),
    /// The KVM device exists but cannot be opened.
    #[error("permission denied opening KVM device {0}: add the user to the kvm group or adjust its mode")]
    KvmPermission(PathBuf),
    /// Any other failure opening the KVM device.
    #[error("cannot open KVM device {path}: {source}")]
    KvmOpen {
        /// Device path.
        path: PathBuf,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// What was attempted.
        op: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// The vCPU count is not usable.
    #[error("cpus = {cpus} is invalid: must be 1..={max} on this host")]
    BadCpus {
        /// Requested count.
        cpus: u8,
        /// Host maximum.
        max: usize,
    },
    /// The host's physical address width cannot reach the C-bit alias of guest memory.
    #[error(
        "the host's physical address width is {maxphyaddr} bits (MAXPHYADDR, CPUID \
         0x80000008 EAX[7:0] in KVM's supported CPUID), but this SEV launch maps guest memory a \
         second time at the C-bit alias 2^{cbit} ({base:#x}), which needs at least {need} bits: \
         use a host with more physical address bits (under QEMU: -cpu ...,phys-bits=48) or a \
         lower cbitpos",
        base = 1u64 << cbit,
        need = u32::from(*cbit) + 1
    )]
    AliasBeyondMaxPhysAddr {
        /// The host's MAXPHYADDR.
        maxphyaddr: u8,
        /// The C-bit position (the alias starts at 2^cbit).
        cbit: u8,
    },
    /// A Linux guest under an SEV-ES policy on a backend that does not encrypt (the soft
    /// model): it could not run.
    #[error(
        "a Linux guest cannot run under an SEV-ES policy on this SEV backend: the backend \
         reports SEV-ES in MSR 0xC0010131, so Linux takes its SEV-ES path, but it delivers no \
         #VC exception and does not answer the GHCB protocol, and the guest would hang; use a \
         policy without SEV-ES (bit 2) or a host with SEV-ES hardware"
    )]
    LinuxSevEsUnsupported,
    /// An alias base is not usable.
    #[error("alias base {base:#x} is invalid: {why}")]
    BadAlias {
        /// Requested base.
        base: u64,
        /// Why.
        why: &'static str,
    },
    /// Guest memory problem.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Image placement problem.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// CPU setup problem.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// Device setup problem.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A launch hook failed.
    #[error("launch hook {stage} failed: {source}")]
    Hook {
        /// "create_vm", "init", "after_load", "create_vcpu", "after_vcpus", "before_run",
        /// "on_reset".
        stage: &'static str,
        /// The hook's error.
        source: HookError,
    },
    /// A vCPU thread failed.
    #[error("vCPU {cpu}: {msg}")]
    Vcpu {
        /// vCPU index.
        cpu: usize,
        /// What happened.
        msg: String,
    },
}

/// What a guest-initiated reset does when no hook decides otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnReset {
    /// Restart all vCPUs at their boot state; RAM is kept.
    #[default]
    Reboot,
    /// Stop the VM; `run` returns [`ExitStatus::Reset`].
    Shutdown,
}

/// What a hook wants done on a guest reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetAction {
    /// Follow [`VmConfig::on_reset`].
    Default,
    /// Restart vCPUs, keep RAM.
    Reboot,
    /// Re-place boot images, call `after_load` and `before_run` again, restart vCPUs.
    Relaunch,
    /// Stop the VM.
    Shutdown,
}

/// User-space MSR handling (KVM_CAP_X86_USER_SPACE_MSR): MSRs KVM does not know (e.g. the
/// SEV status MSR 0xC0010131) are offered here. Returning `None` / `false` injects #GP.
pub trait MsrHandler: Send + Sync + std::fmt::Debug {
    /// `rdmsr` of `index` on vCPU `cpu`.
    fn rdmsr(&self, cpu: usize, index: u32) -> Option<u64>;
    /// `wrmsr` of `value` to `index` on vCPU `cpu`; true if accepted.
    fn wrmsr(&self, cpu: usize, index: u32, value: u64) -> bool {
        let _ = (cpu, index, value);
        false
    }
}

/// What hooks may see of the VM.
pub struct LaunchContext<'a> {
    /// The KVM VM (for memory-encryption ioctls).
    pub vm_fd: &'a VmFd,
    /// Guest RAM (writes go through `&`: `vm_memory::Bytes` on the mapping).
    pub memory: &'a GuestMemoryMmap,
    /// Ranges the VMM wrote, in measurement order.
    pub measured: &'a [MeasuredRange],
    /// The configuration the VM was built from.
    pub config: &'a VmConfig,
    /// The registers each vCPU was given at this launch (empty before the vCPUs exist).
    pub vcpu_regs: &'a [cpu::BootRegs],
}

/// Hooks the SEV layer implements, called in KVM's order (see the module documentation).
/// All methods default to what a plain VM does.
pub trait LaunchHooks: Send {
    /// Creates the KVM VM (at build, and at each relaunch when
    /// [`new_vm_per_launch`](Self::new_vm_per_launch)).
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        Ok(kvm.create_vm()?)
    }
    /// Once memory slots and the irqchip exist and the images are placed, before any vCPU
    /// exists (and at each relaunch): SEV INIT, LAUNCH_START, encrypted-region registration.
    fn init(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let _ = ctx;
        Ok(())
    }
    /// After the boot images are placed (and after each relaunch), before any vCPU exists.
    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let _ = ctx;
        Ok(())
    }
    /// Registers guest RAM region `slot` at `gpa` (`size` bytes, host mapping at `host`) on
    /// `vm_fd` in the hook's own way, before [`init`](Self::init) (e.g. an SEV-SNP VM's
    /// guest_memfd-backed memslot with the PRIVATE attribute). `Ok(false)`: not handled, the
    /// VM registers a plain memslot. Aliases of guest RAM are always plain memslots.
    ///
    /// # Safety
    /// `[host, host + size)` must stay a valid writable mapping while the slot exists.
    unsafe fn set_memory_slot(
        &mut self,
        vm_fd: &VmFd,
        slot: u32,
        gpa: u64,
        size: u64,
        host: u64,
    ) -> Result<bool, HookError> {
        let _ = (vm_fd, slot, gpa, size, host);
        Ok(false)
    }
    /// Creates vCPU `id` of `vm_fd` (after [`init`](Self::init)).
    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        Ok(vm_fd.create_vcpu(id)?)
    }
    /// Once every vCPU exists and holds its boot registers (and after each relaunch).
    fn after_vcpus(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let _ = ctx;
        Ok(())
    }
    /// Before the first vCPU runs (and after each relaunch).
    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let _ = ctx;
        Ok(())
    }
    /// On a guest-initiated reset.
    fn on_reset(&mut self, ctx: &LaunchContext<'_>) -> Result<ResetAction, HookError> {
        let _ = ctx;
        Ok(ResetAction::Default)
    }
    /// Whether a relaunch needs a new KVM VM (KVM refuses a second SEV INIT on one VM).
    fn new_vm_per_launch(&self) -> bool {
        false
    }
}

/// Proof that the launch's [`LaunchHooks::init`] ran on the current KVM VM: the only way to
/// get one is [`Vm::init_launch`], and vCPUs are created only with one.
#[derive(Debug)]
pub struct VcpusAllowed(());

/// Everything needed to build a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Guest RAM in bytes (see [`memory::parse_memory_size`]).
    pub memory: u64,
    /// Number of vCPUs.
    pub cpus: u8,
    /// What to boot.
    pub boot: BootSource,
    /// Where COM1 output goes.
    pub serial: SerialOut,
    /// Default reset behaviour.
    pub on_reset: OnReset,
    /// KVM device path (injectable for tests).
    pub kvm_path: PathBuf,
    /// Encryption bit to set in every page-table entry and CR3 the VMM builds.
    pub page_table_cbit: Option<u8>,
    /// CPUID leaves forced on top of KVM's supported set.
    pub cpuid_overrides: CpuidOverrides,
    /// User-space MSR handler; enables KVM_CAP_X86_USER_SPACE_MSR when set.
    pub msr_handler: Option<Arc<dyn MsrHandler>>,
    /// SEV-SNP guest requests rung at [`layout::SNP_DOORBELL_PORT`] ([`crate::snp_request`]);
    /// without a service the port is ignored and the block is left as the guest wrote it.
    pub guest_requests: Option<Arc<dyn crate::snp_request::GuestRequestService>>,
    /// Stop the VM after this long ([`ExitStatus::Timeout`]); a duration too large to add to
    /// the clock (e.g. `u64::MAX` seconds) is no limit.
    pub timeout: Option<Duration>,
    /// Wait for [`VmControl::resume`] before `before_run` and the first vCPU run (QEMU `-S`).
    pub start_paused: bool,
    /// virtio-blk disks (virtio-mmio; Linux finds them through `virtio_mmio.device=` on its
    /// command line, which the caller adds: [`crate::virtio::cmdline_entries`]).
    pub disks: Vec<crate::config::devices::DiskConfig>,
    /// virtio-net cards on TAP devices.
    pub nets: Vec<crate::config::devices::NetConfig>,
    /// The virtio-vsock device.
    pub vsock: Option<crate::config::devices::VsockConfig>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            memory: 256 << 20,
            cpus: 1,
            boot: BootSource::Bundled("hello".into()),
            serial: SerialOut::Stdout,
            on_reset: OnReset::Reboot,
            kvm_path: PathBuf::from("/dev/kvm"),
            page_table_cbit: None,
            cpuid_overrides: CpuidOverrides::default(),
            msr_handler: None,
            guest_requests: None,
            timeout: None,
            start_paused: false,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
        }
    }
}

/// How a run ended. See [`ExitStatus::exit_code`] for process exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest wrote `v` to the exit port ([`layout::EXIT_PORT`]).
    Exited(u8),
    /// The guest powered off (KVM system event SHUTDOWN).
    Poweroff,
    /// The guest reset and the reset policy was [`OnReset::Shutdown`].
    Reset,
    /// Triple fault (KVM_EXIT_SHUTDOWN) on vCPU `cpu`.
    TripleFault {
        /// vCPU index.
        cpu: usize,
    },
    /// KVM could not emulate an instruction (KVM_EXIT_INTERNAL_ERROR).
    InternalError {
        /// vCPU index.
        cpu: usize,
        /// KVM suberror (1 = emulation failure).
        suberror: u32,
        /// Guest RIP.
        rip: u64,
    },
    /// VM entry failed.
    FailEntry {
        /// vCPU index.
        cpu: usize,
        /// Hardware reason.
        reason: u64,
    },
    /// `hlt` exited to the VMM (only without an in-kernel irqchip).
    Halted {
        /// vCPU index.
        cpu: usize,
    },
    /// [`VmConfig::timeout`] elapsed.
    Timeout,
    /// Stopped by [`VmControl::quit`].
    Quit,
}

impl ExitStatus {
    /// Process exit code: `Exited(v)` -> v; `Poweroff`/`Reset`/`Quit` -> 0; `Timeout` -> 124;
    /// `TripleFault` -> 125; `InternalError`/`FailEntry` -> 126; `Halted` -> 127.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitStatus::Exited(v) => *v as i32,
            ExitStatus::Poweroff | ExitStatus::Reset | ExitStatus::Quit => 0,
            ExitStatus::Timeout => 124,
            ExitStatus::TripleFault { .. } => 125,
            ExitStatus::InternalError { .. } | ExitStatus::FailEntry { .. } => 126,
            ExitStatus::Halted { .. } => 127,
        }
    }
}

/// A built VM.
pub struct Vm {
    /// vCPU threads of the current VM fd (started at the first run, joined when the VM fd is
    /// rebuilt or the VM dropped). Declared first: they end before the vCPU fds go.
    threads: Vec<VcpuThread>,
    vm_fd: VmFd,
    /// Locked by a vCPU thread while it is out of its park; the run loop uses them only
    /// while every vCPU thread is parked.
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    kvm: Kvm,
    aliases: Vec<u64>,
    /// The vCPUs hold their boot registers and have not run since (set by a (re)launch).
    regs_fresh: bool,
    /// The registers [`Vm::setup_vcpu`] gave each vCPU at the current launch.
    boot_regs: Vec<cpu::BootRegs>,
    memory: GuestMemoryMmap,
    config: VmConfig,
    plan: BootPlan,
    devices: Arc<Mutex<Devices>>,
    /// The virtio devices and their event loop (none without `VmConfig::disks`).
    virtio: Option<Arc<crate::virtio::VirtioDevices>>,
    /// COM1's interrupt eventfd (full irqchip only), registered as an irqfd on every VM fd.
    serial_irq: Option<EventFd>,
    hooks: Option<Box<dyn LaunchHooks>>,
    supported_cpuid: CpuId,
    /// The host is Intel (VMX): TR must be loaded busy.
    vmx_host: bool,
    next_slot: u32,
    resets: u32,
    started: bool,
    started_vcpus: bool,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .field("plan", &self.plan)
            .field("resets", &self.resets)
            .finish()
    }
}

/// Whether a VM booting `boot` gets the in-kernel 8254 PIT: every boot source but the bundled
/// guests, which never touch ports 0x40-0x43 or 0x61.
fn needs_pit(boot: &BootSource) -> bool {
    !matches!(boot, BootSource::Bundled(_))
}

/// Whether a VM booting `boot` gets the whole in-kernel irqchip (PIC and IOAPIC besides the
/// local APIC): every boot source but the bundled guests, which touch neither.
fn needs_full_irqchip(boot: &BootSource) -> bool {
    !matches!(boot, BootSource::Bundled(_))
}

/// Whether CPUID leaf 0 says "GenuineIntel".
fn is_intel(cpuid: &CpuId) -> bool {
    cpuid.as_slice().iter().any(|e| {
        e.function == 0 && (e.ebx, e.edx, e.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    })
}

fn clone_eventfd(e: &EventFd) -> Result<EventFd, VmError> {
    e.try_clone().map_err(|e| VmError::Vcpu {
        cpu: 0,
        msg: format!("cannot duplicate the COM1 interrupt eventfd: {e}"),
    })
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// Opens the KVM device at `path`, mapping errors to clear messages.
pub fn open_kvm(path: &std::path::Path) -> Result<Kvm, VmError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| VmError::KvmOpen {
        path: path.to_path_buf(),
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    Kvm::new_with_path(&c).map_err(|e| open_error(path, e))
}

/// MAXPHYADDR as KVM reports it (CPUID 0x80000008 EAX[7:0] of its supported set; 36 if the
/// leaf is missing, the architectural default).
pub fn kvm_maxphyaddr(kvm: &Kvm) -> Result<u8, VmError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("GET_SUPPORTED_CPUID"))?;
    Ok(cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| (e.eax & 0xff) as u8))
}

/// Checks that a host with `maxphyaddr` physical address bits can map guest memory at the
/// C-bit alias `2^cbit` (all of the 4 GiB below it, which is what [`Vm::add_alias`] maps).
pub fn check_alias_fits(maxphyaddr: u8, cbit: u8) -> Result<(), VmError> {
    let end = 1u128 << cbit.min(100);
    let fits = cbit < 64 && end + u128::from(layout::FIRMWARE_END) <= 1u128 << maxphyaddr.min(100);
    if fits {
        Ok(())
    } else {
        Err(VmError::AliasBeyondMaxPhysAddr { maxphyaddr, cbit })
    }
}

/// Opens the KVM device of `config` and checks that the host reaches the C-bit alias
/// `2^cbit` ([`check_alias_fits`]); an SEV launch whose backend needs the alias calls it
/// before guest memory is built, so that the error names both numbers instead of KVM's bare
/// `EINVAL` from SET_USER_MEMORY_REGION.
pub fn check_host_alias(config: &VmConfig, cbit: u8) -> Result<(), VmError> {
    let kvm = open_kvm(&config.kvm_path)?;
    check_alias_fits(kvm_maxphyaddr(&kvm)?, cbit)
}

/// Maps an error opening the KVM device to a clear [`VmError`].
fn open_error(path: &std::path::Path, e: kvm_ioctls::Error) -> VmError {
    match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => VmError::KvmNotFound(path.to_path_buf()),
        libc::EACCES | libc::EPERM => VmError::KvmPermission(path.to_path_buf()),
        _ => VmError::KvmOpen {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

impl Vm {
    /// Builds a VM without launch hooks.
    pub fn build(config: &VmConfig) -> Result<Vm, VmError> {
        Self::build_inner(config, None)
    }

    /// Builds a VM and calls `hooks.after_load` once images are placed.
    pub fn build_with_hooks(config: &VmConfig, hooks: Box<dyn LaunchHooks>) -> Result<Vm, VmError> {
        Self::build_inner(config, Some(hooks))
    }

    fn build_inner(config: &VmConfig, hooks: Option<Box<dyn LaunchHooks>>) -> Result<Vm, VmError> {
        memory::check_memory_size(config.memory)?;
        cpu::cbit_mask(config.page_table_cbit)?;
        let fw_size = match config.boot.firmware() {
            Some(p) => Some(boot::firmware_size(p)?),
            None => None,
        };
        if let BootSource::Bundled(name) = &config.boot {
            if guests::get(name).is_none() {
                return Err(BootError::UnknownGuest {
                    name: name.clone(),
                    known: guests::NAMES.join(", "),
                }
                .into());
            }
        }
        let kvm = open_kvm(&config.kvm_path)?;
        // KVM_CAP_MAX_VCPUS, not KVM_CAP_NR_VCPUS: the latter is only KVM's recommendation
        // (the host's online CPUs); more vCPUs than host CPUs work, only slower.
        let max = kvm
            .get_max_vcpus()
            .min(usize::from(boot::max_cpus(&config.boot)));
        if config.cpus == 0 || config.cpus as usize > max {
            return Err(VmError::BadCpus {
                cpus: config.cpus,
                max,
            });
        }
        let memory = memory::create_guest_memory(config.memory, fw_size)?;
        let mut hooks = hooks;
        let vm_fd = match hooks.as_mut() {
            Some(h) => h.create_vm(&kvm).map_err(|source| VmError::Hook {
                stage: "create_vm",
                source,
            })?,
            None => kvm.create_vm().map_err(kvm_err("CREATE_VM"))?,
        };
        let mut supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("GET_SUPPORTED_CPUID"))?;
        // Every VM has an in-kernel local APIC (full or split irqchip), so its TSC-deadline
        // mode is there whenever KVM has the capability.
        if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
            cpu::add_tsc_deadline(&mut supported_cpuid);
        }
        // COM1's IRQ 4, through the irqchip, where Linux or a firmware may use it.
        let serial_irq = if needs_full_irqchip(&config.boot) {
            Some(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Vcpu {
                cpu: 0,
                msg: format!("cannot create the COM1 interrupt eventfd: {e}"),
            })?)
        } else {
            None
        };
        let mut vm = Vm {
            threads: Vec::new(),
            vm_fd,
            vcpus: Vec::new(),
            kvm,
            aliases: Vec::new(),
            regs_fresh: false,
            boot_regs: Vec::new(),
            memory,
            config: config.clone(),
            plan: BootPlan {
                entry: Entry::ResetVector,
                measured: Vec::new(),
            },
            devices: Arc::new(Mutex::new(Devices::new(
                &config.serial,
                serial_irq.as_ref().map(clone_eventfd).transpose()?,
            )?)),
            serial_irq,
            virtio: None,
            hooks,
            vmx_host: is_intel(&supported_cpuid),
            supported_cpuid,
            next_slot: 0,
            resets: 0,
            started: false,
            started_vcpus: false,
            shared: Arc::new(Shared::default()),
        };
        vm.setup_kvm_vm()?;
        vm.launch()?;
        vm.start_virtio()?;
        Ok(vm)
    }

    /// Opens the virtio devices (after the launch, whose measured ranges an SEV guest's devices
    /// must not touch), starts their event loop and wires them to this VM fd.
    fn start_virtio(&mut self) -> Result<(), VmError> {
        let spec = crate::virtio::DeviceSpecs {
            disks: &self.config.disks,
            nets: &self.config.nets,
            vsock: self.config.vsock.as_ref(),
        };
        if spec.count() == 0 {
            return Ok(());
        }
        if !needs_full_irqchip(&self.config.boot) {
            return Err(VmError::Vcpu {
                cpu: 0,
                msg: "--disk/--net/--vsock need a Linux or firmware guest (the bundled guests have no virtio driver and no IOAPIC)".into(),
            });
        }
        let confidential = self.config.page_table_cbit.is_some();
        let private = if confidential {
            crate::virtio::private_ranges(&self.plan.measured)
        } else {
            sevm_virtio::access::PrivateRanges::none()
        };
        let v = crate::virtio::VirtioDevices::build(&spec, &self.memory, private, confidential)
            .map_err(|e| VmError::Vcpu {
                cpu: 0,
                msg: e.to_string(),
            })?;
        if let Some(v) = v {
            v.register(&self.vm_fd).map_err(|e| VmError::Vcpu {
                cpu: 0,
                msg: e.to_string(),
            })?;
            self.virtio = Some(Arc::new(v));
        }
        Ok(())
    }

    /// VM-wide KVM state on a fresh VM fd: TSS, irqchip, PIT, memory slots (and aliases),
    /// user-space MSRs. No vCPU exists yet.
    fn setup_kvm_vm(&mut self) -> Result<(), VmError> {
        self.vm_fd
            .set_tss_address(0xfffb_d000)
            .map_err(kvm_err("SET_TSS_ADDR"))?;
        self.create_irqchip()?;
        if let Some(v) = &self.virtio {
            v.register(&self.vm_fd).map_err(|e| VmError::Vcpu {
                cpu: 0,
                msg: e.to_string(),
            })?;
        }
        if let Some(e) = &self.serial_irq {
            self.vm_fd
                .register_irqfd(e, layout::COM1_IRQ)
                .map_err(kvm_err("IRQFD(COM1)"))?;
        }
        // The in-kernel 8254 PIT costs a kernel worker thread ("kvm-pit/<pid>") created here
        // and stopped when the VM closes; on a loaded host the two scheduling waits were about
        // 19 ms of a 45 ms `sevm run` (docs/PERFORMANCE.md section 3). The bundled guests
        // touch only COM1, the i8042 and the exit port, so they run without one; firmware and
        // Linux may program the PIT and keep it.
        if needs_pit(&self.config.boot) {
            self.vm_fd
                .create_pit2(kvm_pit_config::default())
                .map_err(kvm_err("CREATE_PIT2"))?;
        }
        self.next_slot = 0;
        self.register_slots(0)?;
        for base in self.aliases.clone() {
            self.register_slots(base)?;
        }
        if self.config.msr_handler.is_some() {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_X86_USER_SPACE_MSR,
                ..Default::default()
            };
            cap.args[0] = (KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER) as u64;
            self.vm_fd
                .enable_cap(&cap)
                .map_err(kvm_err("ENABLE_CAP(X86_USER_SPACE_MSR)"))?;
        }
        Ok(())
    }

    /// The in-kernel interrupt controller: the whole of it (local APIC, PIC and IOAPIC) for
    /// firmware and Linux, which program the PIC and IOAPIC; only the local APIC (KVM's split
    /// irqchip, `KVM_CAP_SPLIT_IRQCHIP`) for the bundled guests, which never touch the PIC
    /// (ports 0x20/0xa0) or the IOAPIC and get no device interrupts (the UART line is not
    /// wired). `hlt`, INIT/SIPI and the local APIC timer stay in the kernel either way.
    /// The full irqchip registers the PIC and IOAPIC on KVM's I/O buses, each an SRCU grace
    /// period on the VM; the next memory slot then waits one or more scheduler ticks in
    /// `KVM_SET_USER_MEMORY_REGION` (4-10 ms here: benches/results/startup.md,
    /// docs/PERFORMANCE.md, "Start-up"). Where the kernel lacks the split irqchip, the full
    /// one is created.
    fn create_irqchip(&mut self) -> Result<(), VmError> {
        if !needs_full_irqchip(&self.config.boot)
            && self.vm_fd.check_extension(kvm_ioctls::Cap::SplitIrqchip)
        {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_SPLIT_IRQCHIP,
                ..Default::default()
            };
            // The number of IOAPIC pins KVM reserves routes for (QEMU's and Firecracker's
            // 24); nothing is routed to them here.
            cap.args[0] = 24;
            return self
                .vm_fd
                .enable_cap(&cap)
                .map_err(kvm_err("ENABLE_CAP(SPLIT_IRQCHIP)"));
        }
        self.vm_fd
            .create_irq_chip()
            .map_err(kvm_err("CREATE_IRQCHIP"))
    }

    /// One launch on the current VM fd, in KVM's order: place the images (no KVM involved),
    /// `init` (before any vCPU; it sees the measured ranges, e.g. to size the memory KVM
    /// will pin), `after_load`, create the vCPUs (first launch on this VM fd) and load their
    /// boot registers, `after_vcpus`.
    fn launch(&mut self) -> Result<(), VmError> {
        self.place()?;
        let allowed = self.init_launch()?;
        self.call_hook("after_load")?;
        if self.vcpus.is_empty() {
            self.create_vcpus(allowed)?;
        }
        self.boot_regs.clear();
        for i in 0..self.vcpus.len() {
            let b = self.setup_vcpu(i)?;
            self.boot_regs.push(b);
        }
        self.started_vcpus = true;
        self.regs_fresh = true;
        self.call_hook("after_vcpus")
    }

    /// Runs the `init` hook; its token lets vCPUs be created on this VM fd.
    pub(crate) fn init_launch(&mut self) -> Result<VcpusAllowed, VmError> {
        self.call_hook("init")?;
        Ok(VcpusAllowed(()))
    }

    /// Creates `config.cpus` vCPUs; needs the token of [`Vm::init_launch`].
    fn create_vcpus(&mut self, _allowed: VcpusAllowed) -> Result<(), VmError> {
        for i in 0..self.config.cpus {
            let v = match self.hooks.as_mut() {
                Some(h) => {
                    h.create_vcpu(&self.vm_fd, i as u64)
                        .map_err(|source| VmError::Hook {
                            stage: "create_vcpu",
                            source,
                        })?
                }
                None => self
                    .vm_fd
                    .create_vcpu(i as u64)
                    .map_err(kvm_err("CREATE_VCPU"))?,
            };
            self.vcpus.push(Arc::new(Mutex::new(v)));
        }
        Ok(())
    }

    /// A relaunch: on a new KVM VM if the hooks need one (the old VM fd, its vCPUs and what
    /// KVM pinned for it are released first), else on the current one.
    fn relaunch(&mut self) -> Result<(), VmError> {
        let fresh = self.hooks.as_ref().is_some_and(|h| h.new_vm_per_launch());
        if fresh {
            // The vCPU threads belong to the old VM fd: they end (they are parked) before
            // its vCPUs close; the new vCPUs get new threads at the next run.
            self.end_vcpu_threads();
            self.vcpus.clear();
            let vm_fd = match self.hooks.as_mut() {
                Some(h) => h.create_vm(&self.kvm).map_err(|source| VmError::Hook {
                    stage: "create_vm",
                    source,
                })?,
                None => self.kvm.create_vm().map_err(kvm_err("CREATE_VM"))?,
            };
            let old = std::mem::replace(&mut self.vm_fd, vm_fd);
            tracing::debug!(old = old.as_raw_fd(), "relaunch on a new KVM VM");
            drop(old);
            // New vCPUs: CPUID is set again on their first setup.
            self.started_vcpus = false;
            self.setup_kvm_vm()?;
        }
        self.launch()
    }

    /// Registers every region of guest memory as a KVM slot at `base + region start`.
    fn register_slots(&mut self, base: u64) -> Result<(), VmError> {
        for r in self.memory.iter() {
            let host = self
                .memory
                .get_host_address(r.start_addr())
                .map_err(|e| VmError::Vcpu {
                    cpu: 0,
                    msg: format!("no host address for guest memory: {e}"),
                })?;
            let region = kvm_userspace_memory_region {
                slot: self.next_slot,
                flags: 0,
                guest_phys_addr: base + r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: host as u64,
            };
            if base == 0 {
                if let Some(h) = self.hooks.as_mut() {
                    // SAFETY: as below: `host` is the start of a live mapping of `r.len()`
                    // bytes owned by `self.memory`, which outlives the VM fd.
                    let done = unsafe {
                        h.set_memory_slot(
                            &self.vm_fd,
                            region.slot,
                            region.guest_phys_addr,
                            region.memory_size,
                            region.userspace_addr,
                        )
                    }
                    .map_err(|source| VmError::Hook {
                        stage: "set_memory_slot",
                        source,
                    })?;
                    if done {
                        self.next_slot += 1;
                        continue;
                    }
                }
            }
            // SAFETY: `host` is the start of a live mapping of `r.len()` bytes owned by
            // `self.memory`, which outlives the VM fd (both are fields of `Vm`, and the VM fd
            // is dropped first by field order).
            unsafe { self.vm_fd.set_user_memory_region(region) }
                .map_err(kvm_err("SET_USER_MEMORY_REGION"))?;
            self.next_slot += 1;
        }
        Ok(())
    }

    /// Maps all guest memory a second time at `base` (a power of two, e.g. `1 << cbit`), so a
    /// guest whose page tables carry the C-bit reaches the same RAM. Must precede [`Vm::run`].
    pub fn add_alias(&mut self, base: u64) -> Result<(), VmError> {
        if !base.is_power_of_two() || base < (1 << 32) {
            return Err(VmError::BadAlias {
                base,
                why: "must be a power of two at or above 4 GiB",
            });
        }
        if base
            .checked_add(layout::FIRMWARE_END)
            .is_none_or(|e| e > 1 << 52)
        {
            return Err(VmError::BadAlias {
                base,
                why: "alias would end above 2^52",
            });
        }
        if self.started {
            return Err(VmError::BadAlias {
                base,
                why: "the VM is already running",
            });
        }
        self.register_slots(base)?;
        // Registered again on a new KVM VM at a relaunch.
        self.aliases.push(base);
        Ok(())
    }

    fn place(&mut self) -> Result<(), VmError> {
        self.plan = boot::place(
            &self.memory,
            self.config.memory,
            &self.config.boot,
            self.config.page_table_cbit,
            self.config.cpus,
        )?;
        Ok(())
    }

    fn call_hook(&mut self, stage: &'static str) -> Result<(), VmError> {
        let Some(h) = self.hooks.as_mut() else {
            return Ok(());
        };
        let ctx = LaunchContext {
            vm_fd: &self.vm_fd,
            memory: &self.memory,
            measured: &self.plan.measured,
            config: &self.config,
            vcpu_regs: &self.boot_regs,
        };
        let r = match stage {
            "init" => h.init(&ctx),
            "after_load" => h.after_load(&ctx),
            "after_vcpus" => h.after_vcpus(&ctx),
            _ => h.before_run(&ctx),
        };
        // The launch phase may have changed (the QMP watcher reports SEV_LAUNCH_STATE).
        self.shared.bump();
        r.map_err(|source| VmError::Hook { stage, source })
    }

    /// Guest RAM (and the firmware region, if any).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The KVM VM fd.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm_fd
    }

    /// Ranges written by the VMM, in measurement order.
    pub fn measured_ranges(&self) -> &[MeasuredRange] {
        &self.plan.measured
    }

    /// How the guest is entered.
    pub fn entry(&self) -> Entry {
        self.plan.entry
    }

    /// Number of guest resets handled so far.
    pub fn reset_count(&self) -> u32 {
        self.resets
    }

    /// Feeds COM1's receive FIFO from `input` on a thread of its own (for `sevm run`, its
    /// stdin): each read is queued as the FIFO makes room (data ready in LSR, the receive
    /// interrupt if the guest enabled it). The thread ends at end of input or a read error;
    /// while it waits in `read` it holds no lock, and it does not keep the VM running.
    pub fn serial_input_from(&self, mut input: impl std::io::Read + Send + 'static) {
        let devices = Arc::downgrade(&self.devices);
        let spawned = std::thread::Builder::new()
            .name("serial-in".into())
            .spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    let n = match input.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "serial input stopped");
                            return;
                        }
                    };
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        let Some(d) = devices.upgrade() else { return };
                        let taken = lock(&d).serial_input(rest);
                        drop(d);
                        rest = &rest[taken..];
                        if taken == 0 {
                            // The FIFO is full: the guest has not read it yet.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the serial input thread");
        }
    }

    /// Number of unhandled port/MMIO accesses so far.
    pub fn unhandled_accesses(&self) -> u64 {
        self.devices
            .lock()
            .map(|d| d.unhandled_count())
            .unwrap_or(0)
    }

    fn setup_vcpu(&self, idx: usize) -> Result<cpu::BootRegs, VmError> {
        let v = lock(&self.vcpus[idx]);
        let err = |op| {
            move |source| {
                VmError::Cpu(CpuError::Kvm {
                    op,
                    cpu: idx,
                    source,
                })
            }
        };
        // KVM refuses to change CPUID once a vCPU has run, so it is set on the first start only
        // (and always before SET_SREGS: MAXPHYADDR decides whether a C-bit CR3 is valid).
        if !self.started_vcpus {
            let mut cpuid = self.supported_cpuid.clone();
            cpu::add_hypervisor_leaves(&mut cpuid)?;
            self.config.cpuid_overrides.apply(&mut cpuid, idx)?;
            v.set_cpuid2(&cpuid).map_err(err("SET_CPUID2"))?;
        }
        v.set_msrs(&cpu::boot_msrs()).map_err(err("SET_MSRS"))?;
        let sregs = v.get_sregs().map_err(err("GET_SREGS"))?;
        let b = cpu::boot_regs(self.plan.entry, idx, self.vcpus.len(), sregs);
        let mut sregs = b.sregs;
        if self.vmx_host && sregs.tr.type_ == 0x9 {
            // VM entry on VMX requires a busy TSS in TR (see `cpu::long_mode_sregs`).
            sregs.tr.type_ = 0xb;
        }
        v.set_sregs(&sregs).map_err(err("SET_SREGS"))?;
        v.set_regs(&b.regs).map_err(err("SET_REGS"))?;
        let mp_state = if b.runnable {
            KVM_MP_STATE_RUNNABLE
        } else {
            KVM_MP_STATE_UNINITIALIZED
        };
        v.set_mp_state(kvm_mp_state { mp_state })
            .map_err(err("SET_MP_STATE"))?;
        Ok(b)
    }

    /// A handle to pause, resume, reset or stop this VM from another thread (the monitor).
    pub fn control(&self) -> VmControl {
        VmControl {
            shared: self.shared.clone(),
        }
    }

    fn set_state(&self, s: RunState) {
        self.shared.set_state(s);
    }

    /// Waits while paused (every vCPU thread is parked: nothing runs). Returns the request
    /// that ended the pause (never `Pause`), or `None` at the deadline. The state stays
    /// [`RunState::Paused`]; the caller sets the next one.
    fn wait_paused(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<ControlRequest>, VmError> {
        self.set_state(RunState::Paused);
        let mut g = self.shared.lock();
        loop {
            while let Some(r) = g.requests.pop_front() {
                if r != ControlRequest::Pause {
                    return Ok(Some(r));
                }
            }
            g = match self.shared.wait_ctl(g, deadline) {
                Some(g) => g,
                None => return Ok(None),
            };
        }
    }

    /// Loads every vCPU's boot registers now (unless a relaunch just did) and publishes
    /// them as the snapshot: a VM reset while paused shows its boot state.
    fn load_boot_state(&mut self) -> Result<(), VmError> {
        if !self.regs_fresh {
            for i in 0..self.vcpus.len() {
                self.setup_vcpu(i)?;
            }
            self.started_vcpus = true;
            self.regs_fresh = true;
        }
        self.take_snapshots();
        Ok(())
    }

    /// Handles a guest or host reset. Returns `Some(status)` if the VM must stop.
    fn handle_reset(&mut self) -> Result<Option<ExitStatus>, VmError> {
        let r = self.handle_reset_inner();
        self.shared.bump();
        r
    }

    fn handle_reset_inner(&mut self) -> Result<Option<ExitStatus>, VmError> {
        self.resets += 1;
        tracing::info!(resets = self.resets, "reset");
        let action = match self.hooks.as_mut() {
            Some(h) => {
                let ctx = LaunchContext {
                    vm_fd: &self.vm_fd,
                    memory: &self.memory,
                    measured: &self.plan.measured,
                    config: &self.config,
                    vcpu_regs: &self.boot_regs,
                };
                h.on_reset(&ctx).map_err(|source| VmError::Hook {
                    stage: "on_reset",
                    source,
                })?
            }
            None => ResetAction::Default,
        };
        match (action, self.config.on_reset) {
            (ResetAction::Shutdown, _) | (ResetAction::Default, OnReset::Shutdown) => {
                return Ok(Some(ExitStatus::Reset))
            }
            (ResetAction::Relaunch, _) => {
                self.relaunch()?;
                self.call_hook("before_run")?;
            }
            _ => {}
        }
        Ok(None)
    }

    /// Runs the guest until it stops; see [`ExitStatus`]. With [`VmConfig::start_paused`] it
    /// first waits for [`VmControl::resume`] (the QEMU `-S` + `cont` flow), then calls the
    /// `before_run` hook.
    pub fn run(&mut self) -> Result<ExitStatus, VmError> {
        install_kick_handler()?;
        // A timeout too large to add to the clock (e.g. u64::MAX seconds) is no deadline.
        let deadline = self
            .config
            .timeout
            .and_then(|t| Instant::now().checked_add(t));
        let result = self.run_inner(deadline);
        self.set_state(RunState::Stopped);
        result
    }

    fn run_inner(&mut self, deadline: Option<Instant>) -> Result<ExitStatus, VmError> {
        if !self.started {
            if self.config.start_paused {
                match self.wait_paused(deadline)? {
                    None => return Ok(ExitStatus::Timeout),
                    Some(ControlRequest::Quit) => return Ok(ExitStatus::Quit),
                    Some(_) => self.set_state(RunState::Running),
                }
            }
            self.call_hook("before_run")?;
            self.started = true;
        }
        self.set_state(RunState::Running);
        // Every (re)launch leaves the vCPUs in their boot state (`regs_fresh`); a reboot
        // without relaunch loads it again here.
        let mut setup = true;
        loop {
            // A request that arrived while the last epoch was ending is served before the
            // vCPUs run again: a guest that resets every few ms ends each epoch with a vCPU
            // event before `run_epoch` gets to its own control check.
            let mut event = match self.poll_control() {
                Some(r) => Event::Control(r),
                None => {
                    if setup {
                        if !std::mem::take(&mut self.regs_fresh) {
                            for i in 0..self.vcpus.len() {
                                self.setup_vcpu(i)?;
                            }
                            self.started_vcpus = true;
                        }
                        setup = false;
                    }
                    self.run_epoch(deadline)?
                }
            };
            if let Event::Control(ControlRequest::Pause) = event {
                // A pause served before any epoch ran (a `stop` right after `cont`) finds no
                // snapshot of this run yet: publish the parked vCPUs' registers now, so a
                // register or memory read after `stop` always has one.
                self.take_snapshots();
                event = loop {
                    match self.wait_paused(deadline)? {
                        None => break Event::Stop(ExitStatus::Timeout),
                        // As QEMU: a reset while paused resets the machine and stays paused
                        // (the vCPU threads stay parked; `cont` starts from the boot state).
                        Some(ControlRequest::Reset) => {
                            if let Some(st) = self.handle_reset()? {
                                return Ok(st);
                            }
                            self.load_boot_state()?;
                            // The next run consumes `regs_fresh`.
                            setup = true;
                        }
                        Some(r) => {
                            self.set_state(RunState::Running);
                            break Event::Control(r);
                        }
                    }
                };
            }
            match event {
                Event::Io(IoAction::Exit(v)) => return Ok(ExitStatus::Exited(v)),
                Event::Io(IoAction::OutputFailed) => return Err(self.output_failure()),
                Event::Io(IoAction::Reset)
                | Event::SystemReset
                | Event::Control(ControlRequest::Reset) => {
                    if let Some(st) = self.handle_reset()? {
                        return Ok(st);
                    }
                    setup = true;
                }
                Event::Control(ControlRequest::Quit) => return Ok(ExitStatus::Quit),
                Event::Io(IoAction::Continue) | Event::Control(_) => {}
                Event::Stop(status) => return Ok(status),
                Event::Failed(msg, cpu) => return Err(VmError::Vcpu { cpu, msg }),
            }
        }
    }

    /// The device error behind [`IoAction::OutputFailed`].
    fn output_failure(&self) -> VmError {
        let e = self
            .devices
            .lock()
            .ok()
            .and_then(|mut d| d.take_output_error());
        e.map(VmError::Device).unwrap_or_else(|| VmError::Vcpu {
            cpu: 0,
            msg: "COM1 serial output failed".into(),
        })
    }

    /// A pending control request, without waiting (`Resume` while running is a no-op).
    fn poll_control(&mut self) -> Option<ControlRequest> {
        pop_request(&mut self.shared.lock())
    }

    /// Starts the vCPU threads of the current VM fd (once per VM fd), each parked until
    /// [`Vm::run_epoch`] releases it.
    fn ensure_vcpu_threads(&mut self) -> Result<(), VmError> {
        if !self.threads.is_empty() {
            return Ok(());
        }
        let start = {
            let mut g = self.shared.lock();
            g.exit = false;
            g.tids = vec![0; self.vcpus.len()];
            g.generation
        };
        for (idx, vcpu) in self.vcpus.iter().enumerate() {
            let kick = Arc::new(ImmediateExit::new(vcpu.clone()));
            let ctx = VcpuCtx {
                idx,
                shared: self.shared.clone(),
                devices: self.devices.clone(),
                virtio: self.virtio.clone(),
                msr: self.config.msr_handler.clone(),
                guest_requests: self
                    .config
                    .guest_requests
                    .clone()
                    .map(|s| (s, self.memory.clone())),
                kick: kick.clone(),
                vcpu: vcpu.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{idx}"))
                .spawn(move || vcpu_thread(ctx, start));
            match spawned {
                Ok(handle) => self.threads.push(VcpuThread { handle, kick }),
                Err(e) => {
                    self.end_vcpu_threads();
                    return Err(VmError::Vcpu {
                        cpu: idx,
                        msg: format!("cannot spawn thread: {e}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Ends the (parked) vCPU threads and joins them.
    fn end_vcpu_threads(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        {
            let mut g = self.shared.lock();
            g.exit = true;
            self.shared.vcpu_cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.handle.join();
        }
    }

    /// Runs all vCPUs until one reports an event, a control request arrives or the deadline
    /// passes; then kicks every vCPU out of KVM_RUN and waits until all are parked again.
    fn run_epoch(&mut self, deadline: Option<Instant>) -> Result<Event, VmError> {
        self.ensure_vcpu_threads()?;
        let n = self.threads.len();
        let shared = self.shared.clone();
        // The guard lives in this block only: `stop_vcpus` needs the lock.
        let event = {
            let mut g = shared.lock();
            // Events from the vCPUs of the last epoch that were not the one served are stale.
            g.events.clear();
            self.shared.stop.store(false, Ordering::SeqCst);
            g.generation += 1;
            g.active = n;
            self.shared.vcpu_cv.notify_all();
            loop {
                if let Some((_, e)) = g.events.pop_front() {
                    break e;
                }
                if let Some(r) = pop_request(&mut g) {
                    break Event::Control(r);
                }
                g = match shared.wait_ctl(g, deadline) {
                    Some(g) => g,
                    None => break Event::Stop(ExitStatus::Timeout),
                };
            }
        };
        self.stop_vcpus();
        self.take_snapshots();
        Ok(event)
    }

    /// Publishes every vCPU's registers for [`VmControl::cpu_snapshot`] (vCPUs parked).
    fn take_snapshots(&self) {
        let mut snaps = Vec::new();
        for v in &self.vcpus {
            let v = lock(v);
            if let (Ok(r), Ok(s)) = (v.get_regs(), v.get_sregs()) {
                snaps.push(CpuSnapshot {
                    rip: r.rip,
                    rsp: r.rsp,
                    cr0: s.cr0,
                    cr3: s.cr3,
                    cr4: s.cr4,
                    efer: s.efer,
                    cpl: s.cs.dpl,
                });
            }
        }
        *self
            .shared
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = snaps;
    }

    /// Kicks every vCPU out of the guest (`immediate_exit` set, then the kick signal) and
    /// waits until each has parked. One kick per thread suffices: a thread that has not
    /// entered KVM_RUN yet either sees `stop` or enters with `immediate_exit` set, which
    /// KVM returns from at once with EINTR.
    fn stop_vcpus(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in &self.threads {
            t.kick.set(1);
            let _ = t.handle.kill(kick_signal());
        }
        let mut g = self.shared.lock();
        while g.active > 0 {
            g = self
                .shared
                .ctl_cv
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.end_vcpu_threads();
    }
}

/// A request from another thread to a running VM (see [`VmControl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Stop the vCPUs, keeping their state.
    Pause,
    /// Continue after a pause (or start a VM built with `start_paused`).
    Resume,
    /// Reset the machine as if the guest had (hooks and [`OnReset`] apply).
    Reset,
    /// Stop the VM; `run` returns [`ExitStatus::Quit`].
    Quit,
}

/// Run state of a VM as seen by [`VmControl::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Built, not yet running (or waiting for `resume` with `start_paused`).
    Created = 0,
    /// vCPUs are running.
    Running = 1,
    /// Paused by a control request.
    Paused = 2,
    /// `run` has returned.
    Stopped = 3,
}

/// Registers of one vCPU, taken each time the vCPUs stop (pause, reset, exit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3 (with the C-bit if the guest uses one; mask it for [`crate::paging::translate`]).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// Current privilege level (CS.DPL).
    pub cpl: u8,
}

/// Thread-safe handle to a VM: pause, resume, reset, quit, run state, vCPU snapshots.
#[derive(Clone)]
pub struct VmControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmControl")
            .field("state", &self.state())
            .finish()
    }
}

impl VmControl {
    /// Queues a request and wakes the run loop; false if the VM is gone.
    pub fn request(&self, r: ControlRequest) -> bool {
        let mut g = self.shared.lock();
        if g.closed {
            return false;
        }
        g.requests.push_back(r);
        self.shared.ctl_cv.notify_all();
        true
    }
    /// Pauses the vCPUs.
    pub fn pause(&self) -> bool {
        self.request(ControlRequest::Pause)
    }
    /// Resumes (or starts a `start_paused` VM).
    pub fn resume(&self) -> bool {
        self.request(ControlRequest::Resume)
    }
    /// Resets the machine.
    pub fn reset(&self) -> bool {
        self.request(ControlRequest::Reset)
    }
    /// Stops the VM.
    pub fn quit(&self) -> bool {
        self.request(ControlRequest::Quit)
    }
    /// Registers of vCPU `cpu` as of the last time the vCPUs stopped (e.g. while paused);
    /// `None` before the first stop.
    pub fn cpu_snapshot(&self, cpu: usize) -> Option<CpuSnapshot> {
        self.shared.snapshots.lock().ok()?.get(cpu).copied()
    }
    /// Current run state.
    pub fn state(&self) -> RunState {
        self.shared.state()
    }
    /// Waits (without polling) until the run state is one of `want`, at most `timeout`.
    /// Returns the state reached, or `None` if it was not reached in time.
    pub fn wait_state(&self, want: &[RunState], timeout: Duration) -> Option<RunState> {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.shared.lock();
        loop {
            let s = self.shared.state();
            if want.contains(&s) {
                return Some(s);
            }
            g = self.shared.wait_ctl(g, deadline)?;
        }
    }
    /// The change counter (see [`VmControl::wait_change`]).
    pub fn changes(&self) -> u64 {
        self.shared.lock().changes
    }
    /// Waits (without polling) until the change counter differs from `seen` (a state
    /// change, a launch hook or reset done, or [`VmControl::wake`]), at most `timeout`;
    /// returns the counter.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.shared.lock();
        while g.changes == seen {
            g = match self.shared.wait_ctl(g, deadline) {
                Some(g) => g,
                None => return self.shared.lock().changes,
            };
        }
        g.changes
    }
    /// Bumps the change counter, waking every [`VmControl::wait_change`].
    pub fn wake(&self) {
        self.shared.bump();
    }
    /// Host thread ids (Linux tids) of the vCPU threads, by vCPU index; empty before the
    /// first run. The same threads serve every pause, resume and reset of one KVM VM.
    pub fn vcpu_thread_ids(&self) -> Vec<i32> {
        self.shared.lock().tids.clone()
    }
}

/// State shared by the run loop, the vCPU threads and every [`VmControl`].
#[derive(Default)]
struct Shared {
    sync: Mutex<SyncState>,
    /// Parked vCPU threads wait here for the next generation (or `exit`).
    vcpu_cv: Condvar,
    /// The run loop waits here for vCPU events, control requests and parked vCPUs;
    /// [`VmControl::wait_state`] waits here for state changes.
    ctl_cv: Condvar,
    /// The vCPUs must leave the guest (checked after every exit; set before the kicks).
    stop: AtomicBool,
    /// [`RunState`] as u8; changed with `sync` held so waiters see every change.
    state: AtomicU8,
    snapshots: Mutex<Vec<CpuSnapshot>>,
}

#[derive(Default)]
struct SyncState {
    requests: VecDeque<ControlRequest>,
    events: VecDeque<(usize, Event)>,
    /// Bumped each time the vCPUs are released; a thread runs once per generation.
    generation: u64,
    /// vCPU threads released for the current generation that have not parked again.
    active: usize,
    /// The vCPU threads must end (VM fd rebuilt, or the VM dropped).
    exit: bool,
    /// The VM is gone: requests are refused.
    closed: bool,
    /// Linux tids of the vCPU threads (0 until a thread has started).
    tids: Vec<i32>,
    /// Bumped at every state change, after every launch hook and reset, and by
    /// [`VmControl::wake`]: what [`VmControl::wait_change`] waits for.
    changes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> RunState {
        match self.state.load(Ordering::SeqCst) {
            1 => RunState::Running,
            2 => RunState::Paused,
            3 => RunState::Stopped,
            _ => RunState::Created,
        }
    }

    fn set_state(&self, s: RunState) {
        let mut g = self.lock();
        self.state.store(s as u8, Ordering::SeqCst);
        g.changes += 1;
        self.ctl_cv.notify_all();
    }

    fn bump(&self) {
        self.lock().changes += 1;
        self.ctl_cv.notify_all();
    }

    /// Waits on `ctl_cv` until notified (or the deadline): `None` once the deadline passed.
    fn wait_ctl<'a>(
        &self,
        g: MutexGuard<'a, SyncState>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, SyncState>> {
        match deadline {
            None => Some(self.ctl_cv.wait(g).unwrap_or_else(|p| p.into_inner())),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                Some(
                    self.ctl_cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0,
                )
            }
        }
    }
}

/// The next request that matters (`Resume` while running is a no-op).
fn pop_request(g: &mut SyncState) -> Option<ControlRequest> {
    while let Some(r) = g.requests.pop_front() {
        if r != ControlRequest::Resume {
            return Some(r);
        }
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a vCPU thread reports.
#[derive(Debug)]
enum Event {
    Control(ControlRequest),
    Io(IoAction),
    SystemReset,
    Stop(ExitStatus),
    Failed(String, usize),
}

/// The `immediate_exit` byte of one vCPU's `kvm_run` page, written by the run loop (to
/// kick) and by the vCPU thread (to clear) while KVM reads it at each KVM_RUN.
struct ImmediateExit {
    flag: NonNull<u8>,
    /// Keeps the vCPU fd, and so its `kvm_run` mapping, alive as long as `flag` is used.
    _vcpu: Arc<Mutex<VcpuFd>>,
}

// SAFETY: `flag` points into the vCPU's `kvm_run` mapping, which lives as long as the VcpuFd
// that `_vcpu` keeps alive; it is only ever accessed as an `AtomicU8` (see `set`), so any
// thread may use it.
unsafe impl Send for ImmediateExit {}
// SAFETY: as for Send: every access is an atomic store.
unsafe impl Sync for ImmediateExit {}

impl ImmediateExit {
    fn new(vcpu: Arc<Mutex<VcpuFd>>) -> Self {
        let flag = NonNull::from(&mut lock(&vcpu).get_kvm_run().immediate_exit);
        ImmediateExit { flag, _vcpu: vcpu }
    }

    fn set(&self, v: u8) {
        // SAFETY: `flag` is a valid, aligned u8 in the live `kvm_run` mapping (see the
        // struct); user space accesses it only through this atomic, the kernel reads it with
        // READ_ONCE at each KVM_RUN.
        unsafe { AtomicU8::from_ptr(self.flag.as_ptr()) }.store(v, Ordering::SeqCst);
    }
}

/// A vCPU thread of the current VM fd.
struct VcpuThread {
    handle: JoinHandle<()>,
    kick: Arc<ImmediateExit>,
}

struct VcpuCtx {
    idx: usize,
    shared: Arc<Shared>,
    devices: Arc<Mutex<Devices>>,
    virtio: Option<Arc<crate::virtio::VirtioDevices>>,
    msr: Option<Arc<dyn MsrHandler>>,
    /// The SNP guest-request service and the memory its doorbell reads.
    guest_requests: Option<(
        Arc<dyn crate::snp_request::GuestRequestService>,
        GuestMemoryMmap,
    )>,
    kick: Arc<ImmediateExit>,
    vcpu: Arc<Mutex<VcpuFd>>,
}

fn kick_signal() -> i32 {
    SIGRTMIN() + 1
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), VmError> {
    static ONCE: Once = Once::new();
    static FAILED: AtomicBool = AtomicBool::new(false);
    ONCE.call_once(|| {
        if register_signal_handler(kick_signal(), kick_handler).is_err() {
            FAILED.store(true, Ordering::SeqCst);
        }
    });
    if FAILED.load(Ordering::SeqCst) {
        return Err(VmError::Vcpu {
            cpu: 0,
            msg: "cannot install the vCPU kick signal handler".into(),
        });
    }
    Ok(())
}

/// A vCPU thread: parked on `vcpu_cv` until the run loop releases a new generation, then in
/// the guest until an event or a kick, then parked again; ends on `exit`.
fn vcpu_thread(ctx: VcpuCtx, start_generation: u64) {
    // SAFETY: gettid has no arguments and no failure mode.
    let tid = unsafe { libc::gettid() };
    let mut seen = start_generation;
    {
        let mut g = ctx.shared.lock();
        if let Some(t) = g.tids.get_mut(ctx.idx) {
            *t = tid;
        }
    }
    loop {
        {
            let mut g = ctx.shared.lock();
            while !g.exit && g.generation == seen {
                g = ctx
                    .shared
                    .vcpu_cv
                    .wait(g)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if g.exit {
                return;
            }
            seen = g.generation;
        }
        let ev = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut vcpu = lock(&ctx.vcpu);
            // Cleared before `stop` is read: a kick after this point is seen either way.
            ctx.kick.set(0);
            run_vcpu(&mut vcpu, &ctx)
        }))
        .unwrap_or_else(|_| Some(Event::Failed("vCPU thread panicked".into(), ctx.idx)));
        let mut g = ctx.shared.lock();
        if let Some(ev) = ev {
            g.events.push_back((ctx.idx, ev));
        }
        g.active = g.active.saturating_sub(1);
        ctx.shared.ctl_cv.notify_all();
    }
}

/// Runs the vCPU until it reports an event or `stop` is set.
fn run_vcpu(vcpu: &mut VcpuFd, ctx: &VcpuCtx) -> Option<Event> {
    let cpu = ctx.idx;
    while !ctx.shared.stop.load(Ordering::SeqCst) {
        let exit = vcpu.run();
        let ev = match exit {
            Ok(VcpuExit::IoOut(layout::SNP_DOORBELL_PORT, _)) => {
                if let Some((svc, mem)) = &ctx.guest_requests {
                    crate::snp_request::handle_doorbell(mem, Some(svc.as_ref()));
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let a = match ctx.devices.lock() {
                    Ok(mut d) => d.io_out(port, data),
                    Err(_) => IoAction::Continue,
                };
                (a != IoAction::Continue).then_some(Event::Io(a))
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if let Ok(mut d) = ctx.devices.lock() {
                    d.io_in(port, data);
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if ctx.virtio.as_ref().is_some_and(|v| v.mmio_read(addr, data)) {
                    continue;
                }
                if let Ok(d) = ctx.devices.lock() {
                    d.mmio(addr, Some(data));
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if ctx
                    .virtio
                    .as_ref()
                    .is_some_and(|v| v.mmio_write(addr, data))
                {
                    continue;
                }
                if let Ok(d) = ctx.devices.lock() {
                    d.mmio(addr, None);
                }
                None
            }
            Ok(VcpuExit::X86Rdmsr(e)) => {
                match ctx.msr.as_ref().and_then(|h| h.rdmsr(cpu, e.index)) {
                    Some(v) => {
                        *e.data = v;
                        *e.error = 0;
                    }
                    None => *e.error = 1,
                }
                None
            }
            Ok(VcpuExit::X86Wrmsr(e)) => {
                let ok = ctx
                    .msr
                    .as_ref()
                    .is_some_and(|h| h.wrmsr(cpu, e.index, e.data));
                *e.error = u8::from(!ok);
                None
            }
            Ok(VcpuExit::Hlt) => Some(Event::Stop(ExitStatus::Halted { cpu })),
            Ok(VcpuExit::Shutdown) => Some(Event::Stop(ExitStatus::TripleFault { cpu })),
            Ok(VcpuExit::FailEntry(reason, _)) => {
                Some(Event::Stop(ExitStatus::FailEntry { cpu, reason }))
            }
            Ok(VcpuExit::SystemEvent(t, _)) => Some(match t {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Event::SystemReset,
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Event::Stop(ExitStatus::Poweroff),
                other => Event::Failed(format!("unexpected system event {other}"), cpu),
            }),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member of the kvm_run
                // union is the one KVM filled in.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                tracing::error!(
                    cpu,
                    suberror,
                    rip,
                    "KVM internal error (emulation failure?)"
                );
                Some(Event::Stop(ExitStatus::InternalError {
                    cpu,
                    suberror,
                    rip,
                }))
            }
            Ok(VcpuExit::Intr) => None,
            Ok(other) => {
                tracing::warn!(cpu, exit = ?other, "unhandled vCPU exit");
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Event::Failed(format!("KVM_RUN failed: {e}"), cpu)),
        };
        if ev.is_some() {
            return ev;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pit_and_pic_ioapic_only_where_a_guest_may_program_them() {
        assert!(!needs_pit(&BootSource::Bundled("hello".into())));
        assert!(needs_pit(&BootSource::Firmware("fw.bin".into())));
        let linux = BootSource::Linux {
            kernel: "bzImage".into(),
            initrd: None,
            cmdline: String::new(),
        };
        assert!(needs_pit(&linux));
        assert!(!needs_full_irqchip(&BootSource::Bundled("hello".into())));
        assert!(needs_full_irqchip(&BootSource::Firmware("fw.bin".into())));
        assert!(needs_full_irqchip(&linux));
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("SKIP: no /dev/kvm to check the PIT on a built VM");
            return;
        }
        // KVM_GET_PIT2 fails on a VM without a PIT and succeeds on one with it.
        let vm = Vm::build(&VmConfig {
            boot: BootSource::Bundled("hello".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(vm.vm_fd.get_pit2().is_err());
        // KVM_GET_IRQCHIP (the PIC's state) fails with ENXIO on a split irqchip (local APIC
        // only) and succeeds on the full one.
        let mut pic = kvm_bindings::kvm_irqchip {
            chip_id: kvm_bindings::KVM_IRQCHIP_PIC_MASTER,
            ..Default::default()
        };
        let split = vm.vm_fd.check_extension(kvm_ioctls::Cap::SplitIrqchip);
        assert_eq!(vm.vm_fd.get_irqchip(&mut pic).is_err(), split);
        // The local APIC is in the kernel either way.
        assert!(vm.vcpus[0].lock().unwrap().get_lapic().is_ok());
        let d = tempfile::tempdir().unwrap();
        let fw = d.path().join("fw.bin");
        std::fs::write(&fw, [0xf4u8; 4096]).unwrap();
        let vm = Vm::build(&VmConfig {
            boot: BootSource::Firmware(fw),
            ..Default::default()
        })
        .unwrap();
        assert!(vm.vm_fd.get_pit2().is_ok());
        assert!(vm.vm_fd.get_irqchip(&mut pic).is_ok());
        // COM1's eventfd is KVM's irqfd for GSI 4: KVM refuses to take it a second time.
        let e = vm.serial_irq.as_ref().expect("COM1 interrupt eventfd");
        let again = vm.vm_fd.register_irqfd(e, layout::COM1_IRQ).unwrap_err();
        assert_eq!(again.errno(), libc::EBUSY, "{again}");
    }

    #[test]
    fn cpu_limit_is_kvms_maximum_and_one_stack_each_for_bundled_guests() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let e = Vm::build(&VmConfig {
            cpus: layout::MAX_CPUS + 1,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(e, VmError::BadCpus { max, .. } if max <= usize::from(layout::MAX_CPUS)),
            "{e}"
        );
        let kvm = Kvm::new().unwrap();
        let max = kvm.get_max_vcpus().min(usize::from(layout::MAX_LINUX_CPUS));
        let d = tempfile::tempdir().unwrap();
        let fw = d.path().join("fw.bin");
        std::fs::write(&fw, [0xf4u8; 4096]).unwrap();
        let cfg = |cpus: usize| VmConfig {
            cpus: cpus as u8,
            boot: BootSource::Firmware(fw.clone()),
            ..Default::default()
        };
        // More vCPUs than the host's recommended count (its online CPUs) are allowed.
        let n = (kvm.get_nr_vcpus() + 1).min(max);
        let vm = Vm::build(&cfg(n)).unwrap();
        assert_eq!(vm.vcpus.len(), n);
        drop(vm);
        if max < usize::from(layout::MAX_LINUX_CPUS) {
            let e = Vm::build(&cfg(max + 1)).unwrap_err();
            assert!(
                matches!(e, VmError::BadCpus { max: m, .. } if m == max),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_kvm_device_is_reported() {
        let cfg = VmConfig {
            kvm_path: "/nonexistent/kvm".into(),
            ..Default::default()
        };
        let e = Vm::build(&cfg).unwrap_err();
        assert!(matches!(e, VmError::KvmNotFound(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/kvm"));
    }

    #[test]
    fn unopenable_kvm_device_is_reported() {
        // A directory cannot be opened read-write: not "not found", a clear open error.
        let d = tempfile::tempdir().unwrap();
        let cfg = VmConfig {
            kvm_path: d.path().into(),
            ..Default::default()
        };
        let e = Vm::build(&cfg).unwrap_err();
        assert!(
            matches!(e, VmError::KvmOpen { .. } | VmError::KvmPermission(_)),
            "{e}"
        );
        assert!(e.to_string().contains(&d.path().display().to_string()));
    }

    /// Also as root (CI runs as root): the open runs on a thread whose filesystem uid is
    /// `nobody`, which drops CAP_DAC_OVERRIDE for that thread only (capabilities(7)), so mode
    /// 000 denies it as it would an ordinary user. No skip.
    #[test]
    fn permission_denied_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = d.path().join("kvm");
        std::fs::write(&p, b"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        let cfg = VmConfig {
            kvm_path: p.clone(),
            ..Default::default()
        };
        let e = std::thread::spawn(move || {
            // SAFETY: setfsuid takes a plain integer and only changes this thread's
            // filesystem uid (it is not propagated to other threads); the thread ends after
            // the open below.
            unsafe { libc::setfsuid(65534) };
            assert!(
                std::fs::File::open(&p).is_err(),
                "mode 000 must deny a thread with fsuid 65534"
            );
            Vm::build(&cfg).unwrap_err()
        })
        .join()
        .unwrap();
        assert!(matches!(e, VmError::KvmPermission(_)), "{e}");
        assert!(e.to_string().contains("permission denied"));
    }

    #[test]
    fn open_errors_map_by_errno() {
        let p = std::path::Path::new("/dev/kvm");
        let e = open_error(p, kvm_ioctls::Error::new(libc::EACCES));
        assert!(matches!(e, VmError::KvmPermission(_)));
        assert!(e
            .to_string()
            .contains("permission denied opening KVM device /dev/kvm"));
        assert!(matches!(
            open_error(p, kvm_ioctls::Error::new(libc::EPERM)),
            VmError::KvmPermission(_)
        ));
        assert!(matches!(
            open_error(p, kvm_ioctls::Error::new(libc::ENOENT)),
            VmError::KvmNotFound(_)
        ));
        assert!(matches!(
            open_error(p, kvm_ioctls::Error::new(libc::EISDIR)),
            VmError::KvmOpen { .. }
        ));
    }

    #[test]
    fn config_errors_come_before_kvm() {
        let e = Vm::build(&VmConfig {
            memory: 1 << 20,
            kvm_path: "/nonexistent/kvm".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(e, VmError::Memory(MemoryError::TooSmall { .. })),
            "{e}"
        );
        let e = Vm::build(&VmConfig {
            boot: BootSource::Bundled("nope".into()),
            kvm_path: "/nonexistent/kvm".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("unknown bundled guest"), "{e}");
        let e = Vm::build(&VmConfig {
            boot: BootSource::Firmware("/nonexistent/fw.bin".into()),
            kvm_path: "/nonexistent/kvm".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/fw.bin"), "{e}");
        let e = Vm::build(&VmConfig {
            page_table_cbit: Some(60),
            kvm_path: "/nonexistent/kvm".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, VmError::Cpu(CpuError::BadCbit(60))), "{e}");
    }

    #[test]
    fn intel_is_recognised_from_leaf_0() {
        let leaf0 = |ebx, edx, ecx| {
            CpuId::from_entries(&[kvm_bindings::kvm_cpuid_entry2 {
                function: 0,
                ebx,
                edx,
                ecx,
                ..Default::default()
            }])
            .unwrap()
        };
        // "Genu" "ineI" "ntel" / "Auth" "enti" "cAMD".
        assert!(is_intel(&leaf0(0x756e_6547, 0x4965_6e69, 0x6c65_746e)));
        assert!(!is_intel(&leaf0(0x6874_7541, 0x6974_6e65, 0x444d_4163)));
    }

    #[test]
    fn alias_needs_a_physical_address_bit_above_the_cbit() {
        check_alias_fits(48, 47).unwrap();
        check_alias_fits(52, 51).unwrap();
        for (maxphys, cbit) in [(40, 47), (47, 47), (43, 47), (48, 51)] {
            let e = check_alias_fits(maxphys, cbit).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("is {maxphys} bits"))
                    && msg.contains(&format!("alias 2^{cbit}"))
                    && msg.contains(&format!("at least {} bits", cbit + 1)),
                "{msg}"
            );
        }
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        // This host: KVM's own value decides; a C-bit at or above it is refused up front.
        let kvm = Kvm::new().unwrap();
        let m = kvm_maxphyaddr(&kvm).unwrap();
        assert!((32..=52).contains(&m), "{m}");
        let e = check_host_alias(&VmConfig::default(), m).unwrap_err();
        assert!(
            matches!(e, VmError::AliasBeyondMaxPhysAddr { maxphyaddr, cbit } if maxphyaddr == m && cbit == m)
        );
        check_host_alias(&VmConfig::default(), m - 1).unwrap();
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitStatus::Exited(0).exit_code(), 0);
        assert_eq!(ExitStatus::Exited(42).exit_code(), 42);
        assert_eq!(ExitStatus::Reset.exit_code(), 0);
        assert_eq!(ExitStatus::Timeout.exit_code(), 124);
        assert_eq!(ExitStatus::TripleFault { cpu: 0 }.exit_code(), 125);
    }
}
