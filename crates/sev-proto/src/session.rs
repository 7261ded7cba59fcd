//! The LAUNCH_START session: ECDH between the guest owner's GODH key and the platform's PDH,
//! the master secret, KEK/KIK, the wrapped transport keys (TEK ‖ TIK) and the policy MAC.
//!
//! The owner side builds a [`SessionBlob`] with [`owner_wrap`]; the firmware side opens it with
//! [`platform_unwrap`]. MACs are compared in constant time. Keys are zeroized on drop.

use crate::cert::{Algo, SevCert, Usage};
use crate::kdf::{kdf16, LABEL_KEK, LABEL_KIK, LABEL_MASTER_SECRET};
use crate::status::Status;
use crate::util::{aes128_ctr, array_at, hmac_sha256};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcKeyRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Errors of the session module.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The session buffer is not exactly 128 bytes.
    #[error("session blob: length is {0} bytes, expected exactly 128")]
    BadLength(usize),
    /// HMAC(KIK, wrap_tk) did not match `wrap_mac` (firmware: BAD_MEASUREMENT).
    #[error("session blob: wrap_mac does not match (wrong PDH/GODH pair, nonce or tampering)")]
    BadWrapMac,
    /// HMAC(TIK, policy) did not match `policy_mac` (firmware: BAD_MEASUREMENT).
    #[error("session blob: policy_mac does not match the policy")]
    BadPolicyMac,
    /// ECDH or the RNG failed (e.g. keys on different curves).
    #[error("OpenSSL (ECDH or RNG): {0}")]
    Crypto(String),
    /// The GODH certificate fails the LAUNCH_START sanity check (firmware: INVALID_CERTIFICATE).
    #[error("GODH certificate: {0}")]
    BadGodh(String),
}

impl SessionError {
    /// The firmware status this error maps to at LAUNCH_START.
    pub fn status(&self) -> Status {
        match self {
            SessionError::BadLength(_) => Status::InvalidLength,
            SessionError::BadWrapMac | SessionError::BadPolicyMac => Status::BadMeasurement,
            SessionError::Crypto(_) | SessionError::BadGodh(_) => Status::InvalidCertificate,
        }
    }
}

/// The 128-byte LAUNCH_START session buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionBlob {
    /// 0x00: nonce, the context of the master-secret KDF.
    pub nonce: [u8; 16],
    /// 0x10: TEK ‖ TIK encrypted with AES-128-CTR under KEK.
    pub wrap_tk: [u8; 32],
    /// 0x30: the CTR IV of `wrap_tk`.
    pub wrap_iv: [u8; 16],
    /// 0x40: HMAC-SHA256(KIK, wrap_tk).
    pub wrap_mac: [u8; 32],
    /// 0x60: HMAC-SHA256(TIK, LE32(policy)).
    pub policy_mac: [u8; 32],
}

impl fmt::Debug for SessionBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBlob")
            .field("nonce", &hex::encode(self.nonce))
            .field("wrap_tk", &hex::encode(self.wrap_tk))
            .field("wrap_iv", &hex::encode(self.wrap_iv))
            .field("wrap_mac", &hex::encode(self.wrap_mac))
            .field("policy_mac", &hex::encode(self.policy_mac))
            .finish()
    }
}

impl SessionBlob {
    /// Size of the encoded blob.
    pub const LEN: usize = 128;

