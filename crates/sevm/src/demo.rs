//! `sevm demo`: the whole SEV story in one command, on the soft platform. The guest owner
//! verifies the platform's chain, makes a session, sevm launches the `secret-reader` guest
//! under SEV (paused after LAUNCH_MEASURE), the owner checks the measurement against the
//! digest it computed itself, injects a secret, and the guest proves it read it.
//! `--tamper` changes one image byte after the owner computed its digest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use openssl::rand::rand_bytes;
use openssl::sha::sha256;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::SevPlatform;
use sev_proto::measure::LaunchMeasure;
use sev_proto::secret_table::SecretTable;
use vm_memory_shim::write_byte;
use vmm::builder::{LaunchBackend, Launched, SevSpec, VmBuilder};
use vmm::confidential::{LaunchParams, PlatformInfo};
use vmm::{BootSource, SerialOut, VmConfig};

use crate::output::Output;

/// The GUID of the demo's secret entry.
pub const DEMO_SECRET_GUID: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e7e_d0c0_5e71_4d0e_9a3c_0000_0000_0001);

/// Guest policy of the demo: NODBG (the host cannot debug-read the guest).
const DEMO_POLICY: u32 = 0x1;

/// `sevm demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Change one byte of the guest image after the owner computed its digest: the
    /// measurement check fails and no secret is released (exit 1).
    #[arg(long)]
    tamper: bool,
    /// The SEV-SNP demo on the soft backend: ID block, launch of `snp-attest`, a report over a
    /// fresh nonce, the owner's verification and a secret sealed to the guest's key
    /// (docs/LAUNCH.md "sevm demo --snp"). `--tamper` then flips a byte of the report.
    #[arg(long)]
    snp: bool,
    /// With --snp: what the host tampers with (implies --tamper): `report` (before the owner
    /// sees it) or `secret` (the sealed secret on its way to the guest).
    #[arg(long, value_enum, requires = "snp")]
    tamper_at: Option<crate::demo_snp::TamperAt>,
    /// Soft platform directory (created if missing; default: <data dir>/sevm/demo-platform).
    #[arg(long)]
    platform_dir: Option<PathBuf>,
    /// KVM device.
    #[arg(long, default_value = "/dev/kvm")]
    kvm_device: PathBuf,
}

mod vm_memory_shim {
    //! One-byte guest-memory write through the VMM's mapping (the `--tamper` step).
    use vmm::GuestMemoryMmap;

    /// Flips `gpa`'s byte (xor 0xff).
    pub fn write_byte(mem: &GuestMemoryMmap, gpa: u64) -> Result<(), String> {
        use vm_memory::{Bytes, GuestAddress};
        let b: u8 = mem.read_obj(GuestAddress(gpa)).map_err(|e| e.to_string())?;
        mem.write_obj(b ^ 0xff, GuestAddress(gpa))
            .map_err(|e| e.to_string())
    }
}

struct Steps {
    start: Instant,
    n: u32,
}

impl Steps {
    fn step<T>(&mut self, what: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        self.n += 1;
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok((v, detail)) => {
                println!("[{}] {what}: {detail} ({ms:.1} ms)", self.n);
                Ok(v)
            }
            Err(e) => {
                println!("[{}] {what}: FAILED ({ms:.1} ms)", self.n);
                Err(e)
            }
        }
    }
}

