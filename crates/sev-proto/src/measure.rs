//! The launch digest (LD, a running SHA-256 over everything LAUNCH_UPDATE_DATA/VMSA measured)
//! and the launch measurement (`LAUNCH_MEASURE`: HMAC-SHA256 keyed with the TIK).
//!
//! [`LaunchDigest`] streams: callers can feed files chunk by chunk (see
//! [`LaunchDigest::update_reader`]) so that memory stays small. It uses OpenSSL's SHA-256, which
//! uses SHA-NI where the CPU has it.

use crate::util::{array_at, hmac_sha256};
use openssl::sha::Sha256;
use std::fmt;
use std::io::Read;
use thiserror::Error;

/// Errors of the measure module.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MeasureError {
    /// The LAUNCH_MEASURE blob is not exactly 48 bytes.
    #[error("launch measure blob: length is {0} bytes, expected exactly 48")]
    BadLength(usize),
}

/// The channel-context byte that prefixes the measurement message.
pub const MEASURE_CONTEXT: u8 = 0x04;

/// A streaming SHA-256 launch digest.
#[derive(Clone)]
pub struct LaunchDigest {
    hasher: Sha256,
    len: u64,
}

impl fmt::Debug for LaunchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchDigest")
            .field("bytes", &self.len)
            .finish()
    }
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchDigest {
    /// Chunk size used by [`LaunchDigest::update_reader`].
    pub const CHUNK: usize = 64 * 1024;

    /// An empty digest.
    pub fn new() -> Self {
        LaunchDigest {
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Feeds measured plaintext.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len = self.len.wrapping_add(data.len() as u64);
    }

    /// Feeds everything a reader yields, in [`Self::CHUNK`]-sized pieces; returns the count
    /// of bytes read. The reader is supplied (and owned) by the caller.
    pub fn update_reader<R: Read + ?Sized>(&mut self, reader: &mut R) -> std::io::Result<u64> {
        let mut buf = vec![0u8; Self::CHUNK];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.update(&buf[..n]);
            total += n as u64;
        }
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes the digest.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finish()
    }
}

/// SHA-256 over everything a caller-supplied reader yields, streamed in chunks (used for the
/// kernel and initrd hashes of the kernel-hashes table).
pub fn sha256_reader<R: Read + ?Sized>(reader: &mut R) -> std::io::Result<[u8; 32]> {
    let mut d = LaunchDigest::new();
    d.update_reader(reader)?;
    Ok(d.finish())
}

/// The 56-byte message that LAUNCH_MEASURE MACs:
/// `0x04 ‖ api_major ‖ api_minor ‖ build ‖ LE32(policy) ‖ LD[32] ‖ mnonce[16]`.
pub fn measurement_input(
    api_major: u8,
    api_minor: u8,
    build: u8,
    policy: u32,
    ld: &[u8; 32],
    mnonce: &[u8; 16],
) -> [u8; 56] {
    let mut m = [0u8; 56];
    m[0] = MEASURE_CONTEXT;
    m[1] = api_major;
    m[2] = api_minor;
    m[3] = build;
    m[4..8].copy_from_slice(&policy.to_le_bytes());
    m[8..40].copy_from_slice(ld);
    m[40..56].copy_from_slice(mnonce);
    m
}

/// MEASURE = HMAC-SHA256(TIK, [`measurement_input`]).
pub fn measurement(
    tik: &[u8; 16],
    api_major: u8,
    api_minor: u8,
    build: u8,
    policy: impl Into<u32>,
    ld: &[u8; 32],
    mnonce: &[u8; 16],
) -> [u8; 32] {
    let msg = measurement_input(api_major, api_minor, build, policy.into(), ld, mnonce);
    hmac_sha256(tik, &[&msg])
}

/// The 48-byte LAUNCH_MEASURE output: `MEASURE[32] ‖ MNONCE[16]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchMeasure {
    /// The HMAC.
    pub measure: [u8; 32],
    /// The firmware's random nonce.
    pub mnonce: [u8; 16],
}

impl LaunchMeasure {
    /// Size of the encoded blob.
    pub const LEN: usize = 48;

    /// Encodes `measure ‖ mnonce`.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[..32].copy_from_slice(&self.measure);
        b[32..].copy_from_slice(&self.mnonce);
        b
    }

    /// Decodes exactly 48 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, MeasureError> {
        if b.len() != Self::LEN {
            return Err(MeasureError::BadLength(b.len()));
        }
        Ok(LaunchMeasure {
            measure: array_at(b, 0).ok_or(MeasureError::BadLength(b.len()))?,
            mnonce: array_at(b, 32).ok_or(MeasureError::BadLength(b.len()))?,
        })
    }

    /// Guest-owner check: recomputes the HMAC from the expected digest and compares it in
    /// constant time.
    pub fn verify(
        &self,
        tik: &[u8; 16],
        api_major: u8,
        api_minor: u8,
        build: u8,
        policy: impl Into<u32>,
        expected_ld: &[u8; 32],
    ) -> bool {
        let m = measurement(
            tik,
            api_major,
            api_minor,
            build,
            policy,
            expected_ld,
            &self.mnonce,
        );
        openssl::memcmp::eq(&m, &self.measure)
    }
}

/// The launch digest QEMU + OVMF produce: `SHA-256(firmware ‖ [padded hashes table] ‖
/// [VMSA(vcpu0) ‖ … ])`, for in-memory inputs. Stream large firmware through
/// [`LaunchDigest`] instead.
pub fn expected_launch_digest(
    firmware: &[u8],
    hashes_table: Option<&[u8]>,
    vmsas: &[[u8; 4096]],
) -> [u8; 32] {
    let mut d = LaunchDigest::new();
    d.update(firmware);
    if let Some(t) = hashes_table {
        d.update(t);
    }
    for v in vmsas {
        d.update(v);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtee_measure_kat() {
        let tik: [u8; 16] = hex::decode("66320db73158a35a255d051758e95ed4")
            .unwrap()
            .try_into()
            .unwrap();
        let mnonce: [u8; 16] = hex::decode("4fbe0bedbad6c86ae8f68971d103e554")
            .unwrap()
            .try_into()
            .unwrap();
        let ld = LaunchDigest::new().finish();
        assert_eq!(
            hex::encode(ld),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let m = measurement(&tik, 0x00, 0x12, 0x0f, 0u32, &ld, &mnonce);
        assert_eq!(
            hex::encode(m),
            "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
        );
        let lm = LaunchMeasure { measure: m, mnonce };
        assert!(lm.verify(&tik, 0, 0x12, 0x0f, 0u32, &ld));
        assert!(!lm.verify(&tik, 0, 0x12, 0x0f, 1u32, &ld));
        assert_eq!(LaunchMeasure::from_bytes(&lm.to_bytes()).unwrap(), lm);
        assert_eq!(
            LaunchMeasure::from_bytes(&[0; 47]),
            Err(MeasureError::BadLength(47))
        );
    }

    #[test]
    fn streaming_equals_oneshot() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut d = LaunchDigest::new();
        let n = d.update_reader(&mut &data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d.len(), data.len() as u64);
        assert_eq!(d.finish(), openssl::sha::sha256(&data));
        let mut d2 = LaunchDigest::new();
        for c in data.chunks(4097) {
            d2.update(c);
        }
        assert_eq!(d2.finish(), openssl::sha::sha256(&data));
    }
}
