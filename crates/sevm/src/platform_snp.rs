//! `sevm platform snp ...`: the SEV-SNP platform commands, with virtee `snphost`'s verbs where
//! they apply (`status`, `export`, `tcb`, `config set|reset`, `commit`), on the soft firmware
//! whose state lives in `--platform-dir` beside the legacy platform's.
//!
//! Each sevm process starts the soft firmware in UNINIT; the commands that a host issues with
//! SNP enabled (everything but `firmware-update`) first run SNP_INIT, as Linux does when the
//! ccp module loads with SNP on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sev_firmware::snp::ca::SoftCa;
use sev_firmware::snp::soft::{SnpConfig, SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::snp::{SnpPlatform, SnpPlatformStatus};
// `SnpPlatform` is also implemented by `HwPlatform` (snp_vlek_load over /dev/sev).
use sev_proto::snp::certs::{encode_cert_table, CertTableEntry, GUID_ARK, GUID_ASK, GUID_VCEK};
use sev_proto::snp::tcb::{TcbLayout, TcbVersion};

use crate::args::{parse_bits, parse_u64};
use crate::output::Output;
use crate::platform::Backend;

/// `sevm platform snp` arguments.
#[derive(Debug, Args)]
pub struct SnpArgs {
    #[command(subcommand)]
    cmd: SnpCmd,
}

#[derive(Debug, Subcommand)]
enum SnpCmd {
    /// SNP_PLATFORM_STATUS decoded: API, state, build, TCBs, guest count, flags.
    Status,
    /// Write the ARK, ASK and VCEK (for the reported TCB) as `snpguest` and AMD's KDS name
    /// them: ark.pem/ask.pem/vcek.pem and ark.der/ask.der/vcek.der, plus cert_chain.pem (ASK
    /// then ARK, as the KDS serves it) and certs.bin (the extended-report certificate table).
    Export {
        /// Output directory (created if absent).
        dir: PathBuf,
    },
    /// The current (installed), committed and reported TCB, decoded.
    Tcb,
    /// SNP_CONFIG: set or reset the reported TCB and the MASK_CHIP_ID / MASK_CHIP_KEY flags.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// SNP_COMMIT: the committed TCB becomes the installed firmware's (anti-rollback).
    Commit,
    /// SNP_VLEK_LOAD of a wrapped VLEK blob (0x1B0 bytes). On the soft backend the blob must
    /// be one `vlek-make` made for this platform at its reported TCB; reports are then signed
    /// by the VLEK and `export` writes its chain (asvk.*, vlek.*).
    VlekLoad {
        /// The wrapped blob.
        file: PathBuf,
    },
    /// Soft backend only: make a VLEK blob this platform accepts (random hash sticks wrapped
    /// under the platform's own key for the reported TCB; see docs/SNP-PLATFORM.md).
    VlekMake {
        /// Output file (written 0600).
        file: PathBuf,
    },
    /// Soft backend only: model installing a firmware with TCB `--tcb` (every component at
    /// least the committed TCB's); COMMIT makes it the committed one.
    FirmwareUpdate {
        /// The new firmware's TCB_VERSION (raw u64, decimal or 0x-hex).
        #[arg(long)]
        tcb: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Set the reported TCB (raw with --reported-tcb, or by component; components not given
    /// keep the committed TCB's values) and the mask flags (absent flags are cleared).
    Set {
        /// REPORTED_TCB as a raw TCB_VERSION (decimal or 0x-hex); conflicts with components.
        #[arg(long, conflicts_with_all = ["bootloader", "tee", "snp", "microcode"])]
        reported_tcb: Option<String>,
        /// Boot loader SPL of the reported TCB.
        #[arg(long)]
        bootloader: Option<String>,
        /// TEE SPL of the reported TCB.
        #[arg(long)]
        tee: Option<String>,
        /// SNP firmware SPL of the reported TCB.
        #[arg(long)]
        snp: Option<String>,
        /// Microcode SPL of the reported TCB.
        #[arg(long)]
        microcode: Option<String>,
        /// MASK_CHIP_ID: reports carry an all-zero CHIP_ID.
        #[arg(long)]
        mask_chip_id: bool,
        /// MASK_CHIP_KEY: reports are not signed with the VCEK.
        #[arg(long)]
        mask_chip_key: bool,
    },
    /// Reported TCB back to the committed TCB, both masks cleared.
    Reset,
}

/// The TCB layout of the soft platform (Milan-shaped).
const LAYOUT: TcbLayout = TcbLayout::MilanGenoa;

fn tcb_json(raw: u64) -> Value {
    match TcbVersion::decode(raw, LAYOUT) {
        Ok(t) => json!({
            "raw": format!("0x{raw:016x}"),
            "bootloader": t.bootloader,
            "tee": t.tee,
            "snp": t.snp,
            "microcode": t.microcode,
        }),
        Err(e) => json!({"raw": format!("0x{raw:016x}"), "error": e.to_string()}),
    }
}

fn tcb_text(raw: u64) -> String {
    match TcbVersion::decode(raw, LAYOUT) {
        Ok(t) => format!(
            "0x{raw:016x} (bootloader {}, tee {}, snp {}, microcode {})",
            t.bootloader, t.tee, t.snp, t.microcode
        ),
        Err(e) => format!("0x{raw:016x} ({e})"),
    }
}

fn status_json(s: &SnpPlatformStatus, backend: &str, committed: u64) -> Value {
    json!({
        "backend": backend,
        "api_major": s.api_major,
        "api_minor": s.api_minor,
        "state": format!("{:?}", s.state).to_uppercase(),
        "is_rmp_init": s.is_rmp_init,
        "build_id": s.build_id,
        "mask_chip_id": s.mask_chip_id,
        "mask_chip_key": s.mask_chip_key,
        "vlek_en": s.vlek_en,
        "feature_info": s.feature_info,
        "guest_count": s.guest_count,
        "current_tcb": tcb_json(s.current_tcb),
        "reported_tcb": tcb_json(s.reported_tcb),
        "committed_tcb": tcb_json(committed),
        "raw": hex::encode(s.to_bytes()),
    })
}

/// Opens the soft SNP platform in `dir` (created 0700 if absent).
fn open_soft(dir: &Path) -> Result<SoftSnpPlatform> {
    sevm_files::create_private_dir(dir, "platform directory")
        .with_context(|| format!("platform directory {}", dir.display()))?;
    SoftSnpPlatform::open(dir, SoftSnpConfig::default())
        .with_context(|| format!("opening the soft SNP platform in {}", dir.display()))
}

fn init(p: &SoftSnpPlatform) -> Result<()> {
    p.snp_init()
        .context("SNP_INIT (each sevm process starts the soft firmware in UNINIT)")
}

/// Parses the reported TCB of `config set`.
fn reported_tcb(
    committed: u64,
    raw: Option<&str>,
    parts: [(&str, Option<&str>); 4],
) -> Result<u64> {
    if let Some(r) = raw {
        let v = parse_u64("--reported-tcb", r)?;
        TcbVersion::decode(v, LAYOUT).context("--reported-tcb")?;
        return Ok(v);
    }
    let mut t = TcbVersion::decode(committed, LAYOUT).context("the committed TCB")?;
    let [bl, tee, snp, uc] = parts;
    let get = |(name, v): (&str, Option<&str>), cur: u8| -> Result<u8> {
        match v {
            // Fits in 8 bits, so the cast is exact.
            Some(s) => Ok(parse_bits(name, s, 8)? as u8),
            None => Ok(cur),
        }
    };
    t.bootloader = get(bl, t.bootloader)?;
    t.tee = get(tee, t.tee)?;
    t.snp = get(snp, t.snp)?;
    t.microcode = get(uc, t.microcode)?;
    Ok(t.encode(LAYOUT)?)
}

/// `config set|reset` as (REPORTED_TCB, flags, "set"/"reset"); components not given keep
/// `base`'s values (the committed TCB on the soft backend, the reported one over /dev/sev).
fn config_request(cmd: ConfigCmd, base: u64) -> Result<(u64, u32, &'static str)> {
    match cmd {
        ConfigCmd::Set {
            reported_tcb: raw,
            bootloader,
            tee,
            snp,
            microcode,
            mask_chip_id,
            mask_chip_key,
        } => {
            let any_part =
                bootloader.is_some() || tee.is_some() || snp.is_some() || microcode.is_some();
            let tcb = if raw.is_none() && !any_part {
                0
            } else {
                reported_tcb(
                    base,
                    raw.as_deref(),
                    [
                        ("--bootloader", bootloader.as_deref()),
                        ("--tee", tee.as_deref()),
                        ("--snp", snp.as_deref()),
                        ("--microcode", microcode.as_deref()),
                    ],
                )?
            };
            Ok((
                tcb,
                u32::from(mask_chip_id) | u32::from(mask_chip_key) << 1,
                "set",
            ))
        }
        ConfigCmd::Reset => Ok((0, 0, "reset")),
    }
}

/// Prints the platform's configuration after SNP_CONFIG.
fn emit_config(out: &Output, s: &SnpPlatformStatus, what: &str) {
    out.emit(
        &json!({
            "ok": true,
            "command": "SNP_CONFIG",
            "config": what,
            "reported_tcb": tcb_json(s.reported_tcb),
            "mask_chip_id": s.mask_chip_id,
            "mask_chip_key": s.mask_chip_key,
        }),
        &format!(
            "SNP_CONFIG: reported TCB {}, mask chip id {}, mask chip key {}",
            tcb_text(s.reported_tcb),
            s.mask_chip_id,
            s.mask_chip_key
        ),
    );
}

/// `sevm platform snp ... --sev-backend hw`: the same verbs over `/dev/sev`'s SNP commands
/// (SNP_PLATFORM_STATUS, SNP_SET_CONFIG, SNP_COMMIT; Linux 6.11+). The kernel has SNP
/// initialised already. The committed TCB is not in SNP_PLATFORM_STATUS, so `config set` by
/// component starts from the reported TCB; the chain of a real platform comes from AMD's KDS,
/// not from the firmware, so `export` is refused.
fn run_hw(a: SnpArgs, out: &Output) -> Result<ExitCode> {
    let dev = std::path::Path::new(sev_firmware::hw::SEV_DEVICE);
    let p = sev_firmware::hw::HwPlatform::open_path(dev)
        .with_context(|| format!("opening {} (--sev-backend hw)", dev.display()))?;
    let backend = format!("hw ({})", dev.display());
    let status = |p: &sev_firmware::hw::HwPlatform| {
        p.snp_platform_status()
            .context("SNP_PLATFORM_STATUS through /dev/sev")
    };
    match a.cmd {
        SnpCmd::Status | SnpCmd::Tcb => {
            let s = status(&p)?;
            let mut j = status_json(&s, &backend, 0);
            if let Some(m) = j.as_object_mut() {
                m.remove("committed_tcb");
            }
            out.emit(
                &j,
                &format!(
                    "backend:       {backend}\napi version:   {}.{}\nbuild:         {}\nstate:         {}\nguests:        {}\nmask chip id:  {}\nmask chip key: {}\nVLEK:          {}\ncurrent TCB:   {}\nreported TCB:  {}",
                    s.api_major,
                    s.api_minor,
                    s.build_id,
                    format!("{:?}", s.state).to_uppercase(),
                    s.guest_count,
                    s.mask_chip_id,
                    s.mask_chip_key,
                    s.vlek_en,
                    tcb_text(s.current_tcb),
                    tcb_text(s.reported_tcb),
                ),
            );
        }
        SnpCmd::Config { cmd } => {
            let base = status(&p)?.reported_tcb;
            let (tcb, flags, what) = config_request(cmd, base)?;
            p.snp_set_config(tcb, flags)
                .with_context(|| format!("SNP_SET_CONFIG (reported TCB 0x{tcb:016x})"))?;
            emit_config(out, &status(&p)?, what);
        }
        SnpCmd::Commit => {
            p.snp_commit().context("SNP_COMMIT through /dev/sev")?;
            out.emit(
                &json!({"ok": true, "command": "SNP_COMMIT"}),
                "SNP_COMMIT: done",
            );
        }
        SnpCmd::VlekLoad { file } => {
            let blob = read_vlek(&file)?;
            p.snp_vlek_load(&blob)
                .with_context(|| format!("SNP_VLEK_LOAD of {} through /dev/sev", file.display()))?;
            out.emit(
                &json!({"ok": true, "command": "SNP_VLEK_LOAD", "file": file.display().to_string()}),
                &format!("SNP_VLEK_LOAD: loaded {}", file.display()),
            );
        }
        SnpCmd::VlekMake { .. } => bail!(
            "sevm platform snp vlek-make: soft backend only (a real VLEK is wrapped by AMD's \
             KDS for the chip)"
        ),
        SnpCmd::Export { .. } => bail!(
            "sevm platform snp export --sev-backend hw: a real platform's ARK, ASK and VCEK come \
             from AMD's KDS (e.g. `snpguest fetch ca` / `snpguest fetch vcek`), not from the \
             firmware"
        ),
        SnpCmd::FirmwareUpdate { .. } => bail!(
            "sevm platform snp firmware-update: soft backend only (a real firmware is installed \
             by the host's ccp driver)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a wrapped VLEK blob file (at most 4 KiB; the firmware checks its size and fields).
fn read_vlek(file: &Path) -> Result<Vec<u8>> {
    let b = sevm_files::read_bounded(file, "VLEK blob", 4096)
        .with_context(|| format!("reading the VLEK blob {}", file.display()))?;
    Ok(b.to_vec())
}

/// The cspID the soft VLEK certificate carries.
const SOFT_CSP_ID: &str = "sevm-soft-csp";

/// Runs `sevm platform snp ...`.
pub fn run(
    a: SnpArgs,
    platform_dir: Option<PathBuf>,
    backend: Backend,
    out: &Output,
) -> Result<ExitCode> {
    if backend == Backend::Hw {
        return run_hw(a, out);
    }
    let dir = match platform_dir {
        Some(d) => d,
        None => crate::platform::default_platform_dir()?,
    };
    let p = open_soft(&dir)?;
    let backend = format!("soft ({})", dir.display());
    match a.cmd {
        SnpCmd::Status => {
            init(&p)?;
            let s = p.snp_platform_status().context("SNP_PLATFORM_STATUS")?;
            let committed = p.committed_tcb();
            out.emit(
                &status_json(&s, &backend, committed),
                &format!(
                    "backend:       {backend}\napi version:   {}.{}\nbuild:         {}\nstate:         {}\nRMP init:      {}\nguests:        {}\nmask chip id:  {}\nmask chip key: {}\nVLEK:          {}\ncurrent TCB:   {}\nreported TCB:  {}\ncommitted TCB: {}",
                    s.api_major,
                    s.api_minor,
                    s.build_id,
                    format!("{:?}", s.state).to_uppercase(),
                    s.is_rmp_init,
                    s.guest_count,
                    s.mask_chip_id,
                    s.mask_chip_key,
                    s.vlek_en,
                    tcb_text(s.current_tcb),
                    tcb_text(s.reported_tcb),
                    tcb_text(committed),
                ),
            );
        }
        SnpCmd::Tcb => {
            init(&p)?;
            let s = p.snp_platform_status().context("SNP_PLATFORM_STATUS")?;
            let committed = p.committed_tcb();
            out.emit(
                &json!({
                    "current_tcb": tcb_json(s.current_tcb),
                    "reported_tcb": tcb_json(s.reported_tcb),
                    "committed_tcb": tcb_json(committed),
                }),
                &format!(
                    "current:   {}\nreported:  {}\ncommitted: {}",
                    tcb_text(s.current_tcb),
                    tcb_text(s.reported_tcb),
                    tcb_text(committed)
                ),
            );
        }
        SnpCmd::Export { dir: outdir } => {
            init(&p)?;
            let ca = SoftCa::load_or_create(&dir)
                .with_context(|| format!("the soft ARK/ASK in {}", dir.display()))?;
            let reported = p.reported_tcb();
            let vcek = p
                .vcek_cert(&ca, reported)
                .context("making the VCEK certificate for the reported TCB")?;
            let ders = [
                ("ark", ca.ark.to_der()?, GUID_ARK),
                ("ask", ca.ask.to_der()?, GUID_ASK),
                ("vcek", vcek.to_der()?, GUID_VCEK),
            ];
            std::fs::create_dir_all(&outdir)
                .with_context(|| format!("export: creating {}", outdir.display()))?;
            let mut files = Vec::new();
            let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
                let path = outdir.join(name);
                sevm_files::write_output(&path, "export", bytes, sevm_files::MODE_PUBLIC)?;
                files.push(name.to_string());
                Ok(())
            };
            for (name, der, _) in &ders {
                write(&format!("{name}.der"), der)?;
                let pem = openssl::x509::X509::from_der(der)?.to_pem()?;
                write(&format!("{name}.pem"), &pem)?;
            }
            let chain = [ca.ask.to_pem()?, ca.ark.to_pem()?].concat();
            write("cert_chain.pem", &chain)?;
            // With a VLEK loaded: its chain as the KDS names it (ASVK, VLEK).
            let mut vlek_tcb = None;
            if let Some((key, tcb)) = p.vlek_public_key().context("the loaded VLEK")? {
                let asvk = ca
                    .asvk_load_or_create(&dir)
                    .with_context(|| format!("the soft ASVK in {}", dir.display()))?;
                let vlek = asvk
                    .vlek_cert(&key, tcb, SOFT_CSP_ID)
                    .context("making the VLEK certificate")?;
                for (name, c) in [("asvk", &asvk.cert), ("vlek", &vlek)] {
                    write(&format!("{name}.der"), &c.to_der()?)?;
                    write(&format!("{name}.pem"), &c.to_pem()?)?;
                }
                vlek_tcb = Some(tcb);
            }
            let table = encode_cert_table(
                &ders
                    .iter()
                    .map(|(_, der, guid)| CertTableEntry {
                        guid: *guid,
                        data: der.clone(),
                    })
                    .collect::<Vec<_>>(),
            )
            .context("encoding the certificate table")?;
            write("certs.bin", &table)?;
            out.emit(
                &json!({
                    "ok": true,
                    "dir": outdir.display().to_string(),
                    "files": files,
                    "reported_tcb": tcb_json(reported),
                    "vlek_tcb": vlek_tcb.map(tcb_json),
                }),
                &format!(
                    "wrote {} to {} (VCEK for reported TCB {})",
                    files.join(", "),
                    outdir.display(),
                    tcb_text(reported)
                ),
            );
        }
        SnpCmd::Config { cmd } => {
            init(&p)?;
            let (tcb, flags, what) = config_request(cmd, p.committed_tcb())?;
            let cfg = SnpConfig {
                reported_tcb: tcb,
                flags,
            };
            p.snp_config(&cfg).with_context(|| {
                format!(
                    "SNP_CONFIG (reported TCB 0x{:016x}; every component must be at most the \
                     committed TCB's, {})",
                    cfg.reported_tcb,
                    tcb_text(p.committed_tcb())
                )
            })?;
            let s = p.snp_platform_status().context("SNP_PLATFORM_STATUS")?;
            emit_config(out, &s, what);
        }
        SnpCmd::Commit => {
            init(&p)?;
            p.snp_commit().context("SNP_COMMIT")?;
            let c = p.committed_tcb();
            out.emit(
                &json!({"ok": true, "command": "SNP_COMMIT", "committed_tcb": tcb_json(c)}),
                &format!("SNP_COMMIT: committed TCB {}", tcb_text(c)),
            );
        }
        SnpCmd::VlekLoad { file } => {
            init(&p)?;
            let blob = read_vlek(&file)?;
            p.vlek_load(&blob)
                .with_context(|| format!("SNP_VLEK_LOAD of {}", file.display()))?;
            out.emit(
                &json!({
                    "ok": true,
                    "command": "SNP_VLEK_LOAD",
                    "file": file.display().to_string(),
                    "vlek_tcb": tcb_json(p.reported_tcb()),
                }),
                &format!(
                    "SNP_VLEK_LOAD: loaded {} (VLEK for TCB {}); reports are now signed by it",
                    file.display(),
                    tcb_text(p.reported_tcb())
                ),
            );
        }
        SnpCmd::VlekMake { file } => {
            init(&p)?;
            let blob = p.vlek_make().context("making a VLEK blob")?;
            sevm_files::write_output(&file, "VLEK blob", &blob, sevm_files::MODE_PRIVATE)
                .with_context(|| format!("writing {}", file.display()))?;
            out.emit(
                &json!({
                    "ok": true,
                    "command": "vlek-make",
                    "file": file.display().to_string(),
                    "tcb": tcb_json(p.reported_tcb()),
                }),
                &format!(
                    "wrote a VLEK blob for this platform at TCB {} to {}",
                    tcb_text(p.reported_tcb()),
                    file.display()
                ),
            );
        }
        SnpCmd::FirmwareUpdate { tcb } => {
            let t = parse_u64("--tcb", &tcb)?;
            TcbVersion::decode(t, LAYOUT).context("--tcb")?;
            p.download_firmware(t).with_context(|| {
                format!(
                    "installing firmware TCB {} (every component must be at least the \
                     committed TCB's, {})",
                    tcb_text(t),
                    tcb_text(p.committed_tcb())
                )
            })?;
            out.emit(
                &json!({"ok": true, "command": "firmware-update", "current_tcb": tcb_json(t)}),
                &format!(
                    "installed soft firmware with TCB {} (run `commit` to commit it)",
                    tcb_text(t)
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
