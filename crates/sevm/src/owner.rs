//! `sevm owner`: the guest owner's side of an SEV launch, with sevctl's argument names.
//!
//! - `verify-chain`: check a platform's certificate chain up to AMD's (or a given) root;
//! - `session`: open a launch session with the platform's PDH (files as `sevctl session`);
//! - `measure`: the expected launch digest, or the measurement blob (as `sevctl measurement build`);
//! - `verify`: check a LAUNCH_MEASURE blob against the expected digest;
//! - `secret`: build a LAUNCH_SECRET packet (as `sevctl secret build`).
//!
//! All crypto and byte formats come from `sev-proto`; this module only does I/O and reporting.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::args::{self, SecretSpec};
use crate::digest::{self, Images};
use crate::output::Output;

use sev_proto::cert::chain::{self, builtin_ark_ask, CaChain, Generation, LinkCheck, SevChain};
use sev_proto::cert::{CaCert, SevCert};
use sev_proto::policy::GuestPolicy;

/// `sevm owner` arguments.
#[derive(Debug, Args)]
pub struct OwnerArgs {
    #[command(subcommand)]
    cmd: OwnerCmd,
}

#[derive(Debug, Subcommand)]
enum OwnerCmd {
    /// Verify a SEV chain (PDH, PEK, OCA, CEK) or full chain (+ ASK, ARK) up to the AMD root.
    VerifyChain(VerifyChainArgs),
    /// Open a launch session with the platform's PDH: writes NAME_godh.b64, NAME_session.b64,
    /// NAME_tek.bin, NAME_tik.bin as `sevctl session` does.
    Session(SessionArgs),
    /// Print the expected launch digest (hex), or with --tik etc. the measurement blob (base64).
    Measure(MeasureArgs),
    /// Check a LAUNCH_MEASURE blob against the expected launch digest; exit 0 only on a match.
    Verify(VerifyArgs),
    /// Build a LAUNCH_SECRET packet header and payload, as `sevctl secret build`.
    Secret(SecretArgs),
    /// SEV-SNP: expected launch digest, ID block, attestation report verification and display.
    Snp(crate::owner_snp::SnpArgs),
}

/// AMD CPU generations with a built-in root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenArg {
    /// EPYC 7001.
    Naples,
    /// EPYC 7002.
    Rome,
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl GenArg {
    const ALL: [GenArg; 5] = [
        GenArg::Naples,
        GenArg::Rome,
        GenArg::Milan,
        GenArg::Genoa,
        GenArg::Turin,
    ];

    fn generation(self) -> Generation {
        match self {
            GenArg::Naples => Generation::Naples,
            GenArg::Rome => Generation::Rome,
            GenArg::Milan => Generation::Milan,
            GenArg::Genoa => Generation::Genoa,
            GenArg::Turin => Generation::Turin,
        }
    }

    fn from_generation(g: Generation) -> GenArg {
        match g {
            Generation::Naples => GenArg::Naples,
            Generation::Rome => GenArg::Rome,
            Generation::Milan => GenArg::Milan,
            Generation::Genoa => GenArg::Genoa,
            Generation::Turin => GenArg::Turin,
        }
    }

    fn name(self) -> &'static str {
        self.generation().name()
    }

    /// AMD's built-in CA chain (ASK, ARK) of this generation.
    fn builtin(self) -> Result<CaChain> {
        builtin_ark_ask(self.generation())
            .with_context(|| format!("built-in AMD {} CA chain", self.name()))
    }
}

#[derive(Debug, Args)]
struct VerifyChainArgs {
    /// SEV chain (PDH, PEK, OCA, CEK) or full chain (PDH, PEK, OCA, CEK, ASK, ARK).
    chain: PathBuf,
    /// CA chain (ASK, ARK) to verify against instead of AMD's built-in root.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Generation whose built-in root to use (detected from the chain when absent).
    #[arg(long, value_enum)]
    generation: Option<GenArg>,
}

#[derive(Debug, Args)]
struct SessionArgs {
    /// Prefix of the output file names.
    #[arg(short, long, default_value = "vm")]
    name: String,
    /// Directory to write the files into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Do not verify the chain first (sevctl never does); then only the PDH is used.
    #[arg(long)]
    no_verify: bool,
    /// CA chain (ASK, ARK) to verify against instead of AMD's built-in root.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Generation whose built-in root to use (detected when absent).
    #[arg(long, value_enum)]
    generation: Option<GenArg>,
    /// The platform's chain (PDH first), as `sevctl export` / `sevm platform export` write it.
    chain: PathBuf,
    /// Guest policy, 32 bits, decimal or 0x-hex.
    #[arg(value_parser = args::policy)]
    policy: u32,
}

