//! Random command sequences through the raw interface: the model never panics, answers
//! only known status codes, and its platform state agrees with its guests.

use proptest::prelude::*;
use sev_firmware::soft::raw::cmd::*;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::Status;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    PEK_CSR,
    PDH_CERT_EXPORT,
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
    0x40,
    0x50,
    0x24,
    0x77,
];

fn small_buf(words: &[u32]) -> Vec<u8> {
    // Small handles/ASIDs/lengths and 16-aligned addresses most of the time, so sequences
    // get deep into the state machines.
    let mut b = vec![0u8; 0x40];
    for (i, w) in words.iter().enumerate().take(16) {
        let v = match w % 4 {
            0 => w % 4,
            1 => (w >> 2) % 17,
            2 => ((w >> 2) % 64) * 16,
            _ => *w,
        };
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_invariants(seq in prop::collection::vec((0..CMDS.len(), prop::collection::vec(any::<u32>(), 16)), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(template().join("sev-state.json"), d.path().join("sev-state.json")).unwrap();
        let p = SoftPlatform::open(d.path()).unwrap();
        for (ci, words) in seq {
            let id = CMDS[ci];
            let mut b = small_buf(&words);
            let s = p.execute(id, &mut b);
            prop_assert!(Status::from_u32(s.code()).is_some());
            let mut ps = [0u8; 12];
            prop_assert_eq!(p.execute(PLATFORM_STATUS, &mut ps), Status::Success);
            let count = u32::from_le_bytes(ps[8..12].try_into().unwrap());
            let mut live = 0;
            if ps[2] != 0 {
                for h in 1..=64u32 {
                    let mut g = [0u8; 0x10];
                    g[..4].copy_from_slice(&h.to_le_bytes());
                    if p.execute(GUEST_STATUS, &mut g) == Status::Success {
                        live += 1;
                    }
                }
            }
            prop_assert_eq!(count, live);
            prop_assert_eq!(ps[2] == 2, live > 0, "WORKING iff guests exist");
        }
    }
}
