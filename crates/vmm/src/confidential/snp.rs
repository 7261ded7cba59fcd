//! The SEV-SNP launch of a bundled guest at sevm's own layout (docs/LAYOUT.md), and the
//! owner's prediction of its launch digest through the same code.
//!
//! ```text
//! init         GCTX_CREATE, LAUNCH_START(policy, GOSVW)             (SnpLaunchOps::launch_start)
//! after_load   LAUNCH_UPDATE NORMAL   every measured range, in the layout's order
//!              LAUNCH_UPDATE SECRETS  layout::SNP_SECRETS (the firmware writes the page)
//!              LAUNCH_UPDATE CPUID    layout::SNP_CPUID (built from the guest's CPUID; on
//!                                     INVALID_PARAM retried once with the firmware's page)
//! vCPUs        created, given their boot registers
//! before_run   SNP_PARAMS page (REPORT_DATA) written;
//!              LAUNCH_FINISH: one VMSA per vCPU (type VMSA at 0xFFFFFFFFF000, vCPU order,
//!              as KVM measures them), then ID block / ID auth / HOST_DATA / AUTHOR_KEY_EN /
//!              VCEK_DIS                                            (SnpLaunchOps::launch_finish)
//! ```
//!
//! The firmware is reached through [`SnpLaunchOps`], so that the hw backend (KVM's SNP ioctls)
//! can take the soft model's place: [`SoftSnpOps`] drives a
//! [`sev_firmware::snp::soft::SoftSnpGuest`]; [`PredictOps`] is the owner's side, which
//! computes the PAGE_INFO chain of exactly the same calls ([`drive_updates`] and
//! [`drive_finish`] are the one sequence both go through).
//!
//! The guest reaches the firmware at run time through the guest-request doorbell
//! ([`crate::snp_request`]); [`SnpRequests`] serves it over the current launch's context.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use kvm_bindings::kvm_sregs;
use sev_firmware::snp::soft::{SoftSnpGuest, SoftSnpPlatform};
use sev_firmware::snp::{
    SnpGuest, SnpGuestState, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform,
    SnpPlatformState,
};
use sev_firmware::{FwError, Status};
use sev_proto::snp::measure::{PageInfo, PageType, SnpLaunchDigest, LD_SIZE, PAGE_SIZE, VMSA_GPA};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::vmsa::KvmVmsaParams;
use vm_memory::{Bytes, GuestAddress};
use zeroize::Zeroizing;

use crate::boot::{self, BootSource, Entry, MeasuredRange, RangeKind};
use crate::cpu::{self, BootRegs};
use crate::layout;
use crate::snp_request::{GuestRequestOutcome, GuestRequestService, PAGE, VMM_ERR_INVALID_LEN};
use crate::vm::{HookError, LaunchContext, LaunchHooks, MsrHandler, ResetAction, VmConfig};
use crate::{memory, GuestMemoryMmap, Kvm, VcpuFd, VmFd};

use super::{ConfidentialError, ResetMode, CPUID_SEV_LEAF, MSR_SEV_STATUS};

/// How KVM builds an SNP guest's VMSAs: `KVM_SEV_INIT2` with `vmsa_features` 0 (KVM adds
/// SNPActive, bit 0, for an SNP VM), FPU state synced into the VMSA.
pub const SNP_VMSA_PARAMS: KvmVmsaParams = KvmVmsaParams {
    vmsa_features: 1,
    init2: true,
};

/// The VMSA KVM measures for an SNP vCPU sevm gave `b` (SEV_FEATURES = SNPActive).
pub fn snp_vmsa(b: &BootRegs) -> [u8; PAGE_SIZE] {
    sev_proto::vmsa::kvm_es_vmsa(&super::recipe::vcpu_state(b), &SNP_VMSA_PARAMS)
}

/// The VMSAs of `cpus` vCPUs entering at `entry`, in vCPU order.
pub fn snp_vmsas(entry: Entry, cpus: u8) -> Vec<[u8; PAGE_SIZE]> {
    let n = usize::from(cpus);
    (0..n)
        .map(|i| snp_vmsa(&cpu::boot_regs(entry, i, n, kvm_sregs::default())))
        .collect()
}

/// One LAUNCH_UPDATE of an sevm SNP launch: `len` bytes (whole pages) at `gpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpUpdate {
    /// Guest-physical start (4 KiB aligned).
    pub gpa: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: u64,
    /// Page type.
    pub page_type: PageType,
    /// What the range holds, for messages and `--dump-launch`.
    pub source: &'static str,
}

fn kind_name(k: RangeKind) -> &'static str {
    match k {
        RangeKind::BootTables => "boot-tables",
        RangeKind::Bundled => "guest-image",
        RangeKind::Firmware => "firmware",
        RangeKind::ZeroPage => "zero-page",
        RangeKind::Cmdline => "cmdline",
        RangeKind::Kernel => "kernel",
        RangeKind::Initrd => "initrd",
        RangeKind::KernelHashes => "kernel-hashes",
        RangeKind::MpTable => "mp-table",
    }
}

/// The LAUNCH_UPDATEs of an sevm SNP launch whose VMM-written ranges are `measured`: each as
/// NORMAL pages, then the secrets page and the CPUID page. Refuses a range that is not whole
/// pages or that overlaps another or the SNP pages (the RMP takes each page once).
pub fn snp_updates(measured: &[MeasuredRange]) -> Result<Vec<SnpUpdate>, ConfidentialError> {
    let mut out: Vec<SnpUpdate> = Vec::with_capacity(measured.len() + 2);
    for m in measured {
        if m.kind == RangeKind::KernelHashes {
            return Err(ConfidentialError::Recipe(
                "SEV-SNP launches of a firmware with kernel-hashes are not implemented in sevm's \
                 layout yet (bundled guests only)"
                    .into(),
            ));
        }
        if !m.gpa.is_multiple_of(PAGE_SIZE as u64) || !m.len.is_multiple_of(PAGE_SIZE as u64) {
            return Err(ConfidentialError::Recipe(format!(
                "{} range [{:#x}, +{:#x}) is not whole 4 KiB pages, which SNP_LAUNCH_UPDATE needs",
                kind_name(m.kind),
                m.gpa,
                m.len
            )));
        }
        out.push(SnpUpdate {
            gpa: m.gpa,
            len: m.len,
            page_type: PageType::Normal,
            source: kind_name(m.kind),
        });
    }
    out.push(SnpUpdate {
        gpa: layout::SNP_SECRETS,
        len: PAGE_SIZE as u64,
        page_type: PageType::Secrets,
        source: "secrets",
    });
    out.push(SnpUpdate {
        gpa: layout::SNP_CPUID,
        len: PAGE_SIZE as u64,
        page_type: PageType::Cpuid,
        source: "cpuid",
    });
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            if a.gpa < b.gpa + b.len && b.gpa < a.gpa + a.len {
                return Err(ConfidentialError::Recipe(format!(
                    "{} [{:#x}, +{:#x}) overlaps {} [{:#x}, +{:#x}): SNP measures each page once",
                    a.source, a.gpa, a.len, b.source, b.gpa, b.len
                )));
            }
        }
    }
    Ok(out)
}

