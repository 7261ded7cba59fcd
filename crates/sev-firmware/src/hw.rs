//! The Linux hardware backend: `/dev/sev` (`SEV_ISSUE_CMD`) for the platform and
//! `KVM_MEMORY_ENCRYPT_OP` on a VM fd for one guest. Takes a raw VM fd so this crate
//! does not depend on the VMM. `unsafe` lives only at the ioctl boundary.

use crate::error::{FwError, Result};
use crate::{
    AttestationReport, CertExport, GuestPolicy, GuestStatus, LaunchOwner, PacketHeader,
    PlatformState, PlatformStatus, SevCert, SevGuest, SevPlatform, Vmsa, VolatileSlice,
};
use kvm_bindings as kb;
use sev_proto::status::Status;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod kvm_state;
#[cfg(any(test, feature = "loopback"))]
pub mod loopback;
#[cfg(test)]
mod loopback_tests;
pub mod snp;
#[cfg(test)]
mod snp_loopback_tests;

/// Default SEV device.
pub const SEV_DEVICE: &str = "/dev/sev";
/// `_IOWR('S', 0, struct sev_issue_cmd)`.
pub const SEV_ISSUE_CMD: u64 = 0xC010_5300;
/// `_IOWR(KVMIO, 0xba, unsigned long)`.
pub const KVM_MEMORY_ENCRYPT_OP: u64 = 0xC008_AEBA;
/// `_IOR(KVMIO, 0xbb, struct kvm_enc_region)`.
pub const KVM_MEMORY_ENCRYPT_REG_REGION: u64 = 0x8010_AEBB;
/// `_IOR(KVMIO, 0xbc, struct kvm_enc_region)`.
pub const KVM_MEMORY_ENCRYPT_UNREG_REGION: u64 = 0x8010_AEBC;
/// `_IO(KVMIO, 0x03)`.
pub const KVM_CHECK_EXTENSION: u64 = 0xAE03;
/// `_IO(KVMIO, 0x41)`.
pub const KVM_CREATE_VCPU: u64 = 0xAE41;
/// `_IO(KVMIO, 0x78)`: EBUSY once the VM has vCPUs (`kvm->created_vcpus`), else sets the
/// boot vCPU id.
pub const KVM_SET_BOOT_CPU_ID: u64 = 0xAE78;
/// KVM_CAP_VM_TYPES.
pub const KVM_CAP_VM_TYPES: u32 = kb::KVM_CAP_VM_TYPES;
/// VM type for SEV.
pub const KVM_X86_SEV_VM: u32 = kb::KVM_X86_SEV_VM;
/// VM type for SEV-ES.
pub const KVM_X86_SEV_ES_VM: u32 = kb::KVM_X86_SEV_ES_VM;

/// `/dev/sev` command ids (linux/psp-sev.h).
#[allow(missing_docs)]
pub mod sev_cmd {
    pub const FACTORY_RESET: u32 = 0;
    pub const PLATFORM_STATUS: u32 = 1;
    pub const PEK_GEN: u32 = 2;
    pub const PEK_CSR: u32 = 3;
    pub const PDH_GEN: u32 = 4;
    pub const PDH_CERT_EXPORT: u32 = 5;
    pub const PEK_CERT_IMPORT: u32 = 6;
    pub const GET_ID2: u32 = 8;
    pub const SNP_PLATFORM_STATUS: u32 = 9;
    pub const SNP_COMMIT: u32 = 10;
    pub const SNP_SET_CONFIG: u32 = 11;
    pub const SNP_VLEK_LOAD: u32 = 12;
}

/// `struct sev_user_data_snp_config` (64 bytes): REPORTED_TCB, the mask flags, reserved.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct SevUserDataSnpConfig {
    /// REPORTED_TCB (0: follow the committed TCB).
    pub reported_tcb: u64,
    /// Bit 0 MASK_CHIP_ID, bit 1 MASK_CHIP_KEY.
    pub flags: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 52],
}

/// `struct sev_user_data_snp_commit` / `sev_data_snp_commit`: `{ u32 len }`.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct SevUserDataSnpCommit {
    /// Must be 4.
    pub len: u32,
}

/// `struct sev_user_data_snp_vlek_load` (16 bytes).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct SevUserDataSnpVlekLoad {
    /// Must be 16.
    pub len: u32,
    /// Must be 0.
    pub vlek_wrapped_version: u8,
    /// Reserved.
    pub rsvd: [u8; 3],
    /// User address of the 0x1B0-byte wrapped hash stick.
    pub vlek_wrapped_address: u64,
}

/// Size of the wrapped VLEK hash stick SNP_VLEK_LOAD takes.
pub const SNP_WRAPPED_VLEK_SIZE: usize = 0x1B0;

/// `struct sev_issue_cmd` (packed, 16 bytes).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevIssueCmd {
    /// Command id.
    pub cmd: u32,
    /// User address of the command's data.
    pub data: u64,
    /// Firmware status out.
    pub error: u32,
}

