//! Full launches against the soft firmware with two independent guest owners:
//! sev-proto's owner side and the `sev` crate's `Session`.

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sev_firmware::soft::store::{API, BUILD};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, GuestState, SevGuest, SevPlatform, Status, VolatileSlice};
use sev_proto::cert::chain::{verify_full, FullChain};
use sev_proto::cert::{Algo, SevCert, Usage};
use sev_proto::measure::{measurement, LaunchDigest};
use sev_proto::secret::{build_packet, PacketHeader};
use sev_proto::session::{ecdh_shared_secret, owner_wrap, LaunchOwner, TransportKeys};

struct Owner {
    launch: LaunchOwner,
    keys: TransportKeys,
}

/// A test buffer standing in for guest RAM, as the runtime methods take it.
fn vs(b: &mut [u8]) -> VolatileSlice<'_> {
    VolatileSlice::from(b)
}

fn owner(plat: &SoftPlatform, policy: u32) -> Owner {
    let chain = plat.export_chain().unwrap();
    let full = FullChain::parse(&chain.to_bytes()).expect("exported chain parses");
    let pdh = verify_full(&full, None).expect("exported chain verifies with sev-proto");
    let godh_key: EcKey<Private> =
        EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let godh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &godh_key).unwrap();
    let z = ecdh_shared_secret(&godh_key, &pdh.key).unwrap();
    let keys = TransportKeys::random().unwrap();
    let session = owner_wrap(&z, &[3u8; 16], &[4u8; 16], &keys, policy);
    Owner {
        launch: LaunchOwner { godh, session },
        keys,
    }
}

fn status_of<T: std::fmt::Debug>(r: sev_firmware::Result<T>) -> Status {
    r.expect_err("command must fail")
        .status()
        .expect("a firmware status")
}

