//! SEV-SNP certificates: the extended-report certificate table and the AMD X.509 extensions of
//! a VCEK / VLEK certificate (notes §3.3, §3.5).
//!
//! **Certificate table** (returned with an extended report): entries of 24 bytes
//! `00 GUID\[16\] · 10 u32 OFFSET (from the table start) · 14 u32 LENGTH`, ended by an all-zero
//! entry, then the certificate blobs. GUIDs are in RFC (big-endian, string) byte order.
//!
//! **VCEK extensions** (non-critical, arc 1.3.6.1.4.1.3704.1): `.1` structVersion INTEGER, `.2`
//! productName IA5String, `.3.1` blSPL, `.3.2` teeSPL, `.3.3` snpSPL, `.3.8` ucodeSPL, `.3.9`
//! fmcSPL (Turin) as INTEGER, `.4` hwID (raw CHIP_ID bytes, 64 or 8 on Turin), `.5` cspID
//! IA5String (VLEK). The certificate is parsed by OpenSSL; the extension values are read from
//! its DER with a small bounded DER reader (the `openssl` crate exposes no generic extension
//! accessor).

use super::report::AttestationReport;
use super::tcb::{TcbLayout, TcbVersion};
use super::{u32_at, FormatError};
use openssl::x509::{X509Ref, X509};
use uuid::Uuid;

/// GUID of the ARK entry.
pub const GUID_ARK: Uuid = uuid::uuid!("c0b406a4-a803-4952-9743-3fb6014cd0ae");
/// GUID of the ASK (and ASVK) entry.
pub const GUID_ASK: Uuid = uuid::uuid!("4ab7b379-bbac-4fe4-a02f-05aef327c782");
/// GUID of the VCEK entry.
pub const GUID_VCEK: Uuid = uuid::uuid!("63da758d-e664-4564-adc5-f4b93be8accd");
/// GUID of the VLEK entry.
pub const GUID_VLEK: Uuid = uuid::uuid!("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
/// GUID of the CRL entry (virtee).
pub const GUID_CRL: Uuid = uuid::uuid!("92f81bc3-5811-4d3d-97ff-d19f88dc67ea");

const ENTRY: usize = 24;
const T: &str = "CERT_TABLE";

/// One certificate-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertTableEntry {
    /// The entry GUID.
    pub guid: Uuid,
    /// The blob (usually a DER certificate).
    pub data: Vec<u8>,
}

/// Parses a certificate table. Errors: no terminator, an entry reaching past the buffer or
/// into the table itself, overlapping entries, empty entries, duplicate GUIDs.
pub fn parse_cert_table(b: &[u8]) -> Result<Vec<CertTableEntry>, FormatError> {
    let mut raw = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(e) = b.get(pos..pos + ENTRY) else {
            return Err(FormatError::field(
                T,
                "terminator",
                format!(
                    "no all-zero entry before the end of the {}-byte buffer",
                    b.len()
                ),
            ));
        };
        if e.iter().all(|&x| x == 0) {
            break;
        }
        let guid = Uuid::from_bytes(super::arr(e, 0));
        raw.push((guid, u32_at(e, 16) as usize, u32_at(e, 20) as usize));
        pos += ENTRY;
    }
    let table_end = pos + ENTRY;
    let mut out: Vec<CertTableEntry> = Vec::with_capacity(raw.len());
    for (i, &(guid, off, len)) in raw.iter().enumerate() {
        let name = |what: &str| format!("entry {i} ({guid}): {what}");
        if len == 0 {
            return Err(FormatError::field(T, "LENGTH", name("length is zero")));
        }
        let end = off
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| {
                FormatError::field(
                    T,
                    "OFFSET",
                    name(&format!(
                        "0x{off:X}+0x{len:X} is past the {}-byte buffer",
                        b.len()
                    )),
                )
            })?;
        if off < table_end {
            return Err(FormatError::field(
                T,
                "OFFSET",
                name(&format!(
                    "0x{off:X} is inside the table (which ends at 0x{table_end:X})"
                )),
            ));
        }
        for (j, &(g2, o2, l2)) in raw.iter().enumerate().take(i) {
            if off < o2 + l2 && o2 < end {
                return Err(FormatError::field(
                    T,
                    "OFFSET",
                    name(&format!("overlaps entry {j} ({g2})")),
                ));
            }
            if g2 == guid {
                return Err(FormatError::field(
                    T,
                    "GUID",
                    name(&format!("same GUID as entry {j}")),
                ));
            }
        }
        out.push(CertTableEntry {
            guid,
            data: b[off..end].to_vec(),
        });
    }
    Ok(out)
}

