//! Emulation of the *kernel side* of the hw backend ("loopback"): the `/dev/sev`
//! driver and KVM's SEV ioctls, served by a [`SoftPlatform`] through its raw command
//! interface, so `HwPlatform`/`HwGuest` run end to end on a machine without SEV. Built for
//! this crate's tests and, with the `loopback` feature, for other crates' tests (sevm's
//! `hw_launch` runs the VMM's real launch over it) and for `sevm shim`, whose server answers
//! unmodified tools' `/dev/sev` ioctls with it. User memory is read and written with
//! `process_vm_readv`/`process_vm_writev` on this process, so a bad address is EFAULT as in
//! the kernel, not a fault.
//!
//! Two kinds of VM: emulated ones ([`Loopback::create_vm`]: a file standing for the VM fd)
//! and real KVM VMs the VMM created on /dev/kvm and announced with
//! [`IoctlPort::vm_created`](super::IoctlPort::vm_created): a default-type VM whose SEV side
//! the loopback models while the real KVM runs its vCPUs. For a real VM, KVM_CREATE_VCPU
//! through the port reaches the real kernel (and is recorded), the created-vCPUs rule of SEV
//! init also asks the real kernel (KVM_SET_BOOT_CPU_ID answers EBUSY once `created_vcpus` is
//! non-zero, so vCPUs created around the port count too), and after LAUNCH_UPDATE_DATA and
//! LAUNCH_SECRET the host mapping gets the guest's plaintext back instead of the ciphertext:
//! the guest runs on a KVM without memory encryption and must read what it was given.
//! Every SEV-relevant ioctl is appended to [`Loopback::log`] in order.
//!
//! It follows Linux as read in torvalds/linux (sev-dev.c at 0410c612, sev.c at 0097f9df):
//! - drivers/crypto/ccp/sev-dev.c: `sev_ioctl` (unknown ioctl or `cmd` -> EINVAL, the
//!   `sev_issue_cmd` copied back after every known command), `__sev_do_cmd_locked` (a
//!   firmware status other than SUCCESS -> EIO, status in `error`), `sev_ioctl_do_reset`,
//!   `sev_ioctl_do_platform_status`, `sev_ioctl_do_pek_pdh_gen`, `sev_ioctl_do_pek_csr`
//!   (length probe), `sev_ioctl_do_pek_import`, `sev_ioctl_do_pdh_export` (length probe),
//!   `sev_ioctl_do_get_id2`, `psp_copy_user_blob` (0 or > 16 KiB -> EINVAL),
//!   `__sev_platform_init_locked` (INIT with the ES flag and a 1 MiB TMR, then DF_FLUSH; the
//!   driver caches UNINIT/INIT), `sev_issue_cmd_external_user` (a non-SEV file -> EBADF) and
//!   the FMODE_WRITE checks (EPERM).
//! - arch/x86/kvm/svm/sev.c: `sev_mem_enc_ioctl` (NULL arg -> 0, unknown id -> EINVAL, the
//!   `kvm_sev_cmd` copied back), `__sev_guest_init`/`sev_guest_init`/`sev_guest_init2`
//!   (VM-type rules, ASID allocation with `sev_asid_new`/`__sev_recycle_asids`,
//!   `sev_platform_init`), `sev_launch_start` (blobs from `dh_uaddr`/`session_uaddr`,
//!   `argp->sev_fd`, ACTIVATE via `sev_bind_asid`, handle written back, later commands use
//!   the remembered `sev->fd`), `sev_launch_update_data` (pinned pages, one firmware command
//!   per physically contiguous run, encrypted in place), `sev_launch_update_vmsa` (every
//!   vCPU, ES only), `sev_launch_measure` / `sev_get_attestation_report` (len 0 probes: the
//!   firmware's INVALID_LEN and the needed length come back with EIO), `sev_launch_secret`
//!   (contiguous pinned destination), `sev_launch_finish`, `sev_guest_status`,
//!   `sev_dbg_crypt` with `__sev_dbg_decrypt_user` / `__sev_dbg_encrypt_user` (per source
//!   page, 16-byte bounce pages), `sev_mem_enc_register_region` /
//!   `sev_mem_enc_unregister_region`, `sev_vm_destroy` (DEACTIVATE, DECOMMISSION, ASID to
//!   the reclaim set).
//!
//! Physical memory: user pages are given stable model physical addresses the first time
//! they are pinned (pages pinned together get contiguous addresses) and the bytes of a user
//! range are copied into / out of the model's PA space around each firmware command, so
//! what the host mapping reads after LAUNCH_UPDATE_DATA is ciphertext, as on hardware. The PA
//! page is the memory: copying in takes only the bytes the user changed since the last copy
//! (a per-page shadow), because the firmware rewrites whole 16-byte blocks around unaligned
//! DBG_ENCRYPT ranges and the model copies back only the caller's bytes.
//!
//! Files stand in for devices: `/dev/sev`, `/dev/kvm` and each VM fd are regular files in
//! the loopback's directory, recognised by `(st_dev, st_ino)` of the fd the caller passes, so
//! a wrong fd (e.g. a `sev_fd` that is not the SEV device) fails as in the kernel.
//!
//! Also after Linux (arch/x86/kvm/svm/sev.c as of 2025): `__sev_guest_init`'s checks in
//! order (`created_vcpus`, `flags`, `vmsa_features` outside the supported set, GHCB version,
//! `sev->active`: all EINVAL), `sev_guest_init2` (`need_init`), and `sev_pin_memory`'s
//! accounting: per VM, `pages_locked` plus the pages of the new pin must stay within
//! RLIMIT_MEMLOCK (modelled by [`Loopback::set_memlock`]) unless CAP_IPC_LOCK, else ENOMEM;
//! REG_REGION keeps its pages until UNREG_REGION or the VM's end, LAUNCH_UPDATE_DATA,
//! LAUNCH_SECRET and DBG_* pin theirs for the call. LAUNCH_UPDATE_VMSA fails (EINVAL) on a
//! second call, as KVM's `guest_state_protected` makes it.
//!
//! LAUNCH_UPDATE_VMSA builds each vCPU's VMSA from the vCPU's registers as
//! `sev_es_sync_vmsa` does (Linux 6.10+, [`sev_proto::vmsa::kvm_es_vmsa`]: the VM's
//! `vmsa_features` in SEV_FEATURES, FPU state only on a `KVM_SEV_INIT2` VM; a DR7 with bits
//! other than 0x400 is EINVAL). The registers come from where the kernel has them: for a vCPU
//! of a real VM created through the port, KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_DEBUGREGS,
//! KVM_GET_XCRS, KVM_GET_MSRS and KVM_GET_XSAVE on its fd (so whatever the VMM set with
//! KVM_SET_* is what is measured); for an emulated vCPU, the state given to
//! [`Loopback::add_vcpu`] or, for one created through the port, KVM's reset state updated by
//! the KVM_SET_REGS / KVM_SET_SREGS issued on its fd through the port. A real VM with vCPUs
//! the port did not see created cannot be read: EINVAL.
//!
//! The SNP platform commands of `/dev/sev` (SNP_PLATFORM_STATUS, SNP_COMMIT, SNP_SET_CONFIG,
//! SNP_VLEK_LOAD) follow sev-dev.c as of Linux 6.11 when the test gives an SNP platform
//! ([`Loopback::with_snp`]); SNP_VLEK_LOAD goes to the soft firmware's VLEK_LOAD after the
//! kernel's checks.
//!
//! SEV-SNP VMs (KVM_X86_SNP_VM, offered when the PSP has an SNP side): KVM_CREATE_VM on the
//! emulated `/dev/kvm`, KVM_SEV_INIT2 with SNP's rules (GHCB version 2, SNP_ACTIVE added to
//! the VMSA features, ASIDs from the SEV-ES range, EPERM for every pre-SNP command once
//! initialised), guest_memfd (KVM_CREATE_GUEST_MEMFD; its pages are kept by the model and are
//! the guest's private memory), KVM_SET_USER_MEMORY_REGION2 (`kvm_set_memory_region`'s checks
//! and `kvm_gmem_bind`), KVM_SET_MEMORY_ATTRIBUTES, KVM_CHECK_EXTENSION on VMs, and
//! KVM_SEV_SNP_LAUNCH_START / _UPDATE (`kvm_gmem_populate`: private, guest_memfd-backed, not yet
//! populated, cut at the memslot's end, partial progress, the CPUID page copied back) /
//! _FINISH (every vCPU's VMSA measured at 0xFFFFFFFFF000 first), served by the soft SNP
//! firmware ([`crate::snp::soft`]) as the PSP.
//!
//! A real KVM VM can stand for an SNP VM too, so that a VMM's SNP launch runs end to end on a
//! host without SNP: [`IoctlPort::create_vm`] of `KVM_X86_SNP_VM` on the real `/dev/kvm`
//! creates a default-type VM in the real kernel (this host's KVM has no SNP type) and the
//! model plays each part the real KVM lacks, as Linux would on an SNP host:
//! - the VM type: KVM_SEV_INIT2 and the KVM_SEV_SNP_* commands follow the SNP rules above
//!   (the created-vCPUs rule asks the real kernel, as for any real VM);
//! - KVM_CHECK_EXTENSION of KVM_CAP_GUEST_MEMFD, KVM_CAP_USER_MEMORY2 and
//!   KVM_CAP_MEMORY_ATTRIBUTES: answered as an SNP VM's (other capabilities: the real kernel);
//! - guest_memfd: the model's (a file of the loopback's directory holding the private pages);
//! - KVM_SET_USER_MEMORY_REGION2: checked and bound to the guest_memfd by the model, then the
//!   shared half (`userspace_addr`, flags without KVM_MEM_GUEST_MEMFD) is registered in the
//!   real kernel with KVM_SET_USER_MEMORY_REGION, where the guest runs from it;
//! - KVM_SET_MEMORY_ATTRIBUTES: the model's attribute array (the real ioctl is ENOTTY here);
//! - memory encryption: none. After SNP_LAUNCH_UPDATE populates a private page, the model
//!   writes the page as the guest must see it (the bytes given, the firmware's secrets page,
//!   the CPUID page it accepted) to the memslot's host mapping, where the unencrypted guest
//!   reads it, as LAUNCH_UPDATE_DATA leaves plaintext for a real SEV VM;
//! - the guest's GHCB guest request, which KVM answers in the kernel
//!   (`snp_handle_guest_req`: SNP_GUEST_REQUEST with the VM's context through `sev->fd`): the
//!   VMM's stand-in exit hands it over with [`IoctlPort::snp_guest_request`].
//!
//! A real VM of the default type keeps the real kernel's answers: guest_memfd and memory
//! attributes are ENOTTY for it.
//!
//! Not emulated: SEND_*/RECEIVE_*/CERT_EXPORT/SNP_ENABLE_REQ_CERTS KVM commands (EINVAL), the
//! RMP itself (a page launched once is refused by the guest_memfd's "prepared" state, as
//! `kvm_gmem_populate` does), page-state changes at run time, mirror VMs, INIT_EX, the
//! driver's probe-time INIT (`psp_init_on_probe`; the platform starts as the soft firmware's
//! state), and the `guest_debug` check of LAUNCH_UPDATE_VMSA (KVM has no ioctl to read it).

use super::kvm_state;
use super::Memlock;
use super::{IoctlPort, KVM_CHECK_EXTENSION, KVM_MEMORY_ENCRYPT_OP, KVM_MEMORY_ENCRYPT_REG_REGION};
use super::{KVM_CREATE_VCPU, KVM_MEMORY_ENCRYPT_UNREG_REGION, KVM_SET_BOOT_CPU_ID, SEV_ISSUE_CMD};
use crate::snp::soft::SoftSnpGuest;
use crate::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate};
use crate::soft::fw::{MAX_ASID, MIN_SEV_ASID};
use crate::soft::raw::cmd as fwcmd;
use crate::soft::SoftPlatform;
use kvm_bindings as kb;
use sev_proto::status::Status;
use sev_proto::vmsa::{KvmVmsaParams, VcpuState, DR7_FIXED_1};
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PAGE: u64 = 4096;
/// `SEV_FW_BLOB_MAX_SIZE` (include/linux/psp-sev.h).
const BLOB_MAX: u32 = 0x4000;
/// `KMALLOC_MAX_SIZE` on x86-64 (`1 << (MAX_PAGE_ORDER + PAGE_SHIFT)` = 4 MiB): a larger
/// `kzalloc` fails.
pub const KMALLOC_MAX: u32 = 4 << 20;
/// Model PA of the first pinned user page.
const USER_PA_BASE: u64 = 0x1_0000_0000;
/// Model PA of kernel allocations (blobs, bounce pages), reused per ioctl.
const KERNEL_PA_BASE: u64 = 0x80_0000_0000;
/// Model PA of the SEV-ES TMR (1 MiB aligned).
const TMR_PA: u64 = 0x40_0000_0000;
/// Model PA of vCPU VMSA pages.
const VMSA_PA_BASE: u64 = 0x60_0000_0000;
/// `SVM_SEV_FEAT_DEBUG_SWAP`: the VMSA feature a host with DebugSwap offers SEV-ES guests.
pub const SVM_SEV_FEAT_DEBUG_SWAP: u64 = 1 << 5;
/// `GHCB_VERSION_MAX`.
const GHCB_VERSION_MAX: u16 = 2;

type KResult<T> = Result<T, i32>;

fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn wr32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn wr64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Copy `out.len()` bytes from this process's address `addr` into `out` with
/// `process_vm_readv` on our own pid, so an unmapped or unreadable address is EFAULT (as
/// `copy_from_user` makes it) instead of a fault: the shim server (`sevm shim`) hands the
/// model addresses of a reserved PROT_NONE range for user pointers the client could not read.
fn vm_read(addr: u64, out: &mut [u8]) -> KResult<()> {
    if out.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: out.len(),
    };
    // SAFETY: `local` describes `out`, writable for its length; the kernel checks `remote`
    // (our own address space) and fails with EFAULT rather than faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == out.len() as isize {
        Ok(())
    } else {
        Err(libc::EFAULT)
    }
}