/// The firmware side of an SNP launch (soft model, hw KVM, or the owner's prediction), and
/// the KVM VM it needs: the VM, memory-slot and vCPU methods default to a plain VM's (the soft
/// model and the prediction need nothing else; the hw backend's KVM does, see
/// [`super::snp_hw`]).
pub trait SnpLaunchOps: Send {
    /// Creates the KVM VM of a launch.
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        Ok(kvm.create_vm()?)
    }
    /// Registers a guest RAM region (see [`LaunchHooks::set_memory_slot`]); `Ok(false)`: a
    /// plain memslot will do.
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
    /// Creates vCPU `id` of `vm_fd`.
    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        Ok(vm_fd.create_vcpu(id)?)
    }
    /// Whether each launch needs its own KVM VM.
    fn new_vm_per_launch(&self) -> bool {
        false
    }
    /// Whether the guest runs from the VMM's mapping of the pages LAUNCH_UPDATE measured, so
    /// the pages as the firmware left them (the secrets page, a corrected CPUID page) are
    /// written back there. Not on KVM's SNP interface: the populated pages are in guest_memfd.
    fn guest_memory_is_host_mapping(&self) -> bool {
        true
    }
    /// GCTX_CREATE + LAUNCH_START (+ ACTIVATE).
    fn launch_start(&mut self, policy: SnpPolicy, gosvw: [u8; 16]) -> Result<(), FwError>;
    /// LAUNCH_UPDATE of `bytes` (whole pages, guest memory at `gpa`) as `page_type`. In place:
    /// the secrets page is written, a CPUID page the firmware refuses comes back corrected.
    fn launch_update(
        &mut self,
        source: &str,
        gpa: u64,
        bytes: &mut [u8],
        page_type: PageType,
    ) -> Result<(), FwError>;
    /// The VMSAs (type VMSA at [`VMSA_GPA`], vCPU order; on hardware KVM builds them itself
    /// from the vCPU registers), then LAUNCH_FINISH.
    fn launch_finish(
        &mut self,
        vmsas: &[[u8; PAGE_SIZE]],
        finish: &SnpLaunchFinish<'_>,
    ) -> Result<(), FwError>;
    /// The launch digest so far, where the backend can see it.
    fn launch_digest(&self) -> Option<[u8; LD_SIZE]>;
    /// SNP_GUEST_REQUEST on the launched context: the response message into `resp`.
    fn guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize, FwError>;
    /// SNP_GUEST_STATUS: (state, ASID) when the backend has a context.
    fn guest_state(&self) -> Option<(SnpGuestState, u32)>;
    /// SNP_DECOMMISSION (the end of this context).
    fn decommission(&mut self) -> Result<(), FwError>;
}

/// [`SnpLaunchOps`] over the soft firmware.
pub struct SoftSnpOps {
    platform: SoftSnpPlatform,
    guest: Option<SoftSnpGuest>,
}

impl SoftSnpOps {
    /// Launches on `platform` (SNP_INIT is done here when the platform is UNINIT).
    pub fn new(platform: SoftSnpPlatform) -> Result<Self, FwError> {
        if platform.snp_platform_status()?.state == SnpPlatformState::Uninit {
            platform.snp_init()?;
        }
        Ok(SoftSnpOps {
            platform,
            guest: None,
        })
    }

    fn guest(&mut self, cmd: &'static str) -> Result<&mut SoftSnpGuest, FwError> {
        self.guest.as_mut().ok_or(FwError::Status {
            cmd,
            status: Status::InvalidGuest,
        })
    }
}

impl SnpLaunchOps for SoftSnpOps {
    fn launch_start(&mut self, policy: SnpPolicy, gosvw: [u8; 16]) -> Result<(), FwError> {
        let mut g = self.platform.gctx_create()?;
        let mut p = SnpLaunchStart::new(policy);
        p.gosvw = gosvw;
        g.snp_launch_start(&p)?;
        self.guest = Some(g);
        Ok(())
    }

    fn launch_update(
        &mut self,
        _source: &str,
        gpa: u64,
        bytes: &mut [u8],
        page_type: PageType,
    ) -> Result<(), FwError> {
        let g = self.guest("SNP_LAUNCH_UPDATE")?;
        for (i, page) in bytes.chunks_mut(PAGE_SIZE).enumerate() {
            let u = SnpLaunchUpdate::page(page_type, gpa + (i * PAGE_SIZE) as u64);
            g.snp_launch_update(&u, page)?;
        }
        Ok(())
    }

    fn launch_finish(
        &mut self,
        vmsas: &[[u8; PAGE_SIZE]],
        finish: &SnpLaunchFinish<'_>,
    ) -> Result<(), FwError> {
        let g = self.guest("SNP_LAUNCH_FINISH")?;
        for v in vmsas {
            let mut page = *v;
            g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Vmsa, VMSA_GPA), &mut page)?;
        }
        g.snp_launch_finish(finish)
    }

    fn launch_digest(&self) -> Option<[u8; LD_SIZE]> {
        self.guest.as_ref().map(|g| g.launch_digest())
    }

    fn guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize, FwError> {
        self.guest("SNP_GUEST_REQUEST")?
            .snp_guest_request(req, resp)
    }

    fn guest_state(&self) -> Option<(SnpGuestState, u32)> {
        let s = self.guest.as_ref()?.snp_guest_status().ok()?;
        Some((s.state, s.asid))
    }

    fn decommission(&mut self) -> Result<(), FwError> {
        match self.guest.take() {
            Some(mut g) => g.snp_decommission(),
            None => Ok(()),
        }
    }
}