/// Encodes a certificate table: the entries, the zero terminator, then the blobs in order.
pub fn encode_cert_table(entries: &[CertTableEntry]) -> Result<Vec<u8>, FormatError> {
    let mut off = (entries.len() + 1) * ENTRY;
    let mut head = Vec::with_capacity(off);
    let mut blobs = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.data.is_empty() {
            return Err(FormatError::field(
                T,
                "LENGTH",
                format!("entry {i} ({}): empty", e.guid),
            ));
        }
        if entries[..i].iter().any(|p| p.guid == e.guid) {
            return Err(FormatError::field(
                T,
                "GUID",
                format!("entry {i} ({}): duplicate", e.guid),
            ));
        }
        let too_big =
            || FormatError::field(T, "OFFSET", format!("entry {i}: table larger than 4 GiB"));
        let o = u32::try_from(off).map_err(|_| too_big())?;
        let l = u32::try_from(e.data.len()).map_err(|_| too_big())?;
        head.extend_from_slice(e.guid.as_bytes());
        head.extend_from_slice(&o.to_le_bytes());
        head.extend_from_slice(&l.to_le_bytes());
        blobs.extend_from_slice(&e.data);
        off += e.data.len();
    }
    head.extend_from_slice(&[0; ENTRY]);
    head.extend_from_slice(&blobs);
    Ok(head)
}

// ---- DER (read only, bounded) ----

/// One DER element: tag, content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads one TLV at the start of `b`; returns it and the rest.
fn read_tlv<'a>(what: &'static str, b: &'a [u8]) -> Result<(Tlv<'a>, &'a [u8]), FormatError> {
    let bad = |r: &str| FormatError::field("VCEK", what, format!("bad DER: {r}"));
    let (&tag, rest) = b.split_first().ok_or_else(|| bad("truncated tag"))?;
    if tag & 0x1F == 0x1F {
        return Err(bad("multi-byte tags are not used in certificates"));
    }
    let (&l0, mut rest) = rest.split_first().ok_or_else(|| bad("truncated length"))?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7F);
        if n == 0 || n > 4 {
            return Err(bad("indefinite or oversized length"));
        }
        let lb = rest.get(..n).ok_or_else(|| bad("truncated length"))?;
        rest = &rest[n..];
        lb.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x))
    };
    let content = rest.get(..len).ok_or_else(|| bad("content past the end"))?;
    Ok((Tlv { tag, content }, &rest[len..]))
}

/// All children of a constructed element's content.
fn children<'a>(what: &'static str, mut b: &'a [u8]) -> Result<Vec<Tlv<'a>>, FormatError> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let (t, r) = read_tlv(what, b)?;
        v.push(t);
        b = r;
    }
    Ok(v)
}

/// (OID content bytes, extnValue) of one extension.
type RawExtension<'a> = (&'a [u8], &'a [u8]);

