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
    "idle",
];

/// Looks a bundled guest up by name.
pub fn get(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

#[cfg(test)]
mod filter {
    include!("filter.rs");
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    /// `aesenc xmm0, xmm1`.
    const AESENC: &[u8] = &[0x66, 0x0f, 0x38, 0xdc, 0xc1];
    /// `pclmulqdq xmm1, xmm7, 0`.
    const PCLMUL: &[u8] = &[0x66, 0x0f, 0x3a, 0x44, 0xcf, 0x00];
    const NOP: &[u8] = &[0x90];
    const RET: &[u8] = &[0xc3];

    fn image(parts: &[&[u8]]) -> Vec<u8> {
        let mut v: Vec<u8> = parts.concat();
        v.extend_from_slice(filter::DATA_MARKER);
        v
    }

    fn check(parts: &[&[u8]]) -> Result<(), String> {
        filter::check_image(&image(parts), abi::LOAD_ADDR)
    }

    #[test]
    fn filter_rejects_vector_code_at_cpl0_and_allows_it_in_the_cpl3_region() {
        assert!(check(&[NOP, RET]).is_ok());
        let e = check(&[NOP, AESENC, RET]).unwrap_err();
        assert!(e.contains("vector register"), "{e}");
        let e = check(&[PCLMUL]).unwrap_err();
        assert!(e.contains("vector register"), "{e}");
        // After the CPL3 region ends, CPL0 rules apply again.
        let e = check(&[NOP, filter::CPL3_BEGIN, AESENC, filter::CPL3_END, AESENC]).unwrap_err();
        assert!(e.contains("vector register"), "{e}");
        assert!(check(&[
            NOP,
            filter::CPL3_BEGIN,
            AESENC,
            PCLMUL,
            filter::CPL3_END,
            RET
        ])
        .is_ok());
        // popcnt eax, ecx: banned at CPL0 only.
        let popcnt: &[u8] = &[0xf3, 0x0f, 0xb8, 0xc1];
        assert!(check(&[popcnt]).is_err());
        assert!(check(&[filter::CPL3_BEGIN, popcnt, filter::CPL3_END]).is_ok());
    }

    #[test]
    fn filter_rejects_privileged_code_in_the_cpl3_region() {
        let hlt: &[u8] = &[0xf4];
        let cli: &[u8] = &[0xfa];
        let mov_cr4_rax: &[u8] = &[0x0f, 0x22, 0xe0];
        let wrmsr: &[u8] = &[0x0f, 0x30];
        let syscall: &[u8] = &[0x0f, 0x05];
        let iretq: &[u8] = &[0x48, 0xcf];
        for ins in [hlt, cli, mov_cr4_rax, wrmsr, syscall, iretq] {
            assert!(
                check(&[ins]).is_ok() || ins == syscall,
                "{ins:02x?} at CPL0"
            );
            let e = check(&[filter::CPL3_BEGIN, ins, filter::CPL3_END]).unwrap_err();
            assert!(e.contains("CPL3"), "{ins:02x?}: {e}");
        }
    }

    #[test]
    fn filter_rejects_cpl0_branches_into_the_cpl3_region_and_bad_markers() {
        // jmp rel32 from offset 0 (5 bytes) over the 8-byte marker to the first CPL3 byte.
        let jmp_in: &[u8] = &[0xe9, 0x08, 0x00, 0x00, 0x00];
        let e = check(&[jmp_in, filter::CPL3_BEGIN, NOP, filter::CPL3_END]).unwrap_err();
        assert!(e.contains("branches into the CPL3 region"), "{e}");
        // call rel32 past the region is fine.
        let call_past: &[u8] = &[0xe8, 0x11, 0x00, 0x00, 0x00];
        assert!(check(&[call_past, filter::CPL3_BEGIN, NOP, filter::CPL3_END, RET]).is_ok());
        assert!(check(&[filter::CPL3_BEGIN, NOP]).is_err());
        assert!(check(&[filter::CPL3_END, NOP, filter::CPL3_BEGIN]).is_err());
        let e = filter::check_image(&[NOP, RET].concat(), abi::LOAD_ADDR).unwrap_err();
        assert!(e.contains("no data marker"), "{e}");
    }

    #[test]
    fn snp_attest_uses_aes_and_pclmul_only_in_its_cpl3_region() {
        let g = get("snp-attest").unwrap();
        filter::check_image(g.bytes, g.load_addr).unwrap();
        let pos = |m: &[u8; 8]| g.bytes.windows(8).position(|w| w == m).unwrap();
        let (b, e) = (pos(filter::CPL3_BEGIN), pos(filter::CPL3_END));
        let count = |from: usize, to: usize| {
            let d = Decoder::with_ip(64, &g.bytes[from..to], 0, DecoderOptions::NONE);
            let mut n = [0usize; 3];
            for ins in d {
                match ins.mnemonic() {
                    Mnemonic::Aesenc | Mnemonic::Aesenclast => n[0] += 1,
                    Mnemonic::Aeskeygenassist => n[1] += 1,
                    Mnemonic::Pclmulqdq => n[2] += 1,
                    _ => {}
                }
            }
            n
        };
        assert_eq!(count(0, b), [0, 0, 0]);
        // 13 aesenc + 1 aesenclast, 13 aeskeygenassist (AES-256), 4 pclmulqdq (one GF multiply).
        assert_eq!(count(b + 8, e), [14, 13, 4]);
        // Every other guest has no CPL3 region.
        for other in GUESTS.iter().filter(|o| o.name != "snp-attest") {
            assert!(
                !other.bytes.windows(8).any(|w| w == filter::CPL3_BEGIN),
                "{}",
                other.name
            );
        }
    }

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
