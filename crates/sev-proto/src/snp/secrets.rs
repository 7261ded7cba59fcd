//! The SEV-SNP secrets page (4096 bytes) that SNP_LAUNCH_UPDATE type SECRETS writes into the
//! guest (notes §4.1):
//!
//! | off | size | field |
//! |---|---|---|
//! | 000 | 4 | VERSION (3 in FW 1.55; Linux needs ≥ 2) |
//! | 004 | 4 | bit 0 IMI_EN, bits 31:1 reserved |
//! | 008 | 4 | FMS (CPUID 1 EAX) |
//! | 00C | 4 | reserved |
//! | 010 | 16 | GOSVW |
//! | 020 | 4 × 32 | VMPCK0..VMPCK3 |
//! | 0A0 | 96 | guest-OS area (Linux: message sequence numbers, AP jump table) |
//! | 100 | 64 | VMSA register-protection tweak bitmap |
//! | 140 | 32 | reserved for the guest OS (SVSM information) |
//! | 160 | 4 | TSC_FACTOR |
//! | 164 | | reserved to 0xFFF |
//!
//! The VMPCKs are secrets: they are kept in a buffer that is zeroed on drop, `Debug` redacts them
//! and the encoded page comes back in a zeroing buffer too.

use super::{arr, expect_len, expect_zero, u32_at, FormatError};
use std::fmt;
use zeroize::Zeroizing;

/// Size of the secrets page.
pub const SECRETS_PAGE_SIZE: usize = 4096;
const S: &str = "SNP_SECRETS_PAGE";

/// A decoded secrets page.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsPage {
    /// VERSION.
    pub version: u32,
    /// IMI_EN.
    pub imi_en: bool,
    /// FMS (CPUID 1 EAX).
    pub fms: u32,
    /// GOSVW.
    pub gosvw: [u8; 16],
    /// VMPCK0..VMPCK3 (zeroed on drop).
    pub vmpck: Zeroizing<[[u8; 32]; 4]>,
    /// The guest-OS area at 0x0A0 (opaque here).
    pub os_area: [u8; 96],
    /// The VMSA tweak bitmap at 0x100.
    pub vmsa_tweak_bitmap: [u8; 64],
    /// The guest-OS reserved area at 0x140 (SVSM information; opaque here).
    pub os_reserved: [u8; 32],
    /// TSC_FACTOR.
    pub tsc_factor: u32,
}

impl fmt::Debug for SecretsPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsPage")
            .field("version", &self.version)
            .field("imi_en", &self.imi_en)
            .field("fms", &format_args!("0x{:X}", self.fms))
            .field("vmpck", &"[redacted]")
            .field("tsc_factor", &self.tsc_factor)
            .finish_non_exhaustive()
    }
}

impl SecretsPage {
    /// A version-3 page as the firmware writes it: the given keys and GOSVW, everything else
    /// zero.
    pub fn new(fms: u32, gosvw: [u8; 16], vmpck: [[u8; 32]; 4]) -> Self {
        SecretsPage {
            version: 3,
            imi_en: false,
            fms,
            gosvw,
            vmpck: Zeroizing::new(vmpck),
            os_area: [0; 96],
            vmsa_tweak_bitmap: [0; 64],
            os_reserved: [0; 32],
            tsc_factor: 0,
        }
    }

    /// Parses a page; reserved bytes (0x00C..0x010, 0x164..0x1000, IMI_EN bits 31:1) must be zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        expect_len(S, b, SECRETS_PAGE_SIZE)?;
        let flags = u32_at(b, 4);
        if flags >> 1 != 0 {
            return Err(FormatError::field(
                S,
                "IMI_EN",
                format!("0x{flags:X}: bits 31:1 must be zero"),
            ));
        }
        expect_zero(S, "reserved", b, 0x00C, 0x010)?;
        expect_zero(S, "reserved", b, 0x164, SECRETS_PAGE_SIZE)?;
        let mut vmpck = Zeroizing::new([[0u8; 32]; 4]);
        for (i, k) in vmpck.iter_mut().enumerate() {
            *k = arr(b, 0x20 + 32 * i);
        }
        Ok(SecretsPage {
            version: u32_at(b, 0),
            imi_en: flags == 1,
            fms: u32_at(b, 8),
            gosvw: arr(b, 0x10),
            vmpck,
            os_area: arr(b, 0xA0),
            vmsa_tweak_bitmap: arr(b, 0x100),
            os_reserved: arr(b, 0x140),
            tsc_factor: u32_at(b, 0x160),
        })
    }

    /// Encodes the page (in a buffer zeroed on drop).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut b = Zeroizing::new(vec![0u8; SECRETS_PAGE_SIZE]);
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.imi_en).to_le_bytes());
        b[8..0xC].copy_from_slice(&self.fms.to_le_bytes());
        b[0x10..0x20].copy_from_slice(&self.gosvw);
        for (i, k) in self.vmpck.iter().enumerate() {
            b[0x20 + 32 * i..0x40 + 32 * i].copy_from_slice(k);
        }
        b[0xA0..0x100].copy_from_slice(&self.os_area);
        b[0x100..0x140].copy_from_slice(&self.vmsa_tweak_bitmap);
        b[0x140..0x160].copy_from_slice(&self.os_reserved);
        b[0x160..0x164].copy_from_slice(&self.tsc_factor.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> SecretsPage {
        let mut p = SecretsPage::new(0xA00F11, [7; 16], [[1; 32], [2; 32], [3; 32], [4; 32]]);
        p.os_area[0] = 9;
        p.vmsa_tweak_bitmap[63] = 0x80;
        p.os_reserved[31] = 5;
        p.tsc_factor = 100;
        p
    }

    #[test]
    fn layout_and_round_trip() {
        let p = page();
        let b = p.to_bytes();
        assert_eq!(&b[0..12], &[3, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x0F, 0xA0, 0]);
        assert_eq!(&b[0x10..0x20], &[7; 16]);
        assert_eq!(&b[0x20..0x40], &[1; 32]);
        assert_eq!(&b[0x80..0xA0], &[4; 32]);
        assert_eq!(b[0xA0], 9);
        assert_eq!(b[0x13F], 0x80);
        assert_eq!(b[0x15F], 5);
        assert_eq!(&b[0x160..0x164], &[100, 0, 0, 0]);
        assert!(b[0x164..].iter().all(|&x| x == 0));
        assert_eq!(SecretsPage::from_bytes(&b).unwrap(), p);
    }

    #[test]
    fn debug_redacts_keys() {
        let s = format!("{:?}", page());
        assert!(s.contains("[redacted]"), "{s}");
        assert!(!s.contains("[1, 1"), "{s}");
    }

    #[test]
    fn errors() {
        let b = page().to_bytes();
        assert_eq!(
            SecretsPage::from_bytes(&b[..4095]).unwrap_err(),
            FormatError::Length {
                structure: S,
                expected: 4096,
                got: 4095
            }
        );
        for (off, want) in [
            (4, "SNP_SECRETS_PAGE.IMI_EN"),
            (0x0C, "SNP_SECRETS_PAGE.reserved"),
            (0x164, "SNP_SECRETS_PAGE.reserved"),
            (0xFFF, "SNP_SECRETS_PAGE.reserved"),
        ] {
            let mut x = b.to_vec();
            x[off] = 2;
            let e = SecretsPage::from_bytes(&x).unwrap_err();
            assert!(e.to_string().starts_with(want), "0x{off:X}: {e}");
        }
        let mut x = b.to_vec();
        x[4] = 1;
        assert!(SecretsPage::from_bytes(&x).unwrap().imi_en);
    }
}
