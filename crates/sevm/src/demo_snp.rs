//! `sevm demo --snp`: the whole SEV-SNP story on the soft backend in one command. The owner
//! checks the platform's certificate chain, predicts the launch digest, signs an ID block for
//! it and makes a fresh nonce; sevm launches the bundled `snp-attest` guest in its
//! sealed-secret mode (docs/LAYOUT.md); the guest makes an ephemeral X25519 key, asks the
//! firmware for a report with REPORT_DATA = its public key ‖ the nonce and hands the report to
//! the owner through the doorbell's owner step; the owner verifies the report (the checks of
//! `sevm owner snp verify-report`, plus the nonce) and only then seals a random secret to the
//! guest's key (X25519 + HKDF-SHA256 + AES-256-GCM, OpenSSL); the guest opens it and prints
//! its SHA-256, which must equal the owner's. The secret itself is never printed or logged.
//!
//! `--tamper` (= `--tamper-at report`): the host flips a byte of the report's MEASUREMENT before
//! the owner sees it, so the owner refuses (bad signature, wrong measurement) and no secret is
//! released. `--tamper-at secret`: the host flips a byte of the sealed secret on its way to
//! the guest, so the guest's AES-256-GCM tag check refuses it. Either way the demo exits 1
//! and says why.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use guests::abi;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey};
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rand::rand_bytes;
use openssl::sha::sha256;
use openssl::symm::{encrypt_aead, Cipher};
use sev_firmware::snp::ca::SoftCa;
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::SevPlatform;
use sev_proto::snp::certs::{encode_cert_table, CertTableEntry, GUID_ARK, GUID_ASK, GUID_VCEK};
use sev_proto::snp::id_block::{IdAuth, IdBlock};
use sev_proto::snp::policy::SnpPolicy;
use vmm::builder::{Launched, SnpBackend, SnpSpec, VmBuilder};
use vmm::confidential::snp::{SnpLaunchOps, SnpLaunchParams};
use vmm::confidential::ResetMode;
use vmm::snp_request::SecretOwner;
use vmm::{BootSource, ExitStatus, SerialOut, VmConfig};
use zeroize::Zeroizing;

/// What `--tamper-at` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TamperAt {
    /// The host flips a byte of the report's MEASUREMENT before the owner sees it.
    Report,
    /// The host flips a byte of the sealed secret on its way to the guest.
    Secret,
}

/// Guest policy of the demo (QEMU's default: SMT allowed, bit 17 set).
const POLICY: u64 = 0x30000;
/// Guest RAM of the demo.
const MEMORY: u64 = 64 << 20;
/// Size of the released secret.
const SECRET_LEN: usize = 32;

/// Numbered steps with their timing; shared with the owner, which runs on the vCPU thread.
#[derive(Clone)]
struct Steps(Arc<Mutex<u32>>);

