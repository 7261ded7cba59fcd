//! The one way devices touch guest memory. For an SEV or SNP guest the VMM knows some ranges
//! are private (launch-measured memory, the secret area, SNP private pages): a device must never
//! read or write them, since on hardware it would read ciphertext or corrupt the guest. Every
//! device access goes through [`GuestAccess`], which refuses such a range; the request fails,
//! the refusal is logged once per address, and the VMM keeps running.

use std::collections::BTreeSet;
use std::sync::Mutex;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// How many distinct refused addresses are logged before logging stops (a guest that keeps
/// posting bad descriptors must not flood the log).
const MAX_LOGGED: usize = 64;

/// Why a device access was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// The range wraps around the address space.
    #[error("guest range at {gpa:#x} of {len:#x} bytes overflows the address space")]
    Overflow {
        /// Start of the range.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The range overlaps memory private to the guest.
    #[error("guest range {gpa:#x}+{len:#x} overlaps private memory {start:#x}..{end:#x}: a device may only use shared memory")]
    Private {
        /// Start of the range.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Start of the private range it overlaps.
        start: u64,
        /// End (exclusive) of that private range.
        end: u64,
    },
    /// The range is not (wholly) in guest RAM.
    #[error("guest range {gpa:#x}+{len:#x} is not in guest RAM")]
    OutsideRam {
        /// Start of the range.
        gpa: u64,
        /// Its length.
        len: u64,
    },
}

/// Guest-physical ranges the VMM knows are private (sorted, merged, half-open).
#[derive(Debug, Default)]
pub struct PrivateRanges {
    ranges: Vec<(u64, u64)>,
    logged: Mutex<BTreeSet<u64>>,
}

impl PrivateRanges {
    /// No private memory (a plain guest).
    pub fn none() -> Self {
        Self::default()
    }

    /// Marks `gpa..gpa+len` private. Empty or wrapping ranges are ignored.
    pub fn add(&mut self, gpa: u64, len: u64) {
        let Some(end) = gpa.checked_add(len) else {
            return;
        };
        if len == 0 {
            return;
        }
        self.ranges.push((gpa, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.ranges = merged;
    }

    /// The private ranges, sorted and merged.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Checks that `gpa..gpa+len` touches no private range.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), AccessError> {
        let end = gpa
            .checked_add(len)
            .ok_or(AccessError::Overflow { gpa, len })?;
        // The first range that ends after gpa is the only one that can overlap first.
        let i = self.ranges.partition_point(|&(_, e)| e <= gpa);
        match self.ranges.get(i) {
            Some(&(s, e)) if s < end && len > 0 => {
                let err = AccessError::Private {
                    gpa,
                    len,
                    start: s,
                    end: e,
                };
                self.log_once(gpa, &err);
                Err(err)
            }
            _ => Ok(()),
        }
    }

    fn log_once(&self, gpa: u64, err: &AccessError) {
        let Ok(mut seen) = self.logged.lock() else {
            return;
        };
        if seen.len() < MAX_LOGGED && seen.insert(gpa) {
            tracing::warn!("virtio: refused device access: {err}");
            if seen.len() == MAX_LOGGED {
                tracing::warn!(
                    "virtio: {MAX_LOGGED} refused addresses logged; further ones are not"
                );
            }
        }
    }

    /// How many distinct refused addresses have been logged.
    pub fn logged_count(&self) -> usize {
        self.logged.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// Guest memory as a device may see it: RAM minus the private ranges.
#[derive(Clone, Copy)]
pub struct GuestAccess<'a> {
    mem: &'a GuestMemoryMmap,
    private: &'a PrivateRanges,
}

impl<'a> GuestAccess<'a> {
    /// Device access to `mem`, refusing `private`.
    pub fn new(mem: &'a GuestMemoryMmap, private: &'a PrivateRanges) -> Self {
        GuestAccess { mem, private }
    }

    /// The underlying memory, for the queue's own ring accesses (checked with
    /// [`GuestAccess::check`] when the queue is activated).
    pub fn memory(&self) -> &'a GuestMemoryMmap {
        self.mem
    }

    /// Checks that a device may use `gpa..gpa+len`: in RAM and not private.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), AccessError> {
        self.private.check(gpa, len)?;
        if len == 0 {
            return Ok(());
        }
        let ok = usize::try_from(len).is_ok_and(|n| {
            self.mem
                .check_range(GuestAddress(gpa), n, Permissions::ReadWrite)
        });
        if ok {
            Ok(())
        } else {
            Err(AccessError::OutsideRam { gpa, len })
        }
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.check(gpa, buf.len() as u64)?;
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| AccessError::OutsideRam {
                gpa,
                len: buf.len() as u64,
            })
    }

    /// Writes `buf` at `gpa`.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), AccessError> {
        self.check(gpa, buf.len() as u64)?;
        self.mem
            .write_slice(buf, GuestAddress(gpa))
            .map_err(|_| AccessError::OutsideRam {
                gpa,
                len: buf.len() as u64,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn private_ranges_merge_and_refuse_overlaps() {
        let mut p = PrivateRanges::none();
        p.add(0x1000, 0x1000);
        p.add(0x1800, 0x1000);
        p.add(0x8000, 0x10);
        p.add(5, 0);
        assert_eq!(p.ranges(), &[(0x1000, 0x2800), (0x8000, 0x8010)]);
        assert!(p.check(0, 0x1000).is_ok());
        assert!(p.check(0x2800, 0x5800).is_ok());
        assert!(matches!(
            p.check(0xfff, 2),
            Err(AccessError::Private { start: 0x1000, .. })
        ));
        assert!(p.check(0x7000, 0x1001).is_err());
        assert!(p.check(0x800f, 1).is_err());
        assert!(p.check(0x8010, 1).is_ok());
        assert!(matches!(
            p.check(u64::MAX, 2),
            Err(AccessError::Overflow { .. })
        ));
        // Refusals at two distinct addresses, one repeated: logged twice.
        assert_eq!(p.logged_count(), 3);
        let _ = p.check(0xfff, 2);
        assert_eq!(p.logged_count(), 3);
    }

    #[test]
    fn access_reads_and_writes_shared_ram_only() {
        let m = mem();
        let mut p = PrivateRanges::none();
        p.add(0x4000, 0x1000);
        let a = GuestAccess::new(&m, &p);
        a.write(0x3ff0, &[7; 16]).unwrap();
        let mut b = [0u8; 16];
        a.read(0x3ff0, &mut b).unwrap();
        assert_eq!(b, [7; 16]);
        assert!(matches!(
            a.write(0x3ff8, &[1; 16]),
            Err(AccessError::Private { .. })
        ));
        // Nothing of the refused write landed, not even its shared half.
        a.read(0x3ff0, &mut b).unwrap();
        assert_eq!(b, [7; 16]);
        assert!(matches!(
            a.read((1 << 20) - 8, &mut b),
            Err(AccessError::OutsideRam { .. })
        ));
        assert!(matches!(
            a.read(1 << 47, &mut b),
            Err(AccessError::OutsideRam { .. })
        ));
    }
}
