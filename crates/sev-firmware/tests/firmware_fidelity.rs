//! The soft firmware against AMD's published SEV firmware source (`sev_mcmd.c`, `sev_cert.c`,
//! `sev_plat.c`) and Linux's KVM (`arch/x86/kvm/svm/sev.c`): each test names the firmware (or
//! KVM) behaviour it checks, and each failed on the model before it was fixed.

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use sev_firmware::soft::raw::cmd::*;
use sev_firmware::soft::store::{API, STATE_FILE};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, SevGuest, SevPlatform, Status, VolatileSlice};
use sev_proto::cert::{Algo, CaCert, SevCert, Usage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One identity generated once (RSA-4096 keygen is slow) and copied per test.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        SoftPlatform::open(&d).unwrap();
        d
    })
}

fn fresh() -> (tempfile::TempDir, SoftPlatform) {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(template().join(STATE_FILE), d.path().join(STATE_FILE)).unwrap();
    let p = SoftPlatform::open(d.path()).unwrap();
    (d, p)
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn r32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn status_of<T: std::fmt::Debug>(r: sev_firmware::Result<T>) -> Status {
    r.expect_err("command must fail")
        .status()
        .expect("a firmware status")
}

fn vs(b: &mut [u8]) -> VolatileSlice<'_> {
    VolatileSlice::from(b)
}

/// INIT with CONFIG.ES through the raw interface.
fn init_es(p: &SoftPlatform) {
    let mut b = [0u8; 0x14];
    put(&mut b, 0, &1u32.to_le_bytes());
    put(&mut b, 8, &(1u64 << 20).to_le_bytes());
    put(&mut b, 0x10, &(1u32 << 20).to_le_bytes());
    assert_eq!(p.execute(INIT, &mut b), Status::Success);
}

fn launch_start(p: &SoftPlatform, policy: u32) -> u32 {
    let mut b = [0u8; 0x24];
    put(&mut b, 4, &policy.to_le_bytes());
    assert_eq!(p.execute(LAUNCH_START, &mut b), Status::Success);
    r32(&b, 0)
}

fn activate(p: &SoftPlatform, handle: u32, asid: u32) -> Status {
    let mut b = [0u8; 8];
    put(&mut b, 0, &handle.to_le_bytes());
    put(&mut b, 4, &asid.to_le_bytes());
    p.execute(ACTIVATE, &mut b)
}

fn launch_update_vmsa(p: &SoftPlatform, handle: u32, pa: u64, len: u32) -> Status {
    let mut b = [0u8; 0x14];
    put(&mut b, 0, &handle.to_le_bytes());
    put(&mut b, 8, &pa.to_le_bytes());
    put(&mut b, 0x10, &len.to_le_bytes());
    p.execute(LAUNCH_UPDATE_VMSA, &mut b)
}

/// An owner's OCA and the platform's PEK CSR signed by it (a valid PEK_CERT_IMPORT pair).
fn owner_pair(p: &SoftPlatform) -> ([u8; 2084], [u8; 2084], EcKey<openssl::pkey::Private>) {
    let p384 = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let oca_key = EcKey::generate(&p384).unwrap();
    let mut oca = SevCert::new_ec(Usage::OCA, Algo::ECDSA_SHA256, API.0, API.1, &oca_key).unwrap();
    oca.sign_with(&oca_key, Usage::OCA).unwrap();
    let mut pek = p.pek_csr().unwrap();
    pek.sign_with(&oca_key, Usage::OCA).unwrap();
    (
        pek.encode().try_into().unwrap(),
        oca.encode().try_into().unwrap(),
        oca_key,
    )
}