/// `struct sev_user_data_status` (packed, 12 bytes).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevUserDataStatus {
    /// API major.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// Platform state.
    pub state: u8,
    /// Flags (OWNER 0x1, CONFIG_ES 0x100).
    pub flags: u32,
    /// Build.
    pub build: u8,
    /// Guests.
    pub guest_count: u32,
}

/// `struct sev_user_data_pek_csr` / `get_id2` (packed, 12 bytes).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevUserDataAddrLen {
    /// User address.
    pub address: u64,
    /// Length (in/out).
    pub length: u32,
}

/// `struct sev_user_data_pdh_cert_export` / `pek_cert_import` (packed, 24 bytes).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevUserDataTwoBufs {
    /// First buffer address.
    pub addr1: u64,
    /// First buffer length.
    pub len1: u32,
    /// Second buffer address.
    pub addr2: u64,
    /// Second buffer length.
    pub len2: u32,
}

/// RLIMIT_MEMLOCK as `sev_pin_memory` applies it: KVM refuses to pin more than `limit` bytes
/// for one VM (ENOMEM) unless the process has CAP_IPC_LOCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memlock {
    /// The soft limit in bytes; `None` = unlimited.
    pub limit: Option<u64>,
    /// The process has CAP_IPC_LOCK (the limit does not apply).
    pub cap_ipc_lock: bool,
}

impl Memlock {
    /// This process's limit (`getrlimit(RLIMIT_MEMLOCK)`) and capability (CapEff in
    /// /proc/self/status). An unreadable limit counts as unlimited: the check is advisory,
    /// KVM's own refusal still stands.
    pub fn of_process() -> Memlock {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `struct rlimit` to the valid pointer it is given.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
        let limit = (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur);
        let cap_ipc_lock = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| {
                let l = t.lines().find(|l| l.starts_with("CapEff:"))?;
                u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 14) != 0);
        Memlock {
            limit,
            cap_ipc_lock,
        }
    }

    /// Whether KVM would pin `bytes` for one VM (counted in whole pages).
    pub fn allows(&self, bytes: u64) -> bool {
        match self.limit {
            _ if self.cap_ipc_lock => true,
            None => true,
            Some(l) => bytes.div_ceil(4096) <= l / 4096,
        }
    }
}

/// The one path by which this backend reaches the kernel: every ioctl of [`HwPlatform`],
/// [`HwGuest`] and [`supported_vm_types`] goes through an `IoctlPort`. The real port is
/// [`SysIoctl`]; tests substitute a model of the kernel side (the `loopback` module, with
/// the `loopback` feature).
pub trait IoctlPort: Send + Sync {
    /// Issue `request` on `fd` with argument `arg`; `Ok` carries the non-negative return
    /// value, `Err` the errno.
    ///
    /// # Safety
    /// `arg` must be what `request` expects on `fd`: an integer, or a pointer to a live,
    /// correctly laid out struct whose embedded user addresses point to live buffers of the
    /// stated lengths (writable where the kernel writes) for the duration of the call.
    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32>;

    /// `vm_fd` is a VM the caller just created with KVM_CREATE_VM. The kernel knows its VMs;
    /// a model of it that does not see KVM_CREATE_VM (issued by kvm-ioctls) is told here.
    fn vm_created(&self, vm_fd: RawFd) {
        let _ = vm_fd;
    }

    /// RLIMIT_MEMLOCK as the kernel will apply it to this process's VMs.
    fn memlock(&self) -> Memlock {
        Memlock::of_process()
    }

    /// KVM_CREATE_VM of type `vm_type` on the `/dev/kvm` fd `kvm_fd`: the new VM fd. The
    /// kernel: the ioctl itself. A model of a kernel whose real KVM lacks the type (the
    /// loopback) creates a VM of a type the real KVM has and plays the rest of the type's part.
    fn create_vm(&self, kvm_fd: RawFd, vm_type: u32) -> io::Result<RawFd> {
        let arg = std::ptr::without_provenance_mut(vm_type as usize);
        // SAFETY: KVM_CREATE_VM takes an integer argument (the VM type) and touches no memory.
        unsafe { self.ioctl(kvm_fd, snp::KVM_CREATE_VM, arg) }
    }

