//! The crate's error type: a firmware status, or a failure around the firmware
//! (state file, device, crypto library).

use sev_proto::status::Status;
use std::path::PathBuf;

/// Any failure of a firmware operation.
#[derive(Debug, thiserror::Error)]
pub enum FwError {
    /// The firmware (soft or real) refused the command with a status code.
    #[error("SEV command {cmd} failed: {status}")]
    Status {
        /// The command's spec name, e.g. `"LAUNCH_START"`.
        cmd: &'static str,
        /// The firmware's answer.
        status: Status,
    },
    /// The firmware returned a status because of a failure around it (e.g. the soft
    /// firmware could not write its state file); `cause` says what failed.
    #[error("SEV command {cmd} failed: {status}: {cause}")]
    StatusCause {
        /// The command's spec name, e.g. `"PDH_GEN"`.
        cmd: &'static str,
        /// The firmware's answer.
        status: Status,
        /// What made the firmware fail (not a `#[source]`: it is already in the message).
        cause: Box<FwError>,
    },
    /// Writing a state file failed (the named file, the OS error).
    #[error("writing {path}: {source}")]
    Write {
        /// The file being replaced.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The soft firmware's persistent state file is unreadable, corrupt or partial.
    #[error("SEV state file {path}: {reason}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on a named file or device.
    #[error("{path}: {source}")]
    Io {
        /// The file or device.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An ioctl failed without a firmware status (e.g. the kernel refused it).
    #[error("ioctl {what} failed: {source}")]
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A KVM ioctl failed; `detail` says what was asked and what the refusal means here
    /// (e.g. a capability this KVM lacks).
    #[error("ioctl {what} failed: {source}: {detail}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// The arguments and what the refusal means.
        detail: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The crypto library failed.
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// Building, signing or parsing a SEV or AMD CA certificate failed (`sev-proto`).
    #[error("certificate: {0}")]
    Cert(#[from] sev_proto::cert::CertError),
    /// The firmware (through the kernel) answered with bytes that do not decode as what the
    /// command returns (a report, a certificate).
    #[error("SEV command {cmd} returned malformed data: {reason}")]
    BadReply {
        /// The command's spec name, e.g. `"ATTESTATION"`.
        cmd: &'static str,
        /// What does not decode, naming the structure and field.
        reason: String,
    },
    /// A caller-supplied argument was malformed (not a firmware status).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The host touched (read, wrote, RMPUPDATEd) a system-physical page the RMP does not let
    /// it touch (the soft SNP model's #PF / RMPUPDATE failure).
    #[error("RMP: {op} of sPA 0x{spa:x} refused: {reason}")]
    Rmp {
        /// What the host did (`"read"`, `"write"`, `"RMPUPDATE"`, `"PVALIDATE"`).
        op: &'static str,
        /// The page's system-physical address.
        spa: u64,
        /// Why (the page state, or the instruction's failure code).
        reason: String,
    },
    /// A structure given to the firmware does not decode (names the structure and field).
    #[error(transparent)]
    Format(#[from] sev_proto::snp::FormatError),
    /// A file or directory of the platform is unsafe or unusable (a symbolic link in place of
    /// the state file, a platform directory others can write, a special file...).
    #[error(transparent)]
    File(sevm_files::FileError),
}

impl From<sevm_files::FileError> for FwError {
    /// A write failure stays [`FwError::Write`] (naming the file and the OS error); anything
    /// else is [`FwError::File`].
    fn from(e: sevm_files::FileError) -> Self {
        match e {
            sevm_files::FileError::Write { path, source, .. } => FwError::Write { path, source },
            other => FwError::File(other),
        }
    }
}

impl FwError {
    /// The firmware status, if this error is one.
    pub fn status(&self) -> Option<Status> {
        match self {
            FwError::Status { status, .. } | FwError::StatusCause { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn st(cmd: &'static str, status: Status) -> Self {
        FwError::Status { cmd, status }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, FwError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_sev_proto_codes() {
        let e = FwError::st("LAUNCH_START", Status::BadMeasurement);
        assert_eq!(e.status(), Some(Status::BadMeasurement));
        assert_eq!(Status::BadMeasurement.code(), 0x0B);
        assert_eq!(Status::from_u32(0x10), Some(Status::InvalidGuest));
        assert_eq!(
            e.to_string(),
            "SEV command LAUNCH_START failed: BAD_MEASUREMENT (0x0b)"
        );
        let w = FwError::StatusCause {
            cmd: "PDH_GEN",
            status: Status::HwerrorPlatform,
            cause: Box::new(FwError::Write {
                path: "/d/sev-state.json".into(),
                source: std::io::Error::from_raw_os_error(28),
            }),
        };
        assert_eq!(w.status(), Some(Status::HwerrorPlatform));
        assert_eq!(
            w.to_string(),
            "SEV command PDH_GEN failed: HWERROR_PLATFORM (0x13): writing /d/sev-state.json: \
             No space left on device (os error 28)"
        );
        let c = FwError::from(sev_proto::cert::CertError::NoFreeSlot);
        assert_eq!(c.status(), None);
        assert!(c.to_string().starts_with("certificate: "), "{c}");
    }
}
