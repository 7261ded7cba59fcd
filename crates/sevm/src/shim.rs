//! `sevm shim [--platform-dir DIR] [--no-snp] [--guest PATH] -- PROGRAM ARGS...`: runs an
//! unmodified program whose `/dev/sev` is the soft firmware and, with `--guest`, whose
//! `/dev/sev-guest` is a running soft SNP VM's (`sevm run ... --guest-channel PATH`), through
//! a model of Linux's sev-guest driver (`sevm_shim_proto::guest_driver`). Without `--guest`,
//! opening `/dev/sev-guest` is ENOENT, as on a host.
//!
//! The program runs with `LD_PRELOAD` set to `libsevm_shim.so` (crates/shim), found next to
//! the sevm binary (`cargo build -p sevm -p sevm-shim` puts both in the same directory) or
//! named by `SEVM_SHIM_LIB`. The library connects each `open` of the devices to the server
//! started here on a Unix socket in a private temporary directory (`SEVM_SHIM_SOCKET`);
//! `/dev/sev` ioctls are answered by the loopback model of Linux's SEV driver
//! (`sev_firmware::hw::loopback`) over the platform directory, as `sevm platform` uses it.
//! sevm exits with the program's status (128 + signal if it was killed).

use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use sevm_shim_proto::guest_driver::SevGuestDriver;
use sevm_shim_proto::server::{open_loopback, GuestDriver, Server};

/// `sevm shim` arguments.
#[derive(Debug, Args)]
pub struct ShimArgs {
    /// Soft platform directory whose firmware answers `/dev/sev` (default: the one
    /// `sevm platform` uses).
    #[arg(long)]
    platform_dir: Option<PathBuf>,
    /// Serve only the legacy SEV commands: no SNP side behind `/dev/sev`.
    #[arg(long)]
    no_snp: bool,
    /// The guest channel of a running soft SNP VM (`sevm run ... --guest-channel PATH`):
    /// `/dev/sev-guest` requests go there, sealed with the guest's VMPCK0.
    #[arg(long, value_name = "PATH")]
    guest: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    program: Vec<String>,
}

/// The shim library: `SEVM_SHIM_LIB`, else `libsevm_shim.so` beside this executable.
fn shim_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SEVM_SHIM_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("SEVM_SHIM_LIB names {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the sevm executable")?;
    let dir = exe
        .parent()
        .context("the sevm executable has no parent directory")?;
    let lib = dir.join("libsevm_shim.so");
    if !lib.is_file() {
        bail!(
            "the shim library {} is missing: build it beside sevm with \
             `cargo build -p sevm -p sevm-shim` (or set SEVM_SHIM_LIB)",
            lib.display()
        );
    }
    Ok(lib)
}

/// Runs `sevm shim`.
pub fn run(a: ShimArgs) -> Result<ExitCode> {
    let lib = shim_library()?;
    let pdir = match a.platform_dir {
        Some(d) => d,
        None => crate::platform::default_platform_dir()?,
    };
    sevm_files::create_private_dir(&pdir, "platform directory")
        .with_context(|| format!("platform directory {}", pdir.display()))?;
    let run_dir = tempfile::Builder::new()
        .prefix("sevm-shim-")
        .tempdir()
        .context("creating the shim's private directory")?;
    let lb = open_loopback(&pdir, run_dir.path(), !a.no_snp).map_err(anyhow::Error::msg)?;
    // The /dev/sev-guest side: a running soft SNP VM's guest channel, or (absent) ENOENT as
    // on a host without the device.
    let guest: Option<Arc<dyn GuestDriver>> = match a.guest {
        Some(p) => {
            let is_socket = std::fs::metadata(&p)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if !is_socket {
                bail!(
                    "--guest {}: not a socket; start the VM first with \
                     `sevm run ... --guest-channel {}`",
                    p.display(),
                    p.display()
                );
            }
            Some(Arc::new(SevGuestDriver::unix(p)))
        }
        None => None,
    };
    let sock = run_dir.path().join("shim.sock");
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("listening on {}", sock.display()))?;
    let server = Arc::new(Server::new(lb, guest));
    std::thread::spawn(move || server.serve(listener));

    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = lib.clone().into_os_string();
            v.push(":");
            v.push(old);
            v
        }
        _ => lib.clone().into_os_string(),
    };
    let (prog, args) = a
        .program
        .split_first()
        .context("no program given after --")?;
    let status = Command::new(prog)
        .args(args)
        .env("LD_PRELOAD", preload)
        .env(sevm_shim_proto::ENV_SOCKET, &sock)
        .status()
        .with_context(|| format!("running {prog}"))?;
    drop(run_dir);
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
