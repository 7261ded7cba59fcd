//! The SEV-ES initial VMSA (VMCB save area, AMD APM vol. 2 table B-4, Linux's
//! `struct sev_es_save_area`) that KVM encrypts at LAUNCH_UPDATE_VMSA, as a pure function of
//! the vCPU's register state, so that owners can compute the launch digest.
//!
//! [`kvm_es_vmsa`] is the one model of what Linux builds: `sev_es_sync_vmsa`
//! (arch/x86/kvm/svm/sev.c, as of Linux 6.10+) copies the VMCB save area that KVM_SET_SREGS &
//! co. filled (`svm_set_segment`, `svm_set_cr0/4`, `svm_set_efer`, `sev_post_set_cr3`,
//! `init_vmcb`), then the GPRs and RIP, XCR0, PKRU, XSS and DR6 of the vCPU, and the VM's
//! `vmsa_features` into SEV_FEATURES; for a VM made with `KVM_SEV_INIT2` (a non-default VM
//! type) also the x87/SSE/AVX state. [`VcpuState`] is that register state as the uAPI carries
//! it (`struct kvm_regs`, `struct kvm_sregs`, debug registers, XCR0, the MSRs the save area
//! holds, the FPU).
//!
//! [`qemu_vmsa`] is the model applied to QEMU's reset state ([`VcpuState::qemu_reset`]); it is
//! byte-identical to `sevctl vmsa build --userspace qemu` (sevctl 0.6.2).
//! [`VmsaProfile::QemuFpu`] is the same state on an `KVM_SEV_INIT2` VM (FPU state synced:
//! MXCSR = 0x1F80 and the x87 FCW = 0x37F), as the `sev` crate / sev-snp-measure assume.

/// Which VMM's reset state to model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmsaProfile {
    /// QEMU on a VM made with `KVM_SEV_ES_INIT` (no FPU state), as sevctl 0.6.2: the default.
    #[default]
    Qemu,
    /// QEMU on a VM made with `KVM_SEV_INIT2` (FPU state synced; sev crate 8, sev-snp-measure).
    QemuFpu,
}

const ES: usize = 0x00;
const CS: usize = 0x10;
const SS: usize = 0x20;
const DS: usize = 0x30;
const FS: usize = 0x40;
const GS: usize = 0x50;
const GDTR: usize = 0x60;
const LDTR: usize = 0x70;
const IDTR: usize = 0x80;
const TR: usize = 0x90;
/// Offset of CPL.
pub const CPL: usize = 0xCB;
/// Offset of EFER.
pub const EFER: usize = 0xD0;
/// Offset of XSS.
pub const XSS: usize = 0x140;
/// Offset of CR4.
pub const CR4: usize = 0x148;
/// Offset of CR3.
pub const CR3: usize = 0x150;
/// Offset of CR0.
pub const CR0: usize = 0x158;
/// Offset of DR7.
pub const DR7: usize = 0x160;
/// Offset of DR6.
pub const DR6: usize = 0x168;
/// Offset of RFLAGS.
pub const RFLAGS: usize = 0x170;
/// Offset of RIP.
pub const RIP: usize = 0x178;
/// Offset of RSP.
pub const RSP: usize = 0x1D8;
/// Offset of RAX.
pub const RAX: usize = 0x1F8;
/// Offset of STAR (then LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_CS/ESP/EIP, CR2).
pub const STAR: usize = 0x200;
/// Offset of G_PAT.
pub const G_PAT: usize = 0x268;
/// Offset of PKRU (32 bits).
pub const PKRU: usize = 0x2E8;
/// Offset of RCX (then RDX, RBX, -, RBP, RSI, RDI, R8..R15).
pub const RCX: usize = 0x308;
/// Offset of RDX (holds the CPUID signature at reset).
pub const RDX: usize = 0x310;
/// Offset of RDI.
pub const RDI: usize = 0x338;
/// Offset of SEV_FEATURES.
pub const SEV_FEATURES: usize = 0x3B0;
/// Offset of XCR0.
pub const XCR0: usize = 0x3E8;
/// Offset of the x87 data pointer (start of the FPU area).
pub const X87_DP: usize = 0x400;
/// Offset of MXCSR.
pub const MXCSR: usize = 0x408;
/// Offset of the x87 control word.
pub const X87_FCW: usize = 0x410;