/// One measured page as the owner's prediction saw it (`--dump-launch`).
#[derive(Debug, Clone)]
pub struct PredictedPage {
    /// What the page belongs to (`guest-image`, `secrets`, `vmsa`, ...).
    pub source: String,
    /// The vCPU of a VMSA page.
    pub vcpu: Option<usize>,
    /// The PAGE_INFO hashed.
    pub page: PageInfo,
    /// The launch digest after it.
    pub ld: [u8; LD_SIZE],
}

/// [`SnpLaunchOps`] that computes the PAGE_INFO chain (the owner's expected digest), as the
/// firmware does: NORMAL and VMSA pages by content, SECRETS and CPUID by type and GPA only.
#[derive(Debug, Default)]
pub struct PredictOps {
    ld: SnpLaunchDigest,
    /// Every page measured, in order (kept when `record` is set).
    pub pages: Vec<PredictedPage>,
    /// Keep [`PredictOps::pages`].
    pub record: bool,
}

impl PredictOps {
    fn step(&mut self, source: &str, vcpu: Option<usize>, t: PageType, gpa: u64, c: [u8; 48]) {
        let page = self.ld.extend(t, gpa, c, [0; 3]);
        if self.record {
            self.pages.push(PredictedPage {
                source: source.to_string(),
                vcpu,
                page,
                ld: self.ld.digest(),
            });
        }
    }
}

impl SnpLaunchOps for PredictOps {
    fn launch_start(&mut self, _policy: SnpPolicy, _gosvw: [u8; 16]) -> Result<(), FwError> {
        self.ld = SnpLaunchDigest::new();
        self.pages.clear();
        Ok(())
    }

    fn launch_update(
        &mut self,
        source: &str,
        gpa: u64,
        bytes: &mut [u8],
        page_type: PageType,
    ) -> Result<(), FwError> {
        for (i, page) in bytes.chunks(PAGE_SIZE).enumerate() {
            let c = match page_type {
                PageType::Normal => sev_proto::snp::measure::normal_page_digest(page),
                _ => [0; LD_SIZE],
            };
            self.step(source, None, page_type, gpa + (i * PAGE_SIZE) as u64, c);
        }
        Ok(())
    }

    fn launch_finish(
        &mut self,
        vmsas: &[[u8; PAGE_SIZE]],
        _finish: &SnpLaunchFinish<'_>,
    ) -> Result<(), FwError> {
        for (i, v) in vmsas.iter().enumerate() {
            let c = sev_proto::snp::measure::vmsa_contents_digest(v);
            self.step("vmsa", Some(i), PageType::Vmsa, VMSA_GPA, c);
        }
        Ok(())
    }

    fn launch_digest(&self) -> Option<[u8; LD_SIZE]> {
        Some(self.ld.digest())
    }

    fn guest_request(&mut self, _req: &[u8], _resp: &mut [u8]) -> Result<usize, FwError> {
        Err(FwError::Status {
            cmd: "SNP_GUEST_REQUEST",
            status: Status::InvalidGuest,
        })
    }

    fn guest_state(&self) -> Option<(SnpGuestState, u32)> {
        None
    }

    fn decommission(&mut self) -> Result<(), FwError> {
        Ok(())
    }
}

fn fw(stage: &'static str) -> impl Fn(FwError) -> ConfidentialError {
    move |source| ConfidentialError::Firmware { stage, source }
}

/// The LAUNCH_UPDATEs of `updates` over guest memory `mem`, in order: the one sequence the
/// launch and the owner's prediction share. `cpuid_page` is written at [`layout::SNP_CPUID`]
/// first. A CPUID page the firmware refuses (INVALID_PARAM, page written back corrected) is
/// retried once with the corrected page; what differed is logged and returned.
pub fn drive_updates(
    ops: &mut dyn SnpLaunchOps,
    mem: &GuestMemoryMmap,
    updates: &[SnpUpdate],
    cpuid_page: &[u8; PAGE_SIZE],
) -> Result<Vec<String>, ConfidentialError> {
    let mut cpuid_diffs = Vec::new();
    for u in updates {
        let mut bytes = Zeroizing::new(vec![0u8; u.len as usize]);
        let bad = || ConfidentialError::BadRange {
            gpa: u.gpa,
            len: u.len,
        };
        match u.page_type {
            PageType::Cpuid => bytes.copy_from_slice(cpuid_page),
            PageType::Secrets => {} // the firmware ignores (zeroes) the hypervisor's input
            _ => mem
                .read_slice(&mut bytes, GuestAddress(u.gpa))
                .map_err(|_| bad())?,
        }
        let r = ops.launch_update(u.source, u.gpa, &mut bytes, u.page_type);
        match r {
            Err(e)
                if u.page_type == PageType::Cpuid && e.status() == Some(Status::InvalidParam) =>
            {
                cpuid_diffs = cpuid_differences(cpuid_page, &bytes);
                for d in &cpuid_diffs {
                    tracing::warn!("the firmware corrected the CPUID page: {d}");
                    eprintln!("sevm: SNP_LAUNCH_UPDATE of the CPUID page: the firmware changed {d}; retrying once with its page");
                }
                ops.launch_update(u.source, u.gpa, &mut bytes, u.page_type)
                    .map_err(fw(
                        "SNP_LAUNCH_UPDATE (CPUID page, retried with the firmware's corrections)",
                    ))?;
            }
            Err(e) => {
                return Err(ConfidentialError::Firmware {
                    stage: "SNP_LAUNCH_UPDATE",
                    source: e,
                })
            }
            Ok(()) => {}
        }
        // The pages as the firmware left them (the secrets page, a corrected CPUID page) are
        // what the guest finds (where it runs from this mapping).
        if ops.guest_memory_is_host_mapping() {
            mem.write_slice(&bytes, GuestAddress(u.gpa))
                .map_err(|_| bad())?;
        }
    }
    Ok(cpuid_diffs)
}

