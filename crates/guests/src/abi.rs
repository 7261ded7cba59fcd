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
/// SNP_PARAMS flags bit 2 (tests only): `snp-attest` runs its X25519 known-answer mode: for
/// each of the `u32` count at `SNP_PARAMS_XKAT_COUNT` (1..=`SNP_PARAMS_XKAT_MAX`) cases at
/// `SNP_PARAMS_XKAT_CASES` (scalar ‖ u-coordinate, 64 bytes each) it writes X25519(scalar, u)
/// to `SNP_REPORT_OUT + 32 * i`. With a nonzero `u32` at `SNP_PARAMS_XKAT_ITER` it instead
/// runs RFC 7748's iteration on case 0 that many times (k, u = X25519(k, u), k) and writes k.
pub const SNP_PARAMS_FLAG_X25519_KAT: u32 = 4;
/// SNP_PARAMS flags bit 3 (tests only): `snp-attest` runs its HKDF-SHA256 known-answer mode:
/// salt (32 bytes) at `SNP_PARAMS_HKAT_SALT`, IKM (32 bytes) at `SNP_PARAMS_HKAT_IKM`, `u32`
/// info length (0..=`SNP_PARAMS_HKAT_INFO_MAX`) at `SNP_PARAMS_HKAT_INFO_LEN`, info at
/// `SNP_PARAMS_HKAT_INFO`; it writes PRK = HMAC-SHA256(salt, IKM) to `SNP_REPORT_OUT` and the
/// 32-byte OKM = HMAC-SHA256(PRK, info ‖ 0x01) to `SNP_REPORT_OUT + 0x20`.
pub const SNP_PARAMS_FLAG_HKDF_KAT: u32 = 8;
/// SNP_PARAMS flags bit 4: `snp-attest` runs the sealed-secret exchange of `sevm demo --snp`
/// (docs/LAYOUT.md): the owner's nonce is REPORT_DATA[32..64] at `SNP_PARAMS + 0x60`.
pub const SNP_PARAMS_FLAG_SEALED_SECRET: u32 = 0x10;
/// X25519 known-answer mode: u32 number of cases.
pub const SNP_PARAMS_XKAT_COUNT: u64 = 0x80;
/// X25519 known-answer mode: u32 iterations (0 = each case once).
pub const SNP_PARAMS_XKAT_ITER: u64 = 0x84;
/// X25519 known-answer mode: the cases (scalar ‖ u, 64 bytes each).
pub const SNP_PARAMS_XKAT_CASES: u64 = 0x100;
/// X25519 known-answer mode: most cases in one run.
pub const SNP_PARAMS_XKAT_MAX: u32 = 60;
/// HKDF known-answer mode: the salt.
pub const SNP_PARAMS_HKAT_SALT: u64 = 0x80;
/// HKDF known-answer mode: the IKM.
pub const SNP_PARAMS_HKAT_IKM: u64 = 0xa0;
/// HKDF known-answer mode: u32 info length.
pub const SNP_PARAMS_HKAT_INFO_LEN: u64 = 0xc0;
/// HKDF known-answer mode: the info.
pub const SNP_PARAMS_HKAT_INFO: u64 = 0x100;
/// HKDF known-answer mode: the longest info.
pub const SNP_PARAMS_HKAT_INFO_MAX: u32 = 0x80;
/// SEV-SNP: the sealed-secret box page (`sevm demo --snp`; shared): the VMM writes the owner's
/// box here on the owner step of the doorbell.
pub const SNP_BOX: u64 = 0x0004_b000;
/// Doorbell exit code of the owner step (sevm's own, not a GHCB code): `+0x08` the GPA of the
/// decrypted MSG_REPORT_RSP, `+0x10` the GPA of the box page / the result.
pub const SNP_EXIT_OWNER_SECRET: u64 = 0x8000_f001;
/// Box: the owner's X25519 public key (32 bytes; AAD).
pub const SNP_BOX_OWNER_PUB: u64 = 0x30;
/// Box: u16 secret size (a multiple of 16 in 16..=`SNP_BOX_MAX_SECRET`; AAD).
pub const SNP_BOX_SIZE: u64 = 0x50;
/// Box: the ciphertext.
pub const SNP_BOX_CIPHERTEXT: u64 = 0x60;
/// Box: the largest secret.
pub const SNP_BOX_MAX_SECRET: u64 = 0x400;
/// Label hashed with the derived key into the guest's X25519 scalar.
pub const SNP_SEED_LABEL: &[u8; 20] = b"sevm-snp-x25519-seed";
/// HKDF info prefix of the box key (followed by the guest's and the owner's public keys).
pub const SNP_HKDF_INFO: &[u8; 18] = b"sevm-snp-secret-v1";
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
/// `snp-attest` exit code: bad X25519 known-answer parameters.
pub const SNP_ATTEST_BAD_XKAT_PARAMS: u8 = 0x49;
/// `snp-attest` exit code: bad HKDF known-answer parameters.
pub const SNP_ATTEST_BAD_HKAT_PARAMS: u8 = 0x4a;
/// `snp-attest` exit code base of the sealed-secret exchange (the key and report requests and
/// the owner step; VMM error 1 = the owner refused).
pub const SNP_ATTEST_SEAL: u8 = 0x50;
/// `snp-attest` exit code: the box's secret size is not a multiple of 16 in range.
pub const SNP_ATTEST_SEAL_BAD_BOX: u8 = 0x59;
/// `snp-attest` exit code: the X25519 shared secret with the owner's key is zero.
pub const SNP_ATTEST_SEAL_ZERO_SHARED: u8 = 0x5a;
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
