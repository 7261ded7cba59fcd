//! Several platform handles on one directory behave as one platform: while any handle (in
//! practice, another sevm process) has live guests, the commands the spec allows only without
//! guests are refused, so a running guest keeps the identity it was launched under.
//! (`flock` locks belong to open file descriptions, so two handles in one process contend
//! exactly as two processes do.)

use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, SevGuest, SevPlatform, Status};

fn status_of<T: std::fmt::Debug>(r: sev_firmware::Result<T>) -> Status {
    r.expect_err("command must fail")
        .status()
        .expect("a firmware status")
}

#[test]
fn no_reset_or_pek_change_under_another_handles_guest() {
    let dir = tempfile::tempdir().unwrap();
    let a = SoftPlatform::open(dir.path()).unwrap();
    let b = SoftPlatform::open(dir.path()).unwrap();
    let pek_before = a.pdh_cert_export().unwrap();

    let mut g = a.new_guest();
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    let mut page = vec![0x5au8; 4096];
    g.launch_update_data(0x1000, &mut page).unwrap();
    g.launch_measure().unwrap();

    // B is not WORKING itself, but the platform is.
    assert_eq!(status_of(b.factory_reset()), Status::InvalidPlatformState);
    assert_eq!(status_of(b.pek_gen()), Status::InvalidPlatformState);
    // PDH_GEN is allowed in WORKING (it does not touch a launched guest).
    b.pdh_gen().unwrap();

    // A's report is still signed by the PEK the owner saw before the launch.
    let report = g.attestation_report([9u8; 16]).unwrap();
    let pek_now = a.pdh_cert_export().unwrap();
    assert_eq!(
        pek_before.pek, pek_now.pek,
        "PEK changed under a running guest"
    );
    report
        .verify(&pek_before.pek)
        .expect("the report verifies with the PEK exported before the launch");

    // Once the guest is gone, B may reset; the identity (CEK) survives, the PEK does not.
    g.decommission().unwrap();
    drop(g);
    b.factory_reset().unwrap();
    let after = a.pdh_cert_export().unwrap();
    assert_ne!(after.pek, pek_before.pek);
    assert_eq!(
        after.cek, pek_before.cek,
        "the CEK is the chip's identity and survives a reset"
    );
}

#[test]
fn a_guest_dropped_without_decommission_releases_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let a = SoftPlatform::open(dir.path()).unwrap();
    let b = SoftPlatform::open(dir.path()).unwrap();
    {
        let mut g = a.new_guest();
        g.init(false).unwrap();
        g.launch_start(GuestPolicy(0), None, 0).unwrap();
        assert_eq!(status_of(b.factory_reset()), Status::InvalidPlatformState);
    }
    b.factory_reset().unwrap();
}

/// Without guests, concurrent PEK_GEN / PLATFORM_RESET on several handles all succeed: they
/// wait for each other instead of taking each other for a guest.
#[test]
fn concurrent_resets_and_pek_gens_without_guests_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    SoftPlatform::open(dir.path()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let p = SoftPlatform::open(&d).unwrap();
                for _ in 0..3 {
                    if i % 2 == 0 {
                        p.factory_reset().expect("FACTORY_RESET with no guests");
                    } else {
                        p.pek_gen().expect("PEK_GEN with no guests");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// PLATFORM_STATUS is the platform's: another handle's (process's) guests make it WORKING
/// and count; a count file left by a holder that died is ignored and removed.
#[test]
fn platform_status_counts_every_handles_guests() {
    use sev_firmware::soft::store::GUESTS_DIR;
    use sev_firmware::PlatformState;
    let dir = tempfile::tempdir().unwrap();
    let a = SoftPlatform::open(dir.path()).unwrap();
    let b = SoftPlatform::open(dir.path()).unwrap();
    // Each handle models its own INIT (as one process would); sevm's `platform status` INITs
    // first, as Linux does when the ccp module loads.
    assert_eq!(b.platform_status().unwrap().state, PlatformState::Uninit);
    b.with_fw(|fw| fw.init(true)).unwrap();
    let st = b.platform_status().unwrap();
    assert_eq!((st.state, st.guest_count), (PlatformState::Init, 0));

    let stale = dir.path().join(GUESTS_DIR).join("999999-dead.count");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, "         7\n").unwrap();

    let mut g1 = a.new_guest();
    g1.init(false).unwrap();
    g1.launch_start(GuestPolicy(0), None, 0).unwrap();
    let mut g2 = a.new_guest();
    g2.init(false).unwrap();
    g2.launch_start(GuestPolicy(0), None, 0).unwrap();
    let st = b.platform_status().unwrap();
    assert_eq!(
        (st.state, st.guest_count),
        (PlatformState::Working, 2),
        "B sees A's two guests (and not the stale count file)"
    );
    assert!(!stale.exists(), "the stale count file is removed");
    // A's own view is the same platform.
    let st = a.platform_status().unwrap();
    assert_eq!((st.state, st.guest_count), (PlatformState::Working, 2));

    let mut g3 = b.new_guest();
    g3.init(false).unwrap();
    g3.launch_start(GuestPolicy(0), None, 0).unwrap();
    assert_eq!(a.platform_status().unwrap().guest_count, 3);

    g1.decommission().unwrap();
    assert_eq!(b.platform_status().unwrap().guest_count, 2);
    drop(g2);
    drop(g3);
    let st = b.platform_status().unwrap();
    assert_eq!((st.state, st.guest_count), (PlatformState::Init, 0));
    let left: Vec<_> = std::fs::read_dir(dir.path().join(GUESTS_DIR))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "count files are removed with their guests");
}
