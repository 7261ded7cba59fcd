//! vCPU setup: boot tables (GDT, TSS, identity page tables, with an optional encryption bit),
//! special and general registers for long-mode and reset-vector entry, CPUID and MSRs.
//!
//! Writing tables goes through host access to guest RAM; register state goes to KVM through
//! kvm-ioctls. CPUID must be set before SREGS (MAXPHYADDR decides whether a C-bit CR3 is valid).

use crate::layout::*;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors of CPU setup.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// Writing a boot table into guest memory failed.
    #[error("cannot write {what} at guest-physical {gpa:#x}: {msg}")]
    Table {
        /// Which table.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// Underlying error.
        msg: String,
    },
    /// The encryption bit position is unusable.
    #[error("page_table_cbit {0} is out of range (must be 32..=51)")]
    BadCbit(u8),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed on vCPU {cpu}: {source}")]
    Kvm {
        /// Ioctl name.
        op: &'static str,
        /// vCPU index.
        cpu: usize,
        /// errno.
        source: kvm_ioctls::Error,
    },
}

/// One CPUID override: replaces (or adds) the leaf `function`/`index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidOverride {
    /// Leaf (EAX input).
    pub function: u32,
    /// Sub-leaf (ECX input); 0 for leaves without sub-leaves.
    pub index: u32,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// CPUID leaves to force on top of KVM's supported set (the SEV layer fills 0x8000001F and
/// 0x80000008 here). Leaves are matched by function and index; new leaves are appended and
/// 0x80000000.EAX is raised to cover them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidOverrides(pub Vec<CpuidOverride>);

impl CpuidOverrides {
    /// Applies the overrides to `cpuid` and sets the APIC ID of vCPU `cpu`.
    pub fn apply(&self, cpuid: &mut CpuId, cpu: usize) -> Result<(), CpuError> {
        for e in cpuid.as_mut_slice() {
            match e.function {
                1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((cpu as u32) << 24),
                0xb | 0x1f => e.edx = cpu as u32,
                _ => {}
            }
        }
        for o in &self.0 {
            let found = cpuid
                .as_mut_slice()
                .iter_mut()
                .find(|e| e.function == o.function && e.index == o.index);
            match found {
                Some(e) => {
                    e.eax = o.eax;
                    e.ebx = o.ebx;
                    e.ecx = o.ecx;
                    e.edx = o.edx;
                }
                None => {
                    let entry = kvm_cpuid_entry2 {
                        function: o.function,
                        index: o.index,
                        flags: if o.index != 0 { 1 } else { 0 },
                        eax: o.eax,
                        ebx: o.ebx,
                        ecx: o.ecx,
                        edx: o.edx,
                        ..Default::default()
                    };
                    cpuid.push(entry).map_err(|_| CpuError::Table {
                        what: "CPUID entry",
                        gpa: 0,
                        msg: "too many CPUID entries".into(),
                    })?;
                }
            }
            if o.function >= 0x8000_0000 {
                if let Some(max) = cpuid
                    .as_mut_slice()
                    .iter_mut()
                    .find(|e| e.function == 0x8000_0000)
                {
                    max.eax = max.eax.max(o.function);
                }
            }
        }
        Ok(())
    }
}

/// KVM's paravirtual CPUID base leaf (`KVM_CPUID_SIGNATURE`).
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// KVM's paravirtual feature leaf (`KVM_CPUID_FEATURES`).
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// kvm-clock features KVM has always handled: `KVM_FEATURE_CLOCKSOURCE` (bit 0),
/// `KVM_FEATURE_CLOCKSOURCE2` (bit 3), `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT` (bit 24); used only
/// when KVM's supported CPUID has no feature leaf.
const KVM_CLOCK_FEATURES: u32 = 1 | 1 << 3 | 1 << 24;

