//! Streaming launch-digest computation for QEMU + OVMF measured direct boot
//! (`sev-spec-notes.md` §10.3): `LD = SHA-256(OVMF ‖ padded kernel-hashes table ‖ VMSAs)`.
//!
//! Files are read in fixed-size chunks so that peak memory stays small whatever the image
//! sizes; only the OVMF footer (the last 4 KiB) and the VMSA pages are held whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use openssl::sha::Sha256;
use sev_proto::measure::LaunchDigest;

/// Read buffer size for streaming files through SHA-256.
const CHUNK: usize = 256 * 1024;

/// Size of a VMSA page.
const VMSA_LEN: usize = 4096;

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

/// Streams a file through `sink` in chunks; returns the number of bytes read.
fn stream(path: &Path, what: &str, mut sink: impl FnMut(&[u8])) -> Result<u64> {
    let mut f =
        File::open(path).with_context(|| format!("{what}: cannot open {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("{what}: cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        sink(&buf[..n]);
        total += n as u64;
    }
    Ok(total)
}

/// SHA-256 of a whole file, streamed.
pub fn sha256_file(path: &Path, what: &str) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    stream(path, what, |b| h.update(b))?;
    Ok(h.finish())
}

/// Reads the last `len` bytes of a file (or all of it when shorter).
fn read_tail(path: &Path, what: &str, len: u64) -> Result<Vec<u8>> {
    let mut f =
        File::open(path).with_context(|| format!("{what}: cannot open {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("{what}: cannot stat {}", path.display()))?
        .len();
    let start = size.saturating_sub(len);
    f.seek(SeekFrom::Start(start))
        .with_context(|| format!("{what}: cannot seek in {}", path.display()))?;
    let mut tail = Vec::with_capacity((size - start) as usize);
    f.read_to_end(&mut tail)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?;
    Ok(tail)
}

/// Reads one 4096-byte VMSA page.
fn read_vmsa(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what}: cannot stat {}", path.display()))?;
    if meta.len() != VMSA_LEN as u64 {
        bail!(
            "{what}: {} is {} bytes, a VMSA must be {VMSA_LEN}",
            path.display(),
            meta.len()
        );
    }
    let b =
        std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))?;
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
    let fw_len = stream(&images.firmware, "--firmware", |b| ld.update(b))?;
    if fw_len == 0 {
        bail!("--firmware: {} is empty", images.firmware.display());
    }
    if images.kernel.is_some() || images.initrd.is_some() || images.cmdline.is_some() {
        let Some(kernel) = &images.kernel else {
            bail!("--initrd/--cmdline need --kernel (the kernel-hashes table covers all three)");
        };
        // The footer table sits in the last 32 bytes + table; 4 KiB holds any real one.
        let tail = read_tail(&images.firmware, "--firmware", 4096)?;
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
