//! Guest RAM: size parsing (`256M`, `1G`, ...) and the host mapping of guest memory.
//!
//! Guest RAM is one anonymous mapping at GPA 0 (`vm_memory::GuestMemoryMmap`); a firmware
//! image, when present, is a second region ending at 4 GiB.
//!
//! For SEV-SNP VMs, the private half of guest RAM: guest_memfd ([`create_guest_memfd`]),
//! memslots that carry it ([`set_guest_memfd_region`]) and the PRIVATE attribute
//! ([`set_private`]), each after the capability KVM reports for the VM
//! ([`PrivateMemorySupport`]); the ioctls themselves are `sev_firmware::hw::snp`'s.

use crate::layout;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Errors about guest memory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The size string is empty or not `<number>[B|K|M|G|T]`.
    #[error("memory size {0:?} is malformed: expected a number of MiB, or a number with a B, K, M, G or T suffix (e.g. 256M), as QEMU's -m")]
    Malformed(String),
    /// The size is below the minimum.
    #[error("memory size {size:#x} bytes is too small: at least {min} MiB is needed")]
    TooSmall {
        /// Requested size.
        size: u64,
        /// Minimum in MiB.
        min: u64,
    },
    /// The size is above the maximum.
    #[error("memory size {size:#x} bytes is too large: at most {max} MiB (RAM ends below the 3 GiB MMIO/firmware hole)")]
    TooLarge {
        /// Requested size.
        size: u64,
        /// Maximum in MiB.
        max: u64,
    },
    /// The size is not a multiple of 4 KiB.
    #[error("memory size {0:#x} bytes is not a multiple of 4 KiB")]
    Unaligned(u64),
    /// mmap of guest memory failed.
    #[error("cannot map {size:#x} bytes of guest memory: {msg}")]
    Map {
        /// Size of the mapping.
        size: u64,
        /// Underlying error.
        msg: String,
    },
}

/// What KVM offers a VM for private memory (KVM_CHECK_EXTENSION on the VM fd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateMemorySupport {
    /// KVM_CAP_GUEST_MEMFD.
    pub guest_memfd: bool,
    /// KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2).
    pub user_memory2: bool,
    /// KVM_CAP_MEMORY_ATTRIBUTES: the attributes KVM_SET_MEMORY_ATTRIBUTES accepts.
    pub attributes: u64,
}

impl PrivateMemorySupport {
    /// Asks KVM about the VM `vm`.
    pub fn of(vm: &kvm_ioctls::VmFd) -> Self {
        use sev_firmware::hw::snp as s;
        let cap = |c: u32| vm.check_extension_raw(c as libc::c_ulong);
        PrivateMemorySupport {
            guest_memfd: cap(s::KVM_CAP_GUEST_MEMFD) > 0,
            user_memory2: cap(s::KVM_CAP_USER_MEMORY2) > 0,
            attributes: cap(s::KVM_CAP_MEMORY_ATTRIBUTES).max(0) as u64,
        }
    }

    /// Whether the PRIVATE attribute can be set (else the private/shared split stays in user
    /// space, as the soft backend keeps it).
    pub fn private_attribute(&self) -> bool {
        self.attributes & sev_firmware::hw::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
    }
}

