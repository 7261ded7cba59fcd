//! Property tests for the SEV-SNP parsers (`sev_proto::snp`): arbitrary bytes never panic,
//! whatever parses re-encodes to the same bytes, and single-byte mutations of valid structures
//! either parse (and round-trip) or fail with an error naming the structure.

use proptest::prelude::*;
use sev_proto::snp::certs::{encode_cert_table, parse_cert_table, CertTableEntry, VcekExtensions};
use sev_proto::snp::id_block::{IdAuth, IdBlock};
use sev_proto::snp::measure::{ovmf_sev_metadata, PageInfo};
use sev_proto::snp::msg::{self, KeyReq, KeyRsp, MsgHeader, ReportReq, ReportRsp};
use sev_proto::snp::report::{AttestationReport, REPORT_SIZE};
use sev_proto::snp::secrets::SecretsPage;
use sev_proto::snp::tcb::{TcbLayout, TcbVersion};
use uuid::Uuid;

fn report_template() -> Vec<u8> {
    let mut r = AttestationReport {
        measurement: [0x42; 48],
        chip_id: [7; 64],
        ..Default::default()
    };
    r.signature.r[0] = 1;
    r.to_bytes().unwrap().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn report_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..1300)) {
        if let Ok(r) = AttestationReport::from_bytes(&data) {
            prop_assert_eq!(&r.to_bytes().unwrap()[..], &data[..]);
        }
    }

    #[test]
    fn report_mutations(pos in 0usize..REPORT_SIZE, val in any::<u8>()) {
        let mut b = report_template();
        b[pos] = val;
        match AttestationReport::from_bytes(&b) {
            Ok(r) => prop_assert_eq!(&r.to_bytes().unwrap()[..], &b[..]),
            Err(e) => prop_assert!(e.to_string().starts_with("ATTESTATION_REPORT"), "{}", e),
        }
    }

    #[test]
    fn id_structures_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..0x1010), pos in 0usize..0x1000, val in any::<u8>()) {
        if let Ok(b) = IdBlock::from_bytes(&data) {
            prop_assert_eq!(&b.to_bytes()[..], &data[..]);
        }
        if let Ok(a) = IdAuth::from_bytes(&data) {
            prop_assert_eq!(&a.to_bytes()[..], &data[..]);
        }
        let mut z = vec![0u8; 0x1000];
        z[pos] = val;
        match IdAuth::from_bytes(&z) {
            Ok(a) => {
                prop_assert_eq!(&a.to_bytes()[..], &z[..]);
                // A zero key cannot verify anything.
                let blk = IdBlock::new([0; 48], [0; 16], [0; 16], 0, Default::default());
                prop_assert!(a.verify_id_block(&blk).is_err());
            }
            Err(e) => prop_assert!(e.to_string().starts_with("ID_AUTH"), "{}", e),
        }
    }

    #[test]
    fn cert_table_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(es) = parse_cert_table(&data) {
            // Re-encoding packs the blobs; parsing that again gives the same entries.
            let again = encode_cert_table(&es).unwrap();
            prop_assert_eq!(parse_cert_table(&again).unwrap(), es);
        }
    }

    #[test]
    fn cert_table_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..5)) {
        let es: Vec<CertTableEntry> = blobs.into_iter().enumerate()
            .map(|(i, data)| CertTableEntry { guid: Uuid::from_u128(i as u128 + 1), data })
            .collect();
        let b = encode_cert_table(&es).unwrap();
        prop_assert_eq!(parse_cert_table(&b).unwrap(), es);
    }

    #[test]
    fn vcek_der_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = VcekExtensions::from_der(&data);
    }

    #[test]
    fn vcek_der_mutations(pos in 0usize..1360, val in any::<u8>()) {
        let mut der = include_bytes!("data/snp/vcek_milan.der").to_vec();
        der[pos] = val;
        let _ = VcekExtensions::from_der(&der);
    }

    #[test]
    fn msg_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..0x600), key in any::<[u8; 32]>()) {
        if let Ok(h) = MsgHeader::from_bytes(data.get(..0x60).unwrap_or(&data)) {
            prop_assert_eq!(&h.to_bytes()[..], &data[..0x60]);
        }
        // Random bytes never authenticate.
        prop_assert!(msg::open(&key, &data).is_err());
        if let Ok(r) = ReportReq::from_bytes(&data) { prop_assert_eq!(&r.to_bytes()[..], &data[..]); }
        if let Ok(r) = ReportRsp::from_bytes(&data) {
            if r.status != 0 { prop_assert!(r.report.is_none()); }
        }
        if let Ok(r) = KeyReq::from_bytes(&data) { prop_assert_eq!(&r.to_bytes()[..], &data[..]); }
        if let Ok(r) = KeyRsp::from_bytes(&data) { prop_assert_eq!(&r.to_bytes()[..], &data[..]); }
    }

    #[test]
    fn msg_seal_open(key in any::<[u8; 32]>(), seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 1..200), flip in any::<u16>()) {
        let m = msg::seal(&key, seq, 5, 1, 0, &payload).unwrap();
        let (h, pt) = msg::open(&key, &m).unwrap();
        prop_assert_eq!(h.seqno, seq);
        prop_assert_eq!(&pt[..], &payload[..]);
        let mut t = m.clone();
        let i = usize::from(flip) % t.len();
        t[i] ^= 0x80;
        prop_assert!(msg::open(&key, &t).is_err());
    }

    #[test]
    fn secrets_page_any_bytes(head in proptest::collection::vec(any::<u8>(), 0x164..=0x164), tail in any::<u8>(), len in 4090usize..4100) {
        let mut b = head;
        b.resize(len, 0);
        if len == 4096 { b[4095] = tail; }
        match SecretsPage::from_bytes(&b) {
            Ok(p) => prop_assert_eq!(&p.to_bytes()[..], &b[..]),
            Err(e) => prop_assert!(e.to_string().starts_with("SNP_SECRETS_PAGE"), "{}", e),
        }
    }

    #[test]
    fn ovmf_metadata_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = ovmf_sev_metadata(&data);
    }

    #[test]
    fn page_info_and_tcb(data in proptest::collection::vec(any::<u8>(), 0x70..=0x70), raw in any::<u64>()) {
        if let Ok(p) = PageInfo::from_bytes(&data) {
            prop_assert_eq!(&p.to_bytes()[..], &data[..]);
        }
        for l in [TcbLayout::MilanGenoa, TcbLayout::Turin] {
            if let Ok(t) = TcbVersion::decode(raw, l) {
                prop_assert_eq!(t.encode(l).unwrap(), raw);
            }
        }
    }
}
