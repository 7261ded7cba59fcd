//! SEV-SNP guest messages (SNP_GUEST_REQUEST; notes §4.2): the 0x60-byte header, AES-256-GCM
//! with a VMPCK, and the MSG_REPORT_REQ/RSP and MSG_KEY_REQ/RSP payloads.
//!
//! Header: `00 AUTHTAG\[32\] (GCM tag in the first 16) · 20 u64 MSG_SEQNO · 28 reserved\[8\] ·
//! 30 u8 ALGO (1 = AES-256-GCM) · 31 u8 HDR_VERSION (1) · 32 u16 HDR_SIZE (0x60) · 34 u8 MSG_TYPE
//! · 35 u8 MSG_VERSION · 36 u16 MSG_SIZE · 38 reserved\[4\] · 3C u8 MSG_VMPCK · 3D..5F reserved`.
//!
//! Crypto: key = VMPCK\[MSG_VMPCK\]; IV = MSG_SEQNO as 8 little-endian bytes ‖ 4 zero bytes;
//! AAD = header bytes 0x30..0x60; ciphertext = payload (same length). AES-GCM is OpenSSL's; the
//! tag check is OpenSSL's (constant time). Known answer: `tests/data/snp/msg_vector.txt`
//! (Python `cryptography`, script beside it).

use super::report::{AttestationReport, REPORT_SIZE};
use super::{arr, expect_len, expect_zero, u32_at, u64_at, FormatError};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use thiserror::Error;
use zeroize::Zeroizing;

/// Header size.
pub const HEADER_SIZE: usize = 0x60;
/// Largest payload in one 4 KiB message page.
pub const MAX_PAYLOAD: usize = 4096 - HEADER_SIZE;
/// ALGO value for AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;

/// Message types (requests are odd, the response is request + 1).
pub mod msg_type {
    /// MSG_CPUID_REQ.
    pub const CPUID_REQ: u8 = 1;
    /// MSG_KEY_REQ.
    pub const KEY_REQ: u8 = 3;
    /// MSG_KEY_RSP.
    pub const KEY_RSP: u8 = 4;
    /// MSG_REPORT_REQ.
    pub const REPORT_REQ: u8 = 5;
    /// MSG_REPORT_RSP.
    pub const REPORT_RSP: u8 = 6;
    /// MSG_TSC_INFO_RSP (the highest defined type).
    pub const TSC_INFO_RSP: u8 = 18;
}

const H: &str = "SNP_MSG_HDR";

/// Failure to seal or open a message.
#[derive(Debug, Error)]
pub enum MsgError {
    /// A malformed header or payload.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The GCM tag does not verify (wrong key, sequence number, header or ciphertext).
    #[error("SNP_MSG: AES-256-GCM authentication failed")]
    AuthFailed,
    /// OpenSSL failed.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// A guest message header (without the tag, which [`seal`] / [`open`] handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHeader {
    /// AUTHTAG (GCM tag).
    pub auth_tag: [u8; 16],
    /// MSG_SEQNO.
    pub seqno: u64,
    /// MSG_TYPE.
    pub msg_type: u8,
    /// MSG_VERSION.
    pub msg_version: u8,
    /// MSG_SIZE (payload bytes).
    pub msg_size: u16,
    /// MSG_VMPCK (0..=3).
    pub vmpck: u8,
}

