//! Tests of the RMP-checked commands and the raw SNP interface
//! (`cargo test -p sev-firmware --lib snp::raw_tests`).

use super::raw::cmd::*;
use super::rmp::{PageState, RmpUpdate};
use super::soft::{SoftSnpConfig, SoftSnpPlatform};
use super::vcek::SnpIdentity;
use super::*;
use crate::Status;
use sev_proto::snp::measure::{PageType, SnpLaunchDigest};

const POLICY: u64 = 0x30000;
const GCTX: u64 = 0x10_0000;
const OUT: u64 = 0x20_0000;

fn platform() -> SoftSnpPlatform {
    let p = SoftSnpPlatform::new(
        SnpIdentity::from_seed(openssl::sha::sha384(b"raw tests")),
        SoftSnpConfig::default(),
    )
    .unwrap();
    assert_eq!(p.execute(SNP_INIT, &mut []), Status::Success);
    p
}

fn b64(words: &[(usize, u64)], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for &(o, v) in words {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

fn x(p: &SoftSnpPlatform, id: u32, mut b: Vec<u8>) -> Status {
    p.execute(id, &mut b)
}

fn gctx_create(p: &SoftSnpPlatform, gctx: u64) -> Status {
    p.rmp_update(gctx, &RmpUpdate::firmware()).unwrap();
    x(p, SNP_GCTX_CREATE, b64(&[(0, gctx)], 8))
}

fn launch_start(p: &SoftSnpPlatform, gctx: u64) -> Status {
    x(p, SNP_LAUNCH_START, b64(&[(0, gctx), (8, POLICY)], 0x30))
}

fn activate(p: &SoftSnpPlatform, gctx: u64, asid: u32) -> Status {
    x(
        p,
        SNP_ACTIVATE,
        b64(&[(0, gctx), (8, u64::from(asid))], 0x10),
    )
}

fn update(p: &SoftSnpPlatform, gctx: u64, spa: u64, t: PageType) -> Status {
    let w = u64::from(t as u8) << 1;
    x(
        p,
        SNP_LAUNCH_UPDATE,
        b64(&[(0, gctx), (8, w), (0x10, spa)], 0x20),
    )
}

fn finish(p: &SoftSnpPlatform, gctx: u64) -> Status {
    x(p, SNP_LAUNCH_FINISH, b64(&[(0, gctx)], 0x40))
}

fn reclaim(p: &SoftSnpPlatform, spa: u64) -> Status {
    x(p, SNP_PAGE_RECLAIM, b64(&[(0, spa)], 8))
}

fn guest_status(p: &SoftSnpPlatform, gctx: u64) -> (Status, Vec<u8>) {
    p.rmp_update(OUT, &RmpUpdate::firmware()).unwrap();
    let s = x(p, SNP_GUEST_STATUS, b64(&[(0, gctx), (8, OUT)], 0x10));
    assert_eq!(reclaim(p, OUT), Status::Success);
    p.rmp_update(OUT, &RmpUpdate::hypervisor()).unwrap();
    (s, p.read_pa(OUT, 0x20).unwrap())
}

/// Guest `gctx` launched (LAUNCH state) and activated with `asid`.
fn launched(p: &SoftSnpPlatform, gctx: u64, asid: u32) {
    assert_eq!(gctx_create(p, gctx), Status::Success);
    assert_eq!(launch_start(p, gctx), Status::Success);
    assert_eq!(activate(p, gctx, asid), Status::Success);
}

/// A guest page at `spa` holding `fill`, PRE_GUEST for `asid` at `gpa`.
fn pre_guest(p: &SoftSnpPlatform, spa: u64, asid: u32, gpa: u64, fill: u8) {
    p.write_pa(spa, &[fill; 4096]).unwrap();
    p.rmp_update(spa, &RmpUpdate::pre_guest(asid, gpa, false))
        .unwrap();
}

/// The raw interface, the sPA API and the trait path measure the same launch, with the GPA
/// taken from the RMP entry; the launched page ends GUEST_VALID and the host cannot touch it.
#[test]
fn raw_launch_measures_the_rmp_gpa_like_the_trait_path() {
    let p = platform();
    launched(&p, GCTX, 5);
    pre_guest(&p, 0x40_0000, 5, 0x8000, 0xAB);
    pre_guest(&p, 0x40_1000, 5, 0x9000, 0);
    assert_eq!(
        update(&p, GCTX, 0x40_0000, PageType::Normal),
        Status::Success
    );
    assert_eq!(
        update(&p, GCTX, 0x40_1000, PageType::Secrets),
        Status::Success
    );
    assert_eq!(p.page_state(0x40_0000), PageState::GuestValid);
    assert!(p.rmp_entry(0x40_0000).validated);
    assert!(
        p.read_pa(0x40_0000, 16).is_err(),
        "host read of a guest page"
    );
    assert!(
        p.write_pa(0x40_0000, &[1]).is_err(),
        "host write of a guest page"
    );
    let mut want = SnpLaunchDigest::new();
    want.extend(
        PageType::Normal,
        0x8000,
        openssl::sha::sha384(&[0xAB; 4096]),
        [0; 3],
    );
    want.extend(PageType::Secrets, 0x9000, [0; 48], [0; 3]);
    let mut g = p.gctx_create().unwrap();
    g.snp_launch_start(&SnpLaunchStart::new(sev_proto::snp::policy::SnpPolicy(
        POLICY,
    )))
    .unwrap();
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Normal, 0x8000),
        &mut [0xAB; 4096],
    )
    .unwrap();
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Secrets, 0x9000),
        &mut [0; 4096],
    )
    .unwrap();
    assert_eq!(g.launch_digest(), want.digest());
    assert_eq!(finish(&p, GCTX), Status::Success);
    let (s, st) = guest_status(&p, GCTX);
    assert_eq!(s, Status::Success);
    assert_eq!((st[8], st[0x0C]), (5, 2), "ASID 5, RUNNING");
    // The trait guest's pages are in the RMP at its ASID (1) and go back at decommission.
    let pages = p.rmp_entry(g.gctx_spa());
    assert_eq!(p.page_state(g.gctx_spa()), PageState::Context, "{pages:?}");
    g.snp_decommission().unwrap();
    assert_eq!(p.page_state(g.gctx_spa()), PageState::Hypervisor);
}

