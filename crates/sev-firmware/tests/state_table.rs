//! Table-driven check of every command in every reachable platform/guest state (no
//! migration) through the raw command interface, against spec notes §1, §4-§8.
//! Also: the length-probe convention, ASID rules, order of checks, and that a refused
//! command changes no state.

use sev_firmware::soft::raw::cmd::*;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::Status::{self, *};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One identity generated once (RSA-4096 keygen is slow) and copied per case.
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
    std::fs::copy(
        template().join("sev-state.json"),
        d.path().join("sev-state.json"),
    )
    .unwrap();
    let p = SoftPlatform::open(d.path()).unwrap();
    (d, p)
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn ex(p: &SoftPlatform, id: u32, b: &mut [u8]) -> Status {
    p.execute(id, b)
}

fn init_es(p: &SoftPlatform) -> Status {
    let mut b = [0u8; 0x14];
    put(&mut b, 0, &le32(1));
    put(&mut b, 8, &(1u64 << 20).to_le_bytes());
    put(&mut b, 0x10, &le32(1 << 20));
    ex(p, INIT, &mut b)
}

fn launch_start(p: &SoftPlatform, policy: u32, share: u32) -> (Status, u32) {
    let mut b = [0u8; 0x24];
    put(&mut b, 0, &le32(share));
    put(&mut b, 4, &le32(policy));
    let s = ex(p, LAUNCH_START, &mut b);
    (s, u32::from_le_bytes(b[0..4].try_into().unwrap()))
}

fn h_asid(h: u32, asid: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    put(&mut b, 0, &le32(h));
    put(&mut b, 4, &le32(asid));
    b
}

fn h_addr_len(h: u32, pa: u64, len: u32) -> Vec<u8> {
    let mut b = vec![0u8; 0x14];
    put(&mut b, 0, &le32(h));
    put(&mut b, 8, &pa.to_le_bytes());
    put(&mut b, 0x10, &le32(len));
    b
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum S {
    Uninit,
    Init,
    LUpdate,
    LSecret,
    Running,
}

fn reach(s: S) -> (tempfile::TempDir, SoftPlatform) {
    let (d, p) = fresh();
    if s == S::Uninit {
        return (d, p);
    }
    assert_eq!(init_es(&p), Success);
    assert_eq!(ex(&p, DF_FLUSH, &mut []), Success);
    if s == S::Init {
        return (d, p);
    }
    assert_eq!(launch_start(&p, 0, 0), (Success, 1));
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 5)), Success);
    if s == S::LUpdate {
        return (d, p);
    }
    assert_eq!(
        ex(&p, LAUNCH_MEASURE, &mut h_addr_len(1, 0x3000, 48)),
        Success
    );
    if s == S::LSecret {
        return (d, p);
    }
    assert_eq!(ex(&p, LAUNCH_FINISH, &mut le32(1)), Success);
    (d, p)
}