/// Copy `data` to this process's address `addr` with `process_vm_writev` (EFAULT for an
/// unmapped or read-only address; see [`vm_read`]).
fn vm_write(addr: u64, data: &[u8]) -> KResult<()> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data`, readable for its length (the kernel only reads it);
    // the kernel checks `remote` and fails with EFAULT rather than faulting.
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == data.len() as isize {
        Ok(())
    } else {
        Err(libc::EFAULT)
    }
}

/// Read a `T` from user address `addr` (`copy_from_user`; NULL or unreadable -> EFAULT).
///
/// # Safety
/// `addr` must be 0, unmapped/unreadable, or point to `size_of::<T>()` readable bytes, and
/// any bit pattern must be a valid `T` (the uAPI structs read here are plain integers).
unsafe fn get_user<T: Copy>(addr: u64) -> KResult<T> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `v` is `size_of::<T>()` writable bytes; viewed as bytes only to be filled.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>())
    };
    vm_read(addr, bytes)?;
    // SAFETY: every byte was written by `vm_read`, and any bit pattern is a valid `T`.
    Ok(unsafe { v.assume_init() })
}

/// Write `v` to user address `addr` (`copy_to_user`; NULL or unwritable -> EFAULT).
///
/// # Safety
/// `addr` must be 0, unmapped/read-only, or point to `size_of::<T>()` writable bytes that
/// nothing else borrows.
unsafe fn put_user<T: Copy>(addr: u64, v: &T) -> KResult<()> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    // SAFETY: `v` is a live `T`; its bytes are read only (the uAPI structs have no padding
    // holes: they are packed or all-u64).
    let bytes = unsafe {
        std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    vm_write(addr, bytes)
}

/// Copy `len` bytes from user memory (NULL or unreadable -> EFAULT).
///
/// # Safety
/// `addr` must be 0, unmapped/unreadable, or point to `len` readable bytes.
unsafe fn copy_from_user(addr: u64, len: usize) -> KResult<Vec<u8>> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = vec![0u8; len];
    // A copy through the kernel, not a `&[u8]`: user memory may be guest RAM.
    vm_read(addr, &mut out)?;
    Ok(out)
}

/// Copy `data` to user memory (NULL or unwritable -> EFAULT).
///
/// # Safety
/// `addr` must be 0, unmapped/read-only, or point to `data.len()` writable bytes not
/// aliased by `data` nor borrowed elsewhere.
unsafe fn copy_to_user(addr: u64, data: &[u8]) -> KResult<()> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    vm_write(addr, data)
}

/// `(st_dev, st_ino)` of an open fd, or EBADF.
fn file_id(fd: RawFd) -> KResult<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a writable `struct stat`; fstat only writes it, and fails cleanly
    // (EBADF) for an fd that is not open.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if r < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: fstat succeeded, so it initialised `st` (and it was zeroed before).
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Whether `fd` was opened for writing (the driver's `FMODE_WRITE`).
fn fd_writable(fd: RawFd) -> bool {
    // SAFETY: F_GETFL reads the open file's status flags and touches no memory.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && (fl & libc::O_ACCMODE) != libc::O_RDONLY
}

/// Driver-cached platform state (`sev->state`): only UNINIT and INIT are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrvState {
    Uninit,
    Init,
}

/// One entry of [`Loopback::log`]: an SEV-relevant ioctl on VM number `vm`, and whether the
/// kernel accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// VM number (1-based, in creation order).
    pub vm: u32,
    /// What: `KVM_CREATE_VCPU`, `KVM_SEV_INIT`, `KVM_SEV_ES_INIT`, `KVM_SEV_INIT2`,
    /// `LAUNCH_START`, `REG_REGION`, `LAUNCH_UPDATE_DATA`, `LAUNCH_UPDATE_VMSA`,
    /// `LAUNCH_MEASURE`, `LAUNCH_SECRET`, `LAUNCH_FINISH`, ... (`KVM_SEV_CMD_<id>` otherwise).
    pub op: String,
    /// The errno, or 0 if the ioctl succeeded.
    pub errno: i32,
}

/// One emulated VM (`struct kvm_sev_info` plus what KVM keeps about the VM).
struct Vm {
    /// VM number, for the log.
    no: u32,
    vm_type: u32,
    need_init: bool,
    active: bool,
    es_active: bool,
    asid: u32,
    handle: u32,
    /// `sev->fd`, remembered at LAUNCH_START.
    sev_fd: RawFd,
    /// `sev->vmsa_features`.
    vmsa_features: u64,
    /// The real KVM VM fd, for a VM announced with `vm_created`.
    real: Option<RawFd>,
    /// The vCPUs, in creation order: where `sev_es_sync_vmsa` finds their registers.
    vcpus: Vec<Vcpu>,
    /// LAUNCH_UPDATE_VMSA done (`guest_state_protected`).
    vmsa_done: bool,
    /// Registered regions: (addr, size, pages).
    regions: Vec<(u64, u64, u64)>,
    /// `sev->pages_locked`.
    pages_locked: u64,
    /// `sev->ghcb_version`.
    ghcb_version: u16,
    /// `sev->snp_context`: the firmware's guest context after SNP_LAUNCH_START.
    snp_ctx: Option<SoftSnpGuest>,
    /// vCPUs whose VMSA SNP_LAUNCH_FINISH measured (`guest_state_protected`), in order.
    snp_protected: usize,
    /// The VMSAs SNP_LAUNCH_FINISH measured, in vCPU order.
    snp_vmsas: Vec<[u8; PAGE as usize]>,
    /// Memslots (address space 0).
    slots: Vec<Slot>,
    /// `kvm->mem_attr_array`: GFN -> attributes (absent = 0).
    attrs: HashMap<u64, u64>,
}

/// One memslot of `KVM_SET_USER_MEMORY_REGION2`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    base_gfn: u64,
    npages: u64,
    uaddr: u64,
    flags: u32,
    /// The bound guest_memfd (its key) and the slot's first page in it (`gmem.pgoff`).
    gmem: Option<((u64, u64), u64)>,
}

/// A guest_memfd: its pages, and which of them were populated (`folio_test_uptodate`).
struct Gmem {
    vm: (u64, u64),
    size: u64,
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
    prepared: HashSet<u64>,
}

impl Vm {
    fn new(no: u32, vm_type: u32, real: Option<RawFd>) -> Vm {
        let sev_type = vm_type == kb::KVM_X86_SEV_VM
            || vm_type == kb::KVM_X86_SEV_ES_VM
            || vm_type == kb::KVM_X86_SNP_VM;
        Vm {
            no,
            vm_type,
            need_init: sev_type,
            active: false,
            es_active: false,
            asid: 0,
            handle: 0,
            sev_fd: -1,
            vmsa_features: 0,
            real,
            vcpus: Vec::new(),
            vmsa_done: false,
            regions: Vec::new(),
            pages_locked: 0,
            ghcb_version: 0,
            snp_ctx: None,
            snp_protected: 0,
            snp_vmsas: Vec::new(),
            slots: Vec::new(),
            attrs: HashMap::new(),
        }
    }

    /// `sev_snp_guest`: initialised with SNP_ACTIVE in its VMSA features.
    fn snp_active(&self) -> bool {
        self.active && self.vmsa_features & super::snp::SVM_SEV_FEAT_SNP_ACTIVE != 0
    }

    /// `kvm_arch_has_private_mem`: SNP VMs.
    fn has_private_mem(&self) -> bool {
        self.vm_type == kb::KVM_X86_SNP_VM
    }

    /// `gfn_to_memslot`.
    fn slot_of(&self, gfn: u64) -> Option<Slot> {
        self.slots
            .iter()
            .find(|s| gfn >= s.base_gfn && gfn - s.base_gfn < s.npages)
            .copied()
    }

    /// `kvm->created_vcpus != 0`: vCPUs created through the loopback, or (real VM) any
    /// vCPU the real kernel knows of: KVM_SET_BOOT_CPU_ID(0) answers EBUSY then (and
    /// otherwise sets the boot vCPU to 0, the default).
    fn created_vcpus(&self) -> bool {
        if !self.vcpus.is_empty() {
            return true;
        }
        match self.real {
            Some(fd) => {
                // SAFETY: KVM_SET_BOOT_CPU_ID takes an integer argument and touches no memory.
                let r = unsafe { libc::ioctl(fd, KVM_SET_BOOT_CPU_ID as _, 0usize) };
                r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY)
            }
            None => false,
        }
    }
}

/// Where a vCPU's registers are.
enum Vcpu {
    /// A vCPU of a real KVM VM: its fd (KVM_GET_* read the registers).
    Real(RawFd),
    /// An emulated vCPU: its register state.
    Emulated(Box<VcpuState>),
}

/// The emulated kernel.
struct Kernel {
    drv: DrvState,
    tmr: bool,
    vms: HashMap<(u64, u64), Vm>,
    /// user page -> model PA page.
    phys: HashMap<u64, u64>,
    /// user page -> the user's bytes as of the last copy in or out (see `sync_in`).
    shadow: HashMap<u64, Box<[u8; PAGE as usize]>>,
    next_pa: u64,
    /// Kernel allocation cursor (reset per ioctl).
    kpa: u64,
    asid_used: Vec<bool>,
    asid_reclaim: Vec<bool>,
    next_vm: u32,
    /// Real KVM VM fd -> its key in `vms`.
    real: HashMap<RawFd, (u64, u64)>,
    /// Emulated vCPU file -> (its VM's key, its index).
    vcpu_files: HashMap<(u64, u64), ((u64, u64), usize)>,
    /// RLIMIT_MEMLOCK and CAP_IPC_LOCK as `sev_pin_memory` sees them.
    memlock: Memlock,
    /// `sev_supported_vmsa_features`.
    vmsa_features: u64,
    /// guest_memfd files -> their state.
    gmems: HashMap<(u64, u64), Gmem>,
    next_gmem: u32,
    log: Vec<LogEntry>,
}

/// The loopback kernel: one emulated `/dev/sev` and any number of emulated VMs.
pub struct Loopback {
    plat: SoftPlatform,
    /// The SNP side of the emulated PSP, if the test gave one ([`Loopback::with_snp`]); the
    /// driver then has SNP initialised, as Linux does when KVM loads on an SNP host.
    snp: Option<crate::snp::soft::SoftSnpPlatform>,
    dev_path: PathBuf,
    dev_id: (u64, u64),
    kvm_path: PathBuf,
    kvm_id: (u64, u64),
    dir: PathBuf,
    k: Mutex<Kernel>,
}

impl Loopback {
    /// A kernel whose `/dev/sev` is the file `dir/sev` (opened by the code under test like
    /// the real device), backed by a soft platform in `dir/platform`. Panics on I/O errors
    /// (tests); [`Loopback::open`] is the fallible form.
    pub fn new(dir: &Path) -> Loopback {
        let pdir = dir.join("platform");
        std::fs::create_dir_all(&pdir).expect("creating the platform directory");
        let plat = SoftPlatform::open(&pdir).expect("opening the soft platform");
        Loopback::open(plat, dir).expect("creating the emulated /dev/sev and /dev/kvm")
    }

    /// A kernel over an already opened soft platform, its emulated `/dev/sev` and `/dev/kvm`
    /// files (and VM files) created in `dev_dir`. Used by `sevm shim`'s server.
    pub fn open(plat: SoftPlatform, dev_dir: &Path) -> io::Result<Loopback> {
        let dev_path = dev_dir.join("sev");
        let dev = File::create(&dev_path)?;
        let dev_id = file_id(dev.as_raw_fd()).map_err(os)?;
        let kvm_path = dev_dir.join("kvm");
        let kvm = File::create(&kvm_path)?;
        let kvm_id = file_id(kvm.as_raw_fd()).map_err(os)?;
        Ok(Loopback {
            plat,
            snp: None,
            dev_path,
            dev_id,
            kvm_path,
            kvm_id,
            dir: dev_dir.to_path_buf(),
            k: Mutex::new(Kernel {
                drv: DrvState::Uninit,
                tmr: true,
                vms: HashMap::new(),
                phys: HashMap::new(),
                shadow: HashMap::new(),
                next_pa: USER_PA_BASE,
                kpa: KERNEL_PA_BASE,
                asid_used: vec![false; MAX_ASID as usize + 1],
                asid_reclaim: vec![false; MAX_ASID as usize + 1],
                next_vm: 0,
                real: HashMap::new(),
                vcpu_files: HashMap::new(),
                memlock: Memlock {
                    limit: None,
                    cap_ipc_lock: false,
                },
                vmsa_features: SVM_SEV_FEAT_DEBUG_SWAP,
                gmems: HashMap::new(),
                next_gmem: 0,
                log: Vec::new(),
            }),
        })
    }

    /// Gives the emulated PSP an SNP side: the SNP commands of `/dev/sev` (9-12) reach `p`,
    /// which is SNP_INIT-ed now (Linux initialises SNP when KVM loads on an SNP host).
    pub fn with_snp(self, p: crate::snp::soft::SoftSnpPlatform) -> Loopback {
        self.try_with_snp(p)
            .expect("SNP_INIT of the loopback's soft SNP platform")
    }

    /// [`Loopback::with_snp`], returning SNP_INIT's error instead of panicking.
    pub fn try_with_snp(mut self, p: crate::snp::soft::SoftSnpPlatform) -> crate::Result<Loopback> {
        use crate::snp::SnpPlatform;
        p.snp_init()?;
        self.snp = Some(p);
        Ok(self)
    }

    /// The SNP platform behind the emulated PSP, if any.
    pub fn snp_platform(&self) -> Option<&crate::snp::soft::SoftSnpPlatform> {
        self.snp.as_ref()
    }

    /// The soft platform behind the emulated PSP.
    pub fn platform(&self) -> &SoftPlatform {
        &self.plat
    }

    /// Path of the emulated `/dev/sev`.
    pub fn sev_path(&self) -> &Path {
        &self.dev_path
    }

    /// Path of the emulated `/dev/kvm` (answers KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES)).
    pub fn kvm_path(&self) -> &Path {
        &self.kvm_path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.k.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// KVM_CREATE_VM with `vm_type`: returns the VM "fd" (a file the kernel recognises).
    pub fn create_vm(&self, vm_type: u32) -> File {
        let mut k = self.lock();
        k.next_vm += 1;
        let no = k.next_vm;
        let path = self.dir.join(format!("vm-{no}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("creating an emulated VM file");
        let id = file_id(f.as_raw_fd()).expect("fstat of the emulated VM");
        k.vms.insert(id, Vm::new(no, vm_type, None));
        f
    }

    /// KVM_CREATE_VCPU on an emulated VM, the vCPU then holding the registers `state` (as
    /// if the VMM had set them): LAUNCH_UPDATE_VMSA builds its VMSA from them.
    pub fn add_vcpu(&self, vm: &File, state: VcpuState) {
        let id = file_id(vm.as_raw_fd()).expect("fstat of the VM");
        let mut k = self.lock();
        let v = k.vms.get_mut(&id).expect("a VM of this loopback");
        v.vcpus.push(Vcpu::Emulated(Box::new(state)));
    }

    /// Closing the VM fd (`sev_vm_destroy`): unpin regions, DEACTIVATE + DECOMMISSION,
    /// ASID to the reclaim set.
    pub fn destroy_vm(&self, vm: File) {
        let id = file_id(vm.as_raw_fd()).expect("fstat of the VM");
        let mut k = self.lock();
        if let Some(v) = k.vms.remove(&id) {
            self.vm_destroyed(&mut k, v);
        }
    }

    fn vm_destroyed(&self, k: &mut Kernel, mut v: Vm) {
        if !v.active {
            return;
        }
        if let Some(mut ctx) = v.snp_ctx.take() {
            // snp_decommission_context.
            let _ = ctx.snp_decommission();
        }
        if v.handle != 0 {
            let mut b = [0u8; 4];
            wr32(&mut b, 0, v.handle);
            let _ = self.plat.execute(fwcmd::DEACTIVATE, &mut b);
            let _ = self.plat.execute(fwcmd::DECOMMISSION, &mut b);
        }
        if v.asid != 0 {
            k.asid_reclaim[v.asid as usize] = true;
        }
    }

    /// Sets RLIMIT_MEMLOCK (bytes, `None` = unlimited) and CAP_IPC_LOCK as the modelled
    /// kernel applies them to pinning (and as [`IoctlPort::memlock`] reports them).
    pub fn set_memlock(&self, limit: Option<u64>, cap_ipc_lock: bool) {
        self.lock().memlock = Memlock {
            limit,
            cap_ipc_lock,
        };
    }

    /// Sets `sev_supported_vmsa_features` (default: DEBUG_SWAP, as on a host with it).
    pub fn set_supported_vmsa_features(&self, features: u64) {
        self.lock().vmsa_features = features;
    }

    /// Pages currently pinned for the VM numbered `vm` (`sev->pages_locked`), if it exists.
    pub fn pages_locked(&self, vm: u32) -> Option<u64> {
        self.lock()
            .vms
            .values()
            .find(|v| v.no == vm)
            .map(|v| v.pages_locked)
    }

    /// Every SEV-relevant ioctl so far, in order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock().log.clone()
    }

    fn note(k: &mut Kernel, vm: u32, op: &str, r: &KResult<impl Sized>) {
        k.log.push(LogEntry {
            vm,
            op: op.to_string(),
            errno: match r {
                Ok(_) => 0,
                Err(e) => *e,
            },
        });
    }

    // ------------------------------------------------------------ PSP plumbing

    /// `__sev_do_cmd_locked`: run the firmware; status into `error`; non-SUCCESS -> EIO.
    fn fw(&self, cmd: u32, buf: &mut [u8], error: Option<&mut u32>) -> KResult<()> {
        let s = self.plat.execute(cmd, buf);
        if let Some(e) = error {
            *e = s.code();
        }
        if s == Status::Success {
            Ok(())
        } else {
            Err(libc::EIO)
        }
    }

    /// `__sev_platform_init_locked`: INIT (+ES with a TMR) then DF_FLUSH.
    fn platform_init(&self, k: &mut Kernel, error: &mut u32) -> KResult<()> {
        if k.drv == DrvState::Init {
            return Ok(());
        }
        let mut b = [0u8; 0x14];
        if k.tmr {
            wr32(&mut b, 0, 1);
            wr64(&mut b, 8, TMR_PA);
            wr32(&mut b, 0x10, 1 << 20);
        }
        self.fw(fwcmd::INIT, &mut b, Some(error))?;
        k.drv = DrvState::Init;
        self.fw(fwcmd::DF_FLUSH, &mut [], Some(error))
    }

    /// `__sev_platform_shutdown_locked`.
    fn platform_shutdown(&self, k: &mut Kernel, error: &mut u32) -> KResult<()> {
        if k.drv == DrvState::Uninit {
            return Ok(());
        }
        self.fw(fwcmd::SHUTDOWN, &mut [], Some(error))?;
        k.drv = DrvState::Uninit;
        Ok(())
    }

    /// A kernel buffer (kzalloc) in model PA space holding `data`.
    fn kalloc(&self, k: &mut Kernel, data: &[u8]) -> KResult<u64> {
        let pa = k.kpa;
        k.kpa += (data.len() as u64).div_ceil(PAGE).max(1) * PAGE;
        self.plat.write_pa(pa, data).map_err(|_| libc::ENOMEM)?;
        Ok(pa)
    }

    fn kread(&self, pa: u64, len: u32) -> KResult<Vec<u8>> {
        self.plat
            .read_pa(pa, len as usize)
            .map_err(|_| libc::EFAULT)
    }

    /// `psp_copy_user_blob` into a kernel buffer: returns its PA.
    ///
    /// # Safety
    /// `uaddr` must be 0 or point to `len` readable bytes.
    unsafe fn copy_user_blob(&self, k: &mut Kernel, uaddr: u64, len: u32) -> KResult<u64> {
        if uaddr == 0 || len == 0 || len > BLOB_MAX {
            return Err(libc::EINVAL);
        }
        // SAFETY: forwarded from this function's contract.
        let data = unsafe { copy_from_user(uaddr, len as usize) }?;
        self.kalloc(k, &data)
    }

    // ------------------------------------------------------------ pinned memory

    /// `sev_pin_memory`: model PAs of the pages of `[uaddr, uaddr+len)`.
    fn pin(&self, k: &mut Kernel, uaddr: u64, len: u64) -> KResult<Vec<u64>> {
        let end = uaddr.checked_add(len).ok_or(libc::EINVAL)?;
        if len == 0 {
            return Err(libc::EINVAL);
        }
        let (first, last) = (uaddr / PAGE, (end - 1) / PAGE);
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for p in first..=last {
            let pa = match k.phys.get(&p) {
                Some(&pa) => pa,
                None => {
                    let pa = k.next_pa;
                    k.next_pa += PAGE;
                    k.phys.insert(p, pa);
                    k.shadow.insert(p, Box::new([0u8; PAGE as usize]));
                    pa
                }
            };
            out.push(pa);
        }
        Ok(out)
    }

    /// `sev_pin_memory` for `vm`: EINVAL for an empty or wrapping range, ENOMEM when the
    /// VM's pinned pages would exceed RLIMIT_MEMLOCK without CAP_IPC_LOCK; else the pages,
    /// counted in `vm.pages_locked` until [`unpin`](Self::unpin).
    fn pin_locked(&self, k: &mut Kernel, vm: &mut Vm, uaddr: u64, len: u64) -> KResult<Vec<u64>> {
        let end = uaddr.checked_add(len).ok_or(libc::EINVAL)?;
        if len == 0 {
            return Err(libc::EINVAL);
        }
        let npages = (end - 1) / PAGE - uaddr / PAGE + 1;
        let total = vm.pages_locked + npages;
        if let Some(limit) = k.memlock.limit {
            if total > limit / PAGE && !k.memlock.cap_ipc_lock {
                return Err(libc::ENOMEM);
            }
        }
        let pages = self.pin(k, uaddr, len)?;
        vm.pages_locked = total;
        Ok(pages)
    }

    /// `sev_unpin_memory`.
    fn unpin(vm: &mut Vm, pages: &[u64]) {
        vm.pages_locked -= pages.len() as u64;
    }

    /// For a real VM (its guest runs without memory encryption): put the guest's view
    /// (plaintext under its key) of `[uaddr, uaddr+len)` back into the host mapping.
    ///
    /// # Safety
    /// `len` writable bytes at `uaddr`.
    unsafe fn reveal(&self, k: &mut Kernel, vm: &Vm, uaddr: u64, len: u64) -> KResult<()> {
        if vm.real.is_none() {
            return Ok(());
        }
        let key = self
            .plat
            .with_fw(|fw| fw.guest(vm.handle).map(|g| g.key.clone()))
            .map_err(|_| libc::EIO)?;
        let mut data = Vec::with_capacity(len as usize);
        let mut done = 0u64;
        while done < len {
            let a = uaddr + done;
            let (page, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE - a % PAGE).min(len - done) as usize;
            let pa = k.phys[&page] + off as u64;
            let (lo, hi) = (pa & !15, (pa + n as u64).next_multiple_of(16));
            let mut blk = self.kread(lo, (hi - lo) as u32)?;
            key.decrypt(lo, &mut blk).map_err(|_| libc::EIO)?;
            let plain = &blk[(pa - lo) as usize..(pa - lo) as usize + n];
            let shadow = k.shadow.get_mut(&page).ok_or(libc::EFAULT)?;
            shadow[off..off + n].copy_from_slice(plain);
            data.extend_from_slice(plain);
            done += n as u64;
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { copy_to_user(uaddr, &data) }
    }

    /// Copy the user bytes `[uaddr, uaddr+len)` into their pinned physical pages. Only
    /// bytes the user changed since the last copy are taken: the model's PA page is the
    /// memory, the user mapping a view of it, and the firmware may have rewritten whole
    /// 16-byte blocks around a caller's range (DBG_ENCRYPT's read-modify-write) that the
    /// model only copies back within the caller's range.
    ///
    /// # Safety
    /// `len` readable bytes at `uaddr`.
    unsafe fn sync_in(&self, k: &mut Kernel, uaddr: u64, len: u64) -> KResult<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.sync_in_as(k, uaddr, len, false) }
    }

    /// [`sync_in`](Self::sync_in), or with `all` every byte of the range: for a real VM,
    /// whose host mapping holds the guest's plaintext while the PA page holds ciphertext
    /// (see [`reveal`](Self::reveal)), what the host hands to a launch command is the
    /// mapping's content, as on hardware where the host's write reaches DRAM unencrypted.
    ///
    /// # Safety
    /// `len` readable bytes at `uaddr`.
    unsafe fn sync_in_as(&self, k: &mut Kernel, uaddr: u64, len: u64, all: bool) -> KResult<()> {
        // SAFETY: forwarded from this function's contract.
        let data = unsafe { copy_from_user(uaddr, len as usize) }?;
        self.pin(k, uaddr, len)?;
        let mut done = 0u64;
        while done < len {
            let a = uaddr + done;
            let (page, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE - a % PAGE).min(len - done) as usize;
            let pa = k.phys[&page] + off as u64;
            let mut phys = self.kread(pa, n as u32)?;
            let shadow = k.shadow.get_mut(&page).ok_or(libc::EFAULT)?;
            for i in 0..n {
                let u = data[done as usize + i];
                if all || u != shadow[off + i] {
                    phys[i] = u;
                    shadow[off + i] = u;
                }
            }
            self.plat.write_pa(pa, &phys).map_err(|_| libc::EFAULT)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copy the physical pages behind `[uaddr, uaddr+len)` back to the user mapping.
    ///
    /// # Safety
    /// `len` writable bytes at `uaddr`.
    unsafe fn sync_out(&self, k: &mut Kernel, uaddr: u64, len: u64) -> KResult<()> {
        self.pin(k, uaddr, len)?;
        let mut data = Vec::with_capacity(len as usize);
        let mut done = 0u64;
        while done < len {
            let a = uaddr + done;
            let (page, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE - a % PAGE).min(len - done) as usize;
            let chunk = self.kread(k.phys[&page] + off as u64, n as u32)?;
            let shadow = k.shadow.get_mut(&page).ok_or(libc::EFAULT)?;
            shadow[off..off + n].copy_from_slice(&chunk);
            data.extend(chunk);
            done += n as u64;
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { copy_to_user(uaddr, &data) }
    }

    // ------------------------------------------------------------ /dev/sev

    /// `sev_ioctl`.
    ///
    /// # Safety
    /// The `IoctlPort::ioctl` contract for `arg`.
    unsafe fn sev_ioctl(&self, fd: RawFd, request: u64, arg: u64) -> KResult<i32> {
        if request != SEV_ISSUE_CMD {
            return Err(libc::EINVAL);
        }
        let writable = fd_writable(fd);
        // SAFETY: `arg` points to a live sev_issue_cmd (the port contract).
        let mut input: super::SevIssueCmd = unsafe { get_user(arg) }?;
        if input.cmd > 12 {
            // SEV_MAX
            return Err(libc::EINVAL);
        }
        let mut k = self.lock();
        k.kpa = KERNEL_PA_BASE;
        let data = input.data;
        let mut error = input.error;
        // SAFETY: `data` is the command struct `input.cmd` expects (the port contract).
        let r = unsafe {
            match input.cmd {
                0 => self.do_reset(&mut k, writable, &mut error),
                1 => self.do_platform_status(data, &mut error),
                2 => self.do_pek_pdh_gen(&mut k, fwcmd::PEK_GEN, writable, &mut error),
                4 => self.do_pek_pdh_gen(&mut k, fwcmd::PDH_GEN, writable, &mut error),
                3 => self.do_pek_csr(&mut k, data, writable, &mut error),
                6 => self.do_pek_import(&mut k, data, writable, &mut error),
                5 => self.do_pdh_export(&mut k, data, writable, &mut error),
                8 => self.do_get_id2(&mut k, data, &mut error),
                9 => self.do_snp_platform_status(data, &mut error),
                10 => self.do_snp_commit(&mut error),
                11 => self.do_snp_set_config(data, writable, &mut error),
                12 => self.do_snp_vlek_load(data, writable, &mut error),
                // GET_ID (deprecated) is not emulated.
                _ => return Err(libc::EINVAL),
            }
        };
        input.error = error;
        // SAFETY: as above; the driver copies the whole sev_issue_cmd back.
        unsafe { put_user(arg, &input) }?;
        r.map(|()| 0)
    }

    fn do_reset(&self, k: &mut Kernel, writable: bool, error: &mut u32) -> KResult<()> {
        if !writable {
            return Err(libc::EPERM);
        }
        let mut st = [0u8; 12];
        self.fw(fwcmd::PLATFORM_STATUS, &mut st, Some(error))?;
        match st[2] {
            2 => return Err(libc::EBUSY),
            // __sev_platform_shutdown_locked goes by the driver's cached state.
            1 => self.platform_shutdown(k, error)?,
            _ => {}
        }
        self.fw(fwcmd::PLATFORM_RESET, &mut [], Some(error))
    }

    /// An SNP firmware result as `__sev_do_cmd_locked` returns it: the status into `error`,
    /// non-SUCCESS -> EIO.
    fn snp_fw(r: crate::Result<()>, error: &mut u32) -> KResult<()> {
        match r {
            Ok(()) => {
                *error = Status::Success.code();
                Ok(())
            }
            Err(e) => {
                *error = e.status().map_or(0, |s| s.code());
                Err(libc::EIO)
            }
        }
    }

    /// `sev_ioctl_do_snp_platform_status` (Linux 6.11): no writable or init check; the
    /// firmware writes a page the driver copies 32 bytes of back.
    unsafe fn do_snp_platform_status(&self, data: u64, error: &mut u32) -> KResult<()> {
        use crate::snp::SnpPlatform;
        if data == 0 {
            return Err(libc::EINVAL);
        }
        let Some(p) = &self.snp else {
            // A PSP without SNP does not know the command.
            *error = Status::InvalidCommand.code();
            return Err(libc::EIO);
        };
        let st = p.snp_platform_status();
        let bytes = st.as_ref().map(|s| s.to_bytes()).map_err(|_| ());
        Self::snp_fw(st.map(|_| ()), error)?;
        let b = bytes.map_err(|()| libc::EIO)?;
        // SAFETY: `data` points to a 32-byte sev_user_data_snp_status (port contract).
        unsafe { copy_to_user(data, &b) }
    }

    /// `sev_ioctl_do_snp_commit` (Linux 6.11): SNP must be initialised (EINVAL); no writable
    /// check.
    fn do_snp_commit(&self, error: &mut u32) -> KResult<()> {
        let Some(p) = &self.snp else {
            return Err(libc::EINVAL);
        };
        Self::snp_fw(p.snp_commit(), error)
    }

    /// `sev_ioctl_do_snp_set_config` (Linux 6.11): init and data (EINVAL), writable (EPERM),
    /// then the 64-byte config to the firmware's SNP_CONFIG (reserved bytes MBZ:
    /// INVALID_PARAM, as the firmware checks).
    unsafe fn do_snp_set_config(&self, data: u64, writable: bool, error: &mut u32) -> KResult<()> {
        let Some(p) = &self.snp else {
            return Err(libc::EINVAL);
        };
        if data == 0 {
            return Err(libc::EINVAL);
        }
        if !writable {
            return Err(libc::EPERM);
        }
        // SAFETY: `data` points to a 64-byte sev_user_data_snp_config (port contract).
        let c: super::SevUserDataSnpConfig = unsafe { get_user(data) }?;
        let rsvd = c.rsvd;
        if rsvd.iter().any(|&b| b != 0) {
            *error = Status::InvalidParam.code();
            return Err(libc::EIO);
        }
        let cfg = crate::snp::soft::SnpConfig {
            reported_tcb: c.reported_tcb,
            flags: c.flags,
        };
        Self::snp_fw(p.snp_config(&cfg), error)
    }

    /// `sev_ioctl_do_snp_vlek_load` (Linux 6.11): init and data (EINVAL), writable (EPERM),
    /// `len` 16 and version 0 (EINVAL), the 0x1B0-byte blob copied in (EFAULT), then the soft
    /// firmware's SNP_VLEK_LOAD (a refusal: EIO with its status).
    unsafe fn do_snp_vlek_load(&self, data: u64, writable: bool, error: &mut u32) -> KResult<()> {
        let Some(p) = &self.snp else {
            return Err(libc::EINVAL);
        };
        if data == 0 {
            return Err(libc::EINVAL);
        }
        if !writable {
            return Err(libc::EPERM);
        }
        // SAFETY: `data` points to a 16-byte sev_user_data_snp_vlek_load (port contract).
        let c: super::SevUserDataSnpVlekLoad = unsafe { get_user(data) }?;
        let (len, ver, addr) = (c.len, c.vlek_wrapped_version, c.vlek_wrapped_address);
        if len != 16 || ver != 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller promised a 0x1B0-byte blob at `addr` (port contract).
        let blob = unsafe { copy_from_user(addr, super::SNP_WRAPPED_VLEK_SIZE) }?;
        Self::snp_fw(p.vlek_load(&blob), error)
    }

    unsafe fn do_platform_status(&self, data: u64, error: &mut u32) -> KResult<()> {
        let mut st = [0u8; 12];
        self.fw(fwcmd::PLATFORM_STATUS, &mut st, Some(error))?;
        // SAFETY: `data` points to a 12-byte sev_user_data_status (port contract).
        unsafe { copy_to_user(data, &st) }
    }

    fn do_pek_pdh_gen(
        &self,
        k: &mut Kernel,
        cmd: u32,
        writable: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if !writable {
            return Err(libc::EPERM);
        }
        if k.drv == DrvState::Uninit {
            self.platform_init(k, error)?;
        }
        self.fw(cmd, &mut [], Some(error))
    }

    unsafe fn do_pek_csr(
        &self,
        k: &mut Kernel,
        data: u64,
        writable: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if !writable {
            return Err(libc::EPERM);
        }
        // SAFETY: `data` points to a sev_user_data_pek_csr (port contract).
        let mut input: super::SevUserDataAddrLen = unsafe { get_user(data) }?;
        let mut b = [0u8; 12];
        let (addr, orig_len) = (input.address, input.length);
        let mut blob = None;
        if addr != 0 && orig_len != 0 {
            if orig_len > BLOB_MAX {
                return Err(libc::EFAULT);
            }
            let pa = self.kalloc(k, &vec![0u8; orig_len as usize])?;
            wr64(&mut b, 0, pa);
            wr32(&mut b, 8, orig_len);
            blob = Some(pa);
        }
        if k.drv == DrvState::Uninit {
            self.platform_init(k, error)?;
        }
        let r = self.fw(fwcmd::PEK_CSR, &mut b, Some(error));
        input.length = rd32(&b, 8);
        // SAFETY: as above.
        unsafe { put_user(data, &input) }?;
        if let Some(pa) = blob {
            // The driver copies `input.length` (the firmware's answer) bytes; the model
            // never writes past the caller's original length.
            let out = self.kread(pa, input.length.min(orig_len))?;
            // SAFETY: `addr` points to `orig_len` writable bytes (port contract).
            unsafe { copy_to_user(addr, &out) }?;
        }
        r
    }

    unsafe fn do_pek_import(
        &self,
        k: &mut Kernel,
        data: u64,
        writable: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if !writable {
            return Err(libc::EPERM);
        }
        // SAFETY: `data` points to a sev_user_data_pek_cert_import (port contract).
        let input: super::SevUserDataTwoBufs = unsafe { get_user(data) }?;
        let mut b = [0u8; 0x1C];
        // SAFETY: the embedded addresses point to buffers of the stated lengths.
        let pek = unsafe { self.copy_user_blob(k, input.addr1, input.len1) }?;
        // SAFETY: as above.
        let oca = unsafe { self.copy_user_blob(k, input.addr2, input.len2) }?;
        wr64(&mut b, 0, pek);
        wr32(&mut b, 8, input.len1);
        wr64(&mut b, 0x10, oca);
        wr32(&mut b, 0x18, input.len2);
        if k.drv != DrvState::Init {
            self.platform_init(k, error)?;
        }
        self.fw(fwcmd::PEK_CERT_IMPORT, &mut b, Some(error))
    }

    unsafe fn do_pdh_export(
        &self,
        k: &mut Kernel,
        data: u64,
        writable: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if k.drv != DrvState::Init {
            if !writable {
                return Err(libc::EPERM);
            }
            self.platform_init(k, error)?;
        }
        // SAFETY: `data` points to a sev_user_data_pdh_cert_export (port contract).
        let mut input: super::SevUserDataTwoBufs = unsafe { get_user(data) }?;
        let (pdh_addr, pdh_len, chain_addr, chain_len) =
            (input.addr1, input.len1, input.addr2, input.len2);
        let mut b = [0u8; 0x1C];
        let mut blobs = None;
        if pdh_addr != 0 && pdh_len != 0 && chain_addr != 0 {
            if pdh_len > BLOB_MAX || chain_len > BLOB_MAX {
                return Err(libc::EFAULT);
            }
            let p = self.kalloc(k, &vec![0u8; pdh_len as usize])?;
            let c = self.kalloc(k, &vec![0u8; chain_len as usize])?;
            wr64(&mut b, 0, p);
            wr32(&mut b, 8, pdh_len);
            wr64(&mut b, 0x10, c);
            wr32(&mut b, 0x18, chain_len);
            blobs = Some((p, c));
        }
        let r = self.fw(fwcmd::PDH_CERT_EXPORT, &mut b, Some(error));
        input.len1 = rd32(&b, 8);
        input.len2 = rd32(&b, 0x18);
        // SAFETY: as above.
        unsafe { put_user(data, &input) }?;
        if let Some((p, c)) = blobs {
            // Copied whether or not the firmware succeeded (zeros on failure), as the
            // driver does; never past the caller's original lengths.
            let pdh = self.kread(p, input.len1.min(pdh_len))?;
            let chain = self.kread(c, input.len2.min(chain_len))?;
            // SAFETY: the user buffers hold at least their original lengths.
            unsafe {
                copy_to_user(pdh_addr, &pdh)?;
                copy_to_user(chain_addr, &chain)?;
            }
        }
        r
    }

    unsafe fn do_get_id2(&self, k: &mut Kernel, data: u64, error: &mut u32) -> KResult<()> {
        // SAFETY: `data` points to a sev_user_data_get_id2 (port contract).
        let mut input: super::SevUserDataAddrLen = unsafe { get_user(data) }?;
        let (addr, orig_len) = (input.address, input.length);
        let mut b = [0u8; 12];
        let mut blob = None;
        if addr != 0 && orig_len != 0 {
            // kzalloc(input.length): over KMALLOC_MAX_SIZE it fails -> ENOMEM.
            if orig_len > KMALLOC_MAX {
                return Err(libc::ENOMEM);
            }
            let pa = self.kalloc(k, &vec![0u8; orig_len as usize])?;
            wr64(&mut b, 0, pa);
            wr32(&mut b, 8, orig_len);
            blob = Some(pa);
        }
        let r = self.fw(fwcmd::GET_ID, &mut b, Some(error));
        input.length = rd32(&b, 8);
        // SAFETY: as above.
        unsafe { put_user(data, &input) }?;
        if let Some(pa) = blob {
            let out = self.kread(pa, input.length.min(orig_len))?;
            // SAFETY: `addr` points to `orig_len` writable bytes (port contract).
            unsafe { copy_to_user(addr, &out) }?;
        }
        r
    }

    // ------------------------------------------------------------ KVM

    /// `sev_issue_cmd_external_user` on the fd number `fd` of this process.
    fn check_sev_fd(&self, fd: RawFd) -> KResult<()> {
        if fd < 0 || file_id(fd)? != self.dev_id {
            return Err(libc::EBADF);
        }
        Ok(())
    }

    /// `sev_issue_cmd`: through the VM's remembered `sev->fd`.
    fn vm_cmd(&self, vm: &Vm, cmd: u32, buf: &mut [u8], error: &mut u32) -> KResult<()> {
        self.check_sev_fd(vm.sev_fd)?;
        self.fw(cmd, buf, Some(error))
    }

    /// The VM key and index of the emulated vCPU whose file is `id`.
    fn vcpu_file(&self, id: (u64, u64)) -> Option<((u64, u64), usize)> {
        self.lock().vcpu_files.get(&id).copied()
    }

    /// KVM vCPU ioctls on an emulated vCPU: KVM_SET_REGS and KVM_SET_SREGS update the state
    /// LAUNCH_UPDATE_VMSA builds the VMSA from (once it is protected: EINVAL, as KVM's
    /// `guest_state_protected`); anything else is ENOTTY.
    ///
    /// # Safety
    /// The `IoctlPort::ioctl` contract for `arg`.
    unsafe fn vcpu_ioctl(
        &self,
        vm: (u64, u64),
        index: usize,
        request: u64,
        arg: u64,
    ) -> KResult<i32> {
        let mut k = self.lock();
        let v = k.vms.get_mut(&vm).ok_or(libc::EBADF)?;
        let protected = v.vmsa_done;
        let Some(Vcpu::Emulated(st)) = v.vcpus.get_mut(index) else {
            return Err(libc::EBADF);
        };
        match request {
            KVM_SET_REGS | KVM_SET_SREGS if protected => Err(libc::EINVAL),
            KVM_SET_REGS => {
                // SAFETY: `arg` points to a kvm_regs (port contract).
                let r: kb::kvm_regs = unsafe { get_user(arg) }?;
                kvm_state::apply_regs(st, &r);
                Ok(0)
            }
            KVM_SET_SREGS => {
                // SAFETY: `arg` points to a kvm_sregs (port contract).
                let r: kb::kvm_sregs = unsafe { get_user(arg) }?;
                kvm_state::apply_sregs(st, &r);
                Ok(0)
            }
            _ => Err(libc::ENOTTY),
        }
    }

    /// KVM VM ioctls.
    ///
    /// # Safety
    /// The `IoctlPort::ioctl` contract for `arg`.
    unsafe fn vm_ioctl(&self, id: (u64, u64), request: u64, arg: u64) -> KResult<i32> {
        match request {
            KVM_MEMORY_ENCRYPT_OP => {
                if arg == 0 {
                    return Ok(0);
                }
                // SAFETY: `arg` points to a kvm_sev_cmd (port contract).
                let mut cmd: kb::kvm_sev_cmd = unsafe { get_user(arg) }?;
                let mut k = self.lock();
                k.kpa = KERNEL_PA_BASE;
                // sev_mem_enc_ioctl: an SNP guest takes only the SNP commands (EPERM, no copy
                // back).
                if let Some((no, true)) = k.vms.get(&id).map(|v| (v.no, v.snp_active())) {
                    if cmd.id < super::snp::KVM_SEV_SNP_LAUNCH_START {
                        let r: KResult<()> = Err(libc::EPERM);
                        Self::note(&mut k, no, &format!("KVM_SEV_CMD_{}", cmd.id), &r);
                        return Err(libc::EPERM);
                    }
                }
                // SAFETY: `cmd.data` is the struct `cmd.id` expects (port contract).
                let r = unsafe { self.mem_enc_op(&mut k, id, &mut cmd) };
                if r == Err(-1) {
                    // Unknown id: no copy back.
                    return Err(libc::EINVAL);
                }
                // SAFETY: as above.
                unsafe { put_user(arg, &cmd) }?;
                r.map(|()| 0)
            }
            KVM_MEMORY_ENCRYPT_REG_REGION | KVM_MEMORY_ENCRYPT_UNREG_REGION => {
                // SAFETY: `arg` points to a kvm_enc_region (port contract).
                let range: kb::kvm_enc_region = unsafe { get_user(arg) }?;
                let mut k = self.lock();
                let unreg = request == KVM_MEMORY_ENCRYPT_UNREG_REGION;
                let mut vm = k.vms.remove(&id).ok_or(libc::ENOTTY)?;
                let r = if !vm.active {
                    Err(libc::ENOTTY)
                } else if unreg {
                    match vm
                        .regions
                        .iter()
                        .position(|&(a, sz, _)| (a, sz) == (range.addr, range.size))
                    {
                        Some(i) => {
                            let (_, _, n) = vm.regions.remove(i);
                            vm.pages_locked -= n;
                            Ok(0)
                        }
                        None => Err(libc::EINVAL),
                    }
                } else {
                    self.pin_locked(&mut k, &mut vm, range.addr, range.size)
                        .map(|pages| {
                            vm.regions
                                .push((range.addr, range.size, pages.len() as u64));
                            0
                        })
                };
                let op = if unreg { "UNREG_REGION" } else { "REG_REGION" };
                Self::note(&mut k, vm.no, op, &r);
                k.vms.insert(id, vm);
                r
            }
            KVM_CHECK_EXTENSION => self.vm_check_extension(id, arg),
            super::snp::KVM_CREATE_GUEST_MEMFD => {
                // SAFETY: `arg` points to a kvm_create_guest_memfd (port contract).
                unsafe { self.create_guest_memfd(id, arg) }
            }
            super::snp::KVM_SET_USER_MEMORY_REGION2 => {
                // SAFETY: `arg` points to a kvm_userspace_memory_region2 (port contract).
                unsafe { self.set_user_memory_region2(id, arg) }.map(|()| 0)
            }
            super::snp::KVM_SET_MEMORY_ATTRIBUTES => {
                // SAFETY: `arg` points to a kvm_memory_attributes (port contract).
                unsafe { self.set_memory_attributes(id, arg) }.map(|()| 0)
            }
            KVM_CREATE_VCPU => {
                let mut k = self.lock();
                let vm = k.vms.get(&id).ok_or(libc::ENOTTY)?;
                let (no, real, index) = (vm.no, vm.real, vm.vcpus.len());
                let r = match real {
                    // SAFETY: KVM_CREATE_VCPU takes an integer argument.
                    Some(fd) => match unsafe { libc::ioctl(fd, KVM_CREATE_VCPU as _, arg) } {
                        r if r < 0 => Err(io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(libc::EIO)),
                        r => Ok(r),
                    },
                    None => {
                        let path = self.dir.join(format!("vm-{no}-vcpu-{arg}"));
                        match File::create(&path) {
                            Ok(f) => Ok(std::os::fd::IntoRawFd::into_raw_fd(f)),
                            Err(_) => Err(libc::ENOMEM),
                        }
                    }
                };
                if let Ok(fd) = r {
                    let vcpu = match real {
                        Some(_) => Vcpu::Real(fd),
                        None => {
                            if let Ok(f) = file_id(fd) {
                                k.vcpu_files.insert(f, (id, index));
                            }
                            // kvm_vcpu_reset's state until KVM_SET_* through the port.
                            Vcpu::Emulated(Box::new(VcpuState::kvm_reset()))
                        }
                    };
                    if let Some(v) = k.vms.get_mut(&id) {
                        v.vcpus.push(vcpu);
                    }
                }
                Self::note(&mut k, no, "KVM_CREATE_VCPU", &r);
                r
            }
            _ => Err(libc::ENOTTY),
        }
    }

    /// `sev_mem_enc_ioctl`'s switch. `Err(-1)` = unknown id (EINVAL without copy back).
    ///
    /// # Safety
    /// `cmd.data` is 0 or points to the struct `cmd.id` expects, with valid user addresses.
    unsafe fn mem_enc_op(
        &self,
        k: &mut Kernel,
        id: (u64, u64),
        cmd: &mut kb::kvm_sev_cmd,
    ) -> KResult<()> {
        let mut vm = k.vms.remove(&id).ok_or(libc::ENOTTY)?;
        let data = cmd.data;
        let mut error = cmd.error;
        let op = match cmd.id {
            kb::sev_cmd_id_KVM_SEV_INIT => "KVM_SEV_INIT".to_string(),
            kb::sev_cmd_id_KVM_SEV_ES_INIT => "KVM_SEV_ES_INIT".to_string(),
            kb::sev_cmd_id_KVM_SEV_INIT2 => "KVM_SEV_INIT2".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_START => "LAUNCH_START".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_DATA => "LAUNCH_UPDATE_DATA".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_VMSA => "LAUNCH_UPDATE_VMSA".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE => "LAUNCH_MEASURE".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_SECRET => "LAUNCH_SECRET".to_string(),
            kb::sev_cmd_id_KVM_SEV_LAUNCH_FINISH => "LAUNCH_FINISH".to_string(),
            kb::sev_cmd_id_KVM_SEV_GUEST_STATUS => "GUEST_STATUS".to_string(),
            kb::sev_cmd_id_KVM_SEV_DBG_DECRYPT => "DBG_DECRYPT".to_string(),
            kb::sev_cmd_id_KVM_SEV_DBG_ENCRYPT => "DBG_ENCRYPT".to_string(),
            kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT => "ATTESTATION".to_string(),
            kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START => "SNP_LAUNCH_START".to_string(),
            kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE => "SNP_LAUNCH_UPDATE".to_string(),
            kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH => "SNP_LAUNCH_FINISH".to_string(),
            other => format!("KVM_SEV_CMD_{other}"),
        };
        // SAFETY: forwarded from this function's contract.
        let r = unsafe {
            match cmd.id {
                kb::sev_cmd_id_KVM_SEV_INIT | kb::sev_cmd_id_KVM_SEV_ES_INIT => {
                    if vm.vm_type != 0 {
                        Err(libc::EINVAL)
                    } else {
                        let es = cmd.id == kb::sev_cmd_id_KVM_SEV_ES_INIT;
                        self.guest_init_common(k, &mut vm, es, &mut error)
                    }
                }
                kb::sev_cmd_id_KVM_SEV_INIT2 => self.guest_init2(k, &mut vm, data, &mut error),
                kb::sev_cmd_id_KVM_SEV_LAUNCH_START => {
                    self.launch_start(k, &mut vm, data, cmd.sev_fd as RawFd, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_DATA => {
                    self.launch_update_data(k, &mut vm, data, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_VMSA => {
                    self.launch_update_vmsa(&mut vm, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE => {
                    self.measure_or_report(k, &vm, data, false, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_GET_ATTESTATION_REPORT => {
                    self.measure_or_report(k, &vm, data, true, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_LAUNCH_SECRET => {
                    self.launch_secret(k, &mut vm, data, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_LAUNCH_FINISH => {
                    if !vm.active {
                        Err(libc::ENOTTY)
                    } else {
                        let mut b = [0u8; 4];
                        wr32(&mut b, 0, vm.handle);
                        self.vm_cmd(&vm, fwcmd::LAUNCH_FINISH, &mut b, &mut error)
                    }
                }
                kb::sev_cmd_id_KVM_SEV_GUEST_STATUS => self.guest_status(&vm, data, &mut error),
                kb::sev_cmd_id_KVM_SEV_DBG_DECRYPT => {
                    self.dbg_crypt(k, &mut vm, data, true, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_DBG_ENCRYPT => {
                    self.dbg_crypt(k, &mut vm, data, false, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START => {
                    self.snp_launch_start(k, &mut vm, data, cmd.sev_fd as RawFd, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE => {
                    self.snp_launch_update(k, &mut vm, data, cmd.sev_fd as RawFd, &mut error)
                }
                kb::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH => {
                    self.snp_launch_finish(&mut vm, data, cmd.sev_fd as RawFd, &mut error)
                }
                // Migration, CERT_EXPORT and SNP_ENABLE_REQ_CERTS are not emulated.
                _ => Err(-1),
            }
        };
        if r != Err(-1) {
            Self::note(k, vm.no, &op, &r);
        }
        k.vms.insert(id, vm);
        cmd.error = error;
        r
    }

    /// `__sev_guest_init` after its argument checks: a VM with vCPUs, or one already
    /// initialised (`sev->active`), is refused with EINVAL.
    fn guest_init_common(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        es: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if vm.created_vcpus() || vm.active {
            return Err(libc::EINVAL);
        }
        // sev_asid_new: ES guests take 1..MIN_SEV_ASID-1, SEV guests MIN_SEV_ASID..=MAX.
        let (lo, hi) = if es {
            (1, MIN_SEV_ASID - 1)
        } else {
            (MIN_SEV_ASID, MAX_ASID)
        };
        let free = |k: &Kernel| (lo..=hi).find(|&a| !k.asid_used[a as usize]);
        let asid = match free(k) {
            Some(a) => a,
            None => {
                // __sev_recycle_asids: DF_FLUSH if something is reclaimable.
                if !(lo..=hi).any(|a| k.asid_reclaim[a as usize]) {
                    return Err(libc::EBUSY);
                }
                let mut e = 0;
                self.fw(fwcmd::DF_FLUSH, &mut [], Some(&mut e))
                    .map_err(|_| libc::EBUSY)?;
                for a in 0..k.asid_reclaim.len() {
                    if k.asid_reclaim[a] {
                        k.asid_reclaim[a] = false;
                        k.asid_used[a] = false;
                    }
                }
                free(k).ok_or(libc::EBUSY)?
            }
        };
        let mut init_error = 0;
        if let Err(e) = self.platform_init(k, &mut init_error) {
            *error = init_error;
            return Err(e);
        }
        k.asid_used[asid as usize] = true;
        vm.active = true;
        vm.es_active = es;
        vm.asid = asid;
        vm.need_init = false;
        Ok(())
    }

    /// `sev_guest_init2`.
    unsafe fn guest_init2(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.need_init {
            return Err(libc::EINVAL);
        }
        let snp = vm.vm_type == kb::KVM_X86_SNP_VM;
        if vm.vm_type != kb::KVM_X86_SEV_VM && vm.vm_type != kb::KVM_X86_SEV_ES_VM && !snp {
            return Err(libc::EINVAL);
        }
        if snp && self.snp.is_none() {
            // sev_snp_enabled is off: KVM would not have created the VM.
            return Err(libc::EINVAL);
        }
        // SAFETY: `data` points to a kvm_sev_init (caller's contract).
        let init: kb::kvm_sev_init = unsafe { get_user(data) }?;
        let es = vm.vm_type != kb::KVM_X86_SEV_VM;
        // __sev_guest_init's order: vCPUs, flags, VMSA features (SEV-ES and SNP only), GHCB
        // version (0 = 2 for ES/SNP; SNP needs 2), `sev->active`.
        if vm.created_vcpus() || init.flags != 0 {
            return Err(libc::EINVAL);
        }
        let valid = if es { k.vmsa_features } else { 0 };
        if init.vmsa_features & !valid != 0 {
            return Err(libc::EINVAL);
        }
        if init.ghcb_version > GHCB_VERSION_MAX || (!es && init.ghcb_version != 0) {
            return Err(libc::EINVAL);
        }
        let ghcb = if es && init.ghcb_version == 0 {
            GHCB_VERSION_MAX
        } else {
            init.ghcb_version
        };
        if snp && ghcb < 2 {
            return Err(libc::EINVAL);
        }
        // SNP guests take ASIDs from the SEV-ES range (min_snp_asid = 1).
        self.guest_init_common(k, vm, es, error)?;
        vm.ghcb_version = ghcb;
        vm.vmsa_features = init.vmsa_features;
        if snp {
            vm.vmsa_features |= super::snp::SVM_SEV_FEAT_SNP_ACTIVE;
        }
        Ok(())
    }

    /// `sev_launch_start` + `sev_bind_asid`.
    unsafe fn launch_start(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        sev_fd: RawFd,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        // SAFETY: `data` points to a kvm_sev_launch_start (caller's contract).
        let mut params: kb::kvm_sev_launch_start = unsafe { get_user(data) }?;
        let mut b = [0u8; 0x24];
        if params.dh_uaddr != 0 {
            // SAFETY: the GODH buffer has `dh_len` bytes (caller's contract).
            let pa = unsafe { self.copy_user_blob(k, params.dh_uaddr, params.dh_len) }?;
            wr64(&mut b, 8, pa);
            wr32(&mut b, 0x10, params.dh_len);
        }
        if params.session_uaddr != 0 {
            // SAFETY: the session buffer has `session_len` bytes (caller's contract).
            let pa = unsafe { self.copy_user_blob(k, params.session_uaddr, params.session_len) }?;
            wr64(&mut b, 0x18, pa);
            wr32(&mut b, 0x20, params.session_len);
        }
        wr32(&mut b, 0, params.handle);
        wr32(&mut b, 4, params.policy);
        self.check_sev_fd(sev_fd)?;
        self.fw(fwcmd::LAUNCH_START, &mut b, Some(error))?;
        let handle = rd32(&b, 0);
        let mut act = [0u8; 8];
        wr32(&mut act, 0, handle);
        wr32(&mut act, 4, vm.asid);
        if let Err(e) = self.fw(fwcmd::ACTIVATE, &mut act, Some(error)) {
            let _ = self.fw(fwcmd::DECOMMISSION, &mut act[..4], None);
            return Err(e);
        }
        params.handle = handle;
        // SAFETY: as above.
        unsafe { put_user(data, &params) }?;
        vm.handle = handle;
        vm.sev_fd = sev_fd;
        Ok(())
    }

    /// `sev_launch_update_data`.
    unsafe fn launch_update_data(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        // SAFETY: `data` points to a kvm_sev_launch_update_data (caller's contract).
        let params: kb::kvm_sev_launch_update_data = unsafe { get_user(data) }?;
        let (vaddr, size) = (params.uaddr, params.len as u64);
        let pages = self.pin_locked(k, vm, vaddr, size)?;
        // SAFETY: as below.
        let r = unsafe { self.update_pinned(k, vm, &pages, vaddr, size, error) };
        Self::unpin(vm, &pages);
        r
    }

    /// The firmware commands of `sev_launch_update_data` over pinned `pages`.
    ///
    /// # Safety
    /// `size` writable bytes at `vaddr`.
    unsafe fn update_pinned(
        &self,
        k: &mut Kernel,
        vm: &Vm,
        pages: &[u64],
        vaddr: u64,
        size: u64,
        error: &mut u32,
    ) -> KResult<()> {
        // SAFETY: `uaddr` points to `len` bytes of the caller's (writable) memory.
        unsafe { self.sync_in_as(k, vaddr, size, vm.real.is_some()) }?;
        let mut r = Ok(());
        let (mut i, mut v, mut left) = (0usize, vaddr, size);
        while left > 0 {
            let offset = v % PAGE;
            let mut n = 1;
            while i + n < pages.len() && pages[i + n] == pages[i + n - 1] + PAGE {
                n += 1;
            }
            let len = (n as u64 * PAGE - offset).min(left);
            let mut b = [0u8; 0x14];
            wr32(&mut b, 0, vm.handle);
            wr64(&mut b, 8, pages[i] + offset);
            wr32(&mut b, 0x10, len as u32);
            r = self.vm_cmd(vm, fwcmd::LAUNCH_UPDATE_DATA, &mut b, error);
            if r.is_err() {
                break;
            }
            left -= len;
            v += len;
            i += n;
        }
        // SAFETY: as above; the pages were updated in place.
        unsafe { self.sync_out(k, vaddr, size) }?;
        if r.is_ok() {
            // SAFETY: as above.
            unsafe { self.reveal(k, vm, vaddr, size) }?;
        }
        r
    }

    /// `sev_launch_update_vmsa`: every vCPU, in order; `sev_es_sync_vmsa` builds each VMSA
    /// from the vCPU's registers (refusing a DR7 with bits beyond 0x400) and fails once the
    /// state is protected.
    fn launch_update_vmsa(&self, vm: &mut Vm, error: &mut u32) -> KResult<()> {
        if !vm.active || !vm.es_active {
            return Err(libc::ENOTTY);
        }
        if vm.vmsa_done {
            return Err(libc::EINVAL);
        }
        if vm.vcpus.is_empty() && vm.created_vcpus() {
            // vCPUs created around the port: their registers cannot be found.
            return Err(libc::EINVAL);
        }
        let params = KvmVmsaParams {
            vmsa_features: vm.vmsa_features,
            init2: vm.vm_type != kb::KVM_X86_DEFAULT_VM,
        };
        for (i, vcpu) in vm.vcpus.iter().enumerate() {
            let state = match vcpu {
                Vcpu::Real(fd) => read_vcpu_state(*fd)?,
                Vcpu::Emulated(s) => **s,
            };
            if state.dr7 & !DR7_FIXED_1 != 0 {
                return Err(libc::EINVAL);
            }
            let vmsa = sev_proto::vmsa::kvm_es_vmsa(&state, &params);
            let pa = VMSA_PA_BASE + i as u64 * PAGE;
            self.plat
                .write_pa(pa, &vmsa[..])
                .map_err(|_| libc::ENOMEM)?;
            let mut b = [0u8; 0x14];
            wr32(&mut b, 0, vm.handle);
            wr64(&mut b, 8, pa);
            wr32(&mut b, 0x10, PAGE as u32);
            self.vm_cmd(vm, fwcmd::LAUNCH_UPDATE_VMSA, &mut b, error)?;
        }
        vm.vmsa_done = true;
        Ok(())
    }

    /// `sev_launch_measure` / `sev_get_attestation_report` (same length-probe shape).
    unsafe fn measure_or_report(
        &self,
        k: &mut Kernel,
        vm: &Vm,
        data: u64,
        report: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        // The len field of kvm_sev_launch_measure is at 8, of the report struct at 24.
        let (len_off, addr_off) = if report { (24, 16) } else { (8, 0) };
        let size = if report { 32 } else { 16 };
        // SAFETY: `data` points to the command struct (caller's contract).
        let mut params = unsafe { copy_from_user(data, size) }?;
        let ulen = rd32(&params, len_off);
        let uaddr = u64::from_le_bytes(params[addr_off..addr_off + 8].try_into().unwrap_or([0; 8]));
        let mut b = [0u8; 0x24];
        let mut blob = None;
        if ulen != 0 && uaddr != 0 {
            if ulen > BLOB_MAX {
                return Err(libc::EINVAL);
            }
            let pa = self.kalloc(k, &vec![0u8; ulen as usize])?;
            wr64(&mut b, 8, pa);
            if report {
                wr32(&mut b, 0x20, ulen);
                b[0x10..0x20].copy_from_slice(&params[0..16]);
            } else {
                wr32(&mut b, 0x10, ulen);
            }
            blob = Some(pa);
        }
        wr32(&mut b, 0, vm.handle);
        let (cmd, fw_len_off) = if report {
            (fwcmd::ATTESTATION, 0x20)
        } else {
            (fwcmd::LAUNCH_MEASURE, 0x10)
        };
        let r = self.vm_cmd(vm, cmd, &mut b, error);
        if ulen != 0 {
            r?;
            if let Some(pa) = blob {
                let out = self.kread(pa, ulen)?;
                // SAFETY: `uaddr` points to `ulen` writable bytes (caller's contract).
                unsafe { copy_to_user(uaddr, &out) }?;
            }
        }
        wr32(&mut params, len_off, rd32(&b, fw_len_off));
        // SAFETY: as above.
        unsafe { copy_to_user(data, &params) }?;
        r
    }

    /// `sev_launch_secret`: pins the guest destination (counted against RLIMIT_MEMLOCK),
    /// which must be physically contiguous; the header and the ciphertext are
    /// `psp_copy_user_blob`s (0 or over 16 KiB: EINVAL).
    unsafe fn launch_secret(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        // SAFETY: `data` points to a kvm_sev_launch_secret (caller's contract).
        let p: kb::kvm_sev_launch_secret = unsafe { get_user(data) }?;
        let (gaddr, glen) = (p.guest_uaddr, p.guest_len as u64);
        let pages = self.pin_locked(k, vm, gaddr, glen)?;
        // SAFETY: forwarded from this function's contract.
        let r = unsafe { self.secret_pinned(k, vm, &pages, &p, error) };
        Self::unpin(vm, &pages);
        r
    }

    /// `sev_launch_secret` once the destination is pinned.
    ///
    /// # Safety
    /// The buffers of `p` have their stated lengths (writable for the guest range).
    unsafe fn secret_pinned(
        &self,
        k: &mut Kernel,
        vm: &Vm,
        pages: &[u64],
        p: &kb::kvm_sev_launch_secret,
        error: &mut u32,
    ) -> KResult<()> {
        let (gaddr, glen) = (p.guest_uaddr, p.guest_len as u64);
        if pages.windows(2).any(|w| w[1] != w[0] + PAGE) {
            return Err(libc::EINVAL);
        }
        // SAFETY: the guest range has `guest_len` writable bytes (caller's contract).
        unsafe { self.sync_in_as(k, gaddr, glen, vm.real.is_some()) }?;
        // SAFETY: the packet buffers have their stated lengths (caller's contract).
        let trans = unsafe { self.copy_user_blob(k, p.trans_uaddr, p.trans_len) }?;
        // SAFETY: as above.
        let hdr = unsafe { self.copy_user_blob(k, p.hdr_uaddr, p.hdr_len) }?;
        let mut b = [0u8; 0x34];
        wr32(&mut b, 0, vm.handle);
        wr64(&mut b, 8, hdr);
        wr32(&mut b, 0x10, p.hdr_len);
        wr64(&mut b, 0x18, pages[0] + gaddr % PAGE);
        wr32(&mut b, 0x20, p.guest_len);
        wr64(&mut b, 0x28, trans);
        wr32(&mut b, 0x30, p.trans_len);
        let r = self.vm_cmd(vm, fwcmd::LAUNCH_SECRET, &mut b, error);
        // SAFETY: as above; the firmware wrote the guest pages in place.
        unsafe { self.sync_out(k, gaddr, glen) }?;
        if r.is_ok() {
            // SAFETY: as above.
            unsafe { self.reveal(k, vm, gaddr, glen) }?;
        }
        r
    }

    /// `sev_guest_status`.
    unsafe fn guest_status(&self, vm: &Vm, data: u64, error: &mut u32) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        let mut b = [0u8; 0x10];
        wr32(&mut b, 0, vm.handle);
        self.vm_cmd(vm, fwcmd::GUEST_STATUS, &mut b, error)?;
        let out = kb::kvm_sev_guest_status {
            handle: rd32(&b, 0),
            policy: rd32(&b, 4),
            state: b[0x0C] as u32,
        };
        // SAFETY: `data` points to a kvm_sev_guest_status (caller's contract).
        unsafe { put_user(data, &out) }
    }

    /// `__sev_issue_dbg_cmd`.
    fn dbg_cmd(
        &self,
        vm: &Vm,
        src: u64,
        dst: u64,
        len: u64,
        enc: bool,
        error: &mut u32,
    ) -> KResult<()> {
        let mut b = [0u8; 0x1C];
        wr32(&mut b, 0, vm.handle);
        wr64(&mut b, 8, src);
        wr64(&mut b, 0x10, dst);
        wr32(&mut b, 0x18, len as u32);
        let cmd = if enc {
            fwcmd::DBG_ENCRYPT
        } else {
            fwcmd::DBG_DECRYPT
        };
        self.vm_cmd(vm, cmd, &mut b, error)
    }

    /// `__sev_dbg_decrypt`: rounds the source down and the size up to 16 bytes.
    fn dbg_decrypt_pa(&self, vm: &Vm, src: u64, dst: u64, sz: u64, e: &mut u32) -> KResult<()> {
        let off = src & 15;
        self.dbg_cmd(vm, src - off, dst, (sz + off).div_ceil(16) * 16, false, e)
    }

    /// `sev_dbg_crypt` with `__sev_dbg_decrypt_user` / `__sev_dbg_encrypt_user`.
    unsafe fn dbg_crypt(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        dec: bool,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.active {
            return Err(libc::ENOTTY);
        }
        // SAFETY: `data` points to a kvm_sev_dbg (caller's contract).
        let d: kb::kvm_sev_dbg = unsafe { get_user(data) }?;
        let len = d.len as u64;
        if len == 0 || d.src_uaddr.checked_add(len).is_none() {
            return Err(libc::EINVAL);
        }
        if d.dst_uaddr == 0 {
            return Err(libc::EINVAL);
        }
        let (mut vaddr, end, mut dst) = (d.src_uaddr, d.src_uaddr + len, d.dst_uaddr);
        let mut size = len;
        while vaddr < end {
            let s_off = vaddr % PAGE;
            let d_off = dst % PAGE;
            let n = (PAGE - s_off).min(size);
            // Both pages count against RLIMIT_MEMLOCK for the chunk (`sev_dbg_crypt`).
            let src_p = self.pin_locked(k, vm, vaddr & !(PAGE - 1), PAGE)?;
            let dst_p = match self.pin_locked(k, vm, dst & !(PAGE - 1), PAGE) {
                Ok(p) => p,
                Err(e) => {
                    Self::unpin(vm, &src_p);
                    return Err(e);
                }
            };
            Self::unpin(vm, &src_p);
            Self::unpin(vm, &dst_p);
            let (src_pa, dst_pa) = (src_p[0] + s_off, dst_p[0] + d_off);
            // SAFETY: the source and destination ranges hold `len` bytes each (caller's
            // contract); this chunk lies inside them.
            unsafe {
                self.sync_in(k, vaddr, n)?;
                self.sync_in(k, dst, n)?;
            }
            if dec {
                if !(dst_pa.is_multiple_of(16) && src_pa.is_multiple_of(16) && n.is_multiple_of(16))
                {
                    let t = self.kalloc(k, &[0u8; PAGE as usize])?;
                    self.dbg_decrypt_pa(vm, src_pa, t, n, error)?;
                    let out = self.kread(t + (src_pa & 15), n as u32)?;
                    // SAFETY: `dst` has `n` writable bytes (caller's contract).
                    unsafe { copy_to_user(dst, &out) }?;
                } else {
                    self.dbg_decrypt_pa(vm, src_pa, dst_pa, n, error)?;
                    // SAFETY: as above.
                    unsafe { self.sync_out(k, dst, n) }?;
                }
            } else {
                let mut paddr = src_pa;
                let mut src_bytes = None;
                if !vaddr.is_multiple_of(16) {
                    // SAFETY: as above.
                    let b = unsafe { copy_from_user(vaddr, n as usize) }?;
                    paddr = self.kalloc(k, &b)?;
                    src_bytes = Some(b);
                }
                let (mut dpa, mut l) = (dst_pa, n);
                if !(dst.is_multiple_of(16) && n.is_multiple_of(16)) {
                    let t = self.kalloc(k, &[0u8; PAGE as usize])?;
                    self.dbg_decrypt_pa(vm, dst_pa, t, n, error)?;
                    let b = match src_bytes {
                        Some(b) => b,
                        // SAFETY: as above.
                        None => unsafe { copy_from_user(vaddr, n as usize) }?,
                    };
                    self.plat
                        .write_pa(t + (dst_pa & 15), &b)
                        .map_err(|_| libc::EFAULT)?;
                    paddr = t;
                    dpa = dst_pa & !15;
                    l = n.div_ceil(16) * 16;
                }
                self.dbg_cmd(vm, paddr, dpa, l, true, error)?;
                // SAFETY: as above.
                unsafe { self.sync_out(k, dst, n) }?;
            }
            vaddr += n;
            dst += n;
            size -= n;
        }
        Ok(())
    }
}

/// `KVM_SNP_POLICY_MASK_VALID` as Linux 6.11 has it (API minor/major, SMT, RSVD_MBO, DEBUG,
/// SINGLE_SOCKET); later kernels add bits 21-25 only where the firmware reports them (SNP
/// FEATURE_INFO), which the soft firmware (API 1.55) does not.
pub const KVM_SNP_POLICY_BITS: u64 = 0xFFFF | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 20;
/// `SNP_POLICY_MASK_RSVD_MBO`.
const SNP_POLICY_RSVD_MBO: u64 = 1 << 17;
/// `KVM_USER_MEM_SLOTS` on x86.
const KVM_USER_MEM_SLOTS: u32 = 32764;
const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1;
const KVM_MEM_READONLY: u32 = 2;

/// `psp_copy_user_blob` without the kernel buffer: NULL, 0 or over 16 KiB is EINVAL.
///
/// # Safety
/// `uaddr` must be 0 or point to `len` readable bytes.
unsafe fn user_blob(uaddr: u64, len: usize) -> KResult<Vec<u8>> {
    if uaddr == 0 || len == 0 || len > BLOB_MAX as usize {
        return Err(libc::EINVAL);
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { copy_from_user(uaddr, len) }
}

/// The SNP side of the model: KVM's VM types and capabilities, guest_memfd, memslots with
/// guest_memfd, memory attributes and the KVM_SEV_SNP_* commands, after Linux (sev.c,
/// guest_memfd.c and kvm_main.c as read in gregkh/linux 00b9744a / 39389369, 6.12 for
/// `__kvm_set_memory_region`): see [`super::snp`] for what each call does.
impl Loopback {
    /// KVM_CAP_VM_TYPES: default, SEV, SEV-ES, and SNP when the PSP has an SNP side.
    fn vm_types(&self) -> i32 {
        let mut t = (1 << kb::KVM_X86_DEFAULT_VM)
            | (1 << kb::KVM_X86_SEV_VM)
            | (1 << kb::KVM_X86_SEV_ES_VM);
        if self.snp.is_some() {
            t |= 1 << kb::KVM_X86_SNP_VM;
        }
        t
    }

    /// KVM_CHECK_EXTENSION on `/dev/kvm` (`kvm == NULL`): guest_memfd and PRIVATE are
    /// offered (some VM type has private memory); other caps read as absent.
    fn kvm_check_extension(&self, cap: u64) -> i32 {
        match cap as u32 {
            super::snp::KVM_CAP_GUEST_MEMFD | super::snp::KVM_CAP_USER_MEMORY2 => 1,
            super::snp::KVM_CAP_MEMORY_ATTRIBUTES => {
                super::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE as i32
            }
            _ => 0,
        }
    }

    /// KVM_CHECK_EXTENSION on a VM: guest_memfd and the PRIVATE attribute only for VMs with
    /// private memory (`kvm_arch_has_private_mem`); a real VM asks the real kernel.
    fn vm_check_extension(&self, id: (u64, u64), cap: u64) -> KResult<i32> {
        let k = self.lock();
        let vm = k.vms.get(&id).ok_or(libc::EBADF)?;
        let private = vm.has_private_mem();
        let private_cap = matches!(
            cap as u32,
            super::snp::KVM_CAP_GUEST_MEMFD
                | super::snp::KVM_CAP_MEMORY_ATTRIBUTES
                | super::snp::KVM_CAP_USER_MEMORY2
        );
        if let Some(fd) = vm.real {
            if !(private && private_cap) {
                // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and touches no memory.
                let r = unsafe { libc::ioctl(fd, KVM_CHECK_EXTENSION as _, cap) };
                return Ok(r.max(0));
            }
        }
        Ok(match cap as u32 {
            super::snp::KVM_CAP_GUEST_MEMFD => i32::from(private),
            super::snp::KVM_CAP_MEMORY_ATTRIBUTES if private => {
                super::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE as i32
            }
            super::snp::KVM_CAP_USER_MEMORY2 => 1,
            c if c == kb::KVM_CAP_VM_TYPES => self.vm_types(),
            _ => 0,
        })
    }

    /// `kvm_gmem_create`: flags 0 (Linux 6.11), size a non-zero multiple of 4 KiB; the fd is
    /// a file of the loopback's directory. A real VM has one only when it stands for an SNP VM
    /// (ENOTTY on a real default-type VM, as this host's kernel answers).
    unsafe fn create_guest_memfd(&self, id: (u64, u64), arg: u64) -> KResult<i32> {
        // SAFETY: `arg` points to a kvm_create_guest_memfd (caller's contract).
        let g: kb::kvm_create_guest_memfd = unsafe { get_user(arg) }?;
        let mut k = self.lock();
        let (no, real) = {
            let vm = k.vms.get(&id).ok_or(libc::EBADF)?;
            (vm.no, vm.real.is_some() && !vm.has_private_mem())
        };
        let r = if real {
            Err(libc::ENOTTY)
        } else if g.flags != 0
            || g.size == 0
            || g.size > i64::MAX as u64
            || !g.size.is_multiple_of(PAGE)
        {
            Err(libc::EINVAL)
        } else {
            k.next_gmem += 1;
            let path = self.dir.join(format!("vm-{no}-gmem-{}", k.next_gmem));
            match File::create(&path) {
                Ok(f) => {
                    let key = file_id(f.as_raw_fd())?;
                    k.gmems.insert(
                        key,
                        Gmem {
                            vm: id,
                            size: g.size,
                            pages: HashMap::new(),
                            prepared: HashSet::new(),
                        },
                    );
                    Ok(std::os::fd::IntoRawFd::into_raw_fd(f))
                }
                Err(_) => Err(libc::ENOMEM),
            }
        };
        Self::note(&mut k, no, "CREATE_GUEST_MEMFD", &r);
        r
    }

    /// `kvm_set_memory_region` (6.12) and `kvm_gmem_bind`, address space 0.
    unsafe fn set_user_memory_region2(&self, id: (u64, u64), arg: u64) -> KResult<()> {
        // SAFETY: `arg` points to a kvm_userspace_memory_region2 (caller's contract).
        let m: kb::kvm_userspace_memory_region2 = unsafe { get_user(arg) }?;
        let mut k = self.lock();
        let mut vm = k.vms.remove(&id).ok_or(libc::EBADF)?;
        let before = vm.slots.clone();
        let mut r = Self::memslot(&mut k, &mut vm, id, &m);
        if let (Ok(()), Some(fd)) = (r, vm.real) {
            // The shared half goes to the real kernel, which runs the guest from it.
            r = real_memslot(fd, &m);
            if r.is_err() {
                vm.slots = before;
            }
        }
        Self::note(&mut k, vm.no, "SET_USER_MEMORY_REGION2", &r);
        k.vms.insert(id, vm);
        r
    }

    fn memslot(
        k: &mut Kernel,
        vm: &mut Vm,
        id: (u64, u64),
        m: &kb::kvm_userspace_memory_region2,
    ) -> KResult<()> {
        let gmem_flag = m.flags & super::snp::KVM_MEM_GUEST_MEMFD != 0;
        // check_memory_region_flags (6.11: GUEST_MEMFD only where the VM has private memory;
        // no dirty logging on it; no read-only memory on it or on a protected-state VM).
        let mut valid = KVM_MEM_LOG_DIRTY_PAGES;
        if vm.has_private_mem() {
            valid |= super::snp::KVM_MEM_GUEST_MEMFD;
        }
        if gmem_flag {
            valid &= !KVM_MEM_LOG_DIRTY_PAGES;
        }
        if (vm.vm_type == kb::KVM_X86_DEFAULT_VM || vm.vm_type == kb::KVM_X86_SEV_VM) && !gmem_flag
        {
            valid |= KVM_MEM_READONLY;
        }
        if m.flags & !valid != 0 {
            return Err(libc::EINVAL);
        }
        if !m.memory_size.is_multiple_of(PAGE)
            || !m.guest_phys_addr.is_multiple_of(PAGE)
            || !m.userspace_addr.is_multiple_of(PAGE)
        {
            return Err(libc::EINVAL);
        }
        if gmem_flag
            && (!m.guest_memfd_offset.is_multiple_of(PAGE)
                || m.guest_memfd_offset.checked_add(m.memory_size).is_none())
        {
            return Err(libc::EINVAL);
        }
        let (as_id, sid) = (m.slot >> 16, m.slot & 0xFFFF);
        let nr_as = if vm.vm_type == kb::KVM_X86_DEFAULT_VM {
            2
        } else {
            1
        };
        if as_id >= nr_as || sid >= KVM_USER_MEM_SLOTS {
            return Err(libc::EINVAL);
        }
        if m.guest_phys_addr.checked_add(m.memory_size).is_none() {
            return Err(libc::EINVAL);
        }
        if as_id != 0 {
            // SMM address space: accepted, not modelled.
            return Ok(());
        }
        let old = vm.slots.iter().position(|s| s.id == sid);
        if m.memory_size == 0 {
            let i = old.ok_or(libc::EINVAL)?;
            vm.slots.remove(i);
            return Ok(());
        }
        let (base_gfn, npages) = (m.guest_phys_addr / PAGE, m.memory_size / PAGE);
        if let Some(i) = old {
            // Private memslots are immutable: they can only be deleted.
            let o = vm.slots[i];
            if gmem_flag
                || m.userspace_addr != o.uaddr
                || npages != o.npages
                || (m.flags ^ o.flags) & (KVM_MEM_READONLY | super::snp::KVM_MEM_GUEST_MEMFD) != 0
            {
                return Err(libc::EINVAL);
            }
            if vm.slots.iter().any(|s| {
                s.id != sid && base_gfn < s.base_gfn + s.npages && s.base_gfn < base_gfn + npages
            }) {
                return Err(libc::EEXIST);
            }
            vm.slots[i].base_gfn = base_gfn;
            vm.slots[i].flags = m.flags;
            return Ok(());
        }
        if vm
            .slots
            .iter()
            .any(|s| base_gfn < s.base_gfn + s.npages && s.base_gfn < base_gfn + npages)
        {
            return Err(libc::EEXIST);
        }
        let mut gmem = None;
        if gmem_flag {
            // kvm_gmem_bind: a file (EBADF), a guest_memfd of this VM, the range inside it and
            // not bound to another slot (EINVAL).
            let key = file_id(m.guest_memfd as RawFd)?;
            let g = k.gmems.get(&key).ok_or(libc::EINVAL)?;
            if g.vm != id {
                return Err(libc::EINVAL);
            }
            if m.guest_memfd_offset + m.memory_size > g.size {
                return Err(libc::EINVAL);
            }
            let (start, end) = (
                m.guest_memfd_offset / PAGE,
                m.guest_memfd_offset / PAGE + npages,
            );
            let overlaps = vm.slots.iter().any(|s| match s.gmem {
                Some((gk, off)) => gk == key && start < off + s.npages && off < end,
                None => false,
            });
            if overlaps {
                return Err(libc::EINVAL);
            }
            gmem = Some((key, start));
        }
        vm.slots.push(Slot {
            id: sid,
            base_gfn,
            npages,
            uaddr: m.userspace_addr,
            flags: m.flags,
            gmem,
        });
        Ok(())
    }

    /// `kvm_vm_ioctl_set_mem_attributes`: flags MBZ, only supported attributes, a non-empty,
    /// non-wrapping, page-aligned range (all EINVAL); any GFN, memslot or not.
    unsafe fn set_memory_attributes(&self, id: (u64, u64), arg: u64) -> KResult<()> {
        // SAFETY: `arg` points to a kvm_memory_attributes (caller's contract).
        let a: kb::kvm_memory_attributes = unsafe { get_user(arg) }?;
        let mut k = self.lock();
        let vm = k.vms.get_mut(&id).ok_or(libc::EBADF)?;
        let no = vm.no;
        let supported = if vm.has_private_mem() {
            super::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE
        } else {
            0
        };
        let r = if vm.real.is_some() && !vm.has_private_mem() {
            // The real kernel here has no memory attributes (CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES).
            Err(libc::ENOTTY)
        } else if a.flags != 0
            || a.attributes & !supported != 0
            || a.size == 0
            || a.address.checked_add(a.size).is_none()
            || !a.address.is_multiple_of(PAGE)
            || !a.size.is_multiple_of(PAGE)
        {
            Err(libc::EINVAL)
        } else {
            for gfn in a.address / PAGE..(a.address + a.size) / PAGE {
                if a.attributes == 0 {
                    vm.attrs.remove(&gfn);
                } else {
                    vm.attrs.insert(gfn, a.attributes);
                }
            }
            Ok(())
        };
        Self::note(&mut k, no, "SET_MEMORY_ATTRIBUTES", &r);
        r
    }

    /// An SNP firmware refusal as `__sev_do_cmd_locked` returns it.
    fn snp_status(e: &crate::FwError) -> u32 {
        e.status()
            .map_or(Status::HwerrorPlatform.code(), |s| s.code())
    }

    /// `snp_launch_start`: SNP guest (ENOTTY), one context (EINVAL), flags MBZ, policy within
    /// [`KVM_SNP_POLICY_BITS`] with bit 17 set (EINVAL); then GCTX_CREATE through `sev_fd`
    /// (failure: ENOTTY with the firmware's status), LAUNCH_START and ACTIVATE with the VM's
    /// ASID (failure: EIO, context decommissioned).
    unsafe fn snp_launch_start(
        &self,
        _k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        sev_fd: RawFd,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.snp_active() {
            return Err(libc::ENOTTY);
        }
        // SAFETY: `data` points to a kvm_sev_snp_launch_start (caller's contract).
        let p: kb::kvm_sev_snp_launch_start = unsafe { get_user(data) }?;
        if vm.snp_ctx.is_some() || p.flags != 0 {
            return Err(libc::EINVAL);
        }
        if p.policy & !KVM_SNP_POLICY_BITS != 0 || p.policy & SNP_POLICY_RSVD_MBO == 0 {
            return Err(libc::EINVAL);
        }
        if self.check_sev_fd(sev_fd).is_err() {
            return Err(libc::ENOTTY);
        }
        let snp = self.snp.as_ref().ok_or(libc::ENOTTY)?;
        let mut ctx = match snp.gctx_create() {
            Ok(c) => c,
            Err(e) => {
                *error = Self::snp_status(&e);
                return Err(libc::ENOTTY);
            }
        };
        let mut ls = SnpLaunchStart::new(sev_proto::snp::policy::SnpPolicy(p.policy));
        ls.gosvw = p.gosvw;
        ls.asid = vm.asid;
        if let Err(e) = ctx.snp_launch_start(&ls) {
            *error = Self::snp_status(&e);
            let _ = ctx.snp_decommission();
            return Err(libc::EIO);
        }
        *error = 0;
        vm.snp_ctx = Some(ctx);
        vm.sev_fd = sev_fd;
        Ok(())
    }

    /// `snp_launch_update` + `kvm_gmem_populate` + `sev_gmem_post_populate`.
    unsafe fn snp_launch_update(
        &self,
        k: &mut Kernel,
        vm: &mut Vm,
        data: u64,
        sev_fd: RawFd,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.snp_active() || vm.snp_ctx.is_none() {
            return Err(libc::EINVAL);
        }
        // SAFETY: `data` points to a kvm_sev_snp_launch_update (caller's contract).
        let mut p: kb::kvm_sev_snp_launch_update = unsafe { get_user(data) }?;
        let ty = p.type_;
        if p.len == 0
            || !p.len.is_multiple_of(PAGE)
            || p.flags != 0
            || !matches!(ty, 1 | 3 | 4 | 5 | 6)
        {
            return Err(libc::EINVAL);
        }
        let zero = ty == kb::KVM_SEV_SNP_PAGE_TYPE_ZERO as u8;
        let src = if zero { 0 } else { p.uaddr };
        if src % PAGE != 0 {
            return Err(libc::EINVAL);
        }
        let npages = p.len / PAGE;
        let slot = vm.slot_of(p.gfn_start).ok_or(libc::EINVAL)?;
        let (gkey, pgoff) = slot.gmem.ok_or(libc::EINVAL)?;
        // kvm_gmem_populate: cut at the memslot's end; page by page; a failure after the
        // first page is reported as the pages done.
        let npages = npages.min(slot.base_gfn + slot.npages - p.gfn_start);
        let mut fw_error = 0u32;
        let mut ret = 0i32;
        let mut i = 0u64;
        while i < npages {
            let gfn = p.gfn_start + i;
            let index = gfn - slot.base_gfn + pgoff;
            let g = k.gmems.get_mut(&gkey).ok_or(libc::EFAULT)?;
            if g.prepared.contains(&index) {
                ret = libc::EEXIST;
                break;
            }
            let private = vm.attrs.get(&gfn).copied().unwrap_or(0)
                & super::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE
                != 0;
            if !private {
                ret = libc::EINVAL;
                break;
            }
            let mut page = vec![0u8; PAGE as usize];
            if src != 0 {
                // SAFETY: `uaddr` holds `len` bytes (caller's contract); this page is inside.
                match unsafe { copy_from_user(src + i * PAGE, PAGE as usize) } {
                    Ok(b) => page = b,
                    Err(e) => {
                        ret = e;
                        break;
                    }
                }
            }
            if self.check_sev_fd(sev_fd).is_err() {
                ret = libc::EBADF;
                break;
            }
            let u = SnpLaunchUpdate {
                page_type: ty,
                page_size_2m: false,
                imi_page: false,
                gpa: gfn * PAGE,
                vmpl_perms: [0; 3],
            };
            let ctx = vm.snp_ctx.as_mut().ok_or(libc::EINVAL)?;
            match ctx.snp_launch_update(&u, &mut page) {
                Ok(()) => {
                    let mut b = Box::new([0u8; PAGE as usize]);
                    b.copy_from_slice(&page);
                    g.pages.insert(index, b);
                    g.prepared.insert(index);
                    if vm.real.is_some() {
                        // No memory encryption here: the unencrypted guest reads the page as
                        // populated from the memslot's host mapping.
                        let host = slot.uaddr + (gfn - slot.base_gfn) * PAGE;
                        // SAFETY: the memslot's `userspace_addr` range is the VMM's live
                        // mapping of this slot (KVM_SET_USER_MEMORY_REGION2's contract); this
                        // page is inside it. A bad address is EFAULT, not a fault.
                        if let Err(e) = unsafe { copy_to_user(host, &page) } {
                            ret = e;
                            break;
                        }
                    }
                    i += 1;
                }
                Err(e) => {
                    fw_error = Self::snp_status(&e);
                    if ty == kb::KVM_SEV_SNP_PAGE_TYPE_CPUID as u8
                        && fw_error == Status::InvalidParam.code()
                        && src != 0
                    {
                        // The firmware's corrected CPUID page goes back to the source.
                        // SAFETY: as above, the page is inside the caller's buffer.
                        let _ = unsafe { copy_to_user(src + i * PAGE, &page) };
                    }
                    ret = libc::EIO;
                    break;
                }
            }
        }
        if ret != 0 && i == 0 {
            *error = fw_error;
            return Err(libc::EIO);
        }
        p.gfn_start += i;
        p.len -= i * PAGE;
        if !zero {
            p.uaddr += i * PAGE;
        }
        // SAFETY: as above.
        unsafe { put_user(data, &p) }
    }

    /// `snp_launch_finish`: SNP guest (ENOTTY), context (EINVAL), flags MBZ (EINVAL); then
    /// `snp_launch_update_vmsa` (every vCPU in order: its VMSA from its registers, SNP_ACTIVE
    /// and the VM's features in SEV_FEATURES, FPU state synced, LAUNCH_UPDATE as a VMSA page
    /// at GPA 0xFFFFFFFFF000 through `sev_fd`; a protected vCPU or a DR7 beyond 0x400 is
    /// EINVAL), the ID block (96 bytes) and ID auth (4 KiB) when `id_block_en`, AUTH_KEY_EN
    /// only with them, and SNP_LAUNCH_FINISH through `sev->fd`.
    unsafe fn snp_launch_finish(
        &self,
        vm: &mut Vm,
        data: u64,
        sev_fd: RawFd,
        error: &mut u32,
    ) -> KResult<()> {
        if !vm.snp_active() {
            return Err(libc::ENOTTY);
        }
        if vm.snp_ctx.is_none() {
            return Err(libc::EINVAL);
        }
        // SAFETY: `data` points to a kvm_sev_snp_launch_finish (caller's contract).
        let p: kb::kvm_sev_snp_launch_finish = unsafe { get_user(data) }?;
        if p.flags != 0 {
            return Err(libc::EINVAL);
        }
        if vm.vcpus.is_empty() && vm.created_vcpus() {
            return Err(libc::EINVAL);
        }
        let params = KvmVmsaParams {
            vmsa_features: vm.vmsa_features,
            init2: true,
        };
        for i in 0..vm.vcpus.len() {
            if i < vm.snp_protected {
                return Err(libc::EINVAL);
            }
            let state = match &vm.vcpus[i] {
                Vcpu::Real(fd) => read_vcpu_state(*fd)?,
                Vcpu::Emulated(s) => **s,
            };
            if state.dr7 & !DR7_FIXED_1 != 0 {
                return Err(libc::EINVAL);
            }
            let mut vmsa = sev_proto::vmsa::kvm_es_vmsa(&state, &params);
            self.check_sev_fd(sev_fd)?;
            let u = SnpLaunchUpdate::page(
                sev_proto::snp::measure::PageType::Vmsa,
                super::snp::KVM_VMSA_GPA,
            );
            let ctx = vm.snp_ctx.as_mut().ok_or(libc::EINVAL)?;
            if let Err(e) = ctx.snp_launch_update(&u, &mut vmsa[..]) {
                *error = Self::snp_status(&e);
                return Err(libc::EIO);
            }
            vm.snp_protected = i + 1;
            vm.vmsa_done = true;
            vm.snp_vmsas.push(vmsa);
        }
        let (mut id_block, mut id_auth) = (None, None);
        if p.id_block_en != 0 {
            // SAFETY: the ID block and auth buffers hold 96 and 4096 bytes (caller's contract).
            id_block = Some(unsafe { user_blob(p.id_block_uaddr, super::snp::ID_BLOCK_SIZE) }?);
            // SAFETY: as above.
            id_auth = Some(unsafe { user_blob(p.id_auth_uaddr, super::snp::ID_AUTH_SIZE) }?);
        }
        let f = SnpLaunchFinish {
            id_block: id_block.as_deref(),
            id_auth: id_auth.as_deref(),
            auth_key_en: p.id_block_en != 0 && p.auth_key_en != 0,
            vcek_dis: p.vcek_disabled != 0,
            host_data: p.host_data,
        };
        self.check_sev_fd(vm.sev_fd)?;
        let ctx = vm.snp_ctx.as_mut().ok_or(libc::EINVAL)?;
        match ctx.snp_launch_finish(&f) {
            Ok(()) => {
                *error = 0;
                Ok(())
            }
            Err(e) => {
                *error = Self::snp_status(&e);
                Err(libc::EIO)
            }
        }
    }

    /// The model's key of the VM `fd` (an emulated VM's file or an announced real VM).
    fn key_of(&self, fd: RawFd) -> Option<(u64, u64)> {
        let k = self.lock();
        if let Some(key) = k.real.get(&fd) {
            return Some(*key);
        }
        let id = file_id(fd).ok()?;
        k.vms.contains_key(&id).then_some(id)
    }

    /// The SNP launch digest of the VM `vm` so far (after SNP_LAUNCH_START).
    pub fn snp_launch_digest(&self, vm: &impl AsRawFd) -> Option<[u8; 48]> {
        let key = self.key_of(vm.as_raw_fd())?;
        let k = self.lock();
        Some(k.vms.get(&key)?.snp_ctx.as_ref()?.launch_digest())
    }

    /// The VMSAs SNP_LAUNCH_FINISH measured for the VM `vm`, in vCPU order.
    pub fn snp_vmsas(&self, vm: &impl AsRawFd) -> Vec<[u8; PAGE as usize]> {
        let Some(key) = self.key_of(vm.as_raw_fd()) else {
            return Vec::new();
        };
        let k = self.lock();
        k.vms
            .get(&key)
            .map(|v| v.snp_vmsas.clone())
            .unwrap_or_default()
    }

    /// The private (guest_memfd) page at `gpa` of the VM `vm` as the guest sees it, if it was
    /// populated by SNP_LAUNCH_UPDATE.
    pub fn gmem_page(&self, vm: &impl AsRawFd, gpa: u64) -> Option<Vec<u8>> {
        let key = self.key_of(vm.as_raw_fd())?;
        let k = self.lock();
        let v = k.vms.get(&key)?;
        let gfn = gpa / PAGE;
        let slot = v.slot_of(gfn)?;
        let (gkey, pgoff) = slot.gmem?;
        let page = k
            .gmems
            .get(&gkey)?
            .pages
            .get(&(gfn - slot.base_gfn + pgoff))?;
        Some(page.to_vec())
    }

    /// Runs `f` on the firmware guest context of the SNP VM `vm` (e.g. a guest request as
    /// KVM would forward it), if it has one.
    pub fn with_snp_guest<R>(
        &self,
        vm: &impl AsRawFd,
        f: impl FnOnce(&mut SoftSnpGuest) -> R,
    ) -> Option<R> {
        let key = self.key_of(vm.as_raw_fd())?;
        let mut k = self.lock();
        let ctx = k.vms.get_mut(&key)?.snp_ctx.as_mut()?;
        Some(f(ctx))
    }
}

/// `_IOC(dir, KVMIO, nr, size)`.
const fn kvm_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | 0xAE << 8 | nr
}
const IOC_W: u64 = 1;
const IOC_R: u64 = 2;
/// `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u64 = kvm_ioc(IOC_R, 0x81, std::mem::size_of::<kb::kvm_regs>());
/// `_IOW(KVMIO, 0x82, struct kvm_regs)`.
pub const KVM_SET_REGS: u64 = kvm_ioc(IOC_W, 0x82, std::mem::size_of::<kb::kvm_regs>());
/// `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u64 = kvm_ioc(IOC_R, 0x83, std::mem::size_of::<kb::kvm_sregs>());
/// `_IOW(KVMIO, 0x84, struct kvm_sregs)`.
pub const KVM_SET_SREGS: u64 = kvm_ioc(IOC_W, 0x84, std::mem::size_of::<kb::kvm_sregs>());
/// `_IOWR(KVMIO, 0x88, struct kvm_msrs)`.
const KVM_GET_MSRS: u64 = kvm_ioc(IOC_R | IOC_W, 0x88, std::mem::size_of::<kb::kvm_msrs>());
/// `_IOR(KVMIO, 0xa1, struct kvm_debugregs)`.
const KVM_GET_DEBUGREGS: u64 = kvm_ioc(IOC_R, 0xA1, std::mem::size_of::<kb::kvm_debugregs>());
/// `_IOR(KVMIO, 0xa4, struct kvm_xsave)` (the 4 KiB region).
const KVM_GET_XSAVE: u64 = kvm_ioc(IOC_R, 0xA4, 4096);
/// `_IOR(KVMIO, 0xa6, struct kvm_xcrs)`.
const KVM_GET_XCRS: u64 = kvm_ioc(IOC_R, 0xA6, std::mem::size_of::<kb::kvm_xcrs>());

