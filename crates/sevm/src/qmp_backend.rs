//! `sevm run --qmp unix:PATH`: attaches `vmm::monitor::vm_backend` to the VM and its SEV
//! launch (docs/QMP.md). The backend itself lives in the `vmm` crate; this is the glue that
//! knows the CLI's SEV setup (platform backend, C-bit, reduced physical bits).

use anyhow::{Context, Result};
use vmm::confidential::LaunchHandle;
use vmm::monitor::parse_qmp_spec;
use vmm::monitor::vm_backend::{self, caps_from_platform, QmpRuntime, VmBackendConfig};
use vmm::Vm;

use crate::run::SevSetup;

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
