//! `sevm run`: boot a guest on KVM, under SEV when a configuration asks for it
//! (`--object sev-guest,...`, `--sev-config FILE`, or a TOML `[sev]` table). docs/LAUNCH.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::SevPlatform;
use vmm::builder::{LaunchBackend, Launched, SevSpec, VmBuilder};
use vmm::builder::{SnpBackend, SnpSpec};
use vmm::confidential::snp::SnpLaunchParams;
use vmm::confidential::{HwBackend, LaunchHandle, LaunchParams, PlatformInfo, ResetMode};
use vmm::config::snp::SnpLaunchConfig;
use vmm::config::{self, SevLaunchConfig, ValidationInputs};
use vmm::{BootSource, OnReset, SerialOut, VmConfig};

use crate::args::{encode_b64, path_or_b64};
use crate::lifecycle::{
    deadline_after, Lifecycle, LineEvent, LineReader, SignalWatch, StopReason, POLL_SLICE,
};
use crate::output::Output;
use crate::platform::{default_platform_dir, Backend};
use sev_proto::secret::PacketHeader;

/// What to boot and how (shared by `run` and `config check`).
#[derive(Debug, Args, Clone)]
pub struct GuestArgs {
    /// A bundled guest (hello, cpuid, reset, secret-reader, ticker, snp-attest, idle).
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
    /// Guest RAM, as QEMU's `-m`: a bare number is MiB (`256`), or give a unit (`256M`, `1G`,
    /// `65536K`, `16777216B`).
    #[arg(long)]
    pub memory: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    pub cpus: Option<u8>,
    /// A virtio-blk disk on a raw image: `path=FILE[,readonly=on][,id=ID]` (repeatable).
    /// Linux finds it through a `virtio_mmio.device=` entry sevm appends to the command line
    /// (docs/LAYOUT.md; for an SEV launch the entries are part of the measured command line).
    #[arg(long = "disk", value_name = "SPEC")]
    pub disks: Vec<String>,
    /// A virtio-net card on an existing TAP device: `tap=NAME[,mac=MAC]` (repeatable).
    #[arg(long = "net", value_name = "SPEC")]
    pub nets: Vec<String>,
    /// The virtio-vsock device, Firecracker's hybrid model: `cid=N,uds=PATH` (guest
    /// connections to host port P reach the Unix socket `PATH_P`; host programs connect to
    /// PATH and write `CONNECT <port>\n`).
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
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
    /// With `--sev-backend hw` and an SEV-SNP guest: the kernel side of the hw backend is the
    /// loopback model of Linux (its `/dev/sev` and KVM's SNP interface, served by the soft
    /// platform in `--platform-dir`); the guest runs on this host's /dev/kvm without memory
    /// encryption. For proving the hw path on a host without SNP (tests, CI).
    #[arg(long)]
    pub hw_loopback: bool,
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
    /// Stop the guest after this many seconds (exit 124). Also bounds the wait for the
    /// owner's line on stdin under `--paused`. A value too large for the clock is no limit.
    #[arg(long)]
    timeout: Option<u64>,
    /// QMP monitor socket, `unix:PATH` (docs/QMP.md). With `--paused`, `cont` starts the VM.
    #[arg(long)]
    qmp: Option<String>,
    /// SEV-SNP: the 64-byte REPORT_DATA (128 hex digits) the VMM gives the guest in its
    /// SNP_PARAMS page (docs/LAYOUT.md), for the report it asks the firmware for.
    #[arg(long, value_name = "HEX")]
    report_data: Option<String>,
    /// SEV-SNP: after the guest stops, write the attestation report it left at SNP_REPORT_OUT
    /// (exactly the bytes it received) to FILE.
    #[arg(long, value_name = "FILE")]
    report_out: Option<PathBuf>,
    /// SEV-SNP: serve extended guest requests this certificate chain (ark, ask, vcek as .pem or
    /// .der, the layout `snphost export` writes) instead of the soft platform's own.
    #[arg(long, value_name = "DIR")]
    snp_certs: Option<PathBuf>,
    /// SEV-SNP: serve the guest channel on this Unix socket (created 0600; must not exist):
    /// its client stands for the guest kernel and may read VMPCK0 and send guest requests
    /// (`sevm shim --guest PATH`; for CI without hardware, docs/CI-WITHOUT-HARDWARE.md).
    #[arg(long, value_name = "PATH")]
    guest_channel: Option<PathBuf>,
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
    /// SEV-SNP, if asked for.
    pub snp: Option<SnpSetup>,
}

/// The SEV-SNP part of a resolved configuration.
pub struct SnpSetup {
    /// Validated launch configuration.
    pub cfg: SnpLaunchConfig,
    /// The soft SNP platform, opened.
    pub platform: SoftSnpPlatform,
    /// Soft platform directory.
    pub platform_dir: PathBuf,
    /// The platform's C-bit position.
    pub cbitpos: u8,
    /// Where the launch runs.
    pub backend: SnpBackend,
    /// The loopback's device directory (`--hw-loopback`), kept while the setup lives.
    pub _loopback_dir: Option<tempfile::TempDir>,
}

