//! `sevm owner snp measure|id-block|verify-report|show`.
//!
//! - measure: against sev-snp-measure (`--mode snp`, the Python package in `$SEVM_PYTHON` /
//!   `.venv`, run as `python -m sevsnpmeasure.cli`) on its OVMF fixture
//!   (`<repo>/../shared/testdata/sev-crate/measurement/ovmf_AmdSev_suffix.bin`, the file of
//!   sev-snp-measure's `tests/fixtures/` that virtee/sev also ships) and on OVMF-shaped images with
//!   random contents, metadata sections, kernels, initrds and command lines, for 1 and 4 vCPUs
//!   and two vCPU types; plus the published fixture vector 803f69… without Python.
//! - id-block: against `snpguest generate id-block` (0.11; PATH or ~/.cargo/bin).
//! - verify-report / show: reports from the soft SNP firmware (a launch at the raw
//!   `SoftSnpGuest` interface, as sev-firmware/tests/snp_launch.rs), with the chain written from
//!   the soft CA; and virtee's published Milan report + VCEK + AMD chain
//!   (crates/sev-proto/tests/data/snp/, README there).
//!
//! Missing prerequisites print `SKIP:` (failures when `CI` is set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails, missing, ok, ok_json, run, sevm, snpguest};
use sev_proto::ovmf::{FooterTable, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID};
use sev_proto::ovmf::{SEV_METADATA_GUID, SEV_SECRET_GUID};