    /// An SEV-SNP guest's guest request (the GHCB's SNP_GUEST_REQUEST VMGEXIT) on the VM
    /// `vm_fd`, as KVM forwards it to the firmware (`snp_handle_guest_req`: SNP_GUEST_REQUEST
    /// with the VM's guest context): `req` is the request page, the firmware's response page
    /// is written to `resp`; `Ok` carries the firmware status (0 = success), which KVM hands
    /// to the guest, `Err` a failure KVM would report to user space.
    ///
    /// On Linux KVM answers this VMGEXIT itself and user space never sees it: the real
    /// kernel's port has no such call (EOPNOTSUPP). A model that runs the guest on a KVM
    /// without SNP (the loopback) is handed the request by the VMM's stand-in exit here.
    fn snp_guest_request(
        &self,
        vm_fd: RawFd,
        req: &[u8; 4096],
        resp: &mut [u8; 4096],
    ) -> io::Result<u32> {
        let _ = (vm_fd, req, resp);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// The real kernel: `libc::ioctl`.
pub struct SysIoctl;

impl IoctlPort for SysIoctl {
    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32> {
        // SAFETY: the caller upholds this method's contract: `arg` is the argument `request`
        // expects on `fd`, with every address it contains valid for the call.
        let r = unsafe { libc::ioctl(fd, request as _, arg) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

/// A buffer length as the u32 the uAPI structs carry.
fn len32(len: usize, cmd: &'static str) -> Result<u32> {
    u32::try_from(len).map_err(|_| match cmd {
        "LAUNCH_UPDATE_DATA" => FwError::InvalidArgument("LAUNCH_UPDATE_DATA region over 4 GiB"),
        "LAUNCH_SECRET" => FwError::InvalidArgument("LAUNCH_SECRET buffer over 4 GiB"),
        _ => FwError::InvalidArgument("DBG buffer over 4 GiB"),
    })
}

fn status_err(cmd: &'static str, error: u32, os: io::Error) -> FwError {
    match Status::from_u32(error) {
        Some(s) if s != Status::Success => FwError::st(cmd, s),
        _ => FwError::Ioctl {
            what: cmd,
            source: os,
        },
    }
}

/// The SEV platform through `/dev/sev`.
pub struct HwPlatform {
    dev: File,
    path: PathBuf,
    port: Arc<dyn IoctlPort>,
}

impl HwPlatform {
    /// Open `/dev/sev`.
    pub fn open() -> Result<HwPlatform> {
        Self::open_path(Path::new(SEV_DEVICE))
    }

    /// Open the SEV device at `path` (injectable for tests).
    pub fn open_path(path: &Path) -> Result<HwPlatform> {
        Self::open_with_port(path, Arc::new(SysIoctl))
    }

    /// Open the SEV device at `path`, issuing its ioctls through `port`.
    pub fn open_with_port(path: &Path, port: Arc<dyn IoctlPort>) -> Result<HwPlatform> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| FwError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(HwPlatform {
            dev,
            path: path.to_path_buf(),
            port,
        })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn issue<T>(&self, cmd: u32, name: &'static str, data: Option<&mut T>) -> Result<()> {
        let mut c = SevIssueCmd {
            cmd,
            data: data.map(|d| d as *mut T as u64).unwrap_or(0),
            error: 0,
        };
        // SAFETY: `c` is a valid sev_issue_cmd; `data` (if any) points to a live, correctly
        // sized command struct whose embedded addresses point to live buffers of the stated
        // lengths for the duration of the call.
        let r = unsafe {
            self.port.ioctl(
                self.dev.as_raw_fd(),
                SEV_ISSUE_CMD,
                (&mut c as *mut SevIssueCmd).cast(),
            )
        };
        r.map(|_| ()).map_err(|os| status_err(name, c.error, os))
    }
}

/// The SNP platform commands of `/dev/sev` (Linux 6.11+; virtee `snphost` issues the same).
/// The SNP platform commands over `/dev/sev`. SNP_INIT and SNP_SHUTDOWN are the kernel's (the
/// ccp driver issues them; `/dev/sev` has no ioctl for them): refused here.
impl crate::snp::SnpPlatform for HwPlatform {
    fn snp_init(&self) -> Result<()> {
        Err(FwError::InvalidArgument(
            "SNP_INIT: the kernel's ccp driver initialises SNP; /dev/sev has no ioctl for it",
        ))
    }

    fn snp_shutdown(&self) -> Result<()> {
        Err(FwError::InvalidArgument(
            "SNP_SHUTDOWN: the kernel's ccp driver shuts SNP down; /dev/sev has no ioctl for it",
        ))
    }

    fn snp_platform_status(&self) -> Result<crate::snp::SnpPlatformStatus> {
        HwPlatform::snp_platform_status(self)
    }

    fn snp_config(&self, c: &crate::snp::soft::SnpConfig) -> Result<()> {
        self.snp_set_config(c.reported_tcb, c.flags)
    }

    fn snp_commit(&self) -> Result<()> {
        HwPlatform::snp_commit(self)
    }

    fn snp_vlek_load(&self, wrapped: &[u8]) -> Result<()> {
        HwPlatform::snp_vlek_load(self, wrapped)
    }
}

impl HwPlatform {
    /// SNP_PLATFORM_STATUS: the firmware's 32-byte status, decoded.
    pub fn snp_platform_status(&self) -> Result<crate::snp::SnpPlatformStatus> {
        let mut b = [0u8; crate::snp::PLATFORM_STATUS_SIZE];
        self.issue(
            sev_cmd::SNP_PLATFORM_STATUS,
            "SNP_PLATFORM_STATUS",
            Some(&mut b),
        )?;
        crate::snp::SnpPlatformStatus::from_bytes(&b).map_err(|_| {
            FwError::InvalidArgument("SNP_PLATFORM_STATUS: the kernel returned a malformed status")
        })
    }

    /// SNP_COMMIT.
    pub fn snp_commit(&self) -> Result<()> {
        let mut c = SevUserDataSnpCommit { len: 4 };
        self.issue(sev_cmd::SNP_COMMIT, "SNP_COMMIT", Some(&mut c))
    }

    /// SNP_SET_CONFIG (the firmware's SNP_CONFIG).
    pub fn snp_set_config(&self, reported_tcb: u64, flags: u32) -> Result<()> {
        let mut c = SevUserDataSnpConfig {
            reported_tcb,
            flags,
            rsvd: [0; 52],
        };
        self.issue(sev_cmd::SNP_SET_CONFIG, "SNP_SET_CONFIG", Some(&mut c))
    }

    /// SNP_VLEK_LOAD of a wrapped VLEK hash stick as AMD's KDS hands it out.
    pub fn snp_vlek_load(&self, wrapped: &[u8]) -> Result<()> {
        if wrapped.len() != SNP_WRAPPED_VLEK_SIZE {
            return Err(FwError::InvalidArgument(
                "SNP_VLEK_LOAD: the wrapped VLEK hash stick must be 0x1B0 bytes",
            ));
        }
        let mut blob = wrapped.to_vec();
        let mut c = SevUserDataSnpVlekLoad {
            len: 16,
            vlek_wrapped_version: 0,
            rsvd: [0; 3],
            vlek_wrapped_address: blob.as_mut_ptr() as u64,
        };
        let r = self.issue(sev_cmd::SNP_VLEK_LOAD, "SNP_VLEK_LOAD", Some(&mut c));
        drop(blob);
        r
    }
}

impl SevPlatform for HwPlatform {
    fn platform_status(&self) -> Result<PlatformStatus> {
        let mut s = SevUserDataStatus::default();
        self.issue(sev_cmd::PLATFORM_STATUS, "PLATFORM_STATUS", Some(&mut s))?;
        let flags = s.flags;
        Ok(PlatformStatus {
            api_major: s.api_major,
            api_minor: s.api_minor,
            state: match s.state {
                0 => PlatformState::Uninit,
                1 => PlatformState::Init,
                _ => PlatformState::Working,
            },
            owner_external: flags & 1 != 0,
            config_es: flags & 0x100 != 0,
            build: s.build,
            guest_count: s.guest_count,
        })
    }

    fn pek_gen(&self) -> Result<()> {
        self.issue::<u8>(sev_cmd::PEK_GEN, "PEK_GEN", None)
    }

    fn pdh_gen(&self) -> Result<()> {
        self.issue::<u8>(sev_cmd::PDH_GEN, "PDH_GEN", None)
    }

    fn pek_csr(&self) -> Result<SevCert> {
        let mut buf = vec![0u8; SevCert::LEN];
        let mut d = SevUserDataAddrLen {
            address: buf.as_mut_ptr() as u64,
            length: buf.len() as u32,
        };
        self.issue(sev_cmd::PEK_CSR, "PEK_CSR", Some(&mut d))?;
        buf.truncate(d.length as usize);
        SevCert::parse(&buf).map_err(|e| FwError::BadReply {
            cmd: "PEK_CSR",
            reason: e.to_string(),
        })
    }

    fn pek_cert_import(&self, pek: &SevCert, oca: &SevCert) -> Result<()> {
        let (pek, oca) = (pek.encode(), oca.encode());
        let mut d = SevUserDataTwoBufs {
            addr1: pek.as_ptr() as u64,
            len1: pek.len() as u32,
            addr2: oca.as_ptr() as u64,
            len2: oca.len() as u32,
        };
        self.issue(sev_cmd::PEK_CERT_IMPORT, "PEK_CERT_IMPORT", Some(&mut d))
    }

    fn pdh_cert_export(&self) -> Result<CertExport> {
        let mut pdh = vec![0u8; SevCert::LEN];
        let mut chain = vec![0u8; 3 * SevCert::LEN];
        let mut d = SevUserDataTwoBufs {
            addr1: pdh.as_mut_ptr() as u64,
            len1: pdh.len() as u32,
            addr2: chain.as_mut_ptr() as u64,
            len2: chain.len() as u32,
        };
        self.issue(sev_cmd::PDH_CERT_EXPORT, "PDH_CERT_EXPORT", Some(&mut d))?;
        // The driver writes back the lengths the firmware used.
        pdh.truncate(d.len1 as usize);
        chain.truncate(d.len2 as usize);
        CertExport::from_buffers(&pdh, &chain)
    }

    fn get_id(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64];
        let mut d = SevUserDataAddrLen {
            address: buf.as_mut_ptr() as u64,
            length: 64,
        };
        self.issue(sev_cmd::GET_ID2, "GET_ID", Some(&mut d))?;
        buf.truncate(d.length as usize);
        Ok(buf)
    }

    fn factory_reset(&self) -> Result<()> {
        self.issue::<u8>(sev_cmd::FACTORY_RESET, "FACTORY_RESET", None)
    }

    fn cbit_pos(&self) -> Result<u8> {
        host_cbit_pos().ok_or(FwError::InvalidArgument("CPUID 0x8000001F not available"))
    }
}

/// C-bit position from CPUID 0x8000001F EBX[5:0], if the leaf exists.
pub fn host_cbit_pos() -> Option<u8> {
    #[cfg(target_arch = "x86_64")]
    // `__cpuid` is an unsafe fn in older compilers (the MSRV, 1.89, among them) and a safe
    // one in newer ones: the block keeps both building (`unused_unsafe` allowed).
    #[allow(unused_unsafe)]
    // SAFETY: every x86_64 CPU has CPUID, and reading leaves 0x8000_0000 and (if the maximum
    // allows) 0x8000_001F has no other precondition.
    unsafe {
        let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        if max < 0x8000_001F {
            return None;
        }
        let r = std::arch::x86_64::__cpuid(0x8000_001F);
        Some((r.ebx & 0x3F) as u8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The VM types KVM supports (bitmask of `1 << type`), from KVM_CHECK_EXTENSION
/// (KVM_CAP_VM_TYPES) on the `/dev/kvm` fd. 0 if the capability is absent.
pub fn supported_vm_types(kvm_fd: RawFd) -> u64 {
    vm_types_through(&SysIoctl, kvm_fd)
}

fn vm_types_through(port: &dyn IoctlPort, kvm_fd: RawFd) -> u64 {
    let cap = std::ptr::without_provenance_mut(KVM_CAP_VM_TYPES as usize);
    // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and touches no memory.
    let r = unsafe { port.ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap) };
    r.map(|v| v as u64).unwrap_or(0)
}

/// The VM type to create for an SEV (or SEV-ES) guest, if KVM offers it via VM types;
/// `None` means: create a default VM and use legacy KVM_SEV_INIT / ES_INIT.
pub fn sev_vm_type(types: u64, es: bool) -> Option<u32> {
    let t = if es {
        KVM_X86_SEV_ES_VM
    } else {
        KVM_X86_SEV_VM
    };
    (types & (1 << t) != 0).then_some(t)
}

/// One VM's SEV context through KVM_MEMORY_ENCRYPT_OP.
pub struct HwGuest {
    vm_fd: RawFd,
    sev: File,
    vm_type: u32,
    handle: u32,
    /// KVM_SEV_LAUNCH_UPDATE_VMSA already issued for this launch (KVM does every vCPU).
    vmsa_done: bool,
    /// vCPUs created through [`SevGuest::create_vcpu`].
    vcpus: usize,
    port: Arc<dyn IoctlPort>,
}

impl HwGuest {
    /// Wrap a VM fd (created with `vm_type`: 0 for default/legacy, 2 SEV, 3 SEV-ES),
    /// opening the SEV device at `sev_path` (KVM needs its fd for every command).
    pub fn new(vm_fd: RawFd, vm_type: u32, sev_path: &Path) -> Result<HwGuest> {
        Self::with_port(vm_fd, vm_type, sev_path, Arc::new(SysIoctl))
    }

    /// As [`new`](Self::new), issuing the ioctls through `port`.
    pub fn with_port(
        vm_fd: RawFd,
        vm_type: u32,
        sev_path: &Path,
        port: Arc<dyn IoctlPort>,
    ) -> Result<HwGuest> {
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(sev_path)
            .map_err(|source| FwError::Io {
                path: sev_path.to_path_buf(),
                source,
            })?;
        Ok(HwGuest {
            vm_fd,
            sev,
            vm_type,
            handle: 0,
            vmsa_done: false,
            vcpus: 0,
            port,
        })
    }

    fn op<T>(&self, id: u32, name: &'static str, data: Option<&mut T>) -> Result<()> {
        let data = data.map(|d| d as *mut T as u64).unwrap_or(0);
        // SAFETY: `data` is 0 or points to the live command struct KVM expects for `id`, whose
        // user addresses point to live buffers of the stated lengths (for DBG_DECRYPT/ENCRYPT
        // the guest side is a `VolatileSlice`'s range, mapped for the slice's lifetime and held
        // by its pointer guard across this call; only the kernel touches it, so a running
        // guest writing it is no Rust-level race).
        unsafe { memory_encrypt_op(&*self.port, self.vm_fd, &self.sev, id, data, name) }
    }
}

/// KVM_MEMORY_ENCRYPT_OP of command `id` on `vm_fd` (struct kvm_sev_cmd with `sev`'s fd), the
/// command struct at user address `data` (0: none); a refusal becomes the firmware status or
/// errno, named `name`.
///
/// # Safety
/// `data` is 0 or the address of a live command struct of the type KVM expects for `id`, and
/// every user address inside it points to a live buffer of the stated length for the duration
/// of the call.
pub(crate) unsafe fn memory_encrypt_op(
    port: &dyn IoctlPort,
    vm_fd: RawFd,
    sev: &File,
    id: u32,
    data: u64,
    name: &'static str,
) -> Result<()> {
    let mut c = kb::kvm_sev_cmd {
        id,
        pad0: 0,
        data,
        error: 0,
        sev_fd: sev.as_raw_fd() as u32,
    };
    // SAFETY: `c` is a valid kvm_sev_cmd that lives across the call; what its `data` points to
    // is the caller's contract above.
    let r = unsafe {
        port.ioctl(
            vm_fd,
            KVM_MEMORY_ENCRYPT_OP,
            (&mut c as *mut kb::kvm_sev_cmd).cast(),
        )
    };
    r.map(|_| ()).map_err(|os| status_err(name, c.error, os))
}

impl SevGuest for HwGuest {
    fn init(&mut self, es: bool) -> Result<()> {
        if self.vm_type == KVM_X86_SEV_VM || self.vm_type == KVM_X86_SEV_ES_VM {
            // INIT2 takes SEV vs SEV-ES from the VM type, not from the caller.
            if es != (self.vm_type == KVM_X86_SEV_ES_VM) {
                return Err(FwError::InvalidArgument(
                    "INIT: SEV-ES requested on an SEV VM type, or SEV on an SEV-ES VM type",
                ));
            }
            let mut i = kb::kvm_sev_init::default();
            self.op(kb::sev_cmd_id_KVM_SEV_INIT2, "KVM_SEV_INIT2", Some(&mut i))
        } else if es {
            self.op::<u8>(kb::sev_cmd_id_KVM_SEV_ES_INIT, "KVM_SEV_ES_INIT", None)
        } else {
            self.op::<u8>(kb::sev_cmd_id_KVM_SEV_INIT, "KVM_SEV_INIT", None)
        }
    }

    fn launch_start(
        &mut self,
        policy: GuestPolicy,
        owner: Option<&LaunchOwner>,
        share_handle: u32,
    ) -> Result<u32> {
        let mut s = kb::kvm_sev_launch_start {
            handle: share_handle,
            policy: policy.bits(),
            ..Default::default()
        };
        // KVM copies the blobs from these buffers; they live until the ioctl returns.
        let godh = owner.map(|o| o.godh.encode());
        let session = owner.map(|o| o.session.to_bytes());
        if let Some(g) = &godh {
            s.dh_uaddr = g.as_ptr() as u64;
            s.dh_len = g.len() as u32;
        }
        if let Some(x) = &session {
            s.session_uaddr = x.as_ptr() as u64;
            s.session_len = x.len() as u32;
        }
        self.op(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_START,
            "LAUNCH_START",
            Some(&mut s),
        )?;
        self.handle = s.handle;
        self.vmsa_done = false;
        Ok(s.handle)
    }

    fn launch_update_data(&mut self, _gpa: u64, mem: &mut [u8]) -> Result<()> {
        let mut d = kb::kvm_sev_launch_update_data {
            uaddr: mem.as_mut_ptr() as u64,
            len: len32(mem.len(), "LAUNCH_UPDATE_DATA")?,
            pad0: 0,
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_DATA,
            "LAUNCH_UPDATE_DATA",
            Some(&mut d),
        )
    }

    fn launch_update_vmsas(&mut self, vmsas: &[Vmsa]) -> Result<()> {
        // KVM_SEV_LAUNCH_UPDATE_VMSA encrypts (and the firmware measures) *every* vCPU's
        // VMSA, which KVM builds from the vCPU's registers (`sev_es_sync_vmsa`): the bytes
        // the VMM predicts are not passed, only their number is checked against the vCPUs.
        if vmsas.is_empty() {
            return Err(FwError::InvalidArgument(
                "LAUNCH_UPDATE_VMSA with no VMSA (an SEV-ES guest has at least one vCPU)",
            ));
        }
        if self.vcpus > 0 && vmsas.len() != self.vcpus {
            return Err(FwError::InvalidArgument(
                "LAUNCH_UPDATE_VMSA: the VMSAs given are not one per vCPU of the VM (KVM \
                 measures every vCPU it has)",
            ));
        }
        if self.vmsa_done {
            return Err(FwError::InvalidArgument(
                "LAUNCH_UPDATE_VMSA issued twice in one launch (KVM does every vCPU at once)",
            ));
        }
        self.op::<u8>(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_VMSA,
            "LAUNCH_UPDATE_VMSA",
            None,
        )?;
        self.vmsa_done = true;
        Ok(())
    }

    fn launch_measure(&mut self) -> Result<[u8; 48]> {
        let mut out = [0u8; 48];
        let mut d = kb::kvm_sev_launch_measure {
            uaddr: out.as_mut_ptr() as u64,
            len: 48,
            pad0: 0,
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE,
            "LAUNCH_MEASURE",
            Some(&mut d),
        )?;
        Ok(out)
    }

    fn launch_secret(
        &mut self,
        hdr: &PacketHeader,
        ct: &[u8],
        _gpa: u64,
        dest: &mut [u8],
    ) -> Result<()> {
        if dest.len() != ct.len() {
            return Err(FwError::InvalidArgument(
                "LAUNCH_SECRET destination length differs from ciphertext length",
            ));
        }
        let ct_len = len32(ct.len(), "LAUNCH_SECRET")?;
        let hdr = hdr.to_bytes();
        let mut d = kb::kvm_sev_launch_secret {
            hdr_uaddr: hdr.as_ptr() as u64,
            hdr_len: PacketHeader::LEN as u32,
            guest_uaddr: dest.as_mut_ptr() as u64,
            guest_len: ct_len,
            trans_uaddr: ct.as_ptr() as u64,
            trans_len: ct_len,
            ..Default::default()
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_LAUNCH_SECRET,
            "LAUNCH_SECRET",
            Some(&mut d),
        )
    }

    fn launch_finish(&mut self) -> Result<()> {
        self.op::<u8>(kb::sev_cmd_id_KVM_SEV_LAUNCH_FINISH, "LAUNCH_FINISH", None)
    }

    fn guest_status(&mut self) -> Result<GuestStatus> {
        let mut d = kb::kvm_sev_guest_status {
            handle: self.handle,
            ..Default::default()
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_GUEST_STATUS,
            "GUEST_STATUS",
            Some(&mut d),
        )?;
        let state = match d.state {
            0 => GuestState::Uninit,
            1 => GuestState::LUpdate,
            2 => GuestState::LSecret,
            3 => GuestState::Running,
            4 => GuestState::SUpdate,
            5 => GuestState::RUpdate,
            _ => GuestState::Sent,
        };
        Ok(GuestStatus {
            policy: d.policy,
            asid: 0,
            state,
        })
    }

    fn dbg_decrypt(&mut self, _gpa: u64, mem: VolatileSlice<'_>, out: &mut [u8]) -> Result<()> {
        if mem.len() != out.len() {
            return Err(FwError::InvalidArgument(
                "DBG_DECRYPT buffers differ in length",
            ));
        }
        // The PSP must read the guest's own pages, so KVM gets their address; Rust never
        // dereferences it (the guest may be running). The guard keeps the mapping for the call.
        let src = mem.ptr_guard();
        let mut d = kb::kvm_sev_dbg {
            src_uaddr: src.as_ptr() as u64,
            dst_uaddr: out.as_mut_ptr() as u64,
            len: len32(mem.len(), "DBG_DECRYPT")?,
            pad0: 0,
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_DBG_DECRYPT,
            "DBG_DECRYPT",
            Some(&mut d),
        )
    }

    fn dbg_encrypt(&mut self, _gpa: u64, data: &[u8], mem: VolatileSlice<'_>) -> Result<()> {
        if mem.len() != data.len() {
            return Err(FwError::InvalidArgument(
                "DBG_ENCRYPT buffers differ in length",
            ));
        }
        // As in dbg_decrypt: the kernel writes the guest's pages through this address.
        let dst = mem.ptr_guard_mut();
        let mut d = kb::kvm_sev_dbg {
            src_uaddr: data.as_ptr() as u64,
            dst_uaddr: dst.as_ptr() as u64,
            len: len32(mem.len(), "DBG_ENCRYPT")?,
            pad0: 0,
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_DBG_ENCRYPT,
            "DBG_ENCRYPT",
            Some(&mut d),
        )
    }

    fn attestation_report(&mut self, mnonce: [u8; 16]) -> Result<AttestationReport> {
        let mut out = vec![0u8; AttestationReport::LEN];
        let mut d = kb::kvm_sev_attestation_report {
            mnonce,
            uaddr: out.as_mut_ptr() as u64,
            len: out.len() as u32,
            pad0: 0,
        };
        self.op(
            kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT,
            "ATTESTATION",
            Some(&mut d),
        )?;
        out.truncate(d.len as usize);
        AttestationReport::from_bytes(&out).map_err(|e| FwError::BadReply {
            cmd: "ATTESTATION",
            reason: e.to_string(),
        })
    }

    fn register_region(&mut self, _gpa: u64, mem: &mut [u8]) -> Result<()> {
        let mut r = kb::kvm_enc_region {
            addr: mem.as_mut_ptr() as u64,
            size: mem.len() as u64,
        };
        // SAFETY: `r` describes a live user mapping owned by the caller; KVM pins it.
        let rc = unsafe {
            self.port.ioctl(
                self.vm_fd,
                KVM_MEMORY_ENCRYPT_REG_REGION,
                (&mut r as *mut kb::kvm_enc_region).cast(),
            )
        };
        rc.map(|_| ()).map_err(|source| FwError::Ioctl {
            what: "KVM_MEMORY_ENCRYPT_REG_REGION",
            source,
        })
    }

    fn host_view(&self, _gpa: u64, mem: VolatileSlice<'_>) -> Result<Vec<u8>> {
        // On real hardware the host mapping of private memory already reads as ciphertext;
        // snapshot it with volatile reads.
        let mut out = vec![0u8; mem.len()];
        mem.copy_to(&mut out);
        Ok(out)
    }

    fn decommission(&mut self) -> Result<()> {
        // KVM deactivates and decommissions when the VM fd is closed (a relaunch on the hw
        // backend closes it: KVM offers no other way, and inits SEV once per VM).
        self.handle = 0;
        Ok(())
    }

    fn create_vcpu(&mut self, id: u64) -> Result<Option<std::os::fd::OwnedFd>> {
        let arg = std::ptr::without_provenance_mut(id as usize);
        // SAFETY: KVM_CREATE_VCPU takes an integer argument and touches no memory.
        let fd =
            unsafe { self.port.ioctl(self.vm_fd, KVM_CREATE_VCPU, arg) }.map_err(|source| {
                FwError::Ioctl {
                    what: "KVM_CREATE_VCPU",
                    source,
                }
            })?;
        self.vcpus += 1;
        // SAFETY: KVM_CREATE_VCPU returned a new fd that nothing else owns.
        Ok(Some(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }
}

use crate::GuestState;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn struct_sizes_and_ioctl_numbers_match_the_uapi() {
        assert_eq!(size_of::<SevIssueCmd>(), 16);
        assert_eq!(size_of::<SevUserDataStatus>(), 12);
        assert_eq!(size_of::<SevUserDataTwoBufs>(), 24);
        assert_eq!(size_of::<SevUserDataAddrLen>(), 12);
        assert_eq!(offset_of!(SevUserDataStatus, flags), 3);
        assert_eq!(offset_of!(SevUserDataStatus, build), 7);
        assert_eq!(offset_of!(SevUserDataStatus, guest_count), 8);
        assert_eq!(offset_of!(SevUserDataTwoBufs, addr2), 12);
        assert_eq!(size_of::<kb::kvm_sev_cmd>(), 24);
        assert_eq!(offset_of!(kb::kvm_sev_cmd, error), 16);
        assert_eq!(offset_of!(kb::kvm_sev_cmd, sev_fd), 20);
        assert_eq!(size_of::<kb::kvm_sev_init>(), 48);
        assert_eq!(size_of::<kb::kvm_sev_launch_start>(), 40);
        assert_eq!(size_of::<kb::kvm_sev_launch_update_data>(), 16);
        assert_eq!(size_of::<kb::kvm_sev_launch_secret>(), 48);
        assert_eq!(size_of::<kb::kvm_sev_launch_measure>(), 16);
        assert_eq!(size_of::<kb::kvm_sev_guest_status>(), 12);
        assert_eq!(size_of::<kb::kvm_sev_dbg>(), 24);
        assert_eq!(size_of::<kb::kvm_sev_attestation_report>(), 32);
        assert_eq!(offset_of!(kb::kvm_sev_attestation_report, uaddr), 16);
        assert_eq!(size_of::<kb::kvm_enc_region>(), 16);
        // ioctl numbers: _IOC(dir, type, nr, size) = dir<<30 | size<<16 | type<<8 | nr.
        let ioc = |dir: u64, ty: u64, nr: u64, size: u64| dir << 30 | size << 16 | ty << 8 | nr;
        assert_eq!(SEV_ISSUE_CMD, ioc(3, b'S' as u64, 0, 16));
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, ioc(3, 0xAE, 0xBA, 8));
        assert_eq!(KVM_MEMORY_ENCRYPT_REG_REGION, ioc(2, 0xAE, 0xBB, 16));
        assert_eq!(SEV_ISSUE_CMD, 0xC0105300);
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, 0xC008AEBA);
        assert_eq!(kb::sev_cmd_id_KVM_SEV_INIT2, 22);
        assert_eq!(kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT, 20);
        assert_eq!(KVM_CAP_VM_TYPES, 235);
        assert_eq!((KVM_X86_SEV_VM, KVM_X86_SEV_ES_VM), (2, 3));
    }

    #[test]
    fn vm_type_choice() {
        assert_eq!(sev_vm_type(0b1101, false), Some(2));
        assert_eq!(sev_vm_type(0b1101, true), Some(3));
        assert_eq!(sev_vm_type(0b0001, true), None);
    }

    #[test]
    fn missing_device_names_the_path() {
        let p = Path::new("/nonexistent-dir/sev");
        let e = HwPlatform::open_path(p).err().expect("must fail");
        assert!(e.to_string().contains("/nonexistent-dir/sev"), "{e}");
        let e = HwGuest::new(-1, 0, p).err().expect("must fail");
        assert!(e.to_string().contains("/nonexistent-dir/sev"), "{e}");
        if !Path::new(SEV_DEVICE).exists() {
            let e = HwPlatform::open().err().expect("no /dev/sev here");
            assert!(e.to_string().contains("/dev/sev"), "{e}");
        }
    }
}