/// One vCPU ioctl that fills a `T`, on the real kernel.
///
/// # Safety
/// `request` must be an ioctl that writes exactly one `T` (and reads nothing else) on `fd`.
unsafe fn vcpu_get<T: Default>(fd: RawFd, request: u64, mut v: T) -> KResult<T> {
    // SAFETY: `v` is a live, writable `T`, which is all `request` touches (caller's contract).
    let r = unsafe { libc::ioctl(fd, request as _, &mut v as *mut T) };
    if r < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(v)
}

/// CPUID 0xD sub-leaf `i`'s EBX: the offset of XSAVE component `i` in the standard format.
fn xsave_offset(i: u32) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::x86_64::__cpuid(0).eax < 0xD {
            return None;
        }
        let r = std::arch::x86_64::__cpuid_count(0xD, i);
        (r.eax != 0).then_some(r.ebx as usize)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = i;
        None
    }
}

/// The registers of the real vCPU `fd` as `sev_es_sync_vmsa` finds them: KVM_GET_REGS,
/// KVM_GET_SREGS, KVM_GET_DEBUGREGS, KVM_GET_XCRS, KVM_GET_MSRS (the MSRs the VMSA holds;
/// XSS reads as 0 where KVM does not offer it) and KVM_GET_XSAVE (FPU, YMM, PKRU).
fn read_vcpu_state(fd: RawFd) -> KResult<VcpuState> {
    let mut st = VcpuState::kvm_reset();
    // SAFETY: each of these requests writes exactly the struct it is given.
    let regs = unsafe { vcpu_get(fd, KVM_GET_REGS, kb::kvm_regs::default()) }?;
    // SAFETY: as above.
    let sregs = unsafe { vcpu_get(fd, KVM_GET_SREGS, kb::kvm_sregs::default()) }?;
    // SAFETY: as above.
    let dregs = unsafe { vcpu_get(fd, KVM_GET_DEBUGREGS, kb::kvm_debugregs::default()) }?;
    // SAFETY: as above.
    let xcrs = unsafe { vcpu_get(fd, KVM_GET_XCRS, kb::kvm_xcrs::default()) }?;
    kvm_state::apply_regs(&mut st, &regs);
    kvm_state::apply_sregs(&mut st, &sregs);
    kvm_state::apply_debugregs(&mut st, &dregs);
    kvm_state::apply_xcrs(&mut st, &xcrs);
    #[repr(C)]
    #[derive(Default)]
    struct Msrs {
        hdr: kb::kvm_msrs,
        entries: [kb::kvm_msr_entry; kvm_state::VMSA_MSRS.len()],
    }
    let mut m = Msrs::default();
    m.hdr.nmsrs = kvm_state::VMSA_MSRS.len() as u32;
    for (e, &index) in m.entries.iter_mut().zip(kvm_state::VMSA_MSRS.iter()) {
        e.index = index;
    }
    // SAFETY: KVM_GET_MSRS reads the header and `nmsrs` entries that follow it and writes
    // their data; `m` holds exactly that many, laid out as `struct kvm_msrs` + entries.
    let n = unsafe { libc::ioctl(fd, KVM_GET_MSRS as _, &mut m as *mut Msrs) };
    // KVM stops at the first MSR it cannot read: only XSS (last) may be missing.
    if n < 0 || (n as usize) < kvm_state::VMSA_MSRS.len() - 1 {
        return Err(libc::EIO);
    }
    kvm_state::apply_msrs(&mut st, &m.entries[..n as usize]);
    let mut xsave = Box::new([0u8; 4096]);
    // SAFETY: KVM_GET_XSAVE writes the 4096-byte `struct kvm_xsave` region it is given.
    let r = unsafe { libc::ioctl(fd, KVM_GET_XSAVE as _, xsave.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    kvm_state::apply_xsave(&mut st, &xsave, xsave_offset(2), xsave_offset(9));
    Ok(st)
}

impl Loopback {
    /// Records the real KVM VM `vm_fd` as a VM of `vm_type`; its number.
    fn real_vm(&self, vm_fd: RawFd, vm_type: u32) -> u32 {
        let mut k = self.lock();
        // The fd number is free again only if the VM that had it was closed.
        if let Some(old) = k.real.remove(&vm_fd) {
            if let Some(v) = k.vms.remove(&old) {
                self.vm_destroyed(&mut k, v);
            }
        }
        k.next_vm += 1;
        let no = k.next_vm;
        let key = (u64::MAX, no as u64);
        k.real.insert(vm_fd, key);
        k.vms.insert(key, Vm::new(no, vm_type, Some(vm_fd)));
        no
    }
}

/// KVM_SET_USER_MEMORY_REGION on the real VM `fd` of the shared half of `m` (its
/// `userspace_addr`; flags without KVM_MEM_GUEST_MEMFD).
fn real_memslot(fd: RawFd, m: &kb::kvm_userspace_memory_region2) -> KResult<()> {
    let r = kb::kvm_userspace_memory_region {
        slot: m.slot,
        flags: m.flags & !super::snp::KVM_MEM_GUEST_MEMFD,
        guest_phys_addr: m.guest_phys_addr,
        memory_size: m.memory_size,
        userspace_addr: m.userspace_addr,
    };
    // SAFETY: `r` is a live kvm_userspace_memory_region. The mapping it names is the one the
    // caller gave KVM_SET_USER_MEMORY_REGION2, valid while the slot exists by that ioctl's
    // contract (the real kernel gets the same range for the same slot).
    let rc = unsafe {
        libc::ioctl(
            fd,
            KVM_SET_USER_MEMORY_REGION as _,
            &r as *const kb::kvm_userspace_memory_region,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

/// `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
const KVM_SET_USER_MEMORY_REGION: u64 = kvm_ioc(
    IOC_W,
    0x46,
    std::mem::size_of::<kb::kvm_userspace_memory_region>(),
);

impl IoctlPort for Loopback {
    fn vm_created(&self, vm_fd: RawFd) {
        self.real_vm(vm_fd, kb::KVM_X86_DEFAULT_VM);
    }

    /// On the emulated `/dev/kvm`: an emulated VM. On the real `/dev/kvm`: a real VM of the
    /// default type (the only one this host's KVM is asked for) that the model treats as
    /// `vm_type` (see the module documentation); a type the modelled KVM does not offer
    /// (SNP without an SNP side) is EINVAL, as KVM_CREATE_VM answers.
    fn create_vm(&self, kvm_fd: RawFd, vm_type: u32) -> io::Result<RawFd> {
        if file_id(kvm_fd).map_err(os)? == self.kvm_id {
            let arg = std::ptr::without_provenance_mut(vm_type as usize);
            // SAFETY: KVM_CREATE_VM takes an integer argument and touches no memory.
            return unsafe { self.ioctl(kvm_fd, super::snp::KVM_CREATE_VM, arg) };
        }
        if vm_type >= 32 || self.vm_types() & (1 << vm_type) == 0 {
            return Err(os(libc::EINVAL));
        }
        // SAFETY: KVM_CREATE_VM takes an integer argument (the VM type) and touches no memory.
        let fd = unsafe {
            libc::ioctl(
                kvm_fd,
                super::snp::KVM_CREATE_VM as _,
                kb::KVM_X86_DEFAULT_VM as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let no = self.real_vm(fd, vm_type);
        let mut k = self.lock();
        Self::note(&mut k, no, "KVM_CREATE_VM", &Ok::<(), i32>(()));
        Ok(fd)
    }

    /// `snp_handle_guest_req` (Linux 6.11): an SNP guest (EINVAL), then SNP_GUEST_REQUEST
    /// with its context through `sev->fd` (EBADF if that is no longer the SEV device); a
    /// firmware refusal is the guest's (its status comes back as `Ok`), anything else EIO.
    fn snp_guest_request(
        &self,
        vm_fd: RawFd,
        req: &[u8; 4096],
        resp: &mut [u8; 4096],
    ) -> io::Result<u32> {
        let key = self.key_of(vm_fd).ok_or_else(|| os(libc::EBADF))?;
        let mut k = self.lock();
        let vm = k.vms.get_mut(&key).ok_or_else(|| os(libc::EBADF))?;
        let no = vm.no;
        let r: KResult<u32> = if !vm.snp_active() {
            Err(libc::EINVAL)
        } else if self.check_sev_fd(vm.sev_fd).is_err() {
            Err(libc::EBADF)
        } else {
            match vm.snp_ctx.as_mut() {
                None => Err(libc::EINVAL),
                Some(ctx) => match ctx.snp_guest_request(req, resp) {
                    Ok(_) => Ok(0),
                    Err(e) => e.status().map(|s| s.code()).ok_or(libc::EIO),
                },
            }
        };
        Self::note(&mut k, no, "SNP_GUEST_REQUEST", &r);
        r.map_err(os)
    }

    fn memlock(&self) -> Memlock {
        self.lock().memlock
    }

    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32> {
        let arg = arg as u64;
        let real = self.lock().real.get(&fd).copied();
        if let Some(key) = real {
            // SAFETY: the caller upholds the port contract for `arg`.
            return unsafe { self.vm_ioctl(key, request, arg) }.map_err(os);
        }
        let id = file_id(fd).map_err(os)?;
        // SAFETY: the caller upholds the port contract for `arg`, which is all these need.
        let r = unsafe {
            if id == self.dev_id {
                self.sev_ioctl(fd, request, arg)
            } else if id == self.kvm_id {
                // kvm_vm_ioctl_check_extension: KVM_CAP_VM_TYPES is the supported types
                // mask (sev_set_cpu_caps adds SEV and SEV-ES); other caps read as absent.
                match (request, arg) {
                    (KVM_CHECK_EXTENSION, a) if a == kb::KVM_CAP_VM_TYPES as u64 => {
                        Ok(self.vm_types())
                    }
                    (KVM_CHECK_EXTENSION, a) => Ok(self.kvm_check_extension(a)),
                    (super::snp::KVM_CREATE_VM, t) => {
                        if t >= 32 || self.vm_types() & (1 << t) == 0 {
                            Err(libc::EINVAL)
                        } else {
                            let f = self.create_vm(t as u32);
                            Ok(std::os::fd::IntoRawFd::into_raw_fd(f))
                        }
                    }
                    _ => Err(libc::ENOTTY),
                }
            } else if self.lock().vms.contains_key(&id) {
                self.vm_ioctl(id, request, arg)
            } else if let Some((vm, index)) = self.vcpu_file(id) {
                self.vcpu_ioctl(vm, index, request, arg)
            } else {
                // A regular file: no such ioctl.
                Err(libc::ENOTTY)
            }
        };
        r.map_err(os)
    }
}
