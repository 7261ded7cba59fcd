//! SEV firmware status codes (`SEV_RET_*`), including the SNP-era codes, with names and
//! one-line meanings.

use std::fmt;

macro_rules! statuses {
    ($( $variant:ident = $code:literal, $name:literal, $desc:literal; )*) => {
        /// A SEV firmware status code, as returned in the mailbox/command status.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Status {
            $(
                #[doc = $desc]
                $variant = $code,
            )*
        }

        impl Status {
            /// Every known status, in code order.
            pub const ALL: &'static [Status] = &[$(Status::$variant),*];

            /// The status for a raw code, or `None` for an unknown code.
            pub fn from_u32(code: u32) -> Option<Status> {
                match code {
                    $($code => Some(Status::$variant),)*
                    _ => None,
                }
            }

            /// The spec name without the `SEV_RET_` prefix, e.g. `"BAD_MEASUREMENT"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Status::$variant => $name,)*
                }
            }

            /// A one-line meaning.
            pub fn description(self) -> &'static str {
                match self {
                    $(Status::$variant => $desc,)*
                }
            }

            /// Looks a status up by its spec name (with or without the `SEV_RET_` prefix,
            /// case-insensitive).
            pub fn from_name(name: &str) -> Option<Status> {
                let n = name.trim();
                let n = n
                    .strip_prefix("SEV_RET_")
                    .or_else(|| n.strip_prefix("sev_ret_"))
                    .unwrap_or(n);
                Status::ALL
                    .iter()
                    .copied()
                    .find(|s| s.name().eq_ignore_ascii_case(n))
            }
        }
    };
}

statuses! {
    Success = 0x00, "SUCCESS", "The command completed successfully.";
    InvalidPlatformState = 0x01, "INVALID_PLATFORM_STATE", "The platform is in the wrong state for this command.";
    InvalidGuestState = 0x02, "INVALID_GUEST_STATE", "The guest is in the wrong state for this command.";
    InvalidConfig = 0x03, "INVALID_CONFIG", "The platform configuration (e.g. INIT flags) is invalid.";
    InvalidLength = 0x04, "INVALID_LENGTH", "A buffer is too small or has an invalid length.";
    AlreadyOwned = 0x05, "ALREADY_OWNED", "The platform is already owned by an external owner.";
    InvalidCertificate = 0x06, "INVALID_CERTIFICATE", "A certificate is invalid or failed validation.";
    PolicyFailure = 0x07, "POLICY_FAILURE", "The guest policy forbids this operation.";
    Inactive = 0x08, "INACTIVE", "The guest is not active (no ASID bound).";
    InvalidAddress = 0x09, "INVALID_ADDRESS", "An address is invalid or misaligned.";
    BadSignature = 0x0A, "BAD_SIGNATURE", "A signature failed to verify.";
    BadMeasurement = 0x0B, "BAD_MEASUREMENT", "A MAC (wrap, policy or measurement) did not match.";
    AsidOwned = 0x0C, "ASID_OWNED", "The ASID is already owned by another guest.";
    InvalidAsid = 0x0D, "INVALID_ASID", "The ASID is out of range for this guest.";
    WbinvdRequired = 0x0E, "WBINVD_REQUIRED", "WBINVD must be executed on all cores before DF_FLUSH.";
    DfFlushRequired = 0x0F, "DF_FLUSH_REQUIRED", "DF_FLUSH must be issued before the ASID can be reused.";
    InvalidGuest = 0x10, "INVALID_GUEST", "The guest handle is invalid.";
    InvalidCommand = 0x11, "INVALID_COMMAND", "The command ID is unknown.";
    Active = 0x12, "ACTIVE", "The guest is still active (deactivate first).";
    HwerrorPlatform = 0x13, "HWERROR_PLATFORM", "A hardware error occurred; the platform is not usable.";
    HwerrorUnsafe = 0x14, "HWERROR_UNSAFE", "An unsafe hardware error occurred.";
    Unsupported = 0x15, "UNSUPPORTED", "The feature or command is not supported.";
    InvalidParam = 0x16, "INVALID_PARAM", "A command parameter is invalid.";
    ResourceLimit = 0x17, "RESOURCE_LIMIT", "A firmware resource (e.g. guest slots) is exhausted.";
    SecureDataInvalid = 0x18, "SECURE_DATA_INVALID", "Persistent secure data failed its integrity check.";
    InvalidPageSize = 0x19, "INVALID_PAGE_SIZE", "SNP: the page size is invalid for this operation.";
    InvalidPageState = 0x1A, "INVALID_PAGE_STATE", "SNP: the page is in the wrong RMP state.";
    InvalidMdataEntry = 0x1B, "INVALID_MDATA_ENTRY", "SNP: a swap metadata entry is invalid.";
    InvalidPageOwner = 0x1C, "INVALID_PAGE_OWNER", "SNP: the page is owned by someone else.";
    AeadOflow = 0x1D, "AEAD_OFLOW", "SNP: the AEAD message counter overflowed.";
    RbModeExited = 0x1F, "RB_MODE_EXITED", "The ring-buffer mode was exited.";
    RmpInitRequired = 0x20, "RMP_INIT_REQUIRED", "SNP: the RMP must be initialised first.";
    BadSvn = 0x21, "BAD_SVN", "SNP: the security version number is too low.";
    BadVersion = 0x22, "BAD_VERSION", "The firmware version is not acceptable.";
    ShutdownRequired = 0x23, "SHUTDOWN_REQUIRED", "SHUTDOWN must be issued before this command.";
    UpdateFailed = 0x24, "UPDATE_FAILED", "The firmware update failed.";
    RestoreRequired = 0x25, "RESTORE_REQUIRED", "A restore is required before continuing.";
    RmpInitFailed = 0x26, "RMP_INIT_FAILED", "SNP: RMP initialisation failed.";
    InvalidKey = 0x27, "INVALID_KEY", "The key is invalid.";
}

