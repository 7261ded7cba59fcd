//! `sevm run --qmp unix:PATH`: attaches `vmm::monitor::vm_backend` to the VM and its SEV
//! launch (docs/QMP.md). The backend itself lives in the `vmm` crate; this is the glue that
//! knows the CLI's SEV setup (platform backend, C-bit, reduced physical bits).

use anyhow::{Context, Result};
use vmm::confidential::LaunchHandle;
use vmm::monitor::parse_qmp_spec;
use vmm::monitor::vm_backend::{self, caps_from_platform, QmpRuntime, VmBackendConfig};
use vmm::Vm;

use crate::platform::Backend;
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
            let platform: Box<dyn sev_firmware::SevPlatform + Send + Sync> =
                match (&s.soft, s.backend) {
                    (Some(p), _) => Box::new(p.clone()),
                    (None, Backend::Hw) | (None, Backend::Soft) => Box::new(
                        sev_firmware::hw::HwPlatform::open_path(&s.cfg.sev_device).with_context(
                            || format!("--qmp: opening {}", s.cfg.sev_device.display()),
                        )?,
                    ),
                };
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