    /// Encodes the blob (the `session.bin` format of sevctl, before base64).
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0x00..0x10].copy_from_slice(&self.nonce);
        b[0x10..0x30].copy_from_slice(&self.wrap_tk);
        b[0x30..0x40].copy_from_slice(&self.wrap_iv);
        b[0x40..0x60].copy_from_slice(&self.wrap_mac);
        b[0x60..0x80].copy_from_slice(&self.policy_mac);
        b
    }

    /// Decodes a blob; the input must be exactly 128 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SessionError> {
        if b.len() != Self::LEN {
            return Err(SessionError::BadLength(b.len()));
        }
        let bad = || SessionError::BadLength(b.len());
        Ok(SessionBlob {
            nonce: array_at(b, 0x00).ok_or_else(bad)?,
            wrap_tk: array_at(b, 0x10).ok_or_else(bad)?,
            wrap_iv: array_at(b, 0x30).ok_or_else(bad)?,
            wrap_mac: array_at(b, 0x40).ok_or_else(bad)?,
            policy_mac: array_at(b, 0x60).ok_or_else(bad)?,
        })
    }
}

/// The transport keys of a launch channel: TEK (encryption) and TIK (integrity).
/// Equality compares in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TransportKeys {
    /// Transport encryption key (AES-128).
    pub tek: [u8; 16],
    /// Transport integrity key (HMAC-SHA256 key).
    pub tik: [u8; 16],
}

impl PartialEq for TransportKeys {
    fn eq(&self, other: &Self) -> bool {
        // Both halves are always compared (no early exit on the TEK).
        let tek = openssl::memcmp::eq(&self.tek, &other.tek);
        let tik = openssl::memcmp::eq(&self.tik, &other.tik);
        tek & tik
    }
}

impl Eq for TransportKeys {}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportKeys { tek: <redacted>, tik: <redacted> }")
    }
}

impl TransportKeys {
    /// All-zero keys: what the firmware uses when LAUNCH_START has no GODH cert.
    pub fn zero() -> Self {
        TransportKeys {
            tek: [0; 16],
            tik: [0; 16],
        }
    }

    /// Fresh random keys from OpenSSL's CSPRNG.
    pub fn random() -> Result<Self, SessionError> {
        let mut k = TransportKeys::zero();
        openssl::rand::rand_bytes(&mut k.tek).map_err(|e| SessionError::Crypto(e.to_string()))?;
        openssl::rand::rand_bytes(&mut k.tik).map_err(|e| SessionError::Crypto(e.to_string()))?;
        Ok(k)
    }
}

/// The channel keys derived from the shared secret: KEK (wraps) and KIK (MACs the wrap).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChannelKeys {
    /// Master secret = KDF(Z, "sev-master-secret", nonce).
    pub master: [u8; 16],
    /// Key-encryption key = KDF(master, "sev-kek", "").
    pub kek: [u8; 16],
    /// Key-integrity key = KDF(master, "sev-kik", "").
    pub kik: [u8; 16],
}

impl fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelKeys { <redacted> }")
    }
}

/// Derives master secret, KEK and KIK from the ECDH shared secret `z` and the session nonce.
pub fn derive_channel_keys(z: &[u8], nonce: &[u8; 16]) -> ChannelKeys {
    let master = kdf16(z, LABEL_MASTER_SECRET, nonce);
    let kek = kdf16(&master[..], LABEL_KEK, b"");
    let kik = kdf16(&master[..], LABEL_KIK, b"");
    ChannelKeys {
        master: *master,
        kek: *kek,
        kik: *kik,
    }
}

/// ECDH on P-384: the x-coordinate of `priv · peer`, 48 bytes big-endian (OpenSSL's output).
pub fn ecdh_shared_secret(
    private: &EcKeyRef<Private>,
    peer: &EcKeyRef<Public>,
) -> Result<Zeroizing<Vec<u8>>, SessionError> {
    let e = |x: openssl::error::ErrorStack| SessionError::Crypto(x.to_string());
    let ours = PKey::from_ec_key(private.to_owned()).map_err(e)?;
    let theirs = PKey::from_ec_key(peer.to_owned()).map_err(e)?;
    let mut d = Deriver::new(&ours).map_err(e)?;
    d.set_peer(&theirs).map_err(e)?;
    let z = d.derive_to_vec().map_err(e)?;
    Ok(Zeroizing::new(z))
}