/// The finishing half of the sequence: the VMSAs and LAUNCH_FINISH.
pub fn drive_finish(
    ops: &mut dyn SnpLaunchOps,
    vmsas: &[[u8; PAGE_SIZE]],
    finish: &SnpLaunchFinish<'_>,
) -> Result<(), ConfidentialError> {
    ops.launch_finish(vmsas, finish).map_err(|source| {
        let (ret, code) = match source.status() {
            Some(s) => (-5, s.code()),
            None => (-22, 0),
        };
        ConfidentialError::SnpLaunchFinish {
            ret,
            code,
            name: super::qemu_fw_error_str(code),
            source,
        }
    })
}

/// CPUID page layout (Linux `struct snp_cpuid_table`): `u32 count, u32 rsvd, u64 rsvd`, then
/// up to 64 entries of 0x30 bytes `{u32 eax_in, ecx_in; u64 xcr0_in, xss_in; u32 eax, ebx,
/// ecx, edx; u64 rsvd}`.
const CPUID_MAX: usize = 64;
const CPUID_ENTRY: usize = 0x30;
const CPUID_HDR: usize = 0x10;

/// One CPUID entry: `(function, index, eax, ebx, ecx, edx)`.
pub type CpuidEntry = (u32, u32, u32, u32, u32, u32);

/// The CPUID page for the guest's CPUID entries `(function, index, eax, ebx, ecx, edx)`: the
/// first 64, in the given order (a guest that needs a leaf beyond them asks the hypervisor).
pub fn cpuid_page(entries: &[CpuidEntry]) -> [u8; PAGE_SIZE] {
    let mut p = [0u8; PAGE_SIZE];
    let n = entries.len().min(CPUID_MAX);
    p[..4].copy_from_slice(&(n as u32).to_le_bytes());
    for (i, &(f, idx, a, b, c, d)) in entries.iter().take(n).enumerate() {
        let e = CPUID_HDR + i * CPUID_ENTRY;
        p[e..e + 4].copy_from_slice(&f.to_le_bytes());
        p[e + 4..e + 8].copy_from_slice(&idx.to_le_bytes());
        // XCR0_IN: the x87 state every guest has, for the XSAVE leaf's sizes.
        let xcr0: u64 = if f == 0xD { 1 } else { 0 };
        p[e + 8..e + 16].copy_from_slice(&xcr0.to_le_bytes());
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            p[e + 0x18 + 4 * k..e + 0x1C + 4 * k].copy_from_slice(&v.to_le_bytes());
        }
    }
    p
}

fn cpuid_differences(ours: &[u8], fixed: &[u8]) -> Vec<String> {
    let rd = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut out = Vec::new();
    if rd(ours, 0) != rd(fixed, 0) {
        out.push(format!("count {} -> {}", rd(ours, 0), rd(fixed, 0)));
    }
    if ours[4..CPUID_HDR] != fixed[4..CPUID_HDR] {
        out.push("the header's reserved bytes".into());
    }
    for i in 0..CPUID_MAX {
        let e = CPUID_HDR + i * CPUID_ENTRY;
        if ours[e..e + CPUID_ENTRY] == fixed[e..e + CPUID_ENTRY] {
            continue;
        }
        let names = ["EAX", "EBX", "ECX", "EDX"];
        let mut what = Vec::new();
        for (k, n) in names.iter().enumerate() {
            let o = e + 0x18 + 4 * k;
            if rd(ours, o) != rd(fixed, o) {
                what.push(format!("{n} {:#x} -> {:#x}", rd(ours, o), rd(fixed, o)));
            }
        }
        if ours[e..e + 0x18] != fixed[e..e + 0x18] {
            what.push("inputs".into());
        }
        if ours[e + 0x28..e + CPUID_ENTRY] != fixed[e + 0x28..e + CPUID_ENTRY] {
            what.push("reserved bytes".into());
        }
        out.push(format!(
            "entry {i} (leaf {:#x}.{:#x}): {}",
            rd(ours, e),
            rd(ours, e + 4),
            what.join(", ")
        ));
    }
    out
}

/// The SNP launch parameters (from [`crate::config::snp::SnpLaunchConfig`] plus the CLI).
#[derive(Clone)]
pub struct SnpLaunchParams {
    /// Guest policy.
    pub policy: SnpPolicy,
    /// GOSVW (LAUNCH_START).
    pub gosvw: [u8; 16],
    /// ID block (96 bytes) and ID auth (4096 bytes).
    pub id: Option<(Vec<u8>, Vec<u8>)>,
    /// AUTH_KEY_EN.
    pub author_key: bool,
    /// VCEK_DIS.
    pub vcek_disabled: bool,
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// C-bit position.
    pub cbitpos: u8,
    /// Physical address bits lost to encryption.
    pub reduced_phys_bits: u8,
    /// REPORT_DATA for the guest (the SNP_PARAMS page), if given.
    pub report_data: Option<[u8; 64]>,
    /// The certificate table served to extended guest requests (GUID table, notes §3.5).
    pub cert_table: Option<Vec<u8>>,
    /// Reset behaviour.
    pub on_reset: ResetMode,
    /// The guest owner of the sealed-secret step (`sevm demo --snp`): when set, the SNP_PARAMS
    /// flags get `SEALED_SECRET` and the doorbell's owner step goes to it.
    pub owner: Option<Arc<dyn crate::snp_request::SecretOwner>>,
}

impl std::fmt::Debug for SnpLaunchParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpLaunchParams")
            .field("policy", &self.policy)
            .field("id_block", &self.id.is_some())
            .field("cbitpos", &self.cbitpos)
            .finish_non_exhaustive()
    }
}

impl SnpLaunchParams {
    /// From a validated configuration and the platform's C-bit.
    pub fn from_config(c: &crate::config::snp::SnpLaunchConfig, platform_cbitpos: u8) -> Self {
        SnpLaunchParams {
            policy: SnpPolicy(c.policy),
            gosvw: c.guest_visible_workarounds,
            id: c.id_block.clone().zip(c.id_auth.clone()),
            author_key: c.author_key_enabled,
            vcek_disabled: c.vcek_disabled,
            host_data: c.host_data,
            cbitpos: c.cbitpos.unwrap_or(platform_cbitpos),
            reduced_phys_bits: c.reduced_phys_bits,
            report_data: None,
            cert_table: None,
            on_reset: ResetMode::Relaunch,
            owner: None,
        }
    }

