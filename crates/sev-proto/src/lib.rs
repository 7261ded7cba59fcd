//! `sev-proto`: AMD SEV (legacy SEV API 0.24 and SEV-ES) in bytes and math.
//!
//! This crate holds every SEV byte format and every piece of SEV cryptography that the three
//! parties of a launch (guest owner, platform firmware, VMM) share: guest policy, firmware status
//! codes, the SP 800-108 KDF, launch-session wrapping, certificates and chains, the launch digest
//! and measurement, secret packets, the OVMF footer table, QEMU's kernel-hashes table, the EFI
//! secret table and the SEV-ES initial VMSA. The SEV-SNP formats (policy, TCB, launch digest,
//! attestation report, ID block, certificates, guest messages) live in [`snp`].
//!
//! It is pure: it never does I/O of its own (readers are only ever passed in by the caller), it
//! contains no `unsafe`, and all cryptography goes through OpenSSL (the `openssl` crate).
//!
//! A launch channel end to end, owner and firmware side:
//!
//! ```
//! use openssl::{ec::{EcGroup, EcKey}, nid::Nid};
//! use sev_proto::cert::{Algo, SevCert, Usage};
//! use sev_proto::{measure, secret, session, GuestPolicy};
//!
//! // Platform: a PDH key and its certificate.
//! let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
//! let pdh_key = EcKey::generate(&group)?;
//! let pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh_key)?;
//! // Owner: a session for that PDH.
//! let policy = GuestPolicy::parse("0x1")?;
//! let owner = session::owner_session(&pdh, policy)?;
//! // Firmware (LAUNCH_START): opens the session to the same keys.
//! let keys = session::platform_open_session(
//!     &pdh_key, &owner.godh_cert.encode(), &owner.session.to_bytes(), policy)?;
//! assert_eq!(keys, owner.keys);
//! // Firmware (LAUNCH_MEASURE) and owner agree on the measurement.
//! let mut ld = measure::LaunchDigest::new();
//! ld.update(b"firmware image bytes");
//! let ld = ld.finish();
//! let m = measure::measurement(&keys.tik, 0, 24, 17, policy, &ld, &[7; 16]);
//! let lm = measure::LaunchMeasure { measure: m, mnonce: [7; 16] };
//! assert!(lm.verify(&owner.keys.tik, 0, 24, 17, policy, &ld));
//! // Owner: a secret packet; firmware (LAUNCH_SECRET) opens it.
//! let (hdr, ct) = secret::build_packet(&owner.keys, &m, [1; 16], 0, &[0x42; 32])?;
//! let pt = secret::open_packet(&keys, &m, &hdr, &ct, 32)?;
//! assert_eq!(&pt[..], &[0x42; 32][..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
pub mod snp;
pub mod status;
pub mod vmsa;

mod util;

pub use cert::{Algo, CaCert, CertError, SevCert, Usage};
pub use measure::{LaunchDigest, LaunchMeasure};
pub use policy::GuestPolicy;
pub use session::{SessionBlob, TransportKeys};
pub use status::Status;