/// CPUID leaf 1 ECX bit 24: the local APIC timer has a TSC-deadline mode.
pub const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Announces the local APIC's TSC-deadline timer mode (leaf 1 ECX bit 24), which KVM's
/// in-kernel local APIC emulates but leaves out of `KVM_GET_SUPPORTED_CPUID`: the VMM is to
/// set it when `KVM_CAP_TSC_DEADLINE_TIMER` is present (KVM's api.rst; QEMU, Firecracker and
/// Cloud Hypervisor do so). Without it Linux calibrates the periodic APIC timer against the
/// PIT's jiffies and verifies it (`calibrate_APIC_clock` in arch/x86/kernel/apic/apic.c);
/// under a slow or loaded host (nested KVM on QEMU TCG) the verification fails ("APIC timer
/// disabled due to verification failure"), the local APIC clockevent stays a dummy ("lapic is
/// not functional"), every CPU's tick is broadcast from the PIT, and 2-vCPU guests were seen
/// to hang. With the bit set, Linux skips that calibration and uses the TSC-deadline timer.
pub fn add_tsc_deadline(cpuid: &mut CpuId) {
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ecx |= CPUID_1_ECX_TSC_DEADLINE;
        }
    }
}

/// Tells the guest it runs on KVM, as Firecracker and Cloud Hypervisor do: leaf 1 ECX bit 31
/// (hypervisor present), leaf 0x40000000 with the signature "KVMKVMKVM\0\0\0" and max leaf
/// 0x40000001, and leaf 0x40000001 with the paravirtual features KVM reports as supported
/// (among them kvm-clock), so that Linux uses kvm-clock rather than believing it runs on bare
/// hardware. CPUID is not measured by SEV or SEV-ES, and a Linux SEV guest handles kvm-clock
/// itself (its pages are mapped decrypted).
pub fn add_hypervisor_leaves(cpuid: &mut CpuId) -> Result<(), CpuError> {
    let sig = b"KVMKVMKVM\0\0\0";
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    let (ebx, ecx, edx) = (word(0), word(4), word(8));
    let mut have_sig = false;
    let mut have_features = false;
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ecx |= 1 << 31,
            KVM_CPUID_SIGNATURE => {
                e.eax = e.eax.max(KVM_CPUID_FEATURES);
                (e.ebx, e.ecx, e.edx) = (ebx, ecx, edx);
                have_sig = true;
            }
            KVM_CPUID_FEATURES => have_features = true,
            _ => {}
        }
    }
    let full = |_| CpuError::Table {
        what: "CPUID entry",
        gpa: 0,
        msg: "too many CPUID entries".into(),
    };
    if !have_sig {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_SIGNATURE,
                eax: KVM_CPUID_FEATURES,
                ebx,
                ecx,
                edx,
                ..Default::default()
            })
            .map_err(full)?;
    }
    if !have_features {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: KVM_CLOCK_FEATURES,
                ..Default::default()
            })
            .map_err(full)?;
    }
    Ok(())
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    gpa: u64,
    v: T,
) -> Result<(), CpuError> {
    mem.write_obj(v, GuestAddress(gpa))
        .map_err(|e| CpuError::Table {
            what,
            gpa,
            msg: e.to_string(),
        })
}

/// GDT descriptor values (see [`GDT_START`]).
pub const GDT: [u64; 6] = [
    0,
    0x00af_9a00_0000_ffff, // 0x08 kernel code, 64-bit
    0x00cf_9200_0000_ffff, // 0x10 kernel data
    0x00cf_9a00_0000_ffff, // 0x18 kernel code, 32-bit
    0x00af_fa00_0000_ffff, // 0x20 (0x23) user code, 64-bit
    0x00cf_f200_0000_ffff, // 0x28 (0x2b) user data
];
/// Selector of the 64-bit TSS.
pub const TSS_SELECTOR: u16 = 0x30;

/// Writes GDT, TSS (RSP0 = top of vCPU 0's boot stack, all-zero I/O bitmap) and a zeroed IDT.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), CpuError> {
    for (i, d) in GDT.iter().enumerate() {
        write(mem, "GDT", GDT_START + i as u64 * 8, *d)?;
    }
    let base = TSS_START;
    let limit = TSS_LIMIT;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89u64 << 40) // present, type 9 (available 64-bit TSS)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    write(mem, "GDT", GDT_START + 6 * 8, low)?;
    write(mem, "GDT", GDT_START + 7 * 8, base >> 32)?;
    write(mem, "IDT", IDT_START, [0u64; 2])?;
    // TSS: zero header, RSP0, I/O map base, zero bitmap, 0xFF terminator.
    mem.write_slice(
        &vec![0u8; (TSS_LIMIT + 1) as usize],
        GuestAddress(TSS_START),
    )
    .map_err(|e| CpuError::Table {
        what: "TSS",
        gpa: TSS_START,
        msg: e.to_string(),
    })?;
    write(mem, "TSS", TSS_START + 4, BOOT_STACK_TOP)?;
    write(mem, "TSS", TSS_START + 0x66, TSS_IOMAP_OFFSET as u16)?;
    write(mem, "TSS", TSS_START + TSS_LIMIT, 0xffu8)?;
    Ok(())
}