/// The images a launch digest is computed from (shared by `measure` and `verify`).
#[derive(Debug, Args)]
struct ImageArgs {
    /// OVMF firmware image.
    #[arg(long)]
    firmware: Option<PathBuf>,
    /// Kernel (measured direct boot through the kernel-hashes table).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initrd.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs: SEV-ES measures one VMSA each; with `--vmm sevm --kernel` the Linux
    /// MP table (measured) lists them, for SEV too. `--cpus` is the same option, as `sevm run`.
    #[arg(long, visible_alias = "cpus", value_parser = args::count)]
    num_cpus: Option<u32>,
    /// SEV-ES: VMSA of the boot vCPU.
    #[arg(long)]
    vmsa_cpu0: Option<PathBuf>,
    /// SEV-ES: VMSA of the other vCPUs.
    #[arg(long)]
    vmsa_cpu1: Option<PathBuf>,
}

impl ImageArgs {
    fn images(&self) -> Option<Images> {
        Some(Images {
            firmware: self.firmware.clone()?,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            num_cpus: self.num_cpus,
            vmsa_cpu0: self.vmsa_cpu0.clone(),
            vmsa_cpu1: self.vmsa_cpu1.clone(),
        })
    }
}

/// The platform and guest parameters that enter the measurement HMAC.
///
/// `Debug` is written by hand so that the TIK (which may be a base64 key) is never printed.
#[derive(Args)]
struct PlatformParams {
    /// TIK (16 bytes; path or base64).
    #[arg(long)]
    tik: Option<String>,
    /// SEV API major version of the platform.
    #[arg(long, value_parser = args::byte)]
    api_major: Option<u8>,
    /// SEV API minor version of the platform.
    #[arg(long, value_parser = args::byte)]
    api_minor: Option<u8>,
    /// Firmware build ID of the platform.
    #[arg(long, value_parser = args::byte)]
    build_id: Option<u8>,
    /// Guest policy (32 bits).
    #[arg(long, value_parser = args::policy)]
    policy: Option<u32>,
}

impl std::fmt::Debug for PlatformParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformParams")
            .field("tik", &self.tik.as_ref().map(|_| REDACTED))
            .field("api_major", &self.api_major)
            .field("api_minor", &self.api_minor)
            .field("build_id", &self.build_id)
            .field("policy", &self.policy)
            .finish()
    }
}

/// What `Debug` prints in place of key material.
const REDACTED: &str = "<redacted>";

struct Params {
    tik: zeroize::Zeroizing<[u8; 16]>,
    api_major: u8,
    api_minor: u8,
    build_id: u8,
    policy: u32,
}

impl PlatformParams {
    fn any(&self) -> bool {
        self.tik.is_some()
            || self.api_major.is_some()
            || self.api_minor.is_some()
            || self.build_id.is_some()
            || self.policy.is_some()
    }

    fn require(&self) -> Result<Params> {
        let missing = |n: &str| anyhow::anyhow!("{n} is required for the measurement");
        let tik = self.tik.as_deref().ok_or_else(|| missing("--tik"))?;
        Ok(Params {
            tik: args::key16("--tik", "TIK", tik)?,
            api_major: self.api_major.ok_or_else(|| missing("--api-major"))?,
            api_minor: self.api_minor.ok_or_else(|| missing("--api-minor"))?,
            build_id: self.build_id.ok_or_else(|| missing("--build-id"))?,
            policy: self.policy.ok_or_else(|| missing("--policy"))?,
        })
    }
}

#[derive(Debug, Args)]
struct MeasureArgs {
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    sevm: crate::sevm_recipe::SevmMeasureArgs,
    /// Use this launch digest (64 hex digits or base64) instead of computing it from images.
    #[arg(long, conflicts_with_all = ["firmware", "kernel", "initrd", "cmdline", "num_cpus", "vmsa_cpu0", "vmsa_cpu1"])]
    launch_digest: Option<String>,
    #[command(flatten)]
    params: PlatformParams,
    /// MNONCE (16 bytes; path or base64).
    #[arg(long, conflicts_with = "launch_measure_blob")]
    nonce: Option<String>,
    /// LAUNCH_MEASURE output (48 bytes; path or base64) to take the MNONCE from.
    #[arg(long)]
    launch_measure_blob: Option<String>,
    /// Print the launch digest in base64 (what `sevctl measurement build --launch-digest`
    /// takes) instead of hex.
    #[arg(long)]
    base64: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    images: ImageArgs,
    /// Expected launch digest (64 hex digits or base64) instead of --firmware ...
    #[arg(long, conflicts_with_all = ["firmware", "kernel", "initrd", "cmdline", "num_cpus", "vmsa_cpu0", "vmsa_cpu1"])]
    launch_digest: Option<String>,
    #[command(flatten)]
    params: PlatformParams,
    /// LAUNCH_MEASURE output to check (48 bytes; path or base64).
    #[arg(long)]
    launch_measure_blob: String,
}

