// Guest-physical constants the bundled guests are assembled against.
// `vmm::layout` holds the same values and a vmm test checks they agree.
// This file is included both by `build.rs` and by `lib.rs`.

/// GPA where every bundled guest image is loaded (1 MiB).
pub const LOAD_ADDR: u64 = 0x0010_0000;
/// Scratch page that the VMM never writes after creating the VM; survives a plain reset.
pub const SCRATCH: u64 = 0x0000_6000;
/// Reset counter used by the `reset` guest (u32 in the scratch page).
pub const RESET_COUNTER: u64 = SCRATCH;
/// Number of application processors that checked in (u32 in the scratch page).
pub const AP_ONLINE: u64 = SCRATCH + 0x10;
/// GPA of the EFI secret area.
pub const SECRET_AREA: u64 = 0x0003_0000;
/// Size in bytes of the EFI secret area.
pub const SECRET_AREA_SIZE: u64 = 0x4000;
/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// Exit port: writing byte v stops the VM with guest exit code v.
pub const EXIT_PORT: u16 = 0xf4;
/// i8042 command port (0xFE = pulse reset line).
pub const I8042_CMD: u16 = 0x64;
/// How many times the `reset` guest resets itself before exiting.
pub const RESET_TIMES: u32 = 3;
/// Per-vCPU progress counters of the `ticker` guest: u64 at `TICKS + 8 * vcpu index`.
pub const TICKS: u64 = SCRATCH + 0x100;
/// SEV-SNP (sevm's layout): the secrets page (VMPCK0 at +0x20).
pub const SNP_SECRETS: u64 = 0x0004_0000;
/// SEV-SNP: the CPUID page.
pub const SNP_CPUID: u64 = 0x0004_1000;
/// SEV-SNP: the guest-request doorbell block (GHCB stand-in; see vmm::snp_request).
pub const SNP_GHCB: u64 = 0x0004_2000;
/// SEV-SNP: request message page.
pub const SNP_REQ_PAGE: u64 = 0x0004_3000;
/// SEV-SNP: response message page.
pub const SNP_RESP_PAGE: u64 = 0x0004_4000;
/// SEV-SNP: certificate buffer for extended requests.
pub const SNP_CERTS: u64 = 0x0004_5000;
/// SEV-SNP: pages in the certificate buffer.
pub const SNP_CERTS_PAGES: u64 = 4;
/// SEV-SNP: guest-request doorbell port.
pub const SNP_DOORBELL_PORT: u16 = 0xf5;
/// SEV-SNP: parameters from the VMM (+0x00 u32 flags, bit 0 = REPORT_DATA given; +0x40 REPORT_DATA).
pub const SNP_PARAMS: u64 = 0x0004_9000;
/// SEV-SNP: where the guest puts the decrypted MSG_REPORT_RSP for the VMM.
pub const SNP_REPORT_OUT: u64 = 0x0004_a000;
