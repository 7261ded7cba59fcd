//! `sevm run`: boot a guest on KVM, under SEV when a configuration asks for it
//! (`--object sev-guest,...`, `--sev-config FILE`, or a TOML `[sev]` table). docs/LAUNCH.md.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sev_firmware::SevPlatform;
use vmm::confidential::{
    HwBackend, LaunchHandle, LaunchParams, PlatformInfo, ResetMode, SevBackend, SevLaunch,
    SoftBackend,
};
use vmm::config::{self, SevLaunchConfig, ValidationInputs};
use vmm::{BootSource, OnReset, SerialOut, Vm, VmConfig};

use crate::args::{encode_b64, path_or_b64};
use crate::output::Output;
use crate::platform::{default_platform_dir, Backend};

/// What to boot and how (shared by `run` and `config check`).
#[derive(Debug, Args, Clone)]
pub struct GuestArgs {
    /// A bundled guest (hello, cpuid, reset, secret-reader).
    #[arg(long, conflicts_with_all = ["firmware", "kernel"])]
    pub guest: Option<String>,
    /// A raw firmware image, mapped to end at 4 GiB. With `--kernel` only under SEV with
    /// `kernel-hashes=on` (measured direct boot: the kernel-hashes table is placed where the
    /// firmware's OVMF table says; the kernel is hashed, not loaded).
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// A Linux kernel (bzImage or ELF vmlinux).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Linux initrd.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Linux command line.
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// Guest RAM (e.g. 256M).
    #[arg(long)]
    pub memory: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    pub cpus: Option<u8>,
}

/// SEV configuration options (shared by `run` and `config check`).
#[derive(Debug, Args, Clone)]
pub struct SevArgs {
    /// QEMU-style object, e.g. `sev-guest,id=sev0,policy=0x1,cbitpos=47,reduced-phys-bits=1`.
    #[arg(long = "object")]
    pub objects: Vec<String>,
    /// QEMU-style machine options, e.g. `confidential-guest-support=sev0`.
    #[arg(long)]
    pub machine: Option<String>,
    /// The seed's `[sev-launch]` file.
    #[arg(long, conflicts_with_all = ["objects", "config"])]
    pub sev_config: Option<PathBuf>,
    /// A TOML VM configuration (top-level VM keys and a `[sev]` table).
    #[arg(long, conflicts_with = "objects")]
    pub config: Option<PathBuf>,
    /// SEV firmware backend (default: soft, or the config's).
    #[arg(long, value_enum)]
    pub sev_backend: Option<Backend>,
    /// Soft platform state directory.
    #[arg(long)]
    pub platform_dir: Option<PathBuf>,
}

/// `sevm run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    guest: GuestArgs,
    #[command(flatten)]
    sev: SevArgs,
    /// COM1 output: `stdout`, `none` or `file:PATH`.
    #[arg(long, default_value = "stdout")]
    serial: String,
    /// Stop after measuring (QEMU `-S`): print the measurement, read one line from stdin
    /// (`HEADER SECRET`, each a path or base64, or empty for no secret), then continue.
    #[arg(long)]
    paused: bool,
    /// What a guest reset does.
    #[arg(long, value_enum, default_value_t = ResetArg::Relaunch)]
    on_reset: ResetArg,
    /// Write the measured bytes and VMSAs of each launch here.
    #[arg(long)]
    dump_launch: Option<PathBuf>,
    /// KVM device.
    #[arg(long, default_value = "/dev/kvm")]
    kvm_device: PathBuf,
    /// Stop the guest after this many seconds (exit 124).
    #[arg(long)]
    timeout: Option<u64>,
    /// QMP monitor socket, `unix:PATH` (docs/QMP.md). With `--paused`, `cont` starts the VM.
    #[arg(long)]
    qmp: Option<String>,
}

/// `--on-reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResetArg {
    /// A fresh launch (SEV), or a reboot keeping RAM (plain guests).
    Relaunch,
    /// Stop the VM (exit 0).
    Shutdown,
}

/// The resolved configuration of a run.
pub struct Resolved {
    /// The VM.
    pub vm: VmConfig,
    /// SEV, if asked for.
    pub sev: Option<SevSetup>,
}

/// The SEV part of a resolved configuration.
pub struct SevSetup {
    /// Validated launch configuration.
    pub cfg: SevLaunchConfig,
    /// Backend.
    pub backend: Backend,
    /// Soft platform directory (soft backend).
    pub platform_dir: PathBuf,
    /// Firmware identity.
    pub info: PlatformInfo,
    /// The soft platform, when soft.
    pub soft: Option<sev_firmware::soft::SoftPlatform>,
}

