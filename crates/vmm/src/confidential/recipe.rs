//! The measurement recipe of an sevm launch, as a pure function of the boot inputs.
//!
//! `sevm run` passes exactly these byte ranges to LAUNCH_UPDATE_DATA (in this order), then,
//! for SEV-ES, one VMSA per vCPU to LAUNCH_UPDATE_VMSA. An owner computes the same launch
//! digest with [`launch_digest`] from the images and `docs/LAYOUT.md`, without KVM.

use vm_memory::{Bytes, GuestAddress};

use crate::boot::{self, BootSource, RangeKind};
use crate::{layout, memory};

use super::ConfidentialError;

/// CPUID(1).EAX signature placed in the VMSAs' RDX: family 23, model 1, stepping 2 (EPYC),
/// QEMU's `-cpu EPYC`; `sevctl vmsa build --userspace qemu --family 23 --model 1 --stepping 2`.
pub const VMSA_CPU_SIG: u32 = 0x0080_0F12;

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
) -> Result<Vec<MeasuredBlob>, ConfidentialError> {
    let fw_size = match boot_src.firmware() {
        Some(p) => Some(boot::firmware_size(p).map_err(recipe_err)?),
        None => None,
    };
    let mem = memory::create_guest_memory(memory_size, fw_size).map_err(recipe_err)?;
    let plan = boot::place(&mem, memory_size, boot_src, cbitpos).map_err(recipe_err)?;
    plan.measured
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
        .collect()
}

fn recipe_err(e: impl std::fmt::Display) -> ConfidentialError {
    ConfidentialError::Recipe(e.to_string())
}

/// The VMSAs measured for an SEV-ES launch with `cpus` vCPUs: the QEMU reset-state VMSA
/// (`sev_proto::vmsa::qemu_vmsa`) for every vCPU, APs at the reset vector too.
pub fn es_vmsas(cpus: u8) -> Vec<[u8; 4096]> {
    (0..cpus)
        .map(|i| sev_proto::vmsa::qemu_vmsa(i == 0, layout::RESET_VECTOR as u32, VMSA_CPU_SIG))
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
    let blobs = measured_blobs(memory_size, boot_src, cbitpos)?;
    let vmsas = if es { es_vmsas(cpus) } else { Vec::new() };
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
        let blobs = measured_blobs(64 << 20, &boot, Some(47)).unwrap();
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

    #[test]
    fn kernel_hashes_table_outside_ram_is_refused() {
        // 8 MiB of RAM: the sample's hashes area at 0x810c00 is not mapped.
        let boot = BootSource::FirmwareKernelHashes {
            firmware: sample("sample-ovmf.fd"),
            kernel: sample("sample-kernel"),
            initrd: None,
            cmdline: String::new(),
        };
        let e = measured_blobs(8 << 20, &boot, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("base=0x810c00 size=0x400) is outside guest RAM"),
            "{e}"
        );
    }
}
