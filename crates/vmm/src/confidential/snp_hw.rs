//! The SEV-SNP launch through KVM's SNP interface ([`HwSnpOps`]): the hw backend's
//! [`SnpLaunchOps`], over [`sev_firmware::hw::snp::HwSnpLaunch`] and one [`IoctlPort`] (the
//! real kernel, or the loopback model of Linux in tests).
//!
//! The VMM's order, as KVM needs it (QEMU's, `target/i386/sev.c` and `accel/kvm`):
//!
//! ```text
//! create_vm        KVM_CREATE_VM(KVM_X86_SNP_VM); KVM_SEV_INIT2 (vmsa_features 0: KVM adds
//!                  SNP_ACTIVE; GHCB version 2), before any vCPU or memslot
//! set_memory_slot  per RAM region: KVM_CREATE_GUEST_MEMFD, KVM_SET_USER_MEMORY_REGION2 (shared
//!                  pages at the VMM's mapping, private ones in the guest_memfd),
//!                  KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) over the whole slot (QEMU does the same
//!                  for a guest_memfd-backed region)
//! init             KVM_SEV_SNP_LAUNCH_START (policy, GOSVW)
//! after_load       KVM_SEV_SNP_LAUNCH_UPDATE per range (remainder loop, CPUID retry)
//! create_vcpu      KVM_CREATE_VCPU through the port; the VMM sets the boot registers
//! before_run       KVM_SEV_SNP_LAUNCH_FINISH: KVM builds every vCPU's VMSA from its registers
//!                  and measures it at 0xFFFFFFFFF000 in vCPU order, then the firmware's
//!                  LAUNCH_FINISH (ID block, ID auth, HOST_DATA, AUTHOR_KEY_EN, VCEK_DIS)
//! ```
//!
//! Each launch needs a new VM (KVM takes INIT2 once per VM). The launch digest is the
//! firmware's: KVM does not show it to user space ([`SnpLaunchOps::launch_digest`] is `None`);
//! the guest's report carries it.
//!
//! Guest requests: on hardware KVM answers the guest's GHCB guest request itself. On a host
//! without SNP (the loopback) the guest rings sevm's doorbell instead, and
//! [`HwSnpOps::guest_request`] hands the request to the kernel side with
//! [`IoctlPort::snp_guest_request`], which forwards it to the firmware as KVM would
//! (SNP_GUEST_REQUEST on the VM's context through the SEV device): the VMM never holds the
//! firmware's guest context.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use sev_firmware::hw::snp::{HwSnpLaunch, SnpLaunchPhase};
use sev_firmware::hw::{IoctlPort, SysIoctl};
use sev_firmware::snp::{SnpGuestState, SnpLaunchFinish};
use sev_firmware::{FwError, Status};
use sev_proto::snp::measure::{PageType, LD_SIZE, PAGE_SIZE};
use sev_proto::snp::policy::SnpPolicy;

use super::snp::SnpLaunchOps;
use crate::vm::HookError;

/// Where the hw backend's SNP launches go: the SEV device and the port to the kernel.
#[derive(Clone)]
pub struct HwSnpBackend {
    sev_device: PathBuf,
    port: Arc<dyn IoctlPort>,
    encrypts: bool,
}

impl std::fmt::Debug for HwSnpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwSnpBackend")
            .field("sev_device", &self.sev_device)
            .field("encrypts", &self.encrypts)
            .finish_non_exhaustive()
    }
}

impl HwSnpBackend {
    /// The real kernel, with the SEV device at `sev_device`.
    pub fn new(sev_device: &Path) -> Self {
        HwSnpBackend {
            encrypts: true,
            ..Self::with_port(sev_device, Arc::new(SysIoctl))
        }
    }

    /// Every KVM SNP ioctl through `port` (tests: the loopback model of Linux, whose guest runs
    /// on this host's KVM without memory encryption: its RAM is aliased at the C-bit, as on
    /// the soft backend).
    pub fn with_port(sev_device: &Path, port: Arc<dyn IoctlPort>) -> Self {
        HwSnpBackend {
            sev_device: sev_device.to_path_buf(),
            port,
            encrypts: false,
        }
    }

    /// Whether the kernel behind this backend encrypts guest memory.
    pub fn encrypts(&self) -> bool {
        self.encrypts
    }

    /// The SEV device.
    pub fn sev_device(&self) -> &Path {
        &self.sev_device
    }

    /// The firmware operations of one VM's launches.
    pub fn ops(&self) -> HwSnpOps {
        HwSnpOps {
            backend: self.clone(),
            launch: None,
            gmems: Vec::new(),
        }
    }
}

/// [`SnpLaunchOps`] over KVM's SNP interface (see the module documentation).
pub struct HwSnpOps {
    backend: HwSnpBackend,
    /// The current VM's launch (from `create_vm`).
    launch: Option<HwSnpLaunch>,
    /// The current VM's guest_memfds (KVM keeps its own reference while a memslot uses one).
    gmems: Vec<OwnedFd>,
}

fn no_vm(cmd: &'static str) -> FwError {
    FwError::Status {
        cmd,
        status: Status::InvalidGuest,
    }
}

impl HwSnpOps {
    fn launch(&mut self, cmd: &'static str) -> Result<&mut HwSnpLaunch, FwError> {
        self.launch.as_mut().ok_or_else(|| no_vm(cmd))
    }
}

