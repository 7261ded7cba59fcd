//! The SEV-SNP ATTESTATION_REPORT (0x4A0 bytes; notes §3.1), versions 2, 3 and 5 (version 4 is
//! read with the version-3 layout, as the virtee `sev` crate does).
//!
//! | off | field | | off | field |
//! |---|---|---|---|---|
//! | 000 | VERSION | | 180 | REPORTED_TCB |
//! | 004 | GUEST_SVN | | 188 | CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (v3+) |
//! | 008 | POLICY | | 1A0 | CHIP_ID\[64\] |
//! | 010 | FAMILY_ID\[16\] | | 1E0 | COMMITTED_TCB |
//! | 020 | IMAGE_ID\[16\] | | 1E8 | CURRENT build, minor, major (+1 reserved) |
//! | 030 | VMPL | | 1EC | COMMITTED build, minor, major (+1 reserved) |
//! | 034 | SIGNATURE_ALGO | | 1F0 | LAUNCH_TCB |
//! | 038 | CURRENT_TCB | | 1F8 | LAUNCH_MIT_VECTOR (v5) |
//! | 040 | PLATFORM_INFO | | 200 | CURRENT_MIT_VECTOR (v5) |
//! | 048 | KEY_INFO (+4 reserved) | | 2A0 | SIGNATURE (R\[72\], S\[72\], reserved to 0x4A0) |
//! | 050 | REPORT_DATA\[64\] | | | |
//! | 090 | MEASUREMENT\[48\] | | | |
//! | 0C0 | HOST_DATA\[32\] | | | |
//! | 0E0 | ID_KEY_DIGEST\[48\] | | | |
//! | 110 | AUTHOR_KEY_DIGEST\[48\] | | | |
//! | 140 | REPORT_ID\[32\] | | | |
//! | 160 | REPORT_ID_MA\[32\] | | | |
//!
//! Every reserved range must be zero (the virtee `sev` crate re-encodes before verifying and
//! go-sev-guest enforces MBZ, so a report that does not round-trip is useless to them); the
//! parser rejects non-zero reserved bytes, which makes [`AttestationReport::to_bytes`] the exact
//! inverse of [`AttestationReport::from_bytes`]. The signature is ECDSA P-384 with SHA-384 over
//! bytes 0x000..0x2A0 ([`SIGNED_LEN`]).

use super::ecdsa::{p384_key, SigError, Signature, ALGO_ECDSA_P384_SHA384};
use super::policy::SnpPolicy;
use super::tcb::{TcbLayout, TcbVersion};
use super::{arr, expect_len, expect_zero, u32_at, u64_at, FormatError};
use openssl::pkey::{PKeyRef, Private, Public};

/// Size of a report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Bytes covered by the signature (0x000..0x2A0).
pub const SIGNED_LEN: usize = 0x2A0;
const S: &str = "ATTESTATION_REPORT";

/// CPUID family/model/stepping as reported in v3+ reports (family and model include the
/// extended fields, e.g. family 0x19).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fms {
    /// CPUID_FAM_ID.
    pub family: u8,
    /// CPUID_MOD_ID.
    pub model: u8,
    /// CPUID_STEP.
    pub stepping: u8,
}

/// A firmware version triple as in the report (build, minor, major at increasing offsets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwVersion {
    /// Build.
    pub build: u8,
    /// Minor.
    pub minor: u8,
    /// Major.
    pub major: u8,
}

/// The product a report belongs to, as verifiers infer it (notes §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// Milan (family 0x19, model 0x00..=0x0F).
    Milan,
    /// Genoa (family 0x19, model 0x10..=0x1F or 0xA0..=0xAF).
    Genoa,
    /// Turin (family 0x1A, model 0x00..=0x11; or a v2 report with an 8-byte CHIP_ID).
    Turin,
}