impl MsgHeader {
    /// Parses the 0x60-byte header; checks ALGO, HDR_VERSION, HDR_SIZE, MSG_TYPE, MSG_SIZE,
    /// MSG_VMPCK and every reserved byte.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        expect_len(H, b, HEADER_SIZE)?;
        expect_zero(H, "AUTHTAG", b, 0x10, 0x20)?;
        expect_zero(H, "reserved", b, 0x28, 0x30)?;
        expect_zero(H, "reserved", b, 0x38, 0x3C)?;
        expect_zero(H, "reserved", b, 0x3D, HEADER_SIZE)?;
        let bad = |f: &'static str, r: String| Err(FormatError::field(H, f, r));
        if b[0x30] != ALGO_AES_256_GCM {
            return bad("ALGO", format!("{} is not 1 (AES-256-GCM)", b[0x30]));
        }
        if b[0x31] != 1 {
            return bad("HDR_VERSION", format!("{} is not 1", b[0x31]));
        }
        let hdr_size = u16::from_le_bytes(arr(b, 0x32));
        if usize::from(hdr_size) != HEADER_SIZE {
            return bad("HDR_SIZE", format!("0x{hdr_size:X} is not 0x60"));
        }
        let msg_type = b[0x34];
        if msg_type == 0 || msg_type > msg_type::TSC_INFO_RSP {
            return bad(
                "MSG_TYPE",
                format!("{msg_type} is not a message type (1..=18)"),
            );
        }
        let msg_size = u16::from_le_bytes(arr(b, 0x36));
        if msg_size == 0 || usize::from(msg_size) > MAX_PAYLOAD {
            return bad(
                "MSG_SIZE",
                format!("{msg_size} is not in 1..={MAX_PAYLOAD}"),
            );
        }
        if b[0x3C] > 3 {
            return bad("MSG_VMPCK", format!("{} is not 0..=3", b[0x3C]));
        }
        Ok(MsgHeader {
            auth_tag: arr(b, 0),
            seqno: u64_at(b, 0x20),
            msg_type,
            msg_version: b[0x35],
            msg_size,
            vmpck: b[0x3C],
        })
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..16].copy_from_slice(&self.auth_tag);
        b[0x20..0x28].copy_from_slice(&self.seqno.to_le_bytes());
        b[0x30] = ALGO_AES_256_GCM;
        b[0x31] = 1;
        b[0x32..0x34].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
        b[0x34] = self.msg_type;
        b[0x35] = self.msg_version;
        b[0x36..0x38].copy_from_slice(&self.msg_size.to_le_bytes());
        b[0x3C] = self.vmpck;
        b
    }
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Encrypts `payload` into a full message (header ‖ ciphertext) with the 32-byte VMPCK `key`.
pub fn seal(
    key: &[u8; 32],
    seqno: u64,
    msg_type: u8,
    msg_version: u8,
    vmpck: u8,
    payload: &[u8],
) -> Result<Vec<u8>, MsgError> {
    let msg_size = u16::try_from(payload.len())
        .ok()
        .filter(|&n| n > 0 && usize::from(n) <= MAX_PAYLOAD)
        .ok_or_else(|| {
            FormatError::field(
                H,
                "MSG_SIZE",
                format!("{} is not in 1..={MAX_PAYLOAD}", payload.len()),
            )
        })?;
    let mut h = MsgHeader {
        auth_tag: [0; 16],
        seqno,
        msg_type,
        msg_version,
        msg_size,
        vmpck,
    };
    // Validate the fields the same way a receiver will.
    MsgHeader::from_bytes(&h.to_bytes())?;
    let aad = h.to_bytes();
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv(seqno)),
        &aad[0x30..],
        payload,
        &mut h.auth_tag,
    )?;
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Parses and decrypts a message (header ‖ ciphertext, possibly followed by page padding).
/// The payload is returned in a buffer that is zeroed on drop.
pub fn open(key: &[u8; 32], msg: &[u8]) -> Result<(MsgHeader, Zeroizing<Vec<u8>>), MsgError> {
    let hb = msg.get(..HEADER_SIZE).ok_or(FormatError::Length {
        structure: H,
        expected: HEADER_SIZE,
        got: msg.len(),
    })?;
    let h = MsgHeader::from_bytes(hb)?;
    let end = HEADER_SIZE + usize::from(h.msg_size);
    let ct = msg.get(HEADER_SIZE..end).ok_or_else(|| {
        FormatError::field(
            H,
            "MSG_SIZE",
            format!(
                "{} payload bytes but only {} follow the header",
                h.msg_size,
                msg.len() - HEADER_SIZE
            ),
        )
    })?;
    let pt = decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv(h.seqno)),
        &hb[0x30..],
        ct,
        &h.auth_tag,
    )
    .map_err(|_| MsgError::AuthFailed)?;
    Ok((h, Zeroizing::new(pt)))
}

