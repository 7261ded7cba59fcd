//! `sevm owner snp`: the guest owner's SEV-SNP tools.
//!
//! - `measure`: the expected launch digest (MEASUREMENT) of a QEMU + OVMF SNP launch, equal to
//!   `sev-snp-measure --mode snp`; `--dump-launch` prints every PAGE_INFO measured;
//! - `id-block`: an ID block and ID authentication structure signed with PEM keys, in the
//!   format `snpguest generate id-block` writes (base64 files);
//! - `verify-report`: an attestation report against a certificate directory (ARK → ASK → VCEK,
//!   the report signature, REPORTED_TCB and CHIP_ID against the VCEK's extensions) and against
//!   expected field values; exit 0 only if every check holds, each failure named;
//! - `show`: every field of a report, decoded.
//!
//! The byte formats, the digest chain and the crypto are `sev_proto::snp`'s; this module does
//! the I/O, argument checking and reporting.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use sev_proto::snp::certs::VcekExtensions;
use sev_proto::snp::id_block::{IdAuth, IdBlock};
use sev_proto::snp::measure::{self as snp_measure, page_type_name, LaunchStep};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::report::{AttestationReport, Product, REPORT_SIZE};
use sev_proto::snp::tcb::{TcbLayout, TcbVersion};

use crate::args;
use crate::output::Output;

/// `sevm owner snp` arguments.
#[derive(Debug, Args)]
pub struct SnpArgs {
    #[command(subcommand)]
    cmd: SnpCmd,
}

#[derive(Debug, Subcommand)]
enum SnpCmd {
    /// The expected SNP launch digest (MEASUREMENT) of a QEMU + OVMF launch, as
    /// `sev-snp-measure --mode snp` (`--vmm qemu`), or of sevm's own SNP launch of a bundled
    /// guest (`--vmm sevm`).
    Measure(MeasureArgs),
    /// An ID block and ID auth structure from PEM keys, as `snpguest generate id-block`.
    IdBlock(IdBlockArgs),
    /// Verify an attestation report: certificate chain, signature, TCB, expected fields.
    VerifyReport(VerifyReportArgs),
    /// Print every field of an attestation report, decoded.
    Show(ShowArgs),
}

/// Runs `sevm owner snp ...`.
pub fn run(a: SnpArgs, out: &Output) -> Result<ExitCode> {
    match a.cmd {
        SnpCmd::Measure(a) => measure(a, out),
        SnpCmd::IdBlock(a) => id_block(a, out),
        SnpCmd::VerifyReport(a) => verify_report(a, out),
        SnpCmd::Show(a) => show(a, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared parsing

/// Decodes `value` as exactly `n` bytes given as hex (an optional `0x` prefix, `2n` digits) or
/// standard base64; the error names `arg`.
fn fixed_bytes<const N: usize>(arg: &str, what: &str, value: &str) -> Result<[u8; N]> {
    let v = value.trim();
    let h = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    let bytes = if h.len() == 2 * N && h.bytes().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(h).map_err(|e| anyhow!("{arg}: not valid hex ({e})"))?
    } else if v.starts_with("0x") || v.starts_with("0X") {
        bail!(
            "{arg}: {what} must be {N} bytes = {} hex digits, got '{value}' ({} characters after 0x)",
            2 * N,
            h.len()
        );
    } else {
        match args::decode_b64(arg, v) {
            Ok(b) => b,
            Err(_) => bail!(
                "{arg}: {what} must be {N} bytes, as {} hex digits (optionally 0x-prefixed) or \
                 base64; '{value}' is neither",
                2 * N
            ),
        }
    };
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| anyhow!("{arg}: {what} must be {N} bytes, got {got} (base64)"))
}

/// Parses an SNP policy: a number (0x-hex or decimal) with reserved bit 17 set and no
/// reserved or unknown bits (`SnpPolicy::validate`).
fn snp_policy(arg: &str, value: &str) -> Result<SnpPolicy> {
    let n = args::parse_u64(arg, value)?;
    let p = SnpPolicy(n);
    p.validate().map_err(|e| anyhow!("{arg}: {value}: {e}"))?;
    Ok(p)
}

/// Largest PEM key, certificate or report file read.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// Reads a P-384 private key in PEM (SEC1 or PKCS#8); the PEM text is wiped after parsing.
fn read_p384_key(arg: &str, path: &Path) -> Result<PKey<Private>> {
    let pem = Zeroizing::new(
        sevm_files::Limit::new(arg, MAX_SMALL_FILE)
            .why("a PEM private key is a few hundred bytes")
            .read(path)?,
    );
    let key = PKey::private_key_from_pem(&pem).map_err(|_| {
        anyhow!(
            "{arg}: {}: not a PEM private key (EC PRIVATE KEY or PRIVATE KEY)",
            path.display()
        )
    })?;
    let p384 = key
        .ec_key()
        .ok()
        .and_then(|k| k.group().curve_name())
        .is_some_and(|n| n == Nid::SECP384R1);
    if !p384 {
        bail!(
            "{arg}: {}: not an ECDSA P-384 (secp384r1) key; SNP ID and author keys are P-384",
            path.display()
        );
    }
    Ok(key)
}

/// Reads and parses an attestation report file (exactly 0x4A0 bytes).
fn read_report(arg: &str, path: &Path) -> Result<(Vec<u8>, AttestationReport)> {
    let b = sevm_files::Limit::new(arg, MAX_SMALL_FILE)
        .why("an attestation report is 1184 (0x4A0) bytes")
        .read(path)?;
    if b.len() != REPORT_SIZE {
        bail!(
            "{arg}: {}: {} bytes, an attestation report is {REPORT_SIZE} (0x4A0){}",
            path.display(),
            b.len(),
            if b.len() < REPORT_SIZE {
                " (truncated?)"
            } else {
                ""
            }
        );
    }
    let r = AttestationReport::from_bytes(&b)
        .with_context(|| format!("{arg}: {}: not a valid attestation report", path.display()))?;
    Ok((b, r))
}

// ---------------------------------------------------------------------------------------------
// measure

/// Which VMM's SNP launch to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
enum SnpVmm {
    /// QEMU + KVM with an OVMF image (its SEV metadata sections), as sev-snp-measure's
    /// `--vmm-type QEMU`.
    #[default]
    Qemu,
    /// sevm's own SNP launch of a bundled guest (docs/LAYOUT.md), computed by the same code
    /// that drives the launch.
    Sevm,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("vcpu").args(["vcpu_type", "vcpu_sig", "vcpu_family"])))]