/// Validates an encryption-bit position and returns its mask.
pub fn cbit_mask(cbit: Option<u8>) -> Result<u64, CpuError> {
    match cbit {
        None => Ok(0),
        Some(b) if (32..=51).contains(&b) => Ok(1u64 << b),
        Some(b) => Err(CpuError::BadCbit(b)),
    }
}

/// Writes identity page tables for 0..4 GiB with 2 MiB pages (user-accessible, writable).
/// Every entry carries `enc_mask`. Returns the CR3 value (which carries it too).
pub fn write_page_tables(mem: &GuestMemoryMmap, enc_mask: u64) -> Result<u64, CpuError> {
    write(mem, "PML4", PML4_START, PDPT_START | enc_mask | 0x7)?;
    for i in 1..512u64 {
        write(mem, "PML4", PML4_START + i * 8, 0u64)?;
    }
    for i in 0..512u64 {
        let v = if i < PD_COUNT {
            (PD_START + i * PAGE_SIZE) | enc_mask | 0x7
        } else {
            0
        };
        write(mem, "PDPT", PDPT_START + i * 8, v)?;
    }
    for i in 0..PD_COUNT * 512 {
        write(mem, "PD", PD_START + i * 8, (i << 21) | enc_mask | 0x87)?;
    }
    Ok(PML4_START | enc_mask)
}

fn seg(selector: u16, type_: u8, l: u8, db: u8, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db,
        s: 1,
        l,
        g: 1,
        ..Default::default()
    }
}

/// The LDT register as KVM's reset leaves it (selector 0, limit 0xffff, type 2, present). Set
/// explicitly so that no register of the initial VMSA depends on what KVM reports.
fn reset_ldt() -> kvm_segment {
    kvm_segment {
        limit: 0xffff,
        type_: 0x2,
        present: 1,
        ..Default::default()
    }
}

/// The registers one vCPU starts with, as [`boot_regs`] computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootRegs {
    /// KVM_SET_REGS.
    pub regs: kvm_regs,
    /// KVM_SET_SREGS.
    pub sregs: kvm_sregs,
    /// Whether the vCPU starts runnable (else it waits for INIT/SIPI).
    pub runnable: bool,
}

/// The registers vCPU `idx` of `cpus` starts with for `entry`: a pure function of the boot
/// plan, so that the SEV-ES measurement recipe (which turns them into VMSAs) sees exactly
/// what the VM sets. `base` is the vCPU's current sregs: only its APIC base, CR8 and
/// interrupt bitmap are kept, every register of the VMSA is set here.
pub fn boot_regs(entry: crate::boot::Entry, idx: usize, cpus: usize, base: kvm_sregs) -> BootRegs {
    match entry {
        crate::boot::Entry::LongMode {
            rip,
            cr3,
            enc_mask,
            bundled,
        } => {
            // Only bundled guests (at most MAX_CPUS vCPUs) use their stack; a Linux AP waits
            // for INIT/SIPI, so past the stacks' region its value is irrelevant (kept >= 0).
            let rsp = BOOT_STACK_TOP.saturating_sub(idx as u64 * BOOT_STACK_SIZE);
            let regs = if bundled {
                long_mode_regs(rip, rsp, idx as u64, cpus as u64, enc_mask)
            } else {
                long_mode_regs(rip, rsp, 0, ZERO_PAGE_START, 0)
            };
            BootRegs {
                regs,
                sregs: long_mode_sregs(base, cr3),
                runnable: bundled || idx == 0,
            }
        }
        crate::boot::Entry::ResetVector => BootRegs {
            regs: reset_regs(),
            sregs: reset_sregs(base),
            runnable: idx == 0,
        },
    }
}

