//! The VM: configuration, building (KVM VM, memory slots, irqchip, vCPUs, devices, images),
//! the hooks the SEV layer plugs into, and the run loop (one thread per vCPU).
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
    KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_UNINITIALIZED, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_UNKNOWN,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
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
    /// Stop the VM after this long ([`ExitStatus::Timeout`]).
    pub timeout: Option<Duration>,
    /// Wait for [`VmControl::resume`] before `before_run` and the first vCPU run (QEMU `-S`).
    pub start_paused: bool,
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
            timeout: None,
            start_paused: false,
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
    vm_fd: VmFd,
    vcpus: Vec<VcpuFd>,
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
    hooks: Option<Box<dyn LaunchHooks>>,
    supported_cpuid: CpuId,
    next_slot: u32,
    resets: u32,
    started: bool,
    started_vcpus: bool,
    control_tx: mpsc::Sender<ControlRequest>,
    control_rx: mpsc::Receiver<ControlRequest>,
    state: Arc<AtomicU8>,
    snapshots: Arc<Mutex<Vec<CpuSnapshot>>>,
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
        let max = kvm.get_nr_vcpus().min(layout::MAX_CPUS as usize);
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
        let (control_tx, control_rx) = mpsc::channel();
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("GET_SUPPORTED_CPUID"))?;
        let mut vm = Vm {
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
            devices: Arc::new(Mutex::new(Devices::new(&config.serial)?)),
            hooks,
            supported_cpuid,
            next_slot: 0,
            resets: 0,
            started: false,
            started_vcpus: false,
            control_tx,
            control_rx,
            state: Arc::new(AtomicU8::new(RunState::Created as u8)),
            snapshots: Arc::new(Mutex::new(Vec::new())),
        };
        vm.setup_kvm_vm()?;
        vm.launch()?;
        Ok(vm)
    }

    /// VM-wide KVM state on a fresh VM fd: TSS, irqchip, PIT, memory slots (and aliases),
    /// user-space MSRs. No vCPU exists yet.
    fn setup_kvm_vm(&mut self) -> Result<(), VmError> {
        self.vm_fd
            .set_tss_address(0xfffb_d000)
            .map_err(kvm_err("SET_TSS_ADDR"))?;
        self.vm_fd
            .create_irq_chip()
            .map_err(kvm_err("CREATE_IRQCHIP"))?;
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
            self.vcpus.push(v);
        }
        Ok(())
    }

    /// A relaunch: on a new KVM VM if the hooks need one (the old VM fd, its vCPUs and what
    /// KVM pinned for it are released first), else on the current one.
    fn relaunch(&mut self) -> Result<(), VmError> {
        let fresh = self.hooks.as_ref().is_some_and(|h| h.new_vm_per_launch());
        if fresh {
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

    /// Number of unhandled port/MMIO accesses so far.
    pub fn unhandled_accesses(&self) -> u64 {
        self.devices
            .lock()
            .map(|d| d.unhandled_count())
            .unwrap_or(0)
    }

    fn setup_vcpu(&self, idx: usize) -> Result<cpu::BootRegs, VmError> {
        let v = &self.vcpus[idx];
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
            self.config.cpuid_overrides.apply(&mut cpuid, idx)?;
            v.set_cpuid2(&cpuid).map_err(err("SET_CPUID2"))?;
        }
        v.set_msrs(&cpu::boot_msrs()).map_err(err("SET_MSRS"))?;
        let sregs = v.get_sregs().map_err(err("GET_SREGS"))?;
        let b = cpu::boot_regs(self.plan.entry, idx, self.vcpus.len(), sregs);
        v.set_sregs(&b.sregs).map_err(err("SET_SREGS"))?;
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
            tx: self.control_tx.clone(),
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    fn set_state(&self, s: RunState) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    /// Waits while paused. Returns the request that ended the pause (never `Pause`).
    fn wait_paused(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<ControlRequest>, VmError> {
        self.set_state(RunState::Paused);
        loop {
            let r = match deadline {
                Some(d) => match self
                    .control_rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                {
                    Ok(r) => r,
                    Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                    Err(mpsc::RecvTimeoutError::Disconnected) => ControlRequest::Resume,
                },
                // The Vm holds a sender itself, so this cannot disconnect.
                None => self.control_rx.recv().unwrap_or(ControlRequest::Resume),
            };
            if r != ControlRequest::Pause {
                self.set_state(RunState::Running);
                return Ok(Some(r));
            }
        }
    }

    /// Handles a guest or host reset. Returns `Some(status)` if the VM must stop.
    fn handle_reset(&mut self) -> Result<Option<ExitStatus>, VmError> {
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
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
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
                    Some(_) => {}
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
                event = match self.wait_paused(deadline)? {
                    None => Event::Stop(ExitStatus::Timeout),
                    Some(r) => Event::Control(r),
                };
            }
            match event {
                Event::Io(IoAction::Exit(v)) => return Ok(ExitStatus::Exited(v)),
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

    /// A pending control request, without waiting (`Resume` while running is a no-op).
    fn poll_control(&mut self) -> Option<ControlRequest> {
        loop {
            match self.control_rx.try_recv() {
                Ok(ControlRequest::Resume) => continue,
                Ok(r) => return Some(r),
                Err(_) => return None,
            }
        }
    }

    /// Runs all vCPUs until one reports an event; stops the others and takes them back.
    fn run_epoch(&mut self, deadline: Option<Instant>) -> Result<Event, VmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(usize, Event)>();
        let mut handles: Vec<JoinHandle<VcpuFd>> = Vec::new();
        for (idx, vcpu) in self.vcpus.drain(..).enumerate() {
            let ctx = VcpuCtx {
                idx,
                stop: stop.clone(),
                devices: self.devices.clone(),
                msr: self.config.msr_handler.clone(),
                tx: tx.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("vcpu{idx}"))
                .spawn(move || vcpu_loop(vcpu, ctx))
                .map_err(|e| VmError::Vcpu {
                    cpu: idx,
                    msg: format!("cannot spawn thread: {e}"),
                })?;
            handles.push(h);
        }
        drop(tx);
        // Wait for a vCPU event, a control request or the deadline.
        let event = loop {
            let mut wait = Duration::from_millis(20);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Event::Stop(ExitStatus::Timeout);
                }
                wait = wait.min(left);
            }
            match rx.recv_timeout(wait) {
                Ok((_, e)) => break e,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Event::Failed("all vCPU threads ended".into(), 0)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(r) = self.poll_control() {
                break Event::Control(r);
            }
        };
        stop.store(true, Ordering::SeqCst);
        // Kick until every thread is out of KVM_RUN (a kick can race with entering it).
        loop {
            let mut all = true;
            for h in &handles {
                if !h.is_finished() {
                    all = false;
                    let _ = h.kill(kick_signal());
                }
            }
            if all {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut snaps = Vec::new();
        for (idx, h) in handles.into_iter().enumerate() {
            let v = h.join().map_err(|_| VmError::Vcpu {
                cpu: idx,
                msg: "vCPU thread panicked".into(),
            })?;
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
            self.vcpus.push(v);
        }
        if let Ok(mut g) = self.snapshots.lock() {
            *g = snaps;
        }
        Ok(event)
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
#[derive(Debug, Clone)]
pub struct VmControl {
    tx: mpsc::Sender<ControlRequest>,
    state: Arc<AtomicU8>,
    snapshots: Arc<Mutex<Vec<CpuSnapshot>>>,
}

impl VmControl {
    /// Sends a request; false if the VM is gone.
    pub fn request(&self, r: ControlRequest) -> bool {
        self.tx.send(r).is_ok()
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
        self.snapshots.lock().ok()?.get(cpu).copied()
    }
    /// Current run state.
    pub fn state(&self) -> RunState {
        match self.state.load(Ordering::SeqCst) {
            1 => RunState::Running,
            2 => RunState::Paused,
            3 => RunState::Stopped,
            _ => RunState::Created,
        }
    }
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

struct VcpuCtx {
    idx: usize,
    stop: Arc<AtomicBool>,
    devices: Arc<Mutex<Devices>>,
    msr: Option<Arc<dyn MsrHandler>>,
    tx: mpsc::Sender<(usize, Event)>,
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

fn vcpu_loop(mut vcpu: VcpuFd, ctx: VcpuCtx) -> VcpuFd {
    let send = |e: Event| {
        let _ = ctx.tx.send((ctx.idx, e));
    };
    let cpu = ctx.idx;
    while !ctx.stop.load(Ordering::SeqCst) {
        let exit = vcpu.run();
        let ev = match exit {
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
                if let Ok(d) = ctx.devices.lock() {
                    d.mmio(addr, Some(data));
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
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
        if let Some(ev) = ev {
            send(ev);
            break;
        }
    }
    vcpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pit_only_where_a_guest_may_program_it() {
        assert!(!needs_pit(&BootSource::Bundled("hello".into())));
        assert!(needs_pit(&BootSource::Firmware("fw.bin".into())));
        assert!(needs_pit(&BootSource::Linux {
            kernel: "bzImage".into(),
            initrd: None,
            cmdline: String::new(),
        }));
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
        let d = tempfile::tempdir().unwrap();
        let fw = d.path().join("fw.bin");
        std::fs::write(&fw, [0xf4u8; 4096]).unwrap();
        let vm = Vm::build(&VmConfig {
            boot: BootSource::Firmware(fw),
            ..Default::default()
        })
        .unwrap();
        assert!(vm.vm_fd.get_pit2().is_ok());
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

    #[test]
    fn permission_denied_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kvm");
        std::fs::write(&p, b"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::File::open(&p).is_ok() {
            eprintln!("SKIP: running as root, mode 000 does not deny access");
            return;
        }
        let cfg = VmConfig {
            kvm_path: p.clone(),
            ..Default::default()
        };
        let e = Vm::build(&cfg).unwrap_err();
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
    fn exit_codes() {
        assert_eq!(ExitStatus::Exited(0).exit_code(), 0);
        assert_eq!(ExitStatus::Exited(42).exit_code(), 42);
        assert_eq!(ExitStatus::Reset.exit_code(), 0);
        assert_eq!(ExitStatus::Timeout.exit_code(), 124);
        assert_eq!(ExitStatus::TripleFault { cpu: 0 }.exit_code(), 125);
    }
}
