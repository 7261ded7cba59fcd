//! The soft firmware's reverse map table (RMP): one entry per 4 KiB system-physical page
//! (`snp-spec-notes.md` §5.1), the page states the firmware classifies entries into (§5.2), and
//! the host's RMPUPDATE and the guest's PVALIDATE (§5.3) as model operations.
//!
//! The table is sparse: an sPA with no entry is HYPERVISOR (all fields zero). sPAs at or above
//! [`RMP_END`] are not covered by the RMP (DEFAULT). A 2 MiB page is 512 entries that all say
//! `page_2m`, with the GPA of each 4 KiB part (PSMASH is not modelled).

use std::collections::BTreeMap;

/// 4 KiB.
pub const PAGE_4K: u64 = 0x1000;
/// 2 MiB.
pub const PAGE_2M: u64 = 0x20_0000;
/// First sPA not covered by the RMP (52-bit physical addresses).
pub const RMP_END: u64 = 1 << 52;

/// One RMP entry (the fields of §5.1 the firmware reads; VMPL0 permissions are implicit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmpEntry {
    /// ASSIGNED.
    pub assigned: bool,
    /// PAGE_SIZE: part of a 2 MiB page.
    pub page_2m: bool,
    /// IMMUTABLE.
    pub immutable: bool,
    /// GPA (4 KiB aligned).
    pub gpa: u64,
    /// ASID (0: the hypervisor / firmware).
    pub asid: u32,
    /// VMSA.
    pub vmsa: bool,
    /// VALIDATED.
    pub validated: bool,
    /// LOCK (an entry in use by a command; never left set by the model).
    pub lock: bool,
    /// VMPL1..3 permission masks.
    pub vmpl_perms: [u8; 3],
}

/// Page states as the firmware classifies an RMP entry (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Not assigned: the host's.
    Hypervisor,
    /// Not assigned, immutable.
    HvFixed,
    /// Assigned to the firmware (ASID 0, immutable, GPA 0, VMSA 0).
    Firmware,
    /// Assigned, ASID 0, not immutable: given back by PAGE_RECLAIM, awaiting RMPUPDATE.
    Reclaim,
    /// A guest context page (firmware page with VMSA 1).
    Context,
    /// Swap metadata (firmware page with a tagged GPA).
    Metadata,
    /// Assigned to a guest, immutable: the target of LAUNCH_UPDATE.
    PreGuest,
    /// Assigned to a guest, validated, immutable.
    PreSwap,
    /// Assigned to a guest, not yet PVALIDATEd.
    GuestInvalid,
    /// A normal private guest page.
    GuestValid,
    /// Not covered by the RMP.
    Default,
}

impl RmpEntry {
    /// The state of this entry (`rmp_entry_get_state` of the notes' firmware). Combinations
    /// the table does not name (e.g. not assigned but validated) classify as HYPERVISOR /
    /// HV_FIXED by their immutable bit, as the firmware looks at ASSIGNED first.
    pub fn state(&self) -> PageState {
        if !self.assigned {
            return if self.immutable {
                PageState::HvFixed
            } else {
                PageState::Hypervisor
            };
        }
        if self.asid == 0 {
            return match (self.immutable, self.vmsa, self.gpa) {
                (false, _, _) => PageState::Reclaim,
                (true, true, _) => PageState::Context,
                (true, false, 0) => PageState::Firmware,
                (true, false, _) => PageState::Metadata,
            };
        }
        match (self.validated, self.immutable) {
            (false, true) => PageState::PreGuest,
            (true, true) => PageState::PreSwap,
            (false, false) => PageState::GuestInvalid,
            (true, false) => PageState::GuestValid,
        }
    }
}

/// The operands of RMPUPDATE (`{u64 gpa; u8 assigned; u8 pagesize; u8 immutable; u32 asid}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmpUpdate {
    /// GPA to record (4 KiB aligned; 2 MiB aligned for a 2 MiB page).
    pub gpa: u64,
    /// ASSIGNED.
    pub assigned: bool,
    /// PAGE_SIZE 2 MiB.
    pub page_2m: bool,
    /// IMMUTABLE.
    pub immutable: bool,
    /// ASID.
    pub asid: u32,
}

