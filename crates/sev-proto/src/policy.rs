//! The SEV guest policy (SEV API §3, a `u32`), with every bit including the API-version fields.
//!
//! Bit layout: 0 NODBG, 1 NOKS, 2 ES, 3 NOSEND, 4 DOMAIN, 5 SEV, 6..=15 reserved (must be 0),
//! 16..=23 API_MAJOR, 24..=31 API_MINOR (the minimum firmware API the guest accepts).
//!
//! Unlike `sev::launch::sev::Policy::from(u32)`, this type keeps the API-version bits intact for
//! every value, including values >= 0x10000.
//!
//! Interop note (tested in `tests/sevctl_interop.rs`): sevctl 0.6.2 goes through that `sev`
//! crate conversion, so for a policy with API-version bits or reserved bits set, the policy MAC
//! in a sevctl-made session binds a different value (flags & 0x3F, API byte pair read as one
//! nibble-packed byte: 0x03010001 becomes 0x01000001) and a correct firmware rejects it with
//! BAD_MEASUREMENT. Sessions made with this crate bind the policy as given.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::IntErrorKind;
use thiserror::Error;

/// Errors from [`GuestPolicy::parse`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The policy string was empty.
    #[error("policy: empty string")]
    Empty,
    /// Not a valid hexadecimal (`0x..`) or decimal number.
    #[error("policy: {0:?} is not a valid hex (0x..) or decimal number")]
    Invalid(String),
    /// The number does not fit into 32 bits.
    #[error("policy: {0:?} does not fit into 32 bits")]
    TooLarge(String),
}

/// The SEV guest policy word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GuestPolicy(pub u32);

impl GuestPolicy {
    /// Bit 0: debugging of the guest is disallowed.
    pub const NODBG: u32 = 1 << 0;
    /// Bit 1: sharing keys with other guests is disallowed.
    pub const NOKS: u32 = 1 << 1;
    /// Bit 2: SEV-ES is required.
    pub const ES: u32 = 1 << 2;
    /// Bit 3: sending the guest to another platform is disallowed.
    pub const NOSEND: u32 = 1 << 3;
    /// Bit 4: the guest may only be sent to platforms in the same domain (same OCA).
    pub const DOMAIN: u32 = 1 << 4;
    /// Bit 5: the guest may only be sent to another SEV-capable (AMD-certified) platform.
    pub const SEV: u32 = 1 << 5;
    /// Bits 6..=15: reserved, must be zero.
    pub const RESERVED_MASK: u32 = 0x0000_FFC0;
    /// Bits 16..=23: minimum firmware API major version.
    pub const API_MAJOR_SHIFT: u32 = 16;
    /// Bits 24..=31: minimum firmware API minor version.
    pub const API_MINOR_SHIFT: u32 = 24;

    /// The named flag bits, in bit order, with their spec names.
    pub const FLAG_NAMES: [(u32, &'static str); 6] = [
        (Self::NODBG, "NODBG"),
        (Self::NOKS, "NOKS"),
        (Self::ES, "ES"),
        (Self::NOSEND, "NOSEND"),
        (Self::DOMAIN, "DOMAIN"),
        (Self::SEV, "SEV"),
    ];

    /// Builds a policy from flag bits and a minimum API version.
    pub fn new(flags: u32, api_major: u8, api_minor: u8) -> Self {
        GuestPolicy(
            (flags & 0xFFFF)
                | (u32::from(api_major) << Self::API_MAJOR_SHIFT)
                | (u32::from(api_minor) << Self::API_MINOR_SHIFT),
        )
    }

    /// The raw policy word.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// NODBG: DBG_DECRYPT / DBG_ENCRYPT are refused with POLICY_FAILURE.
    pub fn nodbg(self) -> bool {
        self.0 & Self::NODBG != 0
    }
    /// NOKS: key sharing with another guest is refused.
    pub fn noks(self) -> bool {
        self.0 & Self::NOKS != 0
    }
    /// ES: the guest is an SEV-ES guest.
    pub fn es(self) -> bool {
        self.0 & Self::ES != 0
    }
    /// NOSEND: SEND_START is refused.
    pub fn nosend(self) -> bool {
        self.0 & Self::NOSEND != 0
    }
    /// DOMAIN: migration only to a platform with the same OCA.
    pub fn domain(self) -> bool {
        self.0 & Self::DOMAIN != 0
    }
    /// SEV: migration only to a platform with a valid AMD chain.
    pub fn sev(self) -> bool {
        self.0 & Self::SEV != 0
    }
    /// Minimum firmware API major version (bits 16..=23).
    pub fn api_major(self) -> u8 {
        (self.0 >> Self::API_MAJOR_SHIFT) as u8
    }
    /// Minimum firmware API minor version (bits 24..=31).
    pub fn api_minor(self) -> u8 {
        (self.0 >> Self::API_MINOR_SHIFT) as u8
    }
    /// The reserved bits 6..=15 that are set (must be 0 for LAUNCH_START with a GODH cert).
    pub fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED_MASK
    }
    /// True when the firmware API version `(major, minor)` satisfies this policy's minimum
    /// (compared lexically, as the firmware does).
    pub fn api_satisfied_by(self, major: u8, minor: u8) -> bool {
        (major, minor) >= (self.api_major(), self.api_minor())
    }