/// A parsed attestation report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationReport {
    /// VERSION (2, 3 or 5; 4 has the version-3 layout).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: SnpPolicy,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VMPL.
    pub vmpl: u32,
    /// SIGNATURE_ALGO (1 = ECDSA P-384 SHA-384).
    pub signature_algo: u32,
    /// CURRENT_TCB (raw; decode with [`AttestationReport::tcb_layout`]).
    pub current_tcb: u64,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// KEY_INFO (bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY).
    pub key_info: u32,
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    pub report_id: [u8; 32],
    /// REPORT_ID_MA.
    pub report_id_ma: [u8; 32],
    /// REPORTED_TCB.
    pub reported_tcb: u64,
    /// CPUID family/model/stepping (v3 and later; `None` for v2).
    pub cpuid: Option<Fms>,
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: u64,
    /// Current firmware version.
    pub current_version: FwVersion,
    /// Committed firmware version.
    pub committed_version: FwVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: u64,
    /// LAUNCH_MIT_VECTOR (v5 only).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (v5 only).
    pub current_mit_vector: Option<u64>,
    /// SIGNATURE.
    pub signature: Signature,
}

impl Default for AttestationReport {
    /// An unsigned v3 report with all fields zero except VERSION 3, SIGNATURE_ALGO 1, a Milan
    /// FMS (19h/01h/01h) and REPORT_ID_MA all 0xFF.
    fn default() -> Self {
        AttestationReport {
            version: 3,
            guest_svn: 0,
            policy: SnpPolicy::DEFAULT,
            family_id: [0; 16],
            image_id: [0; 16],
            vmpl: 0,
            signature_algo: ALGO_ECDSA_P384_SHA384,
            current_tcb: 0,
            platform_info: 0,
            key_info: 0,
            report_data: [0; 64],
            measurement: [0; 48],
            host_data: [0; 32],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            report_id: [0; 32],
            report_id_ma: [0xFF; 32],
            reported_tcb: 0,
            cpuid: Some(Fms {
                family: 0x19,
                model: 0x01,
                stepping: 0x01,
            }),
            chip_id: [0; 64],
            committed_tcb: 0,
            current_version: FwVersion::default(),
            committed_version: FwVersion::default(),
            launch_tcb: 0,
            launch_mit_vector: None,
            current_mit_vector: None,
            signature: Signature::default(),
        }
    }
}

fn ver(b: &[u8], off: usize) -> FwVersion {
    FwVersion {
        build: b[off],
        minor: b[off + 1],
        major: b[off + 2],
    }
}