impl RmpUpdate {
    /// Back to the host (HYPERVISOR).
    pub fn hypervisor() -> Self {
        RmpUpdate::default()
    }

    /// A 4 KiB FIRMWARE page (assigned, immutable, ASID 0, GPA 0).
    pub fn firmware() -> Self {
        RmpUpdate {
            assigned: true,
            immutable: true,
            ..RmpUpdate::default()
        }
    }

    /// A PRE_GUEST page of `asid` at `gpa` (what KVM does before SNP_LAUNCH_UPDATE).
    pub fn pre_guest(asid: u32, gpa: u64, page_2m: bool) -> Self {
        RmpUpdate {
            gpa,
            assigned: true,
            page_2m,
            immutable: true,
            asid,
        }
    }

    /// A GUEST_INVALID page of `asid` at `gpa` (private, to be PVALIDATEd by the guest).
    pub fn guest(asid: u32, gpa: u64, page_2m: bool) -> Self {
        RmpUpdate {
            gpa,
            assigned: true,
            page_2m,
            immutable: false,
            asid,
        }
    }
}

/// RMPUPDATE / PVALIDATE failure codes (returned in EAX by the instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RmpFail {
    /// FAIL_INPUT (1): misaligned sPA or GPA, sPA outside the RMP, a GPA beyond 52 bits, an
    /// assigned entry with ASID 0 and a GPA, or PVALIDATE on a page not the guest's.
    #[error("RMP: FAIL_INPUT (1): bad address or operand")]
    Input,
    /// FAIL_PERMISSION (2): the entry is immutable (firmware, context, pre-guest pages).
    #[error("RMP: FAIL_PERMISSION (2): the page is immutable")]
    Permission,
    /// FAIL_INUSE (3): the entry is locked by a command in flight.
    #[error("RMP: FAIL_INUSE (3): the entry is locked")]
    InUse,
    /// FAIL_OVERLAP (4): a 4 KiB update inside an assigned 2 MiB page or the reverse.
    #[error("RMP: FAIL_OVERLAP (4): 4 KiB / 2 MiB overlap")]
    Overlap,
    /// PVALIDATE FAIL_SIZEMISMATCH (6).
    #[error("PVALIDATE: FAIL_SIZEMISMATCH (6)")]
    SizeMismatch,
}

impl RmpFail {
    /// The EAX code.
    pub fn code(self) -> u32 {
        match self {
            RmpFail::Input => 1,
            RmpFail::Permission => 2,
            RmpFail::InUse => 3,
            RmpFail::Overlap => 4,
            RmpFail::SizeMismatch => 6,
        }
    }
}

/// 4 KiB entries per chunk of the table (one 2 MiB region).
const CHUNK_PAGES: u64 = 512;

/// The entries of one 2 MiB-aligned region of sPAs, and how many of them are not HYPERVISOR.
#[derive(Clone, PartialEq, Eq)]
struct Chunk {
    used: usize,
    e: Box<[RmpEntry; CHUNK_PAGES as usize]>,
}

/// The sparse RMP: 2 MiB chunks of 512 entries, keyed by chunk number. A lookup is one search
/// among the chunks in use (a 64 MiB launch uses 32) and an index, instead of one search among
/// all the pages' entries; a chunk whose entries are all HYPERVISOR again is dropped, so equal
/// tables compare equal and the table's size follows the pages in use.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Rmp {
    chunks: BTreeMap<u64, Chunk>,
    /// Number of non-HYPERVISOR entries (the sum of the chunks' `used`).
    len: usize,
}