/// `Debug` is written by hand so that the TIK and TEK (which may be base64 keys) are never
/// printed.
#[derive(Args)]
struct SecretArgs {
    /// TIK (16 bytes; path or base64).
    #[arg(long)]
    tik: String,
    /// TEK (16 bytes; path or base64).
    #[arg(long)]
    tek: String,
    /// LAUNCH_MEASURE output (48 bytes; path or base64).
    #[arg(long)]
    launch_measure_blob: String,
    /// Secret to inject, UUID:FILE; repeatable.
    #[arg(long, required = true, value_parser = args::secret_spec)]
    secret: Vec<SecretSpec>,
    /// IV of the packet (16 bytes; path or base64); random when absent.
    #[arg(long)]
    iv: Option<String>,
    /// Where to write the 52-byte packet header (raw bytes, as sevctl).
    header_out: PathBuf,
    /// Where to write the encrypted payload (raw bytes, as sevctl).
    payload_out: PathBuf,
}

impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretArgs")
            .field("tik", &REDACTED)
            .field("tek", &REDACTED)
            .field("launch_measure_blob", &self.launch_measure_blob)
            .field("secret", &self.secret)
            .field("iv", &self.iv)
            .field("header_out", &self.header_out)
            .field("payload_out", &self.payload_out)
            .finish()
    }
}

