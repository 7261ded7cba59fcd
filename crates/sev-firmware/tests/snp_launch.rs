//! A whole SNP launch through the soft firmware's `SnpGuest` commands reproduces sev-snp-measure's
//! published OVMF launch digest (snp-spec-notes §2.1: `sev-snp-measure --mode snp --vcpus 1
//! --vcpu-type EPYC-v4 --ovmf ovmf_AmdSev_suffix.bin --kernel /dev/null --initrd /dev/null
//! --append "console=ttyS0 loglevel=7" --guest-features 0x21` = 803f6910…0228977), and the
//! attestation report the guest then requests carries it and verifies with the VCEK.
//! The OVMF image is `<repo>/../shared/testdata/sev-crate/measurement/ovmf_AmdSev_suffix.bin`
//! (virtee/sev `tests/measurement/`): SKIP without it, failure when `CI` is set.

use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::snp::vcek::SnpIdentity;
use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform};
use sev_proto::kernel_hashes::{cmdline_hash, file_hash, padded_table};
use sev_proto::snp::measure::{ovmf_sev_metadata, OvmfSectionType, PageType, VMSA_GPA};
use sev_proto::snp::msg::{self, ReportReq, ReportRsp};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::secrets::SecretsPage;
use sev_proto::vmsa::{cpu_sig, kvm_es_vmsa, KvmVmsaParams, VcpuState};
use std::path::PathBuf;

const FIXTURE_LD: &str = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";

fn fixture() -> Option<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/sev-crate/measurement/ovmf_AmdSev_suffix.bin");
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) => {
            let what = format!("{}: {e}", p.display());
            assert!(std::env::var_os("CI").is_none(), "{what} (CI is set)");
            eprintln!("SKIP: snp_launch: {what}");
            None
        }
    }
}

#[test]
fn soft_snp_launch_of_ovmf_fixture_matches_sev_snp_measure() {
    let Some(fw) = fixture() else { return };
    let p =
        SoftSnpPlatform::new(SnpIdentity::from_seed([7; 48]), SoftSnpConfig::default()).unwrap();
    p.snp_init().unwrap();
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(0x30000)))
        .unwrap();
    let upd =
        |g: &mut sev_firmware::snp::soft::SoftSnpGuest, t: PageType, gpa: u64, page: &mut [u8]| {
            g.snp_launch_update(&SnpLaunchUpdate::page(t, gpa), page)
                .unwrap_or_else(|e| panic!("LAUNCH_UPDATE {t:?} at {gpa:#x}: {e}"));
        };
    // The OVMF image as NORMAL pages ending at 4 GiB.
    let base = (1u64 << 32) - fw.len() as u64;
    for (i, chunk) in fw.chunks(4096).enumerate() {
        let mut pg = chunk.to_vec();
        upd(&mut g, PageType::Normal, base + (i as u64) * 4096, &mut pg);
    }
    // The metadata sections, as QEMU issues them.
    let footer = sev_proto::ovmf::FooterTable::parse(&fw).unwrap();
    let empty = file_hash(&[]);
    let table = padded_table(&empty, &empty, &cmdline_hash("console=ttyS0 loglevel=7"));
    let mut secrets = None;
    for s in ovmf_sev_metadata(&fw).unwrap() {
        let (gpa, pages) = (u64::from(s.gpa), (s.size as usize).div_ceil(4096));
        for i in 0..pages as u64 {
            let a = gpa + i * 4096;
            let mut pg = vec![0u8; 4096];
            match s.section_type {
                OvmfSectionType::SnpSecMem | OvmfSectionType::SvsmCaa => {
                    upd(&mut g, PageType::Zero, a, &mut pg)
                }
                OvmfSectionType::SnpSecrets => {
                    upd(&mut g, PageType::Secrets, a, &mut pg);
                    secrets = Some(SecretsPage::from_bytes(&pg).unwrap());
                }
                // An empty CPUID table (count 0) is accepted as is.
                OvmfSectionType::Cpuid => upd(&mut g, PageType::Cpuid, a, &mut pg),
                OvmfSectionType::SnpKernelHashes => {
                    let at = (footer.hashes_area().unwrap().base & 0xFFF) as usize;
                    pg[at..at + table.len()].copy_from_slice(&table);
                    upd(&mut g, PageType::Normal, a, &mut pg);
                }
            }
        }
    }
    // One VMSA (EPYC-v4 BSP at the reset vector, KVM_SEV_INIT2, SEV_FEATURES 0x21) as KVM does.
    let state = VcpuState::qemu_reset(true, 0xFFFF_FFF0, cpu_sig(23, 1, 2));
    let mut vmsa = kvm_es_vmsa(
        &state,
        &KvmVmsaParams {
            vmsa_features: 0x21,
            init2: true,
        },
    );
    upd(&mut g, PageType::Vmsa, VMSA_GPA, &mut vmsa);
    assert_eq!(hex::encode(g.launch_digest()), FIXTURE_LD);

    g.snp_launch_finish(&SnpLaunchFinish {
        host_data: [0xAB; 32],
        ..SnpLaunchFinish::default()
    })
    .unwrap();
    let sp = secrets.expect("the fixture has a SECRETS section");
    let req = ReportReq {
        report_data: [0x5C; 64],
        vmpl: 0,
        key_sel: 0,
    };
    let mut m = msg::seal(&sp.vmpck[0], 1, 5, 1, 0, &req.to_bytes()).unwrap();
    m.resize(4096, 0);
    let mut resp = vec![0u8; 4096];
    g.snp_guest_request(&m, &mut resp).unwrap();
    let (_h, pt) = msg::open(&sp.vmpck[0], &resp).unwrap();
    let r = ReportRsp::from_bytes(&pt).unwrap().report.unwrap();
    assert_eq!(hex::encode(r.measurement), FIXTURE_LD);
    assert_eq!((r.host_data, r.report_data), ([0xAB; 32], [0x5C; 64]));
    r.verify(&p.vcek_public_key(r.reported_tcb).unwrap())
        .unwrap();
}