/// `sev_mcmd_pek_cert_import` → `sev_cert_validate` → `sev_cert_validate_sig`: a signature
/// that does not verify is BAD_SIGNATURE (0x0A), checked before the body (the old model
/// answered INVALID_CERTIFICATE). A correctly signed PEK whose body is not the platform's is
/// INVALID_CERTIFICATE. A refused import changes nothing.
#[test]
fn pek_cert_import_bad_signature_is_bad_signature_0x0a() {
    let (_d, p) = fresh();
    let (pek, oca, oca_key) = owner_pair(&p);

    // The trait takes certificates; these byte-level tamperings all still parse as one.
    let cert = |b: &[u8]| SevCert::parse(b).unwrap();
    // The PEK's body changed after the OCA signed it.
    let mut tampered = pek;
    tampered[0x20] ^= 1;
    let e = p
        .pek_cert_import(&cert(&tampered), &cert(&oca))
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::BadSignature), "{e}");
    assert_eq!(Status::BadSignature as u32, 0x0A);
    // The OCA's self-signature broken: the OCA is validated first.
    let mut bad_oca = oca;
    bad_oca[0x414 + 8] ^= 1;
    assert_eq!(
        status_of(p.pek_cert_import(&cert(&pek), &cert(&bad_oca))),
        Status::BadSignature
    );
    // A half-empty signature slot in the PEK (usage INVALID, algo ECDSA): BAD_SIGNATURE.
    // (`SevCert::parse` refuses such bytes; the structure can still carry them.)
    let mut half = cert(&pek);
    half.sigs[1].algo = Algo::ECDSA_SHA256;
    let mut half_bytes = pek;
    put(&mut half_bytes, 0x61C + 4, &2u32.to_le_bytes());
    assert_eq!(half.encode(), half_bytes.to_vec(), "slot 2's algo at 0x620");
    assert_eq!(
        status_of(p.pek_cert_import(&half, &cert(&oca))),
        Status::BadSignature
    );
    // Signed by another OCA than the one offered: no slot verifies → BAD_SIGNATURE.
    let p384 = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let other = EcKey::generate(&p384).unwrap();
    let mut by_other = p.pek_csr().unwrap();
    by_other.sign_with(&other, Usage::OCA).unwrap();
    assert_eq!(
        status_of(p.pek_cert_import(&by_other, &cert(&oca))),
        Status::BadSignature
    );
    // Well signed, but not the platform's PEK: the body check → INVALID_CERTIFICATE.
    let k = EcKey::generate(&p384).unwrap();
    let mut foreign = SevCert::new_ec(Usage::PEK, Algo::ECDSA_SHA256, API.0, API.1, &k).unwrap();
    foreign.sign_with(&oca_key, Usage::OCA).unwrap();
    assert_eq!(
        status_of(p.pek_cert_import(&foreign, &cert(&oca))),
        Status::InvalidCertificate
    );
    assert!(!p.platform_status().unwrap().owner_external);

    // The same through the raw command interface (the firmware's own command buffer).
    let raw_import = |pek: &[u8], oca: &[u8]| {
        p.write_pa(0x8000, pek).unwrap();
        p.write_pa(0x9000, oca).unwrap();
        let mut b = [0u8; 0x1C];
        put(&mut b, 0, &0x8000u64.to_le_bytes());
        put(&mut b, 8, &2084u32.to_le_bytes());
        put(&mut b, 0x10, &0x9000u64.to_le_bytes());
        put(&mut b, 0x18, &2084u32.to_le_bytes());
        p.execute(PEK_CERT_IMPORT, &mut b)
    };
    let mut b = [0u8; 0x14];
    assert_eq!(p.execute(INIT, &mut b), Status::Success);
    assert_eq!(raw_import(&tampered, &oca), Status::BadSignature);
    assert_eq!(raw_import(&pek, &oca), Status::Success);
    // Imported: the CEK signature moved over from the old PEK, so the chain still verifies.
    let chain = p.export_chain().unwrap();
    let full = sev_proto::cert::chain::FullChain::parse(&chain.to_bytes()).unwrap();
    sev_proto::cert::chain::verify_full(&full, None).expect("owned chain verifies");
    assert_eq!(raw_import(&pek, &oca), Status::AlreadyOwned);
}

