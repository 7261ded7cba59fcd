//! The SEV-SNP guest policy (a `u64`, SNP ABI "Guest Policy"; notes §2.4).
//!
//! | bits | field |
//! |---|---|
//! | 7:0 | ABI_MINOR (minimum firmware ABI minor) |
//! | 15:8 | ABI_MAJOR (minimum firmware ABI major) |
//! | 16 | SMT allowed |
//! | 17 | reserved, must be 1 |
//! | 18 | MIGRATE_MA (migration agent allowed) |
//! | 19 | DEBUG allowed |
//! | 20 | SINGLE_SOCKET required |
//! | 21 | CXL_ALLOW (newer ABI) |
//! | 22 | MEM_AES_256_XTS required (newer ABI) |
//! | 23 | RAPL_DIS required (newer ABI) |
//! | 24 | CIPHERTEXT_HIDING required (newer ABI) |
//! | 25 | PAGE_SWAP_DISABLE (newer ABI) |
//! | 63:26 | reserved, must be 0 |
//!
//! [`SnpPolicy::check_launch`] applies the policy checks SNP_LAUNCH_START makes (reserved bit 17
//! set, reserved high bits clear, bits the firmware does not know clear, ABI minimum not above
//! the firmware's, SMT rule). FW 1.55 knows bits up to 20 only ([`FW_1_55_KNOWN_BITS`]).

use std::fmt;
use thiserror::Error;

/// Why a policy is rejected (by parsing or by the LAUNCH_START checks, status POLICY_FAILURE).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The policy string is not a number.
    #[error("SNP guest policy: {0:?} is not a valid hex (0x..) or decimal u64")]
    Invalid(String),
    /// Bit 17 (reserved, must be 1) is clear.
    #[error("SNP guest policy 0x{0:X}: reserved bit 17 must be 1")]
    Bit17Clear(u64),
    /// Reserved bits 63:26 are set.
    #[error("SNP guest policy 0x{policy:X}: reserved bits 63:26 must be 0 (set: 0x{bits:X})")]
    ReservedBits {
        /// The policy.
        policy: u64,
        /// The offending bits.
        bits: u64,
    },
    /// Bits the firmware does not support are set.
    #[error("SNP guest policy 0x{policy:X}: bits 0x{bits:X} are not supported by this firmware")]
    UnsupportedBits {
        /// The policy.
        policy: u64,
        /// The offending bits.
        bits: u64,
    },
    /// The policy requires a newer firmware ABI than the firmware has.
    #[error(
        "SNP guest policy: ABI_MAJOR.ABI_MINOR {need_major}.{need_minor} is above the firmware's \
         {fw_major}.{fw_minor}"
    )]
    AbiTooNew {
        /// Policy ABI_MAJOR.
        need_major: u8,
        /// Policy ABI_MINOR.
        need_minor: u8,
        /// Firmware API major.
        fw_major: u8,
        /// Firmware API minor.
        fw_minor: u8,
    },
    /// SMT is enabled on the host but the policy does not allow it.
    #[error("SNP guest policy 0x{0:X}: SMT bit 16 is clear but SMT is enabled on the platform")]
    SmtNotAllowed(u64),
}

/// The bits FW 1.55 (the AMD-ASPFW source) accepts: 0..=20 (ABI, SMT, 17, MA, DEBUG, SINGLE_SOCKET).
pub const FW_1_55_KNOWN_BITS: u64 = (1 << 21) - 1;
/// All bits defined by the current ABI (0..=25).
pub const ALL_KNOWN_BITS: u64 = (1 << 26) - 1;

/// What the platform looks like to the LAUNCH_START policy check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformPolicyView {
    /// Firmware API major.
    pub api_major: u8,
    /// Firmware API minor.
    pub api_minor: u8,
    /// Whether SMT is enabled on the host.
    pub smt_enabled: bool,
    /// Policy bits this firmware knows; any other set bit is rejected
    /// ([`FW_1_55_KNOWN_BITS`] or [`ALL_KNOWN_BITS`]).
    pub known_bits: u64,
}

