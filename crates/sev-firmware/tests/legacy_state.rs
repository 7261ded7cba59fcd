//! Platform directories written by the soft firmware before it moved its certificate code to
//! `sev-proto` (`tests/fixtures/legacy-state`, see its README) still load, answer with the
//! same certificate bytes and keep working: a launch with the stored PDH, PDH_GEN, reset.

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use sev_firmware::soft::store::{API, BUILD, STATE_FILE};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, LaunchOwner, SevGuest, SevPlatform, Status};
use sev_proto::cert::chain::{verify_full, FullChain};
use sev_proto::cert::{Algo, SevCert, Usage};
use sev_proto::measure::{measurement, LaunchDigest};
use sev_proto::session::{ecdh_shared_secret, owner_wrap, TransportKeys};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy-state")
        .join(name)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A scratch copy of the fixture's state file (the fixture itself is never written).
fn copy_of(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(name).join(STATE_FILE), d.path().join(STATE_FILE)).unwrap();
    d
}

#[test]
fn legacy_dirs_load_and_export_the_same_bytes() {
    for (name, cbit) in [("fresh", 47u8), ("owned", 51)] {
        let d = copy_of(name);
        let plat = SoftPlatform::open(d.path()).unwrap();
        assert_eq!(plat.cbit_pos().unwrap(), cbit, "{name}: C-bit kept");
        let want = read(&fixture(name).join("export.bin"));
        let got = plat.export_chain().unwrap();
        assert_eq!(
            got.to_bytes(),
            want,
            "{name}: same PDH/PEK/OCA/CEK/ASK/ARK bytes"
        );
        assert_eq!(
            plat.pek_csr().unwrap().encode(),
            read(&fixture(name).join("csr.bin")),
            "{name}: same PEK CSR"
        );
        verify_full(&FullChain::parse(&want).unwrap(), None)
            .unwrap_or_else(|e| panic!("{name}: legacy chain verifies: {e}"));
        // INIT (run for PEK_CSR) finds every key present and does not rewrite the file.
        assert_eq!(
            read(&d.path().join(STATE_FILE)),
            read(&fixture(name).join(STATE_FILE)),
            "{name}: state file left byte-identical"
        );
    }
    // The owned directory still reports the imported OCA and stays owned.
    let d = copy_of("owned");
    let plat = SoftPlatform::open(d.path()).unwrap();
    let oca = read(&fixture("owned").join("oca.cert"));
    let exp = plat.export_chain().unwrap();
    assert_eq!(exp.oca, oca);
    assert_eq!(
        plat.pek_cert_import(
            &SevCert::parse(&exp.pek).unwrap(),
            &SevCert::parse(&oca).unwrap()
        )
        .unwrap_err()
        .status(),
        Some(Status::AlreadyOwned)
    );
}

#[test]
fn legacy_pdh_launches_and_state_stays_writable() {
    for name in ["fresh", "owned"] {
        let d = copy_of(name);
        let plat = SoftPlatform::open(d.path()).unwrap();
        let before = plat.export_chain().unwrap();
        // Guest owner against the legacy PDH.
        let pdh = verify_full(&FullChain::parse(&before.to_bytes()).unwrap(), None).unwrap();
        let godh_key = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        let godh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &godh_key).unwrap();
        let z = ecdh_shared_secret(&godh_key, &pdh.key).unwrap();
        let keys = TransportKeys::random().unwrap();
        let policy = 0u32;
        let session = owner_wrap(&z, &[5u8; 16], &[6u8; 16], &keys, policy);
        let owner = LaunchOwner { godh, session };
        let mut g = plat.new_guest();
        g.init(false).unwrap();
        let mut bad = owner.clone();
        bad.session.wrap_mac[0] ^= 1;
        assert_eq!(
            g.launch_start(GuestPolicy(policy), Some(&bad), 0)
                .unwrap_err()
                .status(),
            Some(Status::BadMeasurement),
            "{name}"
        );
        g.launch_start(GuestPolicy(policy), Some(&owner), 0)
            .unwrap_or_else(|e| panic!("{name}: launch with the legacy PDH: {e}"));
        let mut page = vec![0x33u8; 4096];
        g.launch_update_data(0x10_0000, &mut page).unwrap();
        let m = g.launch_measure().unwrap();
        let mut ld = LaunchDigest::new();
        ld.update(&[0x33u8; 4096]);
        let mnonce: [u8; 16] = m[32..].try_into().unwrap();
        let want = measurement(
            &keys.tik,
            API.0,
            API.1,
            BUILD,
            policy,
            &ld.finish(),
            &mnonce,
        );
        assert_eq!(
            &m[..32],
            &want[..],
            "{name}: measurement under the owner's TIK"
        );
        g.decommission().unwrap();

        // PDH_GEN rewrites the state; everything but the PDH is kept, byte for byte.
        plat.pdh_gen().unwrap();
        let after = SoftPlatform::open(d.path())
            .unwrap()
            .export_chain()
            .unwrap();
        assert_ne!(after.pdh, before.pdh, "{name}: new PDH");
        assert_eq!(
            (&after.pek, &after.oca, &after.cek, &after.ask, &after.ark),
            (
                &before.pek,
                &before.oca,
                &before.cek,
                &before.ask,
                &before.ark
            ),
            "{name}: rest of the identity unchanged"
        );
        verify_full(&FullChain::parse(&after.to_bytes()).unwrap(), None).unwrap();
        // FACTORY_RESET keeps CEK/ASK/ARK and makes a new self-signed owner.
        plat.factory_reset().unwrap();
        let reset = SoftPlatform::open(d.path())
            .unwrap()
            .export_chain()
            .unwrap();
        assert_eq!(
            (&reset.cek, &reset.ask, &reset.ark),
            (&before.cek, &before.ask, &before.ark)
        );
        assert_ne!(reset.oca, before.oca, "{name}: new OCA after reset");
        verify_full(&FullChain::parse(&reset.to_bytes()).unwrap(), None).unwrap();
    }
}
