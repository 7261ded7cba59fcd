//! Streaming launch-digest computation for QEMU + OVMF measured direct boot
//! (`sev-spec-notes.md` §10.3): `LD = SHA-256(OVMF ‖ padded kernel-hashes table ‖ VMSAs)`.
//!
//! Files are read in fixed-size chunks so that peak memory stays small whatever the image
//! sizes; only the OVMF footer (the last 4 KiB) and the VMSA pages are held whole. Every file
//! goes through `sevm_files`: special files are refused without blocking, and a size above
//! what the format can hold is refused before anything is read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use openssl::sha::Sha256;
use sev_proto::measure::LaunchDigest;

/// Read buffer size for streaming files through SHA-256.
const CHUNK: usize = 256 * 1024;

/// Size of a VMSA page.
const VMSA_LEN: usize = 4096;

/// Largest firmware measured: what sevm maps below 4 GiB (an OVMF image is 2-4 MiB).
const MAX_FIRMWARE: u64 = vmm::layout::FIRMWARE_MAX_SIZE;
const WHY_FIRMWARE: &str = "the firmware is mapped to end at 4 GiB, in at most 16 MiB";
/// Largest kernel or initrd hashed: QEMU loads both into guest memory below 4 GiB.
const MAX_KERNEL_OR_INITRD: u64 = 4 << 30;
const WHY_KERNEL: &str = "QEMU loads the kernel and initrd into guest memory below 4 GiB";

/// The images and options that determine a launch digest.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// OVMF firmware image (measured whole).
    pub firmware: PathBuf,
    /// Kernel for measured direct boot (kernel-hashes table).
    pub kernel: Option<PathBuf>,
    /// Initrd (hash of the empty string when absent).
    pub initrd: Option<PathBuf>,
    /// Kernel command line (hash of a single NUL when absent).
    pub cmdline: Option<String>,
    /// SEV-ES: number of vCPUs whose VMSAs are measured.
    pub num_cpus: Option<u32>,
    /// SEV-ES: VMSA of vCPU 0.
    pub vmsa_cpu0: Option<PathBuf>,
    /// SEV-ES: VMSA of every other vCPU.
    pub vmsa_cpu1: Option<PathBuf>,
}

/// SHA-256 of a whole file (a kernel or initrd, at most 4 GiB), streamed. A bzImage whose
/// header claims more than the file holds is refused as truncated.
pub fn sha256_file(path: &Path, what: &str) -> Result<[u8; 32]> {
    let mut f = sevm_files::Limit::new(what, MAX_KERNEL_OR_INITRD)
        .why(WHY_KERNEL)
        .allow_empty()
        .open(path)?;
    if what == "--kernel" {
        let head = f.read_head(vmm::boot::BZIMAGE_HEADER_END)?;
        vmm::boot::check_bzimage_size(&head, f.size())
            .map_err(|m| anyhow::anyhow!("{what}: {}: {m}", path.display()))?;
    }
    let mut h = Sha256::new();
    f.stream(CHUNK, |b| h.update(b))?;
    Ok(h.finish())
}

/// Reads one 4096-byte VMSA page.
fn read_vmsa(path: &Path, what: &str) -> Result<Vec<u8>> {
    let b = sevm_files::Limit::new(what, VMSA_LEN as u64)
        .why("a VMSA is one 4096-byte page")
        .read(path)?;
    if b.len() != VMSA_LEN {
        bail!(
            "{what}: {} is {} bytes, a VMSA must be {VMSA_LEN}",
            path.display(),
            b.len()
        );
    }
    Ok(b)
}

/// Computes the launch digest of `images`, streaming every file.
pub fn launch_digest(images: &Images) -> Result<[u8; 32]> {
    let mut ld = LaunchDigest::new();
    let mut fw = sevm_files::Limit::new("--firmware", MAX_FIRMWARE)
        .why(WHY_FIRMWARE)
        .open(&images.firmware)?;
    // The footer table sits in the last 32 bytes + table; 4 KiB holds any real one.
    let tail = fw.read_tail(4096)?;
    fw.stream(CHUNK, |b| ld.update(b))?;
    if images.kernel.is_some() || images.initrd.is_some() || images.cmdline.is_some() {
        let Some(kernel) = &images.kernel else {
            bail!("--initrd/--cmdline need --kernel (the kernel-hashes table covers all three)");
        };
        let table = sev_proto::ovmf::FooterTable::parse(&tail).with_context(|| {
            format!(
                "--firmware: {}: no OVMF footer table, cannot place the kernel hashes",
                images.firmware.display()
            )
        })?;
        if table.hashes_area().is_none() {
            bail!(
                "--firmware: {} has no SEV hashes table area (GUID 7255371f-3a3b-4b04-927b-1da6efa8d454); \
                 measured direct boot needs an AmdSev OVMF build",
                images.firmware.display()
            );
        }
        let k = sha256_file(kernel, "--kernel")?;
        let i = match &images.initrd {
            Some(p) => sha256_file(p, "--initrd")?,
            None => Sha256::new().finish(),
        };
        let c = sev_proto::kernel_hashes::cmdline_hash(images.cmdline.as_deref().unwrap_or(""));
        let padded = sev_proto::kernel_hashes::padded_table(&k, &i, &c);
        ld.update(&padded);
    }
    match (images.num_cpus, &images.vmsa_cpu0) {
        (None, None) if images.vmsa_cpu1.is_none() => {}
        (Some(n), Some(v0)) => {
            if n == 0 {
                bail!("--num-cpus must be at least 1");
            }
            let v0 = read_vmsa(v0, "--vmsa-cpu0")?;
            ld.update(&v0);
            if n > 1 {
                let Some(v1) = &images.vmsa_cpu1 else {
                    bail!("--num-cpus {n} needs --vmsa-cpu1 for the vCPUs after the first");
                };
                let v1 = read_vmsa(v1, "--vmsa-cpu1")?;
                for _ in 1..n {
                    ld.update(&v1);
                }
            }
        }
        _ => bail!("SEV-ES measurement needs --num-cpus and --vmsa-cpu0 (and --vmsa-cpu1 when --num-cpus > 1)"),
    }
    Ok(ld.finish())
}