/// The boot source. `kernel_hashes` (SEV `kernel-hashes=on`) allows `--firmware` with
/// `--kernel`: measured direct boot, the kernel-hashes table placed where the firmware says.
fn boot_source(
    g: &GuestArgs,
    toml: Option<&config::tomlfile::VmSettings>,
    kernel_hashes: bool,
) -> Result<BootSource> {
    let pick = |a: &Option<PathBuf>, b: Option<&Option<PathBuf>>| {
        a.clone().or_else(|| b.and_then(|x| x.clone()))
    };
    let guest = g
        .guest
        .clone()
        .or_else(|| toml.and_then(|t| t.guest.clone()));
    let firmware = pick(&g.firmware, toml.map(|t| &t.firmware));
    let kernel = pick(&g.kernel, toml.map(|t| &t.kernel));
    let initrd = pick(&g.initrd, toml.map(|t| &t.initrd));
    let cmdline = g
        .cmdline
        .clone()
        .or_else(|| toml.and_then(|t| t.cmdline.clone()));
    Ok(match (guest, firmware, kernel) {
        (Some(n), None, None) => BootSource::Bundled(n),
        (None, Some(f), None) => BootSource::Firmware(f),
        (None, Some(firmware), Some(kernel)) if kernel_hashes => BootSource::FirmwareKernelHashes {
            firmware,
            kernel,
            initrd,
            cmdline: cmdline.unwrap_or_default(),
        },
        (None, Some(_), Some(_)) => bail!(
            "--firmware with --kernel needs SEV with kernel-hashes=on (measured direct boot); \
             sevm has no fw_cfg to hand a kernel to a firmware otherwise"
        ),
        (None, None, Some(k)) => BootSource::Linux {
            kernel: k,
            initrd,
            cmdline: cmdline.unwrap_or_default(),
        },
        (None, None, None) => BootSource::Bundled("hello".into()),
        _ => bail!("give one of --guest, --firmware or --kernel (the command line and the config file disagree)"),
    })
}

fn parse_sev(
    s: &SevArgs,
    inputs: &ValidationInputs,
) -> Result<(
    Option<SevLaunchConfig>,
    Option<config::tomlfile::VmSettings>,
)> {
    if let Some(p) = &s.sev_config {
        return Ok((
            Some(config::sevlaunch::from_sev_launch_file(p, inputs)?),
            None,
        ));
    }
    if let Some(p) = &s.config {
        let t = config::tomlfile::from_toml_file(p, inputs)?;
        return Ok((t.sev, Some(t.vm)));
    }
    Ok((
        config::qemu::from_qemu_args(&s.objects, s.machine.as_deref(), inputs)?,
        None,
    ))
}

/// Validates the configuration and opens the platform (no VM is built).
pub fn resolve(g: &GuestArgs, s: &SevArgs) -> Result<Resolved> {
    // The VM's own limits, checked here so that `config check` refuses what `run` would.
    if let Some(c) = g.cpus {
        config::check_cli_cpus(u32::from(c))?;
    }
    let base_dir = s
        .sev_config
        .as_ref()
        .or(s.config.as_ref())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut inputs = ValidationInputs {
        platform_cbitpos: None,
        cli_cpus: g.cpus.map(u32::from),
        base_dir,
    };
    // First pass: learn the backend and platform dir; second pass: check against the platform.
    let (first, toml) = parse_sev(s, &inputs)?;
    let memory = match (&g.memory, toml.as_ref().and_then(|t| t.memory_mib)) {
        (Some(m), _) => vmm::parse_memory_size(m).with_context(|| format!("--memory {m}"))?,
        (None, Some(mib)) => mib << 20,
        (None, None) => 256 << 20,
    };
    let cpus = match (g.cpus, toml.as_ref().and_then(|t| t.cpus)) {
        (Some(c), _) => c,
        (None, Some(c)) => u8::try_from(c).context("config: cpus is too large")?,
        (None, None) => 1,
    };
    let kernel_hashes = first.as_ref().is_some_and(|c| c.kernel_hashes);
    let vm = VmConfig {
        memory,
        cpus,
        boot: boot_source(g, toml.as_ref(), kernel_hashes)?,
        ..VmConfig::default()
    };
    let Some(first) = first else {
        return Ok(Resolved { vm, sev: None });
    };
    // Valid QEMU values that sevm's launch cannot honour (legacy-vm-type=off, debug-swap=on)
    // are refused here rather than silently ignored.
    first.check_supported()?;
    let backend = s
        .sev_backend
        .or(match first.backend {
            Some(config::SevBackend::Hw) => Some(Backend::Hw),
            Some(config::SevBackend::Soft) => Some(Backend::Soft),
            None => None,
        })
        .unwrap_or(Backend::Soft);
    let platform_dir = match s.platform_dir.clone().or(first.platform_dir.clone()) {
        Some(d) => d,
        None => default_platform_dir()?,
    };
    let (status, cbit, soft) = match backend {
        Backend::Soft => {
            let p = sev_firmware::soft::SoftPlatform::open(&platform_dir).with_context(|| {
                format!(
                    "opening the soft SEV platform in {}",
                    platform_dir.display()
                )
            })?;
            (p.platform_status()?, p.cbit_pos()?, Some(p))
        }
        Backend::Hw => {
            let p =
                sev_firmware::hw::HwPlatform::open_path(&first.sev_device).with_context(|| {
                    format!(
                        "--sev-backend hw: this host offers no SEV firmware at {}",
                        first.sev_device.display()
                    )
                })?;
            (p.platform_status()?, p.cbit_pos()?, None)
        }
    };
    inputs.platform_cbitpos = Some(cbit);
    let (cfg, _) = parse_sev(s, &inputs)?;
    let cfg = cfg.context("the SEV configuration vanished on the second pass")?;
    if let Some(v) = cfg.vcpus {
        if v != u32::from(vm.cpus) {
            bail!(
                "the SEV configuration says {v} vCPUs but the VM has {} (use --cpus {v})",
                vm.cpus
            );
        }
    }
    Ok(Resolved {
        vm,
        sev: Some(SevSetup {
            cfg,
            backend,
            platform_dir,
            info: PlatformInfo {
                api_major: status.api_major,
                api_minor: status.api_minor,
                build: status.build,
                cbitpos: cbit,
            },
            soft,
        }),
    })
}