/// `DR7_FIXED_1`: KVM refuses LAUNCH_UPDATE_VMSA when DR7 has any other bit set.
pub const DR7_FIXED_1: u64 = 0x400;
/// EFER.SVME, which KVM always sets in the save area (`svm_set_efer`).
const EFER_SVME: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR0_PG: u64 = 1 << 31;
const CR0_CD: u64 = 1 << 30;
const CR0_NW: u64 = 1 << 29;
/// CR4.MCE: `svm_set_cr4` ORs in the host's CR4.MCE, which every SEV host has set.
const CR4_MCE: u64 = 1 << 6;

/// A segment register as `struct kvm_segment` carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Base.
    pub base: u64,
    /// Limit (bytes, not pages).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Type (4 bits).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size.
    pub db: bool,
    /// Code/data (not system) descriptor.
    pub s: bool,
    /// 64-bit code.
    pub l: bool,
    /// Granularity.
    pub g: bool,
    /// Available bit.
    pub avl: bool,
    /// KVM's "unusable" (a null selector loaded).
    pub unusable: bool,
}

impl Segment {
    /// The VMCB attribute word `svm_set_segment` stores: type, S, DPL, P (and not
    /// unusable), AVL, L, DB, G.
    pub fn svm_attrib(&self) -> u16 {
        u16::from(self.type_ & 0xF)
            | u16::from(self.s) << 4
            | u16::from(self.dpl & 3) << 5
            | u16::from(self.present && !self.unusable) << 7
            | u16::from(self.avl) << 8
            | u16::from(self.l) << 9
            | u16::from(self.db) << 10
            | u16::from(self.g) << 11
    }

    fn real(selector: u16, base: u64, type_: u8) -> Segment {
        Segment {
            base,
            limit: 0xFFFF,
            selector,
            type_,
            present: true,
            s: true,
            ..Segment::default()
        }
    }

    fn system(type_: u8) -> Segment {
        Segment {
            limit: 0xFFFF,
            type_,
            present: true,
            ..Segment::default()
        }
    }
}

/// GDTR or IDTR (`struct kvm_dtable`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescTable {
    /// Base.
    pub base: u64,
    /// Limit.
    pub limit: u16,
}

/// The x87/SSE/AVX state (the legacy XSAVE region and the YMM upper halves), which KVM puts
/// into the VMSA only for a `KVM_SEV_INIT2` VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpuState {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word.
    pub fsw: u16,
    /// Abridged tag word, as FXSAVE stores it.
    pub ftw: u16,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last x87 instruction pointer.
    pub rip: u64,
    /// Last x87 data pointer.
    pub rdp: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// ST0..ST7 as FXSAVE stores them (10 bytes used of 16).
    pub st: [[u8; 16]; 8],
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
    /// The upper halves of YMM0..YMM15 (zero when the YMM component is in its init state).
    pub ymm_hi: [[u8; 16]; 16],
}

impl Default for FpuState {
    /// The state after `fpstate_init` (and x86 reset): FCW 0x37F, MXCSR 0x1F80, rest zero.
    fn default() -> Self {
        FpuState {
            fcw: 0x37F,
            fsw: 0,
            ftw: 0,
            fop: 0,
            rip: 0,
            rdp: 0,
            mxcsr: 0x1F80,
            st: [[0; 16]; 8],
            xmm: [[0; 16]; 16],
            ymm_hi: [[0; 16]; 16],
        }
    }
}

/// The register state of one vCPU as user space gives it to KVM (KVM_SET_REGS, KVM_SET_SREGS,
/// KVM_SET_DEBUGREGS, KVM_SET_XCRS, KVM_SET_MSRS, KVM_SET_XSAVE), i.e. what
/// `sev_es_sync_vmsa` turns into the VMSA. `Default` is all zero; start from
/// [`VcpuState::kvm_reset`] for what a fresh vCPU holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VcpuState {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescTable,
    pub idt: DescTable,
    pub cr0: u64,
    /// Not in the initial VMSA: KVM writes CR2 into the save area only before VMRUN.
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub dr6: u64,
    pub dr7: u64,
    pub xcr0: u64,
    pub xss: u64,
    pub pkru: u32,
    /// IA32_PAT (the save area's G_PAT).
    pub pat: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub fpu: FpuState,
}

