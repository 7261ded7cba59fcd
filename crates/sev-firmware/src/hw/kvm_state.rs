//! KVM's uAPI register structs as [`sev_proto::vmsa::VcpuState`], the input of the one VMSA
//! model ([`sev_proto::vmsa::kvm_es_vmsa`]). The VMM converts the registers it sets, the
//! loopback kernel model the registers it reads back from the vCPU, with the same functions.

use kvm_bindings as kb;
use sev_proto::vmsa::{DescTable, FpuState, Segment, VcpuState};

/// MSR indices whose values the VMSA holds (the save area's syscall/sysenter MSRs, G_PAT and
/// XSS), in the order [`apply_msr`] knows them.
pub const VMSA_MSRS: [u32; 10] = [
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_KERNEL_GS_BASE,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
    MSR_PAT,
    MSR_XSS,
];

const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_CSTAR: u32 = 0xC000_0083;
const MSR_SFMASK: u32 = 0xC000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_PAT: u32 = 0x277;
const MSR_XSS: u32 = 0xDA0;

/// A `struct kvm_segment`.
pub fn segment(s: &kb::kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

/// KVM_SET_REGS: the GPRs, RIP and RFLAGS.
pub fn apply_regs(st: &mut VcpuState, r: &kb::kvm_regs) {
    (st.rax, st.rbx, st.rcx, st.rdx) = (r.rax, r.rbx, r.rcx, r.rdx);
    (st.rsi, st.rdi, st.rsp, st.rbp) = (r.rsi, r.rdi, r.rsp, r.rbp);
    (st.r8, st.r9, st.r10, st.r11) = (r.r8, r.r9, r.r10, r.r11);
    (st.r12, st.r13, st.r14, st.r15) = (r.r12, r.r13, r.r14, r.r15);
    (st.rip, st.rflags) = (r.rip, r.rflags);
}

/// KVM_SET_SREGS: segments, descriptor tables, control registers and EFER (CR8, APIC base
/// and the interrupt bitmap are not part of the VMSA).
pub fn apply_sregs(st: &mut VcpuState, s: &kb::kvm_sregs) {
    st.cs = segment(&s.cs);
    st.ds = segment(&s.ds);
    st.es = segment(&s.es);
    st.fs = segment(&s.fs);
    st.gs = segment(&s.gs);
    st.ss = segment(&s.ss);
    st.tr = segment(&s.tr);
    st.ldt = segment(&s.ldt);
    st.gdt = DescTable {
        base: s.gdt.base,
        limit: s.gdt.limit,
    };
    st.idt = DescTable {
        base: s.idt.base,
        limit: s.idt.limit,
    };
    (st.cr0, st.cr2, st.cr3, st.cr4, st.efer) = (s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
}

/// KVM_SET_MSRS of one MSR: the ones the VMSA holds are recorded, others ignored.
pub fn apply_msr(st: &mut VcpuState, index: u32, data: u64) {
    match index {
        MSR_STAR => st.star = data,
        MSR_LSTAR => st.lstar = data,
        MSR_CSTAR => st.cstar = data,
        MSR_SFMASK => st.sfmask = data,
        MSR_KERNEL_GS_BASE => st.kernel_gs_base = data,
        MSR_SYSENTER_CS => st.sysenter_cs = data,
        MSR_SYSENTER_ESP => st.sysenter_esp = data,
        MSR_SYSENTER_EIP => st.sysenter_eip = data,
        MSR_PAT => st.pat = data,
        MSR_XSS => st.xss = data,
        _ => {}
    }
}

/// Every entry of a KVM_SET_MSRS list, as [`apply_msr`].
pub fn apply_msrs(st: &mut VcpuState, msrs: &[kb::kvm_msr_entry]) {
    for e in msrs {
        apply_msr(st, e.index, e.data);
    }
}

/// KVM_SET_DEBUGREGS: DR6 and DR7 (DR0-3 are not in the initial VMSA).
pub fn apply_debugregs(st: &mut VcpuState, d: &kb::kvm_debugregs) {
    (st.dr6, st.dr7) = (d.dr6, d.dr7);
}

/// KVM_SET_XCRS: XCR0.
pub fn apply_xcrs(st: &mut VcpuState, x: &kb::kvm_xcrs) {
    let n = (x.nr_xcrs as usize).min(x.xcrs.len());
    if let Some(xcr0) = x.xcrs[..n].iter().find(|e| e.xcr == 0) {
        st.xcr0 = xcr0.value;
    }
}

/// KVM_SET_XSAVE (the standard, non-compacted format): the legacy FXSAVE region, the YMM
/// upper halves at `ymm_off` and PKRU at `pkru_off` (the offsets CPUID 0xD reports), each
/// only when its bit of XSTATE_BV is set (else its init state).
pub fn apply_xsave(
    st: &mut VcpuState,
    xsave: &[u8; 4096],
    ymm_off: Option<usize>,
    pkru_off: Option<usize>,
) {
    let u16_at = |o: usize| u16::from_le_bytes([xsave[o], xsave[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(xsave[o..o + 8].try_into().unwrap_or([0; 8]));
    let bv = u64_at(512);
    let mut f = FpuState {
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftw: u16::from(xsave[4]),
        fop: u16_at(6),
        rip: u64_at(8),
        rdp: u64_at(16),
        mxcsr: u32::from_le_bytes([xsave[24], xsave[25], xsave[26], xsave[27]]),
        ..FpuState::default()
    };
    for (i, r) in f.st.iter_mut().enumerate() {
        r.copy_from_slice(&xsave[32 + 16 * i..48 + 16 * i]);
    }
    for (i, r) in f.xmm.iter_mut().enumerate() {
        r.copy_from_slice(&xsave[160 + 16 * i..176 + 16 * i]);
    }
    if let Some(o) = ymm_off.filter(|o| bv & (1 << 2) != 0 && o + 256 <= xsave.len()) {
        for (i, r) in f.ymm_hi.iter_mut().enumerate() {
            r.copy_from_slice(&xsave[o + 16 * i..o + 16 + 16 * i]);
        }
    }
    st.fpu = f;
    st.pkru = match pkru_off.filter(|o| bv & (1 << 9) != 0 && o + 4 <= xsave.len()) {
        Some(o) => u32::from_le_bytes([xsave[o], xsave[o + 1], xsave[o + 2], xsave[o + 3]]),
        None => 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_sregs_msrs_land_in_their_fields() {
        let mut st = VcpuState::kvm_reset();
        let regs = kb::kvm_regs {
            rip: 0x10_0000,
            rsp: 0x8000,
            rdi: 1,
            rsi: 2,
            r15: 15,
            rflags: 2,
            ..Default::default()
        };
        apply_regs(&mut st, &regs);
        let mut s = kb::kvm_sregs {
            cr3: 0x9000,
            efer: 0x500,
            ..Default::default()
        };
        s.cs = kb::kvm_segment {
            selector: 8,
            type_: 0xB,
            present: 1,
            s: 1,
            l: 1,
            g: 1,
            limit: 0xFFFF_FFFF,
            ..Default::default()
        };
        s.gdt.limit = 0x37;
        apply_sregs(&mut st, &s);
        apply_msr(&mut st, MSR_LSTAR, 0x1234);
        apply_msr(&mut st, 0x10, 99); // TSC: not in the VMSA
        assert_eq!(
            (st.rip, st.rsp, st.rdi, st.rsi, st.r15),
            (0x10_0000, 0x8000, 1, 2, 15)
        );
        assert_eq!((st.cr3, st.efer, st.gdt.limit), (0x9000, 0x500, 0x37));
        assert_eq!(st.cs.svm_attrib(), 0xA9B);
        assert_eq!(st.lstar, 0x1234);
        assert_eq!(st.pat, VcpuState::kvm_reset().pat);
    }

    #[test]
    fn xsave_legacy_region_ymm_and_pkru() {
        let mut x = [0u8; 4096];
        x[0..2].copy_from_slice(&0x37Fu16.to_le_bytes());
        x[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        x[160..176].copy_from_slice(&[0xAA; 16]);
        x[576..592].copy_from_slice(&[0xBB; 16]);
        x[2688..2692].copy_from_slice(&0x5555_5554u32.to_le_bytes());
        let mut st = VcpuState::default();
        // YMM and PKRU in their init state (XSTATE_BV bits clear): zero.
        apply_xsave(&mut st, &x, Some(576), Some(2688));
        assert_eq!((st.fpu.fcw, st.fpu.mxcsr), (0x37F, 0x1F80));
        assert_eq!(st.fpu.xmm[0], [0xAA; 16]);
        assert_eq!((st.fpu.ymm_hi[0], st.pkru), ([0; 16], 0));
        x[512] = 0b111;
        x[513] = 0b10; // bit 9
        apply_xsave(&mut st, &x, Some(576), Some(2688));
        assert_eq!((st.fpu.ymm_hi[0], st.pkru), ([0xBB; 16], 0x5555_5554));
    }
}