/// SNP_LAUNCH_UPDATE's check order of the notes §1.3, each refusal changing nothing.
#[test]
fn launch_update_checks_in_the_firmware_order_and_refusals_change_nothing() {
    let p = platform();
    assert_eq!(gctx_create(&p, GCTX), Status::Success);
    let spa = 0x40_0000;
    p.write_pa(spa, &[7; 4096]).unwrap();
    let mut steps: Vec<(&str, Status)> = Vec::new();
    let mut try_update = |what: &'static str, w: u64, spa: u64| {
        let before = p.state_digest();
        let s = x(
            &p,
            SNP_LAUNCH_UPDATE,
            b64(&[(0, GCTX), (8, w), (0x10, spa)], 0x20),
        );
        assert_eq!(p.state_digest(), before, "{what}: refusal changed state");
        steps.push((what, s));
    };
    let normal = 1u64 << 1;
    try_update("MBZ", normal | 1 << 5, spa);
    try_update("GCTX", normal, spa);
    let s = x(
        &p,
        SNP_LAUNCH_UPDATE,
        b64(&[(0, GCTX + 0x1000), (8, normal), (0x10, spa)], 0x20),
    );
    assert_eq!(s, Status::InvalidGuest);
    // Target not PRE_GUEST (HYPERVISOR).
    assert_eq!(
        update(&p, GCTX, spa, PageType::Normal),
        Status::InvalidPageState
    );
    // PRE_GUEST of ASID 9, 4 KiB; command says 2 MiB: INVALID_PAGE_SIZE.
    p.rmp_update(spa, &RmpUpdate::pre_guest(9, 0x1000, false))
        .unwrap();
    let w2m = normal | 1;
    let s = x(
        &p,
        SNP_LAUNCH_UPDATE,
        b64(&[(0, GCTX), (8, w2m), (0x10, spa)], 0x20),
    );
    assert_eq!(s, Status::InvalidPageSize);
    // Bad page type.
    let s = x(
        &p,
        SNP_LAUNCH_UPDATE,
        b64(&[(0, GCTX), (8, 0)], 0x20).tap_spa(spa),
    );
    assert_eq!(s, Status::InvalidParam);
    // Guest still INIT.
    assert_eq!(
        update(&p, GCTX, spa, PageType::Normal),
        Status::InvalidGuestState
    );
    assert_eq!(launch_start(&p, GCTX), Status::Success);
    // Not activated.
    assert_eq!(update(&p, GCTX, spa, PageType::Normal), Status::Inactive);
    assert_eq!(activate(&p, GCTX, 3), Status::Success);
    // The page belongs to ASID 9.
    let before = p.state_digest();
    assert_eq!(
        update(&p, GCTX, spa, PageType::Normal),
        Status::InvalidPageOwner
    );
    assert_eq!(p.state_digest(), before);
    // Given back to the host and handed to ASID 3: accepted.
    assert_eq!(reclaim(&p, spa), Status::Success);
    p.rmp_update(spa, &RmpUpdate::hypervisor()).unwrap();
    pre_guest(&p, spa, 3, 0x1000, 7);
    assert_eq!(update(&p, GCTX, spa, PageType::Normal), Status::Success);
    // Already GUEST_VALID: INVALID_PAGE_STATE.
    assert_eq!(
        update(&p, GCTX, spa, PageType::Normal),
        Status::InvalidPageState
    );
    assert_eq!(steps[0].1, Status::InvalidParam, "{steps:?}");
    assert_eq!(steps[1].1, Status::InvalidPageState, "{steps:?}");
}

