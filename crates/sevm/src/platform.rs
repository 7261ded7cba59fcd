//! `sevm platform`: manage the SEV platform, through the soft model of the AMD Secure
//! Processor (default) or Linux's `/dev/sev`, with `sevctl`'s verbs.
//!
//! The platform state (keys, certificates, ownership) of the soft backend lives in
//! `--platform-dir` (default: the user's data directory, `sevm/platform`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::SevPlatform;
use sev_proto::cert::{SevCert, Usage};

use crate::output::Output;
use crate::owner::write_path;

/// Which SEV firmware to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Backend {
    /// The software model of the AMD-SP (state in --platform-dir).
    #[default]
    Soft,
    /// The real firmware through /dev/sev.
    Hw,
}

/// `sevm platform` arguments.
#[derive(Debug, Args)]
pub struct PlatformArgs {
    /// Directory holding the soft platform's state.
    #[arg(long, global = true)]
    platform_dir: Option<PathBuf>,
    /// SEV firmware backend.
    #[arg(long, value_enum, global = true, default_value_t = Backend::Soft)]
    sev_backend: Backend,
    #[command(subcommand)]
    cmd: PlatformCmd,
}

#[derive(Debug, Subcommand)]
enum PlatformCmd {
    /// PLATFORM_STATUS: API version, build, state, owner, flags, guest count.
    Status,
    /// Export the SEV chain (PDH, PEK, OCA, CEK), with --full also ASK, ARK; with --ca only ASK, ARK.
    Export {
        /// Also append the CA chain (ASK, ARK).
        #[arg(long, conflicts_with = "ca")]
        full: bool,
        /// Export only the CA chain (ASK, ARK).
        #[arg(long)]
        ca: bool,
        /// Output file (`-` for standard output; pipes and `/dev/stdout` work too).
        file: PathBuf,
    },
    /// PDH_GEN: make a new PDH.
    PdhGen,
    /// PEK_GEN: make a new PEK (and PDH); the OCA becomes self-owned again.
    PekGen,
    /// PEK_CSR: write the PEK's certificate signing request.
    PekCsr {
        /// Output file.
        file: PathBuf,
    },
    /// PEK_CERT_IMPORT: import an OCA-signed PEK and the OCA certificate.
    PekCertImport {
        /// The PEK certificate signed by the OCA.
        pek_cert: PathBuf,
        /// The OCA certificate.
        oca_cert: PathBuf,
    },
    /// Take ownership: PEK_CSR, sign with the OCA key, PEK_CERT_IMPORT (as `sevctl provision`).
    Provision {
        /// The owner's OCA certificate (SEV format).
        oca_cert: PathBuf,
        /// The owner's OCA private key (PEM or DER, as `sevctl generate` writes it).
        oca_key: PathBuf,
    },
    /// GET_ID: the chip's unique ID.
    Id,
    /// PLATFORM_RESET: wipe OCA, PEK, PDH and ownership (never the chip identity).
    Reset,
    /// SEV-SNP platform commands: status, export, tcb, config set|reset, commit.
    Snp(crate::platform_snp::SnpArgs),
}

/// The default platform directory: `<data dir>/sevm/platform`.
pub fn default_platform_dir() -> Result<PathBuf> {
    let base = dirs::data_dir().context(
        "cannot find the user's data directory (set HOME or XDG_DATA_HOME, or pass --platform-dir)",
    )?;
    Ok(base.join("sevm").join("platform"))
}

/// Largest certificate or key file read (a SEV certificate is 2084 bytes, a PEM EC key
/// under 1 KiB).
const MAX_CERT_OR_KEY_FILE: u64 = 64 << 10;

/// Reads a SEV certificate file (2084 bytes), naming the argument and file on error.
fn read_sev_cert(arg: &str, path: &Path) -> Result<SevCert> {
    let b = sevm_files::Limit::new(arg, MAX_CERT_OR_KEY_FILE)
        .why("a SEV certificate is 2084 bytes")
        .read(path)?;
    SevCert::parse(&b)
        .with_context(|| format!("{arg}: {} is not a SEV certificate", path.display()))
}

