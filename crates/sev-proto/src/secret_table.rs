//! The EFI secret table that OVMF publishes to the guest OS (Linux `efi_secret`, grub
//! `efisecret`): `GUID 1e74f542-71dd-4d66-963e-ef4287ff173b ‖ u32 len ‖ entries`, each entry
//! `GUID ‖ u32 (16 + 4 + data_len) ‖ data`; the encoding is zero-padded to a multiple of 16 for
//! LAUNCH_SECRET. As in sevctl, the header length field holds the **unpadded** length.

use crate::util::{array_at, le_u32};
use thiserror::Error;
use uuid::Uuid;
use zeroize::Zeroize;

/// The header GUID.
pub const HEADER_GUID: Uuid = Uuid::from_u128(0x1e74f542_71dd_4d66_963e_ef4287ff173b);
/// The disk-passphrase entry GUID used by grub cryptodisk.
pub const DISK_PASSPHRASE_GUID: Uuid = Uuid::from_u128(0x736869e5_84f0_4973_92ec_06879ce3da0b);
const HDR: usize = 20;

/// Errors of secret-table parsing and encoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecretTableError {
    /// Too short for a field.
    #[error("secret table: truncated in field `{0}`")]
    Truncated(&'static str),
    /// A field holds a wrong value.
    #[error("secret table: field `{field}`: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An entry is too large for the u32 length field.
    #[error("secret table: entry too large")]
    TooLarge,
}

/// The secret table: a list of (GUID, data) entries.
///
/// The data are the guest owner's secrets: they are wiped when the table is dropped, and
/// `Debug` shows only GUIDs and lengths.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretTable {
    /// The entries, in order.
    pub entries: Vec<(Uuid, Vec<u8>)>,
}

impl std::fmt::Debug for SecretTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(g, d)| format!("{g}: {} bytes (redacted)", d.len())),
            )
            .finish()
    }
}

impl Drop for SecretTable {
    fn drop(&mut self) {
        for (_, d) in &mut self.entries {
            d.zeroize();
        }
    }
}

impl SecretTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    pub fn push(&mut self, guid: Uuid, data: Vec<u8>) {
        self.entries.push((guid, data));
    }

    /// The unpadded length (header + entries).
    pub fn unpadded_len(&self) -> usize {
        HDR + self
            .entries
            .iter()
            .map(|(_, d)| HDR + d.len())
            .sum::<usize>()
    }

    /// Encodes the table, zero-padded to a multiple of 16.
    pub fn encode(&self) -> Result<Vec<u8>, SecretTableError> {
        let len = self.unpadded_len();
        let len32 = u32::try_from(len).map_err(|_| SecretTableError::TooLarge)?;
        let mut v = Vec::with_capacity(len.div_ceil(16) * 16);
        v.extend_from_slice(&HEADER_GUID.to_bytes_le());
        v.extend_from_slice(&len32.to_le_bytes());
        for (g, d) in &self.entries {
            v.extend_from_slice(&g.to_bytes_le());
            v.extend_from_slice(&((HDR + d.len()) as u32).to_le_bytes());
            v.extend_from_slice(d);
        }
        v.resize(len.div_ceil(16) * 16, 0);
        Ok(v)
    }

    /// Parses a table; bytes after the header's length (padding) are ignored. Accepts header
    /// lengths that include the padding too (entries then end at the first all-zero GUID).
    pub fn parse(b: &[u8]) -> Result<Self, SecretTableError> {
        let guid: [u8; 16] = array_at(b, 0).ok_or(SecretTableError::Truncated("guid"))?;
        if Uuid::from_bytes_le(guid) != HEADER_GUID {
            return Err(SecretTableError::BadField {
                field: "guid",
                reason: format!("{} is not the secret table GUID", Uuid::from_bytes_le(guid)),
            });
        }
        let len = le_u32(b, 16).ok_or(SecretTableError::Truncated("len"))? as usize;
        if len < HDR || len > b.len() {
            return Err(SecretTableError::BadField {
                field: "len",
                reason: format!("{len} outside 20..={}", b.len()),
            });
        }
        let body = &b[..len];
        let mut off = HDR;
        let mut entries = Vec::new();
        while off < len {
            if body[off..].iter().all(|&x| x == 0) {
                break; // padding counted in the header length
            }
            let g: [u8; 16] =
                array_at(body, off).ok_or(SecretTableError::Truncated("entry.guid"))?;
            let elen =
                le_u32(body, off + 16).ok_or(SecretTableError::Truncated("entry.len"))? as usize;
            if elen < HDR || elen > len - off {
                return Err(SecretTableError::BadField {
                    field: "entry.len",
                    reason: format!("{elen} at offset {off} outside 20..={}", len - off),
                });
            }
            entries.push((Uuid::from_bytes_le(g), body[off + HDR..off + elen].to_vec()));
            off += elen;
        }
        Ok(SecretTable { entries })
    }

    /// The data of the first entry with this GUID.
    pub fn get(&self, guid: &Uuid) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, d)| d.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let mut t = SecretTable::new();
        t.push(DISK_PASSPHRASE_GUID, b"MY-LUKS-PASSPHRASE".to_vec());
        let enc = t.encode().unwrap();
        assert_eq!(enc.len(), 64);
        assert_eq!(le_u32(&enc, 16), Some(0x3a));
        assert_eq!(le_u32(&enc, 36), Some(0x26));
        assert_eq!(SecretTable::parse(&enc).unwrap(), t);
        assert_eq!(
            t.get(&DISK_PASSPHRASE_GUID),
            Some(&b"MY-LUKS-PASSPHRASE"[..])
        );
        // Header length with padding included.
        let mut padded = enc.clone();
        padded[16..20].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(SecretTable::parse(&padded).unwrap(), t);
        assert!(SecretTable::parse(&enc[..10]).is_err());
        let mut bad = enc.clone();
        bad[36] = 0xff;
        assert!(matches!(
            SecretTable::parse(&bad),
            Err(SecretTableError::BadField {
                field: "entry.len",
                ..
            })
        ));
        assert_eq!(SecretTable::new().encode().unwrap().len(), 32);
    }

    #[test]
    fn debug_redacts_the_data() {
        let mut t = SecretTable::new();
        t.push(Uuid::from_u128(7), b"hunter2-secret".to_vec());
        let d = format!("{t:?}");
        assert!(d.contains("14 bytes"), "{d}");
        assert!(!d.contains("hunter2") && !d.contains("104"), "{d}");
    }
}