trait TapSpa {
    fn tap_spa(self, spa: u64) -> Self;
}

impl TapSpa for Vec<u8> {
    fn tap_spa(mut self, spa: u64) -> Self {
        self[0x10..0x18].copy_from_slice(&spa.to_le_bytes());
        self
    }
}

/// The notes' §1.2 legal commands per guest state, run against guests in each state; every
/// refusal changes nothing.
#[test]
fn command_by_guest_state_table_matches_the_notes() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum C {
        LaunchStart,
        LaunchUpdate,
        LaunchFinish,
        Activate,
        Decommission,
        PageReclaim,
    }
    use C::*;
    // (state, commands legal in it) from the notes.
    let legal: [(u8, &[C]); 3] = [
        (0, &[LaunchStart, PageReclaim, Decommission]),
        (
            1,
            &[
                LaunchUpdate,
                LaunchFinish,
                Activate,
                Decommission,
                PageReclaim,
            ],
        ),
        (2, &[Activate, Decommission, PageReclaim]),
    ];
    for (state, ok) in legal {
        for c in [
            LaunchStart,
            LaunchUpdate,
            LaunchFinish,
            Activate,
            Decommission,
            PageReclaim,
        ] {
            let p = platform();
            assert_eq!(gctx_create(&p, GCTX), Status::Success);
            if state >= 1 {
                assert_eq!(launch_start(&p, GCTX), Status::Success);
                assert_eq!(activate(&p, GCTX, 4), Status::Success);
            }
            if state == 2 {
                assert_eq!(finish(&p, GCTX), Status::Success);
            }
            // A page each command could act on.
            pre_guest(&p, 0x40_0000, 4, 0x1000, 1);
            p.rmp_update(0x50_0000, &RmpUpdate::firmware()).unwrap();
            let before = p.state_digest();
            let s = match c {
                LaunchStart => launch_start(&p, GCTX),
                LaunchUpdate => update(&p, GCTX, 0x40_0000, PageType::Normal),
                LaunchFinish => finish(&p, GCTX),
                // Re-activating with the ASID that owns pages is INVALID_CONFIG; a fresh one
                // is what "legal" means here.
                Activate => activate(&p, GCTX, 6),
                Decommission => x(&p, SNP_DECOMMISSION, b64(&[(0, GCTX)], 8)),
                PageReclaim => reclaim(&p, 0x50_0000),
            };
            let want_ok = ok.contains(&c);
            assert_eq!(s == Status::Success, want_ok, "state {state} {c:?}: {s}");
            if !want_ok {
                assert_eq!(s, Status::InvalidGuestState, "state {state} {c:?}");
                assert_eq!(
                    p.state_digest(),
                    before,
                    "state {state} {c:?} changed state"
                );
            }
        }
    }
}