/// Special registers for 64-bit entry at CPL0 with the VMM's tables.
pub fn long_mode_sregs(mut s: kvm_sregs, cr3: u64) -> kvm_sregs {
    s.cs = seg(0x08, 0xb, 1, 0, 0);
    let data = seg(0x10, 0x3, 0, 1, 0);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    // TR holds the *available* 64-bit TSS type (9), as the GDT descriptor does, not busy (11).
    // An emulated CPU checks the TSS type on a CPL3 I/O-permission lookup: QEMU TCG accepts
    // only an available TSS there, so with busy the bundled `hello` guest's CPL3 `out` took
    // #GP (a triple fault, the IDT limit being 0) under the nested-KVM harness. AMD's VMRUN
    // does not check TR's type, and KVM on SVM (and kvm-pvm here, an AMD EPYC host:
    // `cargo test -p vmm --test vm_guests`) runs the guests with either. VMX requires a busy
    // TR for VM entry, so `Vm::setup_vcpu` loads 11 on Intel hosts, where no SEV launch (and
    // so no measured VMSA) exists.
    s.tr = kvm_segment {
        base: TSS_START,
        limit: TSS_LIMIT as u32,
        selector: TSS_SELECTOR,
        type_: 0x9,
        present: 1,
        ..Default::default()
    };
    s.ldt = reset_ldt();
    s.gdt.base = GDT_START;
    s.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    s.idt.base = IDT_START;
    s.idt.limit = 0;
    s.cr2 = 0;
    s.cr3 = cr3;
    s.cr4 = 0x20; // PAE
    s.cr0 = 0x8000_0031; // PG | NE | ET | PE
    s.efer = 0x500; // LMA | LME
    s
}

/// Special registers at the x86 reset vector (real mode, CS base 0xFFFF0000).
pub fn reset_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let real = |selector: u16, base: u64, type_: u8| kvm_segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        s: 1,
        ..Default::default()
    };
    s.cs = real(0xf000, 0xffff_0000, 0xb);
    let d = real(0, 0, 0x3);
    s.ds = d;
    s.es = d;
    s.fs = d;
    s.gs = d;
    s.ss = d;
    s.tr = kvm_segment {
        limit: 0xffff,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    s.ldt = reset_ldt();
    s.gdt.base = 0;
    s.gdt.limit = 0xffff;
    s.idt.base = 0;
    s.idt.limit = 0xffff;
    s.cr2 = 0;
    s.cr0 = 0x6000_0010;
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
    s
}

/// General registers for long-mode entry.
pub fn long_mode_regs(rip: u64, rsp: u64, rdi: u64, rsi: u64, rdx: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rbp: rsp,
        rdi,
        rsi,
        rdx,
        rflags: 0x2,
        ..Default::default()
    }
}

/// General registers at the reset vector.
pub fn reset_regs() -> kvm_regs {
    kvm_regs {
        rip: 0xfff0,
        rflags: 0x2,
        rdx: 0x600, // reset EDX signature (family 6)
        ..Default::default()
    }
}

