//! The SNP_VLEK_LOAD wrapped blob (`sev_firmware::snp::vlek`): `WrappedVlek::from_bytes`,
//! `to_bytes`, `unwrap` under a fixed platform key, and `SoftSnpPlatform::vlek_load`.
//! Checks: parse → encode is the identity; a fuzzed blob never unwraps nor loads (its tag would
//! have to be forged), and the refusal names the structure; wrap → unwrap of fuzzed sticks
//! returns them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpPlatform};
use sev_firmware::snp::vcek::{HashSticks, SnpIdentity};
use sev_firmware::snp::vlek::{self, WrappedVlek};
use sev_firmware::snp::SnpPlatform;
use std::sync::OnceLock;

fn platform() -> &'static SoftSnpPlatform {
    static P: OnceLock<SoftSnpPlatform> = OnceLock::new();
    P.get_or_init(|| {
        let p = SoftSnpPlatform::new(SnpIdentity::from_seed([2; 48]), SoftSnpConfig::default())
            .expect("platform");
        p.snp_init().expect("SNP_INIT");
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let sticks = HashSticks::from_seed(&[2; 48], SoftSnpConfig::default().tcb);
    let key = vlek::wrapping_key(&sticks);
    match WrappedVlek::from_bytes(data) {
        Ok(w) => {
            assert_eq!(&w.to_bytes()[..], data);
            let e = vlek::unwrap(&key, &w).expect_err("a fuzzed blob unwrapped");
            assert!(e.to_string().starts_with("VLEK_WRAPPED.TAG"), "{e}");
        }
        Err(e) => assert!(e.to_string().contains("VLEK_WRAPPED"), "{e}"),
    }
    let e = platform()
        .vlek_load(data)
        .expect_err("a fuzzed blob loaded");
    assert!(e.status().is_some(), "{e}");
    assert!(!platform().snp_platform_status().unwrap().vlek_en);
    if data.len() >= 8 * 48 {
        let mut s = [[0u8; 48]; 8];
        for (i, c) in data.chunks_exact(48).take(8).enumerate() {
            s[i].copy_from_slice(c);
        }
        let w = vlek::wrap(&key, &s, sticks.tcb()).expect("wrap");
        assert_eq!(*vlek::unwrap(&key, &w).expect("unwrap"), s);
    }
});
