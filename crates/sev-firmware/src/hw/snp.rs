//! KVM's SEV-SNP launch interface (Linux 6.11+), on the [`IoctlPort`] like the rest of the hw
//! backend: a VM of type `KVM_X86_SNP_VM`, `KVM_SEV_INIT2` before any vCPU, guest RAM backed
//! by guest_memfd (`KVM_CREATE_GUEST_MEMFD`, `KVM_SET_USER_MEMORY_REGION2`) and made private
//! with `KVM_SET_MEMORY_ATTRIBUTES`, then `KVM_SEV_SNP_LAUNCH_START`, `_UPDATE` and `_FINISH`
//! through `KVM_MEMORY_ENCRYPT_OP`.
//!
//! What the kernel does with each call (arch/x86/kvm/svm/sev.c, virt/kvm/guest_memfd.c; read
//! in gregkh/linux 00b9744a and 39389369, facts only):
//! - `KVM_SEV_SNP_LAUNCH_UPDATE` copies each 4 KiB page from `uaddr` (ignored for ZERO) into
//!   the guest_memfd page of `gfn_start`, makes it guest-owned in the RMP with its GPA and
//!   calls the firmware; the range is cut at the end of the memslot, and a failure after the
//!   first page is swallowed: the call succeeds with `gfn_start`/`uaddr`/`len` advanced past the
//!   pages done. [`HwSnpLaunch::launch_update`] loops until `len` is 0 (the remainder loop).
//!   When the firmware refuses a CPUID page with INVALID_PARAM, the kernel copies the page the
//!   firmware corrected back to `uaddr`; `launch_update` then retries once with it and
//!   reports what differed ([`CpuidFix`]).
//! - `KVM_SEV_SNP_LAUNCH_FINISH` first builds every vCPU's VMSA from its registers and
//!   LAUNCH_UPDATEs it as a VMSA page at GPA `0xFFFFFFFFF000`, in vCPU index order, so the
//!   VMSAs are the last pages of the launch digest.

use super::KVM_X86_SEV_ES_VM;
use super::{IoctlPort, SysIoctl, KVM_CHECK_EXTENSION, KVM_CREATE_VCPU};
use crate::error::{FwError, Result};
use crate::snp::SnpLaunchFinish;
use crate::Status;
use kvm_bindings as kb;
use sev_proto::snp::measure::PageType;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

/// VM type for SEV-SNP (`KVM_CREATE_VM` argument).
pub const KVM_X86_SNP_VM: u32 = 4;
/// `_IO(KVMIO, 0x01)`: KVM_CREATE_VM on `/dev/kvm`, the VM type as argument.
pub const KVM_CREATE_VM: u64 = 0xAE01;
/// `_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)`.
pub const KVM_CREATE_GUEST_MEMFD: u64 = 0xC040_AED4;
/// `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)`.
pub const KVM_SET_USER_MEMORY_REGION2: u64 = 0x40A0_AE49;
/// `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)`.
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 = 0x4020_AED2;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;
/// `KVM_MEM_GUEST_MEMFD` (memslot flag).
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// KVM_CAP_USER_MEMORY2.
pub const KVM_CAP_USER_MEMORY2: u32 = 231;
/// KVM_CAP_MEMORY_ATTRIBUTES: the supported attribute mask (0 = no attributes).
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
/// KVM_CAP_GUEST_MEMFD.
pub const KVM_CAP_GUEST_MEMFD: u32 = 234;
/// `SVM_SEV_FEAT_SNP_ACTIVE`: KVM adds it to `vmsa_features` of every SNP VM.
pub const SVM_SEV_FEAT_SNP_ACTIVE: u64 = 1;
/// GPA KVM records in the RMP for every vCPU's VMSA (`INITIAL_VMSA_GPA`).
pub const KVM_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// `KVM_SEV_SNP_ID_BLOCK_SIZE`.
pub const ID_BLOCK_SIZE: usize = 96;
/// `KVM_SEV_SNP_ID_AUTH_SIZE`.
pub const ID_AUTH_SIZE: usize = 4096;
/// KVM_SEV_SNP_LAUNCH_START / _UPDATE / _FINISH.
pub const KVM_SEV_SNP_LAUNCH_START: u32 = 100;
/// See [`KVM_SEV_SNP_LAUNCH_START`].
pub const KVM_SEV_SNP_LAUNCH_UPDATE: u32 = 101;
/// See [`KVM_SEV_SNP_LAUNCH_START`].
pub const KVM_SEV_SNP_LAUNCH_FINISH: u32 = 102;

