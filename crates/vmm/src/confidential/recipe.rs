//! The measurement recipe of an sevm launch, as a pure function of the boot inputs.
//!
//! `sevm run` passes exactly these byte ranges to LAUNCH_UPDATE_DATA (in this order), then,
//! for SEV-ES, one VMSA per vCPU to LAUNCH_UPDATE_VMSA. An owner computes the same launch
//! digest with [`launch_digest`] from the images and `docs/LAYOUT.md`, without KVM.
//!
//! The VMSAs are what KVM builds from the registers sevm gives each vCPU
//! ([`crate::cpu::boot_regs`], the same function the VM uses), through the one model of
//! `sev_es_sync_vmsa` ([`sev_proto::vmsa::kvm_es_vmsa`]) with [`VMSA_PARAMS`].

use kvm_bindings::kvm_sregs;
use sev_firmware::hw::kvm_state;
use sev_proto::vmsa::{KvmVmsaParams, VcpuState};
use vm_memory::{Bytes, GuestAddress};

use crate::boot::{self, BootSource, Entry, RangeKind};
use crate::cpu::{self, BootRegs};
use crate::memory;

use super::ConfidentialError;

/// How KVM builds sevm's VMSAs: sevm makes default-type VMs and inits them with the legacy
/// `KVM_SEV_ES_INIT` (it refuses the options that need `KVM_SEV_INIT2`), so on Linux 6.10+
/// SEV_FEATURES is 0 and no FPU state is synced.
pub const VMSA_PARAMS: KvmVmsaParams = KvmVmsaParams {
    vmsa_features: 0,
    init2: false,
};

/// The register state KVM holds for a vCPU sevm gave `b`: KVM's reset state with sevm's
/// registers and boot MSRs ([`cpu::boot_msrs`]) on top.
pub fn vcpu_state(b: &BootRegs) -> VcpuState {
    let mut st = VcpuState::kvm_reset();
    kvm_state::apply_regs(&mut st, &b.regs);
    kvm_state::apply_sregs(&mut st, &b.sregs);
    kvm_state::apply_msrs(&mut st, cpu::boot_msrs().as_slice());
    st
}

/// The VMSA KVM measures for a vCPU sevm gave `b`.
pub fn vcpu_vmsa(b: &BootRegs) -> [u8; 4096] {
    sev_proto::vmsa::kvm_es_vmsa(&vcpu_state(b), &VMSA_PARAMS)
}

/// One measured range and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredBlob {
    /// Guest-physical start.
    pub gpa: u64,
    /// What the range holds.
    pub kind: RangeKind,
    /// The bytes passed to LAUNCH_UPDATE_DATA.
    pub bytes: Vec<u8>,
}

/// The measured ranges of a launch, with their bytes, in LAUNCH_UPDATE_DATA order.
/// Places the images into a scratch mapping (no KVM) exactly as [`crate::Vm`] does.
pub fn measured_blobs(
    memory_size: u64,
    boot_src: &BootSource,
    cbitpos: Option<u8>,
    cpus: u8,
) -> Result<Vec<MeasuredBlob>, ConfidentialError> {
    Ok(plan_blobs(memory_size, boot_src, cbitpos, cpus)?.0)
}

/// [`measured_blobs`] and how the vCPUs enter the guest. `cpus` matters for Linux (its MP
/// table lists every vCPU).
pub fn plan_blobs(
    memory_size: u64,
    boot_src: &BootSource,
    cbitpos: Option<u8>,
    cpus: u8,
) -> Result<(Vec<MeasuredBlob>, Entry), ConfidentialError> {
    let fw_size = match boot_src.firmware() {
        Some(p) => Some(boot::firmware_size(p).map_err(recipe_err)?),
        None => None,
    };
    let mem = memory::create_guest_memory(memory_size, fw_size).map_err(recipe_err)?;
    let plan = boot::place(&mem, memory_size, boot_src, cbitpos, cpus).map_err(recipe_err)?;
    let blobs = plan
        .measured
        .iter()
        .map(|r| {
            let mut bytes = vec![0u8; r.len as usize];
            mem.read_slice(&mut bytes, GuestAddress(r.gpa))
                .map_err(|e| ConfidentialError::Recipe(format!("reading {:#x}: {e}", r.gpa)))?;
            Ok(MeasuredBlob {
                gpa: r.gpa,
                kind: r.kind,
                bytes,
            })
        })
        .collect::<Result<_, ConfidentialError>>()?;
    Ok((blobs, plan.entry))
}

fn recipe_err(e: impl std::fmt::Display) -> ConfidentialError {
    ConfidentialError::Recipe(e.to_string())
}

/// The VMSAs measured for an SEV-ES launch with `cpus` vCPUs entering at `entry`: each
/// vCPU's [`cpu::boot_regs`] as KVM turns them into a VMSA ([`vcpu_vmsa`]). Bundled guests
/// and Linux start in long mode (vCPU `i` with its own stack and RDI), a firmware at the
/// reset vector (every vCPU in KVM's reset state: RDX 0x600, CS.base 0xFFFF0000).
pub fn es_vmsas(entry: Entry, cpus: u8) -> Vec<[u8; 4096]> {
    let cpus = usize::from(cpus);
    (0..cpus)
        .map(|i| vcpu_vmsa(&cpu::boot_regs(entry, i, cpus, kvm_sregs::default())))
        .collect()
}

