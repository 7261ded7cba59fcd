//! Tests of the soft SNP firmware (`cargo test -p sev-firmware --lib snp`).

use super::soft::{SoftSnpConfig, SoftSnpGuest, SoftSnpPlatform};
use super::vcek::{HashSticks, SnpIdentity, IDENTITY_FILE};
use super::*;
use crate::Status;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use sev_proto::snp::id_block::{IdAuth, IdBlock};
use sev_proto::snp::measure::{PageType, SnpLaunchDigest, VMSA_GPA};
use sev_proto::snp::msg::{self, ReportReq, ReportRsp};
use sev_proto::snp::secrets::SecretsPage;

const POLICY: SnpPolicy = SnpPolicy(0x30000);

fn seed(n: u8) -> [u8; 48] {
    openssl::sha::sha384(&[n; 5])
}

fn platform() -> SoftSnpPlatform {
    SoftSnpPlatform::new(SnpIdentity::from_seed(seed(1)), SoftSnpConfig::default()).unwrap()
}

fn status_of(r: crate::Result<impl std::fmt::Debug>) -> Status {
    match r {
        Err(e) => e.status().unwrap_or_else(|| panic!("not a status: {e}")),
        Ok(v) => panic!("expected a firmware error, got Ok({v:?})"),
    }
}

fn page(fill: u8) -> Vec<u8> {
    vec![fill; 4096]
}

/// INIT platform, a guest in LAUNCH state.
fn launched() -> (SoftSnpPlatform, SoftSnpGuest) {
    let p = platform();
    p.snp_init().unwrap();
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(POLICY)).unwrap();
    (p, g)
}

fn snapshot(g: &SoftSnpGuest) -> (SnpGuestStatus, [u8; 48]) {
    (g.snp_guest_status().unwrap(), g.launch_digest())
}

#[test]
fn platform_init_shutdown_and_status_layout() {
    let p = platform();
    let s = p.snp_platform_status().unwrap();
    assert_eq!(s.state, SnpPlatformState::Uninit);
    assert_eq!(status_of(p.snp_shutdown()), Status::InvalidPlatformState);
    assert_eq!(status_of(p.gctx_create()), Status::InvalidPlatformState);
    p.snp_init().unwrap();
    assert_eq!(status_of(p.snp_init()), Status::InvalidPlatformState);
    let s = p.snp_platform_status().unwrap();
    assert_eq!(s.state, SnpPlatformState::Init);
    let b = s.to_bytes();
    assert_eq!(&b[..4], &[1, 55, 1, 1]);
    assert_eq!(&b[4..8], &25u32.to_le_bytes());
    assert_eq!(&b[0x10..0x18], &[3, 0, 0, 0, 0, 0, 8, 0x73]);
    assert_eq!(&b[0x18..0x20], &[3, 0, 0, 0, 0, 0, 8, 0x73]);
    assert_eq!(SnpPlatformStatus::from_bytes(&b).unwrap(), s);
    let mut bad = b;
    bad[2] = 7;
    let e = SnpPlatformStatus::from_bytes(&bad).unwrap_err();
    assert!(e.to_string().contains("SNP_PLATFORM_STATUS.STATE"), "{e}");
    assert!(SnpPlatformStatus::from_bytes(&b[..31]).is_err());
    p.snp_shutdown().unwrap();
    assert_eq!(
        p.snp_platform_status().unwrap().state,
        SnpPlatformState::Uninit
    );
}

#[test]
fn snp_init_must_precede_legacy_init() {
    let p = platform();
    assert!(!p.legacy_init_allowed());
    p.set_legacy_init(true);
    assert_eq!(status_of(p.snp_init()), Status::InvalidPlatformState);
    assert_eq!(
        p.snp_platform_status().unwrap().state,
        SnpPlatformState::Uninit
    );
    p.set_legacy_init(false);
    p.snp_init().unwrap();
    assert!(p.legacy_init_allowed());
}

#[test]
fn launch_start_checks_in_order_and_counts_guests() {
    let p = platform();
    p.snp_init().unwrap();
    let mut g = p.gctx_create().unwrap();
    let before = snapshot(&g);
    // MBZ first, even with a bad policy.
    let mut ls = SnpLaunchStart::new(SnpPolicy(0));
    ls.flags = 4;
    assert_eq!(status_of(g.snp_launch_start(&ls)), Status::InvalidParam);
    // bit 17 clear, SMT bit clear while SMT is on, ABI too new, reserved bits, unknown bits.
    for pol in [
        0x10000,
        0x20000,
        0x30000 | (2 << 8),
        0x30000 | (1 << 40),
        0x30000 | (1 << 21),
    ] {
        assert_eq!(
            status_of(g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(pol)))),
            Status::PolicyFailure,
            "policy {pol:#x}"
        );
    }
    assert_eq!(snapshot(&g), before);
    assert_eq!(p.snp_platform_status().unwrap().guest_count, 0);
    g.snp_launch_start(&SnpLaunchStart::new(POLICY)).unwrap();
    assert_eq!(p.snp_platform_status().unwrap().guest_count, 1);
    let s = g.snp_guest_status().unwrap();
    assert_eq!(
        (s.state, s.policy, s.asid),
        (SnpGuestState::Launch, POLICY, 1)
    );
    assert_eq!(s.to_bytes()[0x0C], 1);
    assert_eq!(
        status_of(g.snp_launch_start(&SnpLaunchStart::new(POLICY))),
        Status::InvalidGuestState
    );
    // SMT off on the host: policy without SMT is fine.
    let p2 = SoftSnpPlatform::new(
        SnpIdentity::from_seed(seed(2)),
        SoftSnpConfig {
            smt_enabled: false,
            ..SoftSnpConfig::default()
        },
    )
    .unwrap();
    p2.snp_init().unwrap();
    let mut g2 = p2.gctx_create().unwrap();
    g2.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(0x20000)))
        .unwrap();
}

#[test]
fn launch_update_digest_matches_sev_proto_chain() {
    let (_p, mut g) = launched();
    let mut want = SnpLaunchDigest::new();
    let mut normal = page(0xAB);
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Normal, 0x1000),
        &mut normal,
    )
    .unwrap();
    want.update_normal(0x1000, &page(0xAB)).unwrap();
    let mut z = page(0x55);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Zero, 0x2000), &mut z)
        .unwrap();
    assert!(z.iter().all(|&b| b == 0), "ZERO page not zeroed");
    want.update_zero(0x2000, 4096).unwrap();
    let mut un = page(7);
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Unmeasured, 0x3000),
        &mut un,
    )
    .unwrap();
    assert_eq!(un, page(7));
    want.update_unmeasured(0x3000, 4096).unwrap();
    let mut sec = page(0xEE);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x4000), &mut sec)
        .unwrap();
    want.update_secrets(0x4000).unwrap();
    let sp = SecretsPage::from_bytes(&sec).unwrap();
    assert_eq!(sp.version, 3);
    assert_eq!(
        sp.fms, 0x00A00F11,
        "CPUID(1).EAX of family 19h model 01h stepping 1"
    );
    assert!(sp.vmpck.iter().all(|k| k != &[0u8; 32]));
    assert_ne!(sp.vmpck[0], sp.vmpck[1]);
    let mut cpuid = vec![0u8; 4096];
    cpuid[0] = 1;
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Cpuid, 0x5000), &mut cpuid)
        .unwrap();
    want.update_cpuid(0x5000).unwrap();
    let mut vmsa = page(0x11);
    vmsa[0x2F0..0x300].fill(0x99); // TSC scale/offset are measured as zero
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Vmsa, VMSA_GPA), &mut vmsa)
        .unwrap();
    want.update_vmsa(&vmsa).unwrap();
    let mut big = vec![3u8; 0x20_0000];
    let u = SnpLaunchUpdate {
        page_size_2m: true,
        ..SnpLaunchUpdate::page(PageType::Normal, 0x20_0000)
    };
    g.snp_launch_update(&u, &mut big).unwrap();
    want.update_normal(0x20_0000, &big).unwrap();
    assert_eq!(g.launch_digest(), want.digest());
}