/// HMAC-SHA256(TIK, LE32(policy)).
pub fn policy_mac(tik: &[u8; 16], policy: u32) -> [u8; 32] {
    hmac_sha256(tik, &[&policy.to_le_bytes()])
}

/// Guest-owner side: wraps `keys` for the platform, binding them to `policy`.
pub fn owner_wrap(
    z: &[u8],
    nonce: &[u8; 16],
    iv: &[u8; 16],
    keys: &TransportKeys,
    policy: impl Into<u32>,
) -> SessionBlob {
    let ck = derive_channel_keys(z, nonce);
    let mut plain = Zeroizing::new([0u8; 32]);
    plain[..16].copy_from_slice(&keys.tek);
    plain[16..].copy_from_slice(&keys.tik);
    let ct = aes128_ctr(&ck.kek, iv, &plain[..]);
    let mut wrap_tk = [0u8; 32];
    wrap_tk.copy_from_slice(&ct);
    SessionBlob {
        nonce: *nonce,
        wrap_tk,
        wrap_iv: *iv,
        wrap_mac: hmac_sha256(&ck.kik, &[&wrap_tk]),
        policy_mac: policy_mac(&keys.tik, policy.into()),
    }
}

/// Firmware side: checks the wrap MAC, unwraps TEK ‖ TIK and checks the policy MAC.
///
/// Both MAC failures map to the firmware status BAD_MEASUREMENT.
pub fn platform_unwrap(
    z: &[u8],
    blob: &SessionBlob,
    policy: impl Into<u32>,
) -> Result<TransportKeys, SessionError> {
    let ck = derive_channel_keys(z, &blob.nonce);
    let mac = hmac_sha256(&ck.kik, &[&blob.wrap_tk]);
    if !openssl::memcmp::eq(&mac, &blob.wrap_mac) {
        return Err(SessionError::BadWrapMac);
    }
    let plain = Zeroizing::new(aes128_ctr(&ck.kek, &blob.wrap_iv, &blob.wrap_tk));
    let mut keys = TransportKeys::zero();
    keys.tek.copy_from_slice(&plain[..16]);
    keys.tik.copy_from_slice(&plain[16..32]);
    let pmac = policy_mac(&keys.tik, policy.into());
    if !openssl::memcmp::eq(&pmac, &blob.policy_mac) {
        return Err(SessionError::BadPolicyMac);
    }
    Ok(keys)
}

/// What the guest owner sends to LAUNCH_START to open the secret channel: the GODH
/// certificate and the session blob (QEMU's `dh-cert-file` and `session-file`). The two go
/// together; a launch without an owner has neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOwner {
    /// The owner's Diffie-Hellman certificate (usage PDH, ECDH P-384).
    pub godh: SevCert,
    /// The session blob, wrapped for the platform's PDH and bound to the policy.
    pub session: SessionBlob,
}

impl LaunchOwner {
    /// Decodes the two owner files' bytes (2084-byte certificate, 128-byte session); errors
    /// name the structure and field at fault.
    pub fn from_bytes(godh: &[u8], session: &[u8]) -> Result<Self, LaunchOwnerError> {
        Ok(LaunchOwner {
            godh: SevCert::parse(godh).map_err(LaunchOwnerError::Godh)?,
            session: SessionBlob::from_bytes(session).map_err(LaunchOwnerError::Session)?,
        })
    }
}

/// Why [`LaunchOwner::from_bytes`] refused the owner's files.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LaunchOwnerError {
    /// The GODH certificate does not parse.
    #[error("GODH certificate: {0}")]
    Godh(crate::cert::CertError),
    /// The session blob does not parse.
    #[error("{0}")]
    Session(SessionError),
}