/// Parses an EC private key in PEM or DER (SEC1 as `sevctl generate` writes, or PKCS#8).
fn load_ec_private_key(b: &[u8]) -> Result<openssl::ec::EcKey<openssl::pkey::Private>> {
    use openssl::ec::EcKey;
    use openssl::pkey::PKey;
    EcKey::private_key_from_pem(b)
        .or_else(|_| EcKey::private_key_from_der(b))
        .or_else(|_| PKey::private_key_from_pem(b).and_then(|k| k.ec_key()))
        .or_else(|_| PKey::private_key_from_der(b).and_then(|k| k.ec_key()))
        .map_err(anyhow::Error::from)
}

/// The commands that need a platform without guests: explain INVALID_PLATFORM_STATE, which
/// the user sees when a VM is running (in this or another sevm process on the same platform).
fn busy(e: sev_firmware::FwError) -> anyhow::Error {
    if e.status() == Some(sev_firmware::Status::InvalidPlatformState) {
        anyhow::Error::new(e).context(
            "the platform has live SEV guests (a running `sevm run` on this platform \
             directory or SEV host); stop them first",
        )
    } else {
        anyhow::Error::new(e)
    }
}

/// Opens the selected backend.
fn open(a: &PlatformArgs) -> Result<(Box<dyn SevPlatform>, Option<SoftPlatform>, String)> {
    match a.sev_backend {
        Backend::Soft => {
            let dir = match &a.platform_dir {
                Some(d) => d.clone(),
                None => default_platform_dir()?,
            };
            // Created 0700 (and checked: a directory others can write is refused) by the store.
            let p = SoftPlatform::open(&dir)
                .with_context(|| format!("opening the soft platform in {}", dir.display()))?;
            Ok((
                Box::new(p.clone()),
                Some(p),
                format!("soft ({})", dir.display()),
            ))
        }
        Backend::Hw => {
            let p = sev_firmware::hw::HwPlatform::open()
                .context("opening /dev/sev (--sev-backend hw)")?;
            Ok((Box::new(p), None, "hw (/dev/sev)".to_string()))
        }
    }
}