/// (OID content bytes, extnValue) for each extension of a DER certificate.
fn extensions(der: &[u8]) -> Result<Vec<RawExtension<'_>>, FormatError> {
    let (cert, _) = read_tlv("Certificate", der)?;
    let tbs = children("Certificate", cert.content)?;
    let tbs = tbs
        .first()
        .filter(|t| t.tag == 0x30)
        .ok_or_else(|| FormatError::field("VCEK", "tbsCertificate", "missing"))?;
    let Some(ext) = children("tbsCertificate", tbs.content)?
        .into_iter()
        .find(|t| t.tag == 0xA3)
    else {
        return Ok(Vec::new());
    };
    let (seq, _) = read_tlv("extensions", ext.content)?;
    let mut out = Vec::new();
    for e in children("extensions", seq.content)? {
        let parts = children("Extension", e.content)?;
        let oid = parts.first().filter(|t| t.tag == 0x06);
        let val = parts.last().filter(|t| t.tag == 0x04);
        match (oid, val) {
            (Some(o), Some(v)) => out.push((o.content, v.content)),
            _ => {
                return Err(FormatError::field(
                    "VCEK",
                    "Extension",
                    "not {OID, [critical], OCTET STRING}",
                ))
            }
        }
    }
    Ok(out)
}

/// DER of the AMD arc 1.3.6.1.4.1.3704.1 (OID content bytes).
const AMD_ARC: [u8; 8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01];