/// MSG_REPORT_REQ (0x60 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportReq {
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// VMPL.
    pub vmpl: u32,
    /// KEY_SEL (0 = VLEK if loaded else VCEK, 1 = VCEK, 2 = VLEK).
    pub key_sel: u8,
}

/// Size of MSG_REPORT_REQ.
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Size of MSG_REPORT_RSP.
pub const REPORT_RSP_SIZE: usize = 0x20 + REPORT_SIZE;

impl ReportReq {
    /// Parses the request (KEY_SEL 3 and any MBZ bit are errors).
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        const S: &str = "MSG_REPORT_REQ";
        expect_len(S, b, REPORT_REQ_SIZE)?;
        let w = u32_at(b, 0x44);
        if w >> 2 != 0 {
            return Err(FormatError::field(
                S,
                "KEY_SEL",
                format!("0x{w:X}: bits 31:2 must be zero"),
            ));
        }
        if w == 3 {
            return Err(FormatError::field(S, "KEY_SEL", "3 is reserved"));
        }
        expect_zero(S, "reserved", b, 0x48, REPORT_REQ_SIZE)?;
        Ok(ReportReq {
            report_data: arr(b, 0),
            vmpl: u32_at(b, 0x40),
            key_sel: w as u8,
        })
    }

    /// Encodes the request.
    pub fn to_bytes(&self) -> [u8; REPORT_REQ_SIZE] {
        let mut b = [0u8; REPORT_REQ_SIZE];
        b[..64].copy_from_slice(&self.report_data);
        b[0x40..0x44].copy_from_slice(&self.vmpl.to_le_bytes());
        b[0x44..0x48].copy_from_slice(&u32::from(self.key_sel & 3).to_le_bytes());
        b
    }
}

/// MSG_REPORT_RSP (0x4C0 bytes): STATUS, REPORT_SIZE and, on success, the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRsp {
    /// STATUS (0 = success; 0x16 INVALID_PARAM; 0x27 INVALID_KEY).
    pub status: u32,
    /// The report, when STATUS is 0.
    pub report: Option<AttestationReport>,
}

impl ReportRsp {
    /// Parses the response; with STATUS 0 REPORT_SIZE must be 0x4A0 and the report must parse.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        const S: &str = "MSG_REPORT_RSP";
        expect_len(S, b, REPORT_RSP_SIZE)?;
        expect_zero(S, "reserved", b, 0x08, 0x20)?;
        let status = u32_at(b, 0);
        let size = u32_at(b, 4) as usize;
        if status != 0 {
            return Ok(ReportRsp {
                status,
                report: None,
            });
        }
        if size != REPORT_SIZE {
            return Err(FormatError::field(
                S,
                "REPORT_SIZE",
                format!("0x{size:X}, expected 0x4A0"),
            ));
        }
        Ok(ReportRsp {
            status,
            report: Some(AttestationReport::from_bytes(&b[0x20..])?),
        })
    }

    /// Encodes the response (an error response has REPORT_SIZE 0 and a zero report area).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut b = vec![0u8; REPORT_RSP_SIZE];
        b[..4].copy_from_slice(&self.status.to_le_bytes());
        if let Some(r) = &self.report {
            b[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            b[0x20..].copy_from_slice(&r.to_bytes()?);
        }
        Ok(b)
    }
}

/// MSG_KEY_REQ (v1 0x20 bytes; v2 0x28 adds LAUNCH_MIT_VECTOR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyReq {
    /// ROOT_KEY_SELECT (false = VCEK/VLEK, true = VMRK).
    pub root_key_select: bool,
    /// KEY_SEL (bits 2:1).
    pub key_sel: u8,
    /// GUEST_FIELD_SELECT.
    pub guest_field_select: u64,
    /// VMPL.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// TCB_VERSION.
    pub tcb_version: u64,
    /// LAUNCH_MIT_VECTOR (v2 only).
    pub launch_mit_vector: Option<u64>,
}

