//! SEV-SNP ID block and ID authentication structure as SNP_LAUNCH_FINISH receives them from
//! the host: `snp::id_block::{IdBlock, IdAuth}`. Input = ID block (0x60) ‖ ID auth (0x1000).
//! Invariants: whatever parses re-encodes to the same bytes; the LAUNCH_FINISH checks never
//! panic and never accept a fuzzed pair (no input carries a signature of an in-process key,
//! and fuzzed keys cannot sign).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::snp::id_block::{IdAuth, IdBlock, ID_BLOCK_SIZE};

fuzz_target!(|data: &[u8]| {
    let (blk, auth) = data.split_at(data.len().min(ID_BLOCK_SIZE));
    let block = IdBlock::from_bytes(blk);
    if let Ok(b) = &block {
        assert_eq!(&b.to_bytes()[..], blk);
    }
    let Ok(a) = IdAuth::from_bytes(auth) else {
        return;
    };
    assert_eq!(&a.to_bytes()[..], auth);
    let _ = a.id_key_digest();
    let _ = a.verify_author();
    if let Ok(b) = block {
        let r = a.check_launch_finish(&b, &b.ld, b.policy, data.len() % 2 == 0);
        if let Err(e) = &r {
            let _ = (e.to_string(), e.status());
        }
    }
});