#[test]
fn launch_update_refusals_change_nothing() {
    let (p, mut g) = launched();
    let before = snapshot(&g);
    let mut pg = page(1);
    let bad_type = SnpLaunchUpdate {
        page_type: 0,
        ..SnpLaunchUpdate::page(PageType::Normal, 0)
    };
    assert_eq!(
        status_of(g.snp_launch_update(&bad_type, &mut pg)),
        Status::InvalidParam
    );
    let t7 = SnpLaunchUpdate {
        page_type: 7,
        ..bad_type
    };
    assert_eq!(
        status_of(g.snp_launch_update(&t7, &mut pg)),
        Status::InvalidParam
    );
    // 2 MiB VMSA: INVALID_PAGE_SIZE; 2 MiB misaligned: INVALID_ADDRESS; wrong buffer size.
    let mut big = vec![0u8; 0x20_0000];
    let vmsa2m = SnpLaunchUpdate {
        page_size_2m: true,
        ..SnpLaunchUpdate::page(PageType::Vmsa, 0)
    };
    assert_eq!(
        status_of(g.snp_launch_update(&vmsa2m, &mut big)),
        Status::InvalidPageSize
    );
    let mis = SnpLaunchUpdate {
        page_size_2m: true,
        ..SnpLaunchUpdate::page(PageType::Normal, 0x1000)
    };
    assert_eq!(
        status_of(g.snp_launch_update(&mis, &mut big)),
        Status::InvalidAddress
    );
    assert_eq!(
        status_of(g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0), &mut big)),
        Status::InvalidPageSize
    );
    let imi = SnpLaunchUpdate {
        imi_page: true,
        ..SnpLaunchUpdate::page(PageType::Normal, 0)
    };
    assert_eq!(
        status_of(g.snp_launch_update(&imi, &mut pg)),
        Status::InvalidParam
    );
    // Bad CPUID tables: corrected copy written back, INVALID_PARAM, no digest extension.
    let mut cpuid = vec![0u8; 4096];
    cpuid[0] = 65;
    assert_eq!(
        status_of(g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Cpuid, 0x5000), &mut cpuid)),
        Status::InvalidParam
    );
    assert_eq!(u32::from_le_bytes(cpuid[..4].try_into().unwrap()), 64);
    let mut cpuid = vec![0u8; 4096];
    cpuid[0] = 1;
    cpuid[0x10] = 0xB; // leaf 0xB, eax_in
    cpuid[0x10 + 0x28] = 1; // entry reserved field
    assert_eq!(
        status_of(g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Cpuid, 0x5000), &mut cpuid)),
        Status::InvalidParam
    );
    assert_eq!(
        (cpuid[0x10], cpuid[0x38]),
        (0xB, 0),
        "reserved cleared, leaf kept"
    );
    assert_eq!(snapshot(&g), before);
    // Guest in INIT (no LAUNCH_START): INVALID_GUEST_STATE, after the parameter checks.
    let mut g2 = p.gctx_create().unwrap();
    assert_eq!(
        status_of(g2.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0), &mut pg)),
        Status::InvalidGuestState
    );
    assert_eq!(
        status_of(g2.snp_launch_update(&bad_type, &mut pg)),
        Status::InvalidParam
    );
    // Platform shut down: INVALID_PLATFORM_STATE first; re-INIT: the old context is gone.
    p.snp_shutdown().unwrap();
    assert_eq!(
        status_of(g.snp_launch_update(&bad_type, &mut pg)),
        Status::InvalidPlatformState
    );
    p.snp_init().unwrap();
    assert_eq!(status_of(g.snp_guest_status()), Status::InvalidGuest);
}

fn p384() -> PKey<openssl::pkey::Private> {
    PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap())
        .unwrap()
}

#[test]
fn launch_finish_id_block_checks() {
    let (_p, mut g) = launched();
    let mut pg = page(9);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0), &mut pg)
        .unwrap();
    let ld = g.launch_digest();
    let (idk, authk) = (p384(), p384());
    let good = IdBlock::new(ld, [1; 16], [2; 16], 7, POLICY);
    let auth = IdAuth::sign(&good, &idk, Some(&authk)).unwrap().to_bytes();
    let before = snapshot(&g);
    fn fin<'a>(b: &'a [u8], a: &'a [u8], auth_key_en: bool) -> SnpLaunchFinish<'a> {
        SnpLaunchFinish {
            id_block: Some(b),
            id_auth: Some(a),
            auth_key_en,
            vcek_dis: false,
            host_data: [0x42; 32],
        }
    }
    let wrong_ld = IdBlock::new([0; 48], [1; 16], [2; 16], 7, POLICY);
    let a2 = IdAuth::sign(&wrong_ld, &idk, None).unwrap().to_bytes();
    assert_eq!(
        status_of(g.snp_launch_finish(&fin(&wrong_ld.to_bytes(), &a2, false))),
        Status::BadMeasurement
    );
    let wrong_pol = IdBlock::new(ld, [1; 16], [2; 16], 7, SnpPolicy(0xB0000));
    let a3 = IdAuth::sign(&wrong_pol, &idk, None).unwrap().to_bytes();
    assert_eq!(
        status_of(g.snp_launch_finish(&fin(&wrong_pol.to_bytes(), &a3, false))),
        Status::PolicyFailure
    );
    let mut badsig = auth;
    badsig[0x40] ^= 1;
    assert_eq!(
        status_of(g.snp_launch_finish(&fin(&good.to_bytes(), &badsig, true))),
        Status::BadSignature
    );
    let mut badauth = auth;
    badauth[0x680] ^= 1;
    assert_eq!(
        status_of(g.snp_launch_finish(&fin(&good.to_bytes(), &badauth, true))),
        Status::BadSignature
    );
    let mut algo = auth;
    algo[0] = 2;
    assert_eq!(
        status_of(g.snp_launch_finish(&fin(&good.to_bytes(), &algo, true))),
        Status::InvalidParam
    );
    let only_auth = SnpLaunchFinish {
        auth_key_en: true,
        ..SnpLaunchFinish::default()
    };
    assert_eq!(
        status_of(g.snp_launch_finish(&only_auth)),
        Status::InvalidParam
    );
    assert_eq!(snapshot(&g), before);
    g.snp_launch_finish(&fin(&good.to_bytes(), &auth, true))
        .unwrap();
    assert_eq!(g.snp_guest_status().unwrap().state, SnpGuestState::Running);
    assert_eq!(
        status_of(g.snp_launch_finish(&SnpLaunchFinish::default())),
        Status::InvalidGuestState
    );
    assert_eq!(
        status_of(g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0), &mut pg)),
        Status::InvalidGuestState
    );
}

#[test]
fn decommission_from_any_state() {
    let p = platform();
    p.snp_init().unwrap();
    let mut a = p.gctx_create().unwrap();
    a.snp_decommission().unwrap();
    assert_eq!(status_of(a.snp_guest_status()), Status::InvalidGuest);
    assert_eq!(status_of(a.snp_decommission()), Status::InvalidGuest);
    assert_eq!(
        status_of(a.snp_launch_start(&SnpLaunchStart::new(POLICY))),
        Status::InvalidGuest
    );
    let (_p, mut b) = launched();
    b.snp_decommission().unwrap();
    let (_p, mut c) = launched();
    c.snp_launch_finish(&SnpLaunchFinish::default()).unwrap();
    c.snp_decommission().unwrap();
    assert_eq!(status_of(c.snp_guest_status()), Status::InvalidGuest);
}

// ---- identity / VCEK ----

#[test]
fn vcek_matches_the_notes_self_consistency_vector() {
    // snp-spec-notes.md §3.4 (computed there with a Python prototype of the same recipe).
    let kdf0 = sev_proto::kdf::kdf(&[0u8; 48], super::vcek::LABEL_VCEK, b"", 56);
    let k = hex::encode(&kdf0[..]);
    assert!(
        k.starts_with("2750253841fa31ca") && k.ends_with("6d"),
        "{k}"
    );
    let s0 = openssl::sha::sha384(b"sevm soft chip #0");
    let h = hex::encode(s0);
    assert!(h.starts_with("7c0907") && h.ends_with("a731"), "{h}");
    let st = HashSticks::from_seed(&s0, u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 0x73]));
    let vs = hex::encode(&st.vcek_seed()[..]);
    assert!(vs.starts_with("6819645b") && vs.ends_with("89b0"), "{vs}");
    let d = hex::encode(st.vcek_key().unwrap().private_key().to_vec());
    assert!(
        d.starts_with("7c6cf348044e88f1ce") && d.ends_with("2dd7"),
        "{d}"
    );
}