/// The launch digest: SHA-256 over every measured range, then (SEV-ES) the VMSAs.
pub fn launch_digest(blobs: &[MeasuredBlob], vmsas: &[[u8; 4096]]) -> [u8; 32] {
    let mut d = sev_proto::measure::LaunchDigest::new();
    for b in blobs {
        d.update(&b.bytes);
    }
    for v in vmsas {
        d.update(v);
    }
    d.finish()
}

/// Convenience: the expected launch digest of an sevm launch. `es` adds `cpus` VMSAs.
pub fn expected_digest(
    memory_size: u64,
    boot_src: &BootSource,
    cbitpos: Option<u8>,
    cpus: u8,
    es: bool,
) -> Result<[u8; 32], ConfidentialError> {
    let (blobs, entry) = plan_blobs(memory_size, boot_src, cbitpos, cpus)?;
    let vmsas = if es {
        es_vmsas(entry, cpus)
    } else {
        Vec::new()
    };
    Ok(launch_digest(&blobs, &vmsas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev_proto::kernel_hashes as kh;
    use std::path::PathBuf;

    fn sample(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../sevm/samples")
            .join(name)
    }

    #[test]
    fn kernel_hashes_recipe_is_firmware_then_the_padded_table() {
        let boot = BootSource::FirmwareKernelHashes {
            firmware: sample("sample-ovmf.fd"),
            kernel: sample("sample-kernel"),
            initrd: None,
            cmdline: "quiet".into(),
        };
        let blobs = measured_blobs(64 << 20, &boot, Some(47), 1).unwrap();
        let fw = std::fs::read(sample("sample-ovmf.fd")).unwrap();
        let table = kh::padded_table(
            &kh::file_hash(&std::fs::read(sample("sample-kernel")).unwrap()),
            &kh::file_hash(&[]),
            &kh::cmdline_hash("quiet"),
        );
        assert_eq!(blobs.len(), 2);
        assert_eq!(
            (blobs[0].gpa, blobs[0].kind),
            ((1 << 32) - fw.len() as u64, RangeKind::Firmware)
        );
        assert_eq!(blobs[0].bytes, fw);
        assert_eq!(
            (blobs[1].gpa, blobs[1].kind),
            (0x81_0C00, RangeKind::KernelHashes)
        );
        assert_eq!(blobs[1].bytes, table.to_vec());
        let expected = openssl::sha::sha256(&[fw.as_slice(), &table].concat());
        assert_eq!(launch_digest(&blobs, &[]), expected);
    }

    fn rd64(v: &[u8; 4096], off: usize) -> u64 {
        u64::from_le_bytes(v[off..off + 8].try_into().unwrap())
    }

    /// The VMSAs follow the registers sevm sets, and nothing KVM reports: the sregs a vCPU
    /// had before (APIC base, CR8, garbage in the VMSA fields) do not change them.
    #[test]
    fn es_vmsas_are_the_boot_registers_only() {
        use sev_proto::vmsa as v;
        let long = Entry::LongMode {
            rip: 0x10_0000,
            cr3: 0x9000 | 1 << 47,
            enc_mask: 1 << 47,
            bundled: true,
        };
        let mut junk = kvm_sregs {
            apic_base: 0xFEE0_0900,
            cr8: 5,
            cr2: 0xDEAD,
            efer: 0xD01,
            cr4: 0x3000,
            ..kvm_sregs::default()
        };
        junk.ldt.base = 0x1234;
        junk.ldt.type_ = 9;
        junk.tr.base = 0x4000;
        for entry in [long, Entry::ResetVector] {
            for i in 0..2 {
                assert_eq!(
                    vcpu_vmsa(&cpu::boot_regs(entry, i, 2, kvm_sregs::default())),
                    vcpu_vmsa(&cpu::boot_regs(entry, i, 2, junk)),
                    "{entry:?} vCPU {i}"
                );
            }
        }
        let es = es_vmsas(long, 2);
        assert_ne!(es[0], es[1], "own stack and index per vCPU");
        assert_eq!(rd64(&es[1], v::RIP), 0x10_0000);
        assert_eq!(rd64(&es[1], v::CR3), 0x9000 | 1 << 47);
        assert_eq!(rd64(&es[1], v::EFER), 0x1500);
        assert_eq!(rd64(&es[1], v::RDI), 1);
        assert_eq!(rd64(&es[0], v::SEV_FEATURES), 0);
        // A firmware's vCPUs start in KVM's reset state: QEMU's reset VMSA with RDX 0x600
        // (KVM's value before CPUID is set) for every vCPU, the APs at the reset vector too.
        for vmsa in es_vmsas(Entry::ResetVector, 2) {
            assert_eq!(vmsa, v::qemu_vmsa(true, 0, 0x600));
        }
    }

    #[test]
    fn kernel_hashes_table_outside_ram_is_refused() {
        // 8 MiB of RAM: the sample's hashes area at 0x810c00 is not mapped.
        let boot = BootSource::FirmwareKernelHashes {
            firmware: sample("sample-ovmf.fd"),
            kernel: sample("sample-kernel"),
            initrd: None,
            cmdline: String::new(),
        };
        let e = measured_blobs(8 << 20, &boot, None, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("base=0x810c00 size=0x400) is outside guest RAM"),
            "{e}"
        );
    }
}
