//! `sevm platform`: manage the SEV platform, through the soft model of the AMD Secure
//! Processor (default) or Linux's `/dev/sev`, with `sevctl`'s verbs.
//!
//! The platform state (keys, certificates, ownership) of the soft backend lives in
//! `--platform-dir` (default: the user's data directory, `sevm/platform`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::output::Output;

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
        /// Output file.
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
        /// The owner's OCA private key (PEM).
        oca_key: PathBuf,
    },
    /// GET_ID: the chip's unique ID.
    Id,
    /// PLATFORM_RESET: wipe OCA, PEK, PDH and ownership (never the chip identity).
    Reset,
}

/// The default platform directory: `<data dir>/sevm/platform`.
pub fn default_platform_dir() -> Result<PathBuf> {
    let base = dirs::data_dir().context(
        "cannot find the user's data directory (set HOME or XDG_DATA_HOME, or pass --platform-dir)",
    )?;
    Ok(base.join("sevm").join("platform"))
}

/// Runs `sevm platform ...`.
pub fn run(a: PlatformArgs, _out: &Output) -> Result<ExitCode> {
    let dir = match &a.platform_dir {
        Some(d) => d.clone(),
        None => default_platform_dir()?,
    };
    bail!(
        "sevm platform {:?} (backend {:?}, dir {}): not available in this build yet",
        a.cmd,
        a.sev_backend,
        dir.display()
    )
}