impl SnpLaunchOps for HwSnpOps {
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        let port = self.backend.port.clone();
        let fd = sev_firmware::hw::snp::create_snp_vm(&*port, kvm.as_raw_fd())?;
        // SAFETY: `fd` is the VM fd KVM_CREATE_VM just returned, owned by nothing else:
        // `into_raw_fd` hands its ownership to the VmFd.
        let vm = unsafe { kvm.create_vmfd_from_rawfd(fd.into_raw_fd()) }?;
        // The previous VM's launch and guest_memfds end with it.
        self.launch = None;
        self.gmems.clear();
        let mut l = HwSnpLaunch::with_port(vm.as_raw_fd(), &self.backend.sev_device, port)?;
        // Before any vCPU and memslot, as QEMU issues it at machine init.
        l.init2(0, 0)?;
        self.launch = Some(l);
        Ok(vm)
    }

    unsafe fn set_memory_slot(
        &mut self,
        _vm_fd: &VmFd,
        slot: u32,
        gpa: u64,
        size: u64,
        host: u64,
    ) -> Result<bool, HookError> {
        let l = self.launch("KVM_SET_USER_MEMORY_REGION2")?;
        let gmem = l.create_guest_memfd(size)?;
        // SAFETY: forwarded from this method's contract: `[host, host + size)` stays a valid
        // writable mapping while the slot exists.
        unsafe { l.set_user_memory_region2(slot, gpa, size, host, gmem.as_raw_fd(), 0) }?;
        l.set_private(gpa, size)?;
        self.gmems.push(gmem);
        Ok(true)
    }

    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        let fd = self.launch("KVM_CREATE_VCPU")?.create_vcpu(id)?;
        // SAFETY: `fd` is a vCPU fd KVM_CREATE_VCPU just returned for the VM of this launch,
        // which is `vm_fd` (created by `create_vm` above), owned by nothing else:
        // `into_raw_fd` hands its ownership to the VcpuFd.
        Ok(unsafe { vm_fd.create_vcpu_from_rawfd(fd.into_raw_fd()) }?)
    }

    fn new_vm_per_launch(&self) -> bool {
        true
    }

    fn guest_memory_is_host_mapping(&self) -> bool {
        false
    }

    fn launch_start(&mut self, policy: SnpPolicy, gosvw: [u8; 16]) -> Result<(), FwError> {
        self.launch("SNP_LAUNCH_START")?
            .launch_start(policy.0, gosvw)
    }

    fn launch_update(
        &mut self,
        source: &str,
        gpa: u64,
        bytes: &mut [u8],
        page_type: PageType,
    ) -> Result<(), FwError> {
        let r = self
            .launch("SNP_LAUNCH_UPDATE")?
            .launch_update(gpa, bytes, page_type)?;
        for f in &r.cpuid_fixes {
            eprintln!(
                "sevm: SNP_LAUNCH_UPDATE of the CPUID page ({source}): the firmware changed {f}; \
                 retried once with its page"
            );
        }
        Ok(())
    }

    fn launch_finish(
        &mut self,
        _vmsas: &[[u8; PAGE_SIZE]],
        finish: &SnpLaunchFinish<'_>,
    ) -> Result<(), FwError> {
        // KVM builds and measures the VMSAs from the vCPUs' registers itself.
        self.launch("SNP_LAUNCH_FINISH")?.launch_finish(finish)
    }

    fn launch_digest(&self) -> Option<[u8; LD_SIZE]> {
        None
    }

    fn guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize, FwError> {
        let l = self.launch("SNP_GUEST_REQUEST")?;
        let vm_fd = l.vm_fd();
        let (Ok(req), Ok(resp)) = (
            <&[u8; PAGE_SIZE]>::try_from(req),
            <&mut [u8; PAGE_SIZE]>::try_from(resp),
        ) else {
            return Err(FwError::InvalidArgument(
                "SNP_GUEST_REQUEST: the request and response are one 4 KiB page each",
            ));
        };
        match self.backend.port.snp_guest_request(vm_fd, req, resp) {
            Ok(0) => Ok(PAGE_SIZE),
            Ok(code) => Err(match Status::from_u32(code) {
                Some(status) => FwError::Status {
                    cmd: "SNP_GUEST_REQUEST",
                    status,
                },
                None => FwError::Ioctl {
                    what: "SNP_GUEST_REQUEST",
                    source: std::io::Error::other(format!("unknown firmware status {code:#x}")),
                },
            }),
            Err(source) => Err(FwError::Ioctl {
                what: "SNP_GUEST_REQUEST (KVM's guest-request path)",
                source,
            }),
        }
    }

    fn guest_state(&self) -> Option<(SnpGuestState, u32)> {
        // KVM offers no SNP_GUEST_STATUS to user space.
        None
    }

    fn decommission(&mut self) -> Result<(), FwError> {
        // The firmware context ends with its VM (KVM decommissions it when the VM fd closes);
        // a launch that has not started yet (a new VM being set up for a relaunch) is kept.
        if self
            .launch
            .as_ref()
            .is_some_and(|l| l.phase() >= SnpLaunchPhase::Started)
        {
            self.launch = None;
        }
        Ok(())
    }
}