/// Errors of the private-memory calls.
#[derive(Debug, thiserror::Error)]
pub enum PrivateMemoryError {
    /// KVM does not offer what the call needs (its capability says so; the ioctl was not
    /// issued).
    #[error("{ioctl}: this KVM does not offer it for this VM: {cap} = {value:#x}{hint}")]
    Unsupported {
        /// The ioctl that would be needed.
        ioctl: &'static str,
        /// The capability asked.
        cap: &'static str,
        /// Its value.
        value: u64,
        /// What that means (e.g. the errno the ioctl would give).
        hint: &'static str,
    },
    /// KVM refused the call.
    #[error(transparent)]
    Kvm(#[from] sev_firmware::FwError),
}

/// KVM_CREATE_GUEST_MEMFD of `size` bytes on `vm`, after KVM_CAP_GUEST_MEMFD.
pub fn create_guest_memfd(
    vm: &kvm_ioctls::VmFd,
    size: u64,
) -> Result<std::os::fd::OwnedFd, PrivateMemoryError> {
    use std::os::fd::AsRawFd;
    let sup = PrivateMemorySupport::of(vm);
    if !sup.guest_memfd {
        return Err(PrivateMemoryError::Unsupported {
            ioctl: "KVM_CREATE_GUEST_MEMFD",
            cap: "KVM_CAP_GUEST_MEMFD",
            value: 0,
            hint: " (no guest_memfd: Linux 6.8+ and a VM type with private memory are needed)",
        });
    }
    Ok(sev_firmware::hw::snp::create_guest_memfd(
        &sev_firmware::hw::SysIoctl,
        vm.as_raw_fd(),
        size,
    )?)
}

/// KVM_SET_USER_MEMORY_REGION2: memslot `slot` at `gpa`, `size` bytes, shared pages at `host`
/// and private pages in `gmem` from `gmem_offset`, after KVM_CAP_USER_MEMORY2.
///
/// # Safety
/// `[host, host + size)` must stay a valid writable mapping while the slot exists.
pub unsafe fn set_guest_memfd_region(
    vm: &kvm_ioctls::VmFd,
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
    gmem: &std::os::fd::OwnedFd,
    gmem_offset: u64,
) -> Result<(), PrivateMemoryError> {
    use std::os::fd::AsRawFd;
    if !PrivateMemorySupport::of(vm).user_memory2 {
        return Err(PrivateMemoryError::Unsupported {
            ioctl: "KVM_SET_USER_MEMORY_REGION2",
            cap: "KVM_CAP_USER_MEMORY2",
            value: 0,
            hint: " (Linux 6.8+ is needed)",
        });
    }
    // SAFETY: forwarded from this function's contract.
    unsafe {
        sev_firmware::hw::snp::set_user_memory_region2(
            &sev_firmware::hw::SysIoctl,
            vm.as_raw_fd(),
            slot,
            gpa,
            size,
            host,
            gmem.as_raw_fd(),
            gmem_offset,
        )
    }?;
    Ok(())
}

/// KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) of `[gpa, gpa + size)` on `vm`, after
/// KVM_CAP_MEMORY_ATTRIBUTES. A KVM without the attribute (0 on a default VM, and on a KVM
/// built without memory attributes, whose ioctl then answers ENOTTY) is refused with an error
/// that says so, without issuing the ioctl.
pub fn set_private(vm: &kvm_ioctls::VmFd, gpa: u64, size: u64) -> Result<(), PrivateMemoryError> {
    use std::os::fd::AsRawFd;
    let sup = PrivateMemorySupport::of(vm);
    if !sup.private_attribute() {
        return Err(PrivateMemoryError::Unsupported {
            ioctl: "KVM_SET_MEMORY_ATTRIBUTES",
            cap: "KVM_CAP_MEMORY_ATTRIBUTES",
            value: sup.attributes,
            hint: " (no PRIVATE attribute; where KVM lacks memory attributes the ioctl \
                   answers ENOTTY): keep the private/shared split in user space",
        });
    }
    Ok(sev_firmware::hw::snp::set_memory_attributes(
        &sev_firmware::hw::SysIoctl,
        vm.as_raw_fd(),
        gpa,
        size,
        sev_firmware::hw::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE,
    )?)
}

/// Parses a memory size as QEMU's `-m` does: a bare number is MiB (`256` = 256 MiB), a
/// suffix gives the unit (`B` bytes, `K`, `M`, `G`, `T`, any case, optionally followed by `B`
/// or `iB`: `65536K`, `512MB`, `1GiB`); the number is decimal or `0x` hex. The size is checked
/// against [`layout::RAM_MIN`] and [`layout::RAM_MAX`] ([`check_memory_size`]).
pub fn parse_memory_size(s: &str) -> Result<u64, MemoryError> {
    let t = s.trim();
    let bad = || MemoryError::Malformed(s.to_string());
    // "256MB" / "256MiB" are "256M"; a lone "B" means bytes.
    let t = ["iB", "ib", "B", "b"]
        .iter()
        .find_map(|suf| {
            t.strip_suffix(suf)
                .filter(|r| r.ends_with(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']))
        })
        .unwrap_or(t);
    let (num, mult) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        None => return Err(bad()),
        Some(b'B') => (&t[..t.len() - 1], 1u64),
        Some(b'K') => (&t[..t.len() - 1], 1 << 10),
        Some(b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'G') => (&t[..t.len() - 1], 1 << 30),
        Some(b'T') => (&t[..t.len() - 1], 1 << 40),
        // QEMU: "If no suffix is given, the value is in megabytes".
        Some(_) => (t, 1 << 20),
    };
    let n = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if num.bytes().all(|b| b.is_ascii_digit()) {
        num.parse::<u64>()
    } else {
        return Err(bad());
    }
    .map_err(|_| bad())?;
    let size = n.checked_mul(mult).ok_or_else(bad)?;
    check_memory_size(size)?;
    Ok(size)
}

/// Checks a RAM size in bytes against the machine's limits.
pub fn check_memory_size(size: u64) -> Result<(), MemoryError> {
    if size < layout::RAM_MIN {
        return Err(MemoryError::TooSmall {
            size,
            min: layout::RAM_MIN >> 20,
        });
    }
    if size > layout::RAM_MAX {
        return Err(MemoryError::TooLarge {
            size,
            max: layout::RAM_MAX >> 20,
        });
    }
    if !size.is_multiple_of(layout::PAGE_SIZE) {
        return Err(MemoryError::Unaligned(size));
    }
    Ok(())
}

/// Maps guest RAM at GPA 0 and, if `firmware_size` is given, a firmware region ending at 4 GiB.
pub fn create_guest_memory(
    ram: u64,
    firmware_size: Option<u64>,
) -> Result<GuestMemoryMmap, MemoryError> {
    check_memory_size(ram)?;
    let mut ranges = vec![(GuestAddress(0), ram as usize)];
    if let Some(fw) = firmware_size {
        let fw = fw.next_multiple_of(layout::PAGE_SIZE);
        ranges.push((GuestAddress(layout::FIRMWARE_END - fw), fw as usize));
    }
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map {
        size: ram,
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_memory_size("256M"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256m"), Ok(256 << 20));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_memory_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_memory_size("8192K"), Ok(8 << 20));
        assert_eq!(parse_memory_size("16777216B"), Ok(16 << 20));
        assert_eq!(parse_memory_size("0x1000000b"), Ok(16 << 20));
    }

    #[test]
    fn finding17_bare_numbers_are_mib_as_in_qemu() {
        // QEMU's `-m 4096` is 4 GiB, not 4096 bytes; `-m 0x10` is 16 MiB.
        assert_eq!(parse_memory_size("64"), Ok(64 << 20));
        assert_eq!(parse_memory_size(" 256 "), Ok(256 << 20));
        assert_eq!(parse_memory_size("0x10"), Ok(16 << 20));
        assert!(matches!(
            parse_memory_size("4096"),
            Err(MemoryError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_memory_size("1"),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            parse_memory_size("1T"),
            Err(MemoryError::TooLarge { .. })
        ));
        for bad in ["B", "KB", "+64", "6 4", "64X"] {
            assert!(
                matches!(parse_memory_size(bad), Err(MemoryError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_sizes_with_clear_errors() {
        for s in [
            "",
            "M",
            "12X",
            "abc",
            "-1M",
            "1.5G",
            "99999999999999999999G",
        ] {
            let e = parse_memory_size(s).unwrap_err();
            assert!(matches!(e, MemoryError::Malformed(_)), "{s}: {e}");
            assert!(e.to_string().contains("malformed"));
        }
        let e = parse_memory_size("1M").unwrap_err();
        assert!(matches!(e, MemoryError::TooSmall { .. }));
        assert!(e.to_string().contains("too small"), "{e}");
        assert!(matches!(
            parse_memory_size("4G"),
            Err(MemoryError::TooLarge { .. })
        ));
        assert_eq!(
            parse_memory_size("4194305B"),
            Err(MemoryError::Unaligned(4194305))
        );
    }

    #[test]
    fn private_memory_calls_say_what_this_kvm_lacks() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let kvm = kvm_ioctls::Kvm::new().expect("opening /dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let sup = PrivateMemorySupport::of(&vm);
        // A default VM never has the PRIVATE attribute (on this machine's 6.18 KVM the
        // capability is 0 and the ioctl ENOTTY).
        assert!(!sup.private_attribute(), "{sup:?}");
        let e = set_private(&vm, 0, 0x1000).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("KVM_SET_MEMORY_ATTRIBUTES") && msg.contains("KVM_CAP_MEMORY_ATTRIBUTES"),
            "{msg}"
        );
        assert!(msg.contains("ENOTTY"), "{msg}");
        // The ioctl itself, issued anyway: ENOTTY (no memory attributes in this KVM) or EINVAL
        // (no PRIVATE for this VM); the error explains either.
        use std::os::fd::AsRawFd;
        let e = sev_firmware::hw::snp::set_memory_attributes(
            &sev_firmware::hw::SysIoctl,
            vm.as_raw_fd(),
            0,
            0x1000,
            sev_firmware::hw::snp::KVM_MEMORY_ATTRIBUTE_PRIVATE,
        )
        .unwrap_err();
        let sev_firmware::FwError::Kvm { source, .. } = &e else {
            panic!("expected a KVM refusal, got {e}");
        };
        let errno = source.raw_os_error();
        assert!(
            matches!(errno, Some(libc::ENOTTY) | Some(libc::EINVAL)),
            "{e}"
        );
        assert!(e.to_string().contains("does not offer"), "{e}");
        if errno == Some(libc::ENOTTY) {
            assert!(e.to_string().contains("ENOTTY"), "{e}");
        }
        // guest_memfd, where KVM has it (this machine: KVM_CAP_GUEST_MEMFD = 1 on a default VM).
        match create_guest_memfd(&vm, 0x1000) {
            Ok(_) => assert!(sup.guest_memfd),
            Err(PrivateMemoryError::Unsupported { cap, .. }) => {
                assert_eq!(cap, "KVM_CAP_GUEST_MEMFD");
                assert!(!sup.guest_memfd);
            }
            Err(e) => panic!("guest_memfd offered but refused: {e}"),
        }
        // An SNP VM type on a KVM without SNP: the error names the VM types mask.
        let e = sev_firmware::hw::snp::create_snp_vm(&sev_firmware::hw::SysIoctl, kvm.as_raw_fd());
        if let Err(e) = e {
            assert!(e.to_string().contains("KVM_CAP_VM_TYPES"), "{e}");
        }
    }

    #[test]
    fn firmware_region_ends_at_4g() {
        use vm_memory::GuestMemoryBackend;
        let m = create_guest_memory(16 << 20, Some(0x1800)).unwrap();
        assert_eq!(m.num_regions(), 2);
        assert!(m.address_in_range(GuestAddress(0xffff_e000)));
        assert!(m.address_in_range(GuestAddress(0xffff_ffff)));
        assert!(!m.address_in_range(GuestAddress(0xffff_dfff)));
    }
}