/// GCTX page CONTEXT → (DECOMMISSION) FIRMWARE → (PAGE_RECLAIM) RECLAIM → (RMPUPDATE)
/// HYPERVISOR, and the refusals on the way.
#[test]
fn context_page_life_and_page_reclaim_rules() {
    let p = platform();
    // GCTX_CREATE on a HYPERVISOR page, a misaligned address, a 2 MiB firmware page.
    assert_eq!(
        x(&p, SNP_GCTX_CREATE, b64(&[(0, GCTX)], 8)),
        Status::InvalidPageState
    );
    assert_eq!(
        x(&p, SNP_GCTX_CREATE, b64(&[(0, GCTX + 8)], 8)),
        Status::InvalidParam
    );
    p.rmp_update(
        0x60_0000,
        &RmpUpdate {
            page_2m: true,
            ..RmpUpdate::firmware()
        },
    )
    .unwrap();
    assert_eq!(
        x(&p, SNP_GCTX_CREATE, b64(&[(0, 0x60_0000)], 8)),
        Status::InvalidPageSize
    );
    launched(&p, GCTX, 2);
    assert_eq!(p.page_state(GCTX), PageState::Context);
    assert!(
        p.write_pa(GCTX, &[0]).is_err(),
        "host write to a context page"
    );
    assert!(
        p.rmp_update(GCTX, &RmpUpdate::hypervisor()).is_err(),
        "immutable"
    );
    p.rmp_update(0x80_0000, &RmpUpdate::firmware()).unwrap();
    let before = p.state_digest();
    assert_eq!(reclaim(&p, GCTX), Status::InvalidPageState);
    assert_eq!(
        reclaim(&p, 0x80_0000 | 1),
        Status::InvalidPageSize,
        "2 MiB bit on a 4 KiB page"
    );
    assert_eq!(
        reclaim(&p, GCTX | 1),
        Status::InvalidAddress,
        "not 2 MiB aligned"
    );
    assert_eq!(reclaim(&p, 0x12345000 | 1), Status::InvalidAddress);
    assert_eq!(
        reclaim(&p, 0x90_0000),
        Status::InvalidPageState,
        "HYPERVISOR"
    );
    assert_eq!(p.state_digest(), before);
    // ASID rules: another guest cannot take ASID 2; a third cannot use an ASID with pages.
    launched(&p, GCTX + 0x1000, 3);
    assert_eq!(activate(&p, GCTX + 0x1000, 2), Status::AsidOwned);
    assert_eq!(activate(&p, GCTX + 0x1000, 0), Status::InvalidAsid);
    assert_eq!(
        activate(&p, GCTX + 0x1000, MAX_ASID + 1),
        Status::InvalidAsid
    );
    pre_guest(&p, 0x40_0000, 7, 0, 0);
    assert_eq!(activate(&p, GCTX + 0x1000, 7), Status::InvalidConfig);
    assert_eq!(
        x(&p, SNP_DECOMMISSION, b64(&[(0, GCTX)], 8)),
        Status::Success
    );
    assert_eq!(p.page_state(GCTX), PageState::Firmware);
    assert_eq!(
        x(&p, SNP_DECOMMISSION, b64(&[(0, GCTX)], 8)),
        Status::InvalidGuest
    );
    // ASID 2 is free again.
    assert_eq!(activate(&p, GCTX + 0x1000, 2), Status::Success);
    assert_eq!(reclaim(&p, GCTX), Status::Success);
    assert_eq!(p.page_state(GCTX), PageState::Reclaim);
    p.rmp_update(GCTX, &RmpUpdate::hypervisor()).unwrap();
    assert_eq!(
        p.read_pa(GCTX, 8).unwrap(),
        vec![0; 8],
        "the context page was zeroed"
    );
    // A PRE_GUEST page (as after a failed LAUNCH_UPDATE) can be reclaimed too.
    assert_eq!(reclaim(&p, 0x40_0000), Status::Success);
    assert_eq!(p.page_state(0x40_0000), PageState::Reclaim);
    // Platform UNINIT: INVALID_PLATFORM_STATE first.
    assert_eq!(x(&p, SNP_SHUTDOWN, vec![]), Status::Success);
    assert_eq!(reclaim(&p, 0x40_0000), Status::InvalidPlatformState);
}

