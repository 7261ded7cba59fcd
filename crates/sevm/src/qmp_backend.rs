//! `sevm run --qmp unix:PATH`: attaches `vmm::monitor::vm_backend` to the VM and its SEV
//! launch (docs/QMP.md). The backend itself lives in the `vmm` crate; this is the glue that
//! knows the CLI's SEV setup (platform backend, C-bit, reduced physical bits).

use anyhow::{Context, Result};
use vmm::confidential::LaunchHandle;
use vmm::monitor::parse_qmp_spec;
use vmm::monitor::vm_backend::{self, caps_from_platform, QmpRuntime, VmBackendConfig};
use vmm::Vm;

use crate::run::SevSetup;

/// `--qmp` for an SEV-SNP guest: `query-sev` shows the SNP launch, `query-sev-capabilities`
/// the soft platform in the same directory, the debug paths follow the SNP policy.
pub fn start_snp(
    arg: &str,
    vm: &Vm,
    snp: &crate::run::SnpSetup,
    handle: vmm::confidential::snp::SnpHandle,
    vcpus: u8,
) -> Result<QmpRuntime> {
    use sev_firmware::snp::SnpPlatform;
    let path = parse_qmp_spec(arg).map_err(|e| anyhow::anyhow!("--qmp {arg}: {e}"))?;
    let st = snp
        .platform
        .snp_platform_status()
        .context("--qmp: SNP_PLATFORM_STATUS")?;
    let legacy = sev_firmware::soft::SoftPlatform::open(&snp.platform_dir).with_context(|| {
        format!(
            "--qmp: opening the soft platform in {}",
            snp.platform_dir.display()
        )
    })?;
    let caps = caps_from_platform(Box::new(legacy), snp.cbitpos, snp.cfg.reduced_phys_bits);
    let rt = vm_backend::start(
        &path,
        vm,
        VmBackendConfig {
            snp: Some(vm_backend::SnpMonitor {
                handle,
                api: (st.api_major, st.api_minor, st.build_id as u8),
            }),
            launch: None,
            caps: Some(caps),
            cbitpos: Some(snp.cbitpos),
            start_paused: false,
            vcpus,
        },
    )
    .with_context(|| format!("--qmp {arg}"))?;
    eprintln!("sevm: QMP monitor on {}", rt.path().display());
    Ok(rt)
}

/// Binds the `--qmp` socket (`unix:PATH`) and starts serving it for `vm`.
pub fn start(
    arg: &str,
    vm: &Vm,
    launch: Option<LaunchHandle>,
    setup: Option<&SevSetup>,
    start_paused: bool,
    vcpus: u8,
) -> Result<QmpRuntime> {
    let path = parse_qmp_spec(arg).map_err(|e| anyhow::anyhow!("--qmp {arg}: {e}"))?;
    let caps = match setup {
        Some(s) => {
            let platform = s
                .backend
                .platform()
                .with_context(|| format!("--qmp: opening the {} SEV platform", s.backend.name()))?;
            Some(caps_from_platform(
                platform,
                s.info.cbitpos,
                s.cfg.reduced_phys_bits,
            ))
        }
        None => None,
    };
    let cbitpos = launch.as_ref().map(|l| l.status().platform.cbitpos);
    let rt = vm_backend::start(
        &path,
        vm,
        VmBackendConfig {
            snp: None,
            launch,
            caps,
            cbitpos,
            start_paused,
            vcpus,
        },
    )
    .with_context(|| format!("--qmp {arg}"))?;
    eprintln!("sevm: QMP monitor on {}", rt.path().display());
    Ok(rt)
}
