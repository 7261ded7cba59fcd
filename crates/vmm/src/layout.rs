//! Every guest-physical constant of the machine, in one place.
//!
//! This is ABI: an SEV launch measures what the VMM places at these addresses, so a change
//! here changes launch digests. `docs/LAYOUT.md` mirrors this file; keep them in sync.
//! This module only declares numbers; it never touches memory.

/// Size of one 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;

/// Start of the GDT (null, code64 0x08, data 0x10, code32 0x18, user code64 0x23,
/// user data 0x2b, 64-bit TSS 0x30).
pub const GDT_START: u64 = 0x0000_1000;
/// Number of 8-byte GDT slots used (the TSS descriptor takes two).
pub const GDT_ENTRIES: usize = 8;
/// Start of the IDT. The VMM loads it with limit 0: any exception before the guest installs
/// its own IDT is a triple fault (reported as [`crate::ExitStatus::TripleFault`]).
pub const IDT_START: u64 = 0x0000_2000;
/// Start of the 64-bit TSS.
pub const TSS_START: u64 = 0x0000_3000;
/// Offset of the I/O permission bitmap inside the TSS.
pub const TSS_IOMAP_OFFSET: u64 = 0x68;
/// TSS limit: header, 8 KiB all-zero I/O bitmap (every port allowed), 0xFF terminator byte.
pub const TSS_LIMIT: u64 = TSS_IOMAP_OFFSET + 0x2000;
/// Scratch page: never written by the VMM after the VM is created, so it survives resets.
pub const SCRATCH: u64 = 0x0000_6000;
/// Reset counter used by the bundled `reset` guest (u32).
pub const RESET_COUNTER: u64 = SCRATCH;
/// Count of application processors that checked in (u32, bundled guests).
pub const AP_ONLINE: u64 = SCRATCH + 0x10;
/// Per-vCPU progress counters of the bundled `ticker` guest (u64 at `TICKS + 8 * index`).
pub const TICKS: u64 = SCRATCH + 0x100;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x0000_7000;
/// Top of the boot stack of vCPU 0 (grows down); vCPU n uses `BOOT_STACK_TOP - n * BOOT_STACK_SIZE`.
pub const BOOT_STACK_TOP: u64 = 0x0008_0000;
/// Boot stack size per vCPU.
pub const BOOT_STACK_SIZE: u64 = 0x4000;
/// Most vCPUs a VM booting a bundled guest may have (their boot stacks fill
/// `0x6_0000..0x8_0000`).
pub const MAX_CPUS: u8 = 8;
/// Most vCPUs a VM booting Linux or a firmware may have (also capped by KVM's
/// `KVM_CAP_MAX_VCPUS`): xAPIC IDs are 8 bits, 0xFF is the broadcast ID, and the IOAPIC takes
/// the ID after the last vCPU's (see [`crate::mptable`]).
pub const MAX_LINUX_CPUS: u8 = 254;
/// PML4 of the identity map built by the VMM.
pub const PML4_START: u64 = 0x0000_9000;
/// PDPT of the identity map.
pub const PDPT_START: u64 = 0x0000_a000;
/// Four page directories (2 MiB pages) mapping 0..4 GiB.
pub const PD_START: u64 = 0x0000_b000;
/// Number of page directories.
pub const PD_COUNT: u64 = 4;
/// End (exclusive) of the boot tables region (GDT..PDs), measured as one range.
pub const BOOT_TABLES_END: u64 = PD_START + PD_COUNT * PAGE_SIZE;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x0002_0000;
/// Maximum command line size including the terminating NUL.
pub const CMDLINE_MAX_SIZE: u64 = 0x1_0000;
/// EFI secret area (SEV `LAUNCH_SECRET` target); reported as reserved in the E820 map.
pub const SECRET_AREA_START: u64 = 0x0003_0000;
/// Size of the EFI secret area. A secret packet larger than this is refused.
pub const SECRET_AREA_SIZE: u64 = 0x4000;
/// Start of the EBDA hole (not RAM for Linux).
pub const EBDA_START: u64 = 0x0009_fc00;
/// The MP table (floating pointer, then the configuration table) of a Linux boot, in the
/// BIOS area Linux scans (`0xF0000..0x100000`); see [`crate::mptable`].
pub const MPTABLE_START: u64 = 0x000f_0000;
/// Room reserved for the MP table (enough for [`MAX_LINUX_CPUS`] processor entries).
pub const MPTABLE_MAX_SIZE: u64 = 0x2000;
/// Guest-physical address of the in-kernel IOAPIC (KVM's fixed `IOAPIC_DEFAULT_BASE_ADDRESS`).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Pins of the in-kernel IOAPIC (`KVM_IOAPIC_NUM_PINS`).
pub const IOAPIC_PINS: u8 = 24;
/// Guest-physical address of every local APIC.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// The IOAPIC pin (= ISA IRQ = GSI) of COM1.
pub const COM1_IRQ: u32 = 4;
/// The first virtio-mmio device window (4 KiB each, one after another; the 32-bit MMIO hole
/// below the IOAPIC, as Firecracker places them).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// The ISA IRQs (= IOAPIC pins = GSIs) of virtio-mmio devices, in device order: the ones the
/// MP table leaves free (0 timer, 1 keyboard, 2 cascade, 3/4 serial, 8 RTC, 12 mouse, 13 FPU).
pub const VIRTIO_IRQS: [u32; 6] = [5, 6, 7, 9, 10, 11];
/// Where bundled guest images are loaded.
pub const BUNDLED_LOAD_ADDR: u64 = 0x0010_0000;
/// Where a Linux kernel is loaded (the "high memory" start of the boot protocol).
pub const KERNEL_START: u64 = 0x0010_0000;
/// Highest address (exclusive) an initrd may end at, whatever the RAM size.
pub const INITRD_MAX_END: u64 = 0x3800_0000;
/// Firmware images are mapped so that they end at 4 GiB.
pub const FIRMWARE_END: u64 = 0x1_0000_0000;
/// Largest firmware image accepted.
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// RAM ends at most here (below the firmware and MMIO hole).
pub const RAM_MAX: u64 = 0xc000_0000;
/// Smallest RAM size accepted.
pub const RAM_MIN: u64 = 4 << 20;
/// COM1 base port (16550).
pub const COM1_PORT: u16 = 0x3f8;
/// i8042 command port; writing 0xFE resets the machine.
pub const I8042_CMD_PORT: u16 = 0x64;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Exit port: a guest `out` of byte `v` stops the VM with [`crate::ExitStatus::Exited`]`(v)`.
pub const EXIT_PORT: u16 = 0xf4;
/// SEV-SNP, sevm's own layout: the secrets page (LAUNCH_UPDATE page type SECRETS; measured).
pub const SNP_SECRETS: u64 = 0x0004_0000;
/// SEV-SNP: the CPUID page (page type CPUID; measured).
pub const SNP_CPUID: u64 = 0x0004_1000;
/// SEV-SNP: the guest-request doorbell block standing in for the GHCB (shared, not measured;
/// [`crate::snp_request`]).
pub const SNP_GHCB: u64 = 0x0004_2000;
/// SEV-SNP: the request message page bundled guests use (shared, not measured).
pub const SNP_REQ_PAGE: u64 = 0x0004_3000;
/// SEV-SNP: the response message page bundled guests use (shared, not measured).
pub const SNP_RESP_PAGE: u64 = 0x0004_4000;
/// SEV-SNP: the certificate buffer bundled guests use for extended requests (shared).
pub const SNP_CERTS: u64 = 0x0004_5000;
/// SEV-SNP: pages in [`SNP_CERTS`].
pub const SNP_CERTS_PAGES: u64 = 4;
/// SEV-SNP: parameters the VMM gives a bundled SNP guest before its first run (shared, not
/// measured): `+0x00` u32 flags (bit 0: REPORT_DATA given), `+0x40` the 64-byte REPORT_DATA.
pub const SNP_PARAMS: u64 = 0x0004_9000;
/// SEV-SNP: where a bundled SNP guest puts the decrypted MSG_REPORT_RSP (status u32, size u32,
/// 24 reserved bytes, then the report) for the VMM's `--report-out` (shared, not measured).
pub const SNP_REPORT_OUT: u64 = 0x0004_a000;
/// SEV-SNP: writing any byte here rings the guest-request doorbell ([`crate::snp_request`]).
pub const SNP_DOORBELL_PORT: u16 = 0xf5;
/// SEV-SNP: the sealed-secret box page (`sevm demo --snp`; shared, not measured).
pub const SNP_BOX: u64 = 0x0004_b000;
/// SNP_PARAMS flags (byte 0) bit 4: the sealed-secret exchange of `sevm demo --snp`.
pub const SNP_PARAMS_FLAG_SEALED_SECRET: u8 = 0x10;
/// Real-mode reset vector (CS base 0xFFFF0000, IP 0xFFF0).
pub const RESET_VECTOR: u64 = 0xffff_fff0;