    /// Parses `0x`-prefixed hexadecimal or decimal; the value must fit into 32 bits.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty);
        }
        let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => (h, 16),
            None => (t, 10),
        };
        if digits.is_empty() || digits.starts_with('+') || digits.starts_with('-') {
            return Err(ParseError::Invalid(s.to_string()));
        }
        u32::from_str_radix(digits, radix)
            .map(GuestPolicy)
            .map_err(|e| match e.kind() {
                IntErrorKind::PosOverflow => ParseError::TooLarge(s.to_string()),
                _ => ParseError::Invalid(s.to_string()),
            })
    }
}

impl std::str::FromStr for GuestPolicy {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<u32> for GuestPolicy {
    fn from(v: u32) -> Self {
        GuestPolicy(v)
    }
}

impl From<GuestPolicy> for u32 {
    fn from(p: GuestPolicy) -> u32 {
        p.0
    }
}

/// Formats as `0x00000005 (NODBG|ES, api>=0.0)`; reserved bits show as `RESERVED=0x..`.
impl fmt::Display for GuestPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x} (", self.0)?;
        let mut names: Vec<String> = Self::FLAG_NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| (*n).to_string())
            .collect();
        if self.reserved_bits() != 0 {
            names.push(format!("RESERVED={:#x}", self.reserved_bits()));
        }
        if names.is_empty() {
            f.write_str("none")?;
        } else {
            f.write_str(&names.join("|"))?;
        }
        write!(f, ", api>={}.{})", self.api_major(), self.api_minor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let p = GuestPolicy(0x3F);
        assert!(p.nodbg() && p.noks() && p.es() && p.nosend() && p.domain() && p.sev());
        let p = GuestPolicy(0x5);
        assert!(p.nodbg() && !p.noks() && p.es() && !p.nosend());
        assert_eq!(p.reserved_bits(), 0);
        assert_eq!(GuestPolicy(0xFFC0).reserved_bits(), 0xFFC0);
        assert_eq!(GuestPolicy(0x40).reserved_bits(), 0x40);
    }

    #[test]
    fn api_fields_above_0x10000() {
        // major 0x01, minor 0x28 (= api 1.40), flags NODBG|NOKS.
        let p = GuestPolicy(0x2801_0003);
        assert_eq!(p.api_major(), 1);
        assert_eq!(p.api_minor(), 40);
        assert!(p.nodbg() && p.noks() && !p.es());
        assert_eq!(GuestPolicy::new(3, 1, 40), p);
        assert_eq!(GuestPolicy(0x0001_0000).api_major(), 1);
        assert_eq!(GuestPolicy(0x0001_0000).api_minor(), 0);
        assert_eq!(GuestPolicy(0xFF00_0000).api_minor(), 0xFF);
        assert!(p.api_satisfied_by(1, 40));
        assert!(p.api_satisfied_by(2, 0));
        assert!(!p.api_satisfied_by(1, 39));
        assert!(!p.api_satisfied_by(0, 255));
    }

    #[test]
    fn parse() {
        assert_eq!(GuestPolicy::parse("0x5").unwrap(), GuestPolicy(5));
        assert_eq!(GuestPolicy::parse("0X05").unwrap(), GuestPolicy(5));
        assert_eq!(GuestPolicy::parse("5").unwrap(), GuestPolicy(5));
        assert_eq!(GuestPolicy::parse(" 65537 ").unwrap(), GuestPolicy(0x10001));
        assert_eq!(
            GuestPolicy::parse("0xffffffff").unwrap(),
            GuestPolicy(u32::MAX)
        );
        assert_eq!(
            GuestPolicy::parse("4294967295").unwrap(),
            GuestPolicy(u32::MAX)
        );
        assert!(matches!(
            GuestPolicy::parse("0x100000000"),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(
            GuestPolicy::parse("4294967296"),
            Err(ParseError::TooLarge(_))
        ));
        assert_eq!(GuestPolicy::parse(""), Err(ParseError::Empty));
        for bad in ["0x", "0xg", "abc", "-1", "+1", "0x-1", "1.0"] {
            assert!(
                matches!(GuestPolicy::parse(bad), Err(ParseError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            GuestPolicy(5).to_string(),
            "0x00000005 (NODBG|ES, api>=0.0)"
        );
        assert_eq!(GuestPolicy(0).to_string(), "0x00000000 (none, api>=0.0)");
        assert_eq!(
            GuestPolicy(0x1801_0041).to_string(),
            "0x18010041 (NODBG|RESERVED=0x40, api>=1.24)"
        );
    }
}