#[test]
fn full_launch_with_sev_proto_owner_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let policy = 0x0000_0000u32; // debug allowed, so DBG works below
    let o = owner(&plat, policy);
    let mut g = plat.new_guest();
    g.init(false).unwrap();

    // Tampering at LAUNCH_START is refused and changes nothing.
    let count_before = plat.platform_status().unwrap().guest_count;
    let p = GuestPolicy(policy);
    let mut s = o.launch.clone();
    s.session.wrap_mac[0] ^= 1;
    assert_eq!(
        status_of(g.launch_start(p, Some(&s), 0)),
        Status::BadMeasurement
    );
    let mut s = o.launch.clone();
    s.session.policy_mac[0] ^= 1;
    assert_eq!(
        status_of(g.launch_start(p, Some(&s), 0)),
        Status::BadMeasurement
    );
    // A different policy than the one MACed.
    assert_eq!(
        status_of(g.launch_start(GuestPolicy(policy | 0x8), Some(&o.launch), 0)),
        Status::BadMeasurement
    );
    let mut c = o.launch.clone();
    c.godh.pubkey[0x10] ^= 0xFF; // point off the curve
    assert_eq!(
        status_of(g.launch_start(p, Some(&c), 0)),
        Status::InvalidCertificate
    );
    let mut c = o.launch.clone();
    c.godh.usage = Usage::PEK; // usage not PDH
    assert_eq!(
        status_of(g.launch_start(p, Some(&c), 0)),
        Status::InvalidCertificate
    );
    let mut c = o.launch.clone();
    c.godh.usage = Usage(0x02); // a usage no certificate has: the firmware refuses it too
    assert_eq!(
        status_of(g.launch_start(p, Some(&c), 0)),
        Status::InvalidCertificate
    );
    // A truncated certificate never reaches the firmware: the edge (the owner's file) refuses
    // it, naming the structure. (The firmware's own INVALID_LENGTH is the raw interface's.)
    let e = LaunchOwner::from_bytes(&o.launch.godh.encode()[..100], &o.launch.session.to_bytes())
        .unwrap_err();
    assert!(e.to_string().starts_with("GODH certificate: "), "{e}");
    assert_eq!(plat.platform_status().unwrap().guest_count, count_before);
    assert_eq!(g.handle(), 0);

    // Reserved policy bits, correctly MACed: POLICY_FAILURE.
    let bad = owner(&plat, 0x40);
    assert_eq!(
        status_of(g.launch_start(GuestPolicy(0x40), Some(&bad.launch), 0)),
        Status::PolicyFailure
    );
    // API newer than the firmware's.
    let newer = 0x1900_0000u32 | (1 << 16);
    let bad = owner(&plat, newer);
    assert_eq!(
        status_of(g.launch_start(GuestPolicy(newer), Some(&bad.launch), 0)),
        Status::PolicyFailure
    );

    let h = g.launch_start(p, Some(&o.launch), 0).unwrap();
    assert!(h >= 1);
    let mut ram = vec![0u8; 3 * 4096];
    for (i, b) in ram.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    g.launch_update_data(0x10_0000, &mut ram[..8192]).unwrap();
    g.launch_update_data(0x10_0000 + 8192, &mut ram[8192..])
        .unwrap();
    let mut ld = LaunchDigest::new();
    ld.update(&ram);
    let ld = ld.finish();
    // The guest keeps plaintext; the host sees ciphertext.
    let view = g.host_view(0x10_0000, vs(&mut ram)).unwrap();
    assert_ne!(view, ram);
    assert_eq!(
        view,
        g.host_view(0x10_0000, vs(&mut ram)).unwrap(),
        "deterministic"
    );
    let mut dbg = vec![0u8; 64];
    g.dbg_decrypt(0x10_0000, vs(&mut ram[..64]), &mut dbg)
        .unwrap();
    assert_eq!(&dbg[..], &ram[..64]);

    let m = g.launch_measure().unwrap();
    let mnonce: [u8; 16] = m[32..].try_into().unwrap();
    let expect = measurement(&o.keys.tik, API.0, API.1, BUILD, policy, &ld, &mnonce);
    assert_eq!(&m[..32], &expect[..], "measurement equals sev-proto's");
    assert_eq!(g.guest_status().unwrap().state, GuestState::LSecret);

    let measure: [u8; 32] = m[..32].try_into().unwrap();
    let secret = *b"top-secret-key-material-32bytes!";
    let (hdr, ct) = build_packet(&o.keys, &measure, [9u8; 16], 0, &secret).unwrap();
    let mut bad_hdr = hdr;
    let mut dest = [0u8; 32];
    bad_hdr.mac[0] ^= 1;
    assert_eq!(
        status_of(g.launch_secret(&bad_hdr, &ct, 0x20_0000, &mut dest)),
        Status::BadMeasurement
    );
    assert_eq!(dest, [0u8; 32], "refused secret writes nothing");
    let mut bad_ct = ct.clone();
    bad_ct[0] ^= 1;
    assert_eq!(
        status_of(g.launch_secret(&hdr, &bad_ct, 0x20_0000, &mut dest)),
        Status::BadMeasurement
    );
    assert_eq!(
        status_of(g.launch_secret(&hdr, &ct, 0x20_0008, &mut dest)),
        Status::InvalidAddress
    );
    g.launch_secret(&hdr, &ct, 0x20_0000, &mut dest).unwrap();
    assert_eq!(dest, secret, "secret plaintext lands in guest memory");
    assert_ne!(
        g.host_view(0x20_0000, vs(&mut dest)).unwrap(),
        dest.to_vec()
    );
    assert_eq!(g.guest_status().unwrap().state, GuestState::LSecret);

    let report = g.attestation_report([5u8; 16]).unwrap().to_bytes();
    assert_eq!(report.len(), 0xD0);
    assert_eq!(&report[0x10..0x30], &ld[..]);
    // The report is signed by the PEK.
    let chain = plat.export_chain().unwrap();
    let pek = SevCert::parse(&chain.pek).unwrap().ec_public_key().unwrap();
    let digest =
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &report[..0x34]).unwrap();
    let le = |b: &[u8]| {
        let mut v = b[..48].to_vec();
        v.reverse();
        openssl::bn::BigNum::from_slice(&v).unwrap()
    };
    let sig =
        openssl::ecdsa::EcdsaSig::from_private_components(le(&report[0x40..]), le(&report[0x88..]))
            .unwrap();
    assert!(
        sig.verify(&digest, &pek).unwrap(),
        "attestation report verifies with the PEK"
    );

    g.launch_finish().unwrap();
    let st = g.guest_status().unwrap();
    assert_eq!(st.state, GuestState::Running);
    assert_eq!(
        status_of(g.launch_secret(&hdr, &ct, 0x20_0000, &mut dest)),
        Status::InvalidGuestState
    );
    g.decommission().unwrap();
    assert_eq!(plat.platform_status().unwrap().guest_count, 0);
}