    /// Sets the C-bit page tables, CPUID 0x8000001F (SEV, SEV-ES, SNP) and 0x80000008, and
    /// the SEV status MSR (SEV, SEV-ES, SNP active) in `cfg`.
    pub fn prepare_config(&self, cfg: &mut VmConfig) {
        cfg.page_table_cbit = Some(self.cbitpos);
        let mut ov = super::sev_cpuid(self.cbitpos, self.reduced_phys_bits, true);
        for o in ov.0.iter_mut() {
            if o.function == CPUID_SEV_LEAF {
                o.eax |= 1 << 4; // SEV-SNP
            }
        }
        ov.0.extend(cfg.cpuid_overrides.0.iter().copied());
        cfg.cpuid_overrides = ov;
        cfg.msr_handler = Some(Arc::new(SnpMsrs));
    }
}

/// The SEV status MSR of an SNP guest: SEV, SEV-ES and SNP active (bits 0..=2).
#[derive(Debug, Clone, Copy)]
pub struct SnpMsrs;

impl MsrHandler for SnpMsrs {
    fn rdmsr(&self, _cpu: usize, index: u32) -> Option<u64> {
        (index == MSR_SEV_STATUS).then_some(0b111)
    }
}

/// The CPUID entries the guest's vCPU 0 gets (KVM's supported set, the hypervisor leaves and
/// the overrides, as `Vm` sets them), for the CPUID page.
fn guest_cpuid(config: &VmConfig) -> Result<Vec<CpuidEntry>, HookError> {
    let kvm = crate::vm::open_kvm(&config.kvm_path)?;
    let mut c = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
    cpu::add_hypervisor_leaves(&mut c)?;
    config.cpuid_overrides.apply(&mut c, 0)?;
    Ok(c.as_slice()
        .iter()
        .map(|e| (e.function, e.index, e.eax, e.ebx, e.ecx, e.edx))
        .collect())
}

/// The owner's prediction of an sevm SNP launch (bundled layout): the expected launch digest
/// and, with `record`, every PAGE_INFO. The same [`drive_updates`] / [`drive_finish`] the
/// launch runs, over a scratch mapping where the images are placed as `Vm` places them.
pub fn predict(
    memory_size: u64,
    boot_src: &BootSource,
    cbitpos: u8,
    cpus: u8,
    record: bool,
) -> Result<PredictOps, ConfidentialError> {
    let err = |e: &dyn std::fmt::Display| ConfidentialError::Recipe(e.to_string());
    if !matches!(boot_src, BootSource::Bundled(_)) {
        return Err(ConfidentialError::Recipe(
            "sevm's SNP layout is implemented for the bundled guests only".into(),
        ));
    }
    let mem = memory::create_guest_memory(memory_size, None).map_err(|e| err(&e))?;
    let plan =
        boot::place(&mem, memory_size, boot_src, Some(cbitpos), cpus).map_err(|e| err(&e))?;
    let updates = snp_updates(&plan.measured)?;
    let mut ops = PredictOps {
        record,
        ..PredictOps::default()
    };
    ops.launch_start(SnpPolicy(0), [0; 16])
        .map_err(fw("prediction"))?;
    // The CPUID page's contents are not measured: any page will do.
    drive_updates(&mut ops, &mem, &updates, &[0; PAGE_SIZE])?;
    drive_finish(
        &mut ops,
        &snp_vmsas(plan.entry, cpus),
        &SnpLaunchFinish::default(),
    )?;
    Ok(ops)
}

/// Where an SNP launch is (`query-sev`'s state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpPhase {
    /// No launch yet, or it ended.
    Uninit,
    /// LAUNCH_START done; pages being measured.
    LaunchUpdate,
    /// LAUNCH_FINISH done.
    Running,
    /// A launch step failed.
    Failed,
}

struct SnpState {
    ops: Box<dyn SnpLaunchOps>,
    params: SnpLaunchParams,
    phase: SnpPhase,
    launches: u32,
    vmsas: Vec<[u8; PAGE_SIZE]>,
    digest: Option<[u8; LD_SIZE]>,
    cpuid_diffs: Vec<String>,
    /// Messages the firmware has taken per VMPCK in this context (the guest kernel's
    /// `msg_seqno_N`: the next request carries count + 1), as seen from the requests it accepted.
    msg_counts: [u64; 4],
}

struct SnpShared {
    state: Mutex<SnpState>,
    cond: Condvar,
}

/// A cloneable handle on one VM's SNP launch (monitor, run, guest requests).
#[derive(Clone)]
pub struct SnpHandle(Arc<SnpShared>);

/// `query-sev` data of an SNP launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpStatus {
    /// Launch phase.
    pub phase: SnpPhase,
    /// Guest policy.
    pub policy: u64,
    /// Launches so far (1 + relaunches).
    pub launches: u32,
    /// The ASID the firmware holds the guest under (0 if none).
    pub asid: u32,
}

impl SnpStatus {
    /// QEMU's `query-sev` answer for this SNP launch (the `sev-snp` branch), with the
    /// firmware's API version and build.
    pub fn sev_info(&self, api_major: u8, api_minor: u8, build_id: u8) -> crate::monitor::SevInfo {
        use crate::monitor::SevState;
        crate::monitor::SevInfo {
            enabled: true,
            api_major,
            api_minor,
            build_id,
            policy: 0,
            state: match self.phase {
                SnpPhase::LaunchUpdate => SevState::LaunchUpdate,
                SnpPhase::Running => SevState::Running,
                SnpPhase::Uninit | SnpPhase::Failed => SevState::Uninit,
            },
            handle: 0,
            snp_policy: Some(self.policy),
        }
    }
}

impl SnpHandle {
    fn lock(&self) -> MutexGuard<'_, SnpState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The launch digest (MEASUREMENT) once finished.
    pub fn launch_digest(&self) -> Option<[u8; LD_SIZE]> {
        self.lock().digest
    }

    /// What the firmware corrected in the CPUID page of the last launch (empty: nothing).
    pub fn cpuid_corrections(&self) -> Vec<String> {
        self.lock().cpuid_diffs.clone()
    }

    /// `query-sev` status.
    pub fn status(&self) -> SnpStatus {
        let st = self.lock();
        SnpStatus {
            phase: st.phase,
            policy: st.params.policy.0,
            launches: st.launches,
            asid: st.ops.guest_state().map_or(0, |(_, a)| a),
        }
    }