const MAX_ASID: u32 = super::soft::MAX_SNP_ASID;

/// PLATFORM_STATUS through the raw buffer: a FIRMWARE page while SNP is INIT, any page before.
#[test]
fn raw_platform_status_output_page_rules() {
    let p =
        SoftSnpPlatform::new(SnpIdentity::from_seed([3; 48]), SoftSnpConfig::default()).unwrap();
    assert_eq!(
        x(&p, SNP_PLATFORM_STATUS, b64(&[(0, OUT)], 8)),
        Status::Success
    );
    assert_eq!(p.read_pa(OUT, 3).unwrap()[2], 0, "UNINIT");
    assert_eq!(x(&p, SNP_INIT, vec![]), Status::Success);
    assert_eq!(
        x(&p, SNP_PLATFORM_STATUS, b64(&[(0, OUT)], 8)),
        Status::InvalidPageState
    );
    p.rmp_update(OUT, &RmpUpdate::firmware()).unwrap();
    assert_eq!(
        x(&p, SNP_PLATFORM_STATUS, b64(&[(0, OUT)], 8)),
        Status::Success
    );
    assert_eq!(reclaim(&p, OUT), Status::Success);
    p.rmp_update(OUT, &RmpUpdate::hypervisor()).unwrap();
    // Reclaimed and given back, the host reads what the firmware wrote.
    let st = p.read_pa(OUT, 0x20).unwrap();
    assert_eq!((st[0], st[1], st[2]), (1, 55, 1), "API 1.55, INIT");
    assert_eq!(
        x(&p, SNP_PLATFORM_STATUS, b64(&[(0, OUT + 8)], 8)),
        Status::InvalidParam
    );
    assert_eq!(
        p.execute(SNP_PLATFORM_STATUS, &mut [0u8; 4]),
        Status::InvalidLength
    );
    assert_eq!(p.execute(0x84, &mut [0u8; 64]), Status::InvalidCommand);
    assert_eq!(x(&p, SNP_COMMIT, vec![5, 0, 0, 0]), Status::InvalidLength);
    assert_eq!(x(&p, SNP_COMMIT, vec![4, 0, 0, 0]), Status::Success);
}

/// SNP_INIT before legacy INIT, enforced from both sides once the legacy platform has the SNP
/// side attached; the legacy trait path initialises SNP first, as Linux does.
#[test]
fn snp_init_before_legacy_init_both_ways() {
    use crate::soft::raw::cmd as legacy;
    use crate::soft::SoftPlatform;
    use crate::SevPlatform;
    let dir = tempfile::tempdir().unwrap();
    let sev = SoftPlatform::open(dir.path()).unwrap();
    let snp =
        SoftSnpPlatform::new(SnpIdentity::from_seed([4; 48]), SoftSnpConfig::default()).unwrap();
    sev.attach_snp(&snp);
    let mut init = [0u8; 0x40];
    // Legacy INIT first: refused while SNP is UNINIT.
    assert_eq!(
        sev.execute(legacy::INIT, &mut init),
        Status::InvalidPlatformState
    );
    assert_eq!(x(&snp, SNP_INIT, vec![]), Status::Success);
    assert_eq!(sev.execute(legacy::INIT, &mut init), Status::Success);
    // Now SNP_SHUTDOWN then SNP_INIT: refused while legacy is INIT.
    assert_eq!(x(&snp, SNP_SHUTDOWN, vec![]), Status::Success);
    assert_eq!(x(&snp, SNP_INIT, vec![]), Status::InvalidPlatformState);
    assert_eq!(sev.execute(legacy::SHUTDOWN, &mut init), Status::Success);
    assert_eq!(x(&snp, SNP_INIT, vec![]), Status::Success);
    assert_eq!(x(&snp, SNP_SHUTDOWN, vec![]), Status::Success);
    // The trait path (Linux) does SNP_INIT itself.
    sev.pek_gen().unwrap();
    assert_eq!(
        snp.snp_platform_status().unwrap().state,
        SnpPlatformState::Init
    );
}
