//! `sev-proto`: AMD SEV (legacy SEV API 0.24 and SEV-ES) in bytes and math.
//!
//! This crate holds every SEV byte format and every piece of SEV cryptography that the three
//! parties of a launch (guest owner, platform firmware, VMM) share: guest policy, firmware status
//! codes, the SP 800-108 KDF, launch-session wrapping, certificates and chains, the launch digest
//! and measurement, secret packets, the OVMF footer table, QEMU's kernel-hashes table, the EFI
//! secret table and the SEV-ES initial VMSA.
//!
//! It is pure: it never does I/O of its own (readers are only ever passed in by the caller), it
//! contains no `unsafe`, and all cryptography goes through OpenSSL (the `openssl` crate).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attestation;
pub mod cert;
pub mod kdf;
pub mod kernel_hashes;
pub mod measure;
pub mod ovmf;
pub mod policy;
pub mod secret;
pub mod secret_table;
pub mod session;
pub mod status;
pub mod vmsa;

mod util;

pub use cert::{Algo, CaCert, CertError, SevCert, Usage};
pub use measure::{LaunchDigest, LaunchMeasure};
pub use policy::GuestPolicy;
pub use session::{SessionBlob, TransportKeys};
pub use status::Status;