/// `mcmd_activate_common`: "no guest has this ASID" counts the guest itself, so a guest that
/// re-activates the ASID it already holds gets ASID_OWNED, not ACTIVE (the old model's answer).
/// Another ASID while active is ACTIVE.
#[test]
fn activate_own_asid_again_is_asid_owned() {
    let (_d, p) = fresh();
    init_es(&p);
    assert_eq!(p.execute(DF_FLUSH, &mut []), Status::Success);
    let h = launch_start(&p, 0);
    assert_eq!(activate(&p, h, 5), Status::Success);
    assert_eq!(activate(&p, h, 5), Status::AsidOwned);
    assert_eq!(activate(&p, h, 6), Status::Active);
}

/// `activate_common` checks a first ACTIVATE's ASID for DF_FLUSH_REQUIRED before
/// `sev_guest_activate` checks the ES / non-ES range, and ownership comes before both: a
/// dirty out-of-range ASID is DF_FLUSH_REQUIRED and an owned out-of-range ASID is ASID_OWNED
/// (the old model answered INVALID_ASID for both). Zero or above the maximum stays
/// INVALID_ASID before everything.
#[test]
fn activate_dirty_asid_is_df_flush_required_before_the_range_check() {
    let (_d, p) = fresh();
    init_es(&p);
    let sev = launch_start(&p, 0); // non-ES: ASIDs 5..=15
    let es = launch_start(&p, 0x4); // ES: ASIDs 1..=4
                                    // After INIT every ASID is dirty.
    assert_eq!(activate(&p, sev, 2), Status::DfFlushRequired);
    assert_eq!(activate(&p, es, 9), Status::DfFlushRequired);
    assert_eq!(activate(&p, sev, 0), Status::InvalidAsid);
    assert_eq!(activate(&p, sev, 16), Status::InvalidAsid);
    assert_eq!(p.execute(DF_FLUSH, &mut []), Status::Success);
    // Clean: now the range decides.
    assert_eq!(activate(&p, sev, 2), Status::InvalidAsid);
    assert_eq!(activate(&p, es, 9), Status::InvalidAsid);
    assert_eq!(activate(&p, sev, 5), Status::Success);
    // Held by another guest: ASID_OWNED even though it is outside the ES range.
    assert_eq!(activate(&p, es, 5), Status::AsidOwned);
    assert_eq!(activate(&p, es, 1), Status::Success);
}

/// `sev_mcmd_launch_update_vmsa` checks `length == VMSA_SIZE` before calling
/// `launch_update_common`, i.e. before the platform state, the handle, the guest state and the
/// ES check (the old model checked it after the guest state).
#[test]
fn launch_update_vmsa_checks_the_length_first() {
    let (_d, p) = fresh();
    // UNINIT platform, no guest: a wrong length still answers INVALID_LENGTH.
    assert_eq!(
        launch_update_vmsa(&p, 1, 0x20000, 4080),
        Status::InvalidLength
    );
    assert_eq!(
        launch_update_vmsa(&p, 1, 0x20000, 4096),
        Status::InvalidPlatformState
    );
    init_es(&p);
    assert_eq!(p.execute(DF_FLUSH, &mut []), Status::Success);
    let sev = launch_start(&p, 0);
    assert_eq!(
        launch_update_vmsa(&p, 9, 0x20000, 0),
        Status::InvalidLength,
        "before the handle"
    );
    assert_eq!(
        launch_update_vmsa(&p, 9, 0x20000, 4096),
        Status::InvalidGuest
    );
    assert_eq!(
        launch_update_vmsa(&p, sev, 0x20001, 4097),
        Status::InvalidLength,
        "before ES and alignment"
    );
    assert_eq!(
        launch_update_vmsa(&p, sev, 0x20000, 4096),
        Status::Unsupported
    );
    // Through KVM's path (SevGuest) a VMSA is a 4096-byte page by its type, so a short one
    // cannot be passed; on a guest that is not SEV-ES a whole one is UNSUPPORTED.
    let mut g = p.new_guest();
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    assert_eq!(
        status_of(g.launch_update_vmsas(&[[0u8; 4096]])),
        Status::Unsupported
    );
}