impl SnpSetup {
    /// The launch parameters of this configuration (REPORT_DATA and certificates unset).
    pub fn params(&self) -> SnpLaunchParams {
        SnpLaunchParams::from_config(&self.cfg, self.cbitpos)
    }

    /// The builder's SNP launch with `params`.
    pub fn spec(&self, params: SnpLaunchParams) -> SnpSpec {
        SnpSpec {
            backend: self.backend.clone(),
            params,
        }
    }

    /// The certificate table (GUID table, ARK, ASK, VCEK) extended guest requests get: from
    /// `dir` (`snphost export`'s layout; the chain is checked), or the soft platform's own
    /// ARK/ASK and the VCEK of its reported TCB.
    pub fn cert_table(&self, dir: Option<&Path>) -> Result<Vec<u8>> {
        use openssl::x509::X509;
        use sev_proto::snp::certs::{
            encode_cert_table, CertTableEntry, GUID_ARK, GUID_ASK, GUID_VCEK,
        };
        let (ark, ask, vcek): (X509, X509, X509) = match dir {
            Some(d) => {
                let load =
                    |names: &[&str]| crate::owner_snp::load_cert_for("--snp-certs", d, names);
                let (ark_p, ark) = load(&["ark"])?;
                let (ask_p, ask) = load(&["ask"])?;
                let (vcek_p, vcek) = load(&["vcek"])?;
                for (p, c, by, by_p) in [
                    (&ark_p, &ark, &ark, &ark_p),
                    (&ask_p, &ask, &ark, &ark_p),
                    (&vcek_p, &vcek, &ask, &ask_p),
                ] {
                    let key = by.public_key()?;
                    if !c.verify(&key).unwrap_or(false) {
                        bail!(
                            "--snp-certs: {} is not signed by {} (a wrong chain)",
                            p.display(),
                            by_p.display()
                        );
                    }
                }
                (ark, ask, vcek)
            }
            None => {
                let ca = sev_firmware::snp::ca::SoftCa::load_or_create(&self.platform_dir)
                    .with_context(|| {
                        format!("the soft ARK/ASK in {}", self.platform_dir.display())
                    })?;
                let vcek = self
                    .platform
                    .vcek_cert(&ca, self.platform.reported_tcb())
                    .context("making the VCEK certificate for the reported TCB")?;
                (ca.ark.clone(), ca.ask.clone(), vcek)
            }
        };
        let entries = [(ark, GUID_ARK), (ask, GUID_ASK), (vcek, GUID_VCEK)]
            .into_iter()
            .map(|(c, guid)| {
                Ok(CertTableEntry {
                    guid,
                    data: c.to_der()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        encode_cert_table(&entries).context("encoding the certificate table")
    }
}

/// The SEV part of a resolved configuration.
pub struct SevSetup {
    /// Validated launch configuration.
    pub cfg: SevLaunchConfig,
    /// The firmware the launch runs on (the soft platform, opened, or the SEV device).
    pub backend: LaunchBackend,
    /// Soft platform directory (soft backend).
    pub platform_dir: PathBuf,
    /// Firmware identity.
    pub info: PlatformInfo,
}

impl SevSetup {
    /// Which backend, as `--sev-backend` names it.
    pub fn kind(&self) -> Backend {
        match self.backend {
            LaunchBackend::Soft(_) => Backend::Soft,
            LaunchBackend::Hw(_) => Backend::Hw,
        }
    }

    /// The builder's SEV launch for this setup with `params`.
    pub fn spec(&self, params: LaunchParams) -> SevSpec {
        SevSpec {
            backend: self.backend.clone(),
            params,
            platform: self.info,
        }
    }
}

/// The boot source. `kernel_hashes` (SEV `kernel-hashes=on`) allows `--firmware` with
/// `--kernel`: measured direct boot, the kernel-hashes table placed where the firmware says.
/// A value that may be given both on the command line (`--opt`) and in the TOML file (`key`):
/// when both are given they must agree, so that neither silently overrides the other.
fn one_of<T: Clone>(
    opt: &str,
    key: &str,
    toml_file: Option<&Path>,
    cli: Option<&T>,
    file: Option<&T>,
    same: impl Fn(&T, &T) -> bool,
    show: impl Fn(&T) -> String,
) -> Result<Option<T>> {
    match (cli, file) {
        (Some(a), Some(b)) if !same(a, b) => bail!(
            "{opt} {} disagrees with the key `{key}` ({}) in {}: give it in one place \
             (neither overrides the other)",
            show(a),
            show(b),
            toml_file.map_or("the config file".into(), |p| p.display().to_string())
        ),
        (a, b) => Ok(a.or(b).cloned()),
    }
}

/// Two paths name the same file (as written, or once resolved).
fn same_path(a: &PathBuf, b: &PathBuf) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn boot_source(
    g: &GuestArgs,
    toml: Option<&config::tomlfile::VmSettings>,
    toml_file: Option<&Path>,
    kernel_hashes: bool,
) -> Result<BootSource> {
    let path = |opt: &str, key: &str, a: &Option<PathBuf>, b: Option<&Option<PathBuf>>| {
        one_of(
            opt,
            key,
            toml_file,
            a.as_ref(),
            b.and_then(|x| x.as_ref()),
            same_path,
            |p| p.display().to_string(),
        )
    };
    let text = |opt: &str, key: &str, a: &Option<String>, b: Option<&Option<String>>| {
        one_of(
            opt,
            key,
            toml_file,
            a.as_ref(),
            b.and_then(|x| x.as_ref()),
            |x, y| x == y,
            |v| format!("{v:?}"),
        )
    };
    let guest = text("--guest", "guest", &g.guest, toml.map(|t| &t.guest))?;
    let firmware = path(
        "--firmware",
        "firmware",
        &g.firmware,
        toml.map(|t| &t.firmware),
    )?;
    let kernel = path("--kernel", "kernel", &g.kernel, toml.map(|t| &t.kernel))?;
    let initrd = path("--initrd", "initrd", &g.initrd, toml.map(|t| &t.initrd))?;
    let cmdline = text("--cmdline", "cmdline", &g.cmdline, toml.map(|t| &t.cmdline))?;
    if let (Some(n), None, None) = (&guest, &firmware, &kernel) {
        // The bundled guests take no initrd and no command line: refuse, not ignore.
        for (opt, given) in [
            ("--initrd", initrd.is_some()),
            ("--cmdline", cmdline.is_some()),
        ] {
            if given {
                bail!(
                    "{opt}: the bundled guest `{n}` takes no initrd or command line \
                     ({opt} goes with --kernel)"
                );
            }
        }
    }
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

/// The SEV configuration, the SEV-SNP one and the TOML file's VM keys.
type ParsedSev = (
    Option<SevLaunchConfig>,
    Option<SnpLaunchConfig>,
    Option<config::tomlfile::VmSettings>,
);

fn parse_sev(s: &SevArgs, inputs: &ValidationInputs) -> Result<ParsedSev> {
    if let Some(p) = &s.sev_config {
        return Ok((
            Some(config::sevlaunch::from_sev_launch_file(p, inputs)?),
            None,
            None,
        ));
    }
    if let Some(p) = &s.config {
        let t = config::tomlfile::from_toml_file(p, inputs)?;
        return Ok((t.sev, t.snp, Some(t.vm)));
    }
    Ok((
        config::qemu::from_qemu_args(&s.objects, s.machine.as_deref(), inputs)?,
        config::snp::from_qemu_args(&s.objects, s.machine.as_deref(), inputs)?,
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
    let (first, first_snp, toml) = parse_sev(s, &inputs)?;
    let cli_memory = match &g.memory {
        Some(m) => Some(vmm::parse_memory_size(m).with_context(|| format!("--memory {m}"))?),
        None => None,
    };
    // The TOML parser checked `memory` against the VM's limits (as `Vm::build` does).
    let toml_memory = toml
        .as_ref()
        .and_then(|t| t.memory_mib)
        .map(|mib| mib << 20);
    let memory = one_of(
        "--memory",
        "memory",
        s.config.as_deref(),
        cli_memory.as_ref(),
        toml_memory.as_ref(),
        |a, b| a == b,
        |b| format!("{} MiB", b >> 20),
    )?
    .unwrap_or(256 << 20);
    vmm::memory::check_memory_size(memory).context("memory")?;
    let cpus = match (g.cpus, toml.as_ref().and_then(|t| t.cpus)) {
        (Some(c), _) => c,
        (None, Some(c)) => u8::try_from(c).context("config: cpus is too large")?,
        (None, None) => 1,
    };
    let kernel_hashes = first.as_ref().is_some_and(|c| c.kernel_hashes)
        || first_snp.as_ref().is_some_and(|c| c.kernel_hashes);
    let mut disks = g
        .disks
        .iter()
        .map(|d| vmm::config::devices::parse_disk(d))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut nets = g
        .nets
        .iter()
        .map(|n| vmm::config::devices::parse_net(n))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut vsock = g
        .vsock
        .as_deref()
        .map(vmm::config::devices::parse_vsock)
        .transpose()?;
    // Devices come from the command line or the TOML file, not both (neither overrides).
    if let Some(t) = toml.as_ref() {
        let file = s
            .config
            .as_deref()
            .map_or("the config file".into(), |p| p.display().to_string());
        let take = |opt: &str, key: &str, cli_given: bool, file_given: bool| -> Result<bool> {
            if cli_given && file_given {
                bail!(
                    "{opt} and the key `{key}` in {file} both give devices: give them in one place"
                );
            }
            Ok(file_given)
        };
        if take("--disk", "disk", !disks.is_empty(), !t.disks.is_empty())? {
            disks = t.disks.clone();
        }
        if take("--net", "net", !nets.is_empty(), !t.nets.is_empty())? {
            nets = t.nets.clone();
        }
        if take("--vsock", "vsock", vsock.is_some(), t.vsock.is_some())? {
            vsock = t.vsock.clone();
        }
    }
    let ndev = disks.len() + nets.len() + usize::from(vsock.is_some());
    if ndev > vmm::layout::VIRTIO_IRQS.len() {
        bail!(
            "{ndev} virtio devices given (--disk, --net, --vsock); at most {} are supported",
            vmm::layout::VIRTIO_IRQS.len()
        );
    }
    for d in &disks {
        if !d.path.is_file() {
            bail!("--disk path={}: no such file", d.path.display());
        }
    }
    let mut boot = boot_source(g, toml.as_ref(), s.config.as_deref(), kernel_hashes)?;
    if ndev > 0 {
        match &mut boot {
            BootSource::Linux { cmdline, .. } => {
                let entries = vmm::virtio::cmdline_entries(ndev);
                if !cmdline.is_empty() {
                    cmdline.push(' ');
                }
                cmdline.push_str(&entries);
            }
            BootSource::Bundled(_) => bail!(
                "--disk/--net/--vsock need a Linux guest (--kernel); the bundled guests have no virtio driver"
            ),
            _ => bail!(
                "--disk/--net/--vsock: only Linux direct boot (--kernel) is given the devices' \
                 virtio_mmio.device= entries; a firmware boot has no way to find them yet"
            ),
        }
    }
    let vm = VmConfig {
        memory,
        cpus,
        boot,
        disks,
        nets,
        vsock,
        ..VmConfig::default()
    };
    if let Some(first) = first_snp {
        let snp = resolve_snp(s, &mut inputs, &first, &vm)?;
        return Ok(Resolved {
            vm,
            sev: None,
            snp: Some(snp),
        });
    }
    if s.hw_loopback {
        bail!("--hw-loopback is for SEV-SNP guests (--object sev-snp-guest,...) only");
    }
    let Some(first) = first else {
        return Ok(Resolved {
            vm,
            sev: None,
            snp: None,
        });
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
    let (status, cbit, launch_backend) = match backend {
        Backend::Soft => {
            let p = sev_firmware::soft::SoftPlatform::open(&platform_dir).with_context(|| {
                format!(
                    "opening the soft SEV platform in {}",
                    platform_dir.display()
                )
            })?;
            let (st, cbit) = (p.platform_status()?, p.cbit_pos()?);
            (st, cbit, LaunchBackend::Soft(p))
        }
        Backend::Hw => {
            let p =
                sev_firmware::hw::HwPlatform::open_path(&first.sev_device).with_context(|| {
                    format!(
                        "--sev-backend hw: this host offers no SEV firmware at {}",
                        first.sev_device.display()
                    )
                })?;
            (
                p.platform_status()?,
                p.cbit_pos()?,
                LaunchBackend::Hw(HwBackend::new(&first.sev_device)),
            )
        }
    };
    // A C-bit position no page table can carry is refused here, so `config check` refuses
    // what `run` would (the soft store also refuses one when it loads the state file).
    vmm::cpu::cbit_mask(Some(cbit)).with_context(|| {
        format!("the {backend:?} SEV platform reports C-bit position {cbit}, outside 32..=51")
    })?;
    inputs.platform_cbitpos = Some(cbit);
    let (cfg, _, _) = parse_sev(s, &inputs)?;
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
        snp: None,
        sev: Some(SevSetup {
            cfg,
            backend: launch_backend,
            platform_dir,
            info: PlatformInfo {
                api_major: status.api_major,
                api_minor: status.api_minor,
                build: status.build,
                cbitpos: cbit,
            },
        }),
    })
}

/// The SNP part of [`resolve`]: the soft SNP platform (SNP_INIT on first use), the C-bit, and
/// the configuration checked against it.
fn resolve_snp(
    s: &SevArgs,
    inputs: &mut ValidationInputs,
    first: &SnpLaunchConfig,
    vm: &VmConfig,
) -> Result<SnpSetup> {
    let backend = s
        .sev_backend
        .or(match first.backend {
            Some(config::SevBackend::Hw) => Some(Backend::Hw),
            Some(config::SevBackend::Soft) => Some(Backend::Soft),
            None => None,
        })
        .unwrap_or(Backend::Soft);
    if backend == Backend::Hw && !s.hw_loopback {
        bail!(
            "--sev-backend hw: sevm's command line launches SEV-SNP guests through KVM's SNP \
             interface over the loopback model of Linux only so far (add --hw-loopback); the \
             real kernel's /dev/sev is not wired in for SNP yet"
        );
    }
    if backend == Backend::Soft && s.hw_loopback {
        bail!("--hw-loopback needs --sev-backend hw");
    }
    if !matches!(vm.boot, BootSource::Bundled(_)) {
        bail!(
            "sev-snp-guest: sevm's SNP layout is implemented for the bundled guests (--guest) \
             only so far; --firmware/--kernel SNP launches are not"
        );
    }
    let platform_dir = match s.platform_dir.clone().or(first.platform_dir.clone()) {
        Some(d) => d,
        None => default_platform_dir()?,
    };
    sevm_files::create_private_dir(&platform_dir, "platform directory")
        .with_context(|| format!("platform directory {}", platform_dir.display()))?;
    // The C-bit is the soft platform's (the same one an SEV guest on it gets).
    let legacy = sev_firmware::soft::SoftPlatform::open(&platform_dir).with_context(|| {
        format!(
            "opening the soft SEV platform in {}",
            platform_dir.display()
        )
    })?;
    let cbitpos = legacy.cbit_pos()?;
    vmm::cpu::cbit_mask(Some(cbitpos)).with_context(|| {
        format!("the soft platform reports C-bit position {cbitpos}, outside 32..=51")
    })?;
    let platform =
        SoftSnpPlatform::open(&platform_dir, SoftSnpConfig::default()).with_context(|| {
            format!(
                "opening the soft SNP platform in {}",
                platform_dir.display()
            )
        })?;
    inputs.platform_cbitpos = Some(cbitpos);
    let (_, cfg, _) = parse_sev(s, inputs)?;
    let cfg = cfg.context("the SNP configuration vanished on the second pass")?;
    let (backend, loopback_dir) = match backend {
        Backend::Soft => (SnpBackend::Soft(platform.clone()), None),
        Backend::Hw => {
            // The loopback kernel over this platform directory's soft firmware (the same
            // SNP platform object, so its chain is the one `sevm platform snp export` writes).
            let dir = tempfile::Builder::new()
                .prefix("sevm-loopback-")
                .tempdir()
                .context("creating the loopback's device directory")?;
            let lb = sev_firmware::hw::loopback::Loopback::open(legacy, dir.path())
                .context("creating the loopback's /dev/sev")?
                .try_with_snp(platform.clone())
                .context("SNP_INIT of the loopback's SNP platform")?;
            let lb = std::sync::Arc::new(lb);
            let sev = lb.sev_path().to_path_buf();
            let hw = vmm::confidential::snp_hw::HwSnpBackend::with_port(&sev, lb);
            (SnpBackend::Hw(hw), Some(dir))
        }
    };
    Ok(SnpSetup {
        cfg,
        platform,
        platform_dir,
        cbitpos,
        backend,
        _loopback_dir: loopback_dir,
    })
}

/// Parses `--report-data`: exactly 64 bytes as 128 hex digits.
fn report_data_arg(s: &str) -> Result<[u8; 64]> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let b = hex::decode(t).map_err(|e| {
        anyhow::anyhow!("--report-data: not hex ({e}); give 128 hex digits (64 bytes)")
    })?;
    b.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "--report-data: {} bytes given; REPORT_DATA is exactly 64 bytes (128 hex digits)",
            b.len()
        )
    })
}

/// The report a bundled SNP guest left at SNP_REPORT_OUT: `u32 status, u32 size`, 24 reserved
/// bytes, then `size` bytes of report (at most the rest of the page).
pub fn report_out_bytes(mem: &vmm::GuestMemoryMmap) -> Result<Vec<u8>> {
    use vm_memory::{Bytes, GuestAddress};
    let base = vmm::layout::SNP_REPORT_OUT;
    let mut page = vec![0u8; 4096];
    mem.read_slice(&mut page, GuestAddress(base))
        .context("reading the SNP_REPORT_OUT page")?;
    let status = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    let size = u32::from_le_bytes([page[4], page[5], page[6], page[7]]) as usize;
    if size == 0 {
        bail!(
            "--report-out: the guest left no report at {base:#x} (size 0, status {status:#x}): \
             did it request one?"
        );
    }
    if size > page.len() - 0x20 {
        bail!(
            "--report-out: the guest's report size {size} at {base:#x}+4 does not fit the page \
             (at most {} bytes)",
            page.len() - 0x20
        );
    }
    if status != 0 {
        eprintln!("sevm: the guest's MSG_REPORT_RSP status is {status:#x} (not success)");
    }
    Ok(page[0x20..0x20 + size].to_vec())
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

/// Exit status of a run ended by SIGTERM, SIGINT or SIGHUP: 0, as QEMU ("terminating on
/// signal N", exit 0). docs/OPERATOR.md section 3.
pub const SIGNAL_EXIT: u8 = 0;

const fn max_usize(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Length of the padded base64 of `n` bytes.
const fn b64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Longest file name a field of the owner's line may hold (Linux PATH_MAX).
const PATH_MAX: usize = 4096;
/// Largest secret payload: the EFI secret area.
const MAX_SECRET: usize = vmm::layout::SECRET_AREA_SIZE as usize;

/// Longest owner line on stdin (`--paused` without `--qmp`): `HEADER SECRET`, each the base64
/// of the 52-byte packet header and of at most the 16 KiB secret area, or a file name (at
/// most PATH_MAX), with room for separators. A longer line is refused without being read.
pub const MAX_OWNER_LINE: usize =
    max_usize(b64_len(PacketHeader::LEN), PATH_MAX) + max_usize(b64_len(MAX_SECRET), PATH_MAX) + 64;

fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// One field of the owner's line: an existing regular file of at most `limit` bytes (read
/// raw), or base64; its bytes must be exactly `limit` (`exact`) or 1..=`limit` long. Errors
/// name the field.
fn owner_field(
    name: &str,
    what: &str,
    value: &str,
    limit: usize,
    exact: bool,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let mut from_file = false;
    match std::fs::metadata(value) {
        Ok(m) if !m.is_file() => {
            return Err(format!(
                "{name}: '{value}' is {}, not a file or base64",
                file_kind(m.file_type())
            ))
        }
        Ok(m) if m.len() > limit as u64 => {
            return Err(format!(
                "{name}: file '{value}' is {} bytes; {what} is {}{limit} bytes",
                m.len(),
                if exact { "" } else { "at most " }
            ))
        }
        Ok(_) => from_file = true,
        Err(_) => {}
    }
    let bytes = path_or_b64(name, value).map_err(|e| e.to_string())?;
    let ok = if exact {
        bytes.len() == limit
    } else {
        (1..=limit).contains(&bytes.len())
    };
    if !ok {
        let src = if from_file {
            format!("file '{value}' holds")
        } else {
            let shown: String = value.chars().take(40).collect();
            let more = if shown.len() < value.len() { "..." } else { "" };
            format!("'{shown}{more}' (no such file) decodes as base64 to")
        };
        return Err(format!(
            "{name}: {src} {} bytes; {what} is {}{limit} bytes",
            bytes.len(),
            if exact { "exactly " } else { "1 to " }
        ));
    }
    Ok(bytes)
}

/// A secret packet from the owner: header and encrypted payload.
type OwnerSecret = (PacketHeader, zeroize::Zeroizing<Vec<u8>>);

/// The owner's line: empty (no secret) or `HEADER SECRET`.
fn owner_line(line: &[u8]) -> Result<Option<OwnerSecret>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8 text".to_string())?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    match parts[..] {
        [] => Ok(None),
        [h, c] => {
            let h = owner_field("HEADER", "a packet header", h, PacketHeader::LEN, true)?;
            let h = PacketHeader::from_bytes(&h).map_err(|e| format!("HEADER: {e}"))?;
            let c = owner_field("SECRET", "a secret payload", c, MAX_SECRET, false)?;
            Ok(Some((h, c)))
        }
        _ => Err(format!(
            "expected `HEADER SECRET` (two fields) or an empty line, got {} fields",
            parts.len()
        )),
    }
}

/// Owner interaction on stdin for `--paused`: for each launch, print the measurement and
/// read `HEADER SECRET` (or an empty line, or end of input: no secret). A refused line is
/// reported and another one read. The wait for the line is bounded by `deadline`
/// (`--timeout`) and ends when `life` stops; a line longer than [`MAX_OWNER_LINE`] stops the
/// run. Every way out releases the launch, after the VM was asked to quit.
fn paused_owner(handle: LaunchHandle, life: Arc<Lifecycle>, deadline: Option<Instant>) {
    let stop = |reason: StopReason| {
        life.stop(reason);
        handle.release();
    };
    let mut reader = match LineReader::stdin(MAX_OWNER_LINE) {
        Ok(r) => r,
        Err(e) => {
            return stop(StopReason::OwnerError(format!(
                "--paused: cannot read the owner's line on stdin: {e}"
            )))
        }
    };
    let mut launch = 1;
    loop {
        let m = loop {
            if life.stopping() {
                return handle.release();
            }
            let t0 = Instant::now();
            match handle.wait_measured(launch, POLL_SLICE) {
                Ok(m) => break m,
                // Back before the slice ended: the launch failed (the VM reports why).
                Err(_) if t0.elapsed() < POLL_SLICE / 2 => return,
                Err(_) => {}
            }
        };
        eprintln!(
            "sevm: launch {launch} measured: {} (paused; enter `HEADER SECRET` or an empty line)",
            encode_b64(&m)
        );
        loop {
            let refused = match reader.read_line(deadline, &life) {
                Ok(LineEvent::Line(l)) => match owner_line(&l) {
                    Ok(None) => break,
                    Ok(Some((h, c))) => match handle.inject_secret(&h, &c, None) {
                        Ok(()) => {
                            eprintln!("sevm: secret injected");
                            break;
                        }
                        Err(e) => format!("secret refused: {e}"),
                    },
                    Err(e) => format!("line refused: {e}"),
                },
                Ok(LineEvent::Eof) => break,
                Ok(LineEvent::Stopped) => return handle.release(),
                Ok(LineEvent::TimedOut) => return stop(StopReason::OwnerTimeout { launch }),
                Ok(LineEvent::TooLong) => {
                    return stop(StopReason::OwnerError(format!(
                        "--paused: the owner's line on stdin is longer than {MAX_OWNER_LINE} \
                         bytes (`HEADER SECRET`: each a file name or the base64 of a 52-byte \
                         header / of at most {MAX_SECRET} bytes); refused without reading it"
                    )))
                }
                Err(e) => {
                    return stop(StopReason::OwnerError(format!(
                        "--paused: reading the owner's line on stdin: {e}"
                    )))
                }
            };
            eprintln!(
                "sevm: {refused}; enter `HEADER SECRET` again, or an empty line to continue \
                 without a secret"
            );
        }
        handle.release();
        launch += 1;
    }
}

/// Runs `sevm run ...`.
pub fn run(a: RunArgs, _out: &Output) -> Result<ExitCode> {
    // From here on SIGTERM, SIGINT and SIGHUP stop the VM cleanly (docs/OPERATOR.md).
    let life = Arc::new(Lifecycle::default());
    let _signals = SignalWatch::install(life.clone())?;
    let r = resolve(&a.guest, &a.sev)?;
    let mut vm_cfg = r.vm;
    vm_cfg.serial = serial(&a.serial)?;
    vm_cfg.kvm_path = a.kvm_device.clone();
    let timeout = a.timeout.map(Duration::from_secs);
    vm_cfg.timeout = timeout;
    vm_cfg.on_reset = match a.on_reset {
        ResetArg::Relaunch => OnReset::Reboot,
        ResetArg::Shutdown => OnReset::Shutdown,
    };
    // QMP: `--paused` is QEMU's -S (the VM waits for `cont`), not the stdin owner.
    vm_cfg.start_paused = a.paused && a.qmp.is_some();
    let owner_stdin = a.paused && a.qmp.is_none();
    // A Linux guest (or a firmware) reads its console input from COM1, which sevm feeds from
    // its stdin unless the stdin owner (`--paused` without `--qmp`) uses it. The bundled
    // guests read no input, and their runs leave stdin alone.
    let serial_stdin = !owner_stdin && !matches!(vm_cfg.boot, vmm::BootSource::Bundled(_));
    let cpus = vm_cfg.cpus;
    let sev = r.sev.as_ref().map(|s| {
        let mut p = LaunchParams::from_config(&s.cfg, s.info.cbitpos);
        p.paused = owner_stdin;
        p.dump_dir = a.dump_launch.clone();
        p.on_reset = match a.on_reset {
            ResetArg::Relaunch => ResetMode::Relaunch,
            ResetArg::Shutdown => ResetMode::Shutdown,
        };
        s.spec(p)
    });
    if let Some(snp) = &r.snp {
        return run_snp(&a, snp, vm_cfg, life);
    }
    for (given, opt) in [
        (a.report_data.is_some(), "--report-data"),
        (a.report_out.is_some(), "--report-out"),
        (a.snp_certs.is_some(), "--snp-certs"),
        (a.guest_channel.is_some(), "--guest-channel"),
    ] {
        if given {
            bail!("{opt} needs an SEV-SNP guest (--object sev-snp-guest,... or a [sev-snp] table)");
        }
    }
    if sev.is_none() && (owner_stdin || a.dump_launch.is_some()) {
        bail!("--paused and --dump-launch need an SEV guest (--object sev-guest,..., --sev-config or a [sev] table)");
    }
    let Launched {
        mut vm,
        launch: handle,
        ..
    } = VmBuilder::new(vm_cfg).sev(sev).build()?;
    life.attach(vm.control());
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
        if !owner_stdin {
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
    // The owner thread holds a launch handle (and so the SEV context): it is joined below.
    let owner = match (&handle, owner_stdin) {
        (Some(h), true) => {
            let (h, life) = (h.clone(), life.clone());
            let deadline = timeout.and_then(deadline_after);
            Some(
                std::thread::Builder::new()
                    .name("owner-stdin".into())
                    .spawn(move || paused_owner(h, life, deadline))
                    .context("starting the stdin owner thread")?,
            )
        }
        _ => None,
    };
    if serial_stdin {
        vm.serial_input_from(std::io::stdin());
    }
    let status = vm.run();
    life.finish();
    if let Some(t) = owner {
        let _ = t.join();
    }
    // A VM that sevm asked to quit (not QMP `quit`) ended for the recorded reason.
    let reason = match &status {
        Ok(vmm::ExitStatus::Quit) => life.reason(),
        _ => None,
    };
    // QMP: the final SHUTDOWN event, then the socket goes.
    if let Some(q) = qmp {
        match &reason {
            Some(StopReason::Signal(_)) => q.finish_on_signal(),
            Some(StopReason::OwnerTimeout { .. }) => q.finish(Some(&vmm::ExitStatus::Timeout)),
            Some(StopReason::OwnerError(_)) => q.finish(None),
            None => q.finish(status.as_ref().ok()),
        }
    }
    // The SEV context ends with the run, whoever still holds a handle (a QMP client thread).
    if let Some(h) = &handle {
        h.end();
    }
    match reason {
        Some(StopReason::Signal(_)) => return Ok(ExitCode::from(SIGNAL_EXIT)),
        Some(StopReason::OwnerTimeout { launch }) => {
            eprintln!(
                "sevm: --timeout {} s elapsed while waiting for the owner's line on stdin \
                 (launch {launch}); the guest did not run",
                a.timeout.unwrap_or_default()
            );
            return Ok(ExitCode::from(
                u8::try_from(vmm::ExitStatus::Timeout.exit_code()).unwrap_or(1),
            ));
        }
        Some(StopReason::OwnerError(msg)) => bail!("{msg}"),
        None => {}
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

/// `sevm run` of an SEV-SNP guest (soft backend).
fn run_snp(
    a: &RunArgs,
    snp: &SnpSetup,
    vm_cfg: VmConfig,
    life: Arc<Lifecycle>,
) -> Result<ExitCode> {
    for (given, opt) in [
        (a.paused, "--paused"),
        (
            a.dump_launch.is_some(),
            "--dump-launch (use `sevm owner snp measure --vmm sevm --dump-launch`)",
        ),
    ] {
        if given {
            bail!("{opt} is not supported for SEV-SNP guests yet");
        }
    }
    let mut p = snp.params();
    p.report_data = a.report_data.as_deref().map(report_data_arg).transpose()?;
    p.cert_table = Some(snp.cert_table(a.snp_certs.as_deref())?);
    p.on_reset = match a.on_reset {
        ResetArg::Relaunch => ResetMode::Relaunch,
        ResetArg::Shutdown => ResetMode::Shutdown,
    };
    let cpus = vm_cfg.cpus;
    let Launched {
        mut vm,
        snp: handle,
        ..
    } = VmBuilder::new(vm_cfg).snp(Some(snp.spec(p))).build()?;
    let handle = handle.context("the SNP build returned no launch")?;
    // The command line wins over the file's `guest-channel`, as for `--platform-dir`.
    let _channel = match a.guest_channel.as_ref().or(snp.cfg.guest_channel.as_ref()) {
        Some(p) => Some(crate::guest_channel::start(
            p,
            crate::guest_channel::VmChannel::new(handle.clone(), vm.guest_memory().clone()),
        )?),
        None => None,
    };
    life.attach(vm.control());
    let qmp = match &a.qmp {
        Some(q) => Some(crate::qmp_backend::start_snp(
            q,
            &vm,
            snp,
            handle.clone(),
            cpus,
        )?),
        None => None,
    };
    let status = vm.run();
    life.finish();
    if let Some(q) = qmp {
        match life.reason() {
            Some(StopReason::Signal(_)) => q.finish_on_signal(),
            _ => q.finish(status.as_ref().ok()),
        }
    }
    if let Some(d) = handle.launch_digest() {
        eprintln!(
            "sevm: SEV-SNP guest policy {:#x}: measurement {}",
            snp.cfg.policy,
            hex::encode(d)
        );
    }
    let written = match (&status, &a.report_out) {
        (Ok(_), Some(path)) => {
            let bytes = report_out_bytes(vm.guest_memory())?;
            sevm_files::write_output(path, "--report-out", &bytes, sevm_files::MODE_PUBLIC)?;
            Some(bytes.len())
        }
        _ => None,
    };
    handle.end();
    if let (Some(n), Some(p)) = (written, &a.report_out) {
        eprintln!("sevm: wrote the guest's {n}-byte report to {}", p.display());
    }
    if let Some(StopReason::Signal(_)) = life.reason() {
        return Ok(ExitCode::from(SIGNAL_EXIT));
    }
    let status = status?;
    Ok(ExitCode::from(
        u8::try_from(status.exit_code()).unwrap_or(1),
    ))
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
            disks: vec![],
            nets: vec![],
            vsock: None,
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
            hw_loopback: false,
        }
    }

    #[test]
    fn resolve_refuses_cpu_counts_the_vm_refuses() {
        for bad in [0u8, 255] {
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

    #[test]
    fn report_out_takes_exactly_the_bytes_the_guest_left() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = vmm::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let base = vmm::layout::SNP_REPORT_OUT;
        let e = report_out_bytes(&mem).unwrap_err().to_string();
        assert!(e.contains("left no report"), "{e}");
        let report: Vec<u8> = (0..0x4A0u32).map(|i| (i * 7) as u8).collect();
        mem.write_obj(0u32, GuestAddress(base)).unwrap();
        mem.write_obj(0x4A0u32, GuestAddress(base + 4)).unwrap();
        mem.write_slice(&report, GuestAddress(base + 0x20)).unwrap();
        assert_eq!(report_out_bytes(&mem).unwrap(), report);
        mem.write_obj(4096u32 - 0x1F, GuestAddress(base + 4))
            .unwrap();
        let e = report_out_bytes(&mem).unwrap_err().to_string();
        assert!(e.contains("does not fit the page"), "{e}");
        assert!(report_data_arg(&"ab".repeat(64)).is_ok());
        assert!(report_data_arg(&"ab".repeat(63))
            .unwrap_err()
            .to_string()
            .contains("63 bytes"));
    }
}