/// What the guest owner keeps and sends after [`owner_session`].
#[derive(Debug)]
pub struct OwnerSession {
    /// The GODH certificate to send (`godh.cert` / QEMU `dh-cert-file`), unsigned.
    pub godh_cert: SevCert,
    /// The session blob to send (`session.bin` / QEMU `session-file`).
    pub session: SessionBlob,
    /// The transport keys the owner keeps (TEK for secrets, TIK for measurement checks).
    pub keys: TransportKeys,
}

impl OwnerSession {
    /// What LAUNCH_START gets: the GODH certificate and the session blob.
    pub fn launch_owner(&self) -> LaunchOwner {
        LaunchOwner {
            godh: self.godh_cert.clone(),
            session: self.session.clone(),
        }
    }
}

/// Guest-owner side of a launch, deterministic: ECDH of `godh_key` with the PDH in `pdh`,
/// then [`owner_wrap`] of `keys` under `nonce`/`iv` bound to `policy`.
pub fn owner_session_with(
    pdh: &SevCert,
    godh_key: &EcKeyRef<Private>,
    keys: TransportKeys,
    nonce: &[u8; 16],
    iv: &[u8; 16],
    policy: impl Into<u32>,
) -> Result<OwnerSession, SessionError> {
    let peer = pdh
        .ec_public_key()
        .map_err(|e| SessionError::Crypto(format!("PDH certificate: {e}")))?;
    let z = ecdh_shared_secret(godh_key, &peer)?;
    let godh_cert = SevCert::new_ec(
        Usage::PDH,
        Algo::ECDH_SHA256,
        pdh.api_major,
        pdh.api_minor,
        godh_key,
    )
    .map_err(|e| SessionError::Crypto(e.to_string()))?;
    let session = owner_wrap(&z, nonce, iv, &keys, policy);
    Ok(OwnerSession {
        godh_cert,
        session,
        keys,
    })
}

/// Guest-owner side of a launch with fresh randomness: a new P-384 GODH key, random TEK/TIK,
/// nonce and IV. The GODH private key is dropped (it is not needed after wrapping).
pub fn owner_session(pdh: &SevCert, policy: impl Into<u32>) -> Result<OwnerSession, SessionError> {
    let e = |x: openssl::error::ErrorStack| SessionError::Crypto(x.to_string());
    let group = EcGroup::from_curve_name(Nid::SECP384R1).map_err(e)?;
    let godh = EcKey::generate(&group).map_err(e)?;
    let mut nonce = [0u8; 16];
    let mut iv = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).map_err(e)?;
    openssl::rand::rand_bytes(&mut iv).map_err(e)?;
    owner_session_with(pdh, &godh, TransportKeys::random()?, &nonce, &iv, policy)
}

/// The firmware's GODH sanity check at LAUNCH_START: version 1, usage PDH, algo ECDH_SHA256,
/// a valid point on P-384. Returns the GODH public key.
pub fn check_godh(godh: &SevCert) -> Result<EcKey<Public>, SessionError> {
    if godh.version != 1 {
        return Err(SessionError::BadGodh(format!("version {}", godh.version)));
    }
    if godh.usage != Usage::PDH || godh.algo != Algo::ECDH_SHA256 {
        return Err(SessionError::BadGodh(format!(
            "usage {} / algo {} (expected PDH / ECDH_SHA256)",
            godh.usage, godh.algo
        )));
    }
    let key = godh
        .ec_public_key()
        .map_err(|e| SessionError::BadGodh(e.to_string()))?;
    if key.group().curve_name() != Some(Nid::SECP384R1) {
        return Err(SessionError::BadGodh("curve is not P-384".into()));
    }
    Ok(key)
}