const PAGE: usize = 4096;
/// How many times `launch_update` re-issues a call the kernel answered with EAGAIN.
const EAGAIN_RETRIES: u32 = 64;

/// A KVM refusal with what it means here.
fn kvm_err(what: &'static str, detail: String, source: io::Error) -> FwError {
    FwError::Kvm {
        what,
        detail,
        source,
    }
}

/// KVM_CHECK_EXTENSION of `cap` on `fd` (`/dev/kvm` or a VM) through `port`; a refusal reads
/// as 0 (absent), as the kernel's own answer for an unknown capability.
pub fn check_extension(port: &dyn IoctlPort, fd: RawFd, cap: u32) -> i32 {
    let arg = std::ptr::without_provenance_mut(cap as usize);
    // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and touches no memory.
    unsafe { port.ioctl(fd, KVM_CHECK_EXTENSION, arg) }.unwrap_or(0)
}

/// KVM_CREATE_VM with type `KVM_X86_SNP_VM` on the `/dev/kvm` fd `kvm_fd`, through `port`.
/// A KVM without SNP VMs (EINVAL) is told apart by its KVM_CAP_VM_TYPES mask.
pub fn create_snp_vm(port: &dyn IoctlPort, kvm_fd: RawFd) -> Result<OwnedFd> {
    match port.create_vm(kvm_fd, KVM_X86_SNP_VM) {
        // SAFETY: KVM_CREATE_VM returned a new VM fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            let types = check_extension(port, kvm_fd, super::KVM_CAP_VM_TYPES);
            let detail = if types & (1 << KVM_X86_SNP_VM) == 0 {
                format!(
                    "this KVM does not offer KVM_X86_SNP_VM (4): KVM_CAP_VM_TYPES = {types:#x} \
                     (SNP needs Linux 6.11+ with kvm_amd sev_snp=1 on an SNP-enabled host)"
                )
            } else {
                "KVM_X86_SNP_VM is offered but the VM could not be created".to_string()
            };
            Err(kvm_err("KVM_CREATE_VM", detail, e))
        }
    }
}

/// One CPUID leaf the firmware corrected when it refused the CPUID page (QEMU prints the same
/// comparison after a failed CPUID LAUNCH_UPDATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidFix {
    /// Index of the entry in the table.
    pub entry: usize,
    /// EAX_IN (the function).
    pub function: u32,
    /// ECX_IN (the sub-leaf).
    pub index: u32,
    /// EAX, EBX, ECX, EDX as given.
    pub provided: [u32; 4],
    /// EAX, EBX, ECX, EDX as the firmware wants them.
    pub expected: [u32; 4],
    /// Other bytes of the entry differed (inputs or reserved fields).
    pub other_bytes: bool,
}

impl std::fmt::Display for CpuidFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |v: &[u32; 4]| {
            format!(
                "eax:0x{:08x} ebx:0x{:08x} ecx:0x{:08x} edx:0x{:08x}",
                v[0], v[1], v[2], v[3]
            )
        };
        write!(
            f,
            "CPUID entry {} function 0x{:x} index 0x{:x}: provided {}, expected {}{}",
            self.entry,
            self.function,
            self.index,
            r(&self.provided),
            r(&self.expected),
            if self.other_bytes {
                " (input/reserved fields differ too)"
            } else {
                ""
            }
        )
    }
}

/// Offsets of the CPUID page (Linux `struct snp_cpuid_table`): `u32 count` and reserved to
/// 0x10, then 64 entries of 0x30 bytes `{eax_in, ecx_in, u64 xcr0_in, u64 xss_in, eax, ebx,
/// ecx, edx, u64 reserved}`.
const CPUID_HDR: usize = 0x10;
const CPUID_ENTRY: usize = 0x30;
const CPUID_MAX: usize = 64;

fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// What differs between the CPUID page given and the one the firmware wrote back: one
/// [`CpuidFix`] per differing entry (the header's count is reported as entry `usize::MAX`).
pub fn cpuid_diff(given: &[u8], corrected: &[u8]) -> Vec<CpuidFix> {
    let mut out = Vec::new();
    if given.len() < PAGE || corrected.len() < PAGE {
        return out;
    }
    if given[..CPUID_HDR] != corrected[..CPUID_HDR] {
        out.push(CpuidFix {
            entry: usize::MAX,
            function: 0,
            index: 0,
            provided: [rd32(given, 0), 0, 0, 0],
            expected: [rd32(corrected, 0), 0, 0, 0],
            other_bytes: given[4..CPUID_HDR] != corrected[4..CPUID_HDR],
        });
    }
    for i in 0..CPUID_MAX {
        let o = CPUID_HDR + i * CPUID_ENTRY;
        let (g, c) = (&given[o..o + CPUID_ENTRY], &corrected[o..o + CPUID_ENTRY]);
        if g == c {
            continue;
        }
        let regs = |e: &[u8]| [rd32(e, 0x18), rd32(e, 0x1C), rd32(e, 0x20), rd32(e, 0x24)];
        out.push(CpuidFix {
            entry: i,
            function: rd32(g, 0),
            index: rd32(g, 4),
            provided: regs(g),
            expected: regs(c),
            other_bytes: g[..0x18] != c[..0x18] || g[0x28..] != c[0x28..],
        });
    }
    out
}

/// What one [`HwSnpLaunch::launch_update`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// KVM_SEV_SNP_LAUNCH_UPDATE ioctls issued (more than one: the remainder loop ran).
    pub ioctls: u32,
    /// For a CPUID page the firmware corrected: what differed (the page was retried once with
    /// the firmware's version, which the caller's buffer now holds).
    pub cpuid_fixes: Vec<CpuidFix>,
}

/// A page-aligned 4 KiB buffer (KVM requires `uaddr` page aligned).
#[repr(C, align(4096))]
#[derive(Clone)]
struct Page([u8; PAGE]);

/// Where the launch is (KVM's own order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnpLaunchPhase {
    /// VM created, SEV not initialised.
    New,
    /// KVM_SEV_INIT2 done.
    Initialised,
    /// KVM_SEV_SNP_LAUNCH_START done.
    Started,
    /// KVM_SEV_SNP_LAUNCH_FINISH done.
    Finished,
}

/// One SNP VM's launch through KVM: the memory setup calls and the SNP launch commands, every
/// ioctl through one [`IoctlPort`] (the real kernel, or the loopback model in tests).
///
/// Order (KVM's): [`init2`](Self::init2) before any vCPU; guest_memfd and memslots
/// ([`create_guest_memfd`](Self::create_guest_memfd),
/// [`set_user_memory_region2`](Self::set_user_memory_region2)); [`set_private`](Self::set_private)
/// on every range LAUNCH_UPDATE will populate; [`launch_start`](Self::launch_start);
/// [`launch_update`](Self::launch_update) per range; vCPUs with their registers;
/// [`launch_finish`](Self::launch_finish) (KVM measures the vCPUs' VMSAs first).
pub struct HwSnpLaunch {
    vm_fd: RawFd,
    sev: File,
    port: Arc<dyn IoctlPort>,
    phase: SnpLaunchPhase,
    vcpus: usize,
}

impl std::fmt::Debug for HwSnpLaunch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwSnpLaunch")
            .field("vm_fd", &self.vm_fd)
            .field("phase", &self.phase)
            .field("vcpus", &self.vcpus)
            .finish_non_exhaustive()
    }
}

impl HwSnpLaunch {
    /// The launch of the SNP VM `vm_fd` (created with [`KVM_X86_SNP_VM`]) over the real kernel,
    /// with the SEV device at `sev_path`.
    pub fn new(vm_fd: RawFd, sev_path: &Path) -> Result<HwSnpLaunch> {
        Self::with_port(vm_fd, sev_path, Arc::new(SysIoctl))
    }

    /// As [`new`](Self::new), issuing every ioctl through `port`.
    pub fn with_port(
        vm_fd: RawFd,
        sev_path: &Path,
        port: Arc<dyn IoctlPort>,
    ) -> Result<HwSnpLaunch> {
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(sev_path)
            .map_err(|source| FwError::Io {
                path: sev_path.to_path_buf(),
                source,
            })?;
        Ok(HwSnpLaunch {
            vm_fd,
            sev,
            port,
            phase: SnpLaunchPhase::New,
            vcpus: 0,
        })
    }

    /// The VM fd this launch issues its ioctls on.
    pub fn vm_fd(&self) -> RawFd {
        self.vm_fd
    }

    /// Where the launch is.
    pub fn phase(&self) -> SnpLaunchPhase {
        self.phase
    }