#[test]
fn vcek_older_derivable_newer_not() {
    let s = seed(3);
    let t = |b: [u8; 8]| u64::from_le_bytes(b);
    let cur = t([3, 1, 0, 0, 0, 0, 8, 0x73]);
    let sticks = HashSticks::from_seed(&s, cur);
    for older in [
        cur,
        t([3, 1, 0, 0, 0, 0, 8, 0x70]),
        t([2, 1, 0, 0, 0, 0, 8, 0x73]),
        t([3, 0, 0, 0, 0, 0, 5, 0x10]),
        t([0; 8]),
    ] {
        let d = sticks.derive_older(older).unwrap();
        assert_eq!(d.tcb(), older);
        assert_eq!(
            d.vcek_seed()[..],
            HashSticks::from_seed(&s, older).vcek_seed()[..],
            "tcb {older:016x}"
        );
    }
    for newer in [
        t([4, 1, 0, 0, 0, 0, 8, 0x73]),
        t([3, 1, 0, 0, 0, 0, 8, 0x74]),
        t([0, 0, 0, 0, 0, 0, 9, 0]),
    ] {
        assert!(sticks.derive_older(newer).is_err(), "{newer:016x}");
    }
    // Deterministic, and different TCBs / seeds give different keys.
    let k1 = sticks.vcek_key().unwrap().private_key().to_vec();
    assert_eq!(
        k1,
        HashSticks::from_seed(&s, cur)
            .vcek_key()
            .unwrap()
            .private_key()
            .to_vec()
    );
    let k2 = sticks.derive_older(t([3, 1, 0, 0, 0, 0, 8, 0x72])).unwrap();
    assert_ne!(k1, k2.vcek_key().unwrap().private_key().to_vec());
    let k3 = HashSticks::from_seed(&seed(4), cur).vcek_key().unwrap();
    assert_ne!(k1, k3.private_key().to_vec());
}

#[test]
fn identity_file_persists_with_mode_0600_and_rejects_garbage() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let a = SnpIdentity::load_or_create(dir.path()).unwrap();
    let path = dir.path().join(IDENTITY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b = SnpIdentity::load_or_create(dir.path()).unwrap();
    assert_eq!(a.chip_id().unwrap(), b.chip_id().unwrap());
    let other = tempfile::tempdir().unwrap();
    let c = SnpIdentity::load_or_create(other.path()).unwrap();
    assert_ne!(a.chip_id().unwrap(), c.chip_id().unwrap());
    std::fs::write(&path, br#"{"version":1,"fused_seed":"abcd"}"#).unwrap();
    let e = SnpIdentity::load_or_create(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("fused_seed") && e.to_string().contains(IDENTITY_FILE),
        "{e}"
    );
    std::fs::write(&path, b"not json").unwrap();
    assert!(SnpIdentity::load_or_create(dir.path()).is_err());
}

// ---- guest requests ----

fn running(host_data: [u8; 32]) -> (SoftSnpPlatform, SoftSnpGuest, SecretsPage, SnpLaunchDigest) {
    let (p, mut g) = launched();
    let mut want = SnpLaunchDigest::new();
    let mut n = page(0x5A);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, 0x10_0000), &mut n)
        .unwrap();
    want.update_normal(0x10_0000, &page(0x5A)).unwrap();
    let mut s = page(0);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    want.update_secrets(0x5000).unwrap();
    g.snp_launch_finish(&SnpLaunchFinish {
        host_data,
        ..SnpLaunchFinish::default()
    })
    .unwrap();
    (p, g, SecretsPage::from_bytes(&s).unwrap(), want)
}

fn request(sp: &SecretsPage, vmpck: u8, seqno: u64, req: &ReportReq) -> Vec<u8> {
    let mut m = msg::seal(
        &sp.vmpck[usize::from(vmpck)],
        seqno,
        5,
        1,
        vmpck,
        &req.to_bytes(),
    )
    .unwrap();
    m.resize(4096, 0);
    m
}

fn rr(vmpl: u32) -> ReportReq {
    ReportReq {
        report_data: [0x77; 64],
        vmpl,
        key_sel: 0,
    }
}

fn answer(sp: &SecretsPage, vmpck: u8, resp: &[u8]) -> (msg::MsgHeader, ReportRsp) {
    let (h, pt) = msg::open(&sp.vmpck[usize::from(vmpck)], resp).unwrap();
    (h, ReportRsp::from_bytes(&pt).unwrap())
}

#[test]
fn report_request_verifies_with_the_vcek_and_carries_the_launch() {
    let (p, mut g, sp, want) = running([0x42; 32]);
    let mut resp = page(0);
    let n = g
        .snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    assert!(n > msg::HEADER_SIZE);
    let (h, rsp) = answer(&sp, 0, &resp);
    assert_eq!((h.seqno, h.msg_type, h.vmpck), (2, 6, 0));
    assert_eq!(rsp.status, 0);
    let r = rsp.report.unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.measurement, want.digest());
    assert_eq!(r.host_data, [0x42; 32]);
    assert_eq!(r.report_data, [0x77; 64]);
    assert_eq!(r.policy, POLICY);
    assert_eq!(r.chip_id, p.chip_id());
    assert_eq!(r.report_id_ma, [0xFF; 32]);
    let tcb = SoftSnpConfig::default().tcb;
    assert_eq!(
        (r.reported_tcb, r.current_tcb, r.launch_tcb),
        (tcb, tcb, tcb)
    );
    assert_eq!(r.product(), Some(sev_proto::snp::report::Product::Milan));
    let vcek = p.vcek_public_key(r.reported_tcb).unwrap();
    r.verify(&vcek).unwrap();
    // Re-parsed from bytes it still verifies; a flipped signed byte does not.
    let bytes = r.to_bytes().unwrap();
    let mut back = sev_proto::snp::report::AttestationReport::from_bytes(&bytes).unwrap();
    back.verify(&vcek).unwrap();
    back.measurement[0] ^= 1;
    assert!(back.verify(&vcek).is_err());
    // Another platform's VCEK does not verify it.
    let other =
        SoftSnpPlatform::new(SnpIdentity::from_seed(seed(9)), SoftSnpConfig::default()).unwrap();
    assert!(r.verify(&other.vcek_public_key(tcb).unwrap()).is_err());
    // VMPCK1 with VMPL 1 works, with its own sequence numbers starting at 1.
    let n = g
        .snp_guest_request(&request(&sp, 1, 1, &rr(1)), &mut resp)
        .unwrap();
    assert!(n > 0);
    let (_h, rsp) = answer(&sp, 1, &resp);
    assert_eq!(rsp.report.unwrap().vmpl, 1);
}