impl Status {
    /// The raw numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// True for [`Status::Success`].
    pub fn is_success(self) -> bool {
        self == Status::Success
    }
}

/// Formats as `BAD_MEASUREMENT (0x0b)`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.code())
    }
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        s.code()
    }
}

impl TryFrom<u32> for Status {
    type Error = u32;
    /// Fails with the unknown code itself.
    fn try_from(v: u32) -> Result<Self, u32> {
        Status::from_u32(v).ok_or(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip_and_are_complete() {
        // 0x00..=0x27 minus the unassigned 0x1E.
        let expected: Vec<u32> = (0..=0x27).filter(|c| *c != 0x1E).collect();
        let got: Vec<u32> = Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(got, expected);
        for s in Status::ALL {
            assert_eq!(Status::from_u32(s.code()), Some(*s));
            assert_eq!(Status::from_name(s.name()), Some(*s));
            assert!(!s.description().is_empty());
        }
        assert_eq!(Status::from_u32(0x1E), None);
        assert_eq!(Status::from_u32(0x28), None);
        assert_eq!(Status::try_from(0x99), Err(0x99));
    }

    #[test]
    fn names() {
        assert_eq!(Status::BadMeasurement.code(), 0x0B);
        assert_eq!(Status::BadMeasurement.name(), "BAD_MEASUREMENT");
        assert_eq!(Status::BadMeasurement.to_string(), "BAD_MEASUREMENT (0x0b)");
        assert_eq!(
            Status::from_name("SEV_RET_POLICY_FAILURE"),
            Some(Status::PolicyFailure)
        );
        assert_eq!(
            Status::from_name("invalid_length"),
            Some(Status::InvalidLength)
        );
        assert_eq!(Status::InvalidKey.code(), 0x27);
        assert_eq!(Status::RbModeExited.code(), 0x1F);
    }
}