fn buffer(id: u32) -> Vec<u8> {
    let mut b = vec![0u8; 0x40];
    match id {
        INIT => b.truncate(0x14),
        PLATFORM_STATUS => b.truncate(12),
        PEK_CSR | GET_ID => {
            put(&mut b, 0, &0x7000u64.to_le_bytes());
            put(&mut b, 8, &le32(4096));
        }
        PEK_CERT_IMPORT => {
            put(&mut b, 0, &0x8000u64.to_le_bytes());
            put(&mut b, 8, &le32(2084));
            put(&mut b, 0x10, &0x9000u64.to_le_bytes());
            put(&mut b, 0x18, &le32(2084));
        }
        PDH_CERT_EXPORT => {
            put(&mut b, 0, &0xA000u64.to_le_bytes());
            put(&mut b, 8, &le32(2084));
            put(&mut b, 0x10, &0xC000u64.to_le_bytes());
            put(&mut b, 0x18, &le32(6252));
        }
        DECOMMISSION | DEACTIVATE | LAUNCH_FINISH | GUEST_STATUS => put(&mut b, 0, &le32(1)),
        ACTIVATE => b[..8].copy_from_slice(&h_asid(1, 6)),
        LAUNCH_UPDATE_DATA => b[..0x14].copy_from_slice(&h_addr_len(1, 0x10000, 16)),
        LAUNCH_UPDATE_VMSA => b[..0x14].copy_from_slice(&h_addr_len(1, 0x20000, 4096)),
        LAUNCH_MEASURE => b[..0x14].copy_from_slice(&h_addr_len(1, 0x3000, 48)),
        LAUNCH_SECRET => {
            put(&mut b, 0, &le32(1));
            put(&mut b, 8, &0x4000u64.to_le_bytes());
            put(&mut b, 0x10, &le32(52));
            put(&mut b, 0x18, &0x5000u64.to_le_bytes());
            put(&mut b, 0x20, &le32(16));
            put(&mut b, 0x28, &0x6000u64.to_le_bytes());
            put(&mut b, 0x30, &le32(16));
        }
        ATTESTATION => {
            put(&mut b, 0, &le32(1));
            put(&mut b, 8, &0xE000u64.to_le_bytes());
            put(&mut b, 0x20, &le32(0xD0));
        }
        DBG_DECRYPT | DBG_ENCRYPT => {
            put(&mut b, 0, &le32(1));
            put(&mut b, 8, &0x10000u64.to_le_bytes());
            put(&mut b, 0x10, &0x11000u64.to_le_bytes());
            put(&mut b, 0x18, &le32(16));
        }
        _ => {}
    }
    b
}

const IPS: Status = InvalidPlatformState;
const IGS: Status = InvalidGuestState;

/// (command, name, [UNINIT, INIT, WORKING+LUPDATE, WORKING+LSECRET, WORKING+RUNNING]).
/// The guest is handle 1, policy 0, ASID 5 (pending, live once RUNNING).
#[rustfmt::skip]
const TABLE: &[(u32, &str, [Status; 5])] = &[
    (INIT,               "INIT",               [Success, IPS, IPS, IPS, IPS]),
    (SHUTDOWN,           "SHUTDOWN",           [Success, Success, Success, Success, Success]),
    (PLATFORM_RESET,     "PLATFORM_RESET",     [Success, IPS, IPS, IPS, IPS]),
    (PLATFORM_STATUS,    "PLATFORM_STATUS",    [Success, Success, Success, Success, Success]),
    (PEK_GEN,            "PEK_GEN",            [IPS, Success, IPS, IPS, IPS]),
    (PEK_CSR,            "PEK_CSR",            [IPS, Success, Success, Success, Success]),
    (PEK_CERT_IMPORT,    "PEK_CERT_IMPORT",    [IPS, InvalidCertificate, IPS, IPS, IPS]),
    (PDH_CERT_EXPORT,    "PDH_CERT_EXPORT",    [IPS, Success, Success, Success, Success]),
    (PDH_GEN,            "PDH_GEN",            [IPS, Success, Success, Success, Success]),
    (DF_FLUSH,           "DF_FLUSH",           [Success, Success, Success, Success, Success]),
    (DOWNLOAD_FIRMWARE,  "DOWNLOAD_FIRMWARE",  [Unsupported, IPS, IPS, IPS, IPS]),
    (GET_ID,             "GET_ID",             [Success, Success, Success, Success, Success]),
    (INIT_EX,            "INIT_EX",            [Unsupported, IPS, IPS, IPS, IPS]),
    (NOP,                "NOP",                [Success, Success, Success, Success, Success]),
    (DECOMMISSION,       "DECOMMISSION",       [IPS, IPS, Active, Active, Active]),
    (ACTIVATE,           "ACTIVATE",           [IPS, IPS, Active, Active, Active]),
    (DEACTIVATE,         "DEACTIVATE",         [IPS, IPS, Success, Success, Success]),
    (GUEST_STATUS,       "GUEST_STATUS",       [IPS, InvalidGuest, Success, Success, Success]),
    (COPY,               "COPY",               [IPS, IPS, Unsupported, Unsupported, Unsupported]),
    (LAUNCH_START,       "LAUNCH_START",       [IPS, Success, Success, Success, Success]),
    (LAUNCH_UPDATE_DATA, "LAUNCH_UPDATE_DATA", [IPS, IPS, Success, IGS, IGS]),
    (LAUNCH_UPDATE_VMSA, "LAUNCH_UPDATE_VMSA", [IPS, IPS, Unsupported, IGS, IGS]),
    (LAUNCH_MEASURE,     "LAUNCH_MEASURE",     [IPS, IPS, Success, IGS, IGS]),
    (LAUNCH_SECRET,      "LAUNCH_SECRET",      [IPS, IPS, IGS, BadMeasurement, IGS]),
    (LAUNCH_FINISH,      "LAUNCH_FINISH",      [IPS, IPS, IGS, Success, IGS]),
    (ATTESTATION,        "ATTESTATION",        [IPS, IPS, IGS, Success, Success]),
    (SEND_START,         "SEND_START",         [IPS, IPS, Unsupported, Unsupported, Unsupported]),
    (RECEIVE_START,      "RECEIVE_START",      [IPS, Unsupported, Unsupported, Unsupported, Unsupported]),
    (DBG_DECRYPT,        "DBG_DECRYPT",        [IPS, IPS, Success, Success, Success]),
    (DBG_ENCRYPT,        "DBG_ENCRYPT",        [IPS, IPS, Success, Success, Success]),
    (SWAP_OUT,           "SWAP_OUT",           [IPS, IPS, Unsupported, Unsupported, Unsupported]),
    (0x99,               "unknown 0x99",       [InvalidCommand, InvalidCommand, InvalidCommand, InvalidCommand, InvalidCommand]),
];

