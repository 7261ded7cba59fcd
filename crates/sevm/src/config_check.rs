//! `sevm config check`: validate a VM / SEV configuration without launching; print the
//! effective configuration. Errors name the file, line and key (exit 1).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use vmm::builder::VmBuilder;
use vmm::confidential::LaunchParams;

use crate::output::Output;
use crate::run::{resolve, GuestArgs, SevArgs};

/// `sevm config` arguments.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate the options and files `sevm run` would use; print the effective config.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    guest: GuestArgs,
    #[command(flatten)]
    sev: SevArgs,
}

/// Runs `sevm config ...`.
pub fn run(a: ConfigArgs, out: &Output) -> Result<ExitCode> {
    let ConfigCmd::Check(c) = a.cmd;
    let r = resolve(&c.guest, &c.sev)?;
    if let Some(snp) = &r.snp {
        return check_snp(&r, snp, out);
    }
    if let vmm::BootSource::Bundled(n) = &r.vm.boot {
        if guests::get(n).is_none() {
            anyhow::bail!(
                "--guest {n}: unknown bundled guest (known: {})",
                guests::NAMES.join(", ")
            );
        }
    }
    // The dry run of `run`'s builder: the same VM and launch configuration, every check up
    // to (excluding) KVM and the firmware: the image files as `run` opens them, their
    // layout, the measurement recipe, RLIMIT_MEMLOCK on hw.
    let sev = r
        .sev
        .as_ref()
        .map(|s| s.spec(LaunchParams::from_config(&s.cfg, s.info.cbitpos)));
    let plan = VmBuilder::new(r.vm.clone()).sev(sev).check()?;
    let boot = format!("{:?}", r.vm.boot);
    let mut v = json!({
        "ok": true,
        "memory": r.vm.memory,
        "cpus": r.vm.cpus,
        "boot": boot,
        "sev": null,
    });
    let mut text = format!(
        "memory: {} MiB\ncpus: {}\nboot: {boot}\n",
        r.vm.memory >> 20,
        r.vm.cpus
    );
    match &r.sev {
        None => text.push_str("sev: off\n"),
        Some(s) => {
            let cfg = &s.cfg;
            let cbit = cfg.cbitpos.unwrap_or(s.info.cbitpos);
            v["sev"] = json!({
                "source": format!("{:?}", cfg.source),
                "policy": cfg.policy,
                "es": cfg.es(),
                "cbitpos": cbit,
                "reduced-phys-bits": cfg.reduced_phys_bits,
                "owner": cfg.owner.is_some(),
                "handle": cfg.handle,
                "kernel-hashes": cfg.kernel_hashes,
                "backend": s.backend.name(),
                "platform-dir": s.platform_dir.display().to_string(),
                "api": format!("{}.{}", s.info.api_major, s.info.api_minor),
                "build": s.info.build,
                "launch-digest": plan.expected_digest.map(hex::encode),
            });
            text.push_str(&format!(
                "sev: {}\n  source: {:?}\n  policy: {}\n  cbitpos: {cbit}\n  reduced-phys-bits: {}\n  owner certificate and session: {}\n  handle: {}\n  kernel-hashes: {}\n  backend: {:?} (API {}.{} build {}), platform dir {}\n",
                if cfg.es() { "SEV-ES" } else { "SEV" },
                cfg.source,
                sev_proto::policy::GuestPolicy(cfg.policy),
                cfg.reduced_phys_bits,
                if cfg.owner.is_some() { "yes" } else { "no (launch without owner)" },
                cfg.handle,
                if cfg.kernel_hashes { "on" } else { "off" },
                s.kind(),
                s.info.api_major,
                s.info.api_minor,
                s.info.build,
                s.platform_dir.display(),
            ));
            if let Some(d) = plan.expected_digest {
                text.push_str(&format!("  launch digest: {}\n", hex::encode(d)));
            }
        }
    }
    text.push_str("configuration OK");
    out.emit(&v, &text);
    Ok(ExitCode::SUCCESS)
}

/// `config check` of an SEV-SNP configuration: the builder's dry run and the launch digest
/// the soft firmware will compute.
fn check_snp(
    r: &crate::run::Resolved,
    snp: &crate::run::SnpSetup,
    out: &Output,
) -> Result<ExitCode> {
    let plan = VmBuilder::new(r.vm.clone())
        .snp(Some(snp.spec(snp.params())))
        .check()?;
    let cfg = &snp.cfg;
    if let Some(p) = &cfg.guest_channel {
        crate::guest_channel::check_path(p)?;
    }
    let channel = cfg.guest_channel.as_ref().map(|p| p.display().to_string());
    let boot = format!("{:?}", r.vm.boot);
    let digest = plan.expected_snp_digest.map(hex::encode);
    let v = json!({
        "ok": true,
        "memory": r.vm.memory,
        "cpus": r.vm.cpus,
        "boot": boot,
        "sev": null,
        "sev-snp": {
            "source": format!("{:?}", cfg.source),
            "policy": format!("{:#x}", cfg.policy),
            "id-block": cfg.id_block.is_some(),
            "author-key-enabled": cfg.author_key_enabled,
            "host-data": hex::encode(cfg.host_data),
            "vcek-disabled": cfg.vcek_disabled,
            "guest-visible-workarounds": hex::encode(cfg.guest_visible_workarounds),
            "kernel-hashes": cfg.kernel_hashes,
            "cbitpos": snp.cbitpos,
            "reduced-phys-bits": cfg.reduced_phys_bits,
            "backend": "soft",
            "platform-dir": snp.platform_dir.display().to_string(),
            "guest-channel": channel,
            "measurement": digest,
        },
    });
    let text = format!(
        "memory: {} MiB\ncpus: {}\nboot: {boot}\nsev-snp: on\n  source: {:?}\n  policy: {}\n  id-block: {}\n  author-key-enabled: {}\n  host-data: {}\n  vcek-disabled: {}\n  cbitpos: {}\n  reduced-phys-bits: {}\n  backend: soft, platform dir {}\n  guest-channel: {}\n  measurement: {}\nconfiguration OK",
        r.vm.memory >> 20,
        r.vm.cpus,
        cfg.source,
        sev_proto::snp::policy::SnpPolicy(cfg.policy),
        if cfg.id_block.is_some() { "yes" } else { "no" },
        if cfg.author_key_enabled { "on" } else { "off" },
        hex::encode(cfg.host_data),
        if cfg.vcek_disabled { "on" } else { "off" },
        snp.cbitpos,
        cfg.reduced_phys_bits,
        snp.platform_dir.display(),
        channel.as_deref().unwrap_or("-"),
        digest.as_deref().unwrap_or("-"),
    );
    out.emit(&v, &text);
    Ok(ExitCode::SUCCESS)
}