impl KeyReq {
    /// Parses a v1 (0x20) or v2 (0x28) request; unknown GUEST_FIELD_SELECT bits (6.. for v1,
    /// 7.. for v2), KEY_SEL 3 and MBZ bits are errors.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        const S: &str = "MSG_KEY_REQ";
        let v2 = match b.len() {
            0x20 => false,
            0x28 => true,
            n => {
                return Err(FormatError::Length {
                    structure: S,
                    expected: 0x20,
                    got: n,
                })
            }
        };
        let w = u32_at(b, 0);
        if w >> 3 != 0 {
            return Err(FormatError::field(
                S,
                "ROOT_KEY_SELECT/KEY_SEL",
                format!("0x{w:X}: bits 31:3 must be zero"),
            ));
        }
        let key_sel = ((w >> 1) & 3) as u8;
        if key_sel == 3 {
            return Err(FormatError::field(S, "KEY_SEL", "3 is reserved"));
        }
        expect_zero(S, "reserved", b, 4, 8)?;
        let gfs = u64_at(b, 8);
        let known = if v2 { 0x7F } else { 0x3F };
        if gfs & !known != 0 {
            return Err(FormatError::field(
                S,
                "GUEST_FIELD_SELECT",
                format!("unknown bits 0x{:X}", gfs & !known),
            ));
        }
        Ok(KeyReq {
            root_key_select: w & 1 != 0,
            key_sel,
            guest_field_select: gfs,
            vmpl: u32_at(b, 0x10),
            guest_svn: u32_at(b, 0x14),
            tcb_version: u64_at(b, 0x18),
            launch_mit_vector: v2.then(|| u64_at(b, 0x20)),
        })
    }

    /// Encodes the request (0x28 bytes if `launch_mit_vector` is set, else 0x20).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![
            0u8;
            if self.launch_mit_vector.is_some() {
                0x28
            } else {
                0x20
            }
        ];
        let w = u32::from(self.root_key_select) | (u32::from(self.key_sel & 3) << 1);
        b[..4].copy_from_slice(&w.to_le_bytes());
        b[8..0x10].copy_from_slice(&self.guest_field_select.to_le_bytes());
        b[0x10..0x14].copy_from_slice(&self.vmpl.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&self.tcb_version.to_le_bytes());
        if let Some(m) = self.launch_mit_vector {
            b[0x20..0x28].copy_from_slice(&m.to_le_bytes());
        }
        b
    }
}

/// MSG_KEY_RSP (0x40 bytes). The derived key is zeroed on drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRsp {
    /// STATUS.
    pub status: u32,
    /// DERIVED_KEY.
    pub derived_key: Zeroizing<[u8; 32]>,
}

