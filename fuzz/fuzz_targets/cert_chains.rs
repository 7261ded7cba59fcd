//! Certificate chains: SEV chain (PDH‖PEK‖OCA‖CEK), CA chain (ASK‖ARK), full chain
//! (the sevctl export layout), then `verify`/`verify_full` on whatever parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::cert::chain::{verify_full, CaChain, FullChain, SevChain};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = SevChain::parse(data) {
        assert!(SevChain::parse(&c.encode()).expect("re-parse") == c);
        let _ = c.verify();
    }
    if let Ok(c) = CaChain::parse(data) {
        assert!(CaChain::parse(&c.encode()).expect("re-parse") == c);
        let _ = c.verify();
    }
    // Full chains are 8336 bytes + two CA certs; also try the tail of a large input as a
    // CA chain so short fuzz inputs still reach the CA parser through FullChain.
    if let Ok(c) = FullChain::parse(data) {
        assert!(FullChain::parse(&c.encode()).expect("re-parse") == c);
        let _ = verify_full(&c, None);
        let ark = c.ca.ark.clone();
        let _ = verify_full(&c, Some(&ark));
    }
});
