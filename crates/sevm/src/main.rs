//! `sevm`: a VMM on KVM whose first-class feature is AMD SEV.
//!
//! This binary is a thin shell over the library crates: every subcommand lives in its own
//! module (`owner`, `platform`; `run`, `demo` and `config` come later) and does its I/O here,
//! while the SEV formats and crypto come from `sev-proto` and the firmware from
//! `sev-firmware`. Errors are `anyhow` with context naming the file or argument at fault.

mod args;
mod config_check;
mod demo;
mod demo_snp;
mod digest;
mod guest_channel;
mod lifecycle;
mod output;
mod owner;
mod owner_snp;
mod platform;
mod platform_snp;
mod qmp_backend;
mod run;
mod sevm_recipe;
mod shim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sevm: SEV guest owner tools and a software model of the AMD Secure Processor.
#[derive(Debug, Parser)]
#[command(name = "sevm", version, about, propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The guest owner's side: verify chains, open sessions, measure, verify, build secrets.
    Owner(owner::OwnerArgs),
    /// Manage the SEV platform (soft model or /dev/sev): status, keys, certificates.
    Platform(platform::PlatformArgs),
    /// Boot a guest on KVM, under SEV when configured (docs/LAUNCH.md).
    Run(Box<run::RunArgs>),
    /// Validate VM and SEV configuration without launching.
    Config(config_check::ConfigArgs),
    /// The SEV story end to end on the soft platform (owner, launch, measurement, secret).
    Demo(demo::DemoArgs),
    /// Run an unmodified program (sevctl, snphost, snpguest) whose /dev/sev and
    /// /dev/sev-guest are the soft firmware, through an LD_PRELOAD library
    /// (docs/CI-WITHOUT-HARDWARE.md).
    Shim(shim::ShimArgs),
}

fn main() -> ExitCode {
    // Library errors (e.g. a failed firmware state write) are logged with `tracing`: show them
    // on stderr, filtered by RUST_LOG (default `warn`), without colours when not a terminal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Owner(a) => owner::run(a, &out),
        Command::Platform(a) => platform::run(a, &out),
        Command::Run(a) => run::run(*a, &out),
        Command::Config(a) => config_check::run(a, &out),
        Command::Demo(a) => demo::run(a, &out),
        Command::Shim(a) => shim::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::from(1)
        }
    }
}