#[test]
fn nodbg_refuses_debug_and_noks_refuses_sharing() {
    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let mut a = plat.new_guest();
    a.init(false).unwrap();
    let ha = a.launch_start(GuestPolicy(0x3), None, 0).unwrap(); // NODBG | NOKS
    let mut m = [0u8; 16];
    let mut out = [0u8; 16];
    assert_eq!(
        status_of(a.dbg_decrypt(0, vs(&mut m), &mut out)),
        Status::PolicyFailure
    );
    assert_eq!(
        status_of(a.dbg_encrypt(0, &out, vs(&mut m))),
        Status::PolicyFailure
    );
    let mut b = plat.new_guest();
    b.init(false).unwrap();
    assert_eq!(
        status_of(b.launch_start(GuestPolicy(0x3), None, ha)),
        Status::PolicyFailure
    );
    let mut c = plat.new_guest();
    c.init(false).unwrap();
    let hc = c.launch_start(GuestPolicy(0x1), None, 0).unwrap();
    let mut d = plat.new_guest();
    d.init(false).unwrap();
    assert_eq!(
        status_of(d.launch_start(GuestPolicy(0x0), None, hc)),
        Status::PolicyFailure,
        "policies differ"
    );
    d.launch_start(GuestPolicy(0x1), None, hc)
        .expect("same policy, NOKS clear: key shared");
    // Shared key: same ciphertext at the same PA.
    let mut ram_c = [7u8; 32];
    let mut ram_d = [7u8; 32];
    c.launch_update_data(0x1000, &mut ram_c).unwrap();
    d.launch_update_data(0x1000, &mut ram_d).unwrap();
    assert_eq!(
        c.host_view(0x1000, vs(&mut ram_c)).unwrap(),
        d.host_view(0x1000, vs(&mut ram_d)).unwrap()
    );
    let mut ram_a = [7u8; 32];
    a.launch_update_data(0x1000, &mut ram_a).unwrap();
    assert_ne!(
        a.host_view(0x1000, vs(&mut ram_a)).unwrap(),
        c.host_view(0x1000, vs(&mut ram_c)).unwrap()
    );
}