impl VcpuState {
    /// A vCPU as KVM creates it (`kvm_vcpu_reset` + `init_vmcb`, before any KVM_SET_*): real
    /// mode at the reset vector, CR0 0x60000010, RDX 0x600 (no CPUID set yet), DR6 0xFFFF0FF0,
    /// DR7 0x400, XCR0 1, PAT 0x0007040600070406, FPU in its init state.
    pub fn kvm_reset() -> VcpuState {
        let data = Segment::real(0, 0, 0x3);
        VcpuState {
            rdx: 0x600,
            rip: 0xFFF0,
            rflags: 0x2,
            cs: Segment::real(0xF000, 0xFFFF_0000, 0xB),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment::system(0xB),
            ldt: Segment::system(0x2),
            gdt: DescTable {
                base: 0,
                limit: 0xFFFF,
            },
            idt: DescTable {
                base: 0,
                limit: 0xFFFF,
            },
            cr0: 0x6000_0010,
            dr6: 0xFFFF_0FF0,
            dr7: DR7_FIXED_1,
            xcr0: 1,
            pat: 0x0007_0406_0007_0406,
            ..VcpuState::default()
        }
    }

    /// QEMU's reset state of one vCPU of an SEV-ES guest: the BSP at the reset vector
    /// (CS.base 0xFFFF0000, RIP 0xFFF0), an AP at the OVMF SEV-ES reset address `reset_addr`
    /// (CS.base = reset_addr & 0xFFFF0000, RIP = reset_addr & 0xFFFF); `cpu_sig` (CPUID(1).EAX)
    /// in RDX.
    pub fn qemu_reset(bsp: bool, reset_addr: u32, cpu_sig: u32) -> VcpuState {
        let mut s = VcpuState::kvm_reset();
        if !bsp {
            s.cs.base = u64::from(reset_addr & 0xFFFF_0000);
            s.rip = u64::from(reset_addr & 0xFFFF);
        }
        s.rdx = u64::from(cpu_sig);
        s
    }
}

/// How the VM was initialised, which decides what `sev_es_sync_vmsa` adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmVmsaParams {
    /// `sev->vmsa_features`, written to SEV_FEATURES: 0 after `KVM_SEV_ES_INIT` (Linux 6.10+;
    /// earlier kernels put DebugSwap here when the `debug_swap` module parameter was on),
    /// `kvm_sev_init.vmsa_features` after `KVM_SEV_INIT2`.
    pub vmsa_features: u64,
    /// The VM has a non-default type (`KVM_SEV_INIT2`): the FPU state is synced too.
    pub init2: bool,
}

fn seg(v: &mut [u8; 4096], off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    v[off..off + 2].copy_from_slice(&selector.to_le_bytes());
    v[off + 2..off + 4].copy_from_slice(&attrib.to_le_bytes());
    v[off + 4..off + 8].copy_from_slice(&limit.to_le_bytes());
    v[off + 8..off + 16].copy_from_slice(&base.to_le_bytes());
}

fn put64(v: &mut [u8; 4096], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_le_bytes());
}

fn put16(v: &mut [u8; 4096], off: usize, x: u16) {
    v[off..off + 2].copy_from_slice(&x.to_le_bytes());
}