/// Runs `sevm platform ...`.
pub fn run(a: PlatformArgs, out: &Output) -> Result<ExitCode> {
    if let PlatformCmd::Snp(s) = a.cmd {
        return crate::platform_snp::run(s, a.platform_dir, a.sev_backend, out);
    }
    let (p, soft, backend) = open(&a)?;
    match &a.cmd {
        PlatformCmd::Status => {
            if let Some(sp) = &soft {
                // Each sevm process starts the soft firmware in UNINIT, where PLATFORM_STATUS
                // reports no owner and no ES. Show it as a host sees it: Linux INITs the
                // firmware (with SEV-ES) when the ccp module loads.
                sp.with_fw(|fw| fw.init(true))
                    .map_err(|st| anyhow::anyhow!("INIT failed: {st}"))
                    .context("initialising the soft platform for PLATFORM_STATUS")?;
            }
            let s = p.platform_status().context("PLATFORM_STATUS")?;
            let cbit = p.cbit_pos().context("C-bit position")?;
            let owner = if s.owner_external {
                "external"
            } else {
                "self-owned"
            };
            out.emit(
                &json!({
                    "backend": backend,
                    "api_major": s.api_major,
                    "api_minor": s.api_minor,
                    "build": s.build,
                    "state": format!("{:?}", s.state),
                    "owner": owner,
                    "owner_external": s.owner_external,
                    "config_es": s.config_es,
                    "guest_count": s.guest_count,
                    "cbit_pos": cbit,
                }),
                &format!(
                    "backend:     {backend}\napi version: {}.{}\nbuild:       {}\nstate:       {:?}\nowner:       {owner}\nSEV-ES:      {}\nguests:      {}\nC-bit:       {cbit}",
                    s.api_major, s.api_minor, s.build, s.state, s.config_es, s.guest_count
                ),
            );
        }
        PlatformCmd::Export { full, ca, file } => {
            let (bytes, what) = match &soft {
                Some(sp) => {
                    let c = sp
                        .export_chain()
                        .context("exporting the certificate chain")?;
                    if *ca {
                        ([c.ask.clone(), c.ark.clone()].concat(), "ASK, ARK")
                    } else if *full {
                        (c.to_bytes(), "PDH, PEK, OCA, CEK, ASK, ARK")
                    } else {
                        (
                            [c.pdh.clone(), c.pek.clone(), c.oca.clone(), c.cek.clone()].concat(),
                            "PDH, PEK, OCA, CEK",
                        )
                    }
                }
                None => {
                    if *ca || *full {
                        bail!("export --full/--ca on the hw backend needs AMD's ASK/ARK: fetch them from AMD's KDS (`sevctl export --full`)");
                    }
                    let e = p.pdh_cert_export().context("PDH_CERT_EXPORT")?;
                    (
                        [e.pdh.encode(), e.chain_bytes()].concat(),
                        "PDH, PEK, OCA, CEK",
                    )
                }
            };
            let o = write_path(file, "export", &bytes, false)?;
            out.emit_aside(
                o.is_stdout(),
                &json!({"ok": true, "file": file.display().to_string(), "certificates": what, "len": bytes.len()}),
                &format!("wrote {what} ({} bytes) to {}", bytes.len(), file.display()),
            );
        }
        PlatformCmd::PdhGen => {
            p.pdh_gen().context("PDH_GEN")?;
            out.emit(
                &json!({"ok": true, "command": "PDH_GEN"}),
                "PDH_GEN: new PDH",
            );
        }
        PlatformCmd::PekGen => {
            p.pek_gen().map_err(busy).context("PEK_GEN")?;
            out.emit(
                &json!({"ok": true, "command": "PEK_GEN"}),
                "PEK_GEN: new PEK and PDH (self-owned)",
            );
        }
        PlatformCmd::PekCsr { file } => {
            let csr = p.pek_csr().context("PEK_CSR")?.encode();
            let o = write_path(file, "pek-csr", &csr, false)?;
            out.emit_aside(
                o.is_stdout(),
                &json!({"ok": true, "file": file.display().to_string()}),
                &format!("wrote the PEK CSR to {}", file.display()),
            );
        }
        PlatformCmd::PekCertImport { pek_cert, oca_cert } => {
            let pek = read_sev_cert("PEK_CERT", pek_cert)?;
            let oca = read_sev_cert("OCA_CERT", oca_cert)?;
            p.pek_cert_import(&pek, &oca)
                .map_err(busy)
                .context("PEK_CERT_IMPORT")?;
            out.emit(
                &json!({"ok": true, "command": "PEK_CERT_IMPORT"}),
                "PEK_CERT_IMPORT: platform is now externally owned",
            );
        }
        PlatformCmd::Provision { oca_cert, oca_key } => {
            let oca = read_sev_cert("OCA_CERT", oca_cert)?;
            let pem = zeroize::Zeroizing::new(
                sevm_files::Limit::new("OCA_KEY", MAX_CERT_OR_KEY_FILE)
                    .why("an EC private key in PEM or DER is under 1 KiB")
                    .read(oca_key)?,
            );
            let key = load_ec_private_key(&pem).with_context(|| {
                format!(
                    "OCA_KEY: {} is not an EC private key (PEM or DER, SEC1 or PKCS#8)",
                    oca_key.display()
                )
            })?;
            let cert_pub = oca.ec_public_key().with_context(|| {
                format!("OCA_CERT: {} has no EC public key", oca_cert.display())
            })?;
            let mut ctx = openssl::bn::BigNumContext::new()?;
            let same = key
                .public_key()
                .eq(key.group(), cert_pub.public_key(), &mut ctx)
                .unwrap_or(false);
            if !same {
                bail!(
                    "OCA_KEY: {} does not match the public key of OCA_CERT {}",
                    oca_key.display(),
                    oca_cert.display()
                );
            }
            let mut pek = p.pek_csr().context("PEK_CSR")?;
            pek.sign_with(&key, Usage::OCA)
                .context("signing the PEK with the OCA key")?;
            p.pek_cert_import(&pek, &oca).context("PEK_CERT_IMPORT")?;
            out.emit(
                &json!({"ok": true, "command": "provision"}),
                "provisioned: PEK signed by the OCA and imported; platform is externally owned",
            );
        }
        PlatformCmd::Id => {
            let id = hex::encode(p.get_id().context("GET_ID")?);
            out.emit(&json!({"id": id}), &id);
        }
        // Dispatched before the legacy platform is opened.
        PlatformCmd::Snp(_) => {
            bail!("internal error: `platform snp` reached the legacy dispatcher")
        }
        PlatformCmd::Reset => {
            p.factory_reset().map_err(busy).context("PLATFORM_RESET")?;
            out.emit(
                &json!({"ok": true, "command": "PLATFORM_RESET"}),
                "PLATFORM_RESET: OCA, PEK, PDH and ownership wiped",
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
