//! SEV firmware status codes (SEV API 0.24 §0), as returned in the mailbox.
//!
//! This is a firmware-local copy kept until `sev-proto::status` lands; the numeric
//! values are the spec's and must never change.

/// A status code returned by the SEV firmware for every command.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Status {
    Success = 0x00,
    InvalidPlatformState = 0x01,
    InvalidGuestState = 0x02,
    InvalidConfig = 0x03,
    InvalidLength = 0x04,
    AlreadyOwned = 0x05,
    InvalidCertificate = 0x06,
    PolicyFailure = 0x07,
    Inactive = 0x08,
    InvalidAddress = 0x09,
    BadSignature = 0x0A,
    BadMeasurement = 0x0B,
    AsidOwned = 0x0C,
    InvalidAsid = 0x0D,
    WbinvdRequired = 0x0E,
    DfFlushRequired = 0x0F,
    InvalidGuest = 0x10,
    InvalidCommand = 0x11,
    Active = 0x12,
    HwErrorPlatform = 0x13,
    HwErrorUnsafe = 0x14,
    Unsupported = 0x15,
    InvalidParam = 0x16,
    ResourceLimit = 0x17,
    SecureDataInvalid = 0x18,
}

const ALL: [Status; 25] = [
    Status::Success,
    Status::InvalidPlatformState,
    Status::InvalidGuestState,
    Status::InvalidConfig,
    Status::InvalidLength,
    Status::AlreadyOwned,
    Status::InvalidCertificate,
    Status::PolicyFailure,
    Status::Inactive,
    Status::InvalidAddress,
    Status::BadSignature,
    Status::BadMeasurement,
    Status::AsidOwned,
    Status::InvalidAsid,
    Status::WbinvdRequired,
    Status::DfFlushRequired,
    Status::InvalidGuest,
    Status::InvalidCommand,
    Status::Active,
    Status::HwErrorPlatform,
    Status::HwErrorUnsafe,
    Status::Unsupported,
    Status::InvalidParam,
    Status::ResourceLimit,
    Status::SecureDataInvalid,
];

impl Status {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Parse a numeric code; `None` for codes this model does not know.
    pub fn from_u32(code: u32) -> Option<Status> {
        ALL.get(code as usize).copied()
    }

    /// The spec's name, e.g. `"BAD_MEASUREMENT"`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::InvalidPlatformState => "INVALID_PLATFORM_STATE",
            Status::InvalidGuestState => "INVALID_GUEST_STATE",
            Status::InvalidConfig => "INVALID_CONFIG",
            Status::InvalidLength => "INVALID_LENGTH",
            Status::AlreadyOwned => "ALREADY_OWNED",
            Status::InvalidCertificate => "INVALID_CERTIFICATE",
            Status::PolicyFailure => "POLICY_FAILURE",
            Status::Inactive => "INACTIVE",
            Status::InvalidAddress => "INVALID_ADDRESS",
            Status::BadSignature => "BAD_SIGNATURE",
            Status::BadMeasurement => "BAD_MEASUREMENT",
            Status::AsidOwned => "ASID_OWNED",
            Status::InvalidAsid => "INVALID_ASID",
            Status::WbinvdRequired => "WBINVD_REQUIRED",
            Status::DfFlushRequired => "DF_FLUSH_REQUIRED",
            Status::InvalidGuest => "INVALID_GUEST",
            Status::InvalidCommand => "INVALID_COMMAND",
            Status::Active => "ACTIVE",
            Status::HwErrorPlatform => "HWERROR_PLATFORM",
            Status::HwErrorUnsafe => "HWERROR_UNSAFE",
            Status::Unsupported => "UNSUPPORTED",
            Status::InvalidParam => "INVALID_PARAM",
            Status::ResourceLimit => "RESOURCE_LIMIT",
            Status::SecureDataInvalid => "SECURE_DATA_INVALID",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(s.code() as usize, i);
            assert_eq!(Status::from_u32(i as u32), Some(*s));
        }
        assert_eq!(Status::from_u32(0x19), None);
        assert_eq!(Status::BadMeasurement.code(), 0x0B);
    }
}