    /// The VM stopped for good: decommissions the context.
    pub fn end(&self) {
        let mut st = self.lock();
        if let Err(e) = st.ops.decommission() {
            tracing::warn!("decommissioning the SNP context at the end of the run: {e}");
        }
        st.phase = SnpPhase::Uninit;
        drop(st);
        self.0.cond.notify_all();
    }

    /// How many messages the firmware has taken with each VMPCK of the current context (a
    /// successful SNP_GUEST_REQUEST uses two sequence numbers: the request's and the
    /// response's). The next request with VMPCK `n` must carry `msg_counts()[n] + 1`. A guest
    /// kernel keeps these in its secrets page's OS area (`msg_seqno_0..3`).
    pub fn msg_counts(&self) -> [u64; 4] {
        self.lock().msg_counts
    }

    /// The guest-request service over this launch's context.
    pub fn requests(&self) -> Arc<dyn GuestRequestService> {
        Arc::new(SnpRequests(self.clone()))
    }
}

/// The guest-request doorbell's service over the current SNP context.
pub struct SnpRequests(SnpHandle);

impl std::fmt::Debug for SnpRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnpRequests")
    }
}

impl GuestRequestService for SnpRequests {
    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> GuestRequestOutcome {
        let mut st = self.0.lock();
        if let Some(buf) = certs {
            // An extended request: the certificate table first (the GHCB host checks the
            // buffer before it issues the request, so a short buffer costs no sequence number).
            let table: &[u8] = st.params.cert_table.as_deref().unwrap_or(&[]);
            if table.len() > buf.len() {
                return GuestRequestOutcome {
                    fw_error: 0,
                    vmm_error: VMM_ERR_INVALID_LEN,
                    cert_pages_needed: table.len().div_ceil(PAGE) as u64,
                };
            }
            buf.fill(0);
            buf[..table.len()].copy_from_slice(table);
        }
        match st.ops.guest_request(req, resp) {
            Ok(_) => {
                // The firmware took the message: its sequence number (and the response's)
                // are used. The header is plaintext: MSG_SEQNO at 0x20, MSG_VMPCK at 0x3C.
                let mut sq = [0u8; 8];
                sq.copy_from_slice(&req[0x20..0x28]);
                let seqno = u64::from_le_bytes(sq);
                if let Some(c) = st.msg_counts.get_mut(usize::from(req[0x3C])) {
                    *c = seqno.saturating_add(1);
                }
                GuestRequestOutcome::default()
            }
            Err(e) => {
                tracing::warn!("SNP guest request refused: {e}");
                GuestRequestOutcome {
                    fw_error: e
                        .status()
                        .map_or(Status::HwerrorPlatform.code(), |s| s.code()),
                    ..GuestRequestOutcome::default()
                }
            }
        }
    }

    fn owner_secret(&self, report_rsp: &[u8]) -> Result<Vec<u8>, String> {
        // Cloned out of the lock: the owner's verification takes milliseconds.
        let owner = self.0.lock().params.owner.clone();
        match owner {
            Some(o) => o.release(report_rsp),
            None => Err("no guest owner is attached to this launch".into()),
        }
    }
}

/// The [`LaunchHooks`] of an SNP VM.
pub struct SnpHooks {
    handle: SnpHandle,
}

impl SnpHooks {
    /// A launch through `ops` with `params`.
    pub fn new(ops: Box<dyn SnpLaunchOps>, params: SnpLaunchParams) -> Self {
        SnpHooks {
            handle: SnpHandle(Arc::new(SnpShared {
                state: Mutex::new(SnpState {
                    ops,
                    params,
                    phase: SnpPhase::Uninit,
                    launches: 0,
                    vmsas: Vec::new(),
                    digest: None,
                    cpuid_diffs: Vec::new(),
                    msg_counts: [0; 4],
                }),
                cond: Condvar::new(),
            })),
        }
    }

    /// The handle for the monitor, the run and the guest requests.
    pub fn handle(&self) -> SnpHandle {
        self.handle.clone()
    }

    fn step(
        &mut self,
        f: impl FnOnce(&mut SnpState) -> Result<(), ConfidentialError>,
    ) -> Result<(), HookError> {
        let mut st = self.handle.lock();
        let r = f(&mut st);
        if r.is_err() {
            st.phase = SnpPhase::Failed;
        }
        drop(st);
        self.handle.0.cond.notify_all();
        r.map_err(|e| Box::new(e) as HookError)
    }
}

impl LaunchHooks for SnpHooks {
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, HookError> {
        self.handle.lock().ops.create_vm(kvm)
    }

    unsafe fn set_memory_slot(
        &mut self,
        vm_fd: &VmFd,
        slot: u32,
        gpa: u64,
        size: u64,
        host: u64,
    ) -> Result<bool, HookError> {
        // SAFETY: forwarded from this method's contract.
        unsafe {
            self.handle
                .lock()
                .ops
                .set_memory_slot(vm_fd, slot, gpa, size, host)
        }
    }

    fn create_vcpu(&mut self, vm_fd: &VmFd, id: u64) -> Result<VcpuFd, HookError> {
        self.handle.lock().ops.create_vcpu(vm_fd, id)
    }

    fn new_vm_per_launch(&self) -> bool {
        self.handle.lock().ops.new_vm_per_launch()
    }