    /// KVM_CHECK_EXTENSION of `cap` on the VM.
    pub fn check_extension(&self, cap: u32) -> i32 {
        check_extension(&*self.port, self.vm_fd, cap)
    }

    /// KVM_MEMORY_ENCRYPT_OP with command `id` and its struct `data`.
    fn op<T>(&self, id: u32, name: &'static str, data: &mut T) -> Result<()> {
        // SAFETY: `data` points to the live command struct KVM expects for `id`; the user
        // addresses inside it point to live buffers of the stated lengths for the duration of
        // the call (each caller below keeps them alive).
        unsafe {
            super::memory_encrypt_op(
                &*self.port,
                self.vm_fd,
                &self.sev,
                id,
                data as *mut T as u64,
                name,
            )
        }
    }

    /// KVM_SEV_INIT2 with `vmsa_features` (KVM adds SNP_ACTIVE) and `ghcb_version` (0: KVM's
    /// default, 2; SNP needs at least 2). KVM refuses it once a vCPU exists (EINVAL).
    pub fn init2(&mut self, vmsa_features: u64, ghcb_version: u16) -> Result<()> {
        let mut i = kb::kvm_sev_init {
            vmsa_features,
            flags: 0,
            ghcb_version,
            ..Default::default()
        };
        self.op(kb::sev_cmd_id_KVM_SEV_INIT2, "KVM_SEV_INIT2", &mut i)?;
        self.phase = SnpLaunchPhase::Initialised;
        Ok(())
    }

    /// KVM_CREATE_GUEST_MEMFD of `size` bytes (flags 0): the private backing of guest RAM.
    pub fn create_guest_memfd(&self, size: u64) -> Result<OwnedFd> {
        create_guest_memfd(&*self.port, self.vm_fd, size)
    }