impl KeyRsp {
    /// Parses the response.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        const S: &str = "MSG_KEY_RSP";
        expect_len(S, b, 0x40)?;
        expect_zero(S, "reserved", b, 4, 0x20)?;
        Ok(KeyRsp {
            status: u32_at(b, 0),
            derived_key: Zeroizing::new(arr(b, 0x20)),
        })
    }

    /// Encodes the response (in a buffer zeroed on drop).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut b = Zeroizing::new(vec![0u8; 0x40]);
        b[..4].copy_from_slice(&self.status.to_le_bytes());
        b[0x20..].copy_from_slice(&self.derived_key[..]);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector() -> Vec<u8> {
        let t = include_str!("../../tests/data/snp/msg_vector.txt");
        hex::decode(t.trim().strip_prefix("message ").unwrap()).unwrap()
    }

    fn req() -> ReportReq {
        let mut report_data = [0u8; 64];
        for (i, b) in report_data.iter_mut().enumerate() {
            *b = i as u8;
        }
        ReportReq {
            report_data,
            vmpl: 0,
            key_sel: 0,
        }
    }

    #[test]
    fn report_req_known_answer() {
        let m = seal(&[0; 32], 1, msg_type::REPORT_REQ, 1, 0, &req().to_bytes()).unwrap();
        assert_eq!(hex::encode(&m), hex::encode(vector()));
        let (h, pt) = open(&[0; 32], &vector()).unwrap();
        assert_eq!(
            (h.seqno, h.msg_type, h.msg_version, h.msg_size, h.vmpck),
            (1, 5, 1, 0x60, 0)
        );
        assert_eq!(ReportReq::from_bytes(&pt).unwrap(), req());
        // Page padding after the payload is ignored.
        let mut page = vector();
        page.resize(4096, 0);
        assert!(open(&[0; 32], &page).is_ok());
    }

    #[test]
    fn tampering_fails_authentication() {
        let v = vector();
        // Tag, seqno, every AAD byte position that still parses, ciphertext.
        for off in [0, 15, 0x20, 0x35, 0x60, 0xBF] {
            let mut x = v.clone();
            x[off] ^= 1;
            assert!(
                matches!(open(&[0; 32], &x), Err(MsgError::AuthFailed)),
                "flip at 0x{off:X}"
            );
        }
        let mut k = [0u8; 32];
        k[31] = 1;
        assert!(matches!(open(&k, &v), Err(MsgError::AuthFailed)));
    }

    #[test]
    fn header_errors_name_the_field() {
        let v = vector();
        let cases: [(usize, u8, &str); 11] = [
            (0x10, 1, "SNP_MSG_HDR.AUTHTAG"),
            (0x28, 1, "SNP_MSG_HDR.reserved"),
            (0x30, 2, "SNP_MSG_HDR.ALGO"),
            (0x31, 2, "SNP_MSG_HDR.HDR_VERSION"),
            (0x32, 0x70, "SNP_MSG_HDR.HDR_SIZE"),
            (0x34, 0, "SNP_MSG_HDR.MSG_TYPE"),
            (0x34, 19, "SNP_MSG_HDR.MSG_TYPE"),
            (0x37, 0x10, "SNP_MSG_HDR.MSG_SIZE"),
            (0x38, 1, "SNP_MSG_HDR.reserved"),
            (0x3C, 4, "SNP_MSG_HDR.MSG_VMPCK"),
            (0x5F, 1, "SNP_MSG_HDR.reserved"),
        ];
        for (off, val, want) in cases {
            let mut x = v.clone();
            x[off] = val;
            let e = open(&[0; 32], &x).unwrap_err();
            assert!(e.to_string().starts_with(want), "0x{off:X}: {e}");
        }
        let e = open(&[0; 32], &v[..0x5F]).unwrap_err();
        assert!(e.to_string().contains("SNP_MSG_HDR: length is 95"), "{e}");
        let e = open(&[0; 32], &v[..0x80]).unwrap_err();
        assert!(e.to_string().contains("only 32 follow"), "{e}");
        assert!(seal(&[0; 32], 1, 5, 1, 0, &[]).is_err());
        assert!(seal(&[0; 32], 1, 5, 1, 0, &[0; 4097]).is_err());
        assert!(seal(&[0; 32], 1, 5, 1, 4, &[0; 16])
            .unwrap_err()
            .to_string()
            .contains("MSG_VMPCK"));
        assert!(seal(&[0; 32], 1, 0, 1, 0, &[0; 16])
            .unwrap_err()
            .to_string()
            .contains("MSG_TYPE"));
    }

    #[test]
    fn report_req_rsp_layouts() {
        let mut b = req().to_bytes();
        b[0x44] = 3;
        assert!(ReportReq::from_bytes(&b)
            .unwrap_err()
            .to_string()
            .contains("KEY_SEL: 3 is reserved"));
        b[0x44] = 4;
        assert!(ReportReq::from_bytes(&b)
            .unwrap_err()
            .to_string()
            .contains("bits 31:2"));
        let mut b = req().to_bytes();
        b[0x5F] = 1;
        assert!(ReportReq::from_bytes(&b)
            .unwrap_err()
            .to_string()
            .starts_with("MSG_REPORT_REQ.reserved"));
        assert!(ReportReq::from_bytes(&b[..0x5F]).is_err());

        let rsp = ReportRsp {
            status: 0,
            report: Some(AttestationReport::default()),
        };
        let b = rsp.to_bytes().unwrap();
        assert_eq!(b.len(), 0x4C0);
        assert_eq!(u32_at(&b, 4), 0x4A0);
        assert_eq!(ReportRsp::from_bytes(&b).unwrap(), rsp);
        let err = ReportRsp {
            status: 0x16,
            report: None,
        };
        assert_eq!(
            ReportRsp::from_bytes(&err.to_bytes().unwrap()).unwrap(),
            err
        );
        let mut x = b.clone();
        x[4] = 0;
        assert!(ReportRsp::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .contains("REPORT_SIZE"));
        let mut x = b.clone();
        x[0x10] = 1;
        assert!(ReportRsp::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("MSG_REPORT_RSP.reserved"));
        let mut x = b;
        x[0x20] = 9; // report VERSION 9
        assert!(ReportRsp::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .contains("ATTESTATION_REPORT.VERSION"));
    }

    #[test]
    fn key_req_rsp_layouts() {
        let k = KeyReq {
            root_key_select: true,
            key_sel: 2,
            guest_field_select: 0x3F,
            vmpl: 1,
            guest_svn: 2,
            tcb_version: 0x7300_0000_0000_0003,
            launch_mit_vector: None,
        };
        let b = k.to_bytes();
        assert_eq!(b.len(), 0x20);
        assert_eq!(b[0], 0b101);
        assert_eq!(KeyReq::from_bytes(&b).unwrap(), k);
        let k2 = KeyReq {
            launch_mit_vector: Some(9),
            guest_field_select: 0x7F,
            ..k
        };
        assert_eq!(KeyReq::from_bytes(&k2.to_bytes()).unwrap(), k2);
        let mut x = b.clone();
        x[8] = 0x40; // GFS bit 6 is v2-only
        assert!(KeyReq::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .contains("GUEST_FIELD_SELECT"));
        let mut x = b.clone();
        x[0] = 0b110;
        assert!(KeyReq::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .contains("KEY_SEL: 3"));
        let mut x = b.clone();
        x[0] = 0b1000;
        assert!(KeyReq::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .contains("bits 31:3"));
        let mut x = b.clone();
        x[5] = 1;
        assert!(KeyReq::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("MSG_KEY_REQ.reserved"));
        assert!(KeyReq::from_bytes(&b[..0x1F]).is_err());

        let r = KeyRsp {
            status: 0,
            derived_key: Zeroizing::new([0x5A; 32]),
        };
        let b = r.to_bytes();
        assert_eq!(KeyRsp::from_bytes(&b).unwrap(), r);
        let mut x = b.to_vec();
        x[4] = 1;
        assert!(KeyRsp::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("MSG_KEY_RSP.reserved"));
        assert!(KeyRsp::from_bytes(&x[..0x3F]).is_err());
    }

    #[test]
    fn round_trip_through_seal_open() {
        let key = [0x33u8; 32];
        let rsp = ReportRsp {
            status: 0,
            report: Some(AttestationReport::default()),
        }
        .to_bytes()
        .unwrap();
        let m = seal(&key, 2, msg_type::REPORT_RSP, 1, 3, &rsp).unwrap();
        let (h, pt) = open(&key, &m).unwrap();
        assert_eq!(
            (h.seqno, h.msg_type, h.vmpck, usize::from(h.msg_size)),
            (2, 6, 3, rsp.len())
        );
        assert_eq!(&pt[..], &rsp[..]);
    }
}
