//! The end-to-end self-consistency vector of sev-spec-notes §11 (computed independently
//! in Python): the soft firmware, given the vector's PDH, accepts the vector's session and
//! derives the vector's TIK (checked through the measurement).

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use sev_firmware::soft::store::{KeyCert, Store, API, BUILD};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, LaunchOwner, SessionBlob, SevGuest};
use sev_proto::cert::{Algo, SevCert, Usage};

/// The vector's private scalars are the hex digit repeated 94 times (47 bytes, as in
/// kat/e2e_kat.py; the notes' prose says "48 bytes of 0x11", which is not what was used).
fn key(digit: char) -> EcKey<openssl::pkey::Private> {
    let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let d = BigNum::from_hex_str(&digit.to_string().repeat(94)).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let mut q = EcPoint::new(&g).unwrap();
    q.mul_generator2(&g, &d, &mut ctx).unwrap();
    EcKey::from_private_components(&g, &d, &q).unwrap()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn spec_section_11_vector() {
    let dir = tempfile::tempdir().unwrap();
    SoftPlatform::open(dir.path()).unwrap();
    let pdh_key = key('1');
    Store::new(dir.path())
        .unwrap()
        .update(|id| {
            let mut c =
                SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, API.0, API.1, &pdh_key).unwrap();
            let pek = id.pek.as_ref().unwrap().key.clone();
            c.sign_with(&pek, Usage::PEK).unwrap();
            id.pdh = Some(KeyCert {
                key: pdh_key.clone(),
                cert: c.encode().try_into().unwrap(),
            });
            Ok(())
        })
        .unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let pdh = plat.export_chain().unwrap().pdh;
    assert_eq!(
        hex::encode(&pdh[0x14..0x14 + 48]),
        "9c33baf7daba18ca3ceffdef8277e862e5510fe608c6016dab99903758873cdef0bd6971f95e3935b9aea94c934277d1",
        "PDH Qx little-endian as in the vector"
    );
    let godh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &key('2')).unwrap();
    let mut session = Vec::new();
    session.extend((0u8..16).collect::<Vec<_>>());
    session.extend(h(
        "90c095747d5599873784e8b83add9ece2181b0de5808714c3cd3b3be9bbdc66c",
    ));
    session.extend((0x10u8..0x20).collect::<Vec<_>>());
    session.extend(h(
        "7347fe1d1fcecff5aade8dcf6653a67d4d008935386281bde39571d7514fecae",
    ));
    session.extend(h(
        "27c64c151fa6b686a2c7fb57689430912918c80c3ccb10d48dffe717cae2f173",
    ));
    assert_eq!(session.len(), 128);

    let mut g = plat.new_guest();
    g.init(false).unwrap();
    let owner = LaunchOwner {
        godh,
        session: SessionBlob::from_bytes(&session).unwrap(),
    };
    g.launch_start(GuestPolicy(1), Some(&owner), 0)
        .expect("the vector's session is accepted");
    let mut page = vec![0u8; 4096];
    let mut table = vec![0x5Au8; 176];
    g.launch_update_data(0x10_0000, &mut page).unwrap();
    g.launch_update_data(0x20_0000, &mut table).unwrap();
    let m = g.launch_measure().unwrap();
    let ld: [u8; 32] = h("715c8d7364830bcc6760f917d5ebfed68f658da32c7c2a6a45d88680d22c28d6")
        .try_into()
        .unwrap();
    let tik: [u8; 16] = (0xB0u8..0xC0).collect::<Vec<_>>().try_into().unwrap();
    let mnonce: [u8; 16] = m[32..].try_into().unwrap();
    let want = sev_proto::measure::measurement(&tik, API.0, API.1, BUILD, 1u32, &ld, &mnonce);
    assert_eq!(
        &m[..32],
        &want[..],
        "TIK b0..bf unwrapped and LD as in the vector"
    );
    // With the vector's MNONCE the measurement is the vector's MEASURE.
    let v = sev_proto::measure::measurement(
        &tik,
        0,
        0x18,
        17,
        1u32,
        &ld,
        &(0x20u8..0x30).collect::<Vec<_>>().try_into().unwrap(),
    );
    assert_eq!(
        hex::encode(v),
        "abe2f57694c28fac12bdd984b41631ea88b07c3167744ebf84236d0db307cf38"
    );
    assert_eq!((API, BUILD), ((0, 0x18), 17));
}