struct MeasureArgs {
    /// The VMM whose launch is measured.
    #[arg(long, value_enum, default_value_t = SnpVmm::Qemu)]
    vmm: SnpVmm,
    /// OVMF image (with SEV metadata: SNP_SEC_MEM, SECRETS, CPUID, ...), as QEMU's `-bios`
    /// (`--vmm qemu`).
    #[arg(long, conflicts_with = "guest")]
    firmware: Option<PathBuf>,
    /// `--vmm sevm`: the bundled guest launched (hello, snp-attest, ...).
    #[arg(long)]
    guest: Option<String>,
    /// `--vmm sevm`: the guest policy of the launch (checked as the firmware will; the policy
    /// is not measured, but an ID block must carry it).
    #[arg(long)]
    policy: Option<String>,
    /// `--vmm sevm`: guest RAM as `sevm run --memory` takes it.
    #[arg(long, default_value = "256M")]
    memory: String,
    /// `--vmm sevm`: the platform's C-bit position (it is in the measured page tables).
    #[arg(long, default_value_t = 47)]
    cbitpos: u8,
    /// Kernel for measured direct boot (QEMU `kernel-hashes=on`).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initrd (needs --kernel).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line (needs --kernel).
    #[arg(long, visible_alias = "append", requires = "kernel")]
    cmdline: Option<String>,
    /// Number of vCPUs (one VMSA each).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    vcpus: u32,
    /// QEMU CPU model of the vCPUs (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long)]
    vcpu_type: Option<String>,
    /// CPUID(1).EAX signature of the vCPUs (0x-hex or decimal).
    #[arg(long, value_parser = args::count)]
    vcpu_sig: Option<u32>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping), e.g. 25.
    #[arg(long, requires_all = ["vcpu_model", "vcpu_stepping"], value_parser = args::count)]
    vcpu_family: Option<u32>,
    /// vCPU model (with --vcpu-family).
    #[arg(long, requires = "vcpu_family", value_parser = args::count)]
    vcpu_model: Option<u32>,
    /// vCPU stepping (with --vcpu-family).
    #[arg(long, requires = "vcpu_family", value_parser = args::count)]
    vcpu_stepping: Option<u32>,
    /// VMSA SEV_FEATURES (KVM_SEV_INIT2 vmsa_features); bit 0 SNPActive must be set. QEMU
    /// with a 6.x host kernel gives 0x1; with debug-swap 0x21.
    #[arg(long, default_value = "0x1")]
    guest_features: String,
    /// Print every PAGE_INFO measured (source, type, GPA, contents digest, digest after).
    #[arg(long)]
    dump_launch: bool,
    /// Print the digest in base64 instead of hex.
    #[arg(long)]
    base64: bool,
}

/// Most vCPU signature bits that exist: CPUID(1).EAX bits 27:20 ext family, 19:16 ext model,
/// 11:8 family, 7:4 model, 3:0 stepping (bits 31:28 and 15:12 are reserved).
const CPU_SIG_MASK: u32 = 0x0FFF_0FFF;

fn vcpu_sig(a: &MeasureArgs) -> Result<u32> {
    if let Some(t) = &a.vcpu_type {
        return snp_measure::qemu_cpu_sig(t).ok_or_else(|| {
            let names: Vec<&str> = snp_measure::QEMU_CPU_MODELS.iter().map(|m| m.0).collect();
            anyhow!(
                "--vcpu-type: unknown CPU model '{t}'; known: {}",
                names.join(", ")
            )
        });
    }
    if let Some(s) = a.vcpu_sig {
        if s & !CPU_SIG_MASK != 0 {
            bail!(
                "--vcpu-sig: 0x{s:X} sets reserved CPUID(1).EAX bits (mask 0x{CPU_SIG_MASK:08X})"
            );
        }
        return Ok(s);
    }
    match (a.vcpu_family, a.vcpu_model, a.vcpu_stepping) {
        (Some(f), Some(m), Some(s)) => {
            if !(1..=0xFF + 0xF).contains(&f) {
                bail!("--vcpu-family: {f} is not a CPUID family (1..=270)");
            }
            if m > 0xFF {
                bail!("--vcpu-model: {m} is not a CPUID model (0..=255)");
            }
            if s > 0xF {
                bail!("--vcpu-stepping: {s} is not a CPUID stepping (0..=15)");
            }
            Ok(sev_proto::vmsa::cpu_sig(f, m, s))
        }
        _ => bail!("one of --vcpu-type, --vcpu-sig or --vcpu-family/--vcpu-model/--vcpu-stepping is required"),
    }
}

/// One line of `--dump-launch`.
fn step_text(i: usize, s: &LaunchStep<'_>) -> String {
    let src = match s.vcpu {
        Some(v) => format!("{}[{v}]", s.source),
        None => s.source.to_string(),
    };
    format!(
        "{i:6} {src:<17} {:<8} gpa=0x{:012x} contents={} ld={}",
        page_type_name(s.page.page_type),
        s.page.gpa,
        hex::encode(s.page.contents),
        hex::encode(s.ld)
    )
}