#[test]
fn report_request_sequence_and_vmpl_rules() {
    let (_p, mut g, sp, _) = running([0; 32]);
    let mut resp = page(0);
    // Skipped (3 instead of 1) and then replayed sequence numbers: AEAD_OFLOW, no state change.
    assert_eq!(
        status_of(g.snp_guest_request(&request(&sp, 0, 3, &rr(0)), &mut resp)),
        Status::AeadOflow
    );
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    assert_eq!(
        status_of(g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)),
        Status::AeadOflow
    );
    assert_eq!(
        status_of(g.snp_guest_request(&request(&sp, 0, 2, &rr(0)), &mut resp)),
        Status::AeadOflow
    );
    // A tampered ciphertext is refused and does not consume the sequence number.
    let mut bad = request(&sp, 0, 3, &rr(0));
    bad[msg::HEADER_SIZE] ^= 1;
    assert!(g.snp_guest_request(&bad, &mut resp).is_err());
    g.snp_guest_request(&request(&sp, 0, 3, &rr(0)), &mut resp)
        .unwrap();
    assert_eq!(answer(&sp, 0, &resp).0.seqno, 4);
    // VMPL 0 requested with VMPCK 2: refused inside the response (status 0x16), seqno used.
    g.snp_guest_request(&request(&sp, 2, 1, &rr(0)), &mut resp)
        .unwrap();
    let (h, rsp) = answer(&sp, 2, &resp);
    assert_eq!((h.seqno, rsp.status, rsp.report.is_none()), (2, 0x16, true));
    // KEY_SEL 2 (VLEK only; none loaded): INVALID_KEY inside the response.
    let mut r = rr(2);
    r.key_sel = 2;
    g.snp_guest_request(&request(&sp, 2, 3, &r), &mut resp)
        .unwrap();
    assert_eq!(answer(&sp, 2, &resp).1.status, 0x27);
    // Not RUNNING: INVALID_GUEST_STATE.
    let (_p, mut l) = launched();
    assert_eq!(
        status_of(l.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)),
        Status::InvalidGuestState
    );
}

// ---- soft CA and VCEK certificates ----

fn soft_ca() -> &'static super::ca::SoftCa {
    static CA: std::sync::OnceLock<super::ca::SoftCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| super::ca::SoftCa::generate().unwrap())
}