    fn init(&mut self, _ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| {
            // A relaunch: the previous context (and its VMPCKs) is gone.
            if let Err(e) = st.ops.decommission() {
                tracing::warn!("decommissioning the previous SNP context: {e}");
            }
            st.digest = None;
            st.vmsas.clear();
            st.msg_counts = [0; 4];
            let (policy, gosvw) = (st.params.policy, st.params.gosvw);
            st.ops
                .launch_start(policy, gosvw)
                .map_err(fw("SNP_LAUNCH_START"))?;
            st.launches += 1;
            st.phase = SnpPhase::LaunchUpdate;
            Ok(())
        })
    }

    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        let entries = guest_cpuid(ctx.config)?;
        let page = cpuid_page(&entries);
        self.step(|st| {
            let updates = snp_updates(ctx.measured)?;
            st.cpuid_diffs = drive_updates(st.ops.as_mut(), ctx.memory, &updates, &page)?;
            Ok(())
        })
    }

    fn after_vcpus(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| {
            st.vmsas = ctx.vcpu_regs.iter().map(snp_vmsa).collect();
            Ok(())
        })
    }

    fn before_run(&mut self, ctx: &LaunchContext<'_>) -> Result<(), HookError> {
        self.step(|st| {
            // The SNP_PARAMS page (shared): flags and REPORT_DATA.
            let mut params = [0u8; PAGE_SIZE];
            if let Some(rd) = &st.params.report_data {
                params[0] = 1;
                params[0x40..0x80].copy_from_slice(rd);
            }
            if st.params.owner.is_some() {
                params[0] |= layout::SNP_PARAMS_FLAG_SEALED_SECRET;
            }
            ctx.memory
                .write_slice(&params, GuestAddress(layout::SNP_PARAMS))
                .map_err(|_| ConfidentialError::BadRange {
                    gpa: layout::SNP_PARAMS,
                    len: PAGE_SIZE as u64,
                })?;
            let vmsas = std::mem::take(&mut st.vmsas);
            let p = st.params.clone();
            let finish = SnpLaunchFinish {
                id_block: p.id.as_ref().map(|(b, _)| b.as_slice()),
                id_auth: p.id.as_ref().map(|(_, a)| a.as_slice()),
                auth_key_en: p.author_key,
                vcek_dis: p.vcek_disabled,
                host_data: p.host_data,
            };
            drive_finish(st.ops.as_mut(), &vmsas, &finish)?;
            st.digest = st.ops.launch_digest();
            st.phase = SnpPhase::Running;
            tracing::info!(launch = st.launches, "SNP launch finished");
            Ok(())
        })
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
    use crate::builder::{SnpBackend, SnpSpec, VmBuilder};
    use crate::snp_request::handle_doorbell;
    use sev_proto::snp::msg::{self, ReportReq, ReportRsp};
    use sev_proto::snp::secrets::SecretsPage;

    fn platform() -> (tempfile::TempDir, SoftSnpPlatform) {
        let dir = tempfile::tempdir().unwrap();
        let p = SoftSnpPlatform::open(dir.path(), Default::default()).unwrap();
        (dir, p)
    }

    fn params() -> SnpLaunchParams {
        SnpLaunchParams {
            policy: SnpPolicy(0x30000),
            gosvw: [0; 16],
            id: None,
            author_key: false,
            vcek_disabled: false,
            host_data: [0x42; 32],
            cbitpos: 47,
            reduced_phys_bits: 1,
            report_data: None,
            cert_table: None,
            on_reset: ResetMode::Shutdown,
            owner: None,
        }
    }

    fn vm(cpus: u8) -> VmConfig {
        VmConfig {
            memory: 16 << 20,
            cpus,
            boot: BootSource::Bundled("hello".into()),
            serial: crate::SerialOut::Sink,
            ..VmConfig::default()
        }
    }

    #[test]
    fn updates_are_the_layout_then_secrets_and_cpuid() {
        let measured = [
            MeasuredRange {
                gpa: 0x1000,
                len: 0x1000,
                kind: RangeKind::BootTables,
            },
            MeasuredRange {
                gpa: 0x10_0000,
                len: 0x2000,
                kind: RangeKind::Bundled,
            },
        ];
        let u = snp_updates(&measured).unwrap();
        let got: Vec<_> = u.iter().map(|u| (u.gpa, u.page_type)).collect();
        assert_eq!(
            got,
            [
                (0x1000, PageType::Normal),
                (0x10_0000, PageType::Normal),
                (layout::SNP_SECRETS, PageType::Secrets),
                (layout::SNP_CPUID, PageType::Cpuid)
            ]
        );
        let overlap = [MeasuredRange {
            gpa: layout::SNP_SECRETS,
            len: 0x1000,
            kind: RangeKind::BootTables,
        }];
        let e = snp_updates(&overlap).unwrap_err().to_string();
        assert!(e.contains("overlaps secrets"), "{e}");
        let ragged = [MeasuredRange {
            gpa: 0x1000,
            len: 0x10,
            kind: RangeKind::Bundled,
        }];
        assert!(snp_updates(&ragged)
            .unwrap_err()
            .to_string()
            .contains("whole 4 KiB"));
    }

    #[test]
    fn cpuid_page_is_the_linux_table_and_the_soft_firmware_accepts_it() {
        let entries: Vec<_> = (0..70u32).map(|i| (i, 0, i + 1, 2, 3, 4)).collect();
        let p = cpuid_page(&entries);
        assert_eq!(u32::from_le_bytes(p[..4].try_into().unwrap()), 64);
        let e1 = CPUID_HDR + CPUID_ENTRY;
        assert_eq!(u32::from_le_bytes(p[e1..e1 + 4].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(p[e1 + 0x18..e1 + 0x1C].try_into().unwrap()),
            2
        );
        let (_d, plat) = platform();
        let mut ops = SoftSnpOps::new(plat).unwrap();
        ops.launch_start(SnpPolicy(0x30000), [0; 16]).unwrap();
        let mut page = p;
        ops.launch_update("cpuid", layout::SNP_CPUID, &mut page, PageType::Cpuid)
            .unwrap();
        // A page the firmware refuses comes back corrected, and the difference is named.
        let mut bad = p;
        bad[CPUID_HDR + 0x28] = 1; // an entry's reserved field
        let e = ops
            .launch_update(
                "cpuid",
                layout::SNP_CPUID + 0x1000,
                &mut bad,
                PageType::Cpuid,
            )
            .unwrap_err();
        assert_eq!(e.status(), Some(Status::InvalidParam));
        let d = cpuid_differences(&p, &bad);
        assert!(d.is_empty(), "corrected page equals the good one: {d:?}");
        let mut worse = p;
        worse[CPUID_HDR + 0x28] = 1;
        let d = cpuid_differences(&worse, &p);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("entry 0") && d[0].contains("reserved"),
            "{d:?}"
        );
    }

    #[test]
    fn prediction_depends_on_vcpus_and_records_every_page() {
        let one = predict(16 << 20, &BootSource::Bundled("hello".into()), 51, 1, true).unwrap();
        let two = predict(16 << 20, &BootSource::Bundled("hello".into()), 51, 2, false).unwrap();
        assert_ne!(one.launch_digest(), two.launch_digest());
        let last = one.pages.last().unwrap();
        assert_eq!(last.source, "vmsa");
        assert_eq!(last.page.gpa, VMSA_GPA);
        assert_eq!(Some(last.ld), one.launch_digest());
        assert!(one.pages.iter().any(|p| p.source == "secrets"
            && p.page.gpa == layout::SNP_SECRETS
            && p.page.contents == [0; 48]));
        let c47 = predict(16 << 20, &BootSource::Bundled("hello".into()), 47, 1, false).unwrap();
        assert_ne!(
            c47.launch_digest(),
            one.launch_digest(),
            "the C-bit is in the page tables"
        );
        let e = predict(
            16 << 20,
            &BootSource::Firmware("/nonexistent".into()),
            51,
            1,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bundled guests only"), "{e}");
    }

    /// The soft launch of `hello` measures what the owner predicts, for 1 and 2 vCPUs; the
    /// guest runs; a report requested with the VMPCK0 the firmware put in the secrets page
    /// carries that measurement, the host data and the report data.
    #[test]
    fn soft_launch_measures_the_prediction_and_serves_reports() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        for cpus in [1u8, 2] {
            let (_d, plat) = platform();
            let mut p = params();
            p.report_data = Some([7; 64]);
            let b = VmBuilder::new(vm(cpus)).snp(Some(SnpSpec {
                backend: SnpBackend::Soft(plat),
                params: p,
            }));
            let want = b.check().unwrap().expected_snp_digest.unwrap();
            let predicted = predict(
                16 << 20,
                &BootSource::Bundled("hello".into()),
                47,
                cpus,
                false,
            )
            .unwrap()
            .launch_digest()
            .unwrap();
            assert_eq!(want, predicted);
            let mut l = b.build().unwrap();
            let h = l.snp.clone().unwrap();
            assert_eq!(h.status().phase, SnpPhase::LaunchUpdate);
            let st = l.vm.run().unwrap();
            assert!(matches!(st, crate::ExitStatus::Exited(0)), "{st:?}");
            assert_eq!(h.launch_digest(), Some(want), "{cpus} vCPUs");
            assert_eq!(h.status().phase, SnpPhase::Running);
            let mem = l.vm.guest_memory().clone();
            let mut params_page = [0u8; 0x80];
            mem.read_slice(&mut params_page, GuestAddress(layout::SNP_PARAMS))
                .unwrap();
            assert_eq!(params_page[0], 1);
            assert_eq!(&params_page[0x40..0x80], &[7; 64][..]);
            // The guest's side of a report request, through the doorbell.
            let mut sp = [0u8; PAGE_SIZE];
            mem.read_slice(&mut sp, GuestAddress(layout::SNP_SECRETS))
                .unwrap();
            let secrets = SecretsPage::from_bytes(&sp).unwrap();
            let key = secrets.vmpck[0];
            let req = ReportReq {
                report_data: [9; 64],
                vmpl: 0,
                key_sel: 0,
            };
            let m = msg::seal(&key, 1, 5, 1, 0, &req.to_bytes()).unwrap();
            mem.write_slice(&m, GuestAddress(layout::SNP_REQ_PAGE))
                .unwrap();
            let g = layout::SNP_GHCB;
            mem.write_obj(crate::snp_request::EXIT_GUEST_REQUEST, GuestAddress(g))
                .unwrap();
            mem.write_obj(layout::SNP_REQ_PAGE, GuestAddress(g + 8))
                .unwrap();
            mem.write_obj(layout::SNP_RESP_PAGE, GuestAddress(g + 0x10))
                .unwrap();
            let svc = h.requests();
            let out = handle_doorbell(&mem, Some(svc.as_ref()));
            assert_eq!(out, GuestRequestOutcome::default());
            let mut resp = vec![0u8; PAGE_SIZE];
            mem.read_slice(&mut resp, GuestAddress(layout::SNP_RESP_PAGE))
                .unwrap();
            let (hdr, pt) = msg::open(&key, &resp).unwrap();
            assert_eq!((hdr.msg_type, hdr.seqno), (6, 2));
            assert_eq!(
                h.msg_counts(),
                [2, 0, 0, 0],
                "the VMPCK0 count follows the firmware"
            );
            let rsp = ReportRsp::from_bytes(&pt).unwrap();
            let r = rsp.report.unwrap();
            assert_eq!(r.measurement, want);
            assert_eq!(r.report_data, [9; 64]);
            assert_eq!(r.host_data, [0x42; 32]);
            // An extended request with no room: INVALID_LEN and the pages needed, no firmware call.
            let mut p2 = params();
            p2.cert_table = Some(vec![1; 5000]);
            h.lock().params.cert_table = p2.cert_table;
            mem.write_obj(crate::snp_request::EXIT_EXT_GUEST_REQUEST, GuestAddress(g))
                .unwrap();
            mem.write_obj(layout::SNP_CERTS, GuestAddress(g + 0x18))
                .unwrap();
            mem.write_obj(1u64, GuestAddress(g + 0x20)).unwrap();
            mem.write_obj(layout::SNP_RESP_PAGE, GuestAddress(g + 0x10))
                .unwrap();
            let out = handle_doorbell(&mem, Some(svc.as_ref()));
            assert_eq!(
                (out.vmm_error, out.cert_pages_needed),
                (VMM_ERR_INVALID_LEN, 2)
            );
            h.end();
            assert_eq!(h.status().phase, SnpPhase::Uninit);
        }
    }

    #[test]
    fn a_wrong_id_block_is_refused_at_launch_finish_in_qemus_words() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let (_d, plat) = platform();
        let mut p = params();
        // A well-formed ID block for another digest, signed with a fresh key.
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let block = sev_proto::snp::id_block::IdBlock {
            ld: [1; 48],
            family_id: [0; 16],
            image_id: [0; 16],
            version: 1,
            guest_svn: 0,
            policy: SnpPolicy(0x30000),
        };
        let auth = sev_proto::snp::id_block::IdAuth::sign(&block, &key, None).unwrap();
        p.id = Some((block.to_bytes().to_vec(), auth.to_bytes().to_vec()));
        let mut l = VmBuilder::new(vm(1))
            .snp(Some(SnpSpec {
                backend: SnpBackend::Soft(plat),
                params: p,
            }))
            .build()
            .unwrap();
        let e = l.vm.run().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("SNP_LAUNCH_FINISH ret=-5 fw_error=11 'Bad measurement'"),
            "{msg}"
        );
    }
}