impl Steps {
    fn step<T>(&self, what: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let n = {
            let mut n = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        match r {
            Ok((v, detail)) => {
                println!("[{n}] {what}: {detail} ({ms:.1} ms) OK");
                Ok(v)
            }
            Err(e) => {
                println!("[{n}] {what}: FAILED ({ms:.1} ms): {e:#}");
                Err(e)
            }
        }
    }
}

/// The guest owner: what it expects and what it released.
struct Owner {
    steps: Steps,
    certs: PathBuf,
    work: PathBuf,
    measurement: [u8; 48],
    host_data: [u8; 32],
    id_key_digest: [u8; 48],
    nonce: [u8; 32],
    tamper: Option<TamperAt>,
    /// SHA-256 of the secret released (the secret itself is dropped, zeroized, after sealing).
    released: Mutex<Option<[u8; 32]>>,
    /// Why the owner refused, if it did.
    refused: Mutex<Option<String>>,
}

impl SecretOwner for Owner {
    fn release(&self, report_rsp: &[u8]) -> Result<Vec<u8>, String> {
        let r = self.release_inner(report_rsp);
        if let Err(e) = &r {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
        }
        r.map_err(|e| format!("{e:#}"))
    }
}

impl Owner {
    fn release_inner(&self, rsp: &[u8]) -> Result<Vec<u8>> {
        // MSG_REPORT_RSP: u32 status, u32 size, 24 reserved, the report.
        let report = self
            .steps
            .step("host: relay the guest's report to the owner", || {
                if rsp.len() < 0x20 + 0x4a0 {
                    bail!("MSG_REPORT_RSP: {} bytes, expected 0x4c0", rsp.len());
                }
                let status = u32::from_le_bytes([rsp[0], rsp[1], rsp[2], rsp[3]]);
                let size = u32::from_le_bytes([rsp[4], rsp[5], rsp[6], rsp[7]]);
                if status != 0 || size != 0x4a0 {
                    bail!(
                        "MSG_REPORT_RSP: STATUS {status:#x}, REPORT_SIZE {size:#x} (want 0, 0x4a0)"
                    );
                }
                let mut report = rsp[0x20..0x20 + 0x4a0].to_vec();
                let d = if self.tamper == Some(TamperAt::Report) {
                    // MEASUREMENT is at 0x90 in the report.
                    report[0x90] ^= 0x01;
                    "0x4a0 bytes; TAMPERED: the host flipped a bit of MEASUREMENT".to_string()
                } else {
                    "0x4a0 bytes, unchanged".to_string()
                };
                Ok((report, d))
            })?;
        let path = self.work.join("report.bin");
        let gpk: [u8; 32] = self.steps.step(
            "owner: verify the report (chain, signature, TCB, MEASUREMENT, HOST_DATA, POLICY, \
             ID key, nonce)",
            || {
                sevm_files::write_output(&path, "report", &report, sevm_files::MODE_PUBLIC)?;
                let v = crate::owner_snp::verify_report_file(
                    &path,
                    &self.certs,
                    &self.measurement,
                    &self.host_data,
                    POLICY,
                    &self.id_key_digest,
                )?;
                let rd = &report[0x50..0x90];
                let mut failed = v.failed.clone();
                if !openssl::memcmp::eq(&rd[32..64], &self.nonce) {
                    failed.push(format!(
                        "nonce: REPORT_DATA[32..64] is {}, the owner's nonce is {}",
                        hex::encode(&rd[32..64]),
                        hex::encode(self.nonce)
                    ));
                }
                if !failed.is_empty() {
                    bail!("the report does not verify: {}", failed.join("; "));
                }
                let gpk: [u8; 32] = rd[..32].try_into().context("REPORT_DATA[0..32]")?;
                Ok((gpk, format!("guest key {}", hex::encode(gpk))))
            },
        )?;
        self.steps.step(
            "owner: seal a fresh secret to the guest's X25519 key",
            || {
                let mut b = self.seal(&gpk)?;
                let sha = self
                    .released
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map(hex::encode)
                    .unwrap_or_default();
                let mut d = format!(
                    "X25519 + HKDF-SHA256 + AES-256-GCM, {SECRET_LEN}-byte secret, owner's \
                     secret sha256={sha}"
                );
                if self.tamper == Some(TamperAt::Secret) {
                    b[abi::SNP_BOX_CIPHERTEXT as usize + 5] ^= 0x01;
                    d.push_str("; TAMPERED: the host flipped a bit of the ciphertext");
                }
                Ok((b, d))
            },
        )
    }

    /// The box page (docs/LAYOUT.md "sealed secret"), for the guest key `gpk`.
    fn seal(&self, gpk: &[u8; 32]) -> Result<Vec<u8>> {
        let okey = PKey::generate_x25519().context("X25519 key generation")?;
        let opk: [u8; 32] = okey
            .raw_public_key()?
            .as_slice()
            .try_into()
            .context("X25519 public key size")?;
        let peer = PKey::public_key_from_raw_bytes(gpk, Id::X25519)
            .context("REPORT_DATA[0..32] is not an X25519 public key")?;
        let mut der = Deriver::new(&okey)?;
        der.set_peer(&peer)?;
        let shared = Zeroizing::new(
            der.derive_to_vec()
                .context("X25519 with the guest's key (a low-order point?)")?,
        );
        let mut info = abi::SNP_HKDF_INFO.to_vec();
        info.extend_from_slice(gpk);
        info.extend_from_slice(&opk);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
        ctx.derive_init()?;
        ctx.set_hkdf_md(Md::sha256())?;
        ctx.set_hkdf_salt(&self.nonce)?;
        ctx.set_hkdf_key(&shared)?;
        ctx.add_hkdf_info(&info)?;
        ctx.derive(Some(&mut key[..]))?;
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        rand_bytes(&mut secret[..])?;
        let mut b = vec![0u8; abi::SNP_BOX_CIPHERTEXT as usize + SECRET_LEN];
        let mut iv = [0u8; 12];
        rand_bytes(&mut iv[..8])?;
        b[0x20..0x28].copy_from_slice(&iv[..8]);
        let o = abi::SNP_BOX_OWNER_PUB as usize;
        b[o..o + 32].copy_from_slice(&opk);
        let o = abi::SNP_BOX_SIZE as usize;
        b[o..o + 2].copy_from_slice(&(SECRET_LEN as u16).to_le_bytes());
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &key[..],
            Some(&iv),
            &b[0x30..0x60],
            &secret[..],
            &mut tag,
        )?;
        b[..16].copy_from_slice(&tag);
        b[abi::SNP_BOX_CIPHERTEXT as usize..].copy_from_slice(&ct);
        *self.released.lock().unwrap_or_else(|e| e.into_inner()) = Some(sha256(&secret[..]));
        Ok(b)
    }
}

