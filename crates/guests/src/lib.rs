//! Bundled guest payloads, assembled at build time from Rust source (iced-x86 `code_asm`
//! in `build.rs`); no external toolchain.
//!
//! Boot ABI every bundled guest expects (provided by `vmm`):
//! * 64-bit long mode, CPL0, identity-mapped page tables covering 0..4 GiB with 2 MiB pages
//!   (the entries may carry an encryption bit), flat GDT, TSS with an all-zero I/O bitmap;
//! * the image is loaded at [`abi::LOAD_ADDR`] and entered at [`Guest::entry`];
//! * `rdi` = vCPU index, `rsi` = number of vCPUs, `rdx` = encryption mask (`1 << cbit` or 0);
//! * serial output on COM1, exit through [`abi::EXIT_PORT`]; `hello` exits from CPL3 (user
//!   segments 0x23/0x2b and the TSS I/O bitmap of the VMM's GDT).
//!
//! At CPL0 the guests run under KVM's instruction emulator on our machines, so they use
//! only plain integer instructions (no SSE/BMI/`int n`/`vmmcall`). `snp-attest` does its
//! AES-256-GCM at CPL3 (native), in a code region the build's instruction filter checks
//! separately (`src/filter.rs`).

/// Guest-physical constants shared with `vmm::layout`.
pub mod abi {
    include!("abi.rs");
}

/// One bundled guest image.
#[derive(Debug)]
pub struct Guest {
    /// Name used on the command line (`hello`, `cpuid`, ...).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Flat binary image, to be copied at [`Guest::load_addr`].
    pub bytes: &'static [u8],
    /// Guest-physical load address of `bytes`.
    pub load_addr: u64,
    /// Guest-physical (identity-mapped virtual) entry point.
    pub entry: u64,
}

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Names of all bundled guests.
pub const NAMES: &[&str] = &[
    "hello",
    "cpuid",
    "reset",
    "secret-reader",
    "ticker",
    "snp-attest",
];

/// Looks a bundled guest up by name.
pub fn get(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_and_is_nonempty() {
        for n in NAMES {
            let g = get(n).unwrap_or_else(|| panic!("guest {n} missing"));
            assert_eq!(&g.name, n);
            assert!(!g.bytes.is_empty());
            assert_eq!(g.load_addr, abi::LOAD_ADDR);
            assert!(g.entry >= g.load_addr && g.entry < g.load_addr + g.bytes.len() as u64);
        }
        assert_eq!(GUESTS.len(), NAMES.len());
        assert!(get("nope").is_none());
    }

    #[test]
    fn images_fit_below_two_mib() {
        for g in GUESTS {
            assert!(
                g.load_addr + (g.bytes.len() as u64) < 0x20_0000,
                "{}",
                g.name
            );
        }
    }
}
