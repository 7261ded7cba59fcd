//! The soft firmware's raw command interface (`SoftPlatform::execute(cmd_id, buf)`):
//! random command sequences with random buffers and random writes into the model's PA space.
//! Invariants checked after every command: no panic; only defined status codes;
//! PLATFORM_STATUS always answers; the guest count equals the live guests and the platform
//! is WORKING iff guests exist; a refused command (status != SUCCESS) changes neither the
//! platform status nor any guest's status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_firmware::soft::raw::cmd::*;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::Status;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A platform directory with an identity made once (RSA-4096 key generation is slow);
/// each input starts from a copy of it.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        SoftPlatform::open(&d).unwrap();
        d
    })
}

const CMDS: &[u32] = &[
    INIT,
    SHUTDOWN,
    PLATFORM_RESET,
    PLATFORM_STATUS,
    PEK_GEN,
    PEK_CSR,
    PEK_CERT_IMPORT,
    PDH_CERT_EXPORT,
    PDH_GEN,
    DF_FLUSH,
    GET_ID,
    NOP,
    DECOMMISSION,
    ACTIVATE,
    DEACTIVATE,
    GUEST_STATUS,
    LAUNCH_START,
    LAUNCH_UPDATE_DATA,
    LAUNCH_UPDATE_VMSA,
    LAUNCH_MEASURE,
    LAUNCH_SECRET,
    LAUNCH_FINISH,
    ATTESTATION,
    DBG_DECRYPT,
    DBG_ENCRYPT,
    SEND_START,
    RECEIVE_START,
    COPY,
    SWAP_OUT,
];

const BUF_LENS: [usize; 6] = [0x40, 0x40, 0x40, 0x10, 0x4, 0x0];

/// Small handles/ASIDs/lengths and 16-aligned addresses most of the time, so sequences get
/// deep into the state machines; sometimes the raw word.
fn word(w: u32) -> u32 {
    match w % 4 {
        0 => (w >> 2) % 4,
        1 => (w >> 2) % 17,
        2 => ((w >> 2) % 64) * 16,
        _ => w,
    }
}

/// Platform status bytes plus every guest's GUEST_STATUS answer.
fn snapshot(p: &SoftPlatform) -> (Vec<u8>, Vec<(Status, [u8; 0x10])>) {
    let mut ps = [0u8; 12];
    assert_eq!(p.execute(PLATFORM_STATUS, &mut ps), Status::Success);
    let mut guests = Vec::new();
    if ps[2] != 0 {
        for h in 1..=64u32 {
            let mut g = [0u8; 0x10];
            g[..4].copy_from_slice(&h.to_le_bytes());
            let s = p.execute(GUEST_STATUS, &mut g);
            guests.push((s, g));
        }
    }
    (ps.to_vec(), guests)
}

fn check(p: &SoftPlatform) -> (Vec<u8>, Vec<(Status, [u8; 0x10])>) {
    let snap = snapshot(p);
    let ps = &snap.0;
    let count = u32::from_le_bytes(ps[8..12].try_into().unwrap());
    let live = snap.1.iter().filter(|(s, _)| *s == Status::Success).count() as u32;
    assert_eq!(count, live, "guest_count != live guests");
    assert_eq!(ps[2] == 2, live > 0, "WORKING iff guests exist");
    snap
}

fuzz_target!(|data: &[u8]| {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        template().join("sev-state.json"),
        d.path().join("sev-state.json"),
    )
    .unwrap();
    let p = SoftPlatform::open(d.path()).unwrap();
    let mut before = check(&p);
    let mut it = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 64 {
            break;
        }
        if op >= 0xF0 {
            // Host write into the model's PA space: page index, then 32 bytes.
            let page = u64::from(it.next().unwrap_or(0));
            let data: Vec<u8> = it.by_ref().take(32).collect();
            let _ = p.write_pa(page * 0x1000 + u64::from(op & 0xF) * 16, &data);
            continue;
        }
        let id = if op >= 0xE0 {
            u32::from(it.next().unwrap_or(0))
        } else {
            CMDS[usize::from(op) % CMDS.len()]
        };
        let len = BUF_LENS[usize::from(it.next().unwrap_or(0)) % BUF_LENS.len()];
        let mut buf = vec![0u8; len];
        for i in 0..len / 4 {
            let b: Vec<u8> = it.by_ref().take(4).collect();
            if b.is_empty() {
                break;
            }
            let mut w = [0u8; 4];
            w[..b.len()].copy_from_slice(&b);
            buf[i * 4..i * 4 + 4].copy_from_slice(&word(u32::from_le_bytes(w)).to_le_bytes());
        }
        let s = p.execute(id, &mut buf);
        assert!(Status::from_u32(s.code()).is_some(), "undefined status");
        let after = check(&p);
        if s != Status::Success {
            assert_eq!(
                before, after,
                "refused command 0x{id:02x} ({s}) changed platform or guest state"
            );
        }
        before = after;
    }
});
