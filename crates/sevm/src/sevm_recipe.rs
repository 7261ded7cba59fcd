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
    /// (--vmm sevm) A bundled guest (or give --kernel, --firmware, or both, as to `sevm run`).
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
///
/// The boot source follows `sevm run`: `--guest G`; `--kernel K` (direct Linux boot);
/// `--firmware F` (raw firmware at the reset vector); `--firmware F --kernel K` (measured
/// direct boot with the kernel-hashes table).
pub fn digest(
    a: &SevmMeasureArgs,
    firmware: &Option<PathBuf>,
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
    let boot = match (&a.guest, firmware, kernel) {
        (Some(g), None, None) => BootSource::Bundled(g.clone()),
        (None, None, Some(k)) => BootSource::Linux {
            kernel: k.clone(),
            initrd: initrd.clone(),
            cmdline: cmdline.clone().unwrap_or_default(),
        },
        (None, Some(f), None) => BootSource::Firmware(f.clone()),
        (None, Some(f), Some(k)) => BootSource::FirmwareKernelHashes {
            firmware: f.clone(),
            kernel: k.clone(),
            initrd: initrd.clone(),
            cmdline: cmdline.clone().unwrap_or_default(),
        },
        (Some(_), _, _) => bail!("--guest cannot be combined with --firmware or --kernel"),
        (None, None, None) => {
            bail!("--vmm sevm needs --guest, --kernel, --firmware, or --firmware with --kernel")
        }
    };
    let memory =
        vmm::parse_memory_size(&a.memory).with_context(|| format!("--memory {}", a.memory))?;
    let max = vmm::boot::max_cpus(&boot);
    let cpus = u8::try_from(num_cpus.unwrap_or(1))
        .ok()
        .filter(|c| (1..=max).contains(c))
        .with_context(|| format!("--num-cpus: 1..={max} vCPUs for this boot source"))?;
    let es = sev_proto::policy::GuestPolicy(policy.unwrap_or(0)).es();
    let d = vmm::confidential::recipe::expected_digest(memory, &boot, Some(a.cbitpos), cpus, es)?;
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(guest: Option<&str>) -> SevmMeasureArgs {
        SevmMeasureArgs {
            vmm: VmmKind::Sevm,
            guest: guest.map(str::to_string),
            memory: "256M".into(),
            cbitpos: 47,
        }
    }

    fn sample() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/sample-ovmf.fd")
    }

    /// `sevm run --firmware F [--kernel K]` measures what QEMU does, so `--vmm sevm` with a
    /// firmware must predict the QEMU recipe's digest (sevctl's, checked in tests/).
    #[test]
    fn firmware_boots_predict_the_qemu_digest() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, b"not really a kernel, only hashed").unwrap();
        let fw = Some(sample());
        for (k, cmdline) in [
            (None, None),
            (Some(kernel), Some("console=ttyS0".to_string())),
        ] {
            let ours = digest(&args(None), &fw, &k, &None, &cmdline, None, None)
                .unwrap()
                .unwrap();
            let qemu = crate::digest::launch_digest(&crate::digest::Images {
                firmware: sample(),
                kernel: k.clone(),
                initrd: None,
                cmdline: cmdline.clone(),
                num_cpus: None,
                vmsa_cpu0: None,
                vmsa_cpu1: None,
            })
            .unwrap();
            assert_eq!(ours, qemu, "kernel {k:?}");
        }
    }

    #[test]
    fn boot_source_errors_name_the_options() {
        let fw = Some(sample());
        let e = digest(&args(Some("hello")), &fw, &None, &None, &None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--guest") && e.contains("--firmware"), "{e}");
        let e = digest(&args(None), &None, &None, &None, &None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--vmm sevm needs"), "{e}");
        let qemu = SevmMeasureArgs {
            vmm: VmmKind::Qemu,
            ..args(None)
        };
        assert_eq!(
            digest(&qemu, &fw, &None, &None, &None, None, None).unwrap(),
            None
        );
    }
}