/// The launch backend: the soft model, or Linux's KVM and SEV device (a new KVM VM per
/// launch, guest RAM pinned against RLIMIT_MEMLOCK).
pub fn backend(setup: &SevSetup) -> Box<dyn SevBackend> {
    match &setup.soft {
        Some(p) => Box::new(SoftBackend(p.clone())),
        None => Box::new(HwBackend::new(&setup.cfg.sev_device)),
    }
}

/// Builds the VM; for SEV, runs the launch up to LAUNCH_MEASURE (in KVM's order, see
/// `vmm::vm`) and returns its handle.
pub fn build(
    mut vm_cfg: VmConfig,
    sev: Option<(&SevSetup, LaunchParams)>,
) -> Result<(Vm, Option<LaunchHandle>)> {
    let Some((setup, params)) = sev else {
        return Ok((Vm::build(&vm_cfg)?, None));
    };
    let cbit = params.cbitpos;
    let launch = SevLaunch::with_backend(params, setup.info, backend(setup));
    launch.prepare(&mut vm_cfg);
    let handle = launch.handle();
    let mut vm = Vm::build_with_hooks(&vm_cfg, Box::new(launch)).map_err(anyhow::Error::new)?;
    if setup.backend == Backend::Soft {
        vm.add_alias(1u64 << cbit)?;
    }
    Ok((vm, Some(handle)))
}

fn serial(s: &str) -> Result<SerialOut> {
    Ok(match s {
        "stdout" => SerialOut::Stdout,
        "none" | "null" => SerialOut::Sink,
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => SerialOut::File(PathBuf::from(p)),
            _ => bail!("--serial {s}: expected stdout, none or file:PATH"),
        },
    })
}

/// Owner interaction on stdin for `--paused`: for each launch, print the measurement and
/// read `HEADER SECRET` (or an empty line).
fn paused_owner(handle: LaunchHandle) {
    let stdin = std::io::stdin();
    let mut launch = 1;
    loop {
        let Ok(m) = handle.wait_measured(launch, Duration::from_secs(24 * 3600)) else {
            return;
        };
        eprintln!(
            "sevm: launch {launch} measured: {} (paused; enter `HEADER SECRET` or an empty line)",
            encode_b64(&m)
        );
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 2 {
                let r = path_or_b64("HEADER", parts[0])
                    .and_then(|h| Ok((h, path_or_b64("SECRET", parts[1])?)))
                    .map_err(anyhow::Error::new)
                    .and_then(|(h, c)| Ok(handle.inject_secret(&h, &c, None)?));
                match r {
                    Ok(()) => eprintln!("sevm: secret injected"),
                    Err(e) => {
                        eprintln!("sevm: secret refused: {}", crate::output::error_message(&e))
                    }
                }
            } else if !parts.is_empty() {
                eprintln!("sevm: expected `HEADER SECRET`; continuing without a secret");
            }
        }
        handle.release();
        launch += 1;
    }
}