/// MSRs every vCPU starts with: syscall/sysenter MSRs cleared, fast strings on, TSC 0.
pub fn boot_msrs() -> Msrs {
    let e = |index: u32, data: u64| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let list = [
        e(0x174, 0),       // SYSENTER_CS
        e(0x175, 0),       // SYSENTER_ESP
        e(0x176, 0),       // SYSENTER_EIP
        e(0xc000_0081, 0), // STAR
        e(0xc000_0082, 0), // LSTAR
        e(0xc000_0083, 0), // CSTAR
        e(0xc000_0084, 0), // SYSCALL_MASK
        e(0xc000_0102, 0), // KERNEL_GS_BASE
        e(0x10, 0),        // TSC
        e(0x1a0, 1),       // MISC_ENABLE: fast strings
    ];
    Msrs::from_entries(&list).expect("fixed MSR list fits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::{translate, PageSize};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap()
    }

    #[test]
    fn page_tables_identity_map_with_and_without_cbit() {
        for cbit in [None, Some(47u8)] {
            let m = mem();
            let mask = cbit_mask(cbit).unwrap();
            let cr3 = write_page_tables(&m, mask).unwrap();
            assert_eq!(cr3, PML4_START | mask);
            for gva in [0u64, 0x1234, 0x20_1000, 0xffff_fff0, 0x3fff_ffff] {
                let t = translate(&m, cr3, gva, mask).unwrap();
                assert_eq!(t.gpa, gva);
                assert_eq!(t.size, PageSize::Size2M);
                assert_eq!(t.encrypted, cbit.is_some());
            }
            assert!(translate(&m, cr3, 0x1_0000_0000, mask).is_err());
            let pde: u64 = m.read_obj(GuestAddress(PD_START + 8)).unwrap();
            assert_eq!(pde, 0x20_0000 | mask | 0x87);
        }
        assert!(matches!(cbit_mask(Some(52)), Err(CpuError::BadCbit(52))));
        assert!(matches!(cbit_mask(Some(12)), Err(CpuError::BadCbit(12))));
    }

    #[test]
    fn tss_descriptor_and_iomap() {
        let m = mem();
        write_descriptor_tables(&m).unwrap();
        let lo: u64 = m.read_obj(GuestAddress(GDT_START + 48)).unwrap();
        assert_eq!(lo & 0xffff, TSS_LIMIT & 0xffff);
        assert_eq!((lo >> 16) & 0xff_ffff, TSS_START);
        assert_eq!((lo >> 40) & 0xff, 0x89);
        let iomap: u16 = m.read_obj(GuestAddress(TSS_START + 0x66)).unwrap();
        assert_eq!(iomap as u64, TSS_IOMAP_OFFSET);
        let term: u8 = m.read_obj(GuestAddress(TSS_START + TSS_LIMIT)).unwrap();
        assert_eq!(term, 0xff);
        let rsp0: u64 = m.read_obj(GuestAddress(TSS_START + 4)).unwrap();
        assert_eq!(rsp0, BOOT_STACK_TOP);
    }

    #[test]
    fn hypervisor_leaves_are_added_or_completed() {
        let sig = (0x4b4d_564b, 0x564b_4d56, 0x0000_004d); // "KVMK" "VMKV" "M\0\0\0"
                                                           // KVM's supported set with its own feature leaf: kept as KVM reports it.
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x0000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: 0x0100_7afb,
                ..Default::default()
            },
        ])
        .unwrap();
        add_hypervisor_leaves(&mut c).unwrap();
        let s = c.as_slice();
        assert_eq!(s[0].ecx, 0x8000_0001);
        assert_eq!(s[1].eax, 0x0100_7afb);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[2].function, s[2].eax, s[2].ebx, s[2].ecx, s[2].edx),
            (KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES, sig.0, sig.1, sig.2)
        );
        // Nothing from KVM: both leaves appear, the features with kvm-clock (bits 0, 3, 24).
        let mut c = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            eax: 0,
            ..Default::default()
        }])
        .unwrap();
        add_hypervisor_leaves(&mut c).unwrap();
        let s = c.as_slice();
        assert_eq!((s[0].eax, s[0].ebx), (KVM_CPUID_FEATURES, sig.0));
        assert_eq!((s[1].function, s[1].eax), (KVM_CPUID_FEATURES, 0x0100_0009));
        // An override still wins over them.
        let o = CpuidOverrides(vec![CpuidOverride {
            function: KVM_CPUID_FEATURES,
            index: 0,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }]);
        o.apply(&mut c, 0).unwrap();
        assert_eq!(c.as_slice()[1].eax, 0);
    }

    #[test]
    fn tsc_deadline_bit_is_set_in_leaf_1_only() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0,
                ecx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x8000_0001,
                ..Default::default()
            },
        ])
        .unwrap();
        add_tsc_deadline(&mut c);
        let s = c.as_slice();
        assert_eq!(s[0].ecx, 0);
        assert_eq!(s[1].ecx, 0x8100_0001);
    }

    #[test]
    fn cpuid_overrides_replace_and_append() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0x8000_0000,
                eax: 0x8000_0008,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: 0x3030,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
        ])
        .unwrap();
        let o = CpuidOverrides(vec![
            CpuidOverride {
                function: 0x8000_0008,
                index: 0,
                eax: 0x3030,
                ebx: 0,
                ecx: 0,
                edx: 0x1234,
            },
            CpuidOverride {
                function: 0x8000_001f,
                index: 0,
                eax: 2,
                ebx: 0x16f,
                ecx: 0,
                edx: 0,
            },
        ]);
        o.apply(&mut c, 1).unwrap();
        let s = c.as_slice();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].eax, 0x8000_001f);
        assert_eq!(s[1].edx, 0x1234);
        assert_eq!(s[2].ebx, 0x0100_0800);
        assert_eq!((s[3].function, s[3].eax, s[3].ebx), (0x8000_001f, 2, 0x16f));
    }
}