#[test]
fn sev_crate_session_is_a_second_owner() {
    use sev::certs::sev::Chain;
    use sev::firmware::host::{Build, Version};
    use sev::launch::sev::{HeaderFlags, Measurement, Policy};
    use sev::parser::Decoder;
    use sev::session::Session;

    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let bytes = plat.export_chain().unwrap().to_bytes();
    // virtee's file order is PDH PEK OCA CEK ASK ARK, decoded as Chain { ca, sev }.
    let mut cursor = std::io::Cursor::new(&bytes);
    let sev_chain =
        sev::certs::sev::sev::Chain::decode(&mut cursor, ()).expect("sev chain decodes");
    let ca_chain = sev::certs::sev::ca::Chain::decode(&mut cursor, ()).expect("ca chain decodes");
    let chain = Chain {
        ca: ca_chain,
        sev: sev_chain,
    };
    let policy = Policy::from(0x1u32);
    let session = Session::try_from(policy).unwrap();
    let start = session
        .start(chain)
        .expect("sev crate verifies our chain and starts");
    let mut godh = Vec::new();
    sev::parser::Encoder::encode(&start.cert, &mut godh, ()).unwrap();
    let s = start.session;
    let mut blob = Vec::new();
    for part in [
        &s.nonce[..],
        &s.wrap_tk,
        &s.wrap_iv,
        &s.wrap_mac,
        &s.policy_mac,
    ] {
        blob.extend_from_slice(part);
    }

    // The sev crate's bytes decode as ours (the edge where an owner's files come in).
    let owner = LaunchOwner::from_bytes(&godh, &blob).expect("the sev crate's GODH and session");
    let mut g = plat.new_guest();
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0x1), Some(&owner), 0)
        .expect("LAUNCH_START with the sev crate's session");
    let mut ram = vec![0x5Au8; 4096];
    g.launch_update_data(0x8000_0000, &mut ram).unwrap();
    let m = g.launch_measure().unwrap();
    let msr = Measurement {
        measure: m[..32].try_into().unwrap(),
        mnonce: m[32..].try_into().unwrap(),
    };
    let mut meas = session.measure().unwrap();
    meas.update_data(&ram).unwrap();
    let build = Build {
        version: Version {
            major: API.0,
            minor: API.1,
        },
        build: BUILD,
    };
    let verified = meas
        .verify(build, msr)
        .expect("sev crate verifies our measurement");
    let secret = verified
        .secret(HeaderFlags::default(), &[0x42u8; 48])
        .unwrap();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&secret.header.flags.bits().to_le_bytes());
    hdr.extend_from_slice(&secret.header.iv);
    hdr.extend_from_slice(&secret.header.mac);
    let hdr = PacketHeader::from_bytes(&hdr).expect("the sev crate's packet header");
    let mut dest = [0u8; 48];
    g.launch_secret(&hdr, &secret.ciphertext, 0x8000_1000, &mut dest)
        .unwrap();
    assert_eq!(dest, [0x42u8; 48]);
    g.launch_finish().unwrap();
}

#[test]
fn a_guest_freed_by_shutdown_never_touches_the_handle_reuser() {
    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let mut old = plat.new_guest();
    old.init(false).unwrap();
    let h = old.launch_start(GuestPolicy(0), None, 0).unwrap();
    plat.with_fw(|fw| fw.shutdown()).unwrap();
    let mut new = plat.new_guest();
    new.init(false).unwrap();
    assert_eq!(
        new.launch_start(GuestPolicy(0), None, 0).unwrap(),
        h,
        "handle reused"
    );
    assert_eq!(status_of(old.guest_status()), Status::InvalidGuest);
    drop(old);
    assert_eq!(
        new.guest_status().unwrap().state,
        GuestState::LUpdate,
        "old guest's drop left the new one alone"
    );
}

