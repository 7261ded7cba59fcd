//! SEV-SNP guest messages as the (soft) firmware receives them: `snp::msg::open` with a fixed
//! VMPCK, then the request payload parsers. Invariants: no panic; no fuzzed message
//! authenticates; a message sealed here over the fuzzed payload opens to the same payload and
//! parsed payloads re-encode to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::snp::msg::{self, KeyReq, KeyRsp, MsgHeader, ReportReq, ReportRsp, MAX_PAYLOAD};

const KEY: [u8; 32] = [0x5A; 32];

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..0x60) {
        if let Ok(p) = MsgHeader::from_bytes(h) {
            assert_eq!(&p.to_bytes()[..], h);
        }
    }
    assert!(
        msg::open(&KEY, data).is_err(),
        "a fuzzed message authenticated"
    );
    if let Ok(r) = ReportReq::from_bytes(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
    if let Ok(r) = KeyReq::from_bytes(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
    if let Ok(r) = KeyRsp::from_bytes(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
    let _ = ReportRsp::from_bytes(data);
    if !data.is_empty() && data.len() <= MAX_PAYLOAD {
        let m = msg::seal(&KEY, data.len() as u64, 5, 1, 0, data).expect("seal");
        let (_, pt) = msg::open(&KEY, &m).expect("open what we sealed");
        assert_eq!(&pt[..], data);
    }
});