fn snapshot(p: &SoftPlatform) -> (Vec<u8>, Status, Vec<u8>) {
    let mut ps = [0u8; 12];
    assert_eq!(ex(p, PLATFORM_STATUS, &mut ps), Success);
    let mut gs = [0u8; 0x10];
    put(&mut gs, 0, &le32(1));
    let s = ex(p, GUEST_STATUS, &mut gs);
    (ps.to_vec(), s, gs.to_vec())
}

#[test]
fn every_command_in_every_state() {
    let states = [S::Uninit, S::Init, S::LUpdate, S::LSecret, S::Running];
    let mut checked = 0;
    let mut failures = Vec::new();
    for (id, name, expect) in TABLE {
        for (i, st) in states.iter().enumerate() {
            let (_d, p) = reach(*st);
            let before = snapshot(&p);
            let mut b = buffer(*id);
            let got = ex(&p, *id, &mut b);
            if got != expect[i] {
                failures.push(format!(
                    "{name} in {st:?}: got {got}, expected {}",
                    expect[i]
                ));
            }
            if got != Success {
                assert_eq!(
                    snapshot(&p),
                    before,
                    "{name} in {st:?} refused with {got} but changed state"
                );
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, TABLE.len() * 5);
}

fn r32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn length_probes_write_the_needed_length() {
    let (_d, p) = reach(S::LUpdate);
    let mut b = buffer(PDH_CERT_EXPORT);
    put(&mut b, 8, &le32(0));
    put(&mut b, 0x18, &le32(0));
    assert_eq!(ex(&p, PDH_CERT_EXPORT, &mut b), InvalidLength);
    assert_eq!((r32(&b, 8), r32(&b, 0x18)), (2084, 6252));
    let mut b = buffer(GET_ID);
    put(&mut b, 8, &le32(0));
    assert_eq!(ex(&p, GET_ID, &mut b), InvalidLength);
    assert_eq!(r32(&b, 8), 64);
    let mut b = buffer(PEK_CSR);
    put(&mut b, 8, &le32(10));
    assert_eq!(ex(&p, PEK_CSR, &mut b), InvalidLength);
    assert_eq!(r32(&b, 8), 2084);
    let mut b = h_addr_len(1, 0x3000, 0);
    assert_eq!(ex(&p, LAUNCH_MEASURE, &mut b), InvalidLength);
    assert_eq!(r32(&b, 0x10), 48);
    let mut gs = [0u8; 0x10];
    put(&mut gs, 0, &le32(1));
    assert_eq!(ex(&p, GUEST_STATUS, &mut gs), Success);
    assert_eq!(gs[0x0C], 1, "still LUPDATE after the probe");
    assert_eq!(
        ex(&p, LAUNCH_MEASURE, &mut h_addr_len(1, 0x3000, 48)),
        Success
    );
    let mut b = buffer(ATTESTATION);
    put(&mut b, 0x20, &le32(0));
    assert_eq!(ex(&p, ATTESTATION, &mut b), InvalidLength);
    assert_eq!(r32(&b, 0x20), 0xD0);
    // Real export lands in PA memory: PDH usage 0x1003, chain PEK/OCA/CEK, CEK unsigned.
    let mut b = buffer(PDH_CERT_EXPORT);
    assert_eq!(ex(&p, PDH_CERT_EXPORT, &mut b), Success);
    let pdh = p.read_pa(0xA000, 2084).unwrap();
    assert_eq!(r32(&pdh, 8), 0x1003);
    let chain = p.read_pa(0xC000, 6252).unwrap();
    assert_eq!(
        [r32(&chain, 8), r32(&chain, 2084 + 8), r32(&chain, 4168 + 8)],
        [0x1002, 0x1001, 0x1004]
    );
    assert_eq!(r32(&chain, 4168 + 0x414), 0x1000, "CEK sig1 empty");
    assert_eq!(r32(&chain, 4168 + 0x61C), 0x1000, "CEK sig2 empty");
}

#[test]
fn asid_rules_and_df_flush() {
    let (_d, p) = fresh();
    assert_eq!(init_es(&p), Success);
    assert_eq!(launch_start(&p, 0, 0), (Success, 1));
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(1, 5)),
        DfFlushRequired,
        "ASIDs dirty after INIT"
    );
    assert_eq!(ex(&p, DF_FLUSH, &mut []), Success);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 0)), InvalidAsid);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 16)), InvalidAsid);
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(1, 2)),
        InvalidAsid,
        "ES range for a non-ES guest"
    );
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(9, 5)), InvalidGuest);
    assert_eq!(ex(&p, DEACTIVATE, &mut le32(1)), Inactive);
    // Order of checks: inactive before alignment.
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_DATA, &mut h_addr_len(1, 0x10001, 15)),
        Inactive
    );
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 5)), Success);
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_DATA, &mut h_addr_len(1, 0x10001, 16)),
        InvalidAddress
    );
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_DATA, &mut h_addr_len(1, 0x10000, 0)),
        InvalidLength
    );
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_DATA, &mut h_addr_len(1, 0x10000, 17)),
        InvalidLength
    );
    assert_eq!(launch_start(&p, 0x4, 0), (Success, 2));
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(2, 6)),
        InvalidAsid,
        "SEV range for an ES guest"
    );
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(2, 5)),
        AsidOwned,
        "ownership is checked before the range (mcmd_activate_common)"
    );
    assert_eq!(launch_start(&p, 0, 0), (Success, 3));
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(3, 5)), AsidOwned);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(2, 1)), Success);
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(1, 6)),
        Active,
        "already active, other ASID free"
    );
    assert_eq!(
        ex(&p, ACTIVATE, &mut h_asid(1, 5)),
        AsidOwned,
        "already holds this ASID: the firmware counts the guest itself"
    );
    // ES VMSA: exact 4096, ES only.
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_VMSA, &mut h_addr_len(2, 0x20000, 4080)),
        InvalidLength
    );
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_VMSA, &mut h_addr_len(2, 0x20000, 4096)),
        Success
    );
    // Pending ASID goes straight back to clean.
    assert_eq!(ex(&p, DECOMMISSION, &mut le32(1)), Active);
    assert_eq!(ex(&p, DEACTIVATE, &mut le32(1)), Success);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(3, 5)), Success);
    // A RUNNING guest's ASID is dirty after DEACTIVATE.
    assert_eq!(
        ex(&p, LAUNCH_MEASURE, &mut h_addr_len(3, 0x3000, 48)),
        Success
    );
    assert_eq!(ex(&p, LAUNCH_FINISH, &mut le32(3)), Success);
    assert_eq!(ex(&p, DEACTIVATE, &mut le32(3)), Success);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 5)), DfFlushRequired);
    assert_eq!(ex(&p, DF_FLUSH, &mut []), Success);
    assert_eq!(ex(&p, ACTIVATE, &mut h_asid(1, 5)), Success);
    // Decommission everything: the platform returns to INIT.
    for h in [1, 2] {
        assert_eq!(ex(&p, DEACTIVATE, &mut le32(h)), Success);
    }
    for h in [1, 2, 3] {
        assert_eq!(ex(&p, DECOMMISSION, &mut le32(h)), Success);
    }
    let mut ps = [0u8; 12];
    assert_eq!(ex(&p, PLATFORM_STATUS, &mut ps), Success);
    assert_eq!((ps[2], r32(&ps, 8)), (1, 0));
    assert_eq!(ex(&p, DECOMMISSION, &mut le32(1)), InvalidPlatformState);
}