fn step_json(i: usize, s: &LaunchStep<'_>) -> Value {
    json!({
        "index": i,
        "source": s.source,
        "vcpu": s.vcpu,
        "page_type": page_type_name(s.page.page_type),
        "gpa": format!("0x{:x}", s.page.gpa),
        "contents": hex::encode(s.page.contents),
        "ld": hex::encode(s.ld),
    })
}

/// `--vmm sevm`: sevm's SNP launch of a bundled guest, through the launch's own code
/// (`vmm::confidential::snp::predict`).
fn measure_sevm(a: &MeasureArgs, out: &Output) -> Result<ExitCode> {
    use vmm::confidential::snp::SnpLaunchOps;
    let guest = a
        .guest
        .as_deref()
        .context("--vmm sevm needs --guest NAME (a bundled guest)")?;
    if a.firmware.is_some() || a.kernel.is_some() {
        bail!(
            "--vmm sevm measures a bundled guest (--guest); --firmware/--kernel are for --vmm qemu"
        );
    }
    if guests::get(guest).is_none() {
        bail!(
            "--guest {guest}: unknown bundled guest (known: {})",
            guests::NAMES.join(", ")
        );
    }
    let policy = match &a.policy {
        Some(p) => snp_policy("--policy", p)?,
        None => SnpPolicy(vmm::config::snp::DEFAULT_SNP_POLICY),
    };
    let at = vmm::config::Where::Option {
        option: format!("--policy {:#x}", policy.0),
        key: None,
    };
    vmm::config::snp::check_policy(policy.0, &at)?;
    let memory =
        vmm::parse_memory_size(&a.memory).with_context(|| format!("--memory {}", a.memory))?;
    vmm::memory::check_memory_size(memory).context("--memory")?;
    let cpus = u8::try_from(a.vcpus)
        .ok()
        .filter(|&c| usize::from(c) <= usize::from(vmm::layout::MAX_CPUS))
        .with_context(|| {
            format!(
                "--vcpus {}: a bundled guest has at most {} vCPUs",
                a.vcpus,
                vmm::layout::MAX_CPUS
            )
        })?;
    vmm::cpu::cbit_mask(Some(a.cbitpos)).context("--cbitpos")?;
    let p = vmm::confidential::snp::predict(
        memory,
        &vmm::BootSource::Bundled(guest.into()),
        a.cbitpos,
        cpus,
        a.dump_launch,
    )?;
    let ld = p
        .launch_digest()
        .context("the prediction produced no digest")?;
    let mut lines = Vec::new();
    let mut pages = Vec::new();
    for (i, pg) in p.pages.iter().enumerate() {
        let src = match pg.vcpu {
            Some(v) => format!("{}[{v}]", pg.source),
            None => pg.source.clone(),
        };
        lines.push(format!(
            "{i:6} {src:<17} {:<8} gpa=0x{:012x} contents={} ld={}",
            page_type_name(pg.page.page_type),
            pg.page.gpa,
            hex::encode(pg.page.contents),
            hex::encode(pg.ld)
        ));
        pages.push(json!({
            "index": i,
            "source": pg.source,
            "vcpu": pg.vcpu,
            "page_type": page_type_name(pg.page.page_type),
            "gpa": format!("0x{:x}", pg.page.gpa),
            "contents": hex::encode(pg.page.contents),
            "ld": hex::encode(pg.ld),
        }));
    }
    let h = hex::encode(ld);
    let b = args::encode_b64(&ld);
    let mut text = String::new();
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(if a.base64 { &b } else { &h });
    let mut v = json!({
        "measurement": h,
        "measurement_b64": b,
        "vmm": "sevm",
        "guest": guest,
        "policy": format!("{:#x}", policy.0),
        "vcpus": cpus,
        "memory": memory,
        "cbitpos": a.cbitpos,
    });
    if a.dump_launch {
        v["pages_measured"] = json!(pages.len());
        v["pages"] = Value::Array(pages);
    }
    out.emit(&v, &text);
    Ok(ExitCode::SUCCESS)
}