/// Runs `sevm demo`.
pub fn run(a: DemoArgs, _out: &Output) -> Result<ExitCode> {
    if a.snp {
        let dir = match &a.platform_dir {
            Some(d) => d.clone(),
            None => dirs::data_dir()
                .context("cannot find the user's data directory (pass --platform-dir)")?
                .join("sevm")
                .join("demo-snp-platform"),
        };
        let tamper = match (a.tamper, a.tamper_at) {
            (_, Some(t)) => Some(t),
            (true, None) => Some(crate::demo_snp::TamperAt::Report),
            (false, None) => None,
        };
        return crate::demo_snp::run(&dir, &a.kvm_device, tamper);
    }
    let mut s = Steps {
        start: Instant::now(),
        n: 0,
    };
    let dir = match &a.platform_dir {
        Some(d) => d.clone(),
        None => dirs::data_dir()
            .context("cannot find the user's data directory (pass --platform-dir)")?
            .join("sevm")
            .join("demo-platform"),
    };
    let plat = s.step("soft SEV platform", || {
        let p = SoftPlatform::open(&dir)
            .with_context(|| format!("opening the soft platform in {}", dir.display()))?;
        let st = p.platform_status()?;
        let d = format!(
            "{} (API {}.{} build {}, C-bit {})",
            dir.display(),
            st.api_major,
            st.api_minor,
            st.build,
            p.cbit_pos()?
        );
        Ok(((p, st), d))
    })?;
    let (plat, pst) = plat;
    let cbit = plat.cbit_pos()?;
    let pdh = s.step(
        "owner: verify the platform chain (PDH<-PEK<-OCA/CEK<-ASK<-ARK)",
        || {
            let exported = plat.export_chain()?;
            let chain = sev_proto::cert::chain::FullChain::parse(&exported.to_bytes())
                .context("the platform's exported chain does not parse")?;
            let ark = chain.ca.ark.clone();
            let pdh = sev_proto::cert::chain::verify_full(&chain, Some(&ark))
                .context("the platform's certificate chain does not verify")?;
            let d = format!(
                "OK against the soft ARK {} (NOT AMD)",
                &ark.fingerprint()[..16]
            );
            Ok((pdh, d))
        },
    )?;
    let sess = s.step("owner: make a session for the PDH", || {
        let o = sev_proto::session::owner_session(&pdh.cert, DEMO_POLICY)?;
        let d = format!("GODH + session blob, policy {DEMO_POLICY:#x} (NODBG)");
        Ok((o, d))
    })?;
    let boot = BootSource::Bundled("secret-reader".into());
    let memory: u64 = 64 << 20;
    let expected = s.step("owner: expected launch digest from the images", || {
        let d = vmm::confidential::recipe::expected_digest(memory, &boot, Some(cbit), 1, false)?;
        Ok((d, hex::encode(d)))
    })?;
    let serial = Arc::new(Mutex::new(Vec::new()));
    let vm_cfg = VmConfig {
        memory,
        cpus: 1,
        boot: boot.clone(),
        serial: SerialOut::Buffer(serial.clone()),
        kvm_path: a.kvm_device.clone(),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..VmConfig::default()
    };
    let info = PlatformInfo {
        api_major: pst.api_major,
        api_minor: pst.api_minor,
        build: pst.build,
        cbitpos: cbit,
    };
    let (mut vm, handle) = s.step(
        "sevm: SEV launch of secret-reader, paused after LAUNCH_MEASURE",
        || {
            let params = LaunchParams {
                policy: sev_firmware::GuestPolicy(DEMO_POLICY),
                owner: Some(sess.launch_owner()),
                handle: 0,
                cbitpos: cbit,
                reduced_phys_bits: 1,
                paused: true,
                on_reset: vmm::confidential::ResetMode::Shutdown,
                dump_dir: None,
            };
            let spec = SevSpec {
                backend: LaunchBackend::Soft(plat.clone()),
                params,
                platform: info,
            };
            let mut builder = VmBuilder::new(vm_cfg).sev(Some(spec));
            if a.tamper {
                let gpa = vmm::layout::BUNDLED_LOAD_ADDR + 0x10;
                builder = builder.before_measure(Box::new(move |mem| Ok(write_byte(mem, gpa)?)));
            }
            let Launched { vm, launch, .. } = builder.build()?;
            let handle = launch.context("the SEV build returned no launch")?;
            let st = handle.status();
            let d = format!(
                "handle {}, state {}{}",
                st.handle,
                st.phase,
                if a.tamper {
                    ", one image byte changed after the owner's digest"
                } else {
                    ""
                }
            );
            Ok(((vm, handle), d))
        },
    )?;
    let m = handle
        .measurement()
        .context("the launch produced no measurement")?;
    let lm = LaunchMeasure::from_bytes(&m)?;
    let ok = s.step("owner: verify the launch measurement", || {
        let ok = lm.verify(
            &sess.keys.tik,
            pst.api_major,
            pst.api_minor,
            pst.build,
            DEMO_POLICY,
            &expected,
        );
        let d = if ok {
            "OK: the guest is the one the owner expected".to_string()
        } else {
            "MISMATCH: the launched image is not the expected one".to_string()
        };
        Ok((ok, d))
    })?;
    if !ok {
        println!(
            "sevm demo: measurement verification failed; no secret released, the guest is not started ({:.1} ms)",
            s.start.elapsed().as_secs_f64() * 1000.0
        );
        return Ok(ExitCode::from(1));
    }
    let secret_hash = s.step(
        "owner: build and inject the secret (EFI secret table, 1 entry)",
        || {
            let mut data = vec![0u8; 48];
            rand_bytes(&mut data)?;
            let hash = sha256(&data);
            let mut table = SecretTable::new();
            table.push(DEMO_SECRET_GUID, data);
            let pt = zeroize::Zeroizing::new(table.encode()?);
            let mut iv = [0u8; 16];
            rand_bytes(&mut iv)?;
            let (hdr, ct) = sev_proto::secret::build_packet(&sess.keys, &lm.measure, iv, 0, &pt)?;
            handle.inject_secret(&hdr, &ct, None)?;
            let d = format!(
                "{} bytes at {:#x} (LAUNCH_SECRET)",
                ct.len(),
                vmm::layout::SECRET_AREA_START
            );
            Ok((hash, d))
        },
    )?;
    handle.release();
    let status = s.step("sevm: LAUNCH_FINISH and run the guest", || {
        let st = vm.run()?;
        Ok((st.clone(), format!("{st:?}")))
    })?;
    let out = String::from_utf8_lossy(
        &serial
            .lock()
            .map_err(|_| anyhow::anyhow!("serial buffer poisoned"))?,
    )
    .to_string();
    for l in out.lines() {
        println!("    guest| {l}");
    }
    let want = hex::encode(secret_hash);
    s.step(
        "owner: the guest's SHA-256 of the secret equals the owner's",
        || {
            let line = format!("secret entry {DEMO_SECRET_GUID}");
            let got = out
                .lines()
                .find(|l| l.starts_with(&line))
                .and_then(|l| l.split("sha256=").nth(1))
                .map(str::trim)
                .unwrap_or("");
            if got != want {
                bail!("the guest printed sha256={got:?}, the owner expected {want}");
            }
            Ok(((), want.clone()))
        },
    )?;
    if status.exit_code() != 0 {
        bail!("the guest stopped with {status:?}");
    }
    println!(
        "sevm demo: OK ({:.1} ms)",
        s.start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}
