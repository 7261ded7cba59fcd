//! QEMU's SEV kernel-hashes table (`kernel-hashes=on`): the 168-byte `SevHashTable` of the
//! kernel, initrd and command-line SHA-256 hashes, padded to 176 bytes, which QEMU writes into
//! the OVMF hashes area and measures with LAUNCH_UPDATE_DATA.
//!
//! Layout (packed, GUIDs in EFI byte order): `GUID(table) ‖ u16 168 ‖ entry(cmdline) ‖
//! entry(initrd) ‖ entry(kernel)`, each entry `GUID ‖ u16 50 ‖ sha256[32]`, then 8 zero bytes.

use crate::util::{array_at, le_u16};
use thiserror::Error;
use uuid::Uuid;

/// GUID of the table header.
pub const TABLE_GUID: Uuid = Uuid::from_u128(0x9438d606_4f22_4cc9_b479_a793d411fd21);
/// GUID of the command-line entry.
pub const CMDLINE_GUID: Uuid = Uuid::from_u128(0x97d02dd8_bd20_4c94_aa78_e7714d36ab2a);
/// GUID of the initrd entry.
pub const INITRD_GUID: Uuid = Uuid::from_u128(0x44baf731_3a2f_4bd7_9af1_41e29169781d);
/// GUID of the kernel entry.
pub const KERNEL_GUID: Uuid = Uuid::from_u128(0x4de79437_abd2_427f_b835_d5b172d2045b);

/// Size of the table without padding.
pub const TABLE_LEN: usize = 168;
/// Size of the table padded to 16 bytes (what is measured).
pub const PADDED_LEN: usize = 176;
const ENTRY_LEN: usize = 50;

/// Errors of [`parse_table`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HashesError {
    /// Too short.
    #[error("kernel hashes table: {0} bytes, need at least 168")]
    Truncated(usize),
    /// A GUID or length field is wrong.
    #[error("kernel hashes table: field `{0}` is invalid")]
    BadField(&'static str),
}

/// The three hashes of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the command line plus its NUL.
    pub cmdline: [u8; 32],
    /// SHA-256 of the initrd (of the empty string when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the whole kernel file.
    pub kernel: [u8; 32],
}

/// SHA-256 of the command line bytes followed by a NUL (QEMU hashes the C string).
/// With no `-append`, pass `""` (the hash of the single byte 0x00).
pub fn cmdline_hash(cmdline: &str) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    h.update(cmdline.as_bytes());
    h.update(&[0]);
    h.finish()
}

/// SHA-256 of a whole in-memory file (the kernel or initrd). Stream large files through
/// [`crate::measure::sha256_reader`] instead.
pub fn file_hash(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

fn entry(out: &mut [u8], guid: &Uuid, hash: &[u8; 32]) {
    out[0..16].copy_from_slice(&guid.to_bytes_le());
    out[16..18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
    out[18..50].copy_from_slice(hash);
}

/// The 176-byte padded table for the given kernel, initrd and cmdline hashes.
pub fn padded_table(kernel: &[u8; 32], initrd: &[u8; 32], cmdline: &[u8; 32]) -> [u8; 176] {
    let mut t = [0u8; PADDED_LEN];
    t[0..16].copy_from_slice(&TABLE_GUID.to_bytes_le());
    t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
    entry(&mut t[18..68], &CMDLINE_GUID, cmdline);
    entry(&mut t[68..118], &INITRD_GUID, initrd);
    entry(&mut t[118..168], &KERNEL_GUID, kernel);
    t
}

impl KernelHashes {
    /// The padded table of these hashes.
    pub fn padded_table(&self) -> [u8; 176] {
        padded_table(&self.kernel, &self.initrd, &self.cmdline)
    }
}

/// Parses a table (at least 168 bytes; the padding, if present, is ignored).
pub fn parse_table(b: &[u8]) -> Result<KernelHashes, HashesError> {
    if b.len() < TABLE_LEN {
        return Err(HashesError::Truncated(b.len()));
    }
    let guid = |off: usize, field: &'static str| -> Result<Uuid, HashesError> {
        array_at::<16>(b, off)
            .map(Uuid::from_bytes_le)
            .ok_or(HashesError::BadField(field))
    };
    if guid(0, "guid")? != TABLE_GUID {
        return Err(HashesError::BadField("guid"));
    }
    if le_u16(b, 16) != Some(TABLE_LEN as u16) {
        return Err(HashesError::BadField("len"));
    }
    let mut out = KernelHashes {
        cmdline: [0; 32],
        initrd: [0; 32],
        kernel: [0; 32],
    };
    for (i, (g, name)) in [
        (CMDLINE_GUID, "cmdline"),
        (INITRD_GUID, "initrd"),
        (KERNEL_GUID, "kernel"),
    ]
    .iter()
    .enumerate()
    {
        let off = 18 + i * ENTRY_LEN;
        if guid(off, name)? != *g || le_u16(b, off + 16) != Some(ENTRY_LEN as u16) {
            return Err(HashesError::BadField(name));
        }
        let h: [u8; 32] = array_at(b, off + 18).ok_or(HashesError::BadField(name))?;
        match i {
            0 => out.cmdline = h,
            1 => out.initrd = h,
            _ => out.kernel = h,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_prefix_and_roundtrip() {
        let empty = file_hash(b"");
        let t = padded_table(&empty, &empty, &cmdline_hash("console=ttyS0 loglevel=7"));
        assert!(hex::encode(t).starts_with("06d63894224fc94cb479a793d411fd21a800"));
        assert_eq!(t.len(), 176);
        assert_eq!(&t[168..], &[0u8; 8]);
        let p = parse_table(&t).unwrap();
        assert_eq!(p.kernel, empty);
        assert_eq!(p.padded_table(), t);
        assert_eq!(parse_table(&t[..100]), Err(HashesError::Truncated(100)));
        let mut bad = t;
        bad[20] ^= 1;
        assert_eq!(parse_table(&bad), Err(HashesError::BadField("cmdline")));
    }
}