impl AttestationReport {
    /// Parses a 0x4A0-byte report. Versions 2, 3 and 5 are accepted; every reserved range must
    /// be zero; KEY_INFO bits 31:5 must be zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        expect_len(S, b, REPORT_SIZE)?;
        let version = u32_at(b, 0);
        if !(2..=5).contains(&version) {
            return Err(FormatError::field(
                S,
                "VERSION",
                format!("{version} is not supported (2..=5)"),
            ));
        }
        let key_info = u32_at(b, 0x48);
        if key_info >> 5 != 0 {
            return Err(FormatError::field(
                S,
                "KEY_INFO",
                format!("0x{key_info:X}: bits 31:5 must be zero"),
            ));
        }
        expect_zero(S, "reserved", b, 0x4C, 0x50)?;
        let cpuid = if version >= 3 {
            expect_zero(S, "reserved", b, 0x18B, 0x1A0)?;
            Some(Fms {
                family: b[0x188],
                model: b[0x189],
                stepping: b[0x18A],
            })
        } else {
            expect_zero(S, "reserved", b, 0x188, 0x1A0)?;
            None
        };
        expect_zero(S, "reserved", b, 0x1EB, 0x1EC)?;
        expect_zero(S, "reserved", b, 0x1EF, 0x1F0)?;
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            expect_zero(S, "reserved", b, 0x208, SIGNED_LEN)?;
            (Some(u64_at(b, 0x1F8)), Some(u64_at(b, 0x200)))
        } else {
            expect_zero(S, "reserved", b, 0x1F8, SIGNED_LEN)?;
            (None, None)
        };
        let signature = Signature::from_bytes(S, &b[SIGNED_LEN..])?;
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(b, 4),
            policy: SnpPolicy(u64_at(b, 8)),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo: u32_at(b, 0x34),
            current_tcb: u64_at(b, 0x38),
            platform_info: u64_at(b, 0x40),
            key_info,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: u64_at(b, 0x180),
            cpuid,
            chip_id: arr(b, 0x1A0),
            committed_tcb: u64_at(b, 0x1E0),
            current_version: ver(b, 0x1E8),
            committed_version: ver(b, 0x1EC),
            launch_tcb: u64_at(b, 0x1F0),
            launch_mit_vector,
            current_mit_vector,
            signature,
        })
    }

    /// Encodes the report. The optional fields must match the version: CPUID FMS present for
    /// v3/v5 and absent for v2; mitigation vectors present exactly for v5.
    pub fn to_bytes(&self) -> Result<[u8; REPORT_SIZE], FormatError> {
        if !(2..=5).contains(&self.version) {
            return Err(FormatError::field(
                S,
                "VERSION",
                format!("{} is not supported (2..=5)", self.version),
            ));
        }
        if (self.version >= 3) != self.cpuid.is_some() {
            return Err(FormatError::field(
                S,
                "CPUID_FAM_ID",
                format!(
                    "version {} {} CPUID family/model/stepping",
                    self.version,
                    if self.version >= 3 { "needs" } else { "has no" }
                ),
            ));
        }
        let v5 = self.version >= 5;
        if v5 != self.launch_mit_vector.is_some() || v5 != self.current_mit_vector.is_some() {
            return Err(FormatError::field(
                S,
                "LAUNCH_MIT_VECTOR",
                format!(
                    "version {}: mitigation vectors exist only in version 5",
                    self.version
                ),
            ));
        }
        if self.key_info >> 5 != 0 {
            return Err(FormatError::field(
                S,
                "KEY_INFO",
                format!("0x{:X}: bits 31:5 must be zero", self.key_info),
            ));
        }
        let mut b = [0u8; REPORT_SIZE];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[8..0x10].copy_from_slice(&self.policy.0.to_le_bytes());
        b[0x10..0x20].copy_from_slice(&self.family_id);
        b[0x20..0x30].copy_from_slice(&self.image_id);
        b[0x30..0x34].copy_from_slice(&self.vmpl.to_le_bytes());
        b[0x34..0x38].copy_from_slice(&self.signature_algo.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&self.current_tcb.to_le_bytes());
        b[0x40..0x48].copy_from_slice(&self.platform_info.to_le_bytes());
        b[0x48..0x4C].copy_from_slice(&self.key_info.to_le_bytes());
        b[0x50..0x90].copy_from_slice(&self.report_data);
        b[0x90..0xC0].copy_from_slice(&self.measurement);
        b[0xC0..0xE0].copy_from_slice(&self.host_data);
        b[0xE0..0x110].copy_from_slice(&self.id_key_digest);
        b[0x110..0x140].copy_from_slice(&self.author_key_digest);
        b[0x140..0x160].copy_from_slice(&self.report_id);
        b[0x160..0x180].copy_from_slice(&self.report_id_ma);
        b[0x180..0x188].copy_from_slice(&self.reported_tcb.to_le_bytes());
        if let Some(f) = self.cpuid {
            b[0x188] = f.family;
            b[0x189] = f.model;
            b[0x18A] = f.stepping;
        }
        b[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        b[0x1E0..0x1E8].copy_from_slice(&self.committed_tcb.to_le_bytes());
        let cv = self.current_version;
        b[0x1E8..0x1EB].copy_from_slice(&[cv.build, cv.minor, cv.major]);
        let mv = self.committed_version;
        b[0x1EC..0x1EF].copy_from_slice(&[mv.build, mv.minor, mv.major]);
        b[0x1F0..0x1F8].copy_from_slice(&self.launch_tcb.to_le_bytes());
        if let (Some(l), Some(c)) = (self.launch_mit_vector, self.current_mit_vector) {
            b[0x1F8..0x200].copy_from_slice(&l.to_le_bytes());
            b[0x200..0x208].copy_from_slice(&c.to_le_bytes());
        }
        b[SIGNED_LEN..].copy_from_slice(&self.signature.to_bytes());
        Ok(b)
    }

    /// KEY_INFO bit 0: AUTHOR_KEY_EN.
    pub fn author_key_en(&self) -> bool {
        self.key_info & 1 != 0
    }
    /// KEY_INFO bit 1: MASK_CHIP_KEY.
    pub fn mask_chip_key(&self) -> bool {
        self.key_info & 2 != 0
    }
    /// KEY_INFO bits 4:2: SIGNING_KEY (0 VCEK, 1 VLEK, 7 none).
    pub fn signing_key(&self) -> u8 {
        ((self.key_info >> 2) & 7) as u8
    }

    /// The product, as verifiers infer it: from CPUID FMS for v3+, and for v2 only Turin can
    /// be told (CHIP_ID non-zero in bytes 0..8 and zero in 8..64). `None` = unknown or
    /// ambiguous (a v2 report from Milan or Genoa).
    pub fn product(&self) -> Option<Product> {
        match self.cpuid {
            Some(Fms {
                family: 0x19,
                model,
                ..
            }) => match model {
                0x00..=0x0F => Some(Product::Milan),
                0x10..=0x1F | 0xA0..=0xAF => Some(Product::Genoa),
                _ => None,
            },
            Some(Fms {
                family: 0x1A,
                model: 0x00..=0x11,
                ..
            }) => Some(Product::Turin),
            Some(_) => None,
            None => {
                let short = self.chip_id[8..].iter().all(|&x| x == 0)
                    && self.chip_id[..8].iter().any(|&x| x != 0);
                short.then_some(Product::Turin)
            }
        }
    }

    /// The TCB layout of this report's TCB fields (Turin for Turin, Milan/Genoa otherwise).
    pub fn tcb_layout(&self) -> TcbLayout {
        if self.product() == Some(Product::Turin) {
            TcbLayout::Turin
        } else {
            TcbLayout::MilanGenoa
        }
    }

    /// Decodes one of the raw TCB fields in [`AttestationReport::tcb_layout`].
    pub fn decode_tcb(&self, raw: u64) -> Result<TcbVersion, FormatError> {
        TcbVersion::decode(raw, self.tcb_layout())
    }

    /// The signed bytes 0x000..0x2A0.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, FormatError> {
        Ok(self.to_bytes()?[..SIGNED_LEN].to_vec())
    }

    /// Verifies the signature with the VCEK (or VLEK) public key: SIGNATURE_ALGO must be 1 and
    /// the key P-384; ECDSA over SHA-384 of bytes 0x000..0x2A0.
    pub fn verify(&self, vcek_public_key: &PKeyRef<Public>) -> Result<(), SigError> {
        if self.signature_algo != ALGO_ECDSA_P384_SHA384 {
            return Err(SigError::UnsupportedAlgo {
                structure: S,
                field: "SIGNATURE_ALGO",
                value: self.signature_algo,
            });
        }
        let ec = p384_key("VCEK", vcek_public_key)?;
        self.signature.verify(S, &self.signed_bytes()?, &ec)
    }

    /// Signs the report with a P-384 private key: sets SIGNATURE_ALGO to 1 and SIGNATURE.
    pub fn sign(&mut self, key: &PKeyRef<Private>) -> Result<(), SigError> {
        self.signature_algo = ALGO_ECDSA_P384_SHA384;
        self.signature = Signature::sign("VCEK", &self.signed_bytes()?, key)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::X509;

    fn milan() -> Vec<u8> {
        let hex_text = include_str!("../../tests/data/snp/report_milan.hex");
        hex::decode(hex_text.trim()).unwrap()
    }

    fn milan_vcek() -> PKey<Public> {
        X509::from_der(include_bytes!("../../tests/data/snp/vcek_milan.der"))
            .unwrap()
            .public_key()
            .unwrap()
    }

    fn p384_key() -> PKey<Private> {
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn virtee_milan_report_verifies() {
        let b = milan();
        assert_eq!(b.len(), REPORT_SIZE);
        let r = AttestationReport::from_bytes(&b).unwrap();
        assert_eq!(r.version, 2);
        assert_eq!(r.policy, SnpPolicy(0x30000));
        assert_eq!(r.cpuid, None);
        assert_eq!(r.product(), None, "v2 Milan/Genoa is ambiguous");
        let tcb = r.decode_tcb(r.reported_tcb).unwrap();
        assert_eq!(
            tcb,
            TcbVersion {
                fmc: 0,
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115
            }
        );
        assert_eq!(&r.to_bytes().unwrap()[..], &b[..], "exact round trip");
        r.verify(&milan_vcek()).unwrap();
    }

    #[test]
    fn flipped_signed_byte_fails() {
        let b = milan();
        let vcek = milan_vcek();
        // Bytes of fields that can hold any value (no MBZ): MEASUREMENT, REPORT_DATA, CHIP_ID.
        for off in [0x04, 0x50, 0x90, 0xBF, 0x1A0, 0x1DF, 0x1F0, 0x2A0, 0x2E8] {
            let mut x = b.clone();
            x[off] ^= 0x01;
            let r = AttestationReport::from_bytes(&x).unwrap();
            assert!(
                matches!(r.verify(&vcek), Err(SigError::BadSignature(S))),
                "flip at 0x{off:X}"
            );
        }
        // A wrong key fails too.
        let other = p384_key();
        let other_pub = PKey::public_key_from_pem(&other.public_key_to_pem().unwrap()).unwrap();
        let r = AttestationReport::from_bytes(&b).unwrap();
        assert!(matches!(
            r.verify(&other_pub),
            Err(SigError::BadSignature(_))
        ));
    }

    #[test]
    fn v3_encode_sign_verify_and_product() {
        let k = p384_key();
        let pubk = PKey::public_key_from_pem(&k.public_key_to_pem().unwrap()).unwrap();
        let mut r = AttestationReport {
            measurement: [0x42; 48],
            chip_id: [0x11; 64],
            current_tcb: 0x7300_0000_0000_0003,
            ..Default::default()
        };
        r.sign(&k).unwrap();
        let b = r.to_bytes().unwrap();
        assert_eq!(&b[0..4], &[3, 0, 0, 0]);
        assert_eq!(&b[0x188..0x18B], &[0x19, 0x01, 0x01]);
        let p = AttestationReport::from_bytes(&b).unwrap();
        assert_eq!(p, r);
        p.verify(&pubk).unwrap();
        assert_eq!(p.product(), Some(Product::Milan));
        for (fam, model, want) in [
            (0x19, 0x11, Some(Product::Genoa)),
            (0x19, 0xA0, Some(Product::Genoa)),
            (0x19, 0x30, None),
            (0x1A, 0x02, Some(Product::Turin)),
            (0x17, 0x31, None),
        ] {
            let r = AttestationReport {
                cpuid: Some(Fms {
                    family: fam,
                    model,
                    stepping: 0,
                }),
                ..Default::default()
            };
            assert_eq!(r.product(), want, "{fam:x}/{model:x}");
        }
        let mut v2 = AttestationReport {
            version: 2,
            cpuid: None,
            ..Default::default()
        };
        v2.chip_id[..8].copy_from_slice(&[1; 8]);
        assert_eq!(v2.product(), Some(Product::Turin));
        assert_eq!(v2.tcb_layout(), TcbLayout::Turin);
        // Unsigned algo refuses to verify.
        let mut u = p.clone();
        u.signature_algo = 0;
        assert!(matches!(
            u.verify(&pubk),
            Err(SigError::UnsupportedAlgo { value: 0, .. })
        ));
    }

    #[test]
    fn v4_reads_as_v3_layout() {
        let r = AttestationReport {
            version: 4,
            ..Default::default()
        };
        let b = r.to_bytes().unwrap();
        assert_eq!(&b[0x188..0x18B], &[0x19, 1, 1]);
        assert_eq!(AttestationReport::from_bytes(&b).unwrap(), r);
    }

    #[test]
    fn v5_round_trip() {
        let r = AttestationReport {
            version: 5,
            launch_mit_vector: Some(0x1122),
            current_mit_vector: Some(0x3344),
            cpuid: Some(Fms {
                family: 0x1A,
                model: 0x02,
                stepping: 0,
            }),
            ..Default::default()
        };
        let b = r.to_bytes().unwrap();
        assert_eq!(u64_at(&b, 0x1F8), 0x1122);
        assert_eq!(u64_at(&b, 0x200), 0x3344);
        assert_eq!(AttestationReport::from_bytes(&b).unwrap(), r);
        // The same bytes as v3 have non-zero reserved bytes at 0x1F8.
        let mut x = b;
        x[0] = 3;
        let e = AttestationReport::from_bytes(&x).unwrap_err();
        assert!(e.to_string().contains("reserved bytes 0x1F8..0x2A0"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let b = AttestationReport::default().to_bytes().unwrap();
        let e = AttestationReport::from_bytes(&b[..0x49F]).unwrap_err();
        assert_eq!(
            e,
            FormatError::Length {
                structure: S,
                expected: 0x4A0,
                got: 0x49F
            }
        );
        let cases: [(usize, u8, &str); 9] = [
            (0x00, 6, "ATTESTATION_REPORT.VERSION: 6"),
            (0x00, 1, "ATTESTATION_REPORT.VERSION: 1"),
            (0x48, 0x20, "ATTESTATION_REPORT.KEY_INFO"),
            (0x4C, 1, "reserved bytes 0x4C..0x50"),
            (0x18B, 1, "reserved bytes 0x18B..0x1A0"),
            (0x1EB, 1, "reserved bytes 0x1EB..0x1EC"),
            (0x1EF, 1, "reserved bytes 0x1EF..0x1F0"),
            (0x29F, 1, "reserved bytes 0x1F8..0x2A0"),
            (0x49F, 1, "ATTESTATION_REPORT.SIGNATURE reserved"),
        ];
        for (off, val, want) in cases {
            let mut x = b;
            x[off] = val;
            let e = AttestationReport::from_bytes(&x).unwrap_err();
            assert!(e.to_string().contains(want), "0x{off:X}: {e}");
        }
        // v2 has no FMS: bytes 0x188.. are reserved.
        let mut x = b;
        x[0] = 2;
        let e = AttestationReport::from_bytes(&x).unwrap_err();
        assert!(e.to_string().contains("reserved bytes 0x188..0x1A0"), "{e}");
    }

    #[test]
    fn encode_errors() {
        let bad = [
            AttestationReport {
                version: 2,
                ..Default::default()
            },
            AttestationReport {
                cpuid: None,
                ..Default::default()
            },
            AttestationReport {
                launch_mit_vector: Some(1),
                current_mit_vector: Some(1),
                ..Default::default()
            },
            AttestationReport {
                version: 5,
                ..Default::default()
            },
            AttestationReport {
                version: 6,
                ..Default::default()
            },
            AttestationReport {
                key_info: 1 << 5,
                ..Default::default()
            },
        ];
        for r in bad {
            let e = r.to_bytes().unwrap_err();
            assert!(e.to_string().starts_with("ATTESTATION_REPORT."), "{e}");
        }
        let k = p384_key();
        let mut r = AttestationReport {
            version: 1,
            ..Default::default()
        };
        assert!(matches!(r.sign(&k), Err(SigError::Format(_))));
    }
}
