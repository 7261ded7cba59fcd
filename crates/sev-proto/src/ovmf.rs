//! The OVMF footer GUID table: the table that ends 32 bytes before the end of an OVMF image and
//! tells QEMU where the SEV secret area and kernel-hashes area are and where SEV-ES APs start.
//!
//! The last entry is the footer `{u16 size, GUID 96b582de-…}` whose size covers the whole table;
//! the other entries are walked backwards, each `data ‖ u16 size ‖ GUID` (GUIDs in EFI order).

use crate::util::{array_at, le_u16, le_u32};
use thiserror::Error;
use uuid::Uuid;

/// GUID of the table footer.
pub const FOOTER_GUID: Uuid = Uuid::from_u128(0x96b582de_1fb2_45f7_baea_a366c55a082d);
/// SEV-ES reset block: u32 AP reset address.
pub const SEV_ES_RESET_BLOCK_GUID: Uuid = Uuid::from_u128(0x00f771de_1a7e_4fcb_890e_68c77e2fb44e);
/// SEV secret area: {u32 base, u32 size}.
pub const SEV_SECRET_GUID: Uuid = Uuid::from_u128(0x4c2eb361_7d9b_4cc3_8081_127c90d3d294);
/// SEV kernel-hashes area: {u32 base, u32 size}.
pub const SEV_HASH_TABLE_RV_GUID: Uuid = Uuid::from_u128(0x7255371f_3a3b_4b04_927b_1da6efa8d454);
/// SEV(-SNP) metadata: u32 offset from the end of the image.
pub const SEV_METADATA_GUID: Uuid = Uuid::from_u128(0xdc886566_984a_4798_a75e_5585a7bf67cc);
/// TDX metadata offset (not used for SEV).
pub const TDX_METADATA_GUID: Uuid = Uuid::from_u128(0xe47a6535_984a_4798_865e_4685a7bf8ec2);
/// The EFI configuration table GUID under which OVMF publishes the secret area to the OS.
pub const EFI_COCO_SECRET_AREA_GUID: Uuid = Uuid::from_u128(0xadf956ad_e98c_484c_ae11_b51c7d336447);

const ENTRY_HDR: usize = 18;
const TAIL: usize = 32;

/// Errors of footer-table parsing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OvmfError {
    /// The image is too small to hold a footer.
    #[error("OVMF image: {0} bytes is too small for a footer table")]
    TooSmall(usize),
    /// No footer GUID where it must be (not an OVMF with a GUID table).
    #[error("OVMF image: no footer table GUID 32 bytes before the end")]
    NoFooter,
    /// A size field is inconsistent.
    #[error("OVMF footer table: field `{field}` invalid: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The parsed footer table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FooterTable {
    /// Entries in table order (lowest address first), excluding the footer itself.
    pub entries: Vec<(Uuid, Vec<u8>)>,
}

/// A guest-physical area `{base, size}` named by the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    /// Guest-physical base address.
    pub base: u32,
    /// Size in bytes.
    pub size: u32,
}

impl FooterTable {
    /// Parses the table of an OVMF image (the whole flash file).
    pub fn parse(fw: &[u8]) -> Result<Self, OvmfError> {
        if fw.len() < TAIL + ENTRY_HDR {
            return Err(OvmfError::TooSmall(fw.len()));
        }
        let footer = fw.len() - TAIL - ENTRY_HDR;
        let guid = array_at::<16>(fw, footer + 2).ok_or(OvmfError::TooSmall(fw.len()))?;
        if Uuid::from_bytes_le(guid) != FOOTER_GUID {
            return Err(OvmfError::NoFooter);
        }
        let size = le_u16(fw, footer).ok_or(OvmfError::TooSmall(fw.len()))? as usize;
        if size < ENTRY_HDR || size > fw.len() - TAIL {
            return Err(OvmfError::BadField {
                field: "footer.size",
                reason: format!("{size} (image holds {} bytes)", fw.len()),
            });
        }
        let start = fw.len() - TAIL - size;
        let mut pos = footer;
        let mut entries = Vec::new();
        while pos > start {
            if pos - start < ENTRY_HDR {
                return Err(OvmfError::BadField {
                    field: "entry",
                    reason: format!("{} stray bytes at the start of the table", pos - start),
                });
            }
            let g = array_at::<16>(fw, pos - 16).ok_or(OvmfError::TooSmall(fw.len()))?;
            let esize = le_u16(fw, pos - ENTRY_HDR).ok_or(OvmfError::TooSmall(fw.len()))? as usize;
            if esize < ENTRY_HDR || esize > pos - start {
                return Err(OvmfError::BadField {
                    field: "entry.size",
                    reason: format!(
                        "{esize} for GUID {} (room {})",
                        Uuid::from_bytes_le(g),
                        pos - start
                    ),
                });
            }
            entries.push((
                Uuid::from_bytes_le(g),
                fw[pos - esize..pos - ENTRY_HDR].to_vec(),
            ));
            pos -= esize;
        }
        entries.reverse();
        Ok(FooterTable { entries })
    }

    /// The data of the entry with this GUID.
    pub fn entry(&self, guid: &Uuid) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, d)| d.as_slice())
    }

    fn area(&self, guid: &Uuid) -> Option<Area> {
        let d = self.entry(guid)?;
        Some(Area {
            base: le_u32(d, 0)?,
            size: le_u32(d, 4)?,
        })
    }

    /// The SEV secret area (`None` if absent or all zero, as in plain OvmfPkgX64).
    pub fn secret_area(&self) -> Option<Area> {
        self.area(&SEV_SECRET_GUID).filter(|a| a.size != 0)
    }

    /// The kernel-hashes area (`None` if absent or all zero).
    pub fn hashes_area(&self) -> Option<Area> {
        self.area(&SEV_HASH_TABLE_RV_GUID).filter(|a| a.size != 0)
    }

    /// The SEV-ES AP reset address.
    pub fn es_reset_addr(&self) -> Option<u32> {
        self.entry(&SEV_ES_RESET_BLOCK_GUID)
            .and_then(|d| le_u32(d, 0))
    }

    /// The SEV metadata offset from the end of the image (SNP).
    pub fn sev_metadata_offset(&self) -> Option<u32> {
        self.entry(&SEV_METADATA_GUID).and_then(|d| le_u32(d, 0))
    }

    /// True when the image supports measured direct boot (a hashes area of >= 176 bytes).
    pub fn supports_kernel_hashes(&self) -> bool {
        self.hashes_area()
            .is_some_and(|a| a.size as usize >= crate::kernel_hashes::PADDED_LEN)
    }

    /// Encodes the table (entries then footer) as it sits in the image before the last 32
    /// bytes; used by tests and by tools that build images.
    pub fn encode(&self) -> Result<Vec<u8>, OvmfError> {
        let mut v = Vec::new();
        for (g, d) in &self.entries {
            let size = u16::try_from(d.len() + ENTRY_HDR).map_err(|_| OvmfError::BadField {
                field: "entry.size",
                reason: format!("{} data bytes do not fit u16", d.len()),
            })?;
            v.extend_from_slice(d);
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&g.to_bytes_le());
        }
        let total = u16::try_from(v.len() + ENTRY_HDR).map_err(|_| OvmfError::BadField {
            field: "footer.size",
            reason: "table larger than 64 KiB".into(),
        })?;
        v.extend_from_slice(&total.to_le_bytes());
        v.extend_from_slice(&FOOTER_GUID.to_bytes_le());
        Ok(v)
    }
}
