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
/// SNP_PARAMS flags bit 0: the 64 bytes at `SNP_PARAMS + SNP_PARAMS_REPORT_DATA` are the REPORT_DATA.
pub const SNP_PARAMS_FLAG_REPORT_DATA: u32 = 1;
/// SNP_PARAMS flags bit 1 (tests only): `snp-attest` runs its AES-256-GCM known-answer mode
/// instead of attesting: it seals the payload given here into `SNP_REQ_PAGE` (key, sequence
/// number, type and size from the fields below), then opens the message the host put in
/// `SNP_RESP_PAGE` (type + 1, sequence number + 1, same size) into `SNP_REPORT_OUT`.
pub const SNP_PARAMS_FLAG_GCM_KAT: u32 = 2;
/// SNP_PARAMS: offset of REPORT_DATA (64 bytes).
pub const SNP_PARAMS_REPORT_DATA: u64 = 0x40;
/// SNP_PARAMS, known-answer mode: the 32-byte AES-256 key.
pub const SNP_PARAMS_KAT_KEY: u64 = 0x80;
/// SNP_PARAMS, known-answer mode: u64 MSG_SEQNO of the sealed message.
pub const SNP_PARAMS_KAT_SEQNO: u64 = 0xa0;
/// SNP_PARAMS, known-answer mode: u8 MSG_TYPE of the sealed message.
pub const SNP_PARAMS_KAT_TYPE: u64 = 0xa8;
/// SNP_PARAMS, known-answer mode: u16 payload size (a multiple of 16, 16..=`SNP_PARAMS_KAT_MAX`).
pub const SNP_PARAMS_KAT_SIZE: u64 = 0xaa;
/// SNP_PARAMS, known-answer mode: the payload.
pub const SNP_PARAMS_KAT_PAYLOAD: u64 = 0x100;
/// SNP_PARAMS, known-answer mode: largest payload.
pub const SNP_PARAMS_KAT_MAX: u64 = 0x800;
/// `snp-attest` exit code: CPUID (at CPL0) lacks AES-NI, PCLMULQDQ, SSSE3 or SSE4.1.
pub const SNP_ATTEST_NO_CPU_FEATURES: u8 = 0x01;
/// `snp-attest` exit code: the secrets page VERSION is below 2.
pub const SNP_ATTEST_BAD_SECRETS: u8 = 0x02;
/// `snp-attest` exit code: VMPCK0 in the secrets page is all zero.
pub const SNP_ATTEST_ZERO_VMPCK0: u8 = 0x03;
/// `snp-attest` exit code base of the MSG_REPORT_REQ exchange (add an `SNP_ATTEST_E_*`).
pub const SNP_ATTEST_REPORT: u8 = 0x10;
/// `snp-attest` exit code base of the MSG_KEY_REQ exchange.
pub const SNP_ATTEST_KEY: u8 = 0x20;
/// `snp-attest` exit code base of the extended (certificates) MSG_REPORT_REQ exchange.
pub const SNP_ATTEST_EXT: u8 = 0x30;
/// `snp-attest` exit code: the certificate table is malformed.
pub const SNP_ATTEST_BAD_CERT_TABLE: u8 = 0x39;
/// `snp-attest` exit code base of the known-answer mode.
pub const SNP_ATTEST_KAT: u8 = 0x40;
/// `snp-attest` exit code: bad known-answer parameters (size not a multiple of 16 in range).
pub const SNP_ATTEST_BAD_KAT_PARAMS: u8 = 0x48;
/// Exchange failure: the VMM error (high 32 bits of the doorbell result) is not 0.
pub const SNP_ATTEST_E_VMM: u8 = 1;
/// Exchange failure: the firmware status (low 32 bits of the doorbell result) is not 0.
pub const SNP_ATTEST_E_FW: u8 = 2;
/// Exchange failure: response ALGO, HDR_VERSION, HDR_SIZE, MSG_TYPE, MSG_VERSION or MSG_VMPCK.
pub const SNP_ATTEST_E_HEADER: u8 = 3;
/// Exchange failure: response MSG_SEQNO is not the request's + 1.
pub const SNP_ATTEST_E_SEQNO: u8 = 4;
/// Exchange failure: response MSG_SIZE is not the expected payload size.
pub const SNP_ATTEST_E_SIZE: u8 = 5;
/// Exchange failure: the AES-256-GCM tag does not verify.
pub const SNP_ATTEST_E_TAG: u8 = 6;
/// Exchange failure: the decrypted STATUS is not 0.
pub const SNP_ATTEST_E_STATUS: u8 = 7;
/// Exchange failure: the decrypted payload is wrong (REPORT_SIZE, or the report does not echo
/// the request's REPORT_DATA and VMPL).
pub const SNP_ATTEST_E_PAYLOAD: u8 = 8;