/// The VMSA KVM encrypts at LAUNCH_UPDATE_VMSA for a vCPU in state `s` (Linux 6.10+ on an
/// SEV-ES VM with nested paging). What it takes from where:
///
/// * the VMCB save area as KVM_SET_SREGS and reset left it: the ten segment/table registers
///   (`svm_set_segment`'s attribute word; CPL = SS.DPL), EFER | SVME (| LMA when LME and
///   CR0.PG), CR4 | MCE, CR3 (`sev_post_set_cr3`), CR0 without CD/NW
///   (`KVM_X86_QUIRK_CD_NW_CLEARED`), DR7, RFLAGS | 2, the syscall/sysenter MSRs
///   (SYSENTER_ESP/EIP: low 32 bits), G_PAT; CR2 and DR0-3 are zero;
/// * `sev_es_sync_vmsa`: RAX..R15, RIP, XCR0, PKRU, XSS, DR6, SEV_FEATURES; with `init2` the
///   x87 state, MXCSR, XMM and the YMM upper halves.
///
/// KVM refuses (EINVAL) a vCPU whose DR7 has bits other than [`DR7_FIXED_1`] or that is being
/// debugged; this function does not check.
pub fn kvm_es_vmsa(s: &VcpuState, p: &KvmVmsaParams) -> [u8; 4096] {
    let mut v = [0u8; 4096];
    for (off, r) in [
        (ES, &s.es),
        (CS, &s.cs),
        (SS, &s.ss),
        (DS, &s.ds),
        (FS, &s.fs),
        (GS, &s.gs),
        (LDTR, &s.ldt),
        (TR, &s.tr),
    ] {
        seg(&mut v, off, r.selector, r.svm_attrib(), r.limit, r.base);
    }
    seg(&mut v, GDTR, 0, 0, u32::from(s.gdt.limit), s.gdt.base);
    seg(&mut v, IDTR, 0, 0, u32::from(s.idt.limit), s.idt.base);
    v[CPL] = s.ss.dpl & 3;
    let mut efer = s.efer | EFER_SVME;
    if s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0 {
        efer |= EFER_LMA;
    }
    put64(&mut v, EFER, efer);
    put64(&mut v, XSS, s.xss);
    put64(&mut v, CR4, s.cr4 | CR4_MCE);
    put64(&mut v, CR3, s.cr3);
    put64(&mut v, CR0, s.cr0 & !(CR0_CD | CR0_NW));
    put64(&mut v, DR7, s.dr7);
    put64(&mut v, DR6, s.dr6);
    put64(&mut v, RFLAGS, s.rflags | 0x2);
    put64(&mut v, RIP, s.rip);
    put64(&mut v, RSP, s.rsp);
    put64(&mut v, RAX, s.rax);
    for (i, x) in [
        s.star,
        s.lstar,
        s.cstar,
        s.sfmask,
        s.kernel_gs_base,
        s.sysenter_cs,
        s.sysenter_esp & 0xFFFF_FFFF,
        s.sysenter_eip & 0xFFFF_FFFF,
    ]
    .into_iter()
    .enumerate()
    {
        put64(&mut v, STAR + 8 * i, x);
    }
    put64(&mut v, G_PAT, s.pat);
    v[PKRU..PKRU + 4].copy_from_slice(&s.pkru.to_le_bytes());
    // RCX, RDX, RBX, (RSP is at 0x1D8), RBP, RSI, RDI, R8..R15.
    for (i, x) in [
        s.rcx, s.rdx, s.rbx, 0, s.rbp, s.rsi, s.rdi, s.r8, s.r9, s.r10, s.r11, s.r12, s.r13, s.r14,
        s.r15,
    ]
    .into_iter()
    .enumerate()
    {
        put64(&mut v, RCX + 8 * i, x);
    }
    put64(&mut v, SEV_FEATURES, p.vmsa_features);
    put64(&mut v, XCR0, s.xcr0);
    if p.init2 {
        let f = &s.fpu;
        put64(&mut v, X87_DP, f.rdp);
        v[MXCSR..MXCSR + 4].copy_from_slice(&f.mxcsr.to_le_bytes());
        put16(&mut v, 0x40C, f.ftw);
        put16(&mut v, 0x40E, f.fsw);
        put16(&mut v, X87_FCW, f.fcw);
        put16(&mut v, 0x412, f.fop);
        // x87_ds and x87_cs (0x414, 0x416) are written as 0.
        put64(&mut v, 0x418, f.rip);
        // fpreg_x87: bytes 0-7 of each register, then bytes 8-9 of each.
        for (i, st) in f.st.iter().enumerate() {
            v[0x420 + i * 8..0x420 + i * 8 + 8].copy_from_slice(&st[..8]);
            v[0x420 + 64 + i * 2..0x420 + 64 + i * 2 + 2].copy_from_slice(&st[8..10]);
        }
        for (i, x) in f.xmm.iter().enumerate() {
            v[0x470 + i * 16..0x470 + i * 16 + 16].copy_from_slice(x);
        }
        for (i, y) in f.ymm_hi.iter().enumerate() {
            v[0x570 + i * 16..0x570 + i * 16 + 16].copy_from_slice(y);
        }
    }
    v
}

/// The CPUID(1).EAX signature for a family/model/stepping (e.g. 25/1/1 -> 0xA00F11,
/// 23/1/2 -> 0x800F12).
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (fam_low, fam_ext) = if family > 0xF {
        (0xF, (family - 0xF) & 0xFF)
    } else {
        (family, 0)
    };
    (fam_ext << 20)
        | (((model >> 4) & 0xF) << 16)
        | (fam_low << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
}