/// A secret that does not fit the EFI secret area.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("secret of {len} bytes at guest-physical {gpa:#x} is refused: it must lie inside the EFI secret area [{start:#x}, {end:#x})", start = SECRET_AREA_START, end = SECRET_AREA_START + SECRET_AREA_SIZE)]
pub struct SecretOutsideArea {
    /// Requested GPA.
    pub gpa: u64,
    /// Requested length.
    pub len: u64,
}

/// Checks that a secret of `len` bytes injected at `gpa` lies inside the secret area
/// (what the SEV layer must check before `LAUNCH_SECRET`).
pub fn check_secret_range(gpa: u64, len: u64) -> Result<(), SecretOutsideArea> {
    let end = gpa.checked_add(len);
    let ok = gpa >= SECRET_AREA_START
        && end.is_some_and(|e| e <= SECRET_AREA_START + SECRET_AREA_SIZE)
        && len > 0;
    if ok {
        Ok(())
    } else {
        Err(SecretOutsideArea { gpa, len })
    }
}

// Compile-time checks of the layout's invariants.
const _: () = assert!(SECRET_AREA_SIZE >= 16 * 1024);
const _: () = assert!(SECRET_AREA_START.is_multiple_of(PAGE_SIZE));
const _: () = assert!(BOOT_STACK_TOP <= EBDA_START);
const _: () = assert!(SECRET_AREA_START + SECRET_AREA_SIZE <= SNP_SECRETS);
const _: () = assert!(
    SNP_CERTS + SNP_CERTS_PAGES * PAGE_SIZE <= BOOT_STACK_TOP - BOOT_STACK_SIZE * MAX_CPUS as u64
);
const _: () = assert!(RAM_MAX <= FIRMWARE_END - FIRMWARE_MAX_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bundled_guest_abi() {
        use guests::abi;
        assert_eq!(abi::LOAD_ADDR, BUNDLED_LOAD_ADDR);
        assert_eq!(abi::SCRATCH, SCRATCH);
        assert_eq!(abi::RESET_COUNTER, RESET_COUNTER);
        assert_eq!(abi::AP_ONLINE, AP_ONLINE);
        assert_eq!(abi::TICKS, TICKS);
        assert_eq!(abi::SECRET_AREA, SECRET_AREA_START);
        assert_eq!(abi::SECRET_AREA_SIZE, SECRET_AREA_SIZE);
        assert_eq!(abi::COM1, COM1_PORT);
        assert_eq!(abi::EXIT_PORT, EXIT_PORT);
        assert_eq!(abi::I8042_CMD, I8042_CMD_PORT);
        assert_eq!(abi::SNP_SECRETS, SNP_SECRETS);
        assert_eq!(abi::SNP_CPUID, SNP_CPUID);
        assert_eq!(abi::SNP_GHCB, SNP_GHCB);
        assert_eq!(abi::SNP_REQ_PAGE, SNP_REQ_PAGE);
        assert_eq!(abi::SNP_RESP_PAGE, SNP_RESP_PAGE);
        assert_eq!(abi::SNP_CERTS, SNP_CERTS);
        assert_eq!(abi::SNP_CERTS_PAGES, SNP_CERTS_PAGES);
        assert_eq!(abi::SNP_DOORBELL_PORT, SNP_DOORBELL_PORT);
        assert_eq!(abi::SNP_PARAMS, SNP_PARAMS);
        assert_eq!(abi::SNP_REPORT_OUT, SNP_REPORT_OUT);
        assert_eq!(abi::SNP_BOX, SNP_BOX);
        assert_eq!(
            abi::SNP_PARAMS_FLAG_SEALED_SECRET,
            u32::from(SNP_PARAMS_FLAG_SEALED_SECRET)
        );
        assert_eq!(
            abi::SNP_EXIT_OWNER_SECRET,
            crate::snp_request::EXIT_OWNER_SECRET
        );
    }

    #[test]
    fn secret_range_checks() {
        assert_eq!(
            check_secret_range(SECRET_AREA_START, SECRET_AREA_SIZE),
            Ok(())
        );
        assert_eq!(check_secret_range(SECRET_AREA_START + 16, 64), Ok(()));
        let e = check_secret_range(SECRET_AREA_START, SECRET_AREA_SIZE + 1).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(check_secret_range(SECRET_AREA_START - 1, 16).is_err());
        assert!(check_secret_range(SECRET_AREA_START, 0).is_err());
        assert!(check_secret_range(u64::MAX - 1, 16).is_err());
    }

    #[test]
    fn regions_do_not_overlap() {
        let mut r = [
            (GDT_START, GDT_START + GDT_ENTRIES as u64 * 8),
            (IDT_START, IDT_START + PAGE_SIZE),
            (TSS_START, TSS_START + TSS_LIMIT + 1),
            (SCRATCH, SCRATCH + PAGE_SIZE),
            (ZERO_PAGE_START, ZERO_PAGE_START + PAGE_SIZE),
            (PML4_START, PML4_START + PAGE_SIZE),
            (PDPT_START, PDPT_START + PAGE_SIZE),
            (PD_START, BOOT_TABLES_END),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE),
            (SECRET_AREA_START, SECRET_AREA_START + SECRET_AREA_SIZE),
            (
                BOOT_STACK_TOP - MAX_CPUS as u64 * BOOT_STACK_SIZE,
                BOOT_STACK_TOP,
            ),
            (BUNDLED_LOAD_ADDR, BUNDLED_LOAD_ADDR + 0x10_0000),
            (MPTABLE_START, MPTABLE_START + MPTABLE_MAX_SIZE),
        ];
        r.sort();
        for w in r.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:#x?} overlaps {:#x?}", w[0], w[1]);
        }
    }
}