/// Runs `sevm demo --snp`.
pub fn run(platform_dir: &Path, kvm_device: &Path, tamper: Option<TamperAt>) -> Result<ExitCode> {
    let start = Instant::now();
    let steps = Steps(Arc::new(Mutex::new(0)));
    let work = tempfile::tempdir().context("a temporary directory for the owner's files")?;
    let (platform, cbit) = steps.step("soft SEV-SNP platform", || {
        sevm_files::create_private_dir(platform_dir, "platform directory")
            .with_context(|| format!("platform directory {}", platform_dir.display()))?;
        let legacy = sev_firmware::soft::SoftPlatform::open(platform_dir).with_context(|| {
            format!(
                "opening the soft SEV platform in {}",
                platform_dir.display()
            )
        })?;
        let cbit = legacy.cbit_pos()?;
        let p =
            SoftSnpPlatform::open(platform_dir, SoftSnpConfig::default()).with_context(|| {
                format!(
                    "opening the soft SNP platform in {}",
                    platform_dir.display()
                )
            })?;
        let d = format!(
            "{} (C-bit {cbit}; NOT AMD hardware)",
            platform_dir.display()
        );
        Ok(((p, cbit), d))
    })?;
    let certs = work.path().join("certs");
    let cert_table = steps.step(
        "owner: the platform's ARK -> ASK -> VCEK chain (sevm platform snp export)",
        || {
            let ca = SoftCa::load_or_create(platform_dir)
                .with_context(|| format!("the soft ARK/ASK in {}", platform_dir.display()))?;
            let vcek = platform
                .vcek_cert(&ca, platform.reported_tcb())
                .context("making the VCEK certificate for the reported TCB")?;
            for (c, by, what) in [
                (&ca.ark, &ca.ark, "ARK self-signed"),
                (&ca.ask, &ca.ark, "ASK by ARK"),
                (&vcek, &ca.ask, "VCEK by ASK"),
            ] {
                if !c.verify(&*by.public_key()?).unwrap_or(false) {
                    bail!("the platform's chain does not verify: {what}");
                }
            }
            std::fs::create_dir_all(&certs)?;
            let mut entries = Vec::new();
            for (name, c, guid) in [
                ("ark", &ca.ark, GUID_ARK),
                ("ask", &ca.ask, GUID_ASK),
                ("vcek", &vcek, GUID_VCEK),
            ] {
                let der = c.to_der()?;
                sevm_files::write_output(
                    &certs.join(format!("{name}.der")),
                    "export",
                    &der,
                    sevm_files::MODE_PUBLIC,
                )?;
                entries.push(CertTableEntry { guid, data: der });
            }
            let table = encode_cert_table(&entries).context("encoding the certificate table")?;
            let fp = hex::encode(sha256(&ca.ark.to_der()?));
            Ok((table, format!("verifies; ARK SHA-256 {}", &fp[..16])))
        },
    )?;
    let boot = BootSource::Bundled("snp-attest".into());
    let measurement = steps.step(
        "owner: expected MEASUREMENT (sevm owner snp measure --vmm sevm --guest snp-attest)",
        || {
            let p = vmm::confidential::snp::predict(MEMORY, &boot, cbit, 1, false)?;
            let ld = p
                .launch_digest()
                .context("the prediction produced no digest")?;
            Ok((ld, hex::encode(ld)))
        },
    )?;
    let (id, id_key_digest) =
        steps.step("owner: sign an ID block for it (P-384 ID key)", || {
            let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
            let id_key = PKey::from_ec_key(EcKey::generate(&group)?)?;
            let block = IdBlock::new(measurement, [0; 16], [0; 16], 0, SnpPolicy(POLICY));
            let auth = IdAuth::sign(&block, &id_key, None).context("signing the ID block")?;
            auth.check_launch_finish(&block, &measurement, SnpPolicy(POLICY), false)
                .map_err(|e| anyhow::anyhow!("the ID block just signed does not verify: {e}"))?;
            let digest = auth.id_key_digest();
            let d = format!("ID key digest {}", &hex::encode(digest)[..16]);
            Ok((
                (
                    (block.to_bytes().to_vec(), auth.to_bytes().to_vec()),
                    digest,
                ),
                d,
            ))
        })?;
    let (nonce, host_data) = steps.step("owner: a fresh nonce", || {
        let mut nonce = [0u8; 32];
        rand_bytes(&mut nonce)?;
        let mut host_data = [0u8; 32];
        rand_bytes(&mut host_data)?;
        Ok((
            (nonce, host_data),
            format!(
                "{} (REPORT_DATA[32..64]); HOST_DATA {}",
                hex::encode(nonce),
                &hex::encode(host_data)[..16]
            ),
        ))
    })?;
    let owner = Arc::new(Owner {
        steps: steps.clone(),
        certs: certs.clone(),
        work: work.path().to_path_buf(),
        measurement,
        host_data,
        id_key_digest,
        nonce,
        tamper,
        released: Mutex::new(None),
        refused: Mutex::new(None),
    });
    let serial = Arc::new(Mutex::new(Vec::new()));
    let vm_cfg = VmConfig {
        memory: MEMORY,
        cpus: 1,
        boot: boot.clone(),
        serial: SerialOut::Buffer(serial.clone()),
        kvm_path: kvm_device.to_path_buf(),
        timeout: Some(Duration::from_secs(60)),
        ..VmConfig::default()
    };
    let mut report_data = [0u8; 64];
    report_data[32..].copy_from_slice(&nonce);
    let params = SnpLaunchParams {
        policy: SnpPolicy(POLICY),
        gosvw: [0; 16],
        id: Some(id),
        author_key: false,
        vcek_disabled: false,
        host_data,
        cbitpos: cbit,
        reduced_phys_bits: 1,
        report_data: Some(report_data),
        cert_table: Some(cert_table),
        on_reset: ResetMode::Shutdown,
        owner: Some(owner.clone() as Arc<dyn SecretOwner>),
    };
    let Launched {
        mut vm,
        snp: handle,
        ..
    } = steps.step("host: build the VM (LAUNCH_START, LAUNCH_UPDATE)", || {
        let l = VmBuilder::new(vm_cfg)
            .snp(Some(SnpSpec {
                backend: SnpBackend::Soft(platform.clone()),
                params,
            }))
            .build()?;
        Ok((l, "snp-attest, 1 vCPU, 64 MiB".to_string()))
    })?;
    let handle = handle.context("the SNP build returned no launch")?;
    println!("    (LAUNCH_FINISH with the ID block, then the guest runs; owner steps follow)");
    let t = Instant::now();
    let status = vm.run();
    let run_ms = t.elapsed().as_secs_f64() * 1000.0;
    let digest = handle.launch_digest();
    handle.end();
    let text =
        String::from_utf8_lossy(&serial.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    for line in text.lines() {
        println!("    guest| {line}");
    }
    let status = status.context("running the guest")?;
    let refused = owner
        .refused
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let released = *owner.released.lock().unwrap_or_else(|e| e.into_inner());
    let guest_sha = text
        .lines()
        .find_map(|l| l.strip_prefix("secret sha256="))
        .map(str::trim);
    let verdict = steps.step("guest: open the secret and print its SHA-256", || {
        if digest != Some(measurement) {
            bail!(
                "the launch's MEASUREMENT {} is not the owner's prediction {}",
                digest.map(hex::encode).unwrap_or_default(),
                hex::encode(measurement)
            );
        }
        if let Some(why) = &refused {
            bail!("REFUSED by the owner: {why}");
        }
        if status != ExitStatus::Exited(0) {
            bail!(
                "REFUSED by the guest: it stopped with {status:?} (see its lines above; exit \
                 code {:#x} = sealed-secret step {:#x} + {:#x})",
                status.exit_code(),
                abi::SNP_ATTEST_SEAL,
                status
                    .exit_code()
                    .wrapping_sub(i32::from(abi::SNP_ATTEST_SEAL))
            );
        }
        let (Some(owner_sha), Some(g)) = (released, guest_sha) else {
            bail!("the owner released no secret or the guest printed no SHA-256");
        };
        if g != hex::encode(owner_sha) {
            bail!(
                "the guest's SHA-256 {g} is not the owner's {}",
                hex::encode(owner_sha)
            );
        }
        Ok((
            (),
            format!("{g} = the owner's (guest ran {run_ms:.1} ms including the owner steps)"),
        ))
    });
    match verdict {
        Ok(()) => {
            println!(
                "sevm demo --snp: OK in {:.1} ms: the secret went only to the guest the owner \
                 verified",
                start.elapsed().as_secs_f64() * 1000.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("sevm demo --snp: REFUSED: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