#[test]
fn init_config_es_and_resource_limit() {
    let (_d, p) = fresh();
    let mut b = [0u8; 0x14];
    put(&mut b, 0, &le32(2));
    assert_eq!(ex(&p, INIT, &mut b), InvalidConfig);
    put(&mut b, 0, &le32(1));
    put(&mut b, 8, &0x1000u64.to_le_bytes());
    assert_eq!(ex(&p, INIT, &mut b), InvalidAddress);
    put(&mut b, 8, &(1u64 << 20).to_le_bytes());
    assert_eq!(ex(&p, INIT, &mut b), InvalidLength);
    let mut b = [0u8; 0x14];
    assert_eq!(ex(&p, INIT, &mut b), Success, "INIT without ES");
    assert_eq!(
        launch_start(&p, 0x4, 0).0,
        Unsupported,
        "ES guest on a non-ES platform"
    );
    let mut n = 0;
    loop {
        let (s, _) = launch_start(&p, 0, 0);
        if s != Success {
            assert_eq!(s, ResourceLimit);
            break;
        }
        n += 1;
    }
    assert_eq!(n, sev_firmware::soft::fw::MAX_GUESTS);
}

#[test]
fn raw_launch_encrypts_pa_memory_and_debug_round_trips() {
    let (_d, p) = reach(S::LUpdate);
    let plain: Vec<u8> = (0..64u8).collect();
    p.write_pa(0x10000, &plain).unwrap();
    assert_eq!(
        ex(&p, LAUNCH_UPDATE_DATA, &mut h_addr_len(1, 0x10000, 64)),
        Success
    );
    let ct = p.read_pa(0x10000, 64).unwrap();
    assert_ne!(ct, plain, "host sees ciphertext after LAUNCH_UPDATE_DATA");
    let mut b = buffer(DBG_DECRYPT);
    put(&mut b, 0x18, &le32(64));
    assert_eq!(ex(&p, DBG_DECRYPT, &mut b), Success);
    assert_eq!(p.read_pa(0x11000, 64).unwrap(), plain);
    put(&mut b, 8, &0x10008u64.to_le_bytes());
    assert_eq!(ex(&p, DBG_DECRYPT, &mut b), InvalidAddress);
    // Measurement equals HMAC(TIK = 0, ...) over SHA-256 of the plaintext.
    let mut m = h_addr_len(1, 0x3000, 48);
    assert_eq!(ex(&p, LAUNCH_MEASURE, &mut m), Success);
    let out = p.read_pa(0x3000, 48).unwrap();
    let ld: [u8; 32] = openssl::sha::sha256(&plain);
    let mnonce: [u8; 16] = out[32..].try_into().unwrap();
    let st = sev_firmware::soft::store::API;
    let want = sev_proto::measure::measurement(
        &[0u8; 16],
        st.0,
        st.1,
        sev_firmware::soft::store::BUILD,
        0u32,
        &ld,
        &mnonce,
    );
    assert_eq!(&out[..32], &want[..]);
}
