//! `sevm owner measure --vmm sevm`: the expected launch digest of what `sevm run` measures,
//! from the images and the fixed layout (docs/LAYOUT.md), without KVM. The recipe itself is
//! `vmm::confidential::recipe` (shared with the launch).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use vmm::BootSource;

/// Which VMM's launch to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum VmmKind {
    /// QEMU with OVMF (`--firmware`, kernel-hashes table), as sevctl.
    #[default]
    Qemu,
    /// sevm's own launch (bundled guest or direct Linux boot at the fixed layout).
    Sevm,
}

/// Options of `owner measure` for `--vmm sevm`.
#[derive(Debug, Args, Clone)]
pub struct SevmMeasureArgs {
    /// The VMM whose launch is measured.
    #[arg(long, value_enum, default_value_t = VmmKind::Qemu)]
    pub vmm: VmmKind,
    /// (--vmm sevm) A bundled guest.
    #[arg(long)]
    pub guest: Option<String>,
    /// (--vmm sevm) Guest RAM, as `sevm run --memory` (the Linux zero page depends on it).
    #[arg(long, default_value = "256M")]
    pub memory: String,
    /// (--vmm sevm) The platform's C-bit position (it is in every page-table entry).
    #[arg(long, default_value_t = 47)]
    pub cbitpos: u8,
}

/// The launch digest for `--vmm sevm`, or `None` for `--vmm qemu`.
pub fn digest(
    a: &SevmMeasureArgs,
    kernel: &Option<PathBuf>,
    initrd: &Option<PathBuf>,
    cmdline: &Option<String>,
    num_cpus: Option<u32>,
    policy: Option<u32>,
) -> Result<Option<[u8; 32]>> {
    if a.vmm != VmmKind::Sevm {
        if a.guest.is_some() {
            bail!("--guest needs --vmm sevm");
        }
        return Ok(None);
    }
    let boot = match (&a.guest, kernel) {
        (Some(g), None) => BootSource::Bundled(g.clone()),
        (None, Some(k)) => BootSource::Linux {
            kernel: k.clone(),
            initrd: initrd.clone(),
            cmdline: cmdline.clone().unwrap_or_default(),
        },
        _ => bail!("--vmm sevm needs exactly one of --guest or --kernel"),
    };
    let memory =
        vmm::parse_memory_size(&a.memory).with_context(|| format!("--memory {}", a.memory))?;
    let cpus = u8::try_from(num_cpus.unwrap_or(1))
        .ok()
        .filter(|c| (1..=vmm::layout::MAX_CPUS).contains(c))
        .with_context(|| format!("--num-cpus: 1..={} vCPUs", vmm::layout::MAX_CPUS))?;
    let es = policy.unwrap_or(0) & (1 << 2) != 0;
    let d = vmm::confidential::recipe::expected_digest(memory, &boot, Some(a.cbitpos), cpus, es)?;
    Ok(Some(d))
}