/// The reset VMSA of one vCPU, as `sevctl vmsa build --userspace qemu`: [`kvm_es_vmsa`] of
/// [`VcpuState::qemu_reset`] on a `KVM_SEV_ES_INIT` VM.
pub fn qemu_vmsa(bsp: bool, reset_addr: u32, cpu_sig: u32) -> [u8; 4096] {
    vmsa(VmsaProfile::Qemu, bsp, reset_addr, cpu_sig)
}

/// The reset VMSA of one vCPU for a given profile.
pub fn vmsa(profile: VmsaProfile, bsp: bool, reset_addr: u32, cpu_sig: u32) -> [u8; 4096] {
    let params = KvmVmsaParams {
        vmsa_features: 0,
        init2: profile == VmsaProfile::QemuFpu,
    };
    kvm_es_vmsa(&VcpuState::qemu_reset(bsp, reset_addr, cpu_sig), &params)
}

/// The VMSAs of `vcpus` vCPUs in index order (vCPU 0 is the BSP).
pub fn qemu_vmsas(
    profile: VmsaProfile,
    vcpus: usize,
    reset_addr: u32,
    cpu_sig: u32,
) -> Vec<[u8; 4096]> {
    (0..vcpus)
        .map(|i| vmsa(profile, i == 0, reset_addr, cpu_sig))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sevctl 0.6.2's `vmsa build --userspace qemu` layout, written out field by field (the
    /// bytes this crate produced before the KVM model existed, checked against sevctl's
    /// files in tests/measurement.rs): the model of QEMU's reset state must reproduce it.
    fn sevctl_layout(fpu: bool, bsp: bool, reset_addr: u32, cpu_sig: u32) -> [u8; 4096] {
        let mut v = [0u8; 4096];
        let (cs_base, rip) = if bsp {
            (0xFFFF_0000u64, 0xFFF0u64)
        } else {
            (
                u64::from(reset_addr & 0xFFFF_0000),
                u64::from(reset_addr & 0xFFFF),
            )
        };
        for off in [ES, SS, DS, FS, GS] {
            seg(&mut v, off, 0, 0x93, 0xFFFF, 0);
        }
        seg(&mut v, CS, 0xF000, 0x9B, 0xFFFF, cs_base);
        seg(&mut v, GDTR, 0, 0, 0xFFFF, 0);
        seg(&mut v, LDTR, 0, 0x82, 0xFFFF, 0);
        seg(&mut v, IDTR, 0, 0, 0xFFFF, 0);
        seg(&mut v, TR, 0, 0x8B, 0xFFFF, 0);
        put64(&mut v, EFER, 0x1000);
        put64(&mut v, CR4, 0x40);
        put64(&mut v, CR0, 0x10);
        put64(&mut v, DR7, 0x400);
        put64(&mut v, DR6, 0xFFFF_0FF0);
        put64(&mut v, RFLAGS, 0x2);
        put64(&mut v, RIP, rip);
        put64(&mut v, G_PAT, 0x0007_0406_0007_0406);
        put64(&mut v, RDX, u64::from(cpu_sig));
        put64(&mut v, XCR0, 0x1);
        if fpu {
            v[MXCSR..MXCSR + 4].copy_from_slice(&0x1F80u32.to_le_bytes());
            v[X87_FCW..X87_FCW + 2].copy_from_slice(&0x37Fu16.to_le_bytes());
        }
        v
    }

    #[test]
    fn sigs() {
        assert_eq!(cpu_sig(25, 1, 1), 0xA00F11);
        assert_eq!(cpu_sig(23, 1, 2), 0x800F12);
        assert_eq!(cpu_sig(6, 0x3A, 9), 0x306A9);
    }

    #[test]
    fn kvm_model_of_qemu_reset_is_sevctls_layout() {
        for (reset, sig) in [
            (0x80B004, 0xA00F11),
            (0xFFFF_FFF0, 0x800F12),
            (0x1234, 0x600),
        ] {
            for bsp in [true, false] {
                assert_eq!(
                    qemu_vmsa(bsp, reset, sig),
                    sevctl_layout(false, bsp, reset, sig),
                    "bsp {bsp} reset {reset:#x}"
                );
                assert_eq!(
                    vmsa(VmsaProfile::QemuFpu, bsp, reset, sig),
                    sevctl_layout(true, bsp, reset, sig)
                );
            }
        }
    }

    #[test]
    fn bsp_ap_differ_in_cs_rip() {
        let b = qemu_vmsa(true, 0x80B004, 0xA00F11);
        let a = qemu_vmsa(false, 0x80B004, 0xA00F11);
        assert_eq!(&b[RIP..RIP + 8], &0xFFF0u64.to_le_bytes());
        assert_eq!(&a[RIP..RIP + 8], &0xB004u64.to_le_bytes());
        assert_eq!(&a[CS + 8..CS + 16], &0x80_0000u64.to_le_bytes());
        let f = vmsa(VmsaProfile::QemuFpu, true, 0x80B004, 0xA00F11);
        assert_eq!(&f[MXCSR..MXCSR + 4], &0x1F80u32.to_le_bytes());
    }

    fn rd64(v: &[u8; 4096], off: usize) -> u64 {
        u64::from_le_bytes(v[off..off + 8].try_into().unwrap())
    }

    /// Long-mode entry as a VMM sets it with KVM_SET_SREGS: what `svm_set_*` make of it.
    #[test]
    fn long_mode_state_as_svm_stores_it() {
        let mut s = VcpuState::kvm_reset();
        let code = Segment {
            base: 0,
            limit: 0xFFFF_FFFF,
            selector: 0x08,
            type_: 0xB,
            present: true,
            s: true,
            l: true,
            g: true,
            ..Segment::default()
        };
        let data = Segment {
            selector: 0x10,
            type_: 0x3,
            db: true,
            l: false,
            dpl: 0,
            ..code
        };
        (s.cs, s.ds, s.es, s.fs, s.gs, s.ss) = (code, data, data, data, data, data);
        s.cr0 = 0x8000_0031 | CR0_CD | CR0_NW;
        s.cr3 = 0x9000 | 1 << 47;
        s.cr4 = 0x20;
        s.efer = EFER_LME; // LMA is added: CR0.PG with LME
        (s.rip, s.rsp, s.rdi, s.r15) = (0x10_0000, 0x8000, 1, 0xF);
        s.rflags = 0;
        let v = kvm_es_vmsa(&s, &KvmVmsaParams::default());
        assert_eq!(&v[CS + 2..CS + 4], &0xA9Bu16.to_le_bytes());
        assert_eq!(&v[SS + 2..SS + 4], &0xC93u16.to_le_bytes());
        assert_eq!(rd64(&v, EFER), 0x1500);
        assert_eq!(rd64(&v, CR0), 0x8000_0031);
        assert_eq!(rd64(&v, CR3), 0x9000 | 1 << 47);
        assert_eq!(rd64(&v, CR4), 0x60);
        assert_eq!(rd64(&v, RFLAGS), 2);
        assert_eq!(rd64(&v, RIP), 0x10_0000);
        assert_eq!(rd64(&v, RSP), 0x8000);
        assert_eq!(rd64(&v, RDI), 1);
        assert_eq!(rd64(&v, RCX + 14 * 8), 0xF, "R15");
        assert_eq!(rd64(&v, 0x240), 0, "CR2 is not in the initial VMSA");
        // CPL comes from SS.DPL; an unusable segment is not present.
        s.ss.dpl = 3;
        s.fs.unusable = true;
        let v = kvm_es_vmsa(&s, &KvmVmsaParams::default());
        assert_eq!(v[CPL], 3);
        assert_eq!(&v[FS + 2..FS + 4], &0xC13u16.to_le_bytes());
        // The FPU area only with INIT2; SEV_FEATURES from the VM.
        assert!(v[X87_DP..0x670].iter().all(|b| *b == 0));
        let p = KvmVmsaParams {
            vmsa_features: 1 << 5,
            init2: true,
        };
        s.fpu.xmm[15] = [0xAB; 16];
        s.fpu.st[7] = [7; 16];
        let v = kvm_es_vmsa(&s, &p);
        assert_eq!(rd64(&v, SEV_FEATURES), 1 << 5);
        assert_eq!(&v[0x470 + 15 * 16..0x480 + 15 * 16], &[0xAB; 16]);
        assert_eq!(&v[0x420 + 56..0x420 + 64], &[7; 8]);
        assert_eq!(&v[0x420 + 64 + 14..0x420 + 64 + 16], &[7; 2]);
        assert_eq!(&v[X87_FCW..X87_FCW + 2], &0x37Fu16.to_le_bytes());
    }
}
