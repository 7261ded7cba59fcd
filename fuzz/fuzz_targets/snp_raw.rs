//! The soft SNP firmware's raw command interface (`SoftSnpPlatform::execute(cmd_id, buf)`):
//! random sequences of SNP commands with random buffers, mixed with the host's RMPUPDATEs,
//! PVALIDATEs and writes into the platform's memory. Invariants checked after every step: no
//! panic; only defined status codes; PLATFORM_STATUS always answers; a refused command
//! (status != SUCCESS) or a refused host operation changes nothing (`state_digest`, which
//! covers the platform fields, the RMP, every guest context and the memory); the host can
//! never read a page the RMP gives to a guest or the firmware.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_firmware::snp::raw::{buffer_len, cmd::*};
use sev_firmware::snp::rmp::{PageState, RmpUpdate};
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::snp::vcek::SnpIdentity;
use sev_firmware::snp::SnpPlatform;
use sev_firmware::Status;

const CMDS: &[u32] = &[
    SNP_INIT,
    SNP_SHUTDOWN,
    SNP_PLATFORM_STATUS,
    SNP_INIT_EX,
    SNP_SHUTDOWN_EX,
    SNP_DECOMMISSION,
    SNP_ACTIVATE,
    SNP_GUEST_STATUS,
    SNP_GCTX_CREATE,
    SNP_GUEST_REQUEST,
    SNP_LAUNCH_START,
    SNP_LAUNCH_UPDATE,
    SNP_LAUNCH_FINISH,
    SNP_DBG_DECRYPT,
    SNP_DBG_ENCRYPT,
    SNP_PAGE_RECLAIM,
    SNP_CONFIG,
    SNP_COMMIT,
    SNP_VLEK_LOAD,
];

/// The model's pages the fuzzer plays with: 16 × 4 KiB at 0, and a 2 MiB page at 2 MiB.
fn page(sel: u8) -> u64 {
    if sel & 0x10 != 0 {
        0x20_0000
    } else {
        u64::from(sel & 0xF) * 0x1000
    }
}

/// Mostly page addresses, small numbers and valid policies, so that sequences get deep into
/// the state machines; sometimes the raw bytes.
fn word(it: &mut impl Iterator<Item = u8>) -> u64 {
    let sel = it.next().unwrap_or(0);
    match sel % 5 {
        0 => page(sel >> 3),
        1 => u64::from(sel >> 3),
        2 => 0x30000 | u64::from(sel >> 3) << 16 & 0xB0000,
        3 => page(sel >> 3) | 1,
        _ => {
            let mut b = [0u8; 8];
            for x in b.iter_mut() {
                *x = it.next().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        }
    }
}

fn assigned_unreadable(p: &SoftSnpPlatform) {
    for i in 0..16u64 {
        let a = i * 0x1000;
        let s = p.page_state(a);
        let hv = matches!(s, PageState::Hypervisor | PageState::HvFixed);
        assert_eq!(p.read_pa(a, 1).is_ok(), hv, "host read of {a:#x} in {s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let p = SoftSnpPlatform::new(SnpIdentity::from_seed([1; 48]), SoftSnpConfig::default())
        .expect("platform");
    let mut it = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 48 {
            break;
        }
        let before = p.state_digest();
        if op >= 0xE0 {
            // A host operation on one of the pages.
            let sel = it.next().unwrap_or(0);
            let spa = page(sel);
            let big = sel & 0x10 != 0;
            let asid = u32::from(it.next().unwrap_or(0) % 4);
            let gpa = page(it.next().unwrap_or(0));
            let r = match op % 6 {
                0 => p.rmp_update(spa, &RmpUpdate::hypervisor()).map(|_| ()),
                1 => p.rmp_update(
                    spa,
                    &RmpUpdate {
                        page_2m: big,
                        ..RmpUpdate::firmware()
                    },
                ),
                2 => p.rmp_update(spa, &RmpUpdate::pre_guest(asid, gpa, big)),
                3 => p.rmp_update(spa, &RmpUpdate::guest(asid, gpa, big)),
                4 => p
                    .pvalidate(spa, asid, gpa, big, sel & 0x20 != 0)
                    .map(|_| ()),
                _ => {
                    let d: Vec<u8> = it.by_ref().take(32).collect();
                    p.write_pa(spa + u64::from(sel >> 5) * 0x200, &d)
                }
            };
            if r.is_err() {
                assert_eq!(
                    p.state_digest(),
                    before,
                    "refused host op {op:#x} changed state"
                );
            }
            continue;
        }
        let id = if op >= 0xD0 {
            u32::from(it.next().unwrap_or(0))
        } else {
            CMDS[usize::from(op) % CMDS.len()]
        };
        let len = buffer_len(id).unwrap_or(0x40);
        let mut buf = vec![0u8; len];
        for i in 0..len / 8 {
            buf[i * 8..i * 8 + 8].copy_from_slice(&word(&mut it).to_le_bytes());
        }
        if len % 8 == 4 {
            buf[len - 4..].copy_from_slice(&(word(&mut it) as u32).to_le_bytes());
        }
        let s = p.execute(id, &mut buf);
        assert!(Status::from_u32(s.code()).is_some(), "undefined status");
        p.snp_platform_status().expect("PLATFORM_STATUS answers");
        if s != Status::Success {
            assert_eq!(
                p.state_digest(),
                before,
                "refused command {id:#x} ({s}) changed state"
            );
        }
        assigned_unreadable(&p);
    }
});