#[test]
fn sev_es_launch_measures_the_vmsa_and_uses_an_es_asid() {
    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let mut g = plat.new_guest();
    g.init(true).unwrap();
    assert!(
        g.launch_start(GuestPolicy(0x1), None, 0).is_err(),
        "non-ES policy on an ES VM is refused"
    );
    g.launch_start(GuestPolicy(0x5), None, 0).unwrap();
    let st = g.guest_status().unwrap();
    assert!(
        st.asid >= 1 && st.asid < sev_firmware::soft::fw::MIN_SEV_ASID,
        "ES ASID {}",
        st.asid
    );
    let mut fw = vec![0x11u8; 4096];
    let bsp = sev_proto::vmsa::qemu_vmsa(true, 0x80B004, 0x800F12);
    let ap = sev_proto::vmsa::qemu_vmsa(false, 0x80B004, 0x800F12);
    assert_ne!(bsp, ap);
    // A VMSA is a 4096-byte page by its type; an empty list is refused before the firmware.
    let e = g.launch_update_vmsas(&[]).unwrap_err();
    assert_eq!(e.status(), None, "{e}");
    g.launch_update_data(0xFFFF_F000, &mut fw).unwrap();
    g.launch_update_vmsas(&[bsp, ap]).unwrap();
    let m = g.launch_measure().unwrap();
    // Every vCPU's VMSA enters the digest, in vCPU order.
    let mut ld = LaunchDigest::new();
    ld.update(&fw);
    ld.update(&bsp);
    ld.update(&ap);
    let want = measurement(
        &[0u8; 16],
        API.0,
        API.1,
        BUILD,
        0x5u32,
        &ld.finish(),
        &m[32..].try_into().unwrap(),
    );
    assert_eq!(&m[..32], &want[..]);
    let mut sev = plat.new_guest();
    sev.init(false).unwrap();
    sev.launch_start(GuestPolicy(0x1), None, 0).unwrap();
    assert!(sev.guest_status().unwrap().asid >= sev_firmware::soft::fw::MIN_SEV_ASID);
    assert_eq!(
        status_of(sev.launch_update_vmsas(&[bsp])),
        Status::Unsupported
    );
}

/// The runtime methods work on memory another thread (a running vCPU) writes at the same
/// time: they see a snapshot of each byte (old or new value), and leave the rest intact.
#[test]
fn runtime_methods_take_memory_a_running_guest_writes() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    let dir = tempfile::tempdir().unwrap();
    let plat = SoftPlatform::open(dir.path()).unwrap();
    let mut g = plat.new_guest();
    g.init(false).unwrap();
    g.launch_start(GuestPolicy(0), None, 0).unwrap();
    g.launch_measure().unwrap();
    g.launch_finish().unwrap();
    assert_eq!(g.guest_status().unwrap().state, GuestState::Running);

    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
    mem.write_slice(&[0x11; 0x2000], GuestAddress(0)).unwrap();
    mem.write_slice(&[0xAA; 16], GuestAddress(0x1000)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let vcpu = {
        let (mem, stop, writes) = (mem.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut v = 0xAAu8;
            while !stop.load(Ordering::Relaxed) {
                v = !v;
                mem.write_slice(&[v; 16], GuestAddress(0x1000)).unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while writes.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let racing = |b: &[u8]| b.iter().all(|&x| x == 0xAA || x == 0x55);
    for i in 0..200u8 {
        let mut out = [0u8; 32];
        let s = mem.get_slice(GuestAddress(0x1000), 32).unwrap();
        g.dbg_decrypt(0x1000, s, &mut out).unwrap();
        assert!(racing(&out[..16]), "{out:02x?}");
        assert_eq!(
            out[16..],
            [0x11; 16],
            "bytes the guest does not write are intact"
        );

        let msg = [i; 16];
        let s = mem.get_slice(GuestAddress(0x1030), 16).unwrap();
        g.dbg_encrypt(0x1030, &msg, s).unwrap();
        let mut back = [0u8; 16];
        mem.read_slice(&mut back, GuestAddress(0x1030)).unwrap();
        assert_eq!(back, msg, "DBG_ENCRYPT stores plaintext (soft model)");

        let s = mem.get_slice(GuestAddress(0x1000), 64).unwrap();
        let view = g.host_view(0x1000, s).unwrap();
        assert!(racing(&view[..16]), "shared block: as written");
        assert_eq!(view[16..48], [0x11; 32]);
        assert_ne!(
            view[48..],
            msg,
            "the DBG_ENCRYPT block is private: ciphertext"
        );
    }
    let during = writes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    vcpu.join().unwrap();
    assert!(during > 1, "the writer ran while the firmware calls did");
}