fn measure(a: MeasureArgs, out: &Output) -> Result<ExitCode> {
    if a.vmm == SnpVmm::Sevm {
        return measure_sevm(&a, out);
    }
    let Some(firmware) = a.firmware.clone() else {
        bail!("--vmm qemu needs --firmware OVMF");
    };
    if a.guest.is_some() {
        bail!("--guest goes with --vmm sevm");
    }
    let sig = vcpu_sig(&a)?;
    let features = args::parse_u64("--guest-features", &a.guest_features)?;
    if features & 1 == 0 {
        bail!("--guest-features: 0x{features:X} lacks bit 0 (SNPActive), which every SNP VMSA has");
    }
    let fw = sevm_files::Limit::new("--firmware", vmm::layout::FIRMWARE_MAX_SIZE)
        .why("the firmware is mapped to end at 4 GiB, in at most 16 MiB")
        .read(&firmware)?;
    let fw_err =
        |e: sev_proto::snp::FormatError| anyhow!("--firmware: {}: {e}", firmware.display());
    let footer = sev_proto::ovmf::FooterTable::parse(&fw).map_err(|e| {
        anyhow!(
            "--firmware: {}: no OVMF footer table ({e}); an SNP launch needs OVMF's SEV metadata",
            firmware.display()
        )
    })?;
    let sections = snp_measure::ovmf_sev_metadata(&fw).map_err(fw_err)?;
    if sections.is_empty() {
        bail!(
            "--firmware: {}: no OVMF SEV metadata (footer GUID dc886566-984a-4798-a75e-5585a7bf67cc); \
             not an SNP-capable OVMF build",
            firmware.display()
        );
    }
    let table = match &a.kernel {
        None => None,
        Some(k) => {
            let kh = crate::digest::sha256_file(k, "--kernel")?;
            let ih = match &a.initrd {
                Some(p) => crate::digest::sha256_file(p, "--initrd")?,
                None => sev_proto::kernel_hashes::file_hash(&[]),
            };
            let ch = sev_proto::kernel_hashes::cmdline_hash(a.cmdline.as_deref().unwrap_or(""));
            Some(sev_proto::kernel_hashes::padded_table(&kh, &ih, &ch))
        }
    };
    let vmsas =
        snp_measure::qemu_snp_vmsas(a.vcpus as usize, footer.es_reset_addr(), sig, features)
            .map_err(fw_err)?;
    let mut lines = Vec::new();
    let mut pages = Vec::new();
    let dump = a.dump_launch;
    let mut i = 0usize;
    let ld = snp_measure::qemu_ovmf_launch(&fw, table.as_ref(), &vmsas, &mut |s| {
        if dump {
            pages.push(step_json(i, s));
            lines.push(step_text(i, s));
        }
        i += 1;
    })
    .map_err(fw_err)?;
    let h = hex::encode(ld);
    let b = args::encode_b64(&ld);
    let mut text = String::new();
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(if a.base64 { &b } else { &h });
    let mut v = json!({
        "measurement": h,
        "measurement_b64": b,
        "vmm": "qemu",
        "vcpus": a.vcpus,
        "vcpu_sig": format!("0x{sig:x}"),
        "guest_features": format!("0x{features:x}"),
        "kernel_hashes": table.is_some(),
        "pages_measured": i,
    });
    if dump {
        v["pages"] = Value::Array(pages);
    }
    out.emit(&v, &text);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// id-block

#[derive(Debug, Args)]
struct IdBlockArgs {
    /// The expected launch digest: 96 hex digits (optionally 0x-prefixed) or base64 of 48 bytes.
    #[arg(long)]
    measurement: String,
    /// Guest policy (the launch policy; 0x-hex or decimal), e.g. 0x30000.
    #[arg(long)]
    policy: String,
    /// ID key: ECDSA P-384 private key, PEM.
    #[arg(long)]
    id_key: PathBuf,
    /// Author key: ECDSA P-384 private key, PEM (signs the ID key; sets AUTHOR_KEY_EN use).
    #[arg(long)]
    author_key: Option<PathBuf>,
    /// FAMILY_ID: 16 bytes (32 hex digits or base64); zero by default.
    #[arg(long)]
    family_id: Option<String>,
    /// IMAGE_ID: 16 bytes (32 hex digits or base64); zero by default.
    #[arg(long)]
    image_id: Option<String>,
    /// GUEST_SVN (32 bits).
    #[arg(long, default_value = "0", value_parser = args::count)]
    svn: u32,
    /// Where to write the ID block (base64, as snpguest and QEMU's id-block= take it).
    #[arg(long)]
    out_block: PathBuf,
    /// Where to write the ID auth structure (base64, as QEMU's id-auth= takes it).
    #[arg(long)]
    out_auth: PathBuf,
    /// Write the raw bytes (0x60 and 0x1000) instead of base64.
    #[arg(long)]
    raw: bool,
}

fn id_block(a: IdBlockArgs, out: &Output) -> Result<ExitCode> {
    let ld: [u8; 48] = fixed_bytes("--measurement", "the launch digest", &a.measurement)?;
    let policy = snp_policy("--policy", &a.policy)?;
    let fam: [u8; 16] = match &a.family_id {
        Some(v) => fixed_bytes("--family-id", "FAMILY_ID", v)?,
        None => [0; 16],
    };
    let img: [u8; 16] = match &a.image_id {
        Some(v) => fixed_bytes("--image-id", "IMAGE_ID", v)?,
        None => [0; 16],
    };
    let id_key = read_p384_key("--id-key", &a.id_key)?;
    let author = match &a.author_key {
        Some(p) => Some(read_p384_key("--author-key", p)?),
        None => None,
    };
    let block = IdBlock::new(ld, fam, img, a.svn, policy);
    let auth = IdAuth::sign(&block, &id_key, author.as_deref()).context("signing the ID block")?;
    // Check what was produced the way SNP_LAUNCH_FINISH will.
    auth.check_launch_finish(&block, &ld, policy, author.is_some())
        .map_err(|e| anyhow!("the ID block just signed does not verify: {e}"))?;
    let (bb, ab) = (block.to_bytes(), auth.to_bytes());
    let enc = |b: &[u8]| -> Vec<u8> {
        if a.raw {
            b.to_vec()
        } else {
            args::encode_b64(b).into_bytes()
        }
    };
    let ob = sevm_files::write_output(&a.out_block, "--out-block", &enc(&bb), 0o644)?;
    let oa = sevm_files::write_output(&a.out_auth, "--out-auth", &enc(&ab), 0o644)?;
    let idd = hex::encode(auth.id_key_digest());
    let aud = author
        .as_ref()
        .map(|_| hex::encode(auth.author_key_digest()));
    let v = json!({
        "id_block": a.out_block.display().to_string(),
        "id_auth": a.out_auth.display().to_string(),
        "format": if a.raw { "raw" } else { "base64" },
        "measurement": hex::encode(ld),
        "policy": format!("0x{:x}", policy.0),
        "author_key_enabled": author.is_some(),
        "id_key_digest": idd,
        "author_key_digest": aud,
    });
    let mut text = format!(
        "ID block:          {}\nID auth:           {}\nID key digest:     {idd}\n",
        a.out_block.display(),
        a.out_auth.display()
    );
    match &aud {
        Some(d) => text.push_str(&format!(
            "author key digest: {d} (use author-key-enabled=on)\n"
        )),
        None => text.push_str("author key:        none (author-key-enabled=off)\n"),
    }
    out.emit_aside(ob.is_stdout() || oa.is_stdout(), &v, &text);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// verify-report

#[derive(Debug, Args)]
struct VerifyReportArgs {
    /// The attestation report (0x4A0 bytes, as `snpguest report` or `sevm run --report-out`
    /// write it).
    report: PathBuf,
    /// Certificate directory: ark, ask (or asvk) and vcek (or vlek), each `.pem` or `.der` (the
    /// layout `snpguest`, `snphost export` and `sevm platform snp export` use).
    #[arg(long)]
    certs: PathBuf,
    /// Expected MEASUREMENT (48 bytes: hex or base64).
    #[arg(long)]
    measurement: Option<String>,
    /// Expected HOST_DATA (32 bytes: hex or base64).
    #[arg(long)]
    host_data: Option<String>,
    /// Expected REPORT_DATA (64 bytes: hex or base64).
    #[arg(long)]
    report_data: Option<String>,
    /// Expected POLICY (exact value).
    #[arg(long)]
    policy: Option<String>,
    /// Minimum REPORTED_TCB, component by component: a raw TCB_VERSION (0x-hex or decimal) or
    /// `bl=N,tee=N,snp=N,ucode=N[,fmc=N]`.
    #[arg(long)]
    min_tcb: Option<String>,
    /// Expected ID_KEY_DIGEST (48 bytes: hex or base64).
    #[arg(long)]
    id_key_digest: Option<String>,
    /// Expected AUTHOR_KEY_DIGEST (48 bytes: hex or base64).
    #[arg(long)]
    author_key_digest: Option<String>,
    /// Require the ARK in --certs to be this certificate: SHA-256 of its DER (hex or base64),
    /// as printed by a previous run. Without it the ARK in --certs is trusted as given.
    #[arg(long)]
    ark_sha256: Option<String>,
}

/// One named check of `verify-report`.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Finds `dir/NAME.pem` or `dir/NAME.der` for the first NAME of `names` that exists.
fn load_cert(dir: &Path, names: &[&str]) -> Result<(PathBuf, X509)> {
    load_cert_for("--certs", dir, names)
}

/// Loads `NAME.pem` or `NAME.der` for the first of `names` present in `dir` (the layout of
/// `snphost export` / `sevm platform snp export`); errors name `opt` and the file.
pub(crate) fn load_cert_for(
    opt: &'static str,
    dir: &Path,
    names: &[&str],
) -> Result<(PathBuf, X509)> {
    for n in names {
        for ext in ["pem", "der"] {
            let p = dir.join(format!("{n}.{ext}"));
            if std::fs::symlink_metadata(&p).is_err() {
                continue;
            }
            let b = sevm_files::Limit::new(opt, MAX_SMALL_FILE)
                .why("a certificate is a few KiB")
                .read(&p)?;
            let c = if ext == "pem" {
                X509::from_pem(&b)
            } else {
                X509::from_der(&b)
            }
            .map_err(|_| {
                anyhow!(
                    "{opt}: {}: not an X.509 certificate in {}",
                    p.display(),
                    ext.to_uppercase()
                )
            })?;
            return Ok((p, c));
        }
    }
    let want: Vec<String> = names
        .iter()
        .map(|n| format!("{n}.pem or {n}.der"))
        .collect();
    bail!(
        "{opt}: {}: no {} certificate ({})",
        dir.display(),
        names[0].to_uppercase(),
        want.join(", or ")
    )
}

/// Parses `--min-tcb`.
fn parse_tcb(arg: &str, value: &str, layout: TcbLayout) -> Result<TcbVersion> {
    if value.contains('=') {
        let mut t = TcbVersion::default();
        for part in value.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("{arg}: '{part}' is not KEY=N"))?;
            let n = args::parse_u8(arg, v)?;
            match k.trim().to_ascii_lowercase().as_str() {
                "bl" | "bootloader" => t.bootloader = n,
                "tee" => t.tee = n,
                "snp" => t.snp = n,
                "ucode" | "microcode" => t.microcode = n,
                "fmc" => t.fmc = n,
                other => bail!("{arg}: unknown TCB component '{other}' (bl, tee, snp, ucode, fmc)"),
            }
        }
        Ok(t)
    } else {
        let raw = args::parse_u64(arg, value)?;
        TcbVersion::decode(raw, layout).map_err(|e| anyhow!("{arg}: {value}: {e}"))
    }
}