/// Runs `sevm owner ...`.
pub fn run(a: OwnerArgs, out: &Output) -> Result<ExitCode> {
    match a.cmd {
        OwnerCmd::VerifyChain(a) => verify_chain(a, out),
        OwnerCmd::Session(a) => session(a, out),
        OwnerCmd::Measure(a) => measure(a, out),
        OwnerCmd::Verify(a) => verify(a, out),
        OwnerCmd::Secret(a) => secret(a, out),
        OwnerCmd::Snp(a) => crate::owner_snp::run(a, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Chains

const SEV_CERT_LEN: usize = 2084;
const SEV_NAMES: [&str; 4] = ["PDH", "PEK", "OCA", "CEK"];

/// A chain file split into its certificates.
struct LoadedChain {
    sev: SevChain,
    ca: Option<CaChain>,
}

fn load_sev_certs(path: &Path, bytes: &[u8], count: usize) -> Result<Vec<SevCert>> {
    let mut certs = Vec::with_capacity(count);
    for (i, name) in SEV_NAMES.iter().take(count).enumerate() {
        let off = i * SEV_CERT_LEN;
        let slice = bytes.get(off..off + SEV_CERT_LEN).with_context(|| {
            format!(
                "{}: truncated: the {name} certificate needs bytes {off}..{} but the file has {}",
                path.display(),
                off + SEV_CERT_LEN,
                bytes.len()
            )
        })?;
        let cert = SevCert::parse(slice).with_context(|| {
            format!(
                "{}: {name} certificate (offset {off}) is invalid",
                path.display()
            )
        })?;
        certs.push(cert);
    }
    Ok(certs)
}

/// Parses an AMD CA chain (ASK then ARK) from `bytes`.
fn parse_ca_chain(path: &Path, bytes: &[u8], base: usize) -> Result<(CaCert, CaCert)> {
    if bytes.is_empty() {
        bail!("{}: CA chain (ASK, ARK) is empty", path.display());
    }
    let (ask, rest) = CaCert::parse_prefix(bytes).with_context(|| {
        format!(
            "{}: ASK certificate (offset {base}) is invalid",
            path.display()
        )
    })?;
    let ark_off = base + (bytes.len() - rest.len());
    let (ark, tail) = CaCert::parse_prefix(rest).with_context(|| {
        format!(
            "{}: ARK certificate (offset {ark_off}) is invalid",
            path.display()
        )
    })?;
    if !tail.is_empty() {
        bail!(
            "{}: {} trailing bytes after the ARK certificate (offset {})",
            path.display(),
            tail.len(),
            base + bytes.len() - tail.len()
        );
    }
    Ok((ask, ark))
}

/// Largest certificate file we read: a full chain is 4 x 2084 + 2 x 1600 bytes.
const MAX_CHAIN_FILE: u64 = 64 * 1024;

/// Reads a certificate file, refusing absurd sizes before reading them and special files
/// (FIFOs, devices, directories) without blocking. `what` names it in messages (`--ca`).
fn read_cert_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    Ok(sevm_files::Limit::new(what, MAX_CHAIN_FILE)
        .why("too large for a certificate chain: a full chain is 4 x 2084 + 2 x 1600 bytes")
        .read(path)?)
}

fn load_chain(path: &Path) -> Result<LoadedChain> {
    let bytes = read_cert_file("certificate chain", path)?;
    let sev_len = 4 * SEV_CERT_LEN;
    if bytes.len() < sev_len {
        bail!(
            "{}: {} bytes is too short for a SEV chain (PDH, PEK, OCA, CEK = {sev_len} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let [pdh, pek, oca, cek]: [SevCert; 4] = load_sev_certs(path, &bytes, 4)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: not 4 SEV certificates", path.display()))?;
    let ca = if bytes.len() > sev_len {
        let (ask, ark) = parse_ca_chain(path, &bytes[sev_len..], sev_len)?;
        Some(CaChain { ask, ark })
    } else {
        None
    };
    Ok(LoadedChain {
        sev: SevChain { pdh, pek, oca, cek },
        ca,
    })
}

fn load_ca(path: &Path) -> Result<(CaCert, CaCert)> {
    let bytes = read_cert_file("--ca", path)?;
    parse_ca_chain(path, &bytes, 0).context("--ca")
}

/// One checked link of a chain, as reported: a signature (named by sev-proto's
/// [`chain::Link`]) or the check that the chain's ARK is the trusted one.
struct Link {
    name: String,
    ok: bool,
    detail: String,
}

fn link(name: &str, r: std::result::Result<(), impl std::fmt::Display>) -> Link {
    match r {
        Ok(()) => Link {
            name: name.to_string(),
            ok: true,
            detail: String::new(),
        },
        Err(e) => Link {
            name: name.to_string(),
            ok: false,
            detail: e.to_string(),
        },
    }
}

impl From<LinkCheck> for Link {
    fn from(c: LinkCheck) -> Self {
        link(&c.link.to_string(), c.result)
    }
}

/// Result of checking a chain.
struct ChainReport {
    certs: Vec<serde_json::Value>,
    text: String,
    links: Vec<Link>,
    root: String,
}

impl ChainReport {
    fn ok(&self) -> bool {
        self.links.iter().all(|l| l.ok)
    }

    fn first_failure(&self) -> Option<&Link> {
        self.links.iter().find(|l| !l.ok)
    }
}

fn describe_sev(name: &str, c: &SevCert) -> (serde_json::Value, String) {
    let fp = c.fingerprint();
    let v = json!({
        "cert": name,
        "usage": c.usage.to_string(),
        "usage_code": c.usage.0,
        "algorithm": c.algo.to_string(),
        "algorithm_code": c.algo.0,
        "api_version": format!("{}.{}", c.api_major, c.api_minor),
        "fingerprint": fp,
    });
    let t = format!(
        "{name:<4} usage={} ({:#06x}) algo={} ({:#x}) api={}.{} fingerprint={fp}\n",
        c.usage, c.usage.0, c.algo, c.algo.0, c.api_major, c.api_minor
    );
    (v, t)
}

fn describe_ca(name: &str, c: &CaCert) -> (serde_json::Value, String) {
    let fp = c.fingerprint();
    let algo = format!("RSA-{}-PSS-SHA{}", c.modulus_bits, c.digest().size() * 8);
    let v = json!({
        "cert": name,
        "usage": c.usage.to_string(),
        "usage_code": c.usage.0,
        "algorithm": algo,
        "key_id": hex::encode(c.key_id),
        "certifying_id": hex::encode(c.certifying_id),
        "fingerprint": fp,
    });
    let t = format!(
        "{name:<4} usage={} ({:#06x}) algo={algo} key_id={} fingerprint={fp}\n",
        c.usage,
        c.usage.0,
        hex::encode(c.key_id)
    );
    (v, t)
}

/// Picks the CA chain to verify against: --ca, else the chain's own, checked against the
/// built-in root of the given or detected generation. The signatures are checked by sev-proto's
/// chain verifier ([`chain::check_links`]); this adds the choice of root and the report.
fn check_chain(chain: &LoadedChain, ca: Option<&Path>, gen: Option<GenArg>) -> Result<ChainReport> {
    let sev = &chain.sev;
    let mut certs = Vec::new();
    let mut text = String::new();
    for (name, c) in SEV_NAMES
        .iter()
        .zip([&sev.pdh, &sev.pek, &sev.oca, &sev.cek])
    {
        let (v, t) = describe_sev(name, c);
        certs.push(v);
        text.push_str(&t);
    }
    let mut ark_check = None;

    // The CA pair to anchor the CEK: explicit --ca, else the chain's, else a built-in root.
    let (anchor, root) = if let Some(p) = ca {
        let (ask, ark) = load_ca(p)?;
        if let Some(own) = &chain.ca {
            // A full chain checked against --ca: its own ARK must be the trusted one.
            ark_check = Some(link(
                "ARK == --ca ARK",
                if own.ark.fingerprint() == ark.fingerprint() {
                    Ok(())
                } else {
                    Err(format!(
                        "the chain's ARK ({}) is not the --ca ARK ({})",
                        own.ark.fingerprint(),
                        ark.fingerprint()
                    ))
                },
            ));
        }
        (CaChain { ask, ark }, format!("CA chain {}", p.display()))
    } else {
        let g = match gen {
            Some(g) => g,
            None => detect_generation(chain).with_context(|| {
                "cannot detect the generation: no built-in AMD root signs this chain's CEK \
                 (or matches its ARK); pass --generation or --ca"
            })?,
        };
        let builtin = g.builtin()?;
        let root = format!("built-in AMD {} root", g.name());
        if let Some(own) = &chain.ca {
            // A full chain: its ARK must be AMD's.
            ark_check = Some(link(
                "ARK == built-in AMD ARK",
                if own.ark.fingerprint() == builtin.ark.fingerprint() {
                    Ok(())
                } else {
                    Err(format!(
                        "the chain's ARK ({}) is not AMD's {} ARK ({})",
                        own.ark.fingerprint(),
                        g.name(),
                        builtin.ark.fingerprint()
                    ))
                },
            ));
            (own.clone(), root)
        } else {
            (builtin, root)
        }
    };
    if ca.is_some() || chain.ca.is_some() {
        let (v, t) = describe_ca("ASK", &anchor.ask);
        certs.push(v);
        text.push_str(&t);
        let (v, t) = describe_ca("ARK", &anchor.ark);
        certs.push(v);
        text.push_str(&t);
    }
    // Every link, root first (the first failing link is the tampered certificate's own
    // signature); the ARK trust check follows the ARK's self-signature.
    let mut links = Vec::new();
    for c in chain::check_links(sev, &anchor) {
        let is_ark = c.link == chain::Link::ArkSelf;
        links.push(Link::from(c));
        if is_ark {
            links.extend(ark_check.take());
        }
    }
    Ok(ChainReport {
        certs,
        text,
        links,
        root,
    })
}

/// Finds the generation whose built-in ARK matches the chain's ARK key id, or whose ASK
/// signs the chain's CEK.
fn detect_generation(chain: &LoadedChain) -> Option<GenArg> {
    if let Some(own) = &chain.ca {
        if let Some(g) = Generation::from_ark_key_id(&own.ark.key_id) {
            return Some(GenArg::from_generation(g));
        }
    }
    let cek = &chain.sev.cek;
    GenArg::ALL.into_iter().find(|g| {
        g.builtin()
            .map(|c| cek.verify_signed_by_ca(&c.ask).is_ok())
            .unwrap_or(false)
    })
}

fn verify_chain(a: VerifyChainArgs, out: &Output) -> Result<ExitCode> {
    let chain = load_chain(&a.chain)?;
    let rep = check_chain(&chain, a.ca.as_deref(), a.generation)?;
    let mut text = rep.text.clone();
    for l in &rep.links {
        if l.ok {
            text.push_str(&format!("ok      {}\n", l.name));
        } else {
            text.push_str(&format!("FAILED  {}: {}\n", l.name, l.detail));
        }
    }
    let links: Vec<_> = rep
        .links
        .iter()
        .map(|l| json!({"link": l.name, "ok": l.ok, "error": if l.ok { None } else { Some(&l.detail) }}))
        .collect();
    let ok = rep.ok();
    let failed = rep.first_failure().map(|l| l.name.as_str());
    if ok {
        text.push_str(&format!("chain OK against the {}\n", rep.root));
    } else {
        text.push_str(&format!(
            "chain INVALID: link {} fails\n",
            failed.unwrap_or("?")
        ));
    }
    out.emit(
        &json!({"ok": ok, "root": rep.root, "certificates": rep.certs, "links": links, "failed_link": failed}),
        &text,
    );
    if !ok {
        eprintln!(
            "error: {}: certificate chain does not verify: link {} fails",
            a.chain.display(),
            failed.unwrap_or("?")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Session

/// Writes `bytes` to `dir/name`, naming the file on failure; `private` files get mode 0600.
fn write_out(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<PathBuf> {
    let p = dir.join(name);
    write_path(&p, name, bytes, private)?;
    Ok(p)
}

/// Writes `bytes` to `path` for `what`, naming the file on failure; `private` files get mode
/// 0600 (`sevm_files::create_output`).
///
/// A private file is 0600 whether it is new or overwritten: the mode of an existing file is
/// tightened before any byte is written, so a key never sits in a world-readable file. `-` is
/// standard output; pipes and character devices (`/dev/stdout`) are written, not truncated;
/// symbolic links to files are refused. The returned output says whether it was stdout.
pub(crate) fn write_path(
    path: &Path,
    what: &str,
    bytes: &[u8],
    private: bool,
) -> Result<sevm_files::OutputFile> {
    let mode = if private {
        sevm_files::MODE_PRIVATE
    } else {
        sevm_files::MODE_PUBLIC
    };
    Ok(sevm_files::write_output(path, what, bytes, mode)?)
}

/// Refuses a `--name` that would put the session files outside `--out` or read as an option:
/// it is a file-name prefix, not a path.
fn check_session_name(name: &str) -> Result<()> {
    let bad = |why: &str| -> Result<()> {
        bail!("--name {name:?}: {why}; it is a file-name prefix (the files go into --out)")
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.starts_with('-') {
        return bad("starts with '-'");
    }
    Ok(())
}

/// The file `p` would be (device and inode), for existing files and for `-` (stdout).
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = if p.as_os_str() == "-" {
        let fd = std::os::fd::AsFd::as_fd(&std::io::stdout())
            .try_clone_to_owned()
            .ok()?;
        std::fs::File::from(fd).metadata().ok()?
    } else {
        std::fs::metadata(p).ok()?
    };
    Some((m.dev(), m.ino()))
}

/// `p` with its directory made absolute and resolved (the file itself need not exist).
fn resolved(p: &Path) -> PathBuf {
    let name = p.file_name().map(PathBuf::from).unwrap_or_default();
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match dir.canonicalize() {
        Ok(d) => d.join(name),
        Err(_) => p.to_path_buf(),
    }
}

/// Refuses two outputs that are the same file (same path, or the same file through another
/// name, `-` and `/dev/stdout` included): the second write would destroy the first.
fn check_distinct_outputs(a: (&str, &Path), b: (&str, &Path)) -> Result<()> {
    let same = a.1 == b.1
        || (a.1.as_os_str() != "-" && b.1.as_os_str() != "-" && resolved(a.1) == resolved(b.1))
        || matches!((file_id(a.1), file_id(b.1)), (Some(x), Some(y)) if x == y);
    if same {
        bail!(
            "{} {} and {} {} are the same file: the {} would overwrite the {}; give two different files",
            a.0,
            a.1.display(),
            b.0,
            b.1.display(),
            b.0,
            a.0
        );
    }
    Ok(())
}

fn random<const N: usize>(what: &str) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).with_context(|| format!("cannot draw a random {what}"))?;
    Ok(b)
}

fn session(a: SessionArgs, out: &Output) -> Result<ExitCode> {
    check_session_name(&a.name)?;
    let (pdh, verified) = if a.no_verify {
        let bytes = read_cert_file("certificate chain", &a.chain)?;
        let mut v = load_sev_certs(&a.chain, &bytes, 1)?;
        (v.remove(0), None)
    } else {
        let chain = load_chain(&a.chain)
            .context("verifying the chain before the session (pass --no-verify to skip)")?;
        let rep = check_chain(&chain, a.ca.as_deref(), a.generation)?;
        if let Some(l) = rep.first_failure() {
            bail!(
                "{}: certificate chain does not verify: link {} fails: {} (pass --no-verify to use the PDH anyway)",
                a.chain.display(),
                l.name,
                l.detail
            );
        }
        let root = rep.root.clone();
        (chain.sev.pdh, Some(root))
    };
    if pdh.usage != sev_proto::cert::Usage::PDH || !pdh.algo.is_ecdh() {
        bail!(
            "{}: the first certificate must be a PDH (usage PDH 0x1003, an ECDH algorithm), \
             found usage {} ({:#x}), algo {} ({:#x})",
            a.chain.display(),
            pdh.usage,
            pdh.usage.0,
            pdh.algo,
            pdh.algo.0
        );
    }
    let pdh_pub = pdh
        .ec_public_key()
        .with_context(|| format!("{}: PDH public key", a.chain.display()))?;
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1)
        .context("P-384 group")?;
    let godh = openssl::ec::EcKey::generate(&group).context("generating the GODH key")?;
    let godh_cert = SevCert::new_ec(
        sev_proto::cert::Usage::PDH,
        sev_proto::cert::Algo::ECDH_SHA256,
        0,
        0,
        &godh,
    )
    .context("building the GODH certificate")?;
    let z = sev_proto::session::ecdh_shared_secret(&godh, &pdh_pub)
        .context("ECDH with the platform's PDH")?;
    let keys = sev_proto::session::TransportKeys::random().context("drawing TEK and TIK")?;
    let nonce = random::<16>("nonce")?;
    let iv = random::<16>("IV")?;
    let blob = sev_proto::session::owner_wrap(&z, &nonce, &iv, &keys, a.policy);

    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("--out: cannot create {}", a.out.display()))?;
    let godh_b64 = args::encode_b64(&godh_cert.encode());
    let session_b64 = args::encode_b64(&blob.to_bytes());
    let files = [
        write_out(
            &a.out,
            &format!("{}_godh.b64", a.name),
            godh_b64.as_bytes(),
            false,
        )?,
        write_out(
            &a.out,
            &format!("{}_session.b64", a.name),
            session_b64.as_bytes(),
            false,
        )?,
        write_out(&a.out, &format!("{}_tek.bin", a.name), &keys.tek, true)?,
        write_out(&a.out, &format!("{}_tik.bin", a.name), &keys.tik, true)?,
    ];
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut text = String::new();
    match &verified {
        Some(root) => text.push_str(&format!("chain verified against the {root}\n")),
        None => text.push_str("chain NOT verified (--no-verify)\n"),
    }
    text.push_str(&format!("policy {:#010x}\n", a.policy));
    for n in &names {
        text.push_str(&format!("wrote {n}\n"));
    }
    out.emit(
        &json!({"ok": true, "chain_verified": verified.is_some(), "root": verified,
                "policy": format!("{:#x}", a.policy), "files": names}),
        &text,
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Measure and verify

fn launch_digest(images: &ImageArgs, given: Option<&str>) -> Result<[u8; 32]> {
    match (given, images.images()) {
        (Some(d), _) => Ok(args::digest32("--launch-digest", d)?),
        (None, Some(img)) => digest::launch_digest(&img),
        (None, None) => bail!("--firmware (or --launch-digest) is required"),
    }
}

/// Refuses a digest computed from images without VMSAs for an SEV-ES policy (as sevctl): under
/// the ES bit the VMSAs are part of the digest.
fn check_es(images: &ImageArgs, given_digest: bool, policy: u32) -> Result<()> {
    if !given_digest && GuestPolicy(policy).es() && images.num_cpus.is_none() {
        bail!(
            "--policy {policy:#x} has the ES bit (0x4): the launch digest of an SEV-ES guest covers \
             its VMSAs; pass --num-cpus, --vmsa-cpu0 and --vmsa-cpu1 (or --launch-digest)"
        );
    }
    Ok(())
}

fn measurement(p: &Params, digest: &[u8; 32], mnonce: &[u8; 16]) -> [u8; 32] {
    sev_proto::measure::measurement(
        &p.tik,
        p.api_major,
        p.api_minor,
        p.build_id,
        p.policy,
        digest,
        mnonce,
    )
}

fn measure(a: MeasureArgs, out: &Output) -> Result<ExitCode> {
    let i = &a.images;
    let sevm = crate::sevm_recipe::digest(
        &a.sevm,
        &i.firmware,
        &i.kernel,
        &i.initrd,
        &i.cmdline,
        i.num_cpus,
        a.params.policy,
    )?;
    let digest = match sevm {
        Some(d) => d,
        None => launch_digest(&a.images, a.launch_digest.as_deref())?,
    };
    // With --vmm sevm, --policy alone only selects SEV-ES (VMSAs in the digest).
    let params = a.params.any() && (sevm.is_none() || a.params.tik.is_some());
    let want_blob = params || a.nonce.is_some() || a.launch_measure_blob.is_some();
    if !want_blob {
        let h = hex::encode(digest);
        let text = if a.base64 {
            args::encode_b64(&digest)
        } else {
            h.clone()
        };
        out.emit(
            &json!({"launch_digest": h, "launch_digest_b64": args::encode_b64(&digest)}),
            &text,
        );
        return Ok(ExitCode::SUCCESS);
    }
    let p = a.params.require()?;
    check_es(
        &a.images,
        a.launch_digest.is_some() || sevm.is_some(),
        p.policy,
    )?;
    let mnonce = match (&a.nonce, &a.launch_measure_blob) {
        (Some(n), _) => args::bytes16("--nonce", "MNONCE", n)?,
        (None, Some(b)) => args::measure_blob("--launch-measure-blob", b)?.1,
        (None, None) => bail!("--nonce or --launch-measure-blob is required for the measurement"),
    };
    let m = measurement(&p, &digest, &mnonce);
    let mut blob = [0u8; 48];
    blob[..32].copy_from_slice(&m);
    blob[32..].copy_from_slice(&mnonce);
    let b64 = args::encode_b64(&blob);
    out.emit(
        &json!({"launch_digest": hex::encode(digest), "measurement": hex::encode(m),
                "mnonce": hex::encode(mnonce), "launch_measure_blob": b64}),
        &b64,
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs, out: &Output) -> Result<ExitCode> {
    let p = a.params.require()?;
    check_es(&a.images, a.launch_digest.is_some(), p.policy)?;
    let (got, mnonce) = args::measure_blob("--launch-measure-blob", &a.launch_measure_blob)?;
    let digest = launch_digest(&a.images, a.launch_digest.as_deref())?;
    let expected = measurement(&p, &digest, &mnonce);
    let ok = openssl::memcmp::eq(&expected, &got);
    let v = json!({
        "ok": ok,
        "launch_digest": hex::encode(digest),
        "expected_measurement": hex::encode(expected),
        "measurement": hex::encode(got),
        "mnonce": hex::encode(mnonce),
        "api": format!("{}.{}", p.api_major, p.api_minor),
        "build_id": p.build_id,
        "policy": format!("{:#x}", p.policy),
    });
    if ok {
        out.emit(
            &v,
            &format!("measurement OK: launch digest {}", hex::encode(digest)),
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let text = format!(
            "measurement MISMATCH\n  reported: {}\n  expected: {}\n  from launch digest {} with API {}.{}, build {}, policy {:#x}, MNONCE {}\n  \
             Either the images (firmware, kernel, initrd, cmdline, VMSAs) differ from what was launched,\n  \
             or the TIK, API version, build ID or policy differ from the platform's.",
            hex::encode(got),
            hex::encode(expected),
            hex::encode(digest),
            p.api_major,
            p.api_minor,
            p.build_id,
            p.policy,
            hex::encode(mnonce)
        );
        out.emit(&v, &text);
        eprintln!("error: launch measurement does not match the expected launch digest");
        Ok(ExitCode::from(1))
    }
}

// ---------------------------------------------------------------------------------------------
// Secret

/// Size of the guest's secret area, and the most Linux passes to LAUNCH_SECRET (16 KiB).
const SECRET_AREA: u64 = vmm::layout::SECRET_AREA_SIZE;
/// Bytes before each secret in the table: GUID and length.
const SECRET_ENTRY_HEADER: u64 = 20;

fn secret(a: SecretArgs, out: &Output) -> Result<ExitCode> {
    let tik = args::key16("--tik", "TIK", &a.tik)?;
    let tek = args::key16("--tek", "TEK", &a.tek)?;
    let (measure, _) = args::measure_blob("--launch-measure-blob", &a.launch_measure_blob)?;
    let iv = match &a.iv {
        Some(v) => args::bytes16("--iv", "IV", v)?,
        None => random::<16>("IV")?,
    };
    check_distinct_outputs(
        ("HEADER_OUT", &a.header_out),
        ("PAYLOAD_OUT", &a.payload_out),
    )?;
    let mut guids = std::collections::HashSet::new();
    for s in &a.secret {
        if !guids.insert(s.guid) {
            bail!(
                "--secret {}: this GUID is given twice; the guest looks a secret up by its GUID, \
                 so each GUID names one secret",
                s.guid
            );
        }
    }
    // SecretTable wipes its entries on drop; a failed read leaves the ones read so far to it.
    // Each file is checked against the room left in the secret area before it is read.
    let mut table = sev_proto::secret_table::SecretTable::default();
    for s in &a.secret {
        let used = table.unpadded_len() as u64 + SECRET_ENTRY_HEADER;
        let room = SECRET_AREA.saturating_sub(used);
        let what = format!("--secret {}", s.guid);
        let why = format!(
            "the secret table must fit the {SECRET_AREA}-byte secret area and {used} bytes \
             of it are taken by the table header, the entry headers and the secrets before"
        );
        let bytes = sevm_files::Limit::new(&what, room)
            .why(&why)
            .allow_empty()
            .read(&s.path)?;
        table.entries.push((s.guid, bytes));
    }
    let plaintext = zeroize::Zeroizing::new(table.encode().context("--secret: secret table")?);
    let keys = sev_proto::session::TransportKeys {
        tek: *tek,
        tik: *tik,
    };
    let (hdr, payload) = sev_proto::secret::build_packet(&keys, &measure, iv, 0, &plaintext)
        .context("building the secret packet")?;
    let h = write_path(&a.header_out, "HEADER_OUT", &hdr.to_bytes(), false)?;
    let p = write_path(&a.payload_out, "PAYLOAD_OUT", &payload, false)?;
    let (h, p, aside) = (h.path(), p.path(), h.is_stdout() || p.is_stdout());
    out.emit_aside(
        aside,
        &json!({"ok": true, "header": h.display().to_string(), "payload": p.display().to_string(),
                "header_b64": args::encode_b64(&hdr.to_bytes()), "payload_len": payload.len()}),
        &format!(
            "Wrote header to: {}\nWrote payload to: {}",
            h.display(),
            p.display()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_outputs_are_0600_even_when_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let tek = dir.path().join("vm_tek.bin");
        std::fs::write(&tek, b"an older, longer public file").unwrap();
        std::fs::set_permissions(&tek, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_path(&tek, "TEK", &[7u8; 16], true).unwrap();
        assert_eq!(mode(&tek), 0o600);
        assert_eq!(std::fs::read(&tek).unwrap(), vec![7u8; 16]);
        // A new private file is 0600 too.
        let tik = dir.path().join("vm_tik.bin");
        write_path(&tik, "TIK", &[9u8; 16], true).unwrap();
        assert_eq!(mode(&tik), 0o600);
        // Public outputs keep an existing file's mode and are truncated.
        let hdr = dir.path().join("header.bin");
        std::fs::write(&hdr, b"0123456789").unwrap();
        std::fs::set_permissions(&hdr, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_path(&hdr, "HEADER_OUT", b"ab", false).unwrap();
        assert_eq!(mode(&hdr), 0o644);
        assert_eq!(std::fs::read(&hdr).unwrap(), b"ab");
    }

    #[test]
    fn debug_never_shows_keys() {
        let tik = "S0VZS0VZS0VZS0VZS0VZSw==";
        let tek = "VEVLVEVLVEVLVEVLVEVLVA==";
        let s = SecretArgs {
            tik: tik.into(),
            tek: tek.into(),
            launch_measure_blob: "blob".into(),
            secret: vec![],
            iv: None,
            header_out: "h".into(),
            payload_out: "p".into(),
        };
        let d = format!("{s:?}");
        assert!(!d.contains(tik) && !d.contains(tek), "{d}");
        assert!(d.contains(REDACTED) && d.contains("blob"), "{d}");
        let p = PlatformParams {
            tik: Some(tik.into()),
            api_major: Some(0),
            api_minor: Some(24),
            build_id: Some(1),
            policy: Some(3),
        };
        let d = format!("{p:?}");
        assert!(
            !d.contains(tik) && d.contains(REDACTED) && d.contains("24"),
            "{d}"
        );
    }
}