    /// KVM_SET_USER_MEMORY_REGION2: memslot `slot` at `gpa` of `size` bytes, shared pages at
    /// `uaddr`, private pages in `gmem` from `gmem_offset`.
    ///
    /// # Safety
    /// `[uaddr, uaddr + size)` must stay a valid writable mapping while the slot exists (KVM
    /// and the guest access it behind Rust's back).
    pub unsafe fn set_user_memory_region2(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        uaddr: u64,
        gmem: RawFd,
        gmem_offset: u64,
    ) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            set_user_memory_region2(
                &*self.port,
                self.vm_fd,
                slot,
                gpa,
                size,
                uaddr,
                gmem,
                gmem_offset,
            )
        }
    }

    /// KVM_SET_MEMORY_ATTRIBUTES of `[gpa, gpa + size)` to PRIVATE.
    pub fn set_private(&self, gpa: u64, size: u64) -> Result<()> {
        set_memory_attributes(
            &*self.port,
            self.vm_fd,
            gpa,
            size,
            KVM_MEMORY_ATTRIBUTE_PRIVATE,
        )
    }

    /// KVM_SET_MEMORY_ATTRIBUTES of `[gpa, gpa + size)` to `attributes`.
    pub fn set_memory_attributes(&self, gpa: u64, size: u64, attributes: u64) -> Result<()> {
        set_memory_attributes(&*self.port, self.vm_fd, gpa, size, attributes)
    }

    /// KVM_CREATE_VCPU `id`. Its registers (KVM_SET_REGS / SREGS on the returned fd) are what
    /// KVM puts in its VMSA at LAUNCH_FINISH.
    pub fn create_vcpu(&mut self, id: u64) -> Result<OwnedFd> {
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
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// KVM_SEV_SNP_LAUNCH_START: the firmware's guest context (GCTX_CREATE, LAUNCH_START with
    /// `policy` and `gosvw`, ACTIVATE). KVM refuses policy bits it does not support and a
    /// policy without bit 17 (EINVAL).
    pub fn launch_start(&mut self, policy: u64, gosvw: [u8; 16]) -> Result<()> {
        let mut s = kb::kvm_sev_snp_launch_start {
            policy,
            gosvw,
            ..Default::default()
        };
        self.op(KVM_SEV_SNP_LAUNCH_START, "KVM_SEV_SNP_LAUNCH_START", &mut s)?;
        self.phase = SnpLaunchPhase::Started;
        Ok(())
    }

    /// KVM_SEV_SNP_LAUNCH_UPDATE as issued: `p` is passed as is and holds what KVM wrote back
    /// (the advanced `gfn_start`/`uaddr`/`len` on success).
    ///
    /// # Safety
    /// Unless `p.type_` is ZERO, `p.uaddr` must point to `p.len` bytes the kernel may read and
    /// (for a CPUID page) write during the call.
    pub unsafe fn launch_update_raw(
        &mut self,
        p: &mut kb::kvm_sev_snp_launch_update,
    ) -> Result<()> {
        self.op(KVM_SEV_SNP_LAUNCH_UPDATE, "KVM_SEV_SNP_LAUNCH_UPDATE", p)
    }

    /// KVM_SEV_SNP_LAUNCH_UPDATE of `bytes` (whole 4 KiB pages) at guest-physical `gpa` as
    /// `page_type` (VMSA is KVM's own: refused here). The bytes go through a page-aligned
    /// buffer; the call is repeated while KVM reports a remainder (or EAGAIN). A CPUID page
    /// the firmware refuses with INVALID_PARAM is retried once with the firmware's corrected
    /// version, which is then written back to `bytes` (the differences are in the report). On
    /// hardware the populated pages live in guest_memfd: `bytes` is not changed otherwise.
    pub fn launch_update(
        &mut self,
        gpa: u64,
        bytes: &mut [u8],
        page_type: PageType,
    ) -> Result<UpdateReport> {
        const W: &str = "KVM_SEV_SNP_LAUNCH_UPDATE";
        if page_type == PageType::Vmsa {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_UPDATE: VMSA pages are KVM's (it measures every vCPU at \
                 LAUNCH_FINISH); user space may not pass type 2",
            ));
        }
        if !gpa.is_multiple_of(PAGE as u64) {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_UPDATE: the guest address is not 4 KiB aligned (gfn_start)",
            ));
        }
        if bytes.is_empty() || !bytes.len().is_multiple_of(PAGE) {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_UPDATE: len must be a non-zero multiple of 4 KiB",
            ));
        }
        let zero = page_type == PageType::Zero;
        let mut buf: Vec<Page> = if zero {
            Vec::new()
        } else {
            bytes
                .chunks_exact(PAGE)
                .map(|c| {
                    let mut p = Page([0; PAGE]);
                    p.0.copy_from_slice(c);
                    p
                })
                .collect()
        };
        let base = if zero { 0 } else { buf.as_mut_ptr() as u64 };
        let mut p = kb::kvm_sev_snp_launch_update {
            gfn_start: gpa / PAGE as u64,
            uaddr: base,
            len: bytes.len() as u64,
            type_: page_type as u8,
            ..Default::default()
        };
        let mut report = UpdateReport::default();
        let (mut eagain, mut retried) = (0u32, false);
        loop {
            let before = (p.gfn_start, p.len);
            report.ioctls += 1;
            // SAFETY: `p.uaddr` is 0 (ZERO, which KVM ignores) or points into `buf`, which
            // holds `bytes.len()` bytes from `base`; KVM only advances it within that range,
            // and `buf` lives across the call.
            let r = unsafe { self.launch_update_raw(&mut p) };
            if page_type == PageType::Cpuid {
                // The kernel may have written the firmware's page back (also when a later
                // page's failure was swallowed into a partial success).
                for (i, page) in buf.iter().enumerate() {
                    let orig = &bytes[i * PAGE..(i + 1) * PAGE];
                    if page.0[..] != *orig {
                        report.cpuid_fixes.extend(cpuid_diff(orig, &page.0));
                    }
                }
                for (i, page) in buf.iter().enumerate() {
                    bytes[i * PAGE..(i + 1) * PAGE].copy_from_slice(&page.0);
                }
            }
            match r {
                Ok(()) if p.len == 0 => break,
                Ok(()) if (p.gfn_start, p.len) == before => {
                    return Err(FwError::InvalidArgument(
                        "KVM_SEV_SNP_LAUNCH_UPDATE succeeded without progress (gfn_start and \
                         len unchanged)",
                    ));
                }
                Ok(()) => {}
                Err(FwError::Ioctl { source, .. })
                    if source.raw_os_error() == Some(libc::EAGAIN) && eagain < EAGAIN_RETRIES =>
                {
                    eagain += 1;
                }
                Err(e)
                    if page_type == PageType::Cpuid
                        && e.status() == Some(Status::InvalidParam)
                        && !retried
                        && !report.cpuid_fixes.is_empty() =>
                {
                    // The firmware's corrected page is in `buf` at the failing page: once.
                    retried = true;
                    for f in &report.cpuid_fixes {
                        tracing::warn!(
                            "SEV-SNP: CPUID page at {gpa:#x} corrected by the firmware: {f}"
                        );
                    }
                }
                Err(e) => return Err(with_gpa(W, e, p.gfn_start)),
            }
        }
        Ok(report)
    }

    /// KVM_SEV_SNP_LAUNCH_FINISH: KVM measures each vCPU's VMSA (GPA 0xFFFFFFFFF000, vCPU
    /// order), then the firmware's SNP_LAUNCH_FINISH with the ID block (96 bytes) and ID
    /// authentication (4096 bytes) if given, AUTH_KEY_EN, VCEK_DISABLED and HOST_DATA.
    pub fn launch_finish(&mut self, f: &SnpLaunchFinish<'_>) -> Result<()> {
        let id_block = f.id_block.map(<[u8]>::to_vec);
        let id_auth = f.id_auth.map(<[u8]>::to_vec);
        if id_block.as_ref().is_some_and(|b| b.len() != ID_BLOCK_SIZE) {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_FINISH: the ID block (id_block_uaddr) must be 96 bytes",
            ));
        }
        if id_auth.as_ref().is_some_and(|b| b.len() != ID_AUTH_SIZE) {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_FINISH: the ID authentication structure (id_auth_uaddr) \
                 must be 4096 bytes",
            ));
        }
        if id_block.is_some() != id_auth.is_some() || (f.auth_key_en && id_block.is_none()) {
            return Err(FwError::InvalidArgument(
                "KVM_SEV_SNP_LAUNCH_FINISH: an ID block needs its ID authentication structure \
                 (and AUTH_KEY_EN needs both)",
            ));
        }
        let mut d = kb::kvm_sev_snp_launch_finish {
            id_block_uaddr: id_block.as_ref().map_or(0, |b| b.as_ptr() as u64),
            id_auth_uaddr: id_auth.as_ref().map_or(0, |b| b.as_ptr() as u64),
            id_block_en: u8::from(id_block.is_some()),
            auth_key_en: u8::from(f.auth_key_en),
            vcek_disabled: u8::from(f.vcek_dis),
            host_data: f.host_data,
            ..Default::default()
        };
        // KVM copies the blobs from these buffers; they live until the ioctl returns.
        self.op(
            KVM_SEV_SNP_LAUNCH_FINISH,
            "KVM_SEV_SNP_LAUNCH_FINISH",
            &mut d,
        )?;
        drop((id_block, id_auth));
        self.phase = SnpLaunchPhase::Finished;
        Ok(())
    }
}

