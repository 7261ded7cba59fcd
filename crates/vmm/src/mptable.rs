//! The Intel MultiProcessor Specification 1.4 table sevm gives a Linux guest: one processor
//! entry per vCPU, the ISA bus, the in-kernel IOAPIC and its 24 pins, the local interrupt
//! lines. With it Linux finds its CPUs (`--cpus N`) and routes the legacy interrupts through
//! the IOAPIC instead of running the PIC in virtual-wire mode through LINT0 (see
//! `../shared/reference/linux-under-nested-kvm.md`: that path loses PIT ticks and hangs
//! `calibrate_delay`).
//!
//! The table describes what KVM gives a VM with the full in-kernel irqchip
//! (`KVM_CREATE_IRQCHIP`) and KVM's default GSI routing: GSI `i` (< 24) is IOAPIC pin `i`, so
//! ISA IRQ `i` goes to pin `i` (the PIT's IRQ 0 to pin 0, COM1's IRQ 4 to pin 4), edge
//! triggered, active high, as the ISA bus conforms. There is no interrupt source override:
//! KVM's in-kernel PIT raises GSI 0, which KVM's default routing sends to IOAPIC pin 0
//! (QEMU installs its own routing, GSI 0 to pin 2, to match its ACPI override; sevm does not).
//! Seen in L2 Linux boots under the nested harness: `..TIMER: vector=0x30 apic1=0 pin1=0`, and
//! `check_timer` accepts pin 0 (an IRQ0 -> pin 2 override would point Linux at a pin the PIT
//! never raises).
//!
//! The table is launch data: it is a pure function of the vCPU count (no clock, no host
//! state), written by [`crate::boot::place`] for the VMM and the owner's recipe alike and
//! measured as [`crate::boot::RangeKind::MpTable`].
//!
//! Layout at [`MPTABLE_START`]: the 16-byte floating pointer structure, then the
//! configuration table (header and entries). Linux finds the floating pointer by scanning
//! `0xF0000..0x100000` on 16-byte boundaries (`smp_scan_config` in arch/x86/kernel/mpparse.c).

use crate::layout::{IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR, MPTABLE_MAX_SIZE, MPTABLE_START};

/// Entry type: processor.
const MP_PROCESSOR: u8 = 0;
/// Entry type: bus.
const MP_BUS: u8 = 1;
/// Entry type: I/O APIC.
const MP_IOAPIC: u8 = 2;
/// Entry type: I/O interrupt assignment.
const MP_INTSRC: u8 = 3;
/// Entry type: local interrupt assignment.
const MP_LINTSRC: u8 = 4;
/// Interrupt type: vectored interrupt (through the IOAPIC's redirection entry).
const MP_INT: u8 = 0;
/// Interrupt type: NMI.
const MP_NMI: u8 = 1;
/// Interrupt type: external (8259) interrupt.
const MP_EXTINT: u8 = 3;
/// Processor flags: enabled.
const CPU_ENABLED: u8 = 1;
/// Processor flags: the bootstrap processor.
const CPU_BSP: u8 = 2;
/// Local APIC version of an integrated (xAPIC) local APIC, as KVM's LAPIC reports it.
const LAPIC_VERSION: u8 = 0x14;
/// IOAPIC version KVM's in-kernel IOAPIC reports (`IOAPIC_VERSION_ID` in KVM).
const IOAPIC_VERSION: u8 = 0x11;
/// CPU signature (family 6, model 0, stepping 0): informational; Linux reads CPUID.
const CPU_SIGNATURE: u32 = 0x600;
/// CPU feature flags: FPU (bit 0) and APIC (bit 9).
const CPU_FEATURES: u32 = 0x201;
/// Size of the floating pointer structure.
const MPF_SIZE: usize = 16;
/// Size of the configuration table header.
const MPC_HEADER_SIZE: usize = 44;