#[test]
fn soft_chain_verifies_and_vcek_extensions_parse() {
    use sev_proto::snp::certs::VcekExtensions;
    let ca = soft_ca();
    let ark_pub = ca.ark.public_key().unwrap();
    let ask_pub = ca.ask.public_key().unwrap();
    assert!(ca.ark.verify(&ark_pub).unwrap(), "ARK self-signature");
    assert!(ca.ask.verify(&ark_pub).unwrap(), "ASK under ARK");
    assert!(!ca.ark.verify(&ask_pub).unwrap());
    let ark_text = String::from_utf8(ca.ark.to_text().unwrap()).unwrap();
    assert!(
        ark_text.contains("rsassaPss") && ark_text.contains("sha384"),
        "{ark_text}"
    );
    assert!(
        ark_text.contains("NOT Advanced Micro Devices"),
        "{ark_text}"
    );
    assert!(ark_text.contains("CN=ARK-Milan") || ark_text.contains("CN = ARK-Milan"));

    let (p, mut g, sp, _) = running([1; 32]);
    let mut resp = page(0);
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    let r = answer(&sp, 0, &resp).1.report.unwrap();
    let vcek_pub = p.vcek_public_key(r.reported_tcb).unwrap();
    let vcek = ca
        .vcek_cert(&vcek_pub, r.reported_tcb, &p.chip_id())
        .unwrap();
    assert!(vcek.verify(&ask_pub).unwrap(), "VCEK under ASK");
    assert!(!vcek.verify(&ark_pub).unwrap());
    // The certificate's key verifies the report; its extensions match the report's TCB and chip.
    r.verify(&vcek.public_key().unwrap()).unwrap();
    let ext = VcekExtensions::from_x509(&vcek).unwrap();
    assert_eq!(ext.struct_version, Some(0));
    assert_eq!(ext.product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(
        (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl),
        (Some(3), Some(0), Some(8), Some(0x73))
    );
    assert_eq!(ext.hw_id.as_deref(), Some(&p.chip_id()[..]));
    ext.check_report(&r).unwrap();
    // A VCEK certificate for an older TCB carries that TCB and no longer matches the report.
    let older = u64::from_le_bytes([2, 0, 0, 0, 0, 0, 8, 0x73]);
    let old = ca
        .vcek_cert(&p.vcek_public_key(older).unwrap(), older, &p.chip_id())
        .unwrap();
    let oext = VcekExtensions::from_x509(&old).unwrap();
    assert_eq!(oext.bl_spl, Some(2));
    assert!(oext.check_report(&r).is_err());
    assert!(r.verify(&old.public_key().unwrap()).is_err());
}

#[test]
fn soft_ca_persists() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let a = super::ca::SoftCa::load_or_create(dir.path()).unwrap();
    let path = dir.path().join(super::ca::CA_FILE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let b = super::ca::SoftCa::load_or_create(dir.path()).unwrap();
    assert_eq!(a.ark.to_der().unwrap(), b.ark.to_der().unwrap());
    assert_eq!(a.ask.to_der().unwrap(), b.ask.to_der().unwrap());
    // The reloaded ASK key still signs VCEKs that chain to the stored ASK.
    let p = platform();
    let tcb = SoftSnpConfig::default().tcb;
    let v = b
        .vcek_cert(&p.vcek_public_key(tcb).unwrap(), tcb, &p.chip_id())
        .unwrap();
    assert!(v.verify(&a.ask.public_key().unwrap()).unwrap());
    std::fs::write(
        &path,
        br#"{"version":1,"ark_key_pem":"x","ask_key_pem":"y","ark_der_hex":"","ask_der_hex":""}"#,
    )
    .unwrap();
    let e = super::ca::SoftCa::load_or_create(dir.path()).unwrap_err();
    assert!(e.to_string().contains("ark_key_pem"), "{e}");
}

/// `openssl verify` (the OpenSSL command-line tool, outside the repo) accepts the soft chain
/// ARK → ASK → VCEK and rejects the VCEK against a different ARK; `-x509_strict` accepts the
/// ASK under the ARK (not the VCEK: AMD's VCEK profile has no Authority Key Identifier, which
/// strict mode requires, and ours follows AMD's).
#[test]
fn soft_chain_passes_openssl_verify() {
    let have = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "the openssl command-line tool is required in CI for this test"
        );
        eprintln!("SKIP: soft_chain_passes_openssl_verify: no `openssl` command");
        return;
    }
    let ca = soft_ca();
    let p = platform();
    let vcek = p.vcek_cert(ca, SoftSnpConfig::default().tcb).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, c: &openssl::x509::X509| {
        let path = dir.path().join(n);
        std::fs::write(&path, c.to_pem().unwrap()).unwrap();
        path
    };
    let (ark, ask, vc) = (
        w("ark.pem", &ca.ark),
        w("ask.pem", &ca.ask),
        w("vcek.pem", &vcek),
    );
    let run = |strict: bool, cafile: &std::path::Path, leaf: &std::path::Path| {
        let mut c = std::process::Command::new("openssl");
        c.arg("verify");
        if strict {
            c.arg("-x509_strict");
        }
        c.arg("-CAfile")
            .arg(cafile)
            .arg("-untrusted")
            .arg(&ask)
            .arg(leaf);
        c.output().unwrap()
    };
    for (strict, leaf) in [(false, &vc), (true, &ask)] {
        let o = run(strict, &ark, leaf);
        assert!(
            o.status.success(),
            "openssl verify (strict {strict}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let other = super::ca::SoftCa::generate().unwrap();
    let bad = w("other-ark.pem", &other.ark);
    assert!(!run(false, &bad, &vc).status.success());
}

/// The virtee `sev` crate (a third-party verifier) accepts the soft chain and a soft report:
/// `Chain::verify` (ARK self-signed, ARK → ASK → VCEK) and `(&Chain, &AttestationReport)`
/// (it re-encodes the parsed report before checking the signature, so every field must
/// round-trip); a flipped measured byte fails.
#[test]
fn virtee_sev_crate_accepts_soft_chain_and_report() {
    use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
    use sev::firmware::guest::AttestationReport as VReport;
    use sev::parser::ByteParser;
    let ca_ = soft_ca();
    let (p, mut g, sp, want) = running([0x24; 32]);
    let mut resp = page(0);
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    let r = answer(&sp, 0, &resp).1.report.unwrap();
    let vcek = p.vcek_cert(ca_, r.reported_tcb).unwrap();
    let chain = Chain {
        ca: ca::Chain {
            ark: Certificate::from_der(&ca_.ark.to_der().unwrap()).unwrap(),
            ask: Certificate::from_der(&ca_.ask.to_der().unwrap()).unwrap(),
        },
        vek: Certificate::from_der(&vcek.to_der().unwrap()).unwrap(),
    };
    (&chain).verify().unwrap();
    let bytes = r.to_bytes().unwrap();
    let vr = VReport::from_bytes(&bytes).unwrap();
    assert_eq!(vr.measurement[..], want.digest()[..]);
    (&chain, &vr).verify().unwrap();
    let mut tampered = bytes;
    tampered[0x90] ^= 1;
    let vt = VReport::from_bytes(&tampered).unwrap();
    assert!((&chain, &vt).verify().is_err());
}

#[test]
fn id_block_fields_reach_the_report_and_vcek_dis_refuses_reports() {
    let (_p, mut g) = launched();
    let mut s = page(0);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    let sp = SecretsPage::from_bytes(&s).unwrap();
    let (idk, authk) = (p384(), p384());
    let block = IdBlock::new(g.launch_digest(), [0xF1; 16], [0x11; 16], 9, POLICY);
    let auth = IdAuth::sign(&block, &idk, Some(&authk)).unwrap();
    g.snp_launch_finish(&SnpLaunchFinish {
        id_block: Some(&block.to_bytes()),
        id_auth: Some(&auth.to_bytes()),
        auth_key_en: true,
        vcek_dis: false,
        host_data: [0; 32],
    })
    .unwrap();
    let mut resp = page(0);
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    let r = answer(&sp, 0, &resp).1.report.unwrap();
    assert_eq!(
        (r.family_id, r.image_id, r.guest_svn),
        ([0xF1; 16], [0x11; 16], 9)
    );
    assert_eq!(r.id_key_digest, auth.id_key_digest());
    assert_eq!(r.author_key_digest, auth.author_key_digest());
    assert!(r.author_key_en());
    assert_eq!(r.signing_key(), 0);

    // VCEK_DIS: GUEST_STATUS shows it and report requests get INVALID_KEY inside the response.
    let (_p, mut g) = launched();
    let mut s = page(0);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    let sp = SecretsPage::from_bytes(&s).unwrap();
    g.snp_launch_finish(&SnpLaunchFinish {
        vcek_dis: true,
        ..SnpLaunchFinish::default()
    })
    .unwrap();
    let st = g.snp_guest_status().unwrap();
    assert!(st.vcek_dis);
    assert_eq!(st.to_bytes()[0x10], 1);
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    assert_eq!(answer(&sp, 0, &resp).1.status, 0x27);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Init,
        Shutdown,
        Start(u64, u32),
        Update(u8, bool, u64, bool, u8),
        Finish(Option<Vec<u8>>, bool, bool),
        Request(Vec<u8>),
        Decommission,
        Config(u64, u32),
        Commit,
        Dbg(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Init),
            Just(Op::Shutdown),
            (
                prop_oneof![Just(0x30000u64), Just(0x10000), Just(0x20000), any::<u64>()],
                0u32..5
            )
                .prop_map(|(p, f)| Op::Start(p, f)),
            (
                0u8..8,
                any::<bool>(),
                0u64..0x40_0000,
                any::<bool>(),
                any::<u8>()
            )
                .prop_map(|(t, b, g, i, f)| Op::Update(t, b, g & !0xFFF, i, f)),
            (
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..0x70)),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(b, a, v)| Op::Finish(b, a, v)),
            proptest::collection::vec(any::<u8>(), 0..0x100).prop_map(Op::Request),
            Just(Op::Decommission),
            (
                prop_oneof![
                    Just(0u64),
                    Just(u64::from_le_bytes([2, 0, 0, 0, 0, 0, 8, 0x70])),
                    Just(SoftSnpConfig::default().tcb),
                    any::<u64>()
                ],
                0u32..6
            )
                .prop_map(|(t, f)| Op::Config(t, f)),
            Just(Op::Commit),
            any::<bool>().prop_map(Op::Dbg),
        ]
    }

    type Snap = (
        SnpPlatformStatus,
        std::result::Result<SnpGuestStatus, Option<Status>>,
        [u8; 48],
    );

    fn snap(p: &SoftSnpPlatform, g: &SoftSnpGuest) -> Snap {
        (
            p.snp_platform_status().unwrap(),
            g.snp_guest_status().map_err(|e| e.status()),
            g.launch_digest(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Random command sequences never panic, every failure is a firmware status, and a
        /// refused command leaves platform status, guest status and launch digest unchanged.
        #[test]
        fn refused_commands_change_nothing(ops in proptest::collection::vec(op(), 1..24)) {
            let p = platform();
            p.snp_init().unwrap();
            let mut g = p.gctx_create().unwrap();
            for op in ops {
                let before = snap(&p, &g);
                let r: crate::Result<()> = match &op {
                    Op::Init => p.snp_init(),
                    Op::Shutdown => p.snp_shutdown(),
                    Op::Start(pol, flags) => {
                        let mut s = SnpLaunchStart::new(SnpPolicy(*pol));
                        s.flags = *flags;
                        g.snp_launch_start(&s)
                    }
                    Op::Update(t, big, gpa, imi, fill) => {
                        let mut pg = vec![*fill; if *big { 0x20_0000 } else { 4096 }];
                        let u = SnpLaunchUpdate {
                            page_type: *t,
                            page_size_2m: *big,
                            imi_page: *imi,
                            gpa: *gpa,
                            vmpl_perms: [0; 3],
                        };
                        g.snp_launch_update(&u, &mut pg)
                    }
                    Op::Finish(b, a, v) => {
                        let auth = vec![0u8; 0x1000];
                        g.snp_launch_finish(&SnpLaunchFinish {
                            id_block: b.as_deref(),
                            id_auth: b.as_ref().map(|_| &auth[..]),
                            auth_key_en: *a,
                            vcek_dis: *v,
                            host_data: [0; 32],
                        })
                    }
                    Op::Request(bytes) => {
                        let mut req = bytes.clone();
                        req.resize(4096, 0);
                        let mut resp = vec![0u8; 4096];
                        g.snp_guest_request(&req, &mut resp).map(|_| ())
                    }
                    Op::Decommission => g.snp_decommission(),
                    Op::Config(t, f) => p.snp_config(&soft::SnpConfig {
                        reported_tcb: *t,
                        flags: *f,
                    }),
                    Op::Commit => p.snp_commit(),
                    Op::Dbg(enc) => {
                        let (src, mut dst) = (vec![1u8; 4096], vec![0u8; 4096]);
                        if *enc {
                            g.snp_dbg_encrypt(&src, &mut dst)
                        } else {
                            g.snp_dbg_decrypt(&src, &mut dst)
                        }
                    }
                };
                if let Err(e) = r {
                    prop_assert!(e.status().is_some(), "{op:?}: {e}");
                    prop_assert_eq!(snap(&p, &g), before, "{:?} refused with {} changed state", op, e);
                }
            }
        }
    }
}

// ---- SNP_CONFIG, SNP_COMMIT, firmware install ----

use super::soft::{SnpConfig, CONFIG_FILE};

/// A running guest on `p` (INIT), its secrets page; returns the report for REPORT_DATA 0x77.
fn report_on(p: &SoftSnpPlatform) -> sev_proto::snp::report::AttestationReport {
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(POLICY)).unwrap();
    let mut s = page(0);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    g.snp_launch_finish(&SnpLaunchFinish::default()).unwrap();
    let sp = SecretsPage::from_bytes(&s).unwrap();
    let mut resp = page(0);
    g.snp_guest_request(&request(&sp, 0, 1, &rr(0)), &mut resp)
        .unwrap();
    let (_h, rsp) = answer(&sp, 0, &resp);
    assert_eq!(rsp.status, 0);
    rsp.report.unwrap()
}

fn tcb(bl: u8, tee: u8, snp: u8, ucode: u8) -> u64 {
    u64::from_le_bytes([bl, tee, 0, 0, 0, 0, snp, ucode])
}

