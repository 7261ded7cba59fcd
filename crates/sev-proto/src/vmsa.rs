//! The SEV-ES initial VMSA (VMCB save area, AMD APM vol. 2 table B-4) that QEMU/KVM hand to
//! LAUNCH_UPDATE_VMSA for each vCPU at reset, so that owners can compute the launch digest.
//!
//! [`qemu_vmsa`] is byte-identical to `sevctl vmsa build --userspace qemu` (sevctl 0.6.2).
//! [`VmsaProfile::QemuFpu`] additionally sets MXCSR = 0x1F80 and the x87 FCW = 0x37F, as newer
//! KVM (which syncs FPU state into the VMSA) and the `sev` crate / sev-snp-measure assume.

/// Which VMM's reset state to model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmsaProfile {
    /// QEMU as modelled by sevctl 0.6.2 (no FPU state): the default.
    #[default]
    Qemu,
    /// QEMU with MXCSR/FCW reset values (sev crate 8, sev-snp-measure).
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
/// Offset of EFER.
pub const EFER: usize = 0xD0;
/// Offset of CR4.
pub const CR4: usize = 0x148;
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
/// Offset of G_PAT.
pub const G_PAT: usize = 0x268;
/// Offset of RDX (holds the CPUID signature at reset).
pub const RDX: usize = 0x310;
/// Offset of SEV_FEATURES.
pub const SEV_FEATURES: usize = 0x3B0;
/// Offset of XCR0.
pub const XCR0: usize = 0x3E8;
/// Offset of MXCSR.
pub const MXCSR: usize = 0x408;
/// Offset of the x87 control word.
pub const X87_FCW: usize = 0x410;

fn seg(v: &mut [u8; 4096], off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    v[off..off + 2].copy_from_slice(&selector.to_le_bytes());
    v[off + 2..off + 4].copy_from_slice(&attrib.to_le_bytes());
    v[off + 4..off + 8].copy_from_slice(&limit.to_le_bytes());
    v[off + 8..off + 16].copy_from_slice(&base.to_le_bytes());
}

fn put64(v: &mut [u8; 4096], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_le_bytes());
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

/// The reset VMSA of one vCPU, as `sevctl vmsa build --userspace qemu`: the BSP starts at
/// CS.base 0xFFFF0000 / RIP 0xFFF0; APs at the OVMF SEV-ES reset address `reset_addr`
/// (CS.base = reset_addr & 0xFFFF0000, RIP = reset_addr & 0xFFFF). `cpu_sig` goes into RDX.
pub fn qemu_vmsa(bsp: bool, reset_addr: u32, cpu_sig: u32) -> [u8; 4096] {
    vmsa(VmsaProfile::Qemu, bsp, reset_addr, cpu_sig)
}

/// The reset VMSA of one vCPU for a given profile.
pub fn vmsa(profile: VmsaProfile, bsp: bool, reset_addr: u32, cpu_sig: u32) -> [u8; 4096] {
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
    put64(&mut v, SEV_FEATURES, 0);
    put64(&mut v, XCR0, 0x1);
    if profile == VmsaProfile::QemuFpu {
        v[MXCSR..MXCSR + 4].copy_from_slice(&0x1F80u32.to_le_bytes());
        v[X87_FCW..X87_FCW + 2].copy_from_slice(&0x37Fu16.to_le_bytes());
    }
    v
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

    #[test]
    fn sigs() {
        assert_eq!(cpu_sig(25, 1, 1), 0xA00F11);
        assert_eq!(cpu_sig(23, 1, 2), 0x800F12);
        assert_eq!(cpu_sig(6, 0x3A, 9), 0x306A9);
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
}