/// An SEV-SNP guest policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnpPolicy(pub u64);

impl SnpPolicy {
    /// Bit 16: SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be 1.
    pub const RESERVED_1: u64 = 1 << 17;
    /// Bit 18: migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: single socket required.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// Bit 21: CXL may be populated with guest memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Bit 22: AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Bit 23: running average power limit (RAPL) must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Bit 24: ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Bit 25: page swap (SNP_PAGE_SWAP_OUT/IN) disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Bits 63:26: reserved, must be zero.
    pub const RESERVED_MBZ: u64 = !ALL_KNOWN_BITS;

    /// The named flag bits in bit order.
    pub const FLAG_NAMES: [(u64, &'static str); 10] = [
        (Self::SMT, "SMT"),
        (Self::RESERVED_1, "RESERVED_1"),
        (Self::MIGRATE_MA, "MIGRATE_MA"),
        (Self::DEBUG, "DEBUG"),
        (Self::SINGLE_SOCKET, "SINGLE_SOCKET"),
        (Self::CXL_ALLOW, "CXL_ALLOW"),
        (Self::MEM_AES_256_XTS, "MEM_AES_256_XTS"),
        (Self::RAPL_DIS, "RAPL_DIS"),
        (Self::CIPHERTEXT_HIDING, "CIPHERTEXT_HIDING"),
        (Self::PAGE_SWAP_DISABLE, "PAGE_SWAP_DISABLE"),
    ];

    /// The common default 0x30000 (SMT allowed + bit 17; QEMU's default).
    pub const DEFAULT: SnpPolicy = SnpPolicy(0x30000);

    /// Parses `0x…` hex or decimal; the value is not checked (see [`SnpPolicy::validate`]).
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let t = s.trim();
        let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u64::from_str_radix(h, 16)
        } else {
            t.parse::<u64>()
        };
        r.map(SnpPolicy)
            .map_err(|_| PolicyError::Invalid(s.to_string()))
    }

    /// Builds a policy from the ABI minimum and flag bits; bit 17 is always set.
    pub fn new(abi_major: u8, abi_minor: u8, flags: u64) -> Self {
        SnpPolicy(flags | Self::RESERVED_1 | (u64::from(abi_major) << 8) | u64::from(abi_minor))
    }

    /// ABI_MINOR (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
    /// ABI_MAJOR (bits 15:8).
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xFF) as u8
    }
    fn bit(self, b: u64) -> bool {
        self.0 & b != 0
    }
    /// Bit 16: SMT allowed.
    pub fn smt_allowed(self) -> bool {
        self.bit(Self::SMT)
    }
    /// Bit 17: the reserved must-be-one bit.
    pub fn reserved_bit17(self) -> bool {
        self.bit(Self::RESERVED_1)
    }
    /// Bit 18: migration agent allowed.
    pub fn migrate_ma(self) -> bool {
        self.bit(Self::MIGRATE_MA)
    }
    /// Bit 19: debugging allowed.
    pub fn debug_allowed(self) -> bool {
        self.bit(Self::DEBUG)
    }
    /// Bit 20: single socket required.
    pub fn single_socket(self) -> bool {
        self.bit(Self::SINGLE_SOCKET)
    }
    /// Bit 21: CXL allowed.
    pub fn cxl_allow(self) -> bool {
        self.bit(Self::CXL_ALLOW)
    }
    /// Bit 22: AES-256-XTS required.
    pub fn mem_aes_256_xts(self) -> bool {
        self.bit(Self::MEM_AES_256_XTS)
    }
    /// Bit 23: RAPL must be disabled.
    pub fn rapl_dis(self) -> bool {
        self.bit(Self::RAPL_DIS)
    }
    /// Bit 24: ciphertext hiding required.
    pub fn ciphertext_hiding(self) -> bool {
        self.bit(Self::CIPHERTEXT_HIDING)
    }
    /// Bit 25: page swap disabled.
    pub fn page_swap_disable(self) -> bool {
        self.bit(Self::PAGE_SWAP_DISABLE)
    }

    /// The structural checks any consumer should make: bit 17 set, bits 63:26 clear.
    pub fn validate(self) -> Result<(), PolicyError> {
        if !self.reserved_bit17() {
            return Err(PolicyError::Bit17Clear(self.0));
        }
        let bits = self.0 & Self::RESERVED_MBZ;
        if bits != 0 {
            return Err(PolicyError::ReservedBits {
                policy: self.0,
                bits,
            });
        }
        Ok(())
    }

    /// The policy checks SNP_LAUNCH_START makes, in the firmware's order: bit 17, SMT,
    /// ABI minimum (major.minor compared lexically), reserved and unknown bits.
    pub fn check_launch(self, platform: &PlatformPolicyView) -> Result<(), PolicyError> {
        if !self.reserved_bit17() {
            return Err(PolicyError::Bit17Clear(self.0));
        }
        if platform.smt_enabled && !self.smt_allowed() {
            return Err(PolicyError::SmtNotAllowed(self.0));
        }
        if (self.abi_major(), self.abi_minor()) > (platform.api_major, platform.api_minor) {
            return Err(PolicyError::AbiTooNew {
                need_major: self.abi_major(),
                need_minor: self.abi_minor(),
                fw_major: platform.api_major,
                fw_minor: platform.api_minor,
            });
        }
        let bits = self.0 & Self::RESERVED_MBZ;
        if bits != 0 {
            return Err(PolicyError::ReservedBits {
                policy: self.0,
                bits,
            });
        }
        let bits = self.0 & !platform.known_bits & !0xFFFF;
        if bits != 0 {
            return Err(PolicyError::UnsupportedBits {
                policy: self.0,
                bits,
            });
        }
        Ok(())
    }
}