/// `e` with the GFN it happened at, for a kernel refusal without firmware status.
fn with_gpa(what: &'static str, e: FwError, gfn: u64) -> FwError {
    match e {
        FwError::Ioctl { source, .. } => {
            let why = match source.raw_os_error() {
                Some(libc::EIO) => {
                    "the kernel could not populate the page: not private \
                     (KVM_SET_MEMORY_ATTRIBUTES), already launched, or not in guest_memfd"
                }
                Some(libc::EINVAL) => {
                    "refused: no guest_memfd memslot at this address, bad type/length/alignment, \
                     or LAUNCH_START not done"
                }
                _ => "refused",
            };
            kvm_err(
                what,
                format!("at GPA {:#x}: {why}", gfn * PAGE as u64),
                source,
            )
        }
        other => other,
    }
}

/// KVM_CREATE_GUEST_MEMFD of `size` bytes on the VM `vm_fd` through `port`.
pub fn create_guest_memfd(port: &dyn IoctlPort, vm_fd: RawFd, size: u64) -> Result<OwnedFd> {
    let mut g = kb::kvm_create_guest_memfd {
        size,
        flags: 0,
        reserved: [0; 6],
    };
    // SAFETY: `g` is a live kvm_create_guest_memfd, the only memory the ioctl reads.
    match unsafe {
        port.ioctl(
            vm_fd,
            KVM_CREATE_GUEST_MEMFD,
            (&mut g as *mut kb::kvm_create_guest_memfd).cast::<c_void>(),
        )
    } {
        // SAFETY: the ioctl returned a new guest_memfd fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            let cap = check_extension(port, vm_fd, KVM_CAP_GUEST_MEMFD);
            let detail = if cap == 0 {
                format!("{size:#x} bytes: this KVM/VM has no guest_memfd (KVM_CAP_GUEST_MEMFD = 0)")
            } else {
                format!("{size:#x} bytes (must be a non-zero multiple of 4 KiB)")
            };
            Err(kvm_err("KVM_CREATE_GUEST_MEMFD", detail, e))
        }
    }
}