/// Size in bytes of the MP table of a VM with `cpus` vCPUs.
pub fn mp_table_size(cpus: u8) -> usize {
    MPF_SIZE
        + MPC_HEADER_SIZE
        + 20 * usize::from(cpus)
        + 8 // bus
        + 8 // IOAPIC
        + 8 * IOAPIC_PINS as usize
        + 8 * 2 // ExtINT and NMI lines
}

/// The APIC ID of the IOAPIC in a VM with `cpus` vCPUs (the first after the CPUs').
pub fn ioapic_id(cpus: u8) -> u8 {
    cpus
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP table bytes for `cpus` vCPUs (APIC IDs `0..cpus`, vCPU 0 the bootstrap processor),
/// to be written at [`MPTABLE_START`]. `cpus` must be at least 1; its upper bound
/// ([`crate::layout::MAX_LINUX_CPUS`]) keeps every APIC ID below the broadcast ID 0xFF.
pub fn mp_table(cpus: u8) -> Vec<u8> {
    let mut entries: Vec<u8> = Vec::with_capacity(mp_table_size(cpus));
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.push(MP_PROCESSOR);
        entries.push(id);
        entries.push(LAPIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    // Bus 0: ISA.
    entries.extend([MP_BUS, 0]);
    entries.extend(b"ISA   ");
    count += 1;
    entries.extend([MP_IOAPIC, ioapic_id(cpus), IOAPIC_VERSION, 1]);
    entries.extend((IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    // ISA IRQ i -> IOAPIC pin i; flags 0: polarity and trigger conform to the bus (ISA:
    // active high, edge).
    for pin in 0..IOAPIC_PINS {
        entries.extend([MP_INTSRC, MP_INT, 0, 0, 0, pin, ioapic_id(cpus), pin]);
        count += 1;
    }
    // 8259 ExtINT on LINT0 of the BSP; NMI on LINT1 of every local APIC.
    entries.extend([MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend([MP_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = (MPC_HEADER_SIZE + entries.len()) as u16;
    let mut mpc = Vec::with_capacity(table_len as usize);
    mpc.extend(b"PCMP");
    mpc.extend(table_len.to_le_bytes());
    mpc.push(4); // spec revision 1.4
    mpc.push(0); // checksum, below
    mpc.extend(b"SEVM    "); // OEM ID, 8 bytes
    mpc.extend(b"SEVM-VM     "); // product ID, 12 bytes
    mpc.extend(0u32.to_le_bytes()); // OEM table pointer
    mpc.extend(0u16.to_le_bytes()); // OEM table size
    mpc.extend(count.to_le_bytes());
    mpc.extend((LAPIC_ADDR as u32).to_le_bytes());
    mpc.extend(0u16.to_le_bytes()); // extended table length
    mpc.push(0); // extended table checksum
    mpc.push(0); // reserved
    debug_assert_eq!(mpc.len(), MPC_HEADER_SIZE);
    mpc.extend(entries);
    mpc[7] = checksum(&mpc);

    let mut out = Vec::with_capacity(MPF_SIZE + mpc.len());
    out.extend(b"_MP_");
    out.extend(((MPTABLE_START + MPF_SIZE as u64) as u32).to_le_bytes()); // config table
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision 1.4
    out.push(0); // checksum, below
    out.extend([0u8; 5]); // feature bytes: 0 = a configuration table is present, no IMCR
    out[10] = checksum(&out[..MPF_SIZE]);
    out.extend(mpc);
    debug_assert_eq!(out.len(), mp_table_size(cpus));
    debug_assert!(out.len() as u64 <= MPTABLE_MAX_SIZE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MAX_LINUX_CPUS;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    /// What Linux's mpparse reads, decoded independently of the writer.
    #[derive(Debug, Default)]
    struct Parsed {
        cpus: Vec<(u8, u8)>,
        ioapic: Option<(u8, u32)>,
        intsrc: Vec<(u8, u8, u8, u8)>,
        lint: Vec<(u8, u8, u8)>,
        buses: Vec<String>,
    }

    fn parse(region_base: u64, region: &[u8]) -> Parsed {
        // smp_scan_config: a 16-byte aligned "_MP_" with length 1 and a zero checksum.
        let off = (0..region.len())
            .step_by(16)
            .find(|&o| {
                region.get(o..o + 16).is_some_and(|f| {
                    f.starts_with(b"_MP_") && f[8] == 1 && sum(f) == 0 && f[9] == 4
                })
            })
            .expect("floating pointer found by a 16-byte scan");
        let f = &region[off..off + 16];
        let phys = u32::from_le_bytes(f[4..8].try_into().unwrap()) as u64;
        let c = &region[(phys - region_base) as usize..];
        assert_eq!(&c[..4], b"PCMP");
        let len = u16::from_le_bytes([c[4], c[5]]) as usize;
        let c = &c[..len];
        assert_eq!(sum(c), 0, "configuration table checksum");
        assert_eq!(
            u32::from_le_bytes(c[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        let count = u16::from_le_bytes([c[34], c[35]]);
        let mut p = Parsed::default();
        let mut o = MPC_HEADER_SIZE;
        for _ in 0..count {
            match c[o] {
                0 => {
                    p.cpus.push((c[o + 1], c[o + 3]));
                    o += 20;
                }
                1 => {
                    p.buses
                        .push(String::from_utf8(c[o + 2..o + 8].to_vec()).unwrap());
                    o += 8;
                }
                2 => {
                    let a = u32::from_le_bytes(c[o + 4..o + 8].try_into().unwrap());
                    p.ioapic = Some((c[o + 1], a));
                    o += 8;
                }
                3 => {
                    p.intsrc.push((c[o + 1], c[o + 5], c[o + 6], c[o + 7]));
                    o += 8;
                }
                4 => {
                    p.lint.push((c[o + 1], c[o + 6], c[o + 7]));
                    o += 8;
                }
                t => panic!("unknown entry type {t}"),
            }
        }
        assert_eq!(o, len, "entries fill the table exactly");
        p
    }

    #[test]
    fn table_lists_every_cpu_the_ioapic_and_identity_isa_irqs() {
        for cpus in [1u8, 2, 8, 64, MAX_LINUX_CPUS] {
            let t = mp_table(cpus);
            assert_eq!(t.len(), mp_table_size(cpus));
            assert!(t.len() as u64 <= MPTABLE_MAX_SIZE, "{cpus}: {}", t.len());
            let p = parse(MPTABLE_START, &t);
            assert_eq!(p.cpus.len(), cpus as usize);
            for (i, (id, flags)) in p.cpus.iter().enumerate() {
                assert_eq!(*id as usize, i);
                assert_eq!(*flags, if i == 0 { 3 } else { 1 }, "cpu {i} flags");
            }
            assert_eq!(p.buses, ["ISA   "]);
            assert_eq!(p.ioapic, Some((cpus, 0xfec0_0000)));
            assert!(p.cpus.iter().all(|(id, _)| *id != cpus && *id != 0xff));
            assert_eq!(p.intsrc.len(), 24);
            for (irq, e) in p.intsrc.iter().enumerate() {
                // INT type, ISA IRQ n -> this IOAPIC, pin n (no IRQ0 override: KVM's default
                // routing sends the PIT's GSI 0 to pin 0).
                assert_eq!(*e, (MP_INT, irq as u8, cpus, irq as u8));
            }
            assert_eq!(p.lint, [(MP_EXTINT, 0, 0), (MP_NMI, 0xff, 1)]);
        }
    }

    #[test]
    fn table_is_deterministic_and_depends_on_the_cpu_count() {
        assert_eq!(mp_table(2), mp_table(2));
        assert_ne!(mp_table(1), mp_table(2));
    }
}