/// `sev_get_id`: the id is the public point of the chip-unique key on secp256k1, X ‖ Y (32
/// bytes each, big-endian), one socket's 64 bytes. The old model returned 64 random bytes (not
/// a point). Stable per platform directory (across reopen and processes' copies of the state),
/// different for another platform.
#[test]
fn get_id_is_a_secp256k1_point_stable_per_platform() {
    let (d, p) = fresh();
    let id = p.get_id().unwrap();
    assert_eq!(id.len(), 64);
    let k1 = EcGroup::from_curve_name(Nid::SECP256K1).unwrap();
    let (x, y) = (
        BigNum::from_slice(&id[..32]).unwrap(),
        BigNum::from_slice(&id[32..]).unwrap(),
    );
    let point = EcKey::from_public_key_affine_coordinates(&k1, &x, &y)
        .expect("GET_ID is a point on secp256k1");
    point.check_key().unwrap();
    assert_eq!(
        SoftPlatform::open(d.path()).unwrap().get_id().unwrap(),
        id,
        "stable across reopen"
    );
    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        SoftPlatform::open(other.path()).unwrap().get_id().unwrap(),
        id,
        "another platform, another id"
    );
    // Raw GET_ID offered 128 bytes (two sockets) on a one-socket part: 64 written, len = 64.
    let mut b = [0u8; 12];
    put(&mut b, 0, &0x7000u64.to_le_bytes());
    put(&mut b, 8, &128u32.to_le_bytes());
    assert_eq!(p.execute(GET_ID, &mut b), Status::Success);
    assert_eq!(r32(&b, 8), 64);
    assert_eq!(p.read_pa(0x7000, 64).unwrap(), id);
}

/// `pdh_cert_chain_init` makes the exported CEK afresh with `sev_cert_init`, which stamps the
/// running firmware's SEV_API_MAJOR/MINOR; the old model exported the KDS CEK's 0.14. The
/// ASK-signed CEK a KDS serves keeps 0.14, and both carry the same key.
#[test]
fn pdh_cert_export_cek_carries_the_firmware_api_version() {
    let (_d, p) = fresh();
    let exp = p.pdh_cert_export().unwrap();
    let cek = exp.cek.clone();
    assert_eq!((cek.api_major, cek.api_minor), API);
    assert_eq!(p.platform_status().unwrap().api_minor, API.1);
    assert!(cek.sigs.iter().all(|s| s.is_empty()), "unsigned");
    let kds = p.export_chain().unwrap();
    let kds_cek = SevCert::parse(&kds.cek).unwrap();
    assert_eq!((kds_cek.api_major, kds_cek.api_minor), (0, 14));
    assert_eq!(cek.pubkey, kds_cek.pubkey);
    assert_eq!(cek.usage, Usage::CEK);
    kds_cek
        .verify_signed_by_ca(&CaCert::parse(&kds.ask).unwrap())
        .expect("the KDS CEK still verifies with the ASK");
    // The PEK, PDH and OCA the firmware makes carry its version too.
    for c in [&exp.pdh, &exp.pek, &exp.oca] {
        assert_eq!((c.api_major, c.api_minor), API, "{}", c.usage);
    }
}