#[test]
fn snp_config_reported_tcb_changes_the_signing_vcek() {
    let p = platform();
    let cur = SoftSnpConfig::default().tcb;
    let lower = tcb(2, 0, 8, 0x70);
    // Refused before SNP_INIT, with reserved flags, or above the committed TCB: no change.
    let before = p.snp_platform_status().unwrap();
    let cfg = SnpConfig {
        reported_tcb: lower,
        flags: 0,
    };
    assert_eq!(status_of(p.snp_config(&cfg)), Status::InvalidPlatformState);
    p.snp_init().unwrap();
    let before_init = p.snp_platform_status().unwrap();
    assert_eq!(before.reported_tcb, before_init.reported_tcb);
    for bad in [
        SnpConfig {
            reported_tcb: lower,
            flags: 4,
        },
        SnpConfig {
            reported_tcb: tcb(4, 0, 8, 0x73),
            flags: 0,
        },
        SnpConfig {
            reported_tcb: tcb(3, 0, 8, 0x74),
            flags: 0,
        },
        // Lower in one component but above in another.
        SnpConfig {
            reported_tcb: tcb(2, 0, 9, 0x10),
            flags: 0,
        },
    ] {
        assert_eq!(
            status_of(p.snp_config(&bad)),
            Status::InvalidParam,
            "{bad:?}"
        );
        assert_eq!(p.snp_platform_status().unwrap(), before_init);
    }
    p.snp_config(&cfg).unwrap();
    let s = p.snp_platform_status().unwrap();
    assert_eq!((s.current_tcb, s.reported_tcb), (cur, lower));
    assert!(!s.mask_chip_id && !s.mask_chip_key);
    let r = report_on(&p);
    assert_eq!(
        (r.reported_tcb, r.current_tcb, r.committed_tcb, r.launch_tcb),
        (lower, cur, cur, cur)
    );
    r.verify(&p.vcek_public_key(lower).unwrap()).unwrap();
    assert!(r.verify(&p.vcek_public_key(cur).unwrap()).is_err());
    // The VCEK certificate for the reported TCB carries it and its key verifies the report.
    let ca = soft_ca();
    let cert = p.vcek_cert(ca, lower).unwrap();
    let ext = sev_proto::snp::certs::VcekExtensions::from_x509(&cert).unwrap();
    ext.check_report(&r).unwrap();
    r.verify(&cert.public_key().unwrap()).unwrap();
    // Reset (0) follows the committed TCB again.
    p.snp_config(&SnpConfig::default()).unwrap();
    assert_eq!(p.snp_platform_status().unwrap().reported_tcb, cur);
    let r = report_on(&p);
    assert_eq!(r.reported_tcb, cur);
    r.verify(&p.vcek_public_key(cur).unwrap()).unwrap();
}

#[test]
fn snp_config_masks_chip_id_and_chip_key() {
    let p = platform();
    p.snp_init().unwrap();
    p.snp_config(&SnpConfig {
        reported_tcb: 0,
        flags: 1,
    })
    .unwrap();
    let s = p.snp_platform_status().unwrap();
    assert!(s.mask_chip_id && !s.mask_chip_key);
    let r = report_on(&p);
    assert_eq!(r.chip_id, [0; 64]);
    assert!(!r.mask_chip_key());
    r.verify(&p.vcek_public_key(r.reported_tcb).unwrap())
        .unwrap();
    p.snp_config(&SnpConfig {
        reported_tcb: 0,
        flags: 2,
    })
    .unwrap();
    let r = report_on(&p);
    assert_eq!(r.chip_id, p.chip_id());
    assert!(r.mask_chip_key());
    assert_eq!(r.signing_key(), 7);
    assert!(r
        .verify(&p.vcek_public_key(r.reported_tcb).unwrap())
        .is_err());
}

#[test]
fn commit_after_firmware_install_raises_committed_and_launch_tcb() {
    let p = platform();
    let old = SoftSnpConfig::default().tcb;
    let new = tcb(3, 0, 9, 0x75);
    // A newer firmware installs only while UNINIT; an older one than committed is refused.
    p.snp_init().unwrap();
    assert_eq!(
        status_of(p.download_firmware(new)),
        Status::InvalidPlatformState
    );
    // COMMIT while INIT with nothing newer installed: no change.
    p.snp_commit().unwrap();
    assert_eq!(p.snp_platform_status().unwrap().reported_tcb, old);
    p.snp_shutdown().unwrap();
    assert_eq!(status_of(p.snp_commit()), Status::InvalidPlatformState);
    assert_eq!(
        status_of(p.download_firmware(tcb(3, 0, 7, 0x80))),
        Status::BadSvn
    );
    p.download_firmware(new).unwrap();
    p.snp_init().unwrap();
    let s = p.snp_platform_status().unwrap();
    assert_eq!((s.current_tcb, s.reported_tcb), (new, old));
    let r = report_on(&p);
    assert_eq!(
        (r.current_tcb, r.committed_tcb, r.reported_tcb, r.launch_tcb),
        (new, old, old, old)
    );
    r.verify(&p.vcek_public_key(old).unwrap()).unwrap();
    // A reported TCB between committed and current is refused (above committed).
    assert_eq!(
        status_of(p.snp_config(&SnpConfig {
            reported_tcb: new,
            flags: 0
        })),
        Status::InvalidParam
    );
    p.snp_commit().unwrap();
    let s = p.snp_platform_status().unwrap();
    assert_eq!((s.current_tcb, s.reported_tcb), (new, new));
    let r = report_on(&p);
    assert_eq!(
        (r.current_tcb, r.committed_tcb, r.reported_tcb, r.launch_tcb),
        (new, new, new, new)
    );
    r.verify(&p.vcek_public_key(new).unwrap()).unwrap();
    // Rolling back below the new committed TCB is now refused.
    p.snp_shutdown().unwrap();
    assert_eq!(status_of(p.download_firmware(old)), Status::BadSvn);
}

#[test]
fn snp_config_state_persists_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let lower = tcb(1, 0, 8, 0x73);
    {
        let p = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap();
        assert!(!dir.path().join(CONFIG_FILE).exists());
        p.snp_init().unwrap();
        p.snp_config(&SnpConfig {
            reported_tcb: lower,
            flags: 1,
        })
        .unwrap();
    }
    let path = dir.path().join(CONFIG_FILE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let p = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap();
    let s = p.snp_platform_status().unwrap();
    assert_eq!((s.reported_tcb, s.mask_chip_id), (lower, true));
    drop(p);
    let good = std::fs::read_to_string(&path).unwrap();
    for (bad, needle) in [
        (
            good.replace("\"version\": 1", "\"version\": 2"),
            "version 2",
        ),
        (
            good.replace(
                &format!("\"reported_tcb\": {lower}"),
                &format!("\"reported_tcb\": {}", tcb(9, 0, 8, 0x73)),
            ),
            "reported_tcb",
        ),
        ("{".to_string(), "EOF"),
        (
            good.replace("\"mask_chip_key\"", "\"mask_chip_keyz\""),
            "mask_chip_keyz",
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let e = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap_err();
        let m = e.to_string();
        assert!(m.contains(CONFIG_FILE) && m.contains(needle), "{m}");
    }
}

// ---- MSG_KEY_REQ ----

use sev_proto::snp::msg::{KeyReq, KeyRsp};

/// A running guest with an ID block (SVN 9) on `p`; returns it with its secrets page.
fn keyed_guest(p: &SoftSnpPlatform, host_data: [u8; 32]) -> (SoftSnpGuest, SecretsPage) {
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(POLICY)).unwrap();
    let mut s = page(0);
    g.snp_launch_update(&SnpLaunchUpdate::page(PageType::Secrets, 0x5000), &mut s)
        .unwrap();
    let block = IdBlock::new(g.launch_digest(), [0xF1; 16], [0x11; 16], 9, POLICY);
    let auth = IdAuth::sign(&block, &p384(), None).unwrap();
    g.snp_launch_finish(&SnpLaunchFinish {
        id_block: Some(&block.to_bytes()),
        id_auth: Some(&auth.to_bytes()),
        auth_key_en: false,
        vcek_dis: false,
        host_data,
    })
    .unwrap();
    (g, SecretsPage::from_bytes(&s).unwrap())
}

