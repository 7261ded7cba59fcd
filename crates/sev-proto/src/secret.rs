//! LAUNCH_SECRET packets: the 52-byte packet header, the MAC over header and ciphertext,
//! building a packet (guest owner) and opening one (firmware).
//!
//! MAC = HMAC-SHA256(TIK, 0x01 ‖ LE32(flags) ‖ IV ‖ LE32(guest_len) ‖ LE32(trans_len) ‖
//! ciphertext ‖ MEASURE); ciphertext = AES-128-CTR(TEK, IV, plaintext).

use crate::session::TransportKeys;
use crate::util::{aes128_ctr, array_at, hmac_sha256, le_u32};
use std::fmt;
use thiserror::Error;
use zeroize::Zeroizing;

/// The channel-context byte that prefixes the packet MAC message.
pub const SECRET_CONTEXT: u8 = 0x01;
/// Header flag bit 0: the payload is compressed (the firmware refuses it with UNSUPPORTED).
pub const FLAG_COMPRESSED: u32 = 1;
/// The largest guest_len the modelled firmware accepts (the Genoa scratch buffer, 0x5000).
pub const MAX_SECRET_LEN: usize = 0x5000;

/// Errors of the secret module.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The header is not exactly 52 bytes.
    #[error("secret packet header: length is {0} bytes, expected exactly 52")]
    BadHeaderLength(usize),
    /// The payload length is zero, not a multiple of 16, too large, or differs from guest_len.
    #[error("secret payload: {0}")]
    BadLength(String),
    /// The header MAC does not match (firmware: BAD_MEASUREMENT).
    #[error("secret packet: header MAC does not match")]
    BadMac,
}

impl SecretError {
    /// The firmware status this error maps to at LAUNCH_SECRET.
    pub fn status(&self) -> crate::status::Status {
        use crate::status::Status;
        match self {
            SecretError::BadHeaderLength(_) | SecretError::BadLength(_) => Status::InvalidLength,
            SecretError::BadMac => Status::BadMeasurement,
        }
    }
}

/// The 52-byte LAUNCH_SECRET packet header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// 0x00: flags (bit 0 COMPRESSED).
    pub flags: u32,
    /// 0x04: AES-CTR IV.
    pub iv: [u8; 16],
    /// 0x14: HMAC-SHA256 over the packet (see the module docs).
    pub mac: [u8; 32],
}

impl fmt::Debug for PacketHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketHeader")
            .field("flags", &self.flags)
            .field("iv", &hex::encode(self.iv))
            .field("mac", &hex::encode(self.mac))
            .finish()
    }
}

impl PacketHeader {
    /// Size of the encoded header.
    pub const LEN: usize = 52;

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; 52] {
        let mut b = [0u8; 52];
        b[0..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..20].copy_from_slice(&self.iv);
        b[20..52].copy_from_slice(&self.mac);
        b
    }

    /// Decodes exactly 52 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SecretError> {
        if b.len() != Self::LEN {
            return Err(SecretError::BadHeaderLength(b.len()));
        }
        let bad = || SecretError::BadHeaderLength(b.len());
        Ok(PacketHeader {
            flags: le_u32(b, 0).ok_or_else(bad)?,
            iv: array_at(b, 4).ok_or_else(bad)?,
            mac: array_at(b, 20).ok_or_else(bad)?,
        })
    }
}

/// The packet MAC.
pub fn packet_mac(
    tik: &[u8; 16],
    flags: u32,
    iv: &[u8; 16],
    guest_len: u32,
    trans_len: u32,
    ciphertext: &[u8],
    measure: &[u8; 32],
) -> [u8; 32] {
    hmac_sha256(
        tik,
        &[
            &[SECRET_CONTEXT],
            &flags.to_le_bytes(),
            iv,
            &guest_len.to_le_bytes(),
            &trans_len.to_le_bytes(),
            ciphertext,
            measure,
        ],
    )
}

fn check_len(len: usize) -> Result<u32, SecretError> {
    if len == 0 || !len.is_multiple_of(16) {
        return Err(SecretError::BadLength(format!(
            "length {len} is not a nonzero multiple of 16"
        )));
    }
    u32::try_from(len).map_err(|_| SecretError::BadLength(format!("length {len} exceeds u32")))
}

/// Guest-owner side: encrypts `plaintext` (a nonzero multiple of 16 bytes) with the TEK and MACs
/// it with the TIK, bound to the launch `measure`. guest_len = trans_len = plaintext length.
pub fn build_packet(
    keys: &TransportKeys,
    measure: &[u8; 32],
    iv: [u8; 16],
    flags: u32,
    plaintext: &[u8],
) -> Result<(PacketHeader, Vec<u8>), SecretError> {
    let len = check_len(plaintext.len())?;
    let ct = aes128_ctr(&keys.tek, &iv, plaintext);
    let mac = packet_mac(&keys.tik, flags, &iv, len, len, &ct, measure);
    Ok((PacketHeader { flags, iv, mac }, ct))
}

/// Firmware side: checks lengths and the MAC (constant time), then decrypts.
///
/// `guest_len` must equal the ciphertext length (trans_len) and be a nonzero multiple of 16.
/// The COMPRESSED flag is not interpreted here (the firmware refuses it after the MAC check).
pub fn open_packet(
    keys: &TransportKeys,
    measure: &[u8; 32],
    hdr: &PacketHeader,
    ciphertext: &[u8],
    guest_len: u32,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let trans_len = check_len(ciphertext.len())?;
    if guest_len != trans_len {
        return Err(SecretError::BadLength(format!(
            "guest_len {guest_len} differs from trans_len {trans_len}"
        )));
    }
    let mac = packet_mac(
        &keys.tik, hdr.flags, &hdr.iv, guest_len, trans_len, ciphertext, measure,
    );
    if !openssl::memcmp::eq(&mac, &hdr.mac) {
        return Err(SecretError::BadMac);
    }
    Ok(Zeroizing::new(aes128_ctr(&keys.tek, &hdr.iv, ciphertext)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let keys = TransportKeys {
            tek: [5; 16],
            tik: [6; 16],
        };
        let m = [9u8; 32];
        let pt = [0x42u8; 48];
        let (hdr, ct) = build_packet(&keys, &m, [1; 16], 0, &pt).unwrap();
        assert_eq!(ct.len(), 48);
        assert_eq!(PacketHeader::from_bytes(&hdr.to_bytes()).unwrap(), hdr);
        assert_eq!(&open_packet(&keys, &m, &hdr, &ct, 48).unwrap()[..], &pt[..]);
        assert_eq!(
            open_packet(&keys, &[8; 32], &hdr, &ct, 48),
            Err(SecretError::BadMac)
        );
        assert!(matches!(
            open_packet(&keys, &m, &hdr, &ct, 32),
            Err(SecretError::BadLength(_))
        ));
        let mut ct2 = ct.clone();
        ct2[0] ^= 1;
        assert_eq!(
            open_packet(&keys, &m, &hdr, &ct2, 48),
            Err(SecretError::BadMac)
        );
        assert!(build_packet(&keys, &m, [1; 16], 0, &[0; 15]).is_err());
        assert!(build_packet(&keys, &m, [1; 16], 0, &[]).is_err());
        assert_eq!(
            PacketHeader::from_bytes(&[0; 51]),
            Err(SecretError::BadHeaderLength(51))
        );
    }
}