/// The firmware requires 16-byte aligned addresses and lengths for DBG_DECRYPT/ENCRYPT
/// (`sev_mcmd_dbg_decrypt`); KVM's `sev_dbg_crypt` bounces unaligned ranges through aligned
/// blocks (`__sev_dbg_decrypt_user`) and read-modify-writes them (`__sev_dbg_encrypt_user`).
/// The soft raw interface keeps the firmware's rule; the soft `SevGuest` (the KVM layer)
/// accepts unaligned ranges like KVM (the old model refused them with INVALID_ADDRESS), with the
/// same operations as the hw loopback test `hw_guest_launch_over_the_loopback_kernel`.
#[test]
fn dbg_unaligned_ranges_are_bounced_as_kvm_does() {
    let (_d, p) = fresh();
    // Raw firmware: alignment enforced.
    init_es(&p);
    assert_eq!(p.execute(DF_FLUSH, &mut []), Status::Success);
    let h = launch_start(&p, 0);
    assert_eq!(activate(&p, h, 5), Status::Success);
    let dbg = |src: u64, dst: u64, len: u32| {
        let mut b = [0u8; 0x1C];
        put(&mut b, 0, &h.to_le_bytes());
        put(&mut b, 8, &src.to_le_bytes());
        put(&mut b, 0x10, &dst.to_le_bytes());
        put(&mut b, 0x18, &len.to_le_bytes());
        p.execute(DBG_DECRYPT, &mut b)
    };
    assert_eq!(dbg(0x10005, 0x11000, 16), Status::InvalidAddress);
    assert_eq!(dbg(0x10000, 0x11003, 16), Status::InvalidAddress);
    assert_eq!(dbg(0x10000, 0x11000, 37), Status::InvalidLength);
    assert_eq!(dbg(0x10000, 0x11000, 0), Status::Success, "len 0: a no-op");

    // KVM layer: unaligned accepted.
    let mut g = p.new_guest();
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    let mut ram: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    let plain = ram.clone();
    g.launch_update_data(0x10_0000, &mut ram).unwrap();
    let mut out = vec![0u8; 37];
    g.dbg_decrypt(0x10_0005, vs(&mut ram[5..42]), &mut out)
        .unwrap();
    assert_eq!(out, plain[5..42]);
    let mut out = vec![0u8; 256];
    g.dbg_decrypt(0x10_0F80, vs(&mut ram[0xF80..0x1080]), &mut out)
        .unwrap();
    assert_eq!(out, plain[0xF80..0x1080], "across a page boundary");
    // Read-modify-write: only the three bytes change.
    g.dbg_encrypt(0x10_0023, b"xyz", vs(&mut ram[0x23..0x26]))
        .unwrap();
    let mut back = vec![0u8; 48];
    g.dbg_decrypt(0x10_0010, vs(&mut ram[0x10..0x40]), &mut back)
        .unwrap();
    let mut want = plain[0x10..0x40].to_vec();
    want[0x13..0x16].copy_from_slice(b"xyz");
    assert_eq!(back, want, "only the three bytes changed");
    // KVM's EINVAL for an empty range, before the firmware.
    assert!(g.dbg_decrypt(0x10_0000, vs(&mut []), &mut []).is_err());
    assert!(g.dbg_encrypt(0x10_0000, &[], vs(&mut [])).is_err());

    // The widened block of an unaligned write into shared memory becomes private: the host
    // sees ciphertext in the whole 16-byte block, as after KVM's DBG_ENCRYPT of the block.
    let mut shared = vec![0x5Au8; 64];
    g.dbg_encrypt(0x40_0007, b"ab", vs(&mut shared[7..9]))
        .unwrap();
    let view = g.host_view(0x40_0000, vs(&mut shared)).unwrap();
    assert_ne!(view[..16], shared[..16], "block 0: re-encrypted");
    assert_eq!(view[16..], shared[16..], "other blocks untouched");

    // NODBG is still the firmware's POLICY_FAILURE for an unaligned range.
    let mut n = p.new_guest();
    n.init(false).unwrap();
    n.launch_start(GuestPolicy(0x1), None, 0).unwrap();
    let mut m = [0u8; 5];
    assert_eq!(
        status_of(n.dbg_decrypt(0x3, vs(&mut m), &mut [0u8; 5])),
        Status::PolicyFailure
    );
}