/// Sends MSG_KEY_REQ `k` with `vmpck` and the next sequence number in `seq`.
fn key(
    g: &mut SoftSnpGuest,
    sp: &SecretsPage,
    vmpck: u8,
    seq: &mut [u64; 4],
    k: &KeyReq,
) -> KeyRsp {
    let i = usize::from(vmpck);
    let mut m = msg::seal(&sp.vmpck[i], seq[i] + 1, 3, 1, vmpck, &k.to_bytes()).unwrap();
    m.resize(4096, 0);
    let mut resp = page(0);
    g.snp_guest_request(&m, &mut resp).unwrap();
    seq[i] += 2;
    let (h, pt) = msg::open(&sp.vmpck[i], &resp).unwrap();
    assert_eq!((h.msg_type, h.seqno, h.vmpck), (4, seq[i], vmpck));
    KeyRsp::from_bytes(&pt).unwrap()
}

fn kreq() -> KeyReq {
    KeyReq {
        root_key_select: false,
        key_sel: 0,
        guest_field_select: 0,
        vmpl: 1,
        guest_svn: 0,
        tcb_version: 0,
        launch_mit_vector: None,
    }
}

#[test]
fn key_request_is_deterministic_and_changes_with_each_selected_field() {
    let p = platform();
    p.snp_init().unwrap();
    let (mut g, sp) = keyed_guest(&p, [0x42; 32]);
    let mut seq = [0u64; 4];
    let base = key(&mut g, &sp, 0, &mut seq, &kreq());
    assert_eq!(base.status, 0);
    assert_ne!(*base.derived_key, [0; 32]);
    // Same inputs, later sequence number, other VMPCK: same key.
    assert_eq!(
        key(&mut g, &sp, 0, &mut seq, &kreq()).derived_key,
        base.derived_key
    );
    assert_eq!(
        key(&mut g, &sp, 1, &mut seq, &kreq()).derived_key,
        base.derived_key
    );
    let lower_tcb = u64::from_le_bytes([2, 0, 0, 0, 0, 0, 8, 0x70]);
    let variants: Vec<(&str, KeyReq)> = vec![
        (
            "ROOT_KEY_SELECT VMRK",
            KeyReq {
                root_key_select: true,
                ..kreq()
            },
        ),
        ("VMPL 2", KeyReq { vmpl: 2, ..kreq() }),
        (
            "GFS policy",
            KeyReq {
                guest_field_select: 1,
                ..kreq()
            },
        ),
        (
            "GFS image id",
            KeyReq {
                guest_field_select: 2,
                ..kreq()
            },
        ),
        (
            "GFS family id",
            KeyReq {
                guest_field_select: 4,
                ..kreq()
            },
        ),
        (
            "GFS measurement",
            KeyReq {
                guest_field_select: 8,
                ..kreq()
            },
        ),
        (
            "GFS guest svn",
            KeyReq {
                guest_field_select: 0x10,
                ..kreq()
            },
        ),
        (
            "GFS svn 3",
            KeyReq {
                guest_field_select: 0x10,
                guest_svn: 3,
                ..kreq()
            },
        ),
        (
            "GFS tcb",
            KeyReq {
                guest_field_select: 0x20,
                ..kreq()
            },
        ),
        (
            "GFS tcb lower",
            KeyReq {
                guest_field_select: 0x20,
                tcb_version: lower_tcb,
                ..kreq()
            },
        ),
    ];
    let mut seen = vec![base.derived_key.clone()];
    for (what, k) in &variants {
        let r = key(&mut g, &sp, 0, &mut seq, k);
        assert_eq!(r.status, 0, "{what}");
        assert!(!seen.contains(&r.derived_key), "{what}: key not changed");
        // Deterministic per variant.
        assert_eq!(
            key(&mut g, &sp, 0, &mut seq, k).derived_key,
            r.derived_key,
            "{what}"
        );
        seen.push(r.derived_key);
    }
    // Unselected fields do not matter: GUEST_SVN / TCB given without their GFS bit.
    let k = KeyReq {
        guest_svn: 3,
        tcb_version: lower_tcb,
        ..kreq()
    };
    assert_eq!(
        key(&mut g, &sp, 0, &mut seq, &k).derived_key,
        base.derived_key
    );
    // Another guest on the same platform with other HOST_DATA: another key.
    let (mut g2, sp2) = keyed_guest(&p, [0x43; 32]);
    let mut seq2 = [0u64; 4];
    assert_ne!(
        key(&mut g2, &sp2, 0, &mut seq2, &kreq()).derived_key,
        base.derived_key
    );
    let (mut g3, sp3) = keyed_guest(&p, [0x42; 32]);
    let mut seq3 = [0u64; 4];
    let k3 = key(&mut g3, &sp3, 0, &mut seq3, &kreq());
    // The ID key differs (fresh per keyed_guest), so the ID-key digest in MIX differs.
    assert_ne!(k3.derived_key, base.derived_key);
    let vmrk = KeyReq {
        root_key_select: true,
        ..kreq()
    };
    assert_ne!(
        key(&mut g3, &sp3, 0, &mut seq3, &vmrk).derived_key,
        key(&mut g, &sp, 0, &mut seq, &vmrk).derived_key
    );
    // Another platform (other fused seed): another VCEK-rooted key.
    let q =
        SoftSnpPlatform::new(SnpIdentity::from_seed(seed(2)), SoftSnpConfig::default()).unwrap();
    q.snp_init().unwrap();
    let (mut gq, spq) = keyed_guest(&q, [0x42; 32]);
    let mut sq = [0u64; 4];
    assert_ne!(
        key(&mut gq, &spq, 0, &mut sq, &kreq()).derived_key,
        base.derived_key
    );
}

#[test]
fn key_request_refusals_are_inside_the_response() {
    let p = platform();
    p.snp_init().unwrap();
    let (mut g, sp) = keyed_guest(&p, [0; 32]);
    let mut seq = [0u64; 4];
    let above = u64::from_le_bytes([4, 0, 0, 0, 0, 0, 8, 0x73]);
    for (what, vmpck, k, status) in [
        (
            "VMPL 0 with VMPCK 1",
            1u8,
            KeyReq { vmpl: 0, ..kreq() },
            0x16,
        ),
        ("VMPL 1 with VMPCK 2", 2, KeyReq { vmpl: 1, ..kreq() }, 0x16),
        ("VMPL 4", 0, KeyReq { vmpl: 4, ..kreq() }, 0x16),
        (
            "GUEST_SVN above the ID block's 9",
            0,
            KeyReq {
                guest_svn: 10,
                ..kreq()
            },
            0x16,
        ),
        (
            "TCB above committed",
            0,
            KeyReq {
                tcb_version: above,
                guest_field_select: 0x20,
                ..kreq()
            },
            0x16,
        ),
        (
            "KEY_SEL VLEK, none loaded",
            0,
            KeyReq {
                key_sel: 2,
                ..kreq()
            },
            0x27,
        ),
    ] {
        let r = key(&mut g, &sp, vmpck, &mut seq, &k);
        assert_eq!(r.status, status, "{what}");
        assert_eq!(*r.derived_key, [0; 32], "{what}");
    }
    // Unknown GFS bits: the request does not parse -> INVALID_PARAM inside.
    let mut m = kreq().to_bytes();
    m[8] = 0x80;
    let mut req = msg::seal(&sp.vmpck[0], seq[0] + 1, 3, 1, 0, &m).unwrap();
    req.resize(4096, 0);
    let mut resp = page(0);
    g.snp_guest_request(&req, &mut resp).unwrap();
    seq[0] += 2;
    let (_h, pt) = msg::open(&sp.vmpck[0], &resp).unwrap();
    assert_eq!(KeyRsp::from_bytes(&pt).unwrap().status, 0x16);
    // Replayed and skipped sequence numbers: AEAD_OFLOW, nothing consumed.
    let stale = msg::seal(&sp.vmpck[0], seq[0] - 1, 3, 1, 0, &kreq().to_bytes()).unwrap();
    let mut stale = stale;
    stale.resize(4096, 0);
    assert_eq!(
        status_of(g.snp_guest_request(&stale, &mut resp)),
        Status::AeadOflow
    );
    let mut skip = msg::seal(&sp.vmpck[0], seq[0] + 3, 3, 1, 0, &kreq().to_bytes()).unwrap();
    skip.resize(4096, 0);
    assert_eq!(
        status_of(g.snp_guest_request(&skip, &mut resp)),
        Status::AeadOflow
    );
    assert_eq!(key(&mut g, &sp, 0, &mut seq, &kreq()).status, 0);
    // MASK_CHIP_KEY: VCEK-rooted keys INVALID_KEY, VMRK-rooted ones still derive.
    p.snp_config(&soft::SnpConfig {
        reported_tcb: 0,
        flags: 2,
    })
    .unwrap();
    assert_eq!(key(&mut g, &sp, 0, &mut seq, &kreq()).status, 0x27);
    let vmrk = KeyReq {
        root_key_select: true,
        ..kreq()
    };
    assert_eq!(key(&mut g, &sp, 0, &mut seq, &vmrk).status, 0);
}

