//! Guest-virtual to guest-physical translation over guest memory (x86-64 4-level paging).
//!
//! The walker reads the guest's page tables through host access to guest RAM. It masks an
//! encryption bit (SEV C-bit) out of every table address and of the final address, so a guest
//! whose entries carry the C-bit translates to the plain RAM address. It never writes memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors of the page walker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagingError {
    /// An entry on the walk has its present bit clear.
    #[error("{level} entry for virtual address {gva:#x} is not present")]
    NotPresent {
        /// Virtual address being translated.
        gva: u64,
        /// Table level ("PML4", "PDPT", "PD", "PT").
        level: &'static str,
    },
    /// A table address is outside guest RAM.
    #[error("{level} table at guest-physical {gpa:#x} is outside guest memory")]
    TableOutsideMemory {
        /// Guest-physical table address.
        gpa: u64,
        /// Table level.
        level: &'static str,
    },
    /// The virtual address is not canonical.
    #[error("virtual address {0:#x} is not canonical")]
    NonCanonical(u64),
}

/// Size of the page a translation ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB page.
    Size4K,
    /// 2 MiB page.
    Size2M,
    /// 1 GiB page.
    Size1G,
}

/// Result of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address, with the encryption bit cleared.
    pub gpa: u64,
    /// Page size of the final mapping.
    pub size: PageSize,
    /// Whether the final entry carried the encryption bit.
    pub encrypted: bool,
}

const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;
/// Physical-address bits 12..51 of an entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Translates `gva` by walking the tables rooted at `cr3`. `enc_mask` is the encryption bit
/// (`1 << cbit`) or 0; it is cleared from CR3, every table pointer and the result.
pub fn translate(
    mem: &GuestMemoryMmap,
    cr3: u64,
    gva: u64,
    enc_mask: u64,
) -> Result<Translation, PagingError> {
    let sign = (gva as i64) >> 47;
    if sign != 0 && sign != -1 {
        return Err(PagingError::NonCanonical(gva));
    }
    let levels: [(&'static str, u32); 4] = [("PML4", 39), ("PDPT", 30), ("PD", 21), ("PT", 12)];
    let mut table = cr3 & ADDR_MASK & !enc_mask;
    for (depth, (level, shift)) in levels.iter().enumerate() {
        let idx = (gva >> shift) & 0x1ff;
        let at = table + idx * 8;
        let entry: u64 = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| PagingError::TableOutsideMemory { gpa: table, level })?;
        if entry & PRESENT == 0 {
            return Err(PagingError::NotPresent { gva, level });
        }
        let encrypted = enc_mask != 0 && entry & enc_mask != 0;
        let base = entry & ADDR_MASK & !enc_mask;
        let leaf_size = match depth {
            1 if entry & PS != 0 => Some((PageSize::Size1G, 1u64 << 30)),
            2 if entry & PS != 0 => Some((PageSize::Size2M, 1u64 << 21)),
            3 => Some((PageSize::Size4K, 1u64 << 12)),
            _ => None,
        };
        if let Some((size, bytes)) = leaf_size {
            let gpa = (base & !(bytes - 1)) | (gva & (bytes - 1));
            return Ok(Translation {
                gpa,
                size,
                encrypted,
            });
        }
        table = base;
    }
    unreachable!("the PT level always returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    fn put(m: &GuestMemoryMmap, at: u64, v: u64) {
        m.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// Builds PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000, mapping:
    /// gva 0x4000_0000 (1 GiB page) -> 0x0, gva 0x0020_0000 (2 MiB) -> 0x60_0000,
    /// gva 0x0000_5000 (4 KiB) -> 0x9000. Every entry ORs in `c`.
    fn build(m: &GuestMemoryMmap, c: u64) {
        put(m, 0x1000, 0x2000 | c | 3);
        put(m, 0x2000, 0x3000 | c | 3); // PDPT[0] -> PD
        put(m, 0x2000 + 8, c | PS | 3); // PDPT[1] -> 1 GiB page at 0
        put(m, 0x3000, 0x4000 | c | 3); // PD[0] -> PT
        put(m, 0x3000 + 8, 0x60_0000 | c | PS | 3); // PD[1] -> 2 MiB page
        put(m, 0x4000 + 5 * 8, 0x9000 | c | 3); // PT[5] -> 4 KiB page
    }

    #[test]
    fn all_page_sizes_without_and_with_cbit() {
        for cbit in [None, Some(47u8), Some(51u8)] {
            let m = mem();
            let c = cbit.map_or(0, |b| 1u64 << b);
            build(&m, c);
            let t = translate(&m, 0x1000 | c, 0x4000_1234, c).unwrap();
            assert_eq!(
                (t.gpa, t.size, t.encrypted),
                (0x1234, PageSize::Size1G, c != 0)
            );
            let t = translate(&m, 0x1000 | c, 0x0021_2345, c).unwrap();
            assert_eq!((t.gpa, t.size), (0x61_2345, PageSize::Size2M));
            let t = translate(&m, 0x1000 | c, 0x5abc, c).unwrap();
            assert_eq!((t.gpa, t.size), (0x9abc, PageSize::Size4K));
            assert_eq!(t.encrypted, c != 0);
        }
    }

    #[test]
    fn cbit_not_masked_gives_wrong_table() {
        let m = mem();
        let c = 1u64 << 40;
        build(&m, c);
        // Without the mask, the PML4 entry points beyond guest memory.
        assert!(matches!(
            translate(&m, 0x1000, 0x5abc, 0),
            Err(PagingError::TableOutsideMemory { level: "PDPT", .. })
        ));
    }

    #[test]
    fn not_present_and_non_canonical() {
        let m = mem();
        build(&m, 0);
        assert_eq!(
            translate(&m, 0x1000, 0x6000, 0),
            Err(PagingError::NotPresent {
                gva: 0x6000,
                level: "PT"
            })
        );
        assert_eq!(
            translate(&m, 0x1000, 0x80_0000_0000, 0),
            Err(PagingError::NotPresent {
                gva: 0x80_0000_0000,
                level: "PML4"
            })
        );
        assert_eq!(
            translate(&m, 0x1000, 0x0000_8000_0000_0000, 0),
            Err(PagingError::NonCanonical(0x0000_8000_0000_0000))
        );
    }
}