/// KVM_SET_USER_MEMORY_REGION2 of a guest_memfd-backed memslot through `port`.
///
/// # Safety
/// `[uaddr, uaddr + size)` must stay a valid writable mapping while the slot exists.
#[allow(clippy::too_many_arguments)]
pub unsafe fn set_user_memory_region2(
    port: &dyn IoctlPort,
    vm_fd: RawFd,
    slot: u32,
    gpa: u64,
    size: u64,
    uaddr: u64,
    gmem: RawFd,
    gmem_offset: u64,
) -> Result<()> {
    let mut r = kb::kvm_userspace_memory_region2 {
        slot,
        flags: KVM_MEM_GUEST_MEMFD,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: uaddr,
        guest_memfd_offset: gmem_offset,
        guest_memfd: gmem as u32,
        ..Default::default()
    };
    // SAFETY: `r` is a live kvm_userspace_memory_region2; the mapping it names stays valid
    // while the slot exists (this function's contract).
    let rc = unsafe {
        port.ioctl(
            vm_fd,
            KVM_SET_USER_MEMORY_REGION2,
            (&mut r as *mut kb::kvm_userspace_memory_region2).cast(),
        )
    };
    rc.map(|_| ()).map_err(|e| {
        let detail = if check_extension(port, vm_fd, KVM_CAP_USER_MEMORY2) == 0 {
            "this KVM has no KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2 = 0)".to_string()
        } else {
            format!(
                "slot {slot} GPA {gpa:#x} size {size:#x} guest_memfd {gmem} offset \
                 {gmem_offset:#x}"
            )
        };
        kvm_err("KVM_SET_USER_MEMORY_REGION2", detail, e)
    })
}

/// KVM_SET_MEMORY_ATTRIBUTES of `[gpa, gpa + size)` through `port`. A KVM without memory
/// attributes (KVM_CAP_MEMORY_ATTRIBUTES = 0; the ioctl then answers ENOTTY, or EINVAL for an
/// attribute it does not offer) gets an error that says so.
pub fn set_memory_attributes(
    port: &dyn IoctlPort,
    vm_fd: RawFd,
    gpa: u64,
    size: u64,
    attributes: u64,
) -> Result<()> {
    let mut a = kb::kvm_memory_attributes {
        address: gpa,
        size,
        attributes,
        flags: 0,
    };
    // SAFETY: `a` is a live kvm_memory_attributes, the only memory the ioctl reads.
    let rc = unsafe {
        port.ioctl(
            vm_fd,
            KVM_SET_MEMORY_ATTRIBUTES,
            (&mut a as *mut kb::kvm_memory_attributes).cast(),
        )
    };
    rc.map(|_| ()).map_err(|e| {
        let supported = check_extension(port, vm_fd, KVM_CAP_MEMORY_ATTRIBUTES) as u64;
        let detail = if supported & attributes != attributes {
            format!(
                "[{gpa:#x}, +{size:#x}) attributes {attributes:#x}: this KVM/VM does not offer \
                 them (KVM_CAP_MEMORY_ATTRIBUTES = {supported:#x}{}); the private/shared split \
                 must be kept in user space",
                if e.raw_os_error() == Some(libc::ENOTTY) {
                    ", and the ioctl itself is unknown: ENOTTY"
                } else {
                    ""
                }
            )
        } else {
            format!("[{gpa:#x}, +{size:#x}) attributes {attributes:#x} (4 KiB aligned, non-empty)")
        };
        kvm_err("KVM_SET_MEMORY_ATTRIBUTES", detail, e)
    })
}