const FIXTURE_LD: &str = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A small deterministic PRNG (xorshift64*), seeded per test and printed so failures replay.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        eprintln!("rng seed {seed:#x}");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `base + below(span)` random bytes.
    fn some_bytes(&mut self, base: usize, span: u64) -> Vec<u8> {
        let n = base + self.below(span) as usize;
        self.bytes(n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("SEVM_TEST_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        })
}

/// A Python with the sev-snp-measure package (`sevsnpmeasure`).
fn sev_snp_measure() -> Option<PathBuf> {
    let py = common::python()?;
    let okp = Command::new(&py)
        .args(["-c", "import sevsnpmeasure.cli"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if okp {
        Some(py)
    } else {
        missing(&format!(
            "{} has no sev-snp-measure (pip install sev-snp-measure)",
            py.display()
        ))
    }
}

/// The OVMF fixture of sev-snp-measure (and virtee/sev).
fn fixture() -> Option<PathBuf> {
    let td = common::testdata()?;
    let p = td.join("sev-crate/measurement/ovmf_AmdSev_suffix.bin");
    if p.is_file() {
        Some(p)
    } else {
        missing(&format!("{} not found", p.display()))
    }
}

/// Inputs of one measurement.
#[derive(Clone, Debug)]
struct Inputs {
    ovmf: PathBuf,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    vcpus: u32,
    vcpu: Vcpu,
    features: u64,
}

#[derive(Clone, Debug)]
enum Vcpu {
    Type(&'static str),
    Sig(u32),
}

fn sevm_measure(i: &Inputs) -> Command {
    let mut c = sevm();
    c.args(["owner", "snp", "measure", "--firmware"])
        .arg(&i.ovmf)
        .args(["--vcpus", &i.vcpus.to_string()])
        .args(["--guest-features", &format!("0x{:x}", i.features)]);
    match &i.vcpu {
        Vcpu::Type(t) => c.args(["--vcpu-type", t]),
        Vcpu::Sig(s) => c.args(["--vcpu-sig", &format!("0x{s:x}")]),
    };
    if let Some(k) = &i.kernel {
        c.arg("--kernel").arg(k);
    }
    if let Some(k) = &i.initrd {
        c.arg("--initrd").arg(k);
    }
    if let Some(k) = &i.cmdline {
        c.args(["--cmdline", k]);
    }
    c
}

fn python_measure(py: &Path, i: &Inputs) -> String {
    let mut c = Command::new(py);
    c.args(["-m", "sevsnpmeasure.cli", "--mode", "snp", "--ovmf"])
        .arg(&i.ovmf)
        .args(["--vcpus", &i.vcpus.to_string()])
        .args(["--guest-features", &format!("0x{:x}", i.features)]);
    match &i.vcpu {
        Vcpu::Type(t) => c.args(["--vcpu-type", t]),
        Vcpu::Sig(s) => c.args(["--vcpu-sig", &format!("0x{s:x}")]),
    };
    if let Some(k) = &i.kernel {
        c.arg("--kernel").arg(k);
    }
    if let Some(k) = &i.initrd {
        c.arg("--initrd").arg(k);
    }
    if let Some(k) = &i.cmdline {
        c.args(["--append", k]);
    }
    ok(&mut c)
}

/// An OVMF-shaped image: random bytes, the SEV metadata ("ASEV") with SNP_SEC_MEM, SECRETS,
/// CPUID, SNP_KERNEL_HASHES and (sometimes) SVSM_CAA sections in a random order, and a footer
/// table with the SEV-ES reset block, the secret area, the hashes area and the metadata offset.
fn ovmf_image(rng: &mut Rng) -> Vec<u8> {
    let pages = 16 + rng.below(48) as usize;
    let size = pages * 4096;
    let mut fw = rng.bytes(size);
    // Metadata sections at sequential GPAs from 8 MiB.
    let mut gpa = 0x80_0000u32 + 0x1000 * rng.below(16) as u32;
    let mut take = |n: u32| {
        let g = gpa;
        gpa += n * 0x1000;
        g
    };
    let secmem_pages = 1 + rng.below(12) as u32;
    let secmem = take(secmem_pages);
    let secrets = take(1);
    let cpuid = take(1);
    let hashes = take(1);
    let caa = take(1);
    let mut items = vec![
        (secmem, secmem_pages * 0x1000, 1u32),
        (secrets, 0x1000, 2),
        (cpuid, 0x1000, 3),
        (hashes, 0x1000, 0x10),
    ];
    if rng.below(2) == 0 {
        items.push((caa, 0x1000, 4));
    }
    // A random order (Fisher-Yates).
    for k in (1..items.len()).rev() {
        let j = rng.below(k as u64 + 1) as usize;
        items.swap(k, j);
    }
    let mut md = b"ASEV".to_vec();
    md.extend_from_slice(&(16 + 12 * items.len() as u32).to_le_bytes());
    md.extend_from_slice(&1u32.to_le_bytes());
    md.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (g, n, t) in &items {
        for v in [g, n, t] {
            md.extend_from_slice(&v.to_le_bytes());
        }
    }
    let md_off_from_end = 0x1000 + 0x10 * rng.below(64) as usize;
    let at = size - md_off_from_end;
    fw[at..at + md.len()].copy_from_slice(&md);
    // The hashes table at a 16-byte aligned offset inside its page.
    let hashes_base = hashes + 0x10 * rng.below(0xF00 / 0x10) as u32;
    let reset = 0x80_0000 + 0x1000 * rng.below(0x80) as u32 + 4;
    let pair = |a: u32, b: u32| [a.to_le_bytes(), b.to_le_bytes()].concat();
    let table = FooterTable {
        entries: vec![
            (SEV_ES_RESET_BLOCK_GUID, reset.to_le_bytes().to_vec()),
            (SEV_SECRET_GUID, pair(secrets, 0x1000)),
            (SEV_HASH_TABLE_RV_GUID, pair(hashes_base, 0x400)),
            (
                SEV_METADATA_GUID,
                (md_off_from_end as u32).to_le_bytes().to_vec(),
            ),
        ],
    }
    .encode()
    .unwrap();
    let end = size - 32;
    fw[end - table.len()..end].copy_from_slice(&table);
    fw
}

fn write(dir: &Path, name: &str, b: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// measure

#[test]
fn measure_fixture_vector_without_python() {
    let Some(fw) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    let empty = write(d.path(), "empty", b"");
    let i = Inputs {
        ovmf: fw,
        kernel: Some(empty.clone()),
        initrd: Some(empty),
        cmdline: Some("console=ttyS0 loglevel=7".into()),
        vcpus: 1,
        vcpu: Vcpu::Type("EPYC-v4"),
        features: 0x21,
    };
    assert_eq!(ok(&mut sevm_measure(&i)), FIXTURE_LD);
    // --vcpu-family/model/stepping of EPYC-v4 (23/1/2) and its signature give the same.
    let mut c = sevm_measure(&Inputs {
        vcpu: Vcpu::Sig(0x800F12),
        ..i.clone()
    });
    assert_eq!(ok(&mut c), FIXTURE_LD);
    let mut c = sevm();
    c.args(["owner", "snp", "measure", "--firmware"])
        .arg(&i.ovmf)
        .args(["--kernel"])
        .arg(i.kernel.as_ref().unwrap())
        .args(["--append", "console=ttyS0 loglevel=7", "--vcpus", "1"])
        .args([
            "--vcpu-family",
            "23",
            "--vcpu-model",
            "1",
            "--vcpu-stepping",
            "2",
        ])
        .args(["--guest-features", "0x21", "--json"]);
    let v = ok_json(&mut c);
    assert_eq!(v["measurement"], FIXTURE_LD);
    assert_eq!(v["vcpu_sig"], "0x800f12");
    // Another feature set changes it.
    let mut c = sevm_measure(&Inputs {
        features: 0x1,
        ..i.clone()
    });
    assert_ne!(ok(&mut c), FIXTURE_LD);
}

#[test]
fn measure_equals_sev_snp_measure_on_its_fixture() {
    let (Some(fw), Some(py)) = (fixture(), sev_snp_measure()) else {
        return;
    };
    let mut rng = Rng::new(seed());
    let d = tempfile::tempdir().unwrap();
    let kernel = write(d.path(), "k", &rng.some_bytes(5000, 9000));
    let initrd = write(d.path(), "i", &rng.some_bytes(0, 7000));
    let mut n = 0;
    for vcpus in [1, 4] {
        for vcpu in [
            Vcpu::Type("EPYC-v4"),
            Vcpu::Type("EPYC-Milan"),
            Vcpu::Sig(0xA10F10),
        ] {
            for (k, features) in [(false, 0x1), (true, 0x21), (true, 0x1)] {
                let i = Inputs {
                    ovmf: fw.clone(),
                    kernel: k.then(|| kernel.clone()),
                    initrd: k.then(|| initrd.clone()),
                    cmdline: k.then(|| "console=ttyS0 root=/dev/vda".to_string()),
                    vcpus,
                    vcpu: vcpu.clone(),
                    features,
                };
                let ours = ok(&mut sevm_measure(&i));
                assert_eq!(ours, python_measure(&py, &i), "{i:?}");
                n += 1;
            }
        }
    }
    assert_eq!(n, 18);
}

#[test]
fn measure_equals_sev_snp_measure_on_random_ovmf_images() {
    let Some(py) = sev_snp_measure() else { return };
    let mut rng = Rng::new(seed());
    let d = tempfile::tempdir().unwrap();
    let types = ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa", "EPYC-Rome"];
    let mut seen = std::collections::HashSet::new();
    for round in 0..8 {
        let fw = write(d.path(), &format!("ovmf{round}.fd"), &ovmf_image(&mut rng));
        let kernel = write(d.path(), &format!("k{round}"), &rng.some_bytes(1, 20000));
        let initrd = write(d.path(), &format!("i{round}"), &rng.some_bytes(0, 20000));
        // Printable ASCII command lines of random length (possibly empty).
        let cmdline: String = (0..rng.below(120))
            .map(|_| (0x21 + rng.below(0x5E) as u8) as char)
            .collect();
        for vcpus in [1, 4] {
            let i = Inputs {
                ovmf: fw.clone(),
                kernel: (round % 4 != 3).then(|| kernel.clone()),
                initrd: (round % 2 == 0).then(|| initrd.clone()),
                cmdline: (round % 4 != 3 && round % 3 != 1).then(|| cmdline.clone()),
                vcpus,
                vcpu: Vcpu::Type(types[(round as usize + vcpus as usize) % types.len()]),
                features: [0x1, 0x21, 0x5][rng.below(3) as usize],
            };
            let i = if i.kernel.is_none() {
                Inputs {
                    initrd: None,
                    cmdline: None,
                    ..i
                }
            } else {
                i
            };
            let ours = ok(&mut sevm_measure(&i));
            assert_eq!(ours, python_measure(&py, &i), "{i:?}");
            seen.insert(ours);
        }
    }
    assert_eq!(seen.len(), 16, "every input gives its own digest");
}

#[test]
fn measure_samples_ovmf_snp_and_dump_launch() {
    let fw = common::samples().join("sample-ovmf-snp.fd");
    let k = common::samples().join("sample-kernel");
    let mut base = sevm();
    base.args(["owner", "snp", "measure", "--firmware"])
        .arg(&fw)
        .arg("--kernel")
        .arg(&k)
        .args(["--cmdline", "console=ttyS0", "--vcpus", "2"])
        .args(["--vcpu-type", "EPYC-Milan"]);
    let digest = ok(&mut base);
    assert_eq!(digest.len(), 96);
    // The dump ends with the digest; one line per page; the last page's LD is the digest.
    let mut c = sevm();
    c.args(["owner", "snp", "measure", "--firmware"])
        .arg(&fw)
        .arg("--kernel")
        .arg(&k)
        .args(["--cmdline", "console=ttyS0", "--vcpus", "2"])
        .args(["--vcpu-type", "EPYC-Milan", "--dump-launch"]);
    let dump = ok(&mut c);
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(*lines.last().unwrap(), digest);
    let pages = &lines[..lines.len() - 1];
    let fw_pages = std::fs::metadata(&fw).unwrap().len() as usize / 4096;
    assert!(pages.len() > fw_pages + 2, "{}", pages.len());
    assert!(pages[pages.len() - 1].ends_with(&format!("ld={digest}")));
    assert!(pages[pages.len() - 1].contains("VMSA[1]"));
    assert!(pages[pages.len() - 2].contains("VMSA[0]"));
    assert!(pages[pages.len() - 2].contains("gpa=0xfffffffff000"));
    for t in ["SNP_SEC_MEM", "SNP_SECRETS", "CPUID", "SNP_KERNEL_HASHES"] {
        assert!(dump.contains(t), "{t} missing from the dump");
    }
    // A different command line changes exactly one page's contents: the kernel-hashes page.
    let mut c = sevm();
    c.args(["owner", "snp", "measure", "--firmware"])
        .arg(&fw)
        .arg("--kernel")
        .arg(&k)
        .args(["--cmdline", "console=ttyS1", "--vcpus", "2"])
        .args(["--vcpu-type", "EPYC-Milan", "--dump-launch", "--json"]);
    let v = ok_json(&mut c);
    let other = v["pages"].as_array().unwrap();
    assert_eq!(other.len(), pages.len());
    let differ: Vec<usize> = pages
        .iter()
        .zip(other)
        .enumerate()
        .filter(|(_, (line, p))| !line.contains(p["contents"].as_str().unwrap()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert_eq!(other[differ[0]]["source"], "SNP_KERNEL_HASHES");
    assert_ne!(v["measurement"], digest.as_str());
}

#[test]
fn measure_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let fw = common::samples().join("sample-ovmf-snp.fd");
    let plain = common::samples().join("sample-ovmf.fd");
    let m = |args: &[&str]| {
        let mut c = sevm();
        c.args(["owner", "snp", "measure"]).args(args);
        fails(&mut c)
    };
    let f = fw.to_str().unwrap();
    let e = m(&["--firmware", f, "--vcpus", "1", "--vcpu-type", "EPYC-Nope"]);
    assert!(
        e.contains("--vcpu-type: unknown CPU model 'EPYC-Nope'"),
        "{e}"
    );
    let e = m(&["--firmware", f, "--vcpus", "1"]);
    assert!(e.contains("--vcpu-type"), "{e}");
    let e = m(&["--firmware", f, "--vcpus", "1", "--vcpu-sig", "0xF0000000"]);
    assert!(e.contains("--vcpu-sig"), "{e}");
    let e = m(&["--firmware", f, "--vcpus", "0", "--vcpu-type", "EPYC"]);
    assert!(e.contains("--vcpus"), "{e}");
    let e = m(&[
        "--firmware",
        f,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--guest-features",
        "0x20",
    ]);
    assert!(
        e.contains("--guest-features") && e.contains("SNPActive"),
        "{e}"
    );
    let e = m(&[
        "--firmware",
        f,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--guest-features",
        "zz",
    ]);
    assert!(e.contains("--guest-features"), "{e}");
    let e = m(&[
        "--firmware",
        f,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--cmdline",
        "x",
    ]);
    assert!(e.contains("--kernel"), "{e}");
    // An OVMF without SNP metadata (the SEV-only sample).
    let e = m(&[
        "--firmware",
        plain.to_str().unwrap(),
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
    ]);
    assert!(e.contains("no OVMF SEV metadata"), "{e}");
    // A size that is not a whole number of pages.
    let mut b = std::fs::read(&fw).unwrap();
    b.remove(0);
    let odd = write(d.path(), "odd.fd", &b);
    let e = m(&[
        "--firmware",
        odd.to_str().unwrap(),
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
    ]);
    assert!(e.contains("--firmware") && e.contains("odd.fd"), "{e}");
    let e = m(&[
        "--firmware",
        "/nonexistent/x.fd",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
    ]);
    assert!(
        e.contains("--firmware") && e.contains("/nonexistent/x.fd"),
        "{e}"
    );
    let e = m(&[
        "--firmware",
        f,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--kernel",
        "/nonexistent/k",
    ]);
    assert!(e.contains("--kernel"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// id-block

fn p384_pem(dir: &Path, name: &str) -> PathBuf {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let k = EcKey::generate(&g).unwrap();
    write(dir, name, &k.private_key_to_pem().unwrap())
}

fn b64d(p: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let t = std::fs::read_to_string(p).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(t.trim())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn id_block_interchangeable_with_snpguest() {
    use sev_proto::snp::id_block::{IdAuth, IdBlock};
    let Some(sg) = snpguest() else { return };
    let mut rng = Rng::new(seed());
    let d = tempfile::tempdir().unwrap();
    let (idk, auk) = (
        p384_pem(d.path(), "id.pem"),
        p384_pem(d.path(), "author.pem"),
    );
    let ld = hex::encode(rng.bytes(48));
    let (fam, img) = (hex::encode(rng.bytes(16)), hex::encode(rng.bytes(16)));
    let svn = rng.below(1000).to_string();
    let (sb, sa) = (d.path().join("sg.block"), d.path().join("sg.auth"));
    ok(Command::new(&sg)
        .args(["generate", "id-block"])
        .arg(&idk)
        .arg(&auk)
        .arg(format!("0x{ld}"))
        .args(["-f", &fam, "-m", &img, "-s", &svn, "-p", "0x30000"])
        .arg("-i")
        .arg(&sb)
        .arg("-a")
        .arg(&sa));
    let (ob, oa) = (d.path().join("sevm.block"), d.path().join("sevm.auth"));
    let v = ok_json(
        sevm()
            .args([
                "owner",
                "snp",
                "id-block",
                "--measurement",
                &ld,
                "--policy",
                "0x30000",
            ])
            .arg("--id-key")
            .arg(&idk)
            .arg("--author-key")
            .arg(&auk)
            .args(["--family-id", &fam, "--image-id", &img, "--svn", &svn])
            .arg("--out-block")
            .arg(&ob)
            .arg("--out-auth")
            .arg(&oa)
            .arg("--json"),
    );
    // The same ID block bytes, both base64.
    let (blk_sg, blk_ours) = (b64d(&sb), b64d(&ob));
    assert_eq!(blk_ours.len(), 0x60);
    assert_eq!(blk_ours, blk_sg);
    let block = IdBlock::from_bytes(&blk_ours).unwrap();
    assert_eq!(hex::encode(block.ld), ld);
    // Both auth structures parse, carry the same keys and verify (ECDSA signatures differ).
    let (auth_sg, auth_ours) = (b64d(&sa), b64d(&oa));
    let a_sg = IdAuth::from_bytes(&auth_sg).unwrap();
    let a_ours = IdAuth::from_bytes(&auth_ours).unwrap();
    assert_eq!(a_sg.id_key, a_ours.id_key);
    assert_eq!(a_sg.author_key, a_ours.author_key);
    assert_eq!((a_sg.id_key_algo, a_sg.auth_key_algo), (1, 1));
    assert_eq!((a_ours.id_key_algo, a_ours.auth_key_algo), (1, 1));
    for a in [&a_sg, &a_ours] {
        a.verify_id_block(&block).unwrap();
        a.verify_author().unwrap();
    }
    assert_eq!(v["id_key_digest"], hex::encode(a_sg.id_key_digest()));
    assert_eq!(
        v["author_key_digest"],
        hex::encode(a_sg.author_key_digest())
    );
    // snpguest's own digest tool agrees on the key digests.
    let kd = d.path().join("kd");
    std::fs::create_dir(&kd).unwrap();
    let (o, so, se) = run(Command::new(&sg)
        .args(["generate", "key-digest"])
        .arg(&idk)
        .arg("-d")
        .arg(kd.join("id_key_digest.bin")));
    if o.status.success() {
        // snpguest writes the digest as hex text.
        let got = std::fs::read_to_string(kd.join("id_key_digest.bin")).unwrap();
        assert_eq!(got.trim(), v["id_key_digest"].as_str().unwrap(), "{so}{se}");
    } else {
        eprintln!("note: snpguest generate key-digest: {so}{se}");
    }
    // Raw output: the same bytes.
    let rb = d.path().join("raw.block");
    ok(sevm()
        .args([
            "owner",
            "snp",
            "id-block",
            "--measurement",
            &format!("0x{ld}"),
        ])
        .args(["--policy", "196608", "--raw"])
        .arg("--id-key")
        .arg(&idk)
        .args(["--family-id", &fam, "--image-id", &img, "--svn", &svn])
        .arg("--out-block")
        .arg(&rb)
        .arg("--out-auth")
        .arg(d.path().join("raw.auth")));
    assert_eq!(std::fs::read(&rb).unwrap(), blk_sg);
    let raw_auth = IdAuth::from_bytes(&std::fs::read(d.path().join("raw.auth")).unwrap()).unwrap();
    raw_auth.verify_id_block(&block).unwrap();
    assert_eq!(raw_auth.auth_key_algo, 0, "no author key");
}

#[test]
fn id_block_bad_input() {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let d = tempfile::tempdir().unwrap();
    let idk = p384_pem(d.path(), "id.pem");
    let p256 = write(
        d.path(),
        "p256.pem",
        &EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap())
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    );
    let junk = write(d.path(), "junk.pem", b"not a key");
    let ld = "ab".repeat(48);
    let go = |extra: &[&str], key: &Path| {
        let mut c = sevm();
        c.args(["owner", "snp", "id-block"])
            .args(extra)
            .arg("--id-key")
            .arg(key)
            .arg("--out-block")
            .arg(d.path().join("b"))
            .arg("--out-auth")
            .arg(d.path().join("a"));
        fails(&mut c)
    };
    let e = go(
        &["--measurement", &"ab".repeat(47), "--policy", "0x30000"],
        &idk,
    );
    assert!(e.contains("--measurement") && e.contains("48 bytes"), "{e}");
    let e = go(&["--measurement", "0xzz", "--policy", "0x30000"], &idk);
    assert!(e.contains("--measurement"), "{e}");
    let e = go(&["--measurement", &ld, "--policy", "0x10000"], &idk);
    assert!(e.contains("--policy"), "{e}");
    let e = go(&["--measurement", &ld, "--policy", "0x8000030000"], &idk);
    assert!(e.contains("--policy"), "{e}");
    let e = go(&["--measurement", &ld, "--policy", "0x30000"], &p256);
    assert!(e.contains("--id-key") && e.contains("P-384"), "{e}");
    let e = go(&["--measurement", &ld, "--policy", "0x30000"], &junk);
    assert!(e.contains("--id-key") && e.contains("junk.pem"), "{e}");
    let e = go(
        &[
            "--measurement",
            &ld,
            "--policy",
            "0x30000",
            "--family-id",
            "0011",
        ],
        &idk,
    );
    assert!(e.contains("--family-id") && e.contains("16 bytes"), "{e}");
    assert!(!d.path().join("b").exists(), "nothing written on bad input");
}

// ---------------------------------------------------------------------------------------------
// verify-report and show, on soft-firmware reports

/// A soft SNP platform, a guest launched on it (a few NORMAL pages, a SECRETS page), and the
/// report it gets for `report_data`; returns the platform, the report bytes and the launch
/// digest.
struct SoftLaunch {
    platform: sev_firmware::snp::soft::SoftSnpPlatform,
    report: Vec<u8>,
    ld: [u8; 48],
}

fn soft_launch(
    report_data: [u8; 64],
    host_data: [u8; 32],
    id: Option<(&[u8], &[u8], bool)>,
) -> SoftLaunch {
    use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
    use sev_firmware::snp::vcek::SnpIdentity;
    use sev_firmware::snp::SnpPlatform;
    use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate};
    use sev_proto::snp::measure::PageType;
    use sev_proto::snp::msg::{self, ReportReq, ReportRsp};
    use sev_proto::snp::policy::SnpPolicy;
    use sev_proto::snp::secrets::SecretsPage;
    let p =
        SoftSnpPlatform::new(SnpIdentity::from_seed([0x42; 48]), SoftSnpConfig::default()).unwrap();
    p.snp_init().unwrap();
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(0x30000)))
        .unwrap();
    for i in 0..3u64 {
        let mut pg = vec![i as u8 + 1; 4096];
        g.snp_launch_update(
            &SnpLaunchUpdate::page(PageType::Normal, 0x10_0000 + i * 4096),
            &mut pg,
        )
        .unwrap();
    }
    let mut sp = vec![0u8; 4096];
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Secrets, 0x20_0000),
        &mut sp,
    )
    .unwrap();
    let ld = g.launch_digest();
    g.snp_launch_finish(&SnpLaunchFinish {
        id_block: id.map(|x| x.0),
        id_auth: id.map(|x| x.1),
        auth_key_en: id.is_some_and(|x| x.2),
        host_data,
        ..SnpLaunchFinish::default()
    })
    .unwrap();
    let secrets = SecretsPage::from_bytes(&sp).unwrap();
    let req = ReportReq {
        report_data,
        vmpl: 0,
        key_sel: 0,
    };
    let mut m = msg::seal(&secrets.vmpck[0], 1, 5, 1, 0, &req.to_bytes()).unwrap();
    m.resize(4096, 0);
    let mut resp = vec![0u8; 4096];
    g.snp_guest_request(&m, &mut resp).unwrap();
    let (_h, pt) = msg::open(&secrets.vmpck[0], &resp).unwrap();
    let r = ReportRsp::from_bytes(&pt).unwrap().report.unwrap();
    SoftLaunch {
        platform: p,
        report: r.to_bytes().unwrap().to_vec(),
        ld,
    }
}

/// Writes ark.pem, ask.pem and vcek.pem for `platform` into a new directory under `dir`.
fn write_chain(
    dir: &Path,
    name: &str,
    ca: &sev_firmware::snp::ca::SoftCa,
    platform: &sev_firmware::snp::soft::SoftSnpPlatform,
    tcb: u64,
) -> PathBuf {
    let c = dir.join(name);
    std::fs::create_dir(&c).unwrap();
    write(&c, "ark.pem", &ca.ark.to_pem().unwrap());
    write(&c, "ask.pem", &ca.ask.to_pem().unwrap());
    let vcek = platform.vcek_cert(ca, tcb).unwrap();
    write(&c, "vcek.pem", &vcek.to_pem().unwrap());
    c
}

fn verify(report: &Path, certs: &Path, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let (o, so, se) = run(sevm()
        .args(["owner", "snp", "verify-report"])
        .arg(report)
        .arg("--certs")
        .arg(certs)
        .args(extra)
        .arg("--json"));
    assert!(!se.contains("panicked"), "{se}");
    let v: serde_json::Value =
        serde_json::from_str(so.trim()).unwrap_or_else(|e| panic!("{e}: {so}\n{se}"));
    let code = o.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "{code:?} {se}");
    assert_eq!(code == Some(0), v["ok"] == true, "{so}");
    (code == Some(0), v, format!("{so}\n{se}"))
}

fn failed(v: &serde_json::Value) -> Vec<String> {
    v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn verify_report_soft_firmware() {
    use sev_firmware::snp::ca::SoftCa;
    let mut rng = Rng::new(seed());
    let rd: [u8; 64] = rng.bytes(64).try_into().unwrap();
    let hd: [u8; 32] = rng.bytes(32).try_into().unwrap();
    let l = soft_launch(rd, hd, None);
    let d = tempfile::tempdir().unwrap();
    let rep = write(d.path(), "report.bin", &l.report);
    let r = sev_proto::snp::report::AttestationReport::from_bytes(&l.report).unwrap();
    let ca = SoftCa::generate().unwrap();
    let certs = write_chain(d.path(), "certs", &ca, &l.platform, r.reported_tcb);
    let (ldh, rdh, hdh) = (hex::encode(l.ld), hex::encode(rd), hex::encode(hd));
    let all = [
        "--measurement",
        &ldh,
        "--report-data",
        &rdh,
        "--host-data",
        &hdh,
        "--policy",
        "0x30000",
        "--min-tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        "--id-key-digest",
        &"00".repeat(48),
        "--author-key-digest",
        &"00".repeat(48),
    ];
    let (good, v, out) = verify(&rep, &certs, &all);
    assert!(good, "{out}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ark_self_signed",
            "ask_signed_by_ark",
            "vcek_signed_by_ask",
            "report_signature",
            "reported_tcb",
            "chip_id",
            "measurement",
            "host_data",
            "report_data",
            "policy",
            "min_tcb",
            "id_key_digest",
            "author_key_digest"
        ]
    );
    // Text mode, base64 and 0x-hex values, exit 0.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hd);
    let t = ok(sevm()
        .args(["owner", "snp", "verify-report"])
        .arg(&rep)
        .arg("--certs")
        .arg(&certs)
        .args(["--host-data", &b64, "--measurement", &format!("0x{ldh}")]));
    assert!(t.contains("report verified"), "{t}");

    // snpguest gives the same verdict on the same directory and report.
    if let Some(sg) = snpguest() {
        let (o, so, se) = run(Command::new(&sg)
            .args(["verify", "attestation"])
            .arg(&certs)
            .arg(&rep)
            .args(["-m", &format!("0x{ldh}"), "-d", &format!("0x{hdh}")])
            .args(["-r", &format!("0x{rdh}")]));
        assert!(o.status.success(), "snpguest: {so}{se}");
    }

    // Tampered copies: each names what broke.
    let mut t = l.report.clone();
    t[0x90] ^= 1; // MEASUREMENT
    let tp = write(d.path(), "tampered.bin", &t);
    let (good, v, out) = verify(&tp, &certs, &all);
    assert!(!good, "{out}");
    assert_eq!(failed(&v), ["report_signature", "measurement"], "{out}");
    if let Some(sg) = snpguest() {
        let (o, ..) = run(Command::new(&sg)
            .args(["verify", "attestation"])
            .arg(&certs)
            .arg(&tp));
        assert!(!o.status.success(), "snpguest accepted the tampered report");
    }
    let mut t = l.report.clone();
    t[0x2A0] ^= 1; // SIGNATURE.R
    let tp = write(d.path(), "badsig.bin", &t);
    let (good, v, _) = verify(&tp, &certs, &[]);
    assert!(!good);
    assert_eq!(failed(&v), ["report_signature"]);
    // Wrong expected values.
    let (good, v, out) = verify(
        &rep,
        &certs,
        &[
            "--host-data",
            &"11".repeat(32),
            "--policy",
            "0x70000",
            "--min-tcb",
            "bl=3,tee=0,snp=9,ucode=115",
        ],
    );
    assert!(!good);
    assert_eq!(failed(&v), ["host_data", "policy", "min_tcb"], "{out}");
    assert!(out.contains("below the minimum"), "{out}");

    // A chain whose ARK did not sign the ASK.
    let other = SoftCa::generate().unwrap();
    let wrong = d.path().join("wrong-ark");
    std::fs::create_dir(&wrong).unwrap();
    for f in ["ask.pem", "vcek.pem"] {
        std::fs::copy(certs.join(f), wrong.join(f)).unwrap();
    }
    write(&wrong, "ark.pem", &other.ark.to_pem().unwrap());
    let (good, v, out) = verify(&rep, &wrong, &[]);
    assert!(!good);
    assert_eq!(failed(&v), ["ask_signed_by_ark"], "{out}");
    assert!(out.contains("ask.pem is signed by ark.pem"), "{out}");
    // A VCEK for another TCB: another key (signature fails) and another TCB.
    let mut tcb = r.reported_tcb.to_le_bytes();
    tcb[6] -= 1;
    let oldtcb = write_chain(
        d.path(),
        "old-tcb",
        &ca,
        &l.platform,
        u64::from_le_bytes(tcb),
    );
    let (good, v, _) = verify(&rep, &oldtcb, &[]);
    assert!(!good);
    assert_eq!(failed(&v), ["report_signature", "reported_tcb"]);
    // DER files are read too.
    let der = d.path().join("der");
    std::fs::create_dir(&der).unwrap();
    write(&der, "ark.der", &ca.ark.to_der().unwrap());
    write(&der, "ask.der", &ca.ask.to_der().unwrap());
    let vc =
        openssl::x509::X509::from_pem(&std::fs::read(certs.join("vcek.pem")).unwrap()).unwrap();
    write(&der, "vcek.der", &vc.to_der().unwrap());
    assert!(verify(&rep, &der, &[]).0);

    // Bad input: truncated report, missing certificate, bad values.
    let tr = write(d.path(), "trunc.bin", &l.report[..0x400]);
    let e = fails(
        sevm()
            .args(["owner", "snp", "verify-report"])
            .arg(&tr)
            .arg("--certs")
            .arg(&certs),
    );
    assert!(e.contains("trunc.bin") && e.contains("1024 bytes"), "{e}");
    let none = d.path().join("empty-dir");
    std::fs::create_dir(&none).unwrap();
    let e = fails(
        sevm()
            .args(["owner", "snp", "verify-report"])
            .arg(&rep)
            .arg("--certs")
            .arg(&none),
    );
    assert!(
        e.contains("--certs") && e.contains("ark.pem or ark.der"),
        "{e}"
    );
    write(&none, "ark.pem", b"garbage");
    let e = fails(
        sevm()
            .args(["owner", "snp", "verify-report"])
            .arg(&rep)
            .arg("--certs")
            .arg(&none),
    );
    assert!(e.contains("ark.pem") && e.contains("not an X.509"), "{e}");
    let e = fails(
        sevm()
            .args(["owner", "snp", "verify-report"])
            .arg(&rep)
            .arg("--certs")
            .arg(&certs)
            .args(["--report-data", "abcd"]),
    );
    assert!(e.contains("--report-data") && e.contains("64 bytes"), "{e}");
    let e = fails(
        sevm()
            .args(["owner", "snp", "verify-report"])
            .arg(&rep)
            .arg("--certs")
            .arg(&certs)
            .args(["--min-tcb", "bl=3,foo=1"]),
    );
    assert!(e.contains("--min-tcb") && e.contains("foo"), "{e}");
    // A reserved byte set: the parser names the field.
    let mut t = l.report.clone();
    t[0x4C] = 1;
    let rp = write(d.path(), "reserved.bin", &t);
    let e = fails(sevm().args(["owner", "snp", "show"]).arg(&rp));
    assert!(e.contains("reserved.bin") && e.contains("reserved"), "{e}");
}

#[test]
fn id_block_from_sevm_launches_and_verifies() {
    use sev_firmware::snp::ca::SoftCa;
    // Launch once without an ID block to learn the digest, then with sevm's ID block.
    let first = soft_launch([0; 64], [0; 32], None);
    let d = tempfile::tempdir().unwrap();
    let (idk, auk) = (
        p384_pem(d.path(), "id.pem"),
        p384_pem(d.path(), "author.pem"),
    );
    let (ob, oa) = (d.path().join("b"), d.path().join("a"));
    let v = ok_json(
        sevm()
            .args(["owner", "snp", "id-block", "--policy", "0x30000", "--raw"])
            .args(["--measurement", &hex::encode(first.ld)])
            .arg("--id-key")
            .arg(&idk)
            .arg("--author-key")
            .arg(&auk)
            .arg("--out-block")
            .arg(&ob)
            .arg("--out-auth")
            .arg(&oa)
            .arg("--json"),
    );
    let (blk, auth) = (std::fs::read(&ob).unwrap(), std::fs::read(&oa).unwrap());
    let l = soft_launch([7; 64], [9; 32], Some((&blk, &auth, true)));
    assert_eq!(l.ld, first.ld);
    let rep = write(d.path(), "r.bin", &l.report);
    let r = sev_proto::snp::report::AttestationReport::from_bytes(&l.report).unwrap();
    let certs = write_chain(
        d.path(),
        "c",
        &SoftCa::generate().unwrap(),
        &l.platform,
        r.reported_tcb,
    );
    let idd = v["id_key_digest"].as_str().unwrap();
    let aud = v["author_key_digest"].as_str().unwrap();
    let (good, _, out) = verify(
        &rep,
        &certs,
        &["--id-key-digest", idd, "--author-key-digest", aud],
    );
    assert!(good, "{out}");
    let (good, v2, _) = verify(&rep, &certs, &["--id-key-digest", aud]);
    assert!(!good);
    assert_eq!(failed(&v2), ["id_key_digest"]);
    // show decodes the key info.
    let s = ok_json(sevm().args(["owner", "snp", "show", "--json"]).arg(&rep));
    assert_eq!(s["key_info"]["author_key_en"], true);
    assert_eq!(s["id_key_digest"], idd);
}

#[test]
fn show_soft_report() {
    let l = soft_launch([0x5C; 64], [0xAB; 32], None);
    let d = tempfile::tempdir().unwrap();
    let rep = write(d.path(), "r.bin", &l.report);
    let v = ok_json(sevm().args(["owner", "snp", "show", "--json"]).arg(&rep));
    assert_eq!(v["version"], 3);
    assert_eq!(v["measurement"], hex::encode(l.ld));
    assert_eq!(v["report_data"], "5c".repeat(64));
    assert_eq!(v["host_data"], "ab".repeat(32));
    assert_eq!(v["policy"]["raw"], "0x30000");
    assert_eq!(
        v["policy"]["flags"],
        serde_json::json!(["SMT", "RESERVED_1"])
    );
    assert_eq!(v["product"], "Milan");
    assert_eq!(v["reported_tcb"]["snp"], 8);
    assert_eq!(v["reported_tcb"]["microcode"], 0x73);
    assert_eq!(v["key_info"]["signing_key"], "VCEK");
    assert_eq!(v["report_id_ma"], "ff".repeat(32));
    let t = ok(sevm().args(["owner", "snp", "show"]).arg(&rep));
    for f in [
        "VERSION",
        "GUEST_SVN",
        "POLICY",
        "FAMILY_ID",
        "IMAGE_ID",
        "VMPL",
        "SIGNATURE_ALGO",
        "CURRENT_TCB",
        "PLATFORM_INFO",
        "KEY_INFO",
        "REPORT_DATA",
        "MEASUREMENT",
        "HOST_DATA",
        "ID_KEY_DIGEST",
        "AUTHOR_KEY_DIGEST",
        "REPORT_ID",
        "REPORT_ID_MA",
        "REPORTED_TCB",
        "CPUID_FMS",
        "CHIP_ID",
        "COMMITTED_TCB",
        "CURRENT_VERSION",
        "COMMITTED_VERSION",
        "LAUNCH_TCB",
        "SIGNATURE.R",
        "SIGNATURE.S",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with(&format!("{f} "))),
            "{f} missing:\n{t}"
        );
    }
    assert!(t.contains(&hex::encode(l.ld)));
}

// ---------------------------------------------------------------------------------------------
// The published Milan report (virtee/sev test data)

#[test]
fn milan_report_verifies_and_shows() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sev-proto/tests/data/snp");
    let rep_hex = std::fs::read_to_string(data.join("report_milan.hex")).unwrap();
    let rep = hex::decode(rep_hex.trim()).unwrap();
    let chain =
        openssl::x509::X509::stack_from_pem(&std::fs::read(data.join("cert_chain_milan")).unwrap())
            .unwrap();
    assert_eq!(chain.len(), 2, "ASK then ARK");
    let d = tempfile::tempdir().unwrap();
    let rp = write(d.path(), "milan.bin", &rep);
    let certs = d.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    write(&certs, "ask.pem", &chain[0].to_pem().unwrap());
    write(&certs, "ark.pem", &chain[1].to_pem().unwrap());
    std::fs::copy(data.join("vcek_milan.der"), certs.join("vcek.der")).unwrap();
    let r = sev_proto::snp::report::AttestationReport::from_bytes(&rep).unwrap();
    let (good, v, out) = verify(
        &rp,
        &certs,
        &[
            "--measurement",
            &hex::encode(r.measurement),
            "--min-tcb",
            "bl=3,tee=0,snp=8,ucode=115",
        ],
    );
    assert!(good, "{out}");
    assert_eq!(v["checks"].as_array().unwrap().len(), 8);
    let t = ok(sevm().args(["owner", "snp", "show"]).arg(&rp));
    assert!(t.contains("BL 3 TEE 0 SNP 8 uCode 115"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("VERSION ") && l.ends_with(" 2")),
        "{t}"
    );
    // Pinning the ARK: AMD's Milan ARK passes, another one fails, named.
    let fp = v["ark_sha256"].as_str().unwrap().to_string();
    assert_eq!(
        fp,
        hex::encode(openssl::sha::sha256(&chain[1].to_der().unwrap()))
    );
    let (good, v, _) = verify(&rp, &certs, &["--ark-sha256", &fp]);
    assert!(good);
    assert_eq!(v["checks"][0]["name"], "ark_pinned");
    let (good, v, _) = verify(&rp, &certs, &["--ark-sha256", &"ab".repeat(32)]);
    assert!(!good);
    assert_eq!(failed(&v), ["ark_pinned"]);
    // Swapping ASK and ARK breaks the chain, named.
    let sw = d.path().join("swapped");
    std::fs::create_dir(&sw).unwrap();
    write(&sw, "ark.pem", &chain[0].to_pem().unwrap());
    write(&sw, "ask.pem", &chain[1].to_pem().unwrap());
    std::fs::copy(data.join("vcek_milan.der"), sw.join("vcek.der")).unwrap();
    let (good, v, _) = verify(&rp, &sw, &[]);
    assert!(!good);
    assert_eq!(
        failed(&v),
        ["ark_self_signed", "ask_signed_by_ark", "vcek_signed_by_ask"]
    );
}