impl std::fmt::Debug for Rmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Rmp {
    /// Every non-HYPERVISOR entry with its page frame number, in sPA order.
    fn iter(&self) -> impl Iterator<Item = (u64, &RmpEntry)> + '_ {
        self.chunks.iter().flat_map(|(c, chunk)| {
            chunk
                .e
                .iter()
                .enumerate()
                .filter(|(_, e)| **e != RmpEntry::default())
                .map(move |(i, e)| (c * CHUNK_PAGES + i as u64, e))
        })
    }

    /// The entry of the 4 KiB page holding `spa` (zero: HYPERVISOR).
    pub fn entry(&self, spa: u64) -> RmpEntry {
        let pfn = spa / PAGE_4K;
        self.chunks
            .get(&(pfn / CHUNK_PAGES))
            .map(|c| c.e[(pfn % CHUNK_PAGES) as usize])
            .unwrap_or_default()
    }

    /// The state of the page holding `spa` (DEFAULT beyond [`RMP_END`]).
    pub fn state(&self, spa: u64) -> PageState {
        if spa >= RMP_END {
            PageState::Default
        } else {
            self.entry(spa).state()
        }
    }

    /// Writes the entry of the page at `spa` (firmware transitions; no checks).
    pub(crate) fn set(&mut self, spa: u64, e: RmpEntry) {
        let pfn = spa / PAGE_4K;
        let (c, i) = (pfn / CHUNK_PAGES, (pfn % CHUNK_PAGES) as usize);
        let none = RmpEntry::default();
        if e == none {
            if let Some(chunk) = self.chunks.get_mut(&c) {
                if chunk.e[i] != none {
                    chunk.e[i] = none;
                    chunk.used -= 1;
                    self.len -= 1;
                    if chunk.used == 0 {
                        self.chunks.remove(&c);
                    }
                }
            }
        } else {
            let chunk = self.chunks.entry(c).or_insert_with(|| Chunk {
                used: 0,
                e: Box::new([none; CHUNK_PAGES as usize]),
            });
            if chunk.e[i] == none {
                chunk.used += 1;
                self.len += 1;
            }
            chunk.e[i] = e;
        }
    }

    /// Number of non-HYPERVISOR entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether every page is HYPERVISOR.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any page is assigned to `asid`.
    pub fn asid_has_pages(&self, asid: u32) -> bool {
        self.iter().any(|(_, e)| e.assigned && e.asid == asid)
    }

    /// The sPAs of every assigned 4 KiB page.
    pub fn assigned_pages(&self) -> Vec<u64> {
        self.iter()
            .filter(|(_, e)| e.assigned)
            .map(|(pfn, _)| pfn * PAGE_4K)
            .collect()
    }

    /// Clears the table (SNP_INIT initialises the RMP).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// RMPUPDATE of the page at `spa` (§5.3): writes the entry (VALIDATED and VMSA cleared,
    /// VMPL1–3 permissions none). Refused on misaligned or out-of-RMP addresses, bad operand
    /// combinations (FAIL_INPUT), immutable or locked current entries (FAIL_PERMISSION,
    /// FAIL_INUSE) and 4 KiB / 2 MiB overlaps (FAIL_OVERLAP); a refusal changes nothing.
    pub fn rmpupdate(&mut self, spa: u64, u: &RmpUpdate) -> Result<(), RmpFail> {
        let size = if u.page_2m { PAGE_2M } else { PAGE_4K };
        if !spa.is_multiple_of(size)
            || spa.checked_add(size).is_none_or(|end| end > RMP_END)
            || !u.gpa.is_multiple_of(size)
            || u.gpa >= RMP_END
            || (u.assigned && u.asid == 0 && u.gpa != 0)
            || (!u.assigned && (u.asid != 0 || u.gpa != 0))
        {
            return Err(RmpFail::Input);
        }
        let n = size / PAGE_4K;
        for i in 0..n {
            let e = self.entry(spa + i * PAGE_4K);
            if e.lock {
                return Err(RmpFail::InUse);
            }
            if e.immutable {
                return Err(RmpFail::Permission);
            }
            if e.assigned && e.page_2m != u.page_2m {
                return Err(RmpFail::Overlap);
            }
        }
        for i in 0..n {
            let e = RmpEntry {
                assigned: u.assigned,
                page_2m: u.assigned && u.page_2m,
                immutable: u.immutable,
                gpa: if u.assigned && u.asid != 0 {
                    u.gpa + i * PAGE_4K
                } else {
                    0
                },
                asid: u.asid,
                ..RmpEntry::default()
            };
            self.set(spa + i * PAGE_4K, e);
        }
        Ok(())
    }

    /// PVALIDATE by the guest of `asid` of its page at `gpa`, backed by `spa`: sets or clears
    /// VALIDATED. Returns whether the bit changed (the instruction sets RFLAGS.CF when not).
    /// FAIL_INPUT when the page is not assigned to `asid` at `gpa`, or is immutable;
    /// FAIL_SIZEMISMATCH when `page_2m` differs from the entry's size.
    pub fn pvalidate(
        &mut self,
        spa: u64,
        asid: u32,
        gpa: u64,
        page_2m: bool,
        validate: bool,
    ) -> Result<bool, RmpFail> {
        let size = if page_2m { PAGE_2M } else { PAGE_4K };
        if asid == 0 || !spa.is_multiple_of(size) || spa >= RMP_END || !gpa.is_multiple_of(size) {
            return Err(RmpFail::Input);
        }
        let e = self.entry(spa);
        if !e.assigned || e.asid != asid || e.gpa != gpa || e.immutable {
            return Err(RmpFail::Input);
        }
        if e.page_2m != page_2m {
            return Err(RmpFail::SizeMismatch);
        }
        if e.validated == validate {
            return Ok(false);
        }
        let n = size / PAGE_4K;
        for i in 0..n {
            let mut e = self.entry(spa + i * PAGE_4K);
            e.validated = validate;
            self.set(spa + i * PAGE_4K, e);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the notes' §5.2 table, from the entry bits.
    #[test]
    fn page_state_table_matches_the_notes() {
        let e = |assigned, validated, asid, immutable, gpa, vmsa| RmpEntry {
            assigned,
            validated,
            asid,
            immutable,
            gpa,
            vmsa,
            ..RmpEntry::default()
        };
        let rows = [
            (e(false, false, 0, false, 0, false), PageState::Hypervisor),
            (e(false, false, 0, true, 0, false), PageState::HvFixed),
            (e(true, false, 0, true, 0, false), PageState::Firmware),
            (e(true, false, 0, false, 0, false), PageState::Reclaim),
            (e(true, false, 0, true, 0, true), PageState::Context),
            (e(true, false, 0, true, 0x5000, false), PageState::Metadata),
            (e(true, false, 3, true, 0x5000, false), PageState::PreGuest),
            (e(true, true, 3, true, 0x5000, false), PageState::PreSwap),
            (
                e(true, false, 3, false, 0x5000, false),
                PageState::GuestInvalid,
            ),
            (
                e(true, true, 3, false, 0x5000, false),
                PageState::GuestValid,
            ),
        ];
        for (entry, want) in rows {
            assert_eq!(entry.state(), want, "{entry:?}");
        }
        let rmp = Rmp::default();
        assert_eq!(rmp.state(0x1000), PageState::Hypervisor);
        assert_eq!(rmp.state(RMP_END), PageState::Default);
    }

    /// The transitions of §5.2 a VMM drives, and RMPUPDATE's refusals changing nothing.
    #[test]
    fn rmpupdate_transitions_and_refusals() {
        let mut r = Rmp::default();
        // HYPERVISOR → PRE_GUEST (immutable: the host cannot take it back).
        r.rmpupdate(0x1000, &RmpUpdate::pre_guest(1, 0x8000, false))
            .unwrap();
        assert_eq!(r.state(0x1000), PageState::PreGuest);
        assert_eq!(r.entry(0x1000).gpa, 0x8000);
        let snap = r.clone();
        assert_eq!(
            r.rmpupdate(0x1000, &RmpUpdate::hypervisor()),
            Err(RmpFail::Permission)
        );
        assert_eq!(r, snap);
        // HYPERVISOR → GUEST_INVALID → (PVALIDATE) → GUEST_VALID → (rescind) → GUEST_INVALID
        // → HYPERVISOR.
        r.rmpupdate(0x2000, &RmpUpdate::guest(1, 0x9000, false))
            .unwrap();
        assert_eq!(r.state(0x2000), PageState::GuestInvalid);
        assert_eq!(
            r.pvalidate(0x2000, 2, 0x9000, false, true),
            Err(RmpFail::Input)
        );
        assert_eq!(
            r.pvalidate(0x2000, 1, 0xA000, false, true),
            Err(RmpFail::Input)
        );
        assert_eq!(
            r.pvalidate(0x2000, 1, 0x9000, true, true),
            Err(RmpFail::Input),
            "misaligned for 2 MiB"
        );
        assert_eq!(r.pvalidate(0x2000, 1, 0x9000, false, true), Ok(true));
        assert_eq!(r.state(0x2000), PageState::GuestValid);
        assert_eq!(r.pvalidate(0x2000, 1, 0x9000, false, true), Ok(false));
        assert_eq!(r.pvalidate(0x2000, 1, 0x9000, false, false), Ok(true));
        r.rmpupdate(0x2000, &RmpUpdate::hypervisor()).unwrap();
        assert_eq!(r.state(0x2000), PageState::Hypervisor);
        // HYPERVISOR → FIRMWARE.
        r.rmpupdate(0x3000, &RmpUpdate::firmware()).unwrap();
        assert_eq!(r.state(0x3000), PageState::Firmware);
        // 2 MiB pages and overlaps.
        r.rmpupdate(0x40_0000, &RmpUpdate::guest(2, 0x20_0000, true))
            .unwrap();
        assert_eq!(r.entry(0x40_1000).gpa, 0x20_1000);
        assert_eq!(
            r.pvalidate(0x40_0000, 2, 0x20_0000, false, true),
            Err(RmpFail::SizeMismatch)
        );
        let snap = r.clone();
        assert_eq!(
            r.rmpupdate(0x40_3000, &RmpUpdate::guest(2, 0x3000, false)),
            Err(RmpFail::Overlap)
        );
        assert_eq!(
            r.rmpupdate(0, &RmpUpdate::guest(2, 0, true)),
            Err(RmpFail::Permission),
            "a 2 MiB page over the PRE_GUEST page at 0x1000"
        );
        // Bad operands.
        for (spa, u) in [
            (0x1234, RmpUpdate::hypervisor()),
            (RMP_END, RmpUpdate::hypervisor()),
            (0x5000, RmpUpdate::guest(1, 0x1001, false)),
            (
                0x5000,
                RmpUpdate {
                    gpa: 0x1000,
                    ..RmpUpdate::firmware()
                },
            ),
            (
                0x5000,
                RmpUpdate {
                    asid: 1,
                    ..RmpUpdate::hypervisor()
                },
            ),
            (0x60_1000, RmpUpdate::guest(1, 0, true)),
        ] {
            assert_eq!(r.rmpupdate(spa, &u), Err(RmpFail::Input), "{spa:#x} {u:?}");
        }
        assert_eq!(r, snap);
        assert!(r.asid_has_pages(2) && r.asid_has_pages(1) && !r.asid_has_pages(3));
    }

    /// The chunked table: entries on both sides of a 2 MiB chunk boundary, the count of
    /// non-HYPERVISOR entries, the sPA order of `assigned_pages`, and a table whose pages all
    /// went back to HYPERVISOR equal to an empty one.
    #[test]
    fn chunked_table_counts_orders_and_empties() {
        let mut r = Rmp::default();
        let spas = [0x1F_F000u64, 0x20_0000, 0x1000, 0x7654_3000];
        for (i, &spa) in spas.iter().enumerate() {
            r.rmpupdate(spa, &RmpUpdate::guest(1, 0x1000 * (i as u64 + 1), false))
                .unwrap();
        }
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.assigned_pages(),
            vec![0x1000, 0x1F_F000, 0x20_0000, 0x7654_3000]
        );
        assert_eq!(r.entry(0x20_0000).gpa, 0x2000);
        assert_eq!(r.state(0x20_1000), PageState::Hypervisor);
        // Writing an entry again does not count it twice.
        r.rmpupdate(0x1000, &RmpUpdate::guest(1, 0x9000, false))
            .unwrap();
        assert_eq!(r.len(), 4);
        // A 2 MiB page is 512 entries.
        r.rmpupdate(0x80_0000, &RmpUpdate::guest(2, 0x40_0000, true))
            .unwrap();
        assert_eq!(r.len(), 4 + 512);
        for spa in spas.into_iter().chain([0x1000]) {
            r.rmpupdate(spa, &RmpUpdate::hypervisor()).unwrap();
        }
        r.rmpupdate(
            0x80_0000,
            &RmpUpdate {
                page_2m: true,
                ..RmpUpdate::hypervisor()
            },
        )
        .unwrap();
        assert!(r.is_empty());
        assert_eq!(r, Rmp::default());
        assert_eq!(format!("{r:?}"), "{}");
    }
}