/// Whether `vm_type` makes KVM an SEV-ES-or-later VM (for callers picking INIT2's GHCB).
pub fn vm_type_has_es(vm_type: u32) -> bool {
    vm_type == KVM_X86_SEV_ES_VM || vm_type == KVM_X86_SNP_VM
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn snp_structs_and_ioctl_numbers_match_the_uapi() {
        assert_eq!(size_of::<kb::kvm_sev_snp_launch_start>(), 64);
        assert_eq!(size_of::<kb::kvm_sev_snp_launch_update>(), 64);
        assert_eq!(offset_of!(kb::kvm_sev_snp_launch_update, type_), 0x18);
        assert_eq!(offset_of!(kb::kvm_sev_snp_launch_update, flags), 0x1A);
        assert_eq!(size_of::<kb::kvm_sev_snp_launch_finish>(), 88);
        assert_eq!(offset_of!(kb::kvm_sev_snp_launch_finish, host_data), 19);
        assert_eq!(offset_of!(kb::kvm_sev_snp_launch_finish, flags), 54);
        assert_eq!(size_of::<kb::kvm_sev_init>(), 48);
        assert_eq!(size_of::<kb::kvm_create_guest_memfd>(), 64);
        assert_eq!(size_of::<kb::kvm_userspace_memory_region2>(), 160);
        assert_eq!(size_of::<kb::kvm_memory_attributes>(), 32);
        let ioc = |dir: u64, nr: u64, size: usize| dir << 30 | (size as u64) << 16 | 0xAE << 8 | nr;
        assert_eq!(
            KVM_CREATE_GUEST_MEMFD,
            ioc(3, 0xD4, size_of::<kb::kvm_create_guest_memfd>())
        );
        assert_eq!(
            KVM_SET_USER_MEMORY_REGION2,
            ioc(1, 0x49, size_of::<kb::kvm_userspace_memory_region2>())
        );
        assert_eq!(
            KVM_SET_MEMORY_ATTRIBUTES,
            ioc(1, 0xD2, size_of::<kb::kvm_memory_attributes>())
        );
        assert_eq!(KVM_CREATE_VM, ioc(0, 0x01, 0));
        assert_eq!(KVM_X86_SNP_VM, kb::KVM_X86_SNP_VM);
        assert_eq!(KVM_MEM_GUEST_MEMFD, kb::KVM_MEM_GUEST_MEMFD);
        assert_eq!(
            KVM_MEMORY_ATTRIBUTE_PRIVATE,
            kb::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64
        );
        assert_eq!(
            (
                KVM_CAP_USER_MEMORY2,
                KVM_CAP_MEMORY_ATTRIBUTES,
                KVM_CAP_GUEST_MEMFD
            ),
            (
                kb::KVM_CAP_USER_MEMORY2,
                kb::KVM_CAP_MEMORY_ATTRIBUTES,
                kb::KVM_CAP_GUEST_MEMFD
            )
        );
        assert_eq!(
            (
                KVM_SEV_SNP_LAUNCH_START,
                KVM_SEV_SNP_LAUNCH_UPDATE,
                KVM_SEV_SNP_LAUNCH_FINISH
            ),
            (
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START,
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE,
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH
            )
        );
        assert_eq!(
            (
                PageType::Normal as u32,
                PageType::Zero as u32,
                PageType::Cpuid as u32
            ),
            (
                kb::KVM_SEV_SNP_PAGE_TYPE_NORMAL,
                kb::KVM_SEV_SNP_PAGE_TYPE_ZERO,
                kb::KVM_SEV_SNP_PAGE_TYPE_CPUID
            )
        );
        assert_eq!(KVM_VMSA_GPA, sev_proto::snp::measure::VMSA_GPA);
        assert!(vm_type_has_es(KVM_X86_SNP_VM) && !vm_type_has_es(2));
    }

    #[test]
    fn cpuid_diff_names_each_corrected_leaf() {
        let mut given = vec![0u8; PAGE];
        given[0] = 2;
        let e1 = CPUID_HDR + CPUID_ENTRY;
        given[e1..e1 + 4].copy_from_slice(&0x8000_001Fu32.to_le_bytes());
        given[e1 + 0x1C..e1 + 0x20].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        let mut fixed = given.clone();
        fixed[e1 + 0x1C..e1 + 0x20].copy_from_slice(&0x33u32.to_le_bytes());
        assert!(cpuid_diff(&given, &given).is_empty());
        let d = cpuid_diff(&given, &fixed);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].entry, d[0].function), (1, 0x8000_001F));
        assert_eq!((d[0].provided[1], d[0].expected[1]), (0xFFFF_FFFF, 0x33));
        assert!(!d[0].other_bytes);
        assert!(d[0].to_string().contains("function 0x8000001f"), "{}", d[0]);
        fixed[0] = 1;
        assert_eq!(cpuid_diff(&given, &fixed)[0].entry, usize::MAX);
    }
}