fn der_uint(field: &'static str, v: &[u8]) -> Result<u64, FormatError> {
    let (t, rest) = read_tlv(field, v)?;
    if t.tag != 0x02 || !rest.is_empty() || t.content.is_empty() {
        return Err(FormatError::field("VCEK", field, "not a DER INTEGER"));
    }
    if t.content[0] & 0x80 != 0 {
        return Err(FormatError::field("VCEK", field, "negative INTEGER"));
    }
    let c = if t.content.len() > 1 && t.content[0] == 0 {
        &t.content[1..]
    } else {
        t.content
    };
    if c.len() > 8 {
        return Err(FormatError::field(
            "VCEK",
            field,
            "INTEGER larger than 64 bits",
        ));
    }
    Ok(c.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

fn der_ia5(field: &'static str, v: &[u8]) -> Result<String, FormatError> {
    let (t, rest) = read_tlv(field, v)?;
    if t.tag != 0x16 || !rest.is_empty() || !t.content.is_ascii() {
        return Err(FormatError::field("VCEK", field, "not a DER IA5String"));
    }
    Ok(String::from_utf8_lossy(t.content).into_owned())
}

fn spl(field: &'static str, v: &[u8]) -> Result<u8, FormatError> {
    let n = der_uint(field, v)?;
    u8::try_from(n)
        .map_err(|_| FormatError::field("VCEK", field, format!("SPL {n} does not fit a TCB byte")))
}

/// The AMD extensions of a VCEK (or VLEK) certificate. Absent extensions are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcekExtensions {
    /// `.1` structVersion (0 Milan/Genoa, 1 Turin).
    pub struct_version: Option<u64>,
    /// `.2` productName (e.g. `Milan-B0`).
    pub product_name: Option<String>,
    /// `.3.1` blSPL.
    pub bl_spl: Option<u8>,
    /// `.3.2` teeSPL.
    pub tee_spl: Option<u8>,
    /// `.3.3` snpSPL.
    pub snp_spl: Option<u8>,
    /// `.3.8` ucodeSPL.
    pub ucode_spl: Option<u8>,
    /// `.3.9` fmcSPL (Turin).
    pub fmc_spl: Option<u8>,
    /// `.4` hwID: the CHIP_ID bytes (a DER OCTET STRING wrapper, as some fakes write, is removed).
    pub hw_id: Option<Vec<u8>>,
    /// `.5` cspID (VLEK only).
    pub csp_id: Option<String>,
}

impl VcekExtensions {
    /// Parses a DER certificate with OpenSSL, then reads its AMD extensions.
    pub fn from_der(der: &[u8]) -> Result<Self, FormatError> {
        let x = X509::from_der(der).map_err(|e| {
            FormatError::field("VCEK", "DER", format!("not an X.509 certificate: {e}"))
        })?;
        Self::from_x509(&x)
    }

    /// Reads the AMD extensions of a certificate.
    pub fn from_x509(cert: &X509Ref) -> Result<Self, FormatError> {
        let der = cert
            .to_der()
            .map_err(|e| FormatError::field("VCEK", "DER", e.to_string()))?;
        let mut v = VcekExtensions::default();
        for (oid, val) in extensions(&der)? {
            let Some(sub) = oid.strip_prefix(&AMD_ARC[..]) else {
                continue;
            };
            match sub {
                [0x01] => {
                    v.struct_version = Some(der_uint("structVersion (1.3.6.1.4.1.3704.1.1)", val)?)
                }
                [0x02] => {
                    v.product_name = Some(der_ia5("productName (1.3.6.1.4.1.3704.1.2)", val)?)
                }
                [0x03, 0x01] => v.bl_spl = Some(spl("blSPL (1.3.6.1.4.1.3704.1.3.1)", val)?),
                [0x03, 0x02] => v.tee_spl = Some(spl("teeSPL (1.3.6.1.4.1.3704.1.3.2)", val)?),
                [0x03, 0x03] => v.snp_spl = Some(spl("snpSPL (1.3.6.1.4.1.3704.1.3.3)", val)?),
                [0x03, 0x08] => v.ucode_spl = Some(spl("ucodeSPL (1.3.6.1.4.1.3704.1.3.8)", val)?),
                [0x03, 0x09] => v.fmc_spl = Some(spl("fmcSPL (1.3.6.1.4.1.3704.1.3.9)", val)?),
                [0x04] => {
                    let raw = if val.len() == 66 && val[0] == 0x04 && val[1] == 0x40 {
                        &val[2..]
                    } else {
                        val
                    };
                    v.hw_id = Some(raw.to_vec());
                }
                [0x05] => v.csp_id = Some(der_ia5("cspID (1.3.6.1.4.1.3704.1.5)", val)?),
                _ => {}
            }
        }
        Ok(v)
    }

    /// The TCB the certificate is for; every SPL of the layout must be present.
    pub fn tcb(&self, layout: TcbLayout) -> Result<TcbVersion, FormatError> {
        let need = |o: Option<u8>, f: &'static str| {
            o.ok_or_else(|| FormatError::field("VCEK", f, "extension missing"))
        };
        Ok(TcbVersion {
            fmc: match layout {
                TcbLayout::Turin => need(self.fmc_spl, "fmcSPL (1.3.6.1.4.1.3704.1.3.9)")?,
                TcbLayout::MilanGenoa => 0,
            },
            bootloader: need(self.bl_spl, "blSPL (1.3.6.1.4.1.3704.1.3.1)")?,
            tee: need(self.tee_spl, "teeSPL (1.3.6.1.4.1.3704.1.3.2)")?,
            snp: need(self.snp_spl, "snpSPL (1.3.6.1.4.1.3704.1.3.3)")?,
            microcode: need(self.ucode_spl, "ucodeSPL (1.3.6.1.4.1.3704.1.3.8)")?,
        })
    }

    /// Checks a report against this VCEK: REPORTED_TCB equals the certificate's TCB, and
    /// CHIP_ID equals hwID (when the certificate has one; Turin's 8-byte hwID is compared with
    /// CHIP_ID's first 8 bytes and the rest must be zero).
    pub fn check_report(&self, report: &AttestationReport) -> Result<(), FormatError> {
        let layout = report.tcb_layout();
        let want = self.tcb(layout)?;
        let got = report.decode_tcb(report.reported_tcb)?;
        if want != got {
            return Err(FormatError::field(
                "ATTESTATION_REPORT",
                "REPORTED_TCB",
                format!("{got} differs from the VCEK's {want}"),
            ));
        }
        if let Some(hw) = &self.hw_id {
            let n = hw.len().min(64);
            if hw.len() > 64
                || report.chip_id[..n] != hw[..]
                || report.chip_id[n..].iter().any(|&x| x != 0)
            {
                return Err(FormatError::field(
                    "ATTESTATION_REPORT",
                    "CHIP_ID",
                    "differs from the VCEK's hwID",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VCEK_MILAN: &[u8] = include_bytes!("../../tests/data/snp/vcek_milan.der");
    const VCEK_TURIN: &[u8] = include_bytes!("../../tests/data/snp/vcek_turin.der");

    fn milan_report() -> AttestationReport {
        let b = hex::decode(include_str!("../../tests/data/snp/report_milan.hex").trim()).unwrap();
        AttestationReport::from_bytes(&b).unwrap()
    }

    #[test]
    fn milan_vcek_extensions_match_report() {
        let v = VcekExtensions::from_der(VCEK_MILAN).unwrap();
        assert_eq!(v.struct_version, Some(0));
        assert_eq!(v.product_name.as_deref(), Some("Milan-B0"));
        let t = v.tcb(TcbLayout::MilanGenoa).unwrap();
        assert_eq!(
            t,
            TcbVersion {
                fmc: 0,
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115
            }
        );
        assert_eq!(v.hw_id.as_ref().map(Vec::len), Some(64));
        assert_eq!(v.csp_id, None);
        let r = milan_report();
        v.check_report(&r).unwrap();
        let mut bad = r.clone();
        bad.chip_id[63] ^= 1;
        assert!(v
            .check_report(&bad)
            .unwrap_err()
            .to_string()
            .contains("CHIP_ID"));
        let mut bad = r;
        bad.reported_tcb ^= 1;
        assert!(v
            .check_report(&bad)
            .unwrap_err()
            .to_string()
            .contains("REPORTED_TCB"));
    }

    #[test]
    fn turin_vcek_extensions() {
        let v = VcekExtensions::from_der(VCEK_TURIN).unwrap();
        assert_eq!(v.struct_version, Some(1));
        assert!(
            v.product_name.as_deref().unwrap_or("").starts_with("Turin"),
            "{:?}",
            v.product_name
        );
        assert_eq!(v.hw_id.as_ref().map(Vec::len), Some(8));
        assert!(v.fmc_spl.is_some());
        v.tcb(TcbLayout::Turin).unwrap();
    }

    #[test]
    fn milan_chain_signatures_verify() {
        let chain =
            X509::stack_from_pem(include_bytes!("../../tests/data/snp/cert_chain_milan")).unwrap();
        assert_eq!(chain.len(), 2);
        let (ask, ark) = (&chain[0], &chain[1]);
        let vcek = X509::from_der(VCEK_MILAN).unwrap();
        assert!(vcek.verify(&ask.public_key().unwrap()).unwrap());
        assert!(ask.verify(&ark.public_key().unwrap()).unwrap());
        assert!(ark.verify(&ark.public_key().unwrap()).unwrap());
        assert!(!vcek.verify(&ark.public_key().unwrap()).unwrap_or(false));
        // The ASK itself carries no AMD TCB extensions.
        assert_eq!(VcekExtensions::from_x509(ask).unwrap().bl_spl, None);
    }

    #[test]
    fn turin_chain_signatures_verify() {
        let chain =
            X509::stack_from_pem(include_bytes!("../../tests/data/snp/cert_chain_turin")).unwrap();
        assert_eq!(chain.len(), 2);
        let (ask, ark) = (&chain[0], &chain[1]);
        let vcek = X509::from_der(VCEK_TURIN).unwrap();
        assert!(vcek.verify(&ask.public_key().unwrap()).unwrap());
        assert!(ask.verify(&ark.public_key().unwrap()).unwrap());
        // The Milan ASK did not sign the Turin VCEK.
        let milan =
            X509::stack_from_pem(include_bytes!("../../tests/data/snp/cert_chain_milan")).unwrap();
        assert!(!vcek
            .verify(&milan[0].public_key().unwrap())
            .unwrap_or(false));
    }

    #[test]
    fn vcek_errors() {
        let e = VcekExtensions::from_der(&VCEK_MILAN[..100]).unwrap_err();
        assert!(e.to_string().starts_with("VCEK.DER"), "{e}");
        let e = VcekExtensions::default()
            .tcb(TcbLayout::MilanGenoa)
            .unwrap_err();
        assert!(e.to_string().contains("blSPL"), "{e}");
        let v = VcekExtensions::from_der(VCEK_MILAN).unwrap();
        assert!(v
            .tcb(TcbLayout::Turin)
            .unwrap_err()
            .to_string()
            .contains("fmcSPL"));
        assert!(der_uint("x", &[0x02, 0x01, 0x80])
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(der_uint("x", &[0x04, 0x01, 0x01]).is_err());
        assert!(der_uint("x", &[0x02, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(der_uint("x", &[0x02, 0x02, 0x00, 0xFF]).unwrap(), 255);
        assert!(spl("x", &[0x02, 0x02, 0x01, 0x00])
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        assert!(der_ia5("x", &[0x16, 0x01, 0xFF]).is_err());
        assert!(read_tlv("x", &[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
        assert!(read_tlv("x", &[0x30, 0x80]).is_err());
        assert!(read_tlv("x", &[0x30, 0x05, 1]).is_err());
        assert!(read_tlv("x", &[0x1F, 0x01, 0]).is_err());
        assert!(read_tlv("x", &[]).is_err());
    }

    fn entry(guid: Uuid, data: &[u8]) -> CertTableEntry {
        CertTableEntry {
            guid,
            data: data.to_vec(),
        }
    }

    #[test]
    fn cert_table_round_trip_and_layout() {
        let es = vec![
            entry(GUID_ARK, b"ark"),
            entry(GUID_ASK, b"askk"),
            entry(GUID_VCEK, VCEK_MILAN),
        ];
        let b = encode_cert_table(&es).unwrap();
        // RFC byte order: the string's first byte first.
        assert_eq!(&b[..4], &[0xc0, 0xb4, 0x06, 0xa4]);
        assert_eq!(u32_at(&b, 16), 96);
        assert_eq!(u32_at(&b, 20), 3);
        assert_eq!(&b[72..96], &[0; 24]);
        assert_eq!(parse_cert_table(&b).unwrap(), es);
        // Trailing padding (a page-sized buffer) is fine.
        let mut padded = b.clone();
        padded.resize(8192, 0);
        assert_eq!(parse_cert_table(&padded).unwrap(), es);
        assert_eq!(parse_cert_table(&[0; 24]).unwrap(), vec![]);
    }

    fn raw_table(entries: &[(Uuid, u32, u32)], total: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for (g, o, l) in entries {
            b.extend_from_slice(g.as_bytes());
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        b.extend_from_slice(&[0; 24]);
        b.resize(total.max(b.len()), 0xAB);
        b
    }

    #[test]
    fn cert_table_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                raw_table(&[(GUID_ARK, 72, 10)], 0)[..24].to_vec(),
                "CERT_TABLE.terminator",
            ),
            (
                raw_table(&[(GUID_ARK, 72, 10)], 80),
                "past the 80-byte buffer",
            ),
            (
                raw_table(&[(GUID_ARK, u32::MAX, u32::MAX)], 100),
                "past the",
            ),
            (raw_table(&[(GUID_ARK, 40, 10)], 100), "inside the table"),
            (raw_table(&[(GUID_ARK, 48, 0)], 100), "length is zero"),
            (
                raw_table(&[(GUID_ARK, 72, 10), (GUID_ASK, 81, 5)], 100),
                "overlaps entry 0",
            ),
            (
                raw_table(&[(GUID_ARK, 72, 10), (GUID_ARK, 82, 5)], 100),
                "same GUID as entry 0",
            ),
        ];
        for (b, want) in cases {
            let e = parse_cert_table(&b).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
            assert!(e.to_string().starts_with("CERT_TABLE."), "{e}");
        }
        assert!(encode_cert_table(&[entry(GUID_ARK, b"")]).is_err());
        assert!(encode_cert_table(&[entry(GUID_ARK, b"a"), entry(GUID_ARK, b"b")]).is_err());
    }
}
