//! The guest-side secret table (GUID-keyed entries): parse, encode round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::secret_table::SecretTable;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = SecretTable::parse(data) else {
        return;
    };
    for (g, v) in &t.entries {
        assert_eq!(t.get(g).map(|x| x.len()).is_some(), true);
        let _ = v.len();
    }
    let _ = t.unpadded_len();
    if let Ok(enc) = t.encode() {
        let again = SecretTable::parse(&enc).expect("re-parse of encode() output");
        assert_eq!(again, t, "parse(encode(t)) != t");
    }
});
