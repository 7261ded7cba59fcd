//! VECTORS.md C: `sevctl secret build` headers and payloads, byte for byte.

mod common;
use common::{b64, read, testdata, to_b64};
use sev_proto::measure::LaunchMeasure;
use sev_proto::secret::{build_packet, open_packet, PacketHeader};
use sev_proto::secret_table::SecretTable;
use sev_proto::session::TransportKeys;
use uuid::Uuid;

const MEASURE_BLOB: &str = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS";
const IV: &str = "rFR07U3TLH2YnsUj2SVZ7A==";

fn keys(td: &std::path::Path) -> TransportKeys {
    TransportKeys {
        tek: read(td, "sevctl/secret/tek1.bin").try_into().unwrap(),
        tik: read(td, "sevctl/secret/tik1.bin").try_into().unwrap(),
    }
}

#[test]
fn one_and_two_secrets() {
    let Some(td) = testdata() else { return };
    let keys = keys(&td);
    let lm = LaunchMeasure::from_bytes(&b64(MEASURE_BLOB)).unwrap();
    let iv: [u8; 16] = b64(IV).try_into().unwrap();
    let g1 = Uuid::parse_str("736869e5-84f0-4973-92ec-06879ce3da0b").unwrap();
    let g2 = Uuid::parse_str("736869e5-aaaa-4973-92ec-06879ce3da0b").unwrap();

    let mut t = SecretTable::new();
    t.push(g1, read(&td, "sevctl/secret/secret1.txt"));
    let pt = t.encode().unwrap();
    assert_eq!(pt.len(), 64);
    assert_eq!(&pt[16..20], &0x3au32.to_le_bytes());
    let (hdr, ct) = build_packet(&keys, &lm.measure, iv, 0, &pt).unwrap();
    assert_eq!(
        to_b64(&hdr.to_bytes()),
        "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    );
    assert_eq!(
        to_b64(&ct),
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
    );
    // Firmware side: the header parses, the MAC checks and the table comes back.
    let hdr2 = PacketHeader::from_bytes(&hdr.to_bytes()).unwrap();
    let opened = open_packet(&keys, &lm.measure, &hdr2, &ct, 64).unwrap();
    assert_eq!(SecretTable::parse(&opened).unwrap(), t);

    t.push(g2, read(&td, "sevctl/secret/secret2.txt"));
    let pt = t.encode().unwrap();
    let (hdr, ct) = build_packet(&keys, &lm.measure, iv, 0, &pt).unwrap();
    assert_eq!(
        to_b64(&hdr.to_bytes()),
        "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="
    );
    assert_eq!(
        to_b64(&ct),
        "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe"
    );
}

#[test]
fn large_secrets_pad_to_16384() {
    let Some(td) = testdata() else { return };
    let g = Uuid::parse_str("736869e5-84f0-4973-92ec-06879ce3da0b").unwrap();
    for f in ["secret3.txt", "secret4.txt"] {
        let mut t = SecretTable::new();
        t.push(g, read(&td, &format!("sevctl/secret/{f}")));
        assert_eq!(t.encode().unwrap().len(), 16384, "{f}");
    }
}