fn field_check<const N: usize>(
    checks: &mut Vec<Check>,
    name: &'static str,
    arg: &str,
    expected: &Option<String>,
    got: &[u8; N],
) -> Result<()> {
    if let Some(e) = expected {
        let want: [u8; N] = fixed_bytes(arg, name, e)?;
        let ok = &want == got;
        checks.push(Check {
            name,
            ok,
            detail: if ok {
                format!("{} as expected", hex::encode(got))
            } else {
                format!(
                    "report has {}, expected {}",
                    hex::encode(got),
                    hex::encode(want)
                )
            },
        });
    }
    Ok(())
}

fn verify_report(a: VerifyReportArgs, out: &Output) -> Result<ExitCode> {
    let v = report_verdict(&a)?;
    out.emit(&v.json, &v.text);
    Ok(if v.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `verify-report` concluded.
pub(crate) struct Verdict {
    /// Every check held.
    pub ok: bool,
    /// The failed checks as `name: detail`.
    pub failed: Vec<String>,
    /// The text `verify-report` prints.
    pub text: String,
    json: Value,
}

/// `sevm owner snp verify-report REPORT --certs DIR` with the expected values given as hex
/// (the checks of the command, for `sevm demo --snp`).
pub(crate) fn verify_report_file(
    report: &Path,
    certs: &Path,
    measurement: &[u8; 48],
    host_data: &[u8; 32],
    policy: u64,
    id_key_digest: &[u8; 48],
) -> Result<Verdict> {
    report_verdict(&VerifyReportArgs {
        report: report.to_path_buf(),
        certs: certs.to_path_buf(),
        measurement: Some(hex::encode(measurement)),
        host_data: Some(hex::encode(host_data)),
        report_data: None,
        policy: Some(format!("{policy:#x}")),
        min_tcb: None,
        id_key_digest: Some(hex::encode(id_key_digest)),
        author_key_digest: None,
        ark_sha256: None,
    })
}

fn report_verdict(a: &VerifyReportArgs) -> Result<Verdict> {
    // Every argument is checked before any verification runs.
    let (_, r) = read_report("REPORT", &a.report)?;
    let layout = r.tcb_layout();
    let policy = a
        .policy
        .as_deref()
        .map(|p| args::parse_u64("--policy", p))
        .transpose()?;
    let min_tcb = a
        .min_tcb
        .as_deref()
        .map(|t| parse_tcb("--min-tcb", t, layout))
        .transpose()?;
    if !a.certs.is_dir() {
        bail!("--certs: {}: not a directory", a.certs.display());
    }
    let (ark_p, ark) = load_cert(&a.certs, &["ark"])?;
    let (ask_p, ask) = load_cert(&a.certs, &["ask", "asvk"])?;
    let (vek_p, vek) = load_cert(&a.certs, &["vcek", "vlek"])?;
    let is_vlek = vek_p
        .file_stem()
        .is_some_and(|s| s.eq_ignore_ascii_case("vlek"));
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (ark_n, ask_n, vek_n) = (name(&ark_p), name(&ask_p), name(&vek_p));
    let ark_fp: [u8; 32] = openssl::sha::sha256(
        &ark.to_der()
            .with_context(|| format!("--certs: {}: cannot encode", ark_p.display()))?,
    );
    let pin: Option<[u8; 32]> = a
        .ark_sha256
        .as_deref()
        .map(|v| fixed_bytes("--ark-sha256", "the ARK fingerprint", v))
        .transpose()?;

    let mut checks = Vec::new();
    if let Some(want) = pin {
        let ok = want == ark_fp;
        checks.push(Check {
            name: "ark_pinned",
            ok,
            detail: if ok {
                format!("{ark_n} has the SHA-256 given")
            } else {
                format!(
                    "{ark_n} has SHA-256 {}, --ark-sha256 wants {}",
                    hex::encode(ark_fp),
                    hex::encode(want)
                )
            },
        });
    }
    let sig_check = |name: &'static str, cert: &X509, issuer: &X509, what: String| {
        let ok = issuer
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false);
        Check {
            name,
            ok,
            detail: if ok { what } else { format!("NOT: {what}") },
        }
    };
    checks.push(sig_check(
        "ark_self_signed",
        &ark,
        &ark,
        format!("{ark_n} is self-signed"),
    ));
    checks.push(sig_check(
        "ask_signed_by_ark",
        &ask,
        &ark,
        format!("{ask_n} is signed by {ark_n}"),
    ));
    checks.push(sig_check(
        "vcek_signed_by_ask",
        &vek,
        &ask,
        format!("{vek_n} is signed by {ask_n}"),
    ));

    // The report signature.
    let want_key = if is_vlek { 1 } else { 0 };
    let sk = r.signing_key();
    let sig = match vek.public_key() {
        Err(e) => Check {
            name: "report_signature",
            ok: false,
            detail: format!("{vek_n}: no usable public key ({e})"),
        },
        Ok(_) if sk != want_key => Check {
            name: "report_signature",
            ok: false,
            detail: format!(
                "KEY_INFO.SIGNING_KEY is {sk} ({}), but the certificate is {vek_n}",
                signing_key_name(sk)
            ),
        },
        Ok(k) => match r.verify(&k) {
            Ok(()) => Check {
                name: "report_signature",
                ok: true,
                detail: format!("signed by the key of {vek_n}"),
            },
            Err(e) => Check {
                name: "report_signature",
                ok: false,
                detail: format!("{e} with the key of {vek_n}"),
            },
        },
    };
    checks.push(sig);

    // REPORTED_TCB and CHIP_ID against the VCEK's extensions.
    match VcekExtensions::from_x509(&vek) {
        Err(e) => checks.push(Check {
            name: "reported_tcb",
            ok: false,
            detail: format!("{vek_n}: AMD extensions unreadable: {e}"),
        }),
        Ok(ext) => {
            let got = r.decode_tcb(r.reported_tcb);
            checks.push(match (ext.tcb(layout), got) {
                (Err(e), _) => Check {
                    name: "reported_tcb",
                    ok: false,
                    detail: format!("{vek_n}: {e}"),
                },
                (_, Err(e)) => Check {
                    name: "reported_tcb",
                    ok: false,
                    detail: e.to_string(),
                },
                (Ok(want), Ok(got)) => Check {
                    name: "reported_tcb",
                    ok: want == got,
                    detail: if want == got {
                        format!("{got} = the TCB of {vek_n}")
                    } else {
                        format!("report has {got}, {vek_n} is for {want}")
                    },
                },
            });
            match &ext.hw_id {
                Some(hw) => {
                    let n = hw.len().min(64);
                    let ok = hw.len() <= 64
                        && r.chip_id[..n] == hw[..]
                        && r.chip_id[n..].iter().all(|&x| x == 0);
                    checks.push(Check {
                        name: "chip_id",
                        ok,
                        detail: if ok {
                            format!("CHIP_ID = the hwID of {vek_n}")
                        } else {
                            format!(
                                "CHIP_ID {} differs from the hwID of {vek_n} ({})",
                                hex::encode(r.chip_id),
                                hex::encode(hw)
                            )
                        },
                    });
                }
                None if !is_vlek => checks.push(Check {
                    name: "chip_id",
                    ok: false,
                    detail: format!("{vek_n} has no hwID extension (1.3.6.1.4.1.3704.1.4)"),
                }),
                None => {}
            }
        }
    }

    // Expected values.
    field_check(
        &mut checks,
        "measurement",
        "--measurement",
        &a.measurement,
        &r.measurement,
    )?;
    field_check(
        &mut checks,
        "host_data",
        "--host-data",
        &a.host_data,
        &r.host_data,
    )?;
    field_check(
        &mut checks,
        "report_data",
        "--report-data",
        &a.report_data,
        &r.report_data,
    )?;
    if let Some(p) = policy {
        let ok = r.policy.0 == p;
        checks.push(Check {
            name: "policy",
            ok,
            detail: if ok {
                format!("{} as expected", r.policy)
            } else {
                format!("report has {}, expected {}", r.policy, SnpPolicy(p))
            },
        });
    }
    if let Some(min) = min_tcb {
        checks.push(match r.decode_tcb(r.reported_tcb) {
            Err(e) => Check {
                name: "min_tcb",
                ok: false,
                detail: e.to_string(),
            },
            Ok(got) => {
                let ok = min.le_componentwise(&got);
                Check {
                    name: "min_tcb",
                    ok,
                    detail: if ok {
                        format!("REPORTED_TCB {got} >= {min}")
                    } else {
                        format!("REPORTED_TCB {got} is below the minimum {min}")
                    },
                }
            }
        });
    }
    field_check(
        &mut checks,
        "id_key_digest",
        "--id-key-digest",
        &a.id_key_digest,
        &r.id_key_digest,
    )?;
    field_check(
        &mut checks,
        "author_key_digest",
        "--author-key-digest",
        &a.author_key_digest,
        &r.author_key_digest,
    )?;

    let ok = checks.iter().all(|c| c.ok);
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let mut text = String::new();
    for c in &checks {
        text.push_str(&format!(
            "{} {:<18} {}\n",
            if c.ok { "OK  " } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    if pin.is_none() {
        text.push_str(&format!(
            "note: the ARK {ark_n} is trusted as given (SHA-256 {}); pin it with --ark-sha256\n",
            hex::encode(ark_fp)
        ));
    }
    text.push_str(&if ok {
        "report verified: every check holds\n".to_string()
    } else {
        format!("report NOT verified: failed {}\n", failed.join(", "))
    });
    let v = json!({
        "ok": ok,
        "ark_sha256": hex::encode(ark_fp),
        "report": a.report.display().to_string(),
        "certs": a.certs.display().to_string(),
        "failed": failed,
        "checks": checks.iter().map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
    });
    Ok(Verdict {
        ok,
        failed: checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect(),
        text,
        json: v,
    })
}

// ---------------------------------------------------------------------------------------------
// show

#[derive(Debug, Args)]
struct ShowArgs {
    /// The attestation report (0x4A0 bytes).
    report: PathBuf,
}

fn signing_key_name(k: u8) -> &'static str {
    match k {
        0 => "VCEK",
        1 => "VLEK",
        7 => "none",
        _ => "reserved",
    }
}

const PLATFORM_INFO_BITS: [(u32, &str); 7] = [
    (0, "SMT_EN"),
    (1, "TSME_EN"),
    (2, "ECC_EN"),
    (3, "RAPL_DIS"),
    (4, "CIPHERTEXT_HIDING_EN"),
    (5, "ALIAS_CHECK_COMPLETE"),
    (7, "TIO_EN"),
];

fn platform_info_names(v: u64) -> Vec<String> {
    let mut names: Vec<String> = PLATFORM_INFO_BITS
        .iter()
        .filter(|(b, _)| (v >> b) & 1 != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known: u64 = PLATFORM_INFO_BITS.iter().map(|(b, _)| 1u64 << b).sum();
    if v & !known != 0 {
        names.push(format!("unknown=0x{:x}", v & !known));
    }
    names
}

fn tcb_json(r: &AttestationReport, raw: u64) -> Value {
    match r.decode_tcb(raw) {
        Ok(t) => json!({
            "raw": format!("0x{raw:016x}"),
            "fmc": (r.tcb_layout() == TcbLayout::Turin).then_some(t.fmc),
            "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode,
        }),
        Err(e) => json!({"raw": format!("0x{raw:016x}"), "error": e.to_string()}),
    }
}

fn tcb_text(r: &AttestationReport, raw: u64) -> String {
    match r.decode_tcb(raw) {
        Ok(t) if r.tcb_layout() == TcbLayout::Turin => format!("0x{raw:016x} ({t})"),
        Ok(t) => format!(
            "0x{raw:016x} (BL {} TEE {} SNP {} uCode {})",
            t.bootloader, t.tee, t.snp, t.microcode
        ),
        Err(e) => format!("0x{raw:016x} (cannot decode: {e})"),
    }
}

/// The big-endian hex of a 72-byte little-endian signature component (48 significant bytes).
fn sig_hex(le: &[u8; 72]) -> String {
    let be: Vec<u8> = le[..48].iter().rev().copied().collect();
    hex::encode(be)
}

fn show(a: ShowArgs, out: &Output) -> Result<ExitCode> {
    let (_, r) = read_report("REPORT", &a.report)?;
    let product = match r.product() {
        Some(Product::Milan) => "Milan",
        Some(Product::Genoa) => "Genoa",
        Some(Product::Turin) => "Turin",
        None => "unknown (a version-2 report does not tell Milan from Genoa)",
    };
    let p = r.policy;
    let pol_flags: Vec<&str> = SnpPolicy::FLAG_NAMES
        .iter()
        .filter(|(b, _)| p.0 & b != 0)
        .map(|(_, n)| *n)
        .collect();
    let ver = |v: sev_proto::snp::report::FwVersion| format!("{}.{}.{}", v.major, v.minor, v.build);
    let fms = r
        .cpuid
        .map(|f| json!({"family": format!("0x{:x}", f.family), "model": format!("0x{:x}", f.model), "stepping": format!("0x{:x}", f.stepping)}));
    let v = json!({
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": {
            "raw": format!("0x{:x}", p.0),
            "abi_major": p.abi_major(), "abi_minor": p.abi_minor(),
            "flags": pol_flags,
            "reserved_mbz": format!("0x{:x}", p.0 & SnpPolicy::RESERVED_MBZ),
        },
        "family_id": hex::encode(r.family_id),
        "image_id": hex::encode(r.image_id),
        "vmpl": r.vmpl,
        "signature_algo": r.signature_algo,
        "current_tcb": tcb_json(&r, r.current_tcb),
        "platform_info": {"raw": format!("0x{:x}", r.platform_info), "flags": platform_info_names(r.platform_info)},
        "key_info": {
            "raw": format!("0x{:x}", r.key_info),
            "author_key_en": r.author_key_en(),
            "mask_chip_key": r.mask_chip_key(),
            "signing_key": signing_key_name(r.signing_key()),
        },
        "report_data": hex::encode(r.report_data),
        "measurement": hex::encode(r.measurement),
        "host_data": hex::encode(r.host_data),
        "id_key_digest": hex::encode(r.id_key_digest),
        "author_key_digest": hex::encode(r.author_key_digest),
        "report_id": hex::encode(r.report_id),
        "report_id_ma": hex::encode(r.report_id_ma),
        "reported_tcb": tcb_json(&r, r.reported_tcb),
        "cpuid": fms,
        "product": product,
        "chip_id": hex::encode(r.chip_id),
        "committed_tcb": tcb_json(&r, r.committed_tcb),
        "current_version": ver(r.current_version),
        "committed_version": ver(r.committed_version),
        "launch_tcb": tcb_json(&r, r.launch_tcb),
        "launch_mit_vector": r.launch_mit_vector.map(|x| format!("0x{x:x}")),
        "current_mit_vector": r.current_mit_vector.map(|x| format!("0x{x:x}")),
        "signature": {"r": sig_hex(&r.signature.r), "s": sig_hex(&r.signature.s)},
    });
    let mut t = String::new();
    let mut line = |k: &str, v: String| t.push_str(&format!("{k:<19} {v}\n"));
    line("VERSION", r.version.to_string());
    line("GUEST_SVN", r.guest_svn.to_string());
    line("POLICY", p.to_string());
    line("FAMILY_ID", hex::encode(r.family_id));
    line("IMAGE_ID", hex::encode(r.image_id));
    line("VMPL", r.vmpl.to_string());
    line(
        "SIGNATURE_ALGO",
        format!(
            "{}{}",
            r.signature_algo,
            if r.signature_algo == 1 {
                " (ECDSA P-384 with SHA-384)"
            } else {
                " (unknown)"
            }
        ),
    );
    line("CURRENT_TCB", tcb_text(&r, r.current_tcb));
    line(
        "PLATFORM_INFO",
        format!(
            "0x{:x} ({})",
            r.platform_info,
            platform_info_names(r.platform_info).join(" ")
        ),
    );
    line(
        "KEY_INFO",
        format!(
            "0x{:x} (AUTHOR_KEY_EN {}, MASK_CHIP_KEY {}, SIGNING_KEY {})",
            r.key_info,
            u8::from(r.author_key_en()),
            u8::from(r.mask_chip_key()),
            signing_key_name(r.signing_key())
        ),
    );
    line("REPORT_DATA", hex::encode(r.report_data));
    line("MEASUREMENT", hex::encode(r.measurement));
    line("HOST_DATA", hex::encode(r.host_data));
    line("ID_KEY_DIGEST", hex::encode(r.id_key_digest));
    line("AUTHOR_KEY_DIGEST", hex::encode(r.author_key_digest));
    line("REPORT_ID", hex::encode(r.report_id));
    line("REPORT_ID_MA", hex::encode(r.report_id_ma));
    line("REPORTED_TCB", tcb_text(&r, r.reported_tcb));
    if let Some(f) = r.cpuid {
        line(
            "CPUID_FMS",
            format!(
                "family 0x{:x} model 0x{:x} stepping 0x{:x}",
                f.family, f.model, f.stepping
            ),
        );
    }
    line("PRODUCT", product.to_string());
    line("CHIP_ID", hex::encode(r.chip_id));
    line("COMMITTED_TCB", tcb_text(&r, r.committed_tcb));
    line("CURRENT_VERSION", ver(r.current_version));
    line("COMMITTED_VERSION", ver(r.committed_version));
    line("LAUNCH_TCB", tcb_text(&r, r.launch_tcb));
    if let (Some(l), Some(c)) = (r.launch_mit_vector, r.current_mit_vector) {
        line("LAUNCH_MIT_VECTOR", format!("0x{l:x}"));
        line("CURRENT_MIT_VECTOR", format!("0x{c:x}"));
    }
    line("SIGNATURE.R", sig_hex(&r.signature.r));
    line("SIGNATURE.S", sig_hex(&r.signature.s));
    out.emit(&v, &t);
    Ok(ExitCode::SUCCESS)
}
