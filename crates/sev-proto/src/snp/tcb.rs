//! TCB_VERSION: the 8-byte (little-endian `u64`) security-version vector of the SNP platform
//! (notes §3.1). The byte layout depends on the product generation:
//!
//! | byte | Milan / Genoa | Turin (and later) |
//! |---|---|---|
//! | 0 | BOOT_LOADER | FMC |
//! | 1 | TEE | BOOT_LOADER |
//! | 2 | reserved | TEE |
//! | 3 | reserved | SNP |
//! | 4 | reserved | reserved |
//! | 5 | reserved | reserved |
//! | 6 | SNP | reserved |
//! | 7 | MICROCODE | MICROCODE |

use super::FormatError;
use std::fmt;

const STRUCTURE: &str = "TCB_VERSION";

/// Which byte layout a TCB_VERSION uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa (and Bergamo/Siena): BL, TEE, 4 reserved, SNP, µcode.
    MilanGenoa,
    /// Turin and later: FMC, BL, TEE, SNP, 3 reserved, µcode.
    Turin,
}

/// A decoded TCB_VERSION. `fmc` only exists in the Turin layout (zero otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcbVersion {
    /// FMC SPL (Turin only).
    pub fmc: u8,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes `raw` in `layout`. Reserved bytes must be zero; errors name the byte.
    pub fn decode(raw: u64, layout: TcbLayout) -> Result<Self, FormatError> {
        let b = raw.to_le_bytes();
        let reserved: &[usize] = match layout {
            TcbLayout::MilanGenoa => &[2, 3, 4, 5],
            TcbLayout::Turin => &[4, 5, 6],
        };
        for &i in reserved {
            if b[i] != 0 {
                return Err(FormatError::field(
                    STRUCTURE,
                    "reserved",
                    format!(
                        "byte {i} is 0x{:02X} in 0x{raw:016X} ({layout:?} layout), must be zero",
                        b[i]
                    ),
                ));
            }
        }
        Ok(match layout {
            TcbLayout::MilanGenoa => TcbVersion {
                fmc: 0,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            TcbLayout::Turin => TcbVersion {
                fmc: b[0],
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        })
    }

    /// Encodes in `layout`. A non-zero `fmc` cannot be represented in the Milan/Genoa layout.
    pub fn encode(&self, layout: TcbLayout) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        match layout {
            TcbLayout::MilanGenoa => {
                if self.fmc != 0 {
                    return Err(FormatError::field(
                        STRUCTURE,
                        "FMC",
                        format!("{} has no place in the Milan/Genoa layout", self.fmc),
                    ));
                }
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            TcbLayout::Turin => {
                b[0] = self.fmc;
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        Ok(u64::from_le_bytes(b))
    }

    /// True if every component of `self` is ≤ the same component of `other` (the firmware's
    /// rule for SNP_CONFIG reported TCB and MSG_KEY_REQ TCB_VERSION).
    pub fn le_componentwise(&self, other: &TcbVersion) -> bool {
        self.fmc <= other.fmc
            && self.bootloader <= other.bootloader
            && self.tee <= other.tee
            && self.snp <= other.snp
            && self.microcode <= other.microcode
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FMC {} BL {} TEE {} SNP {} uCode {}",
            self.fmc, self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_known_answer() {
        // Real Milan TCB from virtee's report_milan: bytes 03 00 00 00 00 00 08 73.
        let raw = u64::from_le_bytes([0x03, 0, 0, 0, 0, 0, 0x08, 0x73]);
        let t = TcbVersion::decode(raw, TcbLayout::MilanGenoa).unwrap();
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
        assert_eq!(t.encode(TcbLayout::MilanGenoa).unwrap(), raw);
        assert_eq!(t.to_string(), "FMC 0 BL 3 TEE 0 SNP 8 uCode 115");
    }

    #[test]
    fn turin_layout() {
        let t = TcbVersion {
            fmc: 1,
            bootloader: 2,
            tee: 3,
            snp: 4,
            microcode: 5,
        };
        let raw = t.encode(TcbLayout::Turin).unwrap();
        assert_eq!(raw.to_le_bytes(), [1, 2, 3, 4, 0, 0, 0, 5]);
        assert_eq!(TcbVersion::decode(raw, TcbLayout::Turin).unwrap(), t);
        // The same bytes read as Milan hit reserved bytes 2 and 3.
        let e = TcbVersion::decode(raw, TcbLayout::MilanGenoa).unwrap_err();
        assert!(
            e.to_string().contains("TCB_VERSION.reserved: byte 2"),
            "{e}"
        );
    }

    #[test]
    fn round_trip_all_components() {
        for layout in [TcbLayout::MilanGenoa, TcbLayout::Turin] {
            for v in [0u8, 1, 0x7F, 0xFF] {
                let t = TcbVersion {
                    fmc: if layout == TcbLayout::Turin { v } else { 0 },
                    bootloader: v,
                    tee: v.wrapping_add(1),
                    snp: v.wrapping_add(2),
                    microcode: v.wrapping_add(3),
                };
                let raw = t.encode(layout).unwrap();
                assert_eq!(TcbVersion::decode(raw, layout).unwrap(), t);
            }
        }
    }

    #[test]
    fn errors() {
        let t = TcbVersion {
            fmc: 1,
            ..Default::default()
        };
        let e = t.encode(TcbLayout::MilanGenoa).unwrap_err();
        assert!(e.to_string().starts_with("TCB_VERSION.FMC"), "{e}");
        let e = TcbVersion::decode(1 << 40, TcbLayout::Turin).unwrap_err();
        assert!(e.to_string().contains("byte 5"), "{e}");
    }

    #[test]
    fn componentwise_order() {
        let a = TcbVersion {
            fmc: 0,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        let mut b = a;
        assert!(a.le_componentwise(&b));
        b.snp = 7;
        assert!(!a.le_componentwise(&b));
        assert!(b.le_componentwise(&a));
        b.microcode = 200; // larger µcode does not make up for a smaller SNP
        assert!(!a.le_componentwise(&b));
    }
}