#[test]
fn dbg_decrypt_encrypt_are_gated_by_the_debug_policy_bit() {
    let p = platform();
    p.snp_init().unwrap();
    let src = page(0x3C);
    let mut dst = page(0);
    // INIT guest: no policy yet.
    let g0 = p.gctx_create().unwrap();
    assert_eq!(
        status_of(g0.snp_dbg_decrypt(&src, &mut dst)),
        Status::InvalidGuestState
    );
    // Without DEBUG (0x30000): POLICY_FAILURE both ways, dst untouched.
    let (_p, g) = launched();
    assert_eq!(
        status_of(g.snp_dbg_decrypt(&src, &mut dst)),
        Status::PolicyFailure
    );
    assert_eq!(
        status_of(g.snp_dbg_encrypt(&src, &mut dst)),
        Status::PolicyFailure
    );
    assert_eq!(dst, page(0));
    // With DEBUG (0xB0000): allowed in LAUNCH and RUNNING; wrong sizes INVALID_PARAM.
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(0xB0000)))
        .unwrap();
    g.snp_dbg_encrypt(&src, &mut dst).unwrap();
    assert_eq!(dst, src);
    let mut short = vec![0u8; 100];
    assert_eq!(
        status_of(g.snp_dbg_decrypt(&src, &mut short)),
        Status::InvalidParam
    );
    g.snp_launch_finish(&SnpLaunchFinish::default()).unwrap();
    let mut back = page(0);
    g.snp_dbg_decrypt(&dst, &mut back).unwrap();
    assert_eq!(back, src);
    // After DECOMMISSION: INVALID_GUEST.
    g.snp_decommission().unwrap();
    assert_eq!(
        status_of(g.snp_dbg_decrypt(&src, &mut back)),
        Status::InvalidGuest
    );
    // Platform shut down: INVALID_PLATFORM_STATE.
    let (q, gq) = launched();
    q.snp_shutdown().unwrap();
    assert_eq!(
        status_of(gq.snp_dbg_decrypt(&src, &mut back)),
        Status::InvalidPlatformState
    );
}

// ---- VLEK ----

/// VLEK_LOAD: a blob made by this platform loads (VLEK_EN), reports with KEY_SEL 0/2 are signed
/// by the VLEK (SIGNING_KEY 1) and not by the VCEK, KEY_SEL 1 still gives the VCEK; another
/// platform's blob, a flipped byte (BAD_MEASUREMENT naming VLEK_WRAPPED.TAG), another TCB
/// (BAD_SVN) and a bad reserved field (INVALID_PARAM) are refused and change nothing; the VLEK
/// persists in the platform directory.
#[test]
fn vlek_load_signs_reports_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap();
    assert_eq!(
        status_of(p.vlek_load(&[0; 0x1B0])),
        Status::InvalidPlatformState
    );
    p.snp_init().unwrap();
    let blob = p.vlek_make().unwrap();
    assert_eq!(blob.len(), 0x1B0);
    let other = platform();
    other.snp_init().unwrap();
    let before = p.state_digest();
    let e = p.vlek_load(&other.vlek_make().unwrap()).unwrap_err();
    assert_eq!(e.status(), Some(Status::BadMeasurement));
    assert!(e.to_string().contains("VLEK_WRAPPED.TAG"), "{e}");
    let mut flipped = blob.clone();
    flipped[0x20] ^= 0x80;
    let e = p.vlek_load(&flipped).unwrap_err();
    assert_eq!(e.status(), Some(Status::BadMeasurement));
    assert!(e.to_string().contains("VLEK_WRAPPED.TAG"), "{e}");
    let mut tcb = blob.clone();
    tcb[0x190] ^= 1;
    let e = p.vlek_load(&tcb).unwrap_err();
    assert_eq!(e.status(), Some(Status::BadSvn));
    assert!(e.to_string().contains("VLEK_WRAPPED.TCB_VERSION"), "{e}");
    let mut rsvd = blob.clone();
    rsvd[0x0C] = 1;
    assert_eq!(status_of(p.vlek_load(&rsvd)), Status::InvalidParam);
    assert_eq!(status_of(p.vlek_load(&blob[..0x100])), Status::InvalidParam);
    assert_eq!(p.state_digest(), before);
    assert!(!p.snp_platform_status().unwrap().vlek_en);
    // Before loading, KEY_SEL 2 is INVALID_KEY inside the response.
    let (mut g, sp) = keyed_guest(&p, [0; 32]);
    let mut resp = page(0);
    let vlek_req = ReportReq {
        key_sel: 2,
        ..rr(0)
    };
    g.snp_guest_request(&request(&sp, 0, 1, &vlek_req), &mut resp)
        .unwrap();
    assert_eq!(answer(&sp, 0, &resp).1.status, Status::InvalidKey.code());
    p.vlek_load(&blob).unwrap();
    assert!(p.snp_platform_status().unwrap().vlek_en);
    let (vlek_pub, vlek_tcb) = p.vlek_public_key().unwrap().unwrap();
    assert_eq!(vlek_tcb, p.reported_tcb());
    let vcek = p.vcek_public_key(p.reported_tcb()).unwrap();
    let mut seq = 3;
    for (sel, want_vlek) in [(0, true), (2, true), (1, false)] {
        let req = ReportReq {
            key_sel: sel,
            ..rr(0)
        };
        g.snp_guest_request(&request(&sp, 0, seq, &req), &mut resp)
            .unwrap();
        seq += 2;
        let r = answer(&sp, 0, &resp).1.report.unwrap();
        assert_eq!(r.signing_key(), u8::from(want_vlek), "KEY_SEL {sel}");
        let (good, bad) = if want_vlek {
            (&vlek_pub, &vcek)
        } else {
            (&vcek, &vlek_pub)
        };
        r.verify(good).unwrap();
        assert!(r.verify(bad).is_err(), "KEY_SEL {sel}");
    }
    drop(g);
    // Persisted: a new handle on the directory has it loaded.
    let q = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap();
    q.snp_init().unwrap();
    assert!(q.snp_platform_status().unwrap().vlek_en);
    let (k2, _) = q.vlek_public_key().unwrap().unwrap();
    assert!(k2.public_eq(&vlek_pub));
    // The VLEK chain: ARK → ASVK → VLEK, persisted, with the VLEK's TCB and a cspID.
    let ca = super::ca::SoftCa::load_or_create(dir.path()).unwrap();
    let asvk = ca.asvk_load_or_create(dir.path()).unwrap();
    assert!(asvk.cert.verify(&ca.ark.public_key().unwrap()).unwrap());
    assert!(!asvk.cert.verify(&ca.ask.public_key().unwrap()).unwrap());
    let cert = asvk
        .vlek_cert(&vlek_pub, vlek_tcb, "sevm-test-csp")
        .unwrap();
    assert!(cert.verify(&asvk.cert.public_key().unwrap()).unwrap());
    assert!(cert.public_key().unwrap().public_eq(&vlek_pub));
    let again = ca.asvk_load_or_create(dir.path()).unwrap();
    assert_eq!(again.cert.to_der().unwrap(), asvk.cert.to_der().unwrap());
    let cn = |c: &openssl::x509::X509Ref| {
        c.subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .as_slice()
            .to_vec()
    };
    assert_eq!(
        (cn(&asvk.cert), cn(&cert)),
        ("SEV-VLEK-Milan".into(), "SEV-VLEK".into())
    );
}