impl fmt::Display for SnpPolicy {
    /// `0x30000 (ABI>=0.0 SMT RESERVED_1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "0x{:X} (ABI>={}.{}",
            self.0,
            self.abi_major(),
            self.abi_minor()
        )?;
        for (b, n) in Self::FLAG_NAMES {
            if self.0 & b != 0 {
                write!(f, " {n}")?;
            }
        }
        let rsv = self.0 & Self::RESERVED_MBZ;
        if rsv != 0 {
            write!(f, " RESERVED=0x{rsv:X}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(major: u8, minor: u8, smt: bool, known: u64) -> PlatformPolicyView {
        PlatformPolicyView {
            api_major: major,
            api_minor: minor,
            smt_enabled: smt,
            known_bits: known,
        }
    }

    #[test]
    fn accessors_each_bit() {
        let p = SnpPolicy(0x3FF_1234);
        assert_eq!(p.abi_minor(), 0x34);
        assert_eq!(p.abi_major(), 0x12);
        assert!(p.smt_allowed() && p.reserved_bit17() && p.migrate_ma() && p.debug_allowed());
        assert!(p.single_socket() && p.cxl_allow() && p.mem_aes_256_xts() && p.rapl_dis());
        assert!(p.ciphertext_hiding() && p.page_swap_disable());
        // Each accessor reads exactly its own bit.
        let getters: [fn(SnpPolicy) -> bool; 10] = [
            SnpPolicy::smt_allowed,
            SnpPolicy::reserved_bit17,
            SnpPolicy::migrate_ma,
            SnpPolicy::debug_allowed,
            SnpPolicy::single_socket,
            SnpPolicy::cxl_allow,
            SnpPolicy::mem_aes_256_xts,
            SnpPolicy::rapl_dis,
            SnpPolicy::ciphertext_hiding,
            SnpPolicy::page_swap_disable,
        ];
        for (i, g) in getters.iter().enumerate() {
            for bit in 16..26 {
                assert_eq!(
                    g(SnpPolicy(1 << bit)),
                    bit == 16 + i,
                    "getter {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn new_sets_bit17_and_abi() {
        let p = SnpPolicy::new(1, 51, SnpPolicy::SMT);
        assert_eq!(p.0, 0x3_0133);
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(
            SnpPolicy::DEFAULT.to_string(),
            "0x30000 (ABI>=0.0 SMT RESERVED_1)"
        );
    }

    #[test]
    fn parse_forms_and_error() {
        assert_eq!(SnpPolicy::parse("0x30000"), Ok(SnpPolicy(0x30000)));
        assert_eq!(SnpPolicy::parse(" 196608 "), Ok(SnpPolicy(0x30000)));
        assert!(matches!(
            SnpPolicy::parse("0xZZ"),
            Err(PolicyError::Invalid(_))
        ));
        assert!(matches!(SnpPolicy::parse(""), Err(PolicyError::Invalid(_))));
        assert!(matches!(
            SnpPolicy::parse("0x1_0000_0000_0000_0000"),
            Err(PolicyError::Invalid(_))
        ));
    }

    #[test]
    fn validate_errors() {
        assert_eq!(
            SnpPolicy(0x10000).validate(),
            Err(PolicyError::Bit17Clear(0x10000))
        );
        let e = SnpPolicy(0x30000 | 1 << 26).validate().unwrap_err();
        assert_eq!(
            e,
            PolicyError::ReservedBits {
                policy: 0x403_0000,
                bits: 1 << 26
            }
        );
        assert!(e.to_string().contains("reserved bits 63:26"));
        assert!(SnpPolicy(0x30000 | 1 << 63).validate().is_err());
    }

    #[test]
    fn launch_checks_in_order() {
        let genoa = fw(1, 55, true, FW_1_55_KNOWN_BITS);
        assert_eq!(SnpPolicy(0x30000).check_launch(&genoa), Ok(()));
        assert_eq!(SnpPolicy(0xB0000).check_launch(&genoa), Ok(()));
        // Bit 17 first, even with everything else wrong.
        assert_eq!(
            SnpPolicy(0xFFFF).check_launch(&genoa),
            Err(PolicyError::Bit17Clear(0xFFFF))
        );
        // SMT on, policy forbids it.
        assert_eq!(
            SnpPolicy(0x20000).check_launch(&genoa),
            Err(PolicyError::SmtNotAllowed(0x20000))
        );
        assert_eq!(
            SnpPolicy(0x20000).check_launch(&fw(1, 55, false, FW_1_55_KNOWN_BITS)),
            Ok(())
        );
        // ABI compared as (major, minor).
        assert_eq!(
            SnpPolicy::new(1, 55, SnpPolicy::SMT).check_launch(&genoa),
            Ok(())
        );
        assert_eq!(
            SnpPolicy::new(0, 200, SnpPolicy::SMT).check_launch(&genoa),
            Ok(())
        );
        assert_eq!(
            SnpPolicy::new(1, 56, SnpPolicy::SMT).check_launch(&genoa),
            Err(PolicyError::AbiTooNew {
                need_major: 1,
                need_minor: 56,
                fw_major: 1,
                fw_minor: 55
            })
        );
        assert!(matches!(
            SnpPolicy::new(2, 0, SnpPolicy::SMT).check_launch(&genoa),
            Err(PolicyError::AbiTooNew { .. })
        ));
        // Reserved high bits.
        assert!(matches!(
            SnpPolicy(0x30000 | 1 << 40).check_launch(&genoa),
            Err(PolicyError::ReservedBits { bits, .. }) if bits == 1 << 40
        ));
        // Newer-ABI bits on FW 1.55 vs a firmware that knows them.
        let p = SnpPolicy(0x30000 | SnpPolicy::CIPHERTEXT_HIDING);
        assert_eq!(
            p.check_launch(&genoa),
            Err(PolicyError::UnsupportedBits {
                policy: p.0,
                bits: SnpPolicy::CIPHERTEXT_HIDING
            })
        );
        assert_eq!(p.check_launch(&fw(1, 58, true, ALL_KNOWN_BITS)), Ok(()));
    }
}