/// Runs `sevm run ...`.
pub fn run(a: RunArgs, _out: &Output) -> Result<ExitCode> {
    let r = resolve(&a.guest, &a.sev)?;
    let mut vm_cfg = r.vm;
    vm_cfg.serial = serial(&a.serial)?;
    vm_cfg.kvm_path = a.kvm_device.clone();
    vm_cfg.timeout = a.timeout.map(Duration::from_secs);
    vm_cfg.on_reset = match a.on_reset {
        ResetArg::Relaunch => OnReset::Reboot,
        ResetArg::Shutdown => OnReset::Shutdown,
    };
    // QMP: `--paused` is QEMU's -S (the VM waits for `cont`), not the stdin owner.
    vm_cfg.start_paused = a.paused && a.qmp.is_some();
    let cpus = vm_cfg.cpus;
    let sev = r.sev.as_ref().map(|s| {
        let mut p = LaunchParams::from_config(&s.cfg, s.info.cbitpos);
        p.paused = a.paused && a.qmp.is_none();
        p.dump_dir = a.dump_launch.clone();
        p.on_reset = match a.on_reset {
            ResetArg::Relaunch => ResetMode::Relaunch,
            ResetArg::Shutdown => ResetMode::Shutdown,
        };
        (s, p)
    });
    if sev.is_none() && ((a.paused && a.qmp.is_none()) || a.dump_launch.is_some()) {
        bail!("--paused and --dump-launch need an SEV guest (--object sev-guest,..., --sev-config or a [sev] table)");
    }
    let (mut vm, handle) = build(vm_cfg, sev)?;
    if let Some(h) = &handle {
        let st = h.status();
        let m = h.measurement().map(|m| encode_b64(&m)).unwrap_or_default();
        let d = h.launch_digest().map(hex::encode).unwrap_or_default();
        tracing::info!(
            handle = st.handle,
            policy = st.policy,
            "SEV launch measured"
        );
        // stdout belongs to the guest's serial console: report on stderr.
        eprintln!(
            "sevm: SEV guest handle {} policy {:#x}: launch digest {d}, measurement {m}",
            st.handle, st.policy
        );
        tracing::debug!(status = %st.to_query_sev(), "query-sev");
        if a.paused && a.qmp.is_none() {
            let h = h.clone();
            std::thread::spawn(move || paused_owner(h));
        } else {
            h.release();
        }
    }
    let qmp = match &a.qmp {
        Some(q) => Some(crate::qmp_backend::start(
            q,
            &vm,
            handle.clone(),
            r.sev.as_ref(),
            a.paused,
            cpus,
        )?),
        None => None,
    };
    let status = vm.run();
    if let Some(q) = qmp {
        q.finish(status.as_ref().ok());
    }
    let status = status?;
    tracing::info!(?status, "guest stopped");
    let code = status.exit_code();
    if !matches!(
        status,
        vmm::ExitStatus::Exited(_)
            | vmm::ExitStatus::Poweroff
            | vmm::ExitStatus::Reset
            | vmm::ExitStatus::Quit
    ) {
        eprintln!("sevm: guest stopped: {status:?}");
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(cpus: Option<u8>) -> GuestArgs {
        GuestArgs {
            guest: None,
            firmware: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            memory: None,
            cpus,
        }
    }

    fn no_sev() -> SevArgs {
        SevArgs {
            objects: vec![],
            machine: None,
            sev_config: None,
            config: None,
            sev_backend: None,
            platform_dir: None,
        }
    }

    #[test]
    fn resolve_refuses_cpu_counts_the_vm_refuses() {
        for bad in [0u8, 9, 255] {
            let e = resolve(&guest(Some(bad)), &no_sev()).err().unwrap();
            let msg = crate::output::error_message(&e);
            assert!(
                msg.contains(&format!("`--cpus {bad}`")) && msg.contains("out of range"),
                "{msg}"
            );
        }
        let r = resolve(&guest(Some(2)), &no_sev()).unwrap();
        assert_eq!(r.vm.cpus, 2);
        assert!(r.sev.is_none());
    }

    #[test]
    fn resolve_refuses_sev_options_sevm_cannot_honour() {
        let dir = tempfile::tempdir().unwrap();
        for (obj, key) in [
            (
                "sev-guest,id=s,policy=1,reduced-phys-bits=1,legacy-vm-type=off",
                "legacy-vm-type",
            ),
            (
                "sev-guest,id=s,policy=5,reduced-phys-bits=1,debug-swap=on",
                "debug-swap",
            ),
        ] {
            let sev = SevArgs {
                objects: vec![obj.to_string()],
                machine: Some("confidential-guest-support=s".into()),
                // Never reached: the refusal comes before the platform is opened.
                platform_dir: Some(dir.path().join("plat")),
                ..no_sev()
            };
            let e = resolve(&guest(None), &sev).err().unwrap();
            let msg = crate::output::error_message(&e);
            assert!(msg.contains(&format!("key `{key}`: unsupported")), "{msg}");
            assert!(!dir.path().join("plat").exists());
        }
    }
}