/// Firmware side of LAUNCH_START with a GODH certificate: parses and checks the GODH and the
/// session buffer, does ECDH with the platform's PDH private key and unwraps the keys.
pub fn platform_open_session(
    pdh_key: &EcKeyRef<Private>,
    godh_cert: &[u8],
    session: &[u8],
    policy: impl Into<u32>,
) -> Result<TransportKeys, SessionError> {
    if godh_cert.len() != SevCert::LEN {
        return Err(SessionError::BadGodh(format!(
            "length {} (expected {})",
            godh_cert.len(),
            SevCert::LEN
        )));
    }
    let blob = SessionBlob::from_bytes(session)?;
    let godh = SevCert::parse(godh_cert).map_err(|e| SessionError::BadGodh(e.to_string()))?;
    let peer = check_godh(&godh)?;
    let z = ecdh_shared_secret(pdh_key, &peer)?;
    platform_unwrap(&z, &blob, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtee_session_kat() {
        let blob = owner_wrap(&[0; 16], &[0; 16], &[0; 16], &TransportKeys::zero(), 0u32);
        assert_eq!(
            hex::encode(blob.wrap_tk),
            "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
        );
        assert_eq!(
            hex::encode(blob.wrap_mac),
            "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
        );
        assert_eq!(
            hex::encode(blob.policy_mac),
            "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
        );
        let keys = platform_unwrap(&[0; 16], &blob, 0u32).unwrap();
        assert_eq!(keys, TransportKeys::zero());
        assert_eq!(SessionBlob::from_bytes(&blob.to_bytes()).unwrap(), blob);
    }

    #[test]
    fn tamper_detected() {
        let keys = TransportKeys {
            tek: [1; 16],
            tik: [2; 16],
        };
        let blob = owner_wrap(&[7; 48], &[3; 16], &[4; 16], &keys, 1u32);
        assert_eq!(platform_unwrap(&[7; 48], &blob, 1u32).unwrap(), keys);
        assert_eq!(
            platform_unwrap(&[7; 48], &blob, 5u32),
            Err(SessionError::BadPolicyMac)
        );
        assert_eq!(
            platform_unwrap(&[8; 48], &blob, 1u32),
            Err(SessionError::BadWrapMac)
        );
        let mut b2 = blob.clone();
        b2.wrap_tk[0] ^= 1;
        assert_eq!(
            platform_unwrap(&[7; 48], &b2, 1u32),
            Err(SessionError::BadWrapMac)
        );
        assert_eq!(
            SessionBlob::from_bytes(&[0; 127]),
            Err(SessionError::BadLength(127))
        );
        assert_eq!(SessionError::BadWrapMac.status(), Status::BadMeasurement);
    }

    #[test]
    fn owner_and_platform_agree() {
        let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let pdh_key = EcKey::generate(&g).unwrap();
        let pdh = SevCert::new_ec(Usage::PDH, Algo::ECDH_SHA256, 0, 24, &pdh_key).unwrap();
        let o = owner_session(&pdh, 0x5u32).unwrap();
        let keys = platform_open_session(
            &pdh_key,
            &o.godh_cert.encode(),
            &o.session.to_bytes(),
            0x5u32,
        )
        .unwrap();
        assert_eq!(keys, o.keys);
        assert_eq!(
            platform_open_session(&pdh_key, &o.godh_cert.encode(), &o.session.to_bytes(), 1u32),
            Err(SessionError::BadPolicyMac)
        );
        // Another PDH gives another Z.
        let other = EcKey::generate(&g).unwrap();
        assert_eq!(
            platform_open_session(&other, &o.godh_cert.encode(), &o.session.to_bytes(), 5u32),
            Err(SessionError::BadWrapMac)
        );
        // A GODH with the wrong usage is rejected.
        let mut bad = o.godh_cert.clone();
        bad.usage = Usage::PEK;
        let e = platform_open_session(&pdh_key, &bad.encode(), &o.session.to_bytes(), 5u32)
            .unwrap_err();
        assert!(matches!(e, SessionError::BadGodh(_)));
        assert_eq!(e.status(), Status::InvalidCertificate);
        assert!(matches!(
            platform_open_session(&pdh_key, &[0; 10], &o.session.to_bytes(), 5u32),
            Err(SessionError::BadGodh(_))
        ));
    }
}
